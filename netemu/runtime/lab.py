"""Turning a validated topology into a running lab, and back.

`up` is apply-with-rollback: the lab's name is reserved first, every object is named after the
lab (see paths.py), and any failure, or an interrupt, removes whatever exists by that name
(cleanup.remove_lab) before the error goes on. State is written twice: "creating" at the start
and the full record at the end, never once per object."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from netemu.errors import InputError, LabError, LabNotFound, MachineError, NetemuError
from netemu.linux import namespaces, procs, sysctl
from netemu.linux.initbin import init_binary
from netemu.linux.netlink import Netlink
from netemu.runtime import cleanup, execution, firewall, hostsettings, links, nodes, paths, plan, state
from netemu.runtime.impair import Shaping
from netemu.runtime.nodes import RunningNode
from netemu.topology.model import Link, Node, Topology

Progress = Callable[[str], None]

# Inside every host: no IPv6 duplicate address detection, so the first probe after `up` works.
NETNS_DEFAULT_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    # `netemu link ... down` then `up` must bring a link back with its IPv6 addresses.
    "net.ipv6.conf.all.keep_addr_on_down": "1",
    "net.ipv6.conf.default.keep_addr_on_down": "1",
}


def require_root() -> None:
    if os.geteuid() != 0:
        raise MachineError("netemu needs root (it creates namespaces, links and cgroups): run it with sudo")


def require_kernel() -> None:
    with open("/proc/filesystems") as f:
        filesystems = f.read().split()
    if "overlay" not in filesystems:
        raise MachineError("the kernel has no overlay filesystem: load the module with `modprobe overlay`")


def _unsupported(topo: Topology) -> None:
    """Features of the file format that this version does not build yet: refused before anything
    is created, naming the node."""
    for node in topo.nodes.values():
        where = f"{topo.path}:{node.line}" if node.line else str(topo.path)
        if node.userns:
            raise InputError(f"{where}: nodes.{node.name}.userns: user namespaces are not supported yet")
    for net in topo.networks.values():
        where = f"{topo.path}:{net.line}" if net.line else str(topo.path)
        if net.uplink:
            raise InputError(f"{where}: networks.{net.name}: uplink is not supported yet")
    for link in topo.links:
        for ep, _ in link.host_endpoints():
            if topo.nodes[ep.node].network == "host":
                raise InputError(f"{topo.path}:{link.line}: links: node {ep.node} uses the machine's "
                                 "network (network: host) and cannot have links")


def up(topo: Topology, progress: Progress | None = None) -> dict[str, Any]:
    require_root()
    require_kernel()
    _unsupported(topo)
    init = init_binary()
    say = progress or (lambda _msg: None)
    with state.reserve(topo.name):
        record = _initial_record(topo)
        state.write(topo.name, record)
        try:
            topo = plan.expand(topo)
            record["planned_links"] = _planned_links(topo)  # now with the default bridge's
            state.write(topo.name, record)
            state.save_topology(topo.name, topo)
            _Builder(topo, init, record, say).apply()
        except BaseException:
            say("failed: removing what was created")
            cleanup.remove_lab(topo.name)
            raise
        record["status"] = "running"
        state.write(topo.name, record)
    return record


def _planned_links(topo: Topology) -> list[str]:
    """Names of the links `up` will make in the machine's namespace, recorded before any exists:
    the kernel tags a link only after creating it, so a crash in between leaves a link that only
    this list names."""
    names = [paths.bridge_name(topo.name, net) for net in topo.networks]
    for link in topo.links:
        if any(ep.is_network for ep in link.endpoints):
            names += [paths.host_veth_name(topo.name, ep.node, ep.iface) for ep, _ in link.host_endpoints()]
    return names


def _initial_record(topo: Topology) -> dict[str, Any]:
    return {
        "planned_links": _planned_links(topo),
        "name": topo.name,
        "file": str(topo.path.resolve()) if topo.path else None,
        "status": "creating",
        "created": time.time(),
        "owner_pid": os.getpid(),
        "nodes": {},
        "networks": {},
        "links": [],
    }


def _segment_sizes(topo: Topology) -> list[int]:
    sizes = {name: 1 for name in topo.networks}  # the bridge's own address
    p2p = 0
    for link in topo.links:
        nets = [ep.network for ep in link.endpoints if ep.is_network]
        if nets:
            sizes[nets[0]] += 1
        else:
            p2p += 1
    return list(sizes.values()) + [2] * p2p


class _Builder:
    def __init__(self, topo: Topology, init: os.PathLike[str], record: dict[str, Any], say: Progress) -> None:
        self.topo = topo
        self.init = init
        self.record = record
        self.say = say
        self.running: dict[str, RunningNode] = {}
        self.sockets: dict[int, Netlink] = {}
        self.lab_hosts = nodes.lab_hosts_entries(topo)

    def apply(self) -> None:
        needs_forwarding = any(n.nat for n in self.topo.networks.values()) or any(
            n.ports for n in self.topo.nodes.values())
        hostsettings.claim(self.topo.name, hostsettings.neighbour_entries(_segment_sizes(self.topo)),
                           forwarding=needs_forwarding)
        try:
            self._start_nodes()
            self._configure_namespaces()
            self._create_bridges()
            self._create_links()
            self._configure_hosts()
            self._impair_links()
            if firewall.apply(self.topo):
                self.record["nftables"] = firewall.table_name(self.topo.name)
            self._start_commands()
            self._run_exec_commands()
        finally:
            for sock in self.sockets.values():
                sock.close()

    # hosts ---------------------------------------------------------------------------------
    def _start_nodes(self) -> None:
        own_net = [n for n in self.topo.nodes.values() if not n.network.startswith("container:")]
        shared = [n for n in self.topo.nodes.values() if n.network.startswith("container:")]
        self._launch(own_net)
        # container:<other> hosts join a namespace that must exist first; chains resolve in rounds.
        while shared:
            ready = [n for n in shared if n.network.split(":", 1)[1] in self.running]
            if not ready:
                raise InputError("network: container:<node> references form a cycle: "
                                 + ", ".join(n.name for n in shared))
            self._launch(ready)
            shared = [n for n in shared if n not in ready]
        self.say(f"{len(self.running)} hosts started")

    def _launch(self, batch: list[Node]) -> None:
        launches = []
        for node in batch:
            group, layers = nodes.prepare(self.topo, node, self.lab_hosts)
            net, netns_pid = self._net_of(node)
            launches.append((nodes.Launch(self.init, self.topo, node, group, layers, net), netns_pid))
        errors: list[NetemuError] = []
        for launch, netns_pid in launches:
            try:  # collect every outcome, so no launch is left unread
                pid = launch.result()
            except NetemuError as e:
                errors.append(e)
                continue
            own = netns_pid if netns_pid != -1 else pid
            self.running[launch.node.name] = nodes.running(launch, pid, own)
            if netns_pid == -1:
                namespaces.name_netns(paths.netns_name(self.topo.name, launch.node.name), pid)
            self.record["nodes"][launch.node.name] = asdict(self.running[launch.node.name])
        if errors:
            raise errors[0]

    def _net_of(self, node: Node) -> tuple[str, int | None]:
        """netemu-init's --net value, and whose namespace the host ends up in (-1: its own)."""
        if node.network == "host":
            return "host", None
        if node.network.startswith("container:"):
            owner = self.running[node.network.split(":", 1)[1]]
            if owner.netns_pid is None:
                return "host", None
            return f"/proc/{owner.netns_pid}/ns/net", owner.netns_pid
        return "new", -1

    def _socket(self, node: str) -> Netlink:
        pid = self._netns_pid(node)
        if pid not in self.sockets:
            self.sockets[pid] = Netlink(pid)
        return self.sockets[pid]

    def _configure_namespaces(self) -> None:
        done: set[int] = set()
        for node in self.topo.nodes.values():
            pid = self.running[node.name].netns_pid
            if pid is not None and pid not in done:
                sysctl.write_in(pid, NETNS_DEFAULT_SYSCTLS)
                done.add(pid)
            if node.sysctls:
                if pid is None and any(k.startswith("net.") for k in node.sysctls):
                    raise InputError(f"node {node.name}: net.* sysctls would change the machine "
                                     "(network: host)")
                sysctl.write_in(self.running[node.name].pid, node.sysctls)

    # networks and links --------------------------------------------------------------------
    def _create_bridges(self) -> None:
        host = self._host_socket()
        for net in self.topo.networks.values():
            name = paths.bridge_name(self.topo.name, net.name)
            host.add_bridge(name, paths.alias(self.topo.name, f"network:{net.name}"), net.mtu)
            for gateway in net.gateways:
                host.add_address(name, gateway)
            host.up(name)
            self.record["networks"][net.name] = {
                "bridge": name, "gateways": [str(g) for g in net.gateways],
                "subnets": [str(s) for s in net.subnets],
            }

    def _host_socket(self) -> Netlink:
        if 0 not in self.sockets:
            self.sockets[0] = Netlink()
        return self.sockets[0]

    def _create_links(self) -> None:
        for number, link in enumerate(self.topo.links):
            self.record["links"].append(self._create_link(number, link))
        self.say(f"{len(self.topo.links)} links created")

    def _create_link(self, number: int, link: Link) -> dict[str, Any]:
        a, b = link.endpoints
        entry: dict[str, Any] = {
            "endpoints": [str(a), str(b)],
            "addresses": [[str(x) for x in addrs] for addrs in link.addresses],
            "mtu": link.mtu,
            "impair": link.impair,
        }
        if a.is_network or b.is_network:
            host_ep, net_ep = (b, a) if a.is_network else (a, b)
            outer = paths.host_veth_name(self.topo.name, host_ep.node, host_ep.iface)
            bridge = paths.bridge_name(self.topo.name, net_ep.network)
            machine = self._host_socket()
            machine.add_veth(outer, host_ep.iface, peer_ns_pid=self.running[host_ep.node].netns_pid,
                             alias=paths.alias(self.topo.name, f"link:{number}:{host_ep}"), mtu=link.mtu)
            machine.enslave(outer, bridge)
            machine.up(outer)
            entry["machine_side"] = outer
        else:
            self._host_socket().add_veth(
                a.iface, b.iface, ns_pid=self.running[a.node].netns_pid,
                peer_ns_pid=self.running[b.node].netns_pid, mtu=link.mtu)
        return entry

    def _configure_hosts(self) -> None:
        for link in self.topo.links:
            for ep, addrs in link.host_endpoints():
                sock = self._socket(ep.node)
                for address in addrs:
                    sock.add_address(ep.iface, address)
                sock.up(ep.iface)
        for node in self.topo.nodes.values():
            for route in node.routes:
                self._socket(node.name).add_route(route.dst, str(route.via) if route.via else None, route.dev)

    def _impair_links(self) -> None:
        for entry, link in zip(self.record["links"], self.topo.links, strict=True):
            if link.impair:
                links.shape(entry, Shaping.parse(link.impair), lambda node: self._netns_pid(node))

    def _netns_pid(self, node: str) -> int:
        pid = self.running[node].netns_pid
        assert pid is not None, "links on host-network nodes are refused before up"
        return pid

    # programs ------------------------------------------------------------------------------
    def _start_commands(self) -> None:
        for node in self.topo.nodes.values():
            if nodes.command(node):  # the node's cmd, or its image's Entrypoint/Cmd
                os.kill(self.running[node.name].pid, signal.SIGUSR1)

    def _run_exec_commands(self) -> None:
        for node in self.topo.nodes.values():
            for argv in node.exec:
                result = execution.run(self.record, node.name, argv, env=nodes.base_env(node))
                if result.returncode != 0:
                    output = (result.stdout + result.stderr).strip()
                    raise LabError(f"node {node.name}: exec {' '.join(argv)!r} exited with "
                                   f"{result.returncode}: {output[-2000:]}")


# down, listing, inspection -------------------------------------------------------------------
def down(name: str) -> cleanup.Removed:
    """Remove lab `name`; idempotent: with nothing left to remove it removes nothing."""
    require_root()
    if paths.state_dir(name).exists():
        try:
            with state.locked(name):
                return cleanup.remove_lab(name)
        except LabNotFound:
            pass  # a concurrent down won the race
    return cleanup.remove_lab(name)  # no state: the leftovers of a crash, found by name


def node_alive(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    return bool(pid) and procs.alive(pid) and procs.start_time(pid) == info.get("start_time")


def lab_status(record: dict[str, Any]) -> str:
    if record.get("status") == "creating":
        return "creating" if state.is_busy(record["name"]) else "failed"
    alive = [node_alive(info) for info in record["nodes"].values()]
    if alive and all(alive):
        return "running"
    return "dead" if not any(alive) else "degraded"


def list_labs() -> list[dict[str, Any]]:
    labs = []
    for name in state.lab_names():
        record = state.read(name) or {"name": name, "status": "creating", "nodes": {}}
        alive = sum(node_alive(info) for info in record["nodes"].values())
        labs.append({"name": name, "status": lab_status(record), "nodes": len(record["nodes"]),
                     "alive": alive, "created": record.get("created"), "file": record.get("file")})
    return labs


def load_record(name: str) -> dict[str, Any]:
    record = state.read(name)
    if record is None:
        raise LabNotFound(f"no lab named '{name}' (netemu ps lists the labs)")
    return record


def inspect(name: str) -> dict[str, Any]:
    record = load_record(name)
    result = dict(record)
    result["status"] = lab_status(record)
    result["nodes"] = {node: _inspect_node(name, node, info) for node, info in record["nodes"].items()}
    return result


def _inspect_node(lab: str, node: str, info: dict[str, Any]) -> dict[str, Any]:
    out = dict(info)
    out["alive"] = node_alive(info)
    out["netns"] = paths.netns_name(lab, node) if info.get("netns_pid") == info.get("pid") else None
    if out["alive"] and info.get("netns_pid"):
        with Netlink(info["netns_pid"]) as nl:
            addresses = nl.addresses()
            out["interfaces"] = [
                {"name": link.name, "state": link.state, "mtu": link.mtu,
                 "addresses": addresses.get(link.name, [])}
                for link in nl.links()
            ]
            out["routes"] = nl.routes()
    return out


def clean() -> dict[str, cleanup.Removed]:
    """Remove every netemu object that no live lab accounts for."""
    require_root()
    live = set()
    for name in state.lab_names():
        record = state.read(name)
        if state.is_busy(name) or (record and lab_status(record) in ("running", "degraded")):
            live.add(name)
    removed = {}
    for name in sorted(cleanup.owned_lab_names() - live):
        removed[name] = cleanup.remove_lab(name)
    hostsettings.release("", live_labs=live)
    return removed
