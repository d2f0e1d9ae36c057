"""What `netemu ps` and `netemu inspect` show, as typed views: a lab's record joined with what
the kernel says right now (each host's interfaces, addresses and routes, each link end's state,
each cgroup's usage). Every view has `to_json()`, the form `--format json` prints.

A node's state is computed here and only here: `up` (its PID 1 runs), `stopped` (by `netemu
node stop`, or never started), `dead` (its PID 1 is gone without being stopped)."""

from __future__ import annotations

from dataclasses import dataclass, field

from netemu.linux import cgroups, netlink
from netemu.runtime import paths, state
from netemu.runtime.records import Json, LabRecord, LinkRecord, NodeRecord

# The files that count what a group uses, per cgroup version (v1 on hybrid machines).
USAGE_FILES = {
    "memory_bytes": ("memory", {1: "memory.usage_in_bytes", 2: "memory.current"}),
    "pids": ("pids", {1: "pids.current", 2: "pids.current"}),
}


def node_state(info: NodeRecord) -> str:
    if info.alive:
        return "up"
    return "stopped" if info.stopped or not info.pid else "dead"


def lab_status(record: LabRecord) -> str:
    """running, degraded (some hosts down), dead, or creating/removing while an up or down runs;
    failed for an up or down that never finished."""
    if record.status in ("creating", "removing"):
        return record.status if state.is_busy(record.name) else "failed"
    if record.status == "failed":  # its rollback did not finish
        return "failed"
    alive = [info.alive for info in record.nodes.values()]
    if alive and all(alive):
        return "running"
    return "dead" if not any(alive) else "degraded"


# --- ps ---------------------------------------------------------------------------------------
@dataclass
class LabSummary:
    """One row of `netemu ps`."""

    name: str
    status: str
    nodes: int
    alive: int
    created: float | None
    file: str | None

    def to_json(self) -> Json:
        return {"name": self.name, "status": self.status, "nodes": self.nodes, "alive": self.alive,
                "created": self.created, "file": self.file}


@dataclass
class NodeSummary:
    """One row of `netemu ps --nodes`."""

    lab: str
    node: str
    pid: int | None
    state: str
    netns: str | None

    def to_json(self) -> Json:
        return {"lab": self.lab, "node": self.node, "pid": self.pid, "state": self.state, "netns": self.netns}


def list_labs() -> list[LabSummary]:
    labs = []
    for name in state.lab_names():
        record = state.read(name) or LabRecord(name=name, status="creating")
        labs.append(LabSummary(name, lab_status(record), len(record.nodes), record.alive_count(), record.created,
                               record.file))
    return labs


def list_nodes() -> list[NodeSummary]:
    rows = []
    for name in state.lab_names():
        record = state.read(name)
        for node, info in (record.nodes if record else {}).items():
            rows.append(NodeSummary(name, node, info.pid, node_state(info), _netns(name, info)))
    return rows


def _netns(lab: str, info: NodeRecord) -> str | None:
    """The `ip netns` name of a host with a network namespace of its own."""
    return paths.netns_name(lab, info.name) if info.own_netns else None


# --- inspect ----------------------------------------------------------------------------------
@dataclass
class InterfaceView:
    name: str
    state: str  # up or down (administratively up with a carrier, or not)
    mtu: int
    addresses: list[str]  # address/prefix, IPv6 link-local included

    def to_json(self) -> Json:
        return {"name": self.name, "state": self.state, "mtu": self.mtu, "addresses": list(self.addresses)}


@dataclass
class NextHopView:
    via: str | None
    dev: str | None
    weight: int = 1

    def to_json(self) -> Json:
        return {"via": self.via, "dev": self.dev, "weight": self.weight}


@dataclass
class RouteView:
    """A main-table route: dst ("default" for 0/0) and every next hop (several for ECMP)."""

    dst: str
    nexthops: list[NextHopView]
    protocol: int = 0

    @property
    def via(self) -> str | None:
        return self.nexthops[0].via if len(self.nexthops) == 1 else None

    @property
    def dev(self) -> str | None:
        return self.nexthops[0].dev if len(self.nexthops) == 1 else None

    def to_json(self) -> Json:
        return {"dst": self.dst, "via": self.via, "dev": self.dev, "protocol": self.protocol,
                "nexthops": [hop.to_json() for hop in self.nexthops]}


@dataclass
class NodeView:
    record: NodeRecord
    state: str
    netns: str | None
    interfaces: list[InterfaceView] = field(default_factory=list)
    routes: list[RouteView] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)  # memory_bytes, pids: what the cgroup counts now

    @property
    def alive(self) -> bool:
        return self.state == "up"

    def interface(self, name: str) -> InterfaceView | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def to_json(self) -> Json:
        data = self.record.to_json()
        data.update(alive=self.alive, state=self.state, netns=self.netns, usage=dict(self.usage))
        if self.alive and self.record.netns_pid:
            data["interfaces"] = [i.to_json() for i in self.interfaces]
            data["routes"] = [r.to_json() for r in self.routes]
        return data


@dataclass
class LinkView:
    record: LinkRecord
    state: dict[str, str]  # per endpoint: up, down, stopped, missing, or n/a (macvlan)

    def to_json(self) -> Json:
        return dict(self.record.to_json(), state=dict(self.state))


@dataclass
class LabView:
    record: LabRecord
    status: str
    nodes: dict[str, NodeView]
    links: list[LinkView]

    @property
    def name(self) -> str:
        return self.record.name

    def to_json(self) -> Json:
        data = self.record.to_json()
        data.update(status=self.status, nodes={n: v.to_json() for n, v in self.nodes.items()},
                    links=[link.to_json() for link in self.links])
        return data


def inspect(record: LabRecord) -> LabView:
    nodes = {name: _inspect_node(record.name, info) for name, info in record.nodes.items()}
    machine = _machine_link_states(record.links)
    links = [LinkView(entry, _end_states(entry, nodes, machine)) for entry in record.links]
    return LabView(record, lab_status(record), nodes, links)


def _inspect_node(lab: str, info: NodeRecord) -> NodeView:
    view = NodeView(info, node_state(info), paths.netns_name(lab, info.name) if info.netns_pid == info.pid else None)
    if not view.alive:
        return view
    view.usage = cgroup_usage(info.cgroup) if info.cgroup else {}
    if info.netns_pid:
        try:
            with netlink.Socket(info.netns_pid) as sock:
                links = sock.links()
                addresses = _addresses_by_link(sock)
                view.interfaces = [InterfaceView(link.name, link.state, link.mtu, addresses.get(link.index, []))
                                   for link in links]
                view.routes = _routes(sock, links)
        except (OSError, netlink.RtnlError):  # the host died while we looked: shown as it is now
            view.state = node_state(info)
    return view


def _addresses_by_link(sock: netlink.Socket) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for address in sock.addresses():
        found.setdefault(address.index, []).append(str(address.interface))
    return found


def _routes(sock: netlink.Socket, links: list[netlink.Link]) -> list[RouteView]:
    names = {link.index: link.name for link in links}
    return [RouteView(str(route.dst) if route.dst.prefixlen else "default",
                      [NextHopView(hop.gateway, names.get(hop.oif) if hop.oif is not None else None, hop.weight)
                       for hop in route.hops()], route.protocol)
            for route in sock.routes()]


def cgroup_usage(relpath: str) -> dict[str, int]:
    found = {}
    for key, (controller, files) in USAGE_FILES.items():
        hierarchy = cgroups.layout().for_controller(controller)
        if hierarchy is None:
            continue
        try:
            found[key] = int((hierarchy.mountpoint / relpath / files[hierarchy.version]).read_text())
        except (OSError, ValueError):
            continue  # the controller is not enabled for the group: nothing to report
    return found


def _machine_link_states(links: list[LinkRecord]) -> dict[str, str]:
    """State of the bridge-side veth ends, which live in the machine's namespace: each looked
    up by name, since the machine may hold many other links, changing all the time."""
    wanted = {entry.machine_side for entry in links if entry.machine_side}
    if not wanted:
        return {}
    with netlink.Socket() as sock:
        return {name: link.state for name, link in sock.links_by_name(sorted(wanted)).items()}


def _end_states(entry: LinkRecord, nodes: dict[str, NodeView], machine: dict[str, str]) -> dict[str, str]:
    """State of each end, keyed by the endpoint as the file writes it: the kernel's operstate
    (up, or down, also when only the peer was taken down: the end lost its carrier), `stopped`
    for a host that is not running, `missing` when the interface is gone. A network end reports
    its bridge port (`n/a` for macvlan, which has none)."""
    states = {}
    for endpoint in entry.endpoints:
        node, sep, iface = endpoint.partition(":")
        if not sep:
            side = entry.machine_side
            states[endpoint] = machine.get(side, "missing") if side else "n/a"  # macvlan: no bridge port
            continue
        view = nodes.get(node)
        if view is None or not view.alive:
            states[endpoint] = "stopped"
            continue
        found = view.interface(iface)
        states[endpoint] = found.state if found else "missing"
    return states

