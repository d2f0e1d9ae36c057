"""Batched rtnetlink: many link, address and route requests in one sendmsg(2), their
acknowledgements read afterwards.

pyroute2 costs about a millisecond of Python per request; a lab of 1,000 hosts makes several
thousand requests, so the hot path of `up` and `down` encodes the few message kinds it needs
here and lets the kernel process them back to back. Everything else uses netemu.linux.netlink.

Each request keeps a description, so a refused one is reported as e.g.
"add veth nv1234 (peer eth0): File exists", with the kernel's extended-ack text when it has one."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

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
NLM_F_DUMP_INTR = 0x10  # a dump the kernel says was disturbed by a change: do it again
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
# <linux/rtnetlink.h>
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST = 1
# <linux/if_link.h>
IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 3, 4, 10, 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFF_UP = 0x1
# <linux/if_addr.h>
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
IFA_F_NODAD = 0x02
# <linux/rtnetlink.h> route attributes
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5

_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg
_ATTR = struct.Struct("=HH")  # rtattr
RECV_BUFFER = 1 << 20
SOCKET_BUFFER = 8 << 20
ANSWER_TIMEOUT = 60.0
DUMP_ATTEMPTS = 10
SEND_CHUNK = 64 << 10  # bytes per sendmsg(2): well inside the socket's send buffer

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


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

    def links(self) -> list[Link]:
        """Every link of the namespace, in one dump (again, if a concurrent change interrupted it:
        the kernel then flags it, and it may have skipped links)."""
        for _ in range(DUMP_ATTEMPTS):
            found, interrupted = self._dump_links()
            if not interrupted:
                return found
        raise RtnlError(errno.EINTR, "list links: the dump kept being interrupted by changes")

    def _dump_links(self) -> tuple[list[Link], bool]:
        seq = self.next_seq()
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        self.sock.send(_HEADER.pack(_HEADER.size + len(body), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                       + body)
        found: list[Link] = []
        interrupted = False
        while True:
            data = self.recv()
            for kind, flags, msg_seq, payload in _messages(data):
                if msg_seq != seq:
                    continue
                interrupted |= bool(flags & NLM_F_DUMP_INTR)
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    if code:
                        raise RtnlError(code, f"list links: {os.strerror(code)}")
                    return found, interrupted
                if kind == RTM_NEWLINK:
                    found.append(_parse_link(payload))

    def recv(self) -> bytes:
        try:
            return self.sock.recv(RECV_BUFFER)
        except TimeoutError:
            raise RtnlError(errno.ETIMEDOUT, f"the kernel did not answer within {ANSWER_TIMEOUT:.0f} s") from None
        except OSError as e:  # ENOBUFS: answers were dropped; the requests' fate is unknown
            raise RtnlError(e.errno, f"netlink: {e.strerror}") from None

    def index_by_name(self) -> dict[str, int]:
        return {link.name: link.index for link in self.links()}


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


def _parse_link(payload: bytes) -> Link:
    _family, _type, index, flags, _change = _IFINFO.unpack_from(payload)
    attrs = parse_attrs(payload, _IFINFO.size)
    info = parse_attrs(attrs.get(IFLA_LINKINFO, b""))
    master = attrs.get(IFLA_MASTER)
    return Link(index=index, name=_cstr(attrs.get(IFLA_IFNAME)), alias=_cstr(attrs.get(IFLA_IFALIAS)),
                kind=_cstr(info.get(IFLA_INFO_KIND)), up=bool(flags & IFF_UP),
                master=struct.unpack("=I", master)[0] if master else None)


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)


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
        message = _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body
        self.pending.append(message)
        self.described[seq] = (what, tolerate)
        self.size += len(message)
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
    for message in messages:
        if size + len(message) > SEND_CHUNK and current:
            chunks.append(b"".join(current))
            current, size = [], 0
        current.append(message)
        size += len(message)
    if current:
        chunks.append(b"".join(current))
    return chunks

