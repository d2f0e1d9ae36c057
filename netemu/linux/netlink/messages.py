"""Hand encoders and decoders of the few rtnetlink messages netemu sends and reads.

pyroute2 costs about a millisecond of Python per request; a lab of 1,000 hosts makes several
thousand requests, so netemu builds its messages here with struct (a veth request in a few
microseconds) and tests them against pyroute2's decoder (tests/unit/test_netlink.py).
Every function is pure: a request body from its arguments, or a record from a payload."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from netemu.linux.netlink.constants import (
    IFA_ADDRESS,
    IFA_BROADCAST,
    IFA_F_NODAD,
    IFA_LOCAL,
    IFF_LOWER_UP,
    IFF_UP,
    IFLA_EXT_MASK,
    IFLA_IFALIAS,
    IFLA_IFNAME,
    IFLA_INFO_DATA,
    IFLA_INFO_KIND,
    IFLA_LINK,
    IFLA_LINKINFO,
    IFLA_MACVLAN_MODE,
    IFLA_MASTER,
    IFLA_MTU,
    IFLA_NET_NS_FD,
    MACVLAN_MODE_BRIDGE,
    NLA_F_NESTED,
    NLM_F_REQUEST,
    RT_SCOPE_LINK,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTA_DST,
    RTA_GATEWAY,
    RTA_MULTIPATH,
    RTA_OIF,
    RTA_PREFSRC,
    RTA_TABLE,
    RTEXT_FILTER_SKIP_STATS,
    RTN_UNICAST,
    RTPROT_BOOT,
    VETH_INFO_PEER,
)

HEADER = struct.Struct("=IHHII")  # nlmsghdr
IFINFO = struct.Struct("=BxHiII")  # ifinfomsg
IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg
RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg
RTNEXTHOP = struct.Struct("=HBBi")  # rtnexthop: length, flags, hops (weight - 1), ifindex
_ATTR = struct.Struct("=HH")  # rtattr

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# attributes ------------------------------------------------------------------------------
def _pad(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (_pad(length) - length)


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def nested(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        found[kind & ~NLA_F_NESTED] = data[offset + _ATTR.size:offset + length]
        offset += _pad(length)
    return found


def cstr(raw: bytes | None) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw else ""


def u32(raw: bytes | None) -> int | None:
    return struct.unpack_from("=I", raw)[0] if raw and len(raw) >= 4 else None


def error_code(payload: bytes) -> int:
    """The errno of an NLMSG_ERROR or NLMSG_DONE payload (0: an acknowledgement, or none)."""
    return -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0


# messages --------------------------------------------------------------------------------
def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One request: the netlink header, then `body`."""
    return HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body


def messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Each message of one datagram: (type, flags, sequence number, payload)."""
    out = []
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, flags, seq, _pid = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            break
        out.append((kind, flags, seq, data[offset + HEADER.size:offset + length]))
        offset += _pad(length)
    return out


# records ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    index: int
    name: str
    alias: str
    kind: str
    master: int | None
    up: bool  # set up (`ip link set ... up`), carrier or not
    flags: int = 0
    mtu: int = 0

    @property
    def state(self) -> str:
        """"up" when set up and with carrier, else "down". From the flags, which change at once,
        not the operational state, which the kernel settles up to a second later: a link shown
        just after `up` must not read "down"."""
        return "up" if self.flags & IFF_UP and self.flags & IFF_LOWER_UP else "down"


@dataclass(frozen=True)
class Address:
    index: int
    interface: IPInterface


@dataclass(frozen=True)
class NextHop:
    oif: int | None
    gateway: str | None
    weight: int = 1


@dataclass(frozen=True)
class Route:
    dst: IPNetwork  # 0.0.0.0/0 or ::/0 for a default route
    oif: int | None
    gateway: str | None
    table: int
    source: str | None = None  # RTA_PREFSRC: the source the kernel picks (route lookups)
    protocol: int = 0  # rtm_protocol: who made it (2 kernel, 3 boot, 4 static; routing daemons their own)
    nexthops: tuple[NextHop, ...] = ()  # a multipath (ECMP) route's hops; oif and gateway are then None

    def hops(self) -> tuple[NextHop, ...]:
        """Every next hop, one for a plain route."""
        return self.nexthops or (NextHop(self.oif, self.gateway),)


def parse_link(payload: bytes) -> Link:
    _family, _type, index, flags, _change = IFINFO.unpack_from(payload)
    attrs = parse_attrs(payload, IFINFO.size)
    info = parse_attrs(attrs.get(IFLA_LINKINFO, b""))
    return Link(index=index, name=cstr(attrs.get(IFLA_IFNAME)), alias=cstr(attrs.get(IFLA_IFALIAS)),
                kind=cstr(info.get(IFLA_INFO_KIND)), up=bool(flags & IFF_UP),
                master=u32(attrs.get(IFLA_MASTER)) or None, flags=flags, mtu=u32(attrs.get(IFLA_MTU)) or 0)


def parse_address(payload: bytes) -> Address | None:
    family, prefixlen, _flags, _scope, index = IFADDR.unpack_from(payload)
    attrs = parse_attrs(payload, IFADDR.size)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)  # IFA_ADDRESS is the peer's on a point-to-point link
    if family not in (socket.AF_INET, socket.AF_INET6) or not raw:
        return None
    return Address(index, ipaddress.ip_interface((ipaddress.ip_address(raw), prefixlen)))


def parse_route(payload: bytes) -> Route | None:
    family, dst_len, _src, _tos, table, proto, _scope, _type, _flags = RTMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = parse_attrs(payload, RTMSG.size)
    zero = bytes(4 if family == socket.AF_INET else 16)
    dst = ipaddress.ip_network((ipaddress.ip_address(attrs.get(RTA_DST, zero)), dst_len), strict=False)
    return Route(dst=dst, oif=u32(attrs.get(RTA_OIF)), table=u32(attrs.get(RTA_TABLE)) or table,
                 gateway=_ip_text(attrs.get(RTA_GATEWAY)), source=_ip_text(attrs.get(RTA_PREFSRC)),
                 protocol=proto, nexthops=_nexthops(attrs.get(RTA_MULTIPATH, b"")))


def _nexthops(data: bytes) -> tuple[NextHop, ...]:
    """RTA_MULTIPATH: rtnexthop structs, each followed by its own attributes (RTA_GATEWAY)."""
    hops = []
    offset = 0
    while offset + RTNEXTHOP.size <= len(data):
        length, _flags, weight, index = RTNEXTHOP.unpack_from(data, offset)
        if length < RTNEXTHOP.size:
            break
        attrs = parse_attrs(data[offset:offset + length], RTNEXTHOP.size)
        hops.append(NextHop(oif=index or None, gateway=_ip_text(attrs.get(RTA_GATEWAY)), weight=weight + 1))
        offset += _pad(length)
    return tuple(hops)


def _ip_text(raw: bytes | None) -> str | None:
    return str(ipaddress.ip_address(raw)) if raw else None


# request bodies --------------------------------------------------------------------------
def ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    """An ifinfomsg; `up` True or False changes IFF_UP, None leaves it as it is."""
    change = 0 if up is None else IFF_UP
    return IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, change)


def getlink_body(name: str = "", index: int = 0) -> bytes:
    """RTM_GETLINK of one link by name or by index (answered without its counters)."""
    attrs = attr_str(IFLA_IFNAME, name) if name else b""
    return ifinfo(index) + attrs + attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)


def link_dump_body(kind: str | None = None, master: int | None = None) -> bytes:
    """A link dump's filter: the kernel sends only links of that kind, or ports of that bridge."""
    attrs = attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    if master is not None:
        attrs += attr_u32(IFLA_MASTER, master)
    if kind is not None:
        attrs += nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, kind))
    return ifinfo() + attrs


def addr_dump_body(index: int | None = None) -> bytes:
    return IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, index or 0)


def route_dump_body(family: int, table: int = RT_TABLE_MAIN) -> bytes:
    return RTMSG.pack(family, 0, 0, 0, table, 0, 0, 0, 0)


def veth_body(name: str, peer: str, *, ns_fd: int | None = None, peer_ns_fd: int | None = None,
              master: int | None = None, mtu: int | None = None, up: bool = True) -> bytes:
    """A veth pair, each end straight in its namespace, the near end optionally up and in a bridge."""
    peer_attrs = attr_str(IFLA_IFNAME, peer)
    attrs = attr_str(IFLA_IFNAME, name)
    if peer_ns_fd is not None:
        peer_attrs += attr_u32(IFLA_NET_NS_FD, peer_ns_fd)
    if ns_fd is not None:
        attrs += attr_u32(IFLA_NET_NS_FD, ns_fd)
    if mtu:
        attrs += attr_u32(IFLA_MTU, mtu)
        peer_attrs += attr_u32(IFLA_MTU, mtu)
    if master is not None:
        attrs += attr_u32(IFLA_MASTER, master)
    info = nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth"),
                  nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, ifinfo() + peer_attrs)))
    return ifinfo(up=up or None) + attrs + info


def bridge_body(name: str, mtu: int | None = None) -> bytes:
    attrs = attr_str(IFLA_IFNAME, name) + (attr_u32(IFLA_MTU, mtu) if mtu else b"")
    return ifinfo() + attrs + nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge"))


def macvlan_body(name: str, parent: int, ns_fd: int, mtu: int | None = None) -> bytes:
    """A macvlan in bridge mode on link `parent` (of the requesting namespace), made straight in
    the namespace of `ns_fd`, down."""
    attrs = attr_str(IFLA_IFNAME, name) + attr_u32(IFLA_LINK, parent) + attr_u32(IFLA_NET_NS_FD, ns_fd)
    if mtu:
        attrs += attr_u32(IFLA_MTU, mtu)
    info = nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "macvlan"),
                  nested(IFLA_INFO_DATA, attr_u32(IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE)))
    return ifinfo() + attrs + info


def alias_body(name: str, alias: str) -> bytes:
    # The kernel ignores IFLA_IFALIAS in a creating request; set by name, no index needed.
    return ifinfo() + attr_str(IFLA_IFNAME, name) + attr_str(IFLA_IFALIAS, alias)


def setlink_body(index: int, *, up: bool | None = None, master: int | None = None, mtu: int | None = None) -> bytes:
    """Change link `index`: up or down, into bridge `master` (0: out of any), its MTU."""
    attrs = attr_u32(IFLA_MASTER, master) if master is not None else b""
    if mtu:
        attrs += attr_u32(IFLA_MTU, mtu)
    return ifinfo(index, up) + attrs


def address_body(index: int, iface: IPInterface) -> bytes:
    ip = iface.ip.packed
    if iface.version == 4:
        family, flags = socket.AF_INET, 0
        attrs = attr(IFA_LOCAL, ip) + attr(IFA_ADDRESS, ip)
        if iface.network.prefixlen < 31:
            attrs += attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
    else:
        # No duplicate address detection: the first probe after `up` must not wait for it.
        family, flags = socket.AF_INET6, IFA_F_NODAD
        attrs = attr(IFA_ADDRESS, ip)
    return IFADDR.pack(family, iface.network.prefixlen, flags, RT_SCOPE_UNIVERSE, index) + attrs


def route_body(dst: str, via: str | None, oif: int | None) -> bytes:
    """A route in the main table, as `ip route add DST [via GW] [dev DEV]` makes it."""
    gateway = ipaddress.ip_address(via) if via else None
    if dst == "default":
        network = ipaddress.ip_network("::/0" if gateway and gateway.version == 6 else "0.0.0.0/0")
    else:
        network = ipaddress.ip_network(dst, strict=False)
    family = socket.AF_INET6 if network.version == 6 else socket.AF_INET
    scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
    body = RTMSG.pack(family, network.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0)
    if network.prefixlen:
        body += attr(RTA_DST, network.network_address.packed)
    if gateway:
        body += attr(RTA_GATEWAY, gateway.packed)
    if oif is not None:
        body += attr_u32(RTA_OIF, oif)
    return body


def route_get_body(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """RTM_GETROUTE of the route the kernel would take to `address` (`ip route get`). Strict
    checking wants the whole rtmsg zero but the family and a host-length destination."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return RTMSG.pack(family, address.max_prefixlen, 0, 0, 0, 0, 0, 0, 0) + attr(RTA_DST, address.packed)
