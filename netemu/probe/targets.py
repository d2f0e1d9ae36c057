"""A running lab as the probes see it: which network namespace each node uses, its addresses,
and which node owns an address (to name the routers of a traced path).

The kernel is the source of truth: the file's addresses come first, then every address the
hosts have now (set by a routing daemon or an `exec:` step), read over netlink each time the
view is refreshed. A node named as a target answers on its lab links: an address on a NAT'd
network (the default bridge, a management network) is used only when it has no other."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from netemu.errors import InputError, LabError
from netemu.linux import netlink
from netemu.runtime.records import LabRecord

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass
class NodeView:
    name: str
    pid: int
    netns_pid: int | None  # None: the machine's own namespace (network: host)
    network: str
    alive: bool
    addresses: list[IPInterface] = field(default_factory=list)  # the file's, in order, then the kernel's
    ifaces: dict[str, list[IPInterface]] = field(default_factory=dict)
    outside: set[IPInterface] = field(default_factory=set)  # on a NAT'd network: a target's last choice


class LabView:
    def __init__(self, record: LabRecord | dict[str, Any], live: bool = True) -> None:
        """From a lab's record, or its wire form (LabRecord.to_json, as another machine sends it);
        `live`: and from the hosts' kernels now (refresh)."""
        if isinstance(record, dict):
            record = LabRecord.from_json(record)
        self.name: str = record.name
        self.nodes: dict[str, NodeView] = {}
        self.labels: dict[IPAddress, str] = {}  # address -> the node (or bridge) that has it
        for name, info in record.nodes.items():
            self.nodes[name] = NodeView(name=name, pid=info.pid or 0, netns_pid=info.netns_pid,
                                        network=info.extra.network, alive=info.alive)
        for link in record.links:
            for endpoint, addrs in zip(link.endpoints, link.addresses, strict=False):
                node, sep, iface = endpoint.partition(":")
                if not sep or node not in self.nodes:
                    continue  # the bridge side of a host-to-network link
                parsed = [ipaddress.ip_interface(a) for a in addrs]
                self.nodes[node].addresses.extend(parsed)
                self.nodes[node].ifaces.setdefault(iface, []).extend(parsed)
                for address in parsed:
                    self.labels.setdefault(address.ip, node)
        for net, network in record.networks.items():
            for gateway in network.gateways:
                self.labels.setdefault(ipaddress.ip_interface(gateway).ip, f"{net} (bridge)")
        self.nat_subnets = [ipaddress.ip_network(s) for n in record.networks.values() if n.nat for s in n.subnets]
        for view in self.nodes.values():
            view.outside = {a for a in view.addresses if self._outside(a)}
        if live:
            self.refresh()

    def _outside(self, address: IPInterface) -> bool:
        return any(address.ip in subnet for subnet in self.nat_subnets if subnet.version == address.version)

    def refresh(self) -> None:
        """Add what the hosts' kernels have now that the file did not say: one address dump per
        network namespace. A namespace that went away meanwhile (a host stopping) is skipped."""
        for netns_pid, name in self.netns_owners().items():
            if netns_pid is None:
                continue  # the machine's own addresses are not the lab's
            try:
                with netlink.Socket(netns_pid) as sock:
                    names = {link.index: link.name for link in sock.links()}
                    found = [(names.get(a.index, ""), a.interface) for a in sock.addresses()]
            except (OSError, netlink.RtnlError):
                continue
            self._learn(self._namespace_owner(netns_pid, name), found)

    def _namespace_owner(self, netns_pid: int, fallback: str) -> NodeView:
        """The node whose namespace it is (its PID 1 made it), not one that shares it."""
        return next((v for v in self.nodes.values() if v.pid == netns_pid), self.nodes[fallback])

    def _learn(self, view: NodeView, found: list[tuple[str, IPInterface]]) -> None:
        for iface, address in found:
            if address.ip.is_loopback or address.ip.is_link_local:
                continue
            if address not in view.ifaces.setdefault(iface, []):
                view.ifaces[iface].append(address)
            if address not in view.addresses:
                view.addresses.append(address)
                if self._outside(address):
                    view.outside.add(address)
            self.labels.setdefault(address.ip, view.name)

    def node(self, name: str) -> NodeView:
        if name not in self.nodes:
            raise InputError(f"lab '{self.name}' has no node '{name}' (nodes: {', '.join(self.nodes)})")
        return self.nodes[name]

    def running(self, name: str) -> NodeView:
        view = self.node(name)
        if not view.alive:
            raise LabError(f"node '{name}' of lab '{self.name}' is not running")
        return view

    def first_address(self, name: str) -> IPAddress | None:
        """A node's first address; a node sharing another's namespace (container:X) uses X's."""
        seen: set[str] = set()
        while name not in seen:
            seen.add(name)
            view = self.node(name)
            if view.addresses:
                inside = [a for a in view.addresses if a not in view.outside]
                return (inside or view.addresses)[0].ip
            if not view.network.startswith("container:"):
                return None
            name = view.network.split(":", 1)[1]
        return None

    def resolve(self, target: str) -> tuple[IPAddress, str | None]:
        """`to` of a check: an address, a node (its first address) or node:iface."""
        try:
            address = ipaddress.ip_address(target)
        except ValueError:
            pass
        else:
            return address, self.owner(address)
        node, sep, iface = target.partition(":")
        view = self.node(node)
        if sep:
            addrs = view.ifaces.get(iface)
            if not addrs:
                raise InputError(f"node '{node}' has no address on interface '{iface}'")
            return addrs[0].ip, node
        address = self.first_address(node)
        if address is None:
            raise InputError(f"node '{node}' has no address to probe (give an address instead)")
        return address, node

    def owner(self, address: IPAddress) -> str | None:
        label = self.labels.get(address)
        return label if label in self.nodes else None

    def label(self, address: IPAddress) -> str | None:
        return self.labels.get(address)

    def netns_owners(self) -> dict[int | None, str]:
        """One running node per distinct network namespace (None: the machine's)."""
        owners: dict[int | None, str] = {}
        for view in self.nodes.values():
            if view.alive:
                owners.setdefault(view.netns_pid, view.name)
        return owners
