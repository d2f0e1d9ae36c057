"""Building a lab's kernel objects from a settled topology: hosts, bridges, links, addresses,
routes, impairments, firewall, programs. The same builder restarts a subset of nodes
(`netemu node ... start`), rewiring only their links."""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
from collections.abc import Callable

from netemu.errors import InputError, LabError, NetemuError
from netemu.linux import namespaces, netlink, sysctl
from netemu.progress import Step
from netemu.runtime import execution, firewall, hostsettings, links, nodes, paths, sharing, state, uplinks
from netemu.runtime.impair import Shaping
from netemu.runtime.records import LabRecord, LinkRecord, NetworkRecord, NodeRecord
from netemu.runtime.sharing import other_lab_netns
from netemu.topology.model import CONTAINER, OTHER_LAB, Link, Node, Topology

Progress = Callable[[str], None]
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# Inside every host: no IPv6 duplicate address detection, so the first probe after `up` works.
NETNS_DEFAULT_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    # `netemu link ... down` then `up` must bring a link back with its IPv6 addresses.
    "net.ipv6.conf.all.keep_addr_on_down": "1",
    "net.ipv6.conf.default.keep_addr_on_down": "1",
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


class Builder:
    def __init__(self, topo: Topology, init: os.PathLike[str], record: LabRecord, say: Progress,
                 only: set[str] | None = None) -> None:
        """Build the whole lab, or with `only` (re)start those nodes inside a running lab."""
        self.topo = topo
        self.init = init
        self.record = record
        self.say = say
        self.only = only
        self.targets = [n for n in topo.nodes.values() if only is None or n.name in only]
        self.running: dict[str, NodeRecord] = {}
        self.sockets: dict[int, netlink.Socket] = {}  # by namespace, 0: the machine's
        self.lab_hosts = nodes.lab_hosts_entries(topo)
        if only is not None:
            self.running = {name: info for name, info in record.nodes.items() if name not in only and info.pid}

    def apply(self) -> None:
        nodes.check_sources(self.topo, self.targets)  # a missing `files:` directory: nothing made yet
        if self.only is None:
            needs_forwarding = any(n.nat for n in self.topo.networks.values()) or any(
                n.ports for n in self.topo.nodes.values())
            hostsettings.claim(self.topo.name, hostsettings.neighbour_entries(_segment_sizes(self.topo)),
                               forwarding=needs_forwarding)
        try:
            nodes.prepare_lab(self.topo)
            self._start_nodes()
            self._configure_namespaces()
            if self.only is None:
                self._create_bridges()
            wired = self._create_links()
            self._configure_hosts(wired)
            self._impair_links(wired)
            if self.only is None and firewall.apply(self.topo):
                self.record.nftables = firewall.table_name(self.topo.name)
            self._start_commands()
            self._run_exec_commands()
        finally:
            sharing.release_all()
            for sock in self.sockets.values():
                sock.close()

    # hosts ---------------------------------------------------------------------------------
    def _start_nodes(self) -> None:
        # A host with `network:`, `ipc:` or `pid: container:<other>` joins namespaces of a host
        # that must run first, and one with `wait_for:` starts after those nodes: every round
        # starts the hosts whose others all run (the loader refused loops; a restart's others
        # run already, nodectl checked it). `wait_for` orders only the nodes started together:
        # a restarted node does not wait for, nor need, a node that is stopped.
        waiting = {n.name: n for n in self.targets}
        self.rounds: list[list[Node]] = []
        while waiting:
            ready = [n for n in waiting.values() if all(other in self.running for _, other in n.shares())
                     and not any(other in waiting for other in n.wait_for)]
            if not ready:
                raise InputError("container:<node> or wait_for references form a cycle or name a stopped node: "
                                 + ", ".join(waiting))
            self._launch(ready)
            self.rounds.append(ready)
            for node in ready:
                del waiting[node.name]
        self.say(f"{len(self.targets)} hosts started")

    def _launch(self, batch: list[Node]) -> None:
        # Everything that can refuse a node (a missing bind source, say) is done for all of them
        # before the first process starts: a process still joining its cgroups when the rollback
        # runs could be missed by it.
        prepared = [(node, nodes.prepare(self.topo, node, self.lab_hosts), *self._net_of(node)) for node in batch]
        launches: list[tuple[nodes.Launch, int | None]] = []
        try:
            for node, ready, net, netns_pid in prepared:
                launch = nodes.Launch(self.init, self.topo, node, ready, net,
                                      ipc=self._joined(node, "ipc"), pid_ns=self._joined(node, "pid"))
                launches.append((launch, netns_pid))
            errors: list[NetemuError] = []
            for launch, netns_pid in launches:
                try:  # collect every outcome, so no launch is left unread
                    pid = launch.result()
                except NetemuError as e:
                    errors.append(e)
                    continue
                self._record_launch(launch, pid, netns_pid)
                self.say(Step("hosts", len(self.running), len(self.topo.nodes)))
        except BaseException:
            # Interrupted (Ctrl-C) or failed while hosts start: none may be left starting while
            # the rollback runs, since one still joining its cgroups could escape it.
            for launch, _ in launches:
                launch.abandon()
            raise
        if errors:
            raise errors[0]

    def _record_launch(self, launch: nodes.Launch, pid: int, netns_pid: int | None) -> None:
        own = netns_pid if netns_pid != -1 else pid
        self.running[launch.node.name] = nodes.running(launch, pid, own)
        if netns_pid == -1:
            namespaces.name_netns(paths.netns_name(self.topo.name, launch.node.name), pid)
        self.record.nodes[launch.node.name] = self.running[launch.node.name]

    def _net_of(self, node: Node) -> tuple[str, int | None]:
        """netemu-init's --net value, and whose namespace the host ends up in (-1: its own)."""
        if node.network == "host":
            return "host", None
        if node.network.startswith(OTHER_LAB):
            return other_lab_netns(node.network)
        if node.network.startswith("container:"):
            owner = self.running[node.network.split(":", 1)[1]]
            if owner.netns_pid is None:
                return "host", None
            return f"/proc/{owner.netns_pid}/ns/net", owner.netns_pid
        return "new", -1

    def _joined(self, node: Node, kind: str) -> str | None:
        """netemu-init's --ipc or --pid value: None for a namespace of the host's own, `host` for
        the machine's, or the namespace file of the host it shares with. That host's PID 1 is in
        the namespace it has (its own, or one it joined in turn), so one hop follows a chain."""
        mode = getattr(node, kind)
        if mode == "host":
            return "host"
        if mode.startswith(CONTAINER):
            return f"/proc/{self.running[mode.removeprefix(CONTAINER)].pid}/ns/{kind}"
        return None

    def _configure_namespaces(self) -> None:
        done: set[int] = set()
        for node in self.targets:
            pid = self.running[node.name].netns_pid
            if pid is not None and pid not in done and not node.network.startswith(OTHER_LAB):  # not ours
                sysctl.write_in(pid, NETNS_DEFAULT_SYSCTLS)
                done.add(pid)
            if node.sysctls:
                if pid is None and any(k.startswith("net.") for k in node.sysctls):
                    raise InputError(f"node {node.name}: net.* sysctls would change the machine "
                                     "(network: host)")
                sysctl.write_in(self.running[node.name].pid, node.sysctls)

    # networks and links --------------------------------------------------------------------
    def _create_bridges(self) -> None:
        joined = [net for net in self.topo.networks.values() if net.bridge is not None]
        for net in joined:  # checked by name before `up` made anything (uplinks.check_machine_networks)
            self.record.networks[net.name] = NetworkRecord(bridge=net.bridge or "", machine_bridge=True,
                                                           subnets=[str(s) for s in net.subnets])
        bridges = [net for net in self.topo.networks.values() if net.driver == "bridge" and net.bridge is None]
        for net in self.topo.networks.values():
            if net.driver == "macvlan":
                uplinks.describe(net.uplink or "", net.name)  # the parent must exist
                self.record.networks[net.name] = NetworkRecord(driver="macvlan", parent=net.uplink)
        names = {net.name: paths.bridge_name(self.topo.name, net.name) for net in bridges}
        try:
            with netlink.Socket() as sock:
                with netlink.Batch(sock) as batch:
                    for net in bridges:
                        batch.add_bridge(names[net.name], net.mtu)
                _tag(sock, [(names[net.name], paths.alias(self.topo.name, f"network:{net.name}")) for net in bridges])
                index = netlink.Indexes(sock, names.values())  # by name: never a dump of the machine's links
                with netlink.Batch(sock) as batch:
                    for net in bridges:
                        batch.set_up(index[names[net.name]], names[net.name])
                        for gateway in net.gateways:
                            batch.add_address(index[names[net.name]], gateway, names[net.name])
        except netlink.RtnlError as e:
            raise LabError(f"networks: {e.strerror}") from None
        for net in bridges:
            self.record.networks[net.name] = NetworkRecord(
                bridge=names[net.name], gateways=[str(g) for g in net.gateways], subnets=[str(s) for s in net.subnets],
                nat=net.nat)
            if net.uplink:
                host = self._host_socket()
                saved = uplinks.describe(net.uplink, net.name)
                self.record.uplinks.append(saved)
                state.write(self.topo.name, self.record)  # before touching it: a crash still gives it back
                uplinks.attach(host, saved, names[net.name])

    def _host_socket(self) -> netlink.Socket:
        if 0 not in self.sockets:
            self.sockets[0] = netlink.Socket()
        return self.sockets[0]

    def _create_links(self) -> list[int]:
        """Create the links to build (all, or those of restarted nodes whose other ends run);
        returns their indexes. Every veth is one request, and all go to the kernel in batches."""
        wired = []
        machine = netlink.Socket()
        try:
            bridges = netlink.Indexes(machine)  # each bridge looked up by name when a link first needs it
            tags: list[tuple[str, str]] = []
            with netlink.Batch(machine) as batch:
                for number, link in enumerate(self.topo.links):
                    ends = [ep.node for ep, _ in link.host_endpoints()]
                    if self.only is not None and not (set(ends) & self.only
                                                      and all(e in self.running for e in ends)):
                        continue
                    entry = self._create_link(batch, tags, bridges, number, link)
                    if self.only is None:
                        self.record.links.append(entry)
                    wired.append(number)
            _tag(machine, tags)
            self.say(Step("links", len(wired), len(self.topo.links)))
        except netlink.RtnlError as e:
            raise LabError(f"links: {e.strerror}") from None
        finally:
            machine.close()
        self.say(f"{len(wired)} links created")
        return wired

    def _create_link(self, batch: netlink.Batch, tags: list[tuple[str, str]], bridges: dict[str, int], number: int,
                     link: Link) -> LinkRecord:
        a, b = link.endpoints
        entry = LinkRecord(endpoints=[str(a), str(b)], addresses=[[str(x) for x in addrs] for addrs in link.addresses],
                           mtu=link.mtu, impair=dict(link.impair) if link.impair else None)
        if a.is_network or b.is_network:
            host_ep, net_ep = (b, a) if a.is_network else (a, b)
            network = self.topo.networks[net_ep.network or ""]
            if network.driver == "macvlan":
                parent = network.uplink or ""  # `bridges` looks up any machine link by name
                batch.add_macvlan(host_ep.iface or "", bridges[parent], parent, self._netns_pid(host_ep.node or ""),
                                  mtu=link.mtu)
                return entry
            outer = paths.host_veth_name(self.topo.name, host_ep.node, host_ep.iface)
            bridge = paths.network_bridge(self.topo.name, network)
            batch.add_veth(outer, host_ep.iface, peer_ns_pid=self._netns_pid(host_ep.node),
                           master=bridges[bridge], mtu=link.mtu)
            tags.append((outer, paths.alias(self.topo.name, f"link:{number}:{host_ep}")))
            entry.machine_side = outer
        else:
            batch.add_veth(a.iface, b.iface, ns_pid=self._netns_pid(a.node), peer_ns_pid=self._netns_pid(b.node),
                           mtu=link.mtu, up=False)
        return entry

    def _configure_hosts(self, wired: list[int]) -> None:
        """Per network namespace, one batch: links up, their addresses, then the routes of the
        hosts in it (a peer's routes through a re-created link went with its old end, so the
        peers of restarted nodes get theirs back too)."""
        ifaces: dict[int, list[tuple[str, list[IPInterface]]]] = {}
        touched = {node.name for node in self.targets}
        for number in wired:
            for ep, addrs in self.topo.links[number].host_endpoints():
                ifaces.setdefault(self._netns_pid(ep.node), []).append((ep.iface, addrs))
                touched.add(ep.node)
        routed: dict[int, list[str]] = {}
        for name in touched:
            pid = self.running[name].netns_pid
            if pid is not None and self.topo.nodes[name].routes:
                routed.setdefault(pid, []).append(name)
        for pid in {*ifaces, *routed}:
            self._configure_netns(pid, ifaces.get(pid, []), routed.get(pid, []))

    def _configure_netns(self, pid: int, ifaces: list[tuple[str, list[IPInterface]]], routed: list[str]) -> None:
        with netlink.Socket(pid) as sock:
            index = sock.index_by_name()
            batch = netlink.Batch(sock)
            for iface, _ in ifaces:
                batch.set_up(index[iface], iface)
            for iface, addrs in ifaces:
                for address in addrs:
                    batch.add_address(index[iface], address, iface)
            try:
                batch.commit()
            except netlink.RtnlError as e:
                raise LabError(f"{self._names_in(pid)}: {e.strerror}") from None
            for name in routed:
                self._add_routes(sock, index, name)

    def _add_routes(self, sock: netlink.Socket, index: dict[str, int], node: str) -> None:
        # Restarting: routes still there are fine, and a link waiting for a stopped peer has none.
        tolerate = frozenset({errno.EEXIST, errno.ENETUNREACH}) if self.only is not None else frozenset()
        batch = netlink.Batch(sock)
        for route in self.topo.nodes[node].routes:
            if route.dev is not None and route.dev not in index:
                raise InputError(f"node {node}: route {route.dst} dev {route.dev}: no such interface")
            via = str(route.via) if route.via else None
            batch.add_route(route.dst, via, index[route.dev] if route.dev else None, tolerate=tolerate)
        try:
            batch.commit()
        except netlink.RtnlError as e:
            # The file's routes, refused by the kernel (a gateway on no link of the node): bad input.
            raise InputError(f"node {node}: {e.strerror}") from None

    def _names_in(self, pid: int) -> str:
        names = [name for name, info in self.running.items() if info.netns_pid == pid]
        return "node " + ", ".join(sorted(names))

    def _impair_links(self, wired: list[int]) -> None:
        for number in wired:
            entry = self.record.links[number]
            spec = entry.impair if self.only is not None else self.topo.links[number].impair
            if spec:
                links.shape(entry, Shaping.parse(spec), lambda node: self._netns_pid(node))

    def _netns_pid(self, node: str) -> int:
        pid = self.running[node].netns_pid
        assert pid is not None, "links on host-network nodes are refused before up"
        return pid

    # programs ------------------------------------------------------------------------------
    def _start_commands(self) -> None:
        # In the order the hosts started: a node's programs start after those it waits for.
        for node in (node for batch in self.rounds for node in batch):
            if not node.idle and nodes.command(node):  # the node's cmd, or its image's Entrypoint/Cmd
                os.kill(self.running[node.name].pid, signal.SIGUSR1)

    def _run_exec_commands(self) -> None:
        for node in self.targets:
            for argv in node.exec:
                result = execution.run(self.record, node.name, argv, env=nodes.base_env(node))
                if result.returncode != 0:
                    output = (result.stdout + result.stderr).strip()
                    raise LabError(f"node {node.name}: exec {' '.join(argv)!r} exited with "
                                   f"{result.returncode}: {output[-2000:]}")


def _tag(sock: netlink.Socket, tags: list[tuple[str, str]]) -> None:
    """Set the netemu alias on links, once their creation has been acknowledged: in the same
    batch, a create refused because the name exists would be followed by a tag that relabels
    the link that was there (and the rollback would then delete it). A crash between the two
    batches leaves untagged links that the state's planned_links names."""
    with netlink.Batch(sock) as batch:
        for name, alias in tags:
            batch.set_alias(name, alias)

