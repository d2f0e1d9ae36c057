"""The validated topology model: plain dataclasses, no kernel knowledge."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The namespaces a node may take from another node (`KIND: container:<node>`), in the order
# netemu-init joins them. Each such node starts after the node it names.
SHARED_KINDS = ("network", "ipc", "pid")
CONTAINER = "container:"
# `network: lab:LAB/NODE`: the network namespace of a node of another running lab. Never written
# in a file (the loader refuses it): only `netemu run --network container:NAME` makes it.
OTHER_LAB = "lab:"
MACHINE_IMAGE = "host"  # `image: host`: the machine's / as the read-only lower layer


def is_directory_image(image: str) -> bool:
    """`image: ./rootfs`, `/srv/root`, `~/img`: a directory of the machine, not a stored image."""
    return image.startswith((".", "/", "~"))


def is_stored_image(image: str) -> bool:
    """An image of the store or a registry: neither the machine's root nor a directory."""
    return image != MACHINE_IMAGE and not is_directory_image(image)


@dataclass(frozen=True)
class Limits:
    cpus: float | None = None  # fraction of one CPU, e.g. 0.5
    memory: int | None = None  # bytes
    pids: int | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.cpus, self.memory, self.pids))


@dataclass(frozen=True)
class Route:
    dst: str  # "default" or a CIDR, IPv4 or IPv6
    via: IPAddress | None = None
    dev: str | None = None

    @property
    def is_ipv6(self) -> bool:
        if self.via is not None:
            return self.via.version == 6
        return self.dst != "default" and ":" in self.dst


@dataclass(frozen=True)
class Bind:
    source: str  # path on the machine
    target: str  # absolute path inside the host
    readonly: bool = False


@dataclass
class Node:
    name: str
    image: str = "host"
    hostname: str = ""  # filled with the node name by the loader when absent
    dns: list[str] | None = None  # None: copy the machine's resolv.conf
    dns_search: list[str] = field(default_factory=list)
    extra_hosts: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    network: str = "none"  # none | bridge | host | container:<node>
    ipc: str = "shareable"  # its own, others may join | private: no joiners | host | container:<node>
    pid: str = "private"  # private (its own) | host | container:<node>
    limits: Limits = field(default_factory=Limits)
    userns: bool = False
    sysctls: dict[str, str] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    binds: list[Bind] = field(default_factory=list)
    cmd: list[str] | None = None  # argv; a string in the file becomes ["/bin/sh", "-c", s]
    exec: list[list[str]] = field(default_factory=list)  # same conversion per entry
    ports: list[str] = field(default_factory=list)
    privileged: bool = False  # every capability, no seccomp filter, the machine's devices
    cap_add: list[str] = field(default_factory=list)  # capability names (NET_ADMIN) or ALL
    cap_drop: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)  # device nodes of the machine, e.g. /dev/net/tun
    read_only: bool = False  # the root filesystem mounted read-only
    idle: bool = False  # no main program, not even the image's: `netemu run` attaches one itself
    # Bring-your-own-lab (containerlab, Kathara, and netemu's own `files:`/`wait_for:` keys):
    entrypoint: list[str] | None = None  # replaces the image's Entrypoint ([] removes it)
    files: list[str] = field(default_factory=list)  # machine directories copied over the root at start, in order
    wait_for: list[str] = field(default_factory=list)  # nodes that must run before this one starts
    labels: dict[str, str] = field(default_factory=dict)  # free-form, kept in the record, shown by inspect
    systemctl: bool = False  # a `systemctl` in the host that starts, stops and restarts services without systemd
    line: int | None = None  # where the node is defined, for later error messages

    def shares(self) -> list[tuple[str, str]]:
        """(kind, node) for each namespace this node joins from another node: it must start
        after that node, and that node may not stop while this one runs."""
        modes = ((kind, getattr(self, kind)) for kind in SHARED_KINDS)
        return [(kind, mode.removeprefix(CONTAINER)) for kind, mode in modes if mode.startswith(CONTAINER)]


@dataclass
class Network:
    name: str
    subnets: list[IPNetwork] = field(default_factory=list)  # dual-stack: one per family
    gateways: list[IPInterface] = field(default_factory=list)  # bridge's own addresses (with prefix)
    nat: bool = False
    uplink: str | None = None
    mtu: int | None = None
    line: int | None = None
    driver: str = "bridge"  # or "macvlan": hosts get macvlan interfaces on the uplink
    bridge: str | None = None  # an existing bridge of the machine, joined and never changed


@dataclass(frozen=True)
class Endpoint:
    node: str | None = None  # set for "node:iface"
    iface: str | None = None
    network: str | None = None  # set for a bare network name

    @property
    def is_network(self) -> bool:
        return self.network is not None

    def __str__(self) -> str:
        return self.network if self.network is not None else f"{self.node}:{self.iface}"


@dataclass
class Link:
    endpoints: tuple[Endpoint, Endpoint]
    # one list per endpoint; the network side of a host-to-bridge link has no addresses
    addresses: tuple[list[IPInterface], list[IPInterface]] = ((), ())  # type: ignore[assignment]
    mtu: int | None = None
    impair: dict[str, str] | None = None
    line: int | None = None
    auto_p2p: bool = False  # `auto` on both ends: a /30 from the machine-wide pool at `up`

    def host_endpoints(self) -> list[tuple[Endpoint, list[IPInterface]]]:
        pairs = zip(self.endpoints, self.addresses, strict=True)
        return [(ep, addrs) for ep, addrs in pairs if not ep.is_network]


@dataclass
class Check:
    src: str  # "from" in the file
    dst: str  # "to"
    expect: str = "reachable"  # reachable | unreachable | refused
    proto: str = "icmp"  # icmp | tcp | udp
    port: int | None = None
    via: list[str] = field(default_factory=list)  # nodes or addresses; the target counts as the last step
    seen_as: str | None = None
    within: float | None = None  # seconds
    timeout: float | None = None  # seconds
    line: int | None = None
    path: str = "ordered"  # ordered: `via` in that order, others between; exact: nothing else


@dataclass
class RouteCheck:
    """`{on: r1, route: 10.2.0.0/24, via: 10.1.0.2, dev: eth1, proto: ospf, expect: present}`:
    judged on the host's own FIB, read over netlink."""

    on: str
    route: str  # "default" or a CIDR, IPv4 or IPv6
    via: list[str] = field(default_factory=list)  # next-hop addresses that must all be there (ECMP: a subset)
    dev: str | None = None
    proto: str | None = None  # a name (ospf, bgp, static, kernel, ...) or a number
    table: str = "main"  # main, local, default, or a number
    expect: str = "present"  # present | absent
    within: float | None = None
    line: int | None = None


@dataclass
class CommandCheck:
    """`{on: r1, exec: "vtysh -c 'show ip ospf neighbor json'", json: {...}, within: 60s}`: the
    escape hatch for state only a daemon holds. Passes when the exit code, every JSON path and
    the regex all match."""

    on: str
    exec: list[str]  # argv; a string in the file becomes ["/bin/sh", "-c", s]
    exit: int | None = 0  # None: any exit code
    json: dict[str, Any] | None = None  # dotted path (a.b[0].c) -> the value it must equal
    regex: str | None = None  # searched in stdout
    within: float | None = None
    timeout: float | None = None  # seconds per run of the command
    line: int | None = None


AnyCheck = Check | RouteCheck | CommandCheck


@dataclass
class Topology:
    name: str
    path: Path | None
    nodes: dict[str, Node]
    networks: dict[str, Network] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    checks: list[AnyCheck] = field(default_factory=list)
    origin: str | None = None  # what errors name when there is no file: `<netemu run>`, `<string>`

    def where(self, line: int | None) -> str:
        """FILE:LINE for an error found at `up` (or the text's origin when there is no file)."""
        source = str(self.path) if self.path is not None else self.origin or f"<lab {self.name}>"
        return f"{source}:{line}" if line else source

    def node_addresses(self, node: str) -> list[IPInterface]:
        """Every address of a node, in file order (its 'first address' is [0])."""
        found: list[IPInterface] = []
        for link in self.links:
            for ep, addrs in link.host_endpoints():
                if ep.node == node:
                    found.extend(addrs)
        return found
