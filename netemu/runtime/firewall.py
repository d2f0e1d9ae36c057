"""The lab's nftables table: masquerade for `nat: true` networks (the docker0 rule) and DNAT for
published `ports`. One table per lab, netemu-LAB, removed whole by `down`."""

from __future__ import annotations

from netemu.errors import InputError, MachineError, one_line
from netemu.linux import nftables, sockets
from netemu.runtime import paths
from netemu.topology.model import Topology


def table_name(lab: str) -> str:
    return f"{nftables.TABLE_PREFIX}{lab}"


def ruleset(topo: Topology) -> str | None:
    """The table's script, or None when the lab needs no rule."""
    masquerade = _masquerade_rules(topo)
    dnat = _dnat_rules(topo)
    if not masquerade and not dnat:
        return None
    lines = [f"table inet {table_name(topo.name)} {{", f'  comment "netemu:{topo.name}"']
    if masquerade:
        lines += ["  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;",
                  *[f"    {rule}" for rule in masquerade], "  }"]
    if dnat:
        # Output catches connections the machine itself makes to its own addresses, loopback
        # excepted (the named priority "dstnat" is only accepted on prerouting; -100 is its value).
        for chain in ("prerouting", "output"):
            lines += [f"  chain {chain} {{", f"    type nat hook {chain} priority -100; policy accept;",
                      *[f"    {rule}" for rule in _loopback_exempt(chain)],
                      *[f"    {rule}" for rule in dnat], "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _masquerade_rules(topo: Topology) -> list[str]:
    rules = []
    for net in topo.networks.values():
        if not net.nat:
            continue
        bridge = paths.bridge_name(topo.name, net.name)
        for subnet in net.subnets:
            family = "ip" if subnet.version == 4 else "ip6"
            rules.append(f'{family} saddr {subnet} oifname != "{bridge}" masquerade')
    return rules


def _loopback_exempt(chain: str) -> list[str]:
    """Rules ahead of the DNAT: the machine's own loopback traffic is never translated.
    `fib daddr type local` matches 127.0.0.0/8 too, so without them `curl 127.0.0.1:PORT` on the
    machine would reach the node instead of what listens there. The `lo` test belongs to
    prerouting only: in output every local destination, the machine's eth0 address or a lab's
    gateway as much as 127.0.0.1, is routed through lo, and those must still be forwarded."""
    rules = ["ip daddr 127.0.0.0/8 return", "ip6 daddr ::1 return"]
    return ['iifname "lo" return', *rules] if chain == "prerouting" else rules


def _dnat_rules(topo: Topology) -> list[str]:
    rules = []
    for node in topo.nodes.values():
        if not node.ports:
            continue
        target = _reachable_address(topo, node.name)
        for spec in node.ports:
            outer, inner, proto = published(spec)
            rules.append(f"fib daddr type local {proto} dport {outer} dnat ip to {target}:{inner}")
    return rules


def published(spec: str) -> tuple[int, int, str]:
    """(machine port, node port, protocol) of a port as the loader normalised it: "8080:80/tcp"."""
    mapping, _, proto = spec.partition("/")
    outer, _, inner = mapping.partition(":")
    return int(outer), int(inner), proto or "tcp"


def check_ports_free(topo: Topology) -> None:
    """Refuse a published port that a socket of the machine already listens on: the DNAT would
    silently take the port from it. Run by `up` before anything is created. Any address counts,
    loopback too: a published port has no address of its own (as Docker's proxy, binding
    0.0.0.0:PORT, fails on a port bound on any address). A listener that starts after this
    check is not seen: the check is advice at `up`, not a reservation."""
    for node in topo.nodes.values():
        for spec in node.ports:
            outer, _, proto = published(spec)
            taken = sockets.listening(proto, outer)
            if taken:
                raise InputError(one_line(f"{topo.path}:{node.line}: nodes.{node.name}.ports: port {outer}/{proto} "
                                          f"is already in use on the machine: {_user(taken[0])}"))


def _user(sock: sockets.Socket) -> str:
    verb = "listens on" if sock.proto == "tcp" else "is bound to"
    who = sockets.holder(sock.inode)
    if who is None:
        return f"a socket {verb} {sock.endpoint()} (its process was not found)"
    return f"{who.name} (pid {who.pid}) {verb} {sock.endpoint()}"


def _reachable_address(topo: Topology, node: str) -> str:
    """The node's IPv4 address on a network whose bridge the machine has an address on."""
    for link in topo.links:
        nets = [ep.network for ep in link.endpoints if ep.is_network]
        if not nets or not topo.networks[nets[0]].gateways:
            continue
        for ep, addrs in link.host_endpoints():
            v4 = [a for a in addrs if a.version == 4]
            if ep.node == node and v4:
                return str(v4[0].ip)
    raise InputError(f"{topo.path}:{topo.nodes[node].line}: nodes.{node}.ports: published ports need the node "
                     "on a network with a gateway (for example `network: bridge`)")


def apply(topo: Topology) -> bool:
    script = ruleset(topo)
    if script is None:
        return False
    nftables.load(script)
    return True


def remove(lab: str) -> bool:
    name = table_name(lab)
    for family, table in nftables.tables():
        if table == name and _tagged(family, table, lab):
            nftables.delete_table(family, table)
            return True
    return False


def owned_labs() -> set[str]:
    """Labs that own a table: its name is netemu-LAB and it carries netemu's comment, so a
    user's table that only looks like ours is never taken for a lab's."""
    found = set()
    for family, table in nftables.tables():
        lab = table.removeprefix(nftables.TABLE_PREFIX)
        if table.startswith(nftables.TABLE_PREFIX) and paths.is_lab_name(lab) and _tagged(family, table, lab):
            found.add(lab)
    return found


def _tagged(family: str, table: str, lab: str) -> bool:
    # `nft -j` leaves table comments out (nftables 1.0.6): read the table's own text.
    try:
        return f'comment "netemu:{lab}"' in nftables.list_table(family, table)
    except MachineError:
        return False  # gone since it was listed: another netemu took its lab down meanwhile
