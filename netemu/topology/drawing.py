"""Pictures of a topology as text: Graphviz DOT and Mermaid. Pure: no kernel, no subprocess.

Both are drawn from the same scene (netemu.topology.graph.build_graph plus what `up` adds by
rule): a box per host, a distinct shape per network, a line per link. In DOT every host is a
table with one row per interface ("eth0 10.1.0.1/24") and each link joins two rows, so the
interface names and addresses sit next to their host instead of in edge labels that collide
once a lab has dozens of links. Mermaid has no ports, so there the link's label carries them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from netemu.topology.graph import build_graph
from netemu.topology.model import Link, Network, Node, Topology

DEFAULT_BRIDGE = "bridge"  # the lab's NAT bridge that `network: bridge` nodes join (see runtime.plan)
HOST_FILL = "#dbe7f5"
NETWORK_FILL = "#fdf0c8"
MACVLAN_FILL = "#e3f1df"
FONT = "Helvetica"


@dataclass
class Port:
    """One interface of a host, as drawn."""

    iface: str
    addresses: list[str]


@dataclass
class HostBox:
    name: str
    notes: list[str]
    ports: list[Port] = field(default_factory=list)


@dataclass
class NetworkBox:
    name: str
    lines: list[str]
    driver: str  # bridge | macvlan


End = tuple[str, str, str | None]  # ("h" host or "n" network, its name, the interface or None)


@dataclass
class Wire:
    """A link between two ends; a network end has no interface."""

    a: End
    b: End
    note: str = ""  # mtu and impairment, kept short
    shared_netns: bool = False  # network: container:<node>, drawn dashed, not a link


@dataclass
class Scene:
    name: str
    hosts: dict[str, HostBox]
    networks: dict[str, NetworkBox]
    wires: list[Wire]


# --- the scene --------------------------------------------------------------------------------
def scene(topo: Topology) -> Scene:
    graph = build_graph(topo)
    hosts = {name: HostBox(name, _host_notes(data["node"]))
             for name, data in graph.nodes(data=True) if data["kind"] == "host"}
    networks = {name: NetworkBox(name, _network_lines(data["network"]), data["network"].driver)
                for name, data in graph.nodes(data=True) if data["kind"] == "network"}
    wires = []
    for a, b, _index, data in sorted(graph.edges(keys=True, data=True), key=lambda e: e[2]):
        link: Link = data["link"]
        first, second = (a, b) if _vertex(link, 0) == a else (b, a)
        ends: list[End] = []
        for vertex, iface, addrs in zip((first, second), data["ifaces"], data["addresses"], strict=True):
            if iface is None:
                ends.append(("n", vertex, None))
                continue
            shown = [str(x) for x in addrs] or (["auto"] if link.auto_p2p else [])
            hosts[vertex].ports.append(Port(iface, shown))
            ends.append(("h", vertex, iface))
        wires.append(Wire(ends[0], ends[1], _link_note(link)))
    _add_default_bridge(topo, hosts, networks, wires)
    _add_shared_netns(topo, wires)
    return Scene(topo.name, hosts, networks, wires)


def _vertex(link: Link, side: int) -> str:
    ep = link.endpoints[side]
    return ep.network if ep.network is not None else ep.node or ""


def _host_notes(node: Node) -> list[str]:
    notes = []
    if node.image != "host":
        notes.append(f"image {node.image}")
    if node.network == "host":
        notes.append("machine's network")
    notes += [f"port {p}" for p in node.ports]
    return notes


def _network_lines(net: Network) -> list[str]:
    lines = [" ".join(str(s) for s in net.subnets)] if net.subnets else []
    if net.gateways:
        lines.append("gw " + " ".join(str(g.ip) for g in net.gateways))
    flags = (["macvlan"] if net.driver == "macvlan" else []) + (["NAT"] if net.nat else [])
    flags += [f"uplink {net.uplink}"] if net.uplink else []
    flags += [f"mtu {net.mtu}"] if net.mtu else []
    if flags:
        lines.append(", ".join(flags))
    return lines


def _link_note(link: Link) -> str:
    parts = [f"mtu {link.mtu}"] if link.mtu else []
    parts += [f"{key} {value}" for key, value in (link.impair or {}).items()]
    return ", ".join(parts)


def _add_default_bridge(topo: Topology, hosts: dict[str, HostBox], networks: dict[str, NetworkBox],
                        wires: list[Wire]) -> None:
    """`network: bridge` nodes get eth0 (or the first free ethN) on the lab's NAT bridge at `up`,
    with an address from a machine-wide pool: drawn here with the same interface rule."""
    members = [n for n in topo.nodes.values() if n.network == "bridge"]
    if not members or DEFAULT_BRIDGE in networks:
        return  # an expanded topology (a running lab's) already has it as a network
    networks[DEFAULT_BRIDGE] = NetworkBox(DEFAULT_BRIDGE, ["lab default bridge", "NAT, address pool"], "bridge")
    for node in members:
        used = {p.iface for p in hosts[node.name].ports}
        iface = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
        hosts[node.name].ports.append(Port(iface, ["auto"]))
        wires.append(Wire(("h", node.name, iface), ("n", DEFAULT_BRIDGE, None)))


def _add_shared_netns(topo: Topology, wires: list[Wire]) -> None:
    for node in topo.nodes.values():
        if node.network.startswith("container:"):
            owner = node.network.split(":", 1)[1]
            wires.append(Wire(("h", node.name, None), ("h", owner, None), "shares netns", shared_netns=True))


# --- Graphviz ---------------------------------------------------------------------------------
LAYOUTS = ("auto", "dot", "sfdp")
AUTO_DOT_MAX = 24  # vertices; past this a ranked layout turns into long staircases


def to_dot(topo: Topology, layout: str = "auto") -> str:
    """DOT text that names its own layout engine, so `dot -Tsvg` and any other Graphviz tool
    draw it the same. Small labs are ranked left to right (`dot`); larger ones use the force
    layout `sfdp`, which keeps every LAN's hosts in a cluster around their network."""
    s = scene(topo)
    if layout == "auto":
        layout = "dot" if len(s.hosts) + len(s.networks) <= AUTO_DOT_MAX else "sfdp"
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout '{layout}': expected one of {', '.join(LAYOUTS)}")
    lines = [
        f"graph {_quote(s.name)} {{",
        f"  graph [{_graph_attrs(layout)}, fontname={_quote(FONT)}, fontsize=12,"
        f" label={_quote('lab ' + s.name)}, labelloc=t];",
        f"  node [fontname={_quote(FONT)}, fontsize=10];",
        f'  edge [fontname={_quote(FONT)}, fontsize=8, color="#4d4d4d", fontcolor="#7a3b00"];',
    ]
    lines += [f"  {_quote(_dot_id('h', h.name))} [shape=plain, label=<{_host_table(h)}>];" for h in s.hosts.values()]
    lines += [f"  {_quote(_dot_id('n', n.name))} [{_network_attrs(n)}];" for n in s.networks.values()]
    lines += [f"  {_dot_wire(s, w, layout)};" for w in s.wires]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _graph_attrs(layout: str) -> str:
    if layout == "dot":
        return "layout=dot, rankdir=LR, splines=true, nodesep=0.15, ranksep=0.8"
    return 'layout=sfdp, overlap=prism, overlap_scaling=-4, sep="+8", splines=true, K=1.2'


def _dot_wire(s: Scene, wire: Wire, layout: str) -> str:
    a, b = wire.a, wire.b
    leaf = _is_leaf(s, a) and b[0] == "n"
    if layout == "dot" and leaf:
        a, b = b, a  # `dot` ranks an edge's tail first: a host with one link hangs right of its network
    ports = layout == "dot"  # force layouts route edges to a port poorly: they point at the box
    return f"{_dot_end(s, a, ports)} -- {_dot_end(s, b, ports)}{_wire_attrs(wire)}"


def _is_leaf(s: Scene, end: End) -> bool:
    return end[0] == "h" and len(s.hosts[end[1]].ports) <= 1


def _dot_id(prefix: str, name: str) -> str:
    # Hosts and networks are told apart by a prefix: the default bridge may share a node's name.
    return f"{prefix}:{name}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _host_table(host: HostBox) -> str:
    head = f"<B>{html.escape(host.name)}</B>"
    if host.notes:
        head += '<BR/><FONT POINT-SIZE="8">' + html.escape(", ".join(host.notes)) + "</FONT>"
    rows = [f'<TR><TD BGCOLOR="{HOST_FILL}">{head}</TD></TR>']
    for port in host.ports:
        text = f"<B>{html.escape(port.iface)}</B> " + "<BR/>".join(html.escape(a) for a in port.addresses)
        rows.append(f'<TR><TD PORT={_quote(port.iface)} ALIGN="LEFT" BALIGN="LEFT">{text}</TD></TR>')
    return ('<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3" COLOR="#4a6fa5">'
            + "".join(rows) + "</TABLE>")


def _network_attrs(net: NetworkBox) -> str:
    label = "\\n".join([net.name, *net.lines]).replace('"', '\\"')
    if net.driver == "macvlan":
        return f'shape=note, style=filled, fillcolor="{MACVLAN_FILL}", label="{label}"'
    return f'shape=ellipse, style="filled,bold", color="#b08d2b", fillcolor="{NETWORK_FILL}", label="{label}"'


def _dot_end(s: Scene, end: End, ports: bool) -> str:
    kind, vertex, iface = end
    node = _quote(_dot_id(kind, vertex))
    # With a force layout a router's links still leave from the row of their interface.
    keep = iface and (ports or not _is_leaf(s, end))
    return f"{node}:{_quote(iface)}" if keep else node


def _wire_attrs(wire: Wire) -> str:
    attrs = []
    if wire.shared_netns:
        attrs += ["style=dashed", 'color="#999999"']
    if wire.note:
        attrs.append(f"label={_quote(wire.note)}")
    return f" [{', '.join(attrs)}]" if attrs else ""


# --- Mermaid ----------------------------------------------------------------------------------
def to_mermaid(topo: Topology) -> str:
    """A Mermaid flowchart for a README: hosts as boxes, networks as hexagons (macvlan ones as
    parallelograms), each link labelled with its interfaces and addresses."""
    s = scene(topo)
    ids = {("h", name): f"h{i}" for i, name in enumerate(s.hosts)}
    ids.update({("n", name): f"n{i}" for i, name in enumerate(s.networks)})
    lines = [f"%% netemu graph: lab {s.name}", "flowchart LR"]
    for host in s.hosts.values():
        lines.append(f'  {ids["h", host.name]}["{_mm("<br/>".join([host.name, *host.notes]))}"]')
    for net in s.networks.values():
        text = _mm("<br/>".join([net.name, *net.lines]))
        shape = f'[/"{text}"/]' if net.driver == "macvlan" else f'{{{{"{text}"}}}}'
        lines.append(f"  {ids['n', net.name]}{shape}")
    for wire in s.wires:
        a, b = (ids[kind, vertex] for kind, vertex, _ in (wire.a, wire.b))
        label = _mermaid_label(s, wire)
        arrow = "-.-" if wire.shared_netns else "---"
        lines.append(f'  {a} {arrow}|"{_mm(label)}"| {b}' if label else f"  {a} {arrow} {b}")
    lines.append(f"  classDef host fill:{HOST_FILL},stroke:#4a6fa5")
    lines.append(f"  classDef net fill:{NETWORK_FILL},stroke:#b08d2b")
    if s.hosts:
        lines.append("  class " + ",".join(ids["h", n] for n in s.hosts) + " host")
    if s.networks:
        lines.append("  class " + ",".join(ids["n", n] for n in s.networks) + " net")
    return "\n".join(lines) + "\n"


def _mermaid_label(s: Scene, wire: Wire) -> str:
    if wire.shared_netns:
        return wire.note
    ends = [_port_text(s, end) for end in (wire.a, wire.b)]
    text = " — ".join(e for e in ends if e)
    return f"{text} ({wire.note})" if wire.note else text


def _port_text(s: Scene, end: End) -> str:
    _, vertex, iface = end
    if iface is None:
        return ""
    port = next(p for p in s.hosts[vertex].ports if p.iface == iface)
    return " ".join([iface, *port.addresses])


def _mm(text: str) -> str:
    """Mermaid's quoted labels end at a double quote; its entity code keeps one."""
    return text.replace('"', "#quot;")
