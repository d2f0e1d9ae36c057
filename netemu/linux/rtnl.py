"""Batched rtnetlink: many link, address and route requests in one sendmsg(2), their
acknowledgements read afterwards.

pyroute2 costs about a millisecond of Python per request; a lab of 1,000 hosts makes several
thousand requests, so the hot path of `up` and `down` encodes the few message kinds it needs
here and lets the kernel process them back to back. Everything else uses netemu.linux.netlink.

Each request keeps a description, so a refused one is reported as e.g.
"add veth nv1234 (peer eth0): File exists", with the kernel's extended-ack text when it has one.

Reading the machine's namespace never depends on one dump of all its links: other tools add and
remove links there at any time, and the kernel then flags a dump as interrupted (NLM_F_DUMP_INTR).
Links are looked up by what netemu knows: by name (RTM_GETLINK with IFLA_IFNAME, many in flight
at once), in dumps the kernel filters by kind or master, and, where only the alias tells (no
kernel filter exists for it), by `settled_links`: dumps repeated until one is whole or two in a
row agree on the links asked for, each then verified by name."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from netemu.linux import namespaces

# <linux/netlink.h>
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200  # in an error message: extended-ack attributes follow
NLM_F_DUMP_INTR = 0x10  # a dump the kernel says was disturbed by a change: it may lack entries
NLM_F_DUMP_FILTERED = 0x20  # the kernel applied the dump request's filter itself
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12  # dump requests' filters are honoured (address and route dumps by link)
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
# <linux/rtnetlink.h>
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST = 1
# <linux/if_link.h>
IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 3, 4, 10, 18, 20, 28
IFLA_EXT_MASK = 29
RTEXT_FILTER_SKIP_STATS = 1 << 3  # answers without the counters: a quarter smaller
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
# <linux/if_addr.h>
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
IFA_F_NODAD = 0x02
# <linux/rtnetlink.h> route attributes
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15

_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg
_ATTR = struct.Struct("=HH")  # rtattr
RECV_BUFFER = 1 << 20
SOCKET_BUFFER = 8 << 20
ANSWER_TIMEOUT = 60.0
SETTLE_ATTEMPTS = 50  # dumps of a namespace that keeps changing, before giving up
SEND_CHUNK = 64 << 10  # bytes per sendmsg(2): well inside the socket's send buffer
LOOKUP_CHUNK = 256  # lookups by name in flight at once: their answers fit the receive buffer

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


class RtnlError(OSError):
    """A request the kernel refused: errno, and what the request was."""


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


def _cstr(raw: bytes | None) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw else ""


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    alias: str
    kind: str
    master: int | None
    up: bool
    flags: int = 0
    mtu: int = 0

    @property
    def state(self) -> str:
        """"up" when set up and with carrier, else "down". From the flags, which change at once,
        not the operational state, which the kernel settles up to a second later."""
        return "up" if self.flags & IFF_UP and self.flags & IFF_LOWER_UP else "down"


@dataclass(frozen=True)
class Address:
    index: int
    interface: IPInterface


@dataclass(frozen=True)
class Route:
    dst: IPNetwork  # 0.0.0.0/0 or ::/0 for a default route
    oif: int | None
    gateway: str | None
    table: int


@dataclass
class Dump:
    payloads: list[bytes]
    interrupted: bool  # NLM_F_DUMP_INTR: a concurrent change; entries may be missing or doubled
    filtered: bool  # NLM_F_DUMP_FILTERED: the kernel applied the request's filter


class Socket:
    """A NETLINK_ROUTE socket bound to the network namespace of `pid` (None: the machine's)."""

    def __init__(self, pid: int | None = None) -> None:
        if pid is None:
            self.sock = self._open()
        else:
            with namespaces.entered(pid, ("net",)):
                self.sock = self._open()
        self.seq = 0

    @staticmethod
    def _open() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            sock.bind((0, 0))
            # Thousands of acknowledgements may queue before we read them: a full receive
            # buffer would drop some (ENOBUFS) and leave requests unaccounted for.
            sock.setsockopt(socket.SOL_SOCKET, 33, SOCKET_BUFFER)  # SO_RCVBUFFORCE
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # errors without the request echoed
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)  # and with the kernel's reason
            with contextlib.suppress(OSError):  # before Linux 4.20 the kernel filters less, not wrongly
                sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            sock.settimeout(ANSWER_TIMEOUT)  # a request whose answer never comes must not hang `up`
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # dumps ------------------------------------------------------------------------------
    def _dump(self, request: int, body: bytes, what: str) -> Dump:
        """One dump: every answer's payload, and what the kernel flagged on them."""
        seq = self.next_seq()
        self.sock.send(message(request, NLM_F_DUMP, seq, body))
        dump = Dump([], False, False)
        while True:
            for kind, flags, msg_seq, payload in _messages(self.recv()):
                if msg_seq != seq:
                    continue  # a late answer to an earlier request
                dump.interrupted |= bool(flags & NLM_F_DUMP_INTR)
                dump.filtered |= bool(flags & NLM_F_DUMP_FILTERED)
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    if code:
                        raise RtnlError(code, f"{what}: {os.strerror(code)}")
                    return dump
                dump.payloads.append(payload)

    def _settled(self, dump: Callable[[], tuple[list[T], bool]], key: Callable[[list[T]], object],
                 what: str) -> list[T]:
        """What `dump` returns once it is whole (not interrupted), or once two dumps in a row agree
        on `key` of it: a change elsewhere interrupts every dump of a busy namespace, but what
        we look for, which only netemu changes, stays the same from one dump to the next."""
        previous: object = _NOTHING
        for _ in range(SETTLE_ATTEMPTS):
            found, interrupted = dump()
            summary = key(found)
            if not interrupted or summary == previous:
                return found
            previous = summary
        raise RtnlError(errno.EAGAIN, f"{what}: {SETTLE_ATTEMPTS} dumps in a row were interrupted by other "
                                      "changes and no two of them agreed")

    def dump_links(self, *, kind: str | None = None, master: int | None = None) -> tuple[list[Link], bool]:
        """One dump of the links of a `kind` and/or of a bridge `master`, filtered by the kernel
        (Linux 4.19 and later; here too, for older ones); and whether it was interrupted."""
        dump = self._dump(RTM_GETLINK, link_dump_body(kind, master), "list links")
        found = [_parse_link(payload) for payload in dump.payloads]
        found = [link for link in found
                 if (kind is None or link.kind == kind) and (master is None or link.master == master)]
        return found, dump.interrupted

    def settled_links(self, select: Callable[[Link], bool], *, kinds: Iterable[str | None] = (None,),
                      key: Callable[[list[Link]], object] | None = None) -> list[Link]:
        """The links `select` picks, from dumps of each of `kinds` (None: every kind), repeated
        until they settle (see _settled; by default on the links picked). The answer may be a
        moment old, and an interrupted dump may name a link twice: verify with links_by_name."""
        kinds = tuple(kinds)

        def dump() -> tuple[list[Link], bool]:
            picked, interrupted = [], False
            for kind in kinds:
                found, cut = self.dump_links(kind=kind)
                picked += [link for link in found if select(link)]
                interrupted |= cut
            return picked, interrupted

        return self._settled(dump, key or _link_key, "list links")

    def links(self) -> list[Link]:
        """Every link of the namespace: only for a host's namespace, which netemu alone changes.
        The machine's is read by name, by kind or master, or through settled_links."""
        return self._settled(lambda: self.dump_links(), _link_key, "list links")

    def index_by_name(self) -> dict[str, int]:
        """Every link's index by name (of a host's namespace: see links())."""
        return {link.name: link.index for link in self.links()}

    def addresses(self, index: int | None = None) -> list[Address]:
        """The namespace's addresses (those of link `index`), from dumps that settle (see
        _settled): addresses change rarely, but every link added or removed interrupts their dump."""
        def dump() -> tuple[list[Address], bool]:
            body = _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, index or 0)
            found = self._dump(RTM_GETADDR, body, "list addresses")
            parsed = [_parse_address(payload) for payload in found.payloads]
            return [a for a in parsed if a and (index is None or a.index == index)], found.interrupted

        return self._settled(dump, frozenset, "list addresses")

    def routes(self, table: int = RT_TABLE_MAIN) -> list[Route]:
        """The IPv4 and IPv6 routes of one table, from dumps that settle (see addresses())."""
        def dump() -> tuple[list[Route], bool]:
            found: list[Route] = []
            interrupted = False
            for family in (socket.AF_INET, socket.AF_INET6):
                body = _RTMSG.pack(family, 0, 0, 0, table, 0, 0, 0, 0)
                answer = self._dump(RTM_GETROUTE, body, "list routes")
                found += [r for r in map(_parse_route, answer.payloads) if r and r.table == table]
                interrupted |= answer.interrupted
            return found, interrupted

        return self._settled(dump, frozenset, "list routes")

    # lookups by name ----------------------------------------------------------------------
    def link(self, name: str) -> Link | None:
        """The link named `name` (RTM_GETLINK by IFLA_IFNAME: no dump), None if there is none."""
        return self.links_by_name([name]).get(name)

    def index(self, name: str) -> int:
        link = self.link(name)
        if link is None:
            raise RtnlError(errno.ENODEV, f"no link named {name}")
        return link.index

    def links_by_name(self, names: Iterable[str]) -> dict[str, Link]:
        """Each named link that exists, looked up by name, LOOKUP_CHUNK requests in flight at a time."""
        wanted = list(dict.fromkeys(names))
        found: dict[str, Link] = {}
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            found.update(self._look_up(wanted[start:start + LOOKUP_CHUNK]))
        return found

    def _look_up(self, names: list[str]) -> dict[str, Link]:
        pending: dict[int, str] = {}
        requests = []
        for name in names:
            seq = self.next_seq()
            requests.append(message(RTM_GETLINK, 0, seq, getlink_body(name)))
            pending[seq] = name
        for chunk in _chunks(requests):
            self.sock.sendall(chunk)
        found: dict[str, Link] = {}
        failure: RtnlError | None = None
        while pending:  # every answer is read, even after a failure: none is left for the next request
            for kind, _flags, seq, payload in _messages(self.recv()):
                name = pending.pop(seq, None)
                if name is None:
                    continue
                if kind == RTM_NEWLINK:
                    found[name] = _parse_link(payload)
                elif kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code and code != errno.ENODEV and failure is None:
                        failure = RtnlError(code, f"look up link {name}: {os.strerror(code)}")
        if failure:
            raise failure
        return found

    def recv(self) -> bytes:
        try:
            return self.sock.recv(RECV_BUFFER)
        except TimeoutError:
            raise RtnlError(errno.ETIMEDOUT, f"the kernel did not answer within {ANSWER_TIMEOUT:.0f} s") from None
        except OSError as e:  # ENOBUFS: answers were dropped; the requests' fate is unknown
            raise RtnlError(e.errno, f"netlink: {e.strerror}") from None


_NOTHING = object()


def _link_key(links: list[Link]) -> frozenset[tuple[int, str, str]]:
    return frozenset((link.index, link.name, link.alias) for link in links)


class Indexes(dict[str, int]):
    """Link indexes by name, each looked up by name the first time it is asked for (the
    machine's namespace has too many links, changing too often, to dump them all)."""

    def __init__(self, sock: Socket, names: Iterable[str] = ()) -> None:
        super().__init__()
        self.sock = sock
        self.update({name: link.index for name, link in sock.links_by_name(names).items()})

    def __missing__(self, name: str) -> int:
        self[name] = self.sock.index(name)
        return self[name]


def _messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, flags, seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            break
        out.append((kind, flags, seq, data[offset + _HEADER.size:offset + length]))
        offset += _pad(length)
    return out


def _u32(raw: bytes | None) -> int | None:
    return struct.unpack_from("=I", raw)[0] if raw and len(raw) >= 4 else None


def _parse_link(payload: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFO.unpack_from(payload)
    attrs = parse_attrs(payload, _IFINFO.size)
    info = parse_attrs(attrs.get(IFLA_LINKINFO, b""))
    return Link(index=index, name=_cstr(attrs.get(IFLA_IFNAME)), alias=_cstr(attrs.get(IFLA_IFALIAS)),
                kind=_cstr(info.get(IFLA_INFO_KIND)), up=bool(flags & IFF_UP),
                master=_u32(attrs.get(IFLA_MASTER)) or None, flags=flags, mtu=_u32(attrs.get(IFLA_MTU)) or 0)


def _parse_address(payload: bytes) -> Address | None:
    family, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(payload)
    attrs = parse_attrs(payload, _IFADDR.size)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)  # IFA_ADDRESS is the peer's on a point-to-point link
    if family not in (socket.AF_INET, socket.AF_INET6) or not raw:
        return None
    return Address(index, ipaddress.ip_interface((ipaddress.ip_address(raw), prefixlen)))


def _parse_route(payload: bytes) -> Route | None:
    family, dst_len, _src, _tos, table, _proto, _scope, _type, _flags = _RTMSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = parse_attrs(payload, _RTMSG.size)
    zero = bytes(4 if family == socket.AF_INET else 16)
    dst = ipaddress.ip_network((ipaddress.ip_address(attrs.get(RTA_DST, zero)), dst_len), strict=False)
    gateway = attrs.get(RTA_GATEWAY)
    return Route(dst=dst, oif=_u32(attrs.get(RTA_OIF)), table=_u32(attrs.get(RTA_TABLE)) or table,
                 gateway=str(ipaddress.ip_address(gateway)) if gateway else None)


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """One request: the netlink header, then `body`."""
    return _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body


def getlink_body(name: str) -> bytes:
    """RTM_GETLINK of one link by name (answered without its counters)."""
    return _ifinfo() + attr_str(IFLA_IFNAME, name) + attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)


def link_dump_body(kind: str | None = None, master: int | None = None) -> bytes:
    """A link dump's filter: the kernel sends only links of that kind, or ports of that bridge."""
    attrs = attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    if master is not None:
        attrs += attr_u32(IFLA_MASTER, master)
    if kind is not None:
        attrs += nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, kind))
    return _ifinfo() + attrs


class Batch:
    """Requests queued on one socket and sent together; `commit()` sends what is queued and
    raises the first refusal, after every acknowledgement has been read."""

    def __init__(self, sock: Socket) -> None:
        self.sock = sock
        self.pending: list[bytes] = []
        self.described: dict[int, tuple[str, frozenset[int]]] = {}
        self.fds: list[int] = []  # namespace files the queued requests refer to
        self.size = 0

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._close_fds()

    def _queue(self, kind: int, flags: int, body: bytes, what: str, tolerate: frozenset[int] = frozenset()) -> None:
        seq = self.sock.next_seq()
        request = message(kind, NLM_F_ACK | flags, seq, body)
        self.pending.append(request)
        self.described[seq] = (what, tolerate)
        self.size += len(request)
        if self.size >= SEND_CHUNK or len(self.fds) >= 256:
            self.commit()

    def netns_fd(self, pid: int) -> int:
        """A descriptor of host `pid`'s network namespace, open until the batch is sent."""
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    # requests --------------------------------------------------------------------------
    def add_veth(self, name: str, peer: str, *, ns_pid: int | None = None, peer_ns_pid: int | None = None,
                 master: int | None = None, mtu: int | None = None, up: bool = True) -> None:
        """A veth pair, each end straight in its namespace, the near end optionally already up
        and in a bridge: one request instead of four. The peer starts down: the kernel opens
        it before the pair is joined and would refuse (ENOTCONN)."""
        peer_attrs = attr_str(IFLA_IFNAME, peer)
        attrs = attr_str(IFLA_IFNAME, name)
        if peer_ns_pid is not None:
            peer_attrs += attr_u32(IFLA_NET_NS_FD, self.netns_fd(peer_ns_pid))
        if ns_pid is not None:
            attrs += attr_u32(IFLA_NET_NS_FD, self.netns_fd(ns_pid))
        if mtu:
            attrs += attr_u32(IFLA_MTU, mtu)
            peer_attrs += attr_u32(IFLA_MTU, mtu)
        if master is not None:
            attrs += attr_u32(IFLA_MASTER, master)
        info = nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "veth"),
                      nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, _ifinfo() + peer_attrs)))
        self._queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _ifinfo(up=up) + attrs + info,
                    f"add veth {name} (peer {peer})")

    def add_bridge(self, name: str, mtu: int | None = None) -> None:
        attrs = attr_str(IFLA_IFNAME, name) + (attr_u32(IFLA_MTU, mtu) if mtu else b"")
        info = nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge"))
        self._queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _ifinfo() + attrs + info, f"add bridge {name}")

    def set_alias(self, name: str, alias: str) -> None:
        # The kernel ignores IFLA_IFALIAS in a creating request; set by name, no index needed.
        self._queue(RTM_NEWLINK, 0, _ifinfo() + attr_str(IFLA_IFNAME, name) + attr_str(IFLA_IFALIAS, alias),
                    f"tag {name}")

    def set_up(self, index: int, what: str) -> None:
        self._queue(RTM_NEWLINK, 0, _ifinfo(index, up=True), f"set {what} up")

    def delete_link(self, index: int, what: str) -> None:
        """Delete a link; one already gone (with its peer or its namespace) is not an error."""
        self._queue(RTM_DELLINK, 0, _ifinfo(index), f"delete {what}", frozenset({errno.ENODEV}))

    def add_address(self, index: int, iface: IPInterface, what: str) -> None:
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
        body = _IFADDR.pack(family, iface.network.prefixlen, flags, RT_SCOPE_UNIVERSE, index) + attrs
        self._queue(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {iface} to {what}")

    def add_route(self, dst: str, via: str | None, oif: int | None, *,
                  tolerate: frozenset[int] = frozenset()) -> None:
        """A route in the main table, as `ip route add DST [via GW] [dev DEV]` makes it; refusals
        with an errno in `tolerate` (EEXIST when re-adding, say) are not errors."""
        gateway = ipaddress.ip_address(via) if via else None
        if dst == "default":
            network = ipaddress.ip_network("::/0" if gateway and gateway.version == 6 else "0.0.0.0/0")
        else:
            network = ipaddress.ip_network(dst, strict=False)
        family = socket.AF_INET6 if network.version == 6 else socket.AF_INET
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        body = _RTMSG.pack(family, network.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0)
        if network.prefixlen:
            body += attr(RTA_DST, network.network_address.packed)
        if gateway:
            body += attr(RTA_GATEWAY, gateway.packed)
        if oif is not None:
            body += attr_u32(RTA_OIF, oif)
        self._queue(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"add route {dst} via {via or oif}", tolerate)

    # sending ---------------------------------------------------------------------------
    def commit(self) -> None:
        if not self.pending:
            self._close_fds()
            return
        messages, self.pending, self.size = self.pending, [], 0
        try:
            for chunk in _chunks(messages):
                self.sock.sock.sendall(chunk)
            first_error = self._read_acks(len(messages))
        finally:
            self._close_fds()
        self.described.clear()
        if first_error:
            raise first_error

    def _read_acks(self, expected: int) -> RtnlError | None:
        first: RtnlError | None = None
        while expected:
            for kind, flags, seq, payload in _messages(self.sock.recv()):
                if kind != NLMSG_ERROR or seq not in self.described:
                    continue
                expected -= 1
                code = -struct.unpack_from("=i", payload)[0]
                if code and first is None and code not in self.described[seq][1]:
                    first = self._refusal(code, flags, seq, payload)
        return first

    def _refusal(self, code: int, flags: int, seq: int, payload: bytes) -> RtnlError:
        reason = os.strerror(code)
        if flags & NLM_F_ACK_TLVS:
            # With NETLINK_CAP_ACK the refused request's header only is echoed (int + nlmsghdr).
            text = _cstr(parse_attrs(payload, 4 + _HEADER.size).get(NLMSGERR_ATTR_MSG))
            if text:
                reason = f"{reason} ({text})"
        return RtnlError(code, f"{self.described[seq][0]}: {reason}")

    def _close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def _chunks(messages: list[bytes]) -> list[bytes]:
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for request in messages:
        if size + len(request) > SEND_CHUNK and current:
            chunks.append(b"".join(current))
            current, size = [], 0
        current.append(request)
        size += len(request)
    if current:
        chunks.append(b"".join(current))
    return chunks

