"""The lab's firewall on the machine.

- Its own nftables table: masquerade for `nat: true` networks (the docker0 rule) and DNAT for
  published `ports`. One table per lab, netemu-LAB, removed whole by `down`.
- Accept rules for its bridges in the machine's forward chains that could drop them: Docker's
  FORWARD policy DROP (bridged frames pass FORWARD too while bridge netfilter is on), an
  ip6tables policy DROP, a native nftables forward chain. In nftables an accept only ends its
  own base chain, and a drop in any other chain of the hook still drops, so the accepts go into
  every such chain itself: through iptables for iptables' chains (DOCKER-USER when Docker made
  it, the chain Docker leaves to its users, else the top of FORWARD), through nft for the others.
  Each rule carries the comment netemu:LAB, which is how `down` and `clean` find them again.
  Nothing else in those chains is touched."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from netemu.errors import InputError, MachineError, one_line
from netemu.linux import iptables, nftables, sockets
from netemu.runtime import paths
from netemu.topology.model import Topology

DOCKER_USER = "DOCKER-USER"
NATIVE_FAMILIES = ("ip", "ip6", "inet")  # nft families whose forward hook sees a lab's IP packets
NFT_FAMILY = {4: "ip", 6: "ip6"}  # where iptables-nft keeps each family's tables
TAG_PREFIX = "netemu:"


def tag(lab: str) -> str:
    """The comment on the lab's table and on each of its accept rules."""
    return f"{TAG_PREFIX}{lab}"


def table_name(lab: str) -> str:
    return f"{nftables.TABLE_PREFIX}{lab}"


def ruleset(topo: Topology) -> str | None:
    """The table's script, or None when the lab needs no rule."""
    masquerade = _masquerade_rules(topo)
    dnat = _dnat_rules(topo)
    if not masquerade and not dnat:
        return None
    lines = [f"table inet {table_name(topo.name)} {{", f'  comment "{tag(topo.name)}"']
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
                raise InputError(one_line(f"{topo.where(node.line)}: nodes.{node.name}.ports: port {outer}/{proto} "
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
    raise InputError(f"{topo.where(topo.nodes[node].line)}: nodes.{node}.ports: published ports need the node "
                     "on a network with a gateway (for example `network: bridge`)")


def apply(topo: Topology) -> bool:
    """Open the machine's forward chains to the lab's bridges (one restore per iptables family
    and backend, one nft transaction for the native chains), then load the lab's own table.
    True when the lab has a table of its own. A failure leaves what was added to the rollback,
    which finds it by its comment."""
    table = ruleset(topo)
    accepts = forward_accepts(topo)
    hooks = forward_hooks(nftables.ruleset()) if accepts else ForwardHooks()
    for tool, chain in hooks.iptables:
        lines = [_iptables_rule(chain, accept, topo.name) for accept in accepts]
        iptables.restore(tool, iptables.script("filter", lines))
    inserts = [{"insert": {"rule": {"family": family, "table": name, "chain": chain, "expr": expr,
                                    "comment": tag(topo.name)}}}
               for family, name, chain in hooks.nft for accept in accepts for expr in _nft_exprs(accept)]
    if inserts:
        nftables.load_json(inserts)
    if table is not None:
        nftables.load(table)
    return table is not None


def remove(lab: str) -> list[str]:
    """Remove the lab's table and its accept rules, found by name and tag: what was removed."""
    objects = nftables.ruleset()
    removed = _remove_iptables_rules(lab, objects)
    mine = [rule for rule in _objects(objects, "rule")
            if rule.get("comment") == tag(lab) and not _iptables_owned(rule["family"], rule["table"])]
    deletes: list[dict[str, Any]] = [
        {"delete": {"rule": {key: rule[key] for key in ("family", "table", "chain", "handle")}}} for rule in mine]
    name = table_name(lab)
    tables = [(t["family"], t["name"]) for t in _objects(objects, "table") if t["name"] == name]
    own = [(family, table) for family, table in tables if _tagged(family, table, lab)]
    deletes += [{"delete": {"table": {"family": family, "name": table}}} for family, table in own]
    if deletes:
        nftables.load_json(deletes)
    removed += [f"{len(mine)} nft forward rules"] if mine else []
    return [name] * bool(own) + removed


def owned_labs() -> set[str]:
    """Labs that own a table or an accept rule. A table counts when its name is netemu-LAB and
    it carries netemu's comment, so a user's table that only looks like ours is never taken for
    a lab's; a rule counts by its comment netemu:LAB."""
    found = set()
    objects = nftables.ruleset()
    for table in _objects(objects, "table"):
        family, name = table["family"], table["name"]
        lab = name.removeprefix(nftables.TABLE_PREFIX)
        if name.startswith(nftables.TABLE_PREFIX) and paths.is_lab_name(lab) and _tagged(family, name, lab):
            found.add(lab)
    comments = [rule.get("comment") or "" for rule in _objects(objects, "rule")]
    for _tool, saved in _iptables_filters(objects):
        comments += [iptables.comment(rule) or "" for rule in iptables.rules(saved)]
    labs = {c.removeprefix(TAG_PREFIX) for c in comments if c.startswith(TAG_PREFIX)}
    return found | {lab for lab in labs if paths.is_lab_name(lab)}


def _tagged(family: str, table: str, lab: str) -> bool:
    # `nft -j` leaves table comments out (nftables 1.0.6): read the table's own text.
    try:
        return f'comment "{tag(lab)}"' in nftables.list_table(family, table)
    except MachineError:
        return False  # gone since it was listed: another netemu took its lab down meanwhile


# accepts in the machine's forward chains --------------------------------------------------------
@dataclass(frozen=True)
class Accept:
    """One accept rule for a lab's bridge: packets in from `iif`, out to `oif` (None: any), and
    with `replies` only what conntrack knows (replies, and connections to a published port)."""

    iif: str | None = None
    oif: str | None = None
    replies: bool = False


def forward_accepts(topo: Topology) -> list[Accept]:
    """The narrowest rules that let the lab's traffic through, as Docker's own rules for docker0:
    a bridge with no address on the machine only bridges, so only frames from one of its ports to
    another (-i BR -o BR); a bridge with a gateway is routed by the machine: what its hosts send
    (-i BR), and towards them only replies and published ports, so the machine's neighbours cannot
    reach the hosts through a firewall that drops what it forwards. A bridge a network joins
    (`bridge:`) is the machine's, under its owner's rules; macvlan networks have no bridge."""
    accepts = []
    for net in topo.networks.values():
        if net.driver != "bridge" or net.bridge is not None:
            continue
        bridge = paths.bridge_name(topo.name, net.name)
        if net.gateways:
            accepts += [Accept(iif=bridge), Accept(oif=bridge, replies=True)]
        else:
            accepts.append(Accept(iif=bridge, oif=bridge))
    return accepts


def _iptables_rule(chain: str, accept: Accept, lab: str) -> str:
    words = ["-I", chain]
    words += ["-i", accept.iif] if accept.iif else []
    words += ["-o", accept.oif] if accept.oif else []
    words += ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT"] if accept.replies else []
    return " ".join([*words, "-m", "comment", "--comment", tag(lab), "-j", "ACCEPT"])


def _nft_exprs(accept: Accept) -> list[list[dict[str, Any]]]:
    """The rule's expressions in nft's JSON: iifname/oifname matches, then accept (a reply rule
    is two: conntrack's state and its dnat status cannot be asked in one match)."""
    names = [_meta("iifname", accept.iif)] * bool(accept.iif) + [_meta("oifname", accept.oif)] * bool(accept.oif)
    if not accept.replies:
        return [[*names, {"accept": None}]]
    return [[*names, _ct("state", ["established", "related"]), {"accept": None}],
            [*names, _ct("status", "dnat"), {"accept": None}]]


def _meta(key: str, value: str | None) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": value}}


def _ct(key: str, value: str | list[str]) -> dict[str, Any]:
    return {"match": {"op": "in", "left": {"ct": {"key": key}}, "right": value}}


@dataclass
class ForwardHooks:
    """Where the machine could drop a lab's forwarded packets: iptables' chains to insert into
    (one per family and backend), and native nftables base chains (family, table, chain)."""

    iptables: list[tuple[iptables.Tool, str]] = field(default_factory=list)
    nft: list[tuple[str, str, str]] = field(default_factory=list)


def forward_hooks(objects: list[dict[str, Any]]) -> ForwardHooks:
    """Every iptables FORWARD chain (either backend: whatever its policy now, since Docker may set
    DROP later), and every native forward base chain that can drop (policy drop, or a drop or
    reject among its own rules). Jumps are not followed: a chain of policy accept whose drops all
    sit in chains it jumps to is left alone (libvirt, LXD and Docker's nftables tables drop only
    for their own bridges that way)."""
    hooks = ForwardHooks()
    for tool, saved in _iptables_filters(objects):
        chains = iptables.chains(saved)
        if "FORWARD" in chains:
            hooks.iptables.append((tool, DOCKER_USER if DOCKER_USER in chains else "FORWARD"))
    refusing = {(r["family"], r["table"], r["chain"]) for r in _objects(objects, "rule") if _refuses(r["expr"])}
    for chain in _objects(objects, "chain"):
        key = (chain["family"], chain["table"], chain["name"])
        if (chain.get("hook") == "forward" and chain["family"] in NATIVE_FAMILIES
                and not chain["table"].startswith(nftables.TABLE_PREFIX)
                and not _iptables_owned(chain["family"], chain["table"])
                and (chain.get("policy") == "drop" or key in refusing)):
            hooks.nft.append(key)
    return hooks


def _iptables_filters(objects: list[dict[str, Any]]) -> Iterator[tuple[iptables.Tool, str]]:
    """(tool, its filter table as iptables-save prints it) for each family and backend whose
    filter table exists, with a FORWARD chain for iptables-nft (iptables-nft-save shows built-in
    chains that do not exist, and a rule added to one would create it on the machine). Read
    without a process where possible: the nft ruleset is already listed, the legacy tables are
    in /proc. Without nft, iptables-nft-save itself says whether the table exists."""
    chains = {(c["family"], c["table"], c["name"]) for c in _objects(objects, "chain")}
    for family in iptables.FAMILIES:
        present = {"nft": (NFT_FAMILY[family], "filter", "FORWARD") in chains or not nftables.available(),
                   "legacy": "filter" in iptables.legacy_tables(family)}
        for backend in iptables.BACKENDS:
            tool = iptables.tool(family, backend) if present[backend] else None
            saved = iptables.save(tool, "filter") if tool is not None else ""
            if tool is not None and saved:
                yield tool, saved


def _iptables_owned(family: str, table: str) -> bool:
    """A table iptables-nft made and changes through iptables: nft must not add to it (iptables
    could not read such rules back). Without iptables-nft on the machine nobody else would."""
    return (family in ("ip", "ip6") and table in iptables.NFT_TABLES
            and iptables.tool(4 if family == NFT_FAMILY[4] else 6, "nft") is not None)


def _refuses(expr: Any) -> bool:
    """Whether a rule's expression holds a drop or a reject verdict anywhere (a verdict map too)."""
    if isinstance(expr, dict):
        return "drop" in expr or "reject" in expr or any(_refuses(v) for v in expr.values())
    if isinstance(expr, list):
        return any(_refuses(v) for v in expr)
    return False


def _remove_iptables_rules(lab: str, objects: list[dict[str, Any]]) -> list[str]:
    removed = []
    for tool, saved in _iptables_filters(objects):
        mine = [rule for rule in iptables.rules(saved) if iptables.comment(rule) == tag(lab)]
        if mine:
            iptables.restore(tool, iptables.script("filter", ["-D" + rule[2:] for rule in mine]))
            removed.append(f"{len(mine)} {tool.name} forward rules")
    return removed


def _objects(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj[kind] for obj in objects if kind in obj]
