"""The one NETLINK_ROUTE socket type of netemu, and batches of requests sent on it.

A batch queues many link, address and route requests, sends them in few sendmsg(2) calls and
reads their acknowledgements afterwards. Each request keeps a description, so a refused one is
reported as e.g. "add veth nv1234 (peer eth0): File exists", with the kernel's extended-ack text
when it has one.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from netemu.linux import namespaces
from netemu.linux.netlink import messages as m
from netemu.linux.netlink.constants import (
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_GET_STRICT_CHK,
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_DUMP_FILTERED,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGERR_ATTR_MSG,
    RT_TABLE_MAIN,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    SO_RCVBUFFORCE,
    SOL_NETLINK,
)
from netemu.linux.netlink.messages import Address, IPInterface, Link, Route

RECV_BUFFER = 1 << 20
SOCKET_BUFFER = 8 << 20
ANSWER_TIMEOUT = 60.0
SETTLE_ATTEMPTS = 50  # dumps of a namespace that keeps changing, before giving up
SEND_CHUNK = 64 << 10  # bytes per sendmsg(2): well inside the socket's send buffer
LOOKUP_CHUNK = 256  # lookups by name in flight at once: their answers fit the receive buffer
FDS_PER_BATCH = 256  # namespace descriptors a batch holds open before it sends itself

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")


class RtnlError(OSError):
    """A request the kernel refused: errno, and what the request was."""


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
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_BUFFER)
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

    def batch(self) -> Batch:
        """A batch of requests on this socket: `with sock.batch() as b: ...` sends them at the end."""
        return Batch(self)

    # dumps ------------------------------------------------------------------------------
    def _dump(self, request: int, body: bytes, what: str) -> Dump:
        """One dump: every answer's payload, and what the kernel flagged on them."""
        seq = self.next_seq()
        self.sock.send(m.message(request, NLM_F_DUMP, seq, body))
        dump = Dump([], False, False)
        while True:
            for kind, flags, msg_seq, payload in m.messages(self.recv()):
                if msg_seq != seq:
                    continue  # a late answer to an earlier request
                dump.interrupted |= bool(flags & NLM_F_DUMP_INTR)
                dump.filtered |= bool(flags & NLM_F_DUMP_FILTERED)
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    code = m.error_code(payload)
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
        dump = self._dump(RTM_GETLINK, m.link_dump_body(kind, master), "list links")
        found = [m.parse_link(payload) for payload in dump.payloads]
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
            found = self._dump(RTM_GETADDR, m.addr_dump_body(index), "list addresses")
            parsed = [m.parse_address(payload) for payload in found.payloads]
            return [a for a in parsed if a and (index is None or a.index == index)], found.interrupted

        return self._settled(dump, frozenset, "list addresses")

    def routes(self, table: int = RT_TABLE_MAIN) -> list[Route]:
        """The IPv4 and IPv6 routes of one table, from dumps that settle (see addresses())."""
        def dump() -> tuple[list[Route], bool]:
            found: list[Route] = []
            interrupted = False
            for family in (socket.AF_INET, socket.AF_INET6):
                answer = self._dump(RTM_GETROUTE, m.route_dump_body(family, table), "list routes")
                found += [r for r in map(m.parse_route, answer.payloads) if r and r.table == table]
                interrupted |= answer.interrupted
            return found, interrupted

        return self._settled(dump, frozenset, "list routes")

    # single questions ---------------------------------------------------------------------
    def _ask(self, request: int, body: bytes, what: str) -> bytes:
        """One request answered by one message (no dump): its payload; a refusal raises."""
        seq = self.next_seq()
        self.sock.send(m.message(request, 0, seq, body))
        while True:
            for kind, _flags, msg_seq, payload in m.messages(self.recv()):
                if msg_seq != seq:
                    continue  # a late answer to an earlier request
                if kind == NLMSG_ERROR:
                    code = m.error_code(payload) or errno.EPROTO
                    raise RtnlError(code, f"{what}: {os.strerror(code)}")
                return payload

    def route_to(self, address: IPAddress) -> Route:
        """The route the kernel takes to `address` (`ip route get`), with the source it picks."""
        route = m.parse_route(self._ask(RTM_GETROUTE, m.route_get_body(address), f"route to {address}"))
        if route is None:
            raise RtnlError(errno.EPROTO, f"route to {address}: an answer of another family")
        return route

    def link_by_index(self, index: int) -> Link:
        return m.parse_link(self._ask(RTM_GETLINK, m.getlink_body(index=index), f"look up link {index}"))

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
            requests.append(m.message(RTM_GETLINK, 0, seq, m.getlink_body(name)))
            pending[seq] = name
        for chunk in _chunks(requests):
            self.sock.sendall(chunk)
        found: dict[str, Link] = {}
        failure: RtnlError | None = None
        while pending:  # every answer is read, even after a failure: none is left for the next request
            for kind, _flags, seq, payload in m.messages(self.recv()):
                name = pending.pop(seq, None)
                if name is None:
                    continue
                if kind == RTM_NEWLINK:
                    found[name] = m.parse_link(payload)
                elif kind == NLMSG_ERROR:
                    code = m.error_code(payload)
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


class Batch:
    """Requests queued on one socket and sent together; `commit()` sends what is queued and
    raises the first refusal, after every acknowledgement has been read.

    A batch also sends itself once SEND_CHUNK bytes or FDS_PER_BATCH namespace descriptors are
    queued, so the queueing call may raise the refusal of a request queued before it: callers
    treat any call on a batch as able to fail for the whole batch so far."""

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
        request = m.message(kind, NLM_F_ACK | flags, seq, body)
        self.pending.append(request)
        self.described[seq] = (what, tolerate)
        self.size += len(request)
        if self.size >= SEND_CHUNK or len(self.fds) >= FDS_PER_BATCH:
            self.commit()

    def netns_fd(self, pid: int) -> int:
        """A descriptor of host `pid`'s network namespace, open until the batch is sent."""
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def _fd(self, pid: int | None) -> int | None:
        return None if pid is None else self.netns_fd(pid)

    # requests --------------------------------------------------------------------------
    def add_veth(self, name: str, peer: str, *, ns_pid: int | None = None, peer_ns_pid: int | None = None,
                 master: int | None = None, mtu: int | None = None, up: bool = True) -> None:
        """A veth pair, each end straight in its namespace, the near end optionally already up
        and in a bridge: one request instead of four. The peer starts down: the kernel opens
        it before the pair is joined and would refuse (ENOTCONN)."""
        peer_fd = self._fd(peer_ns_pid)
        body = m.veth_body(name, peer, ns_fd=self._fd(ns_pid), peer_ns_fd=peer_fd, master=master, mtu=mtu, up=up)
        self._queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add veth {name} (peer {peer})")

    def add_bridge(self, name: str, mtu: int | None = None) -> None:
        self._queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, m.bridge_body(name, mtu), f"add bridge {name}")

    def add_macvlan(self, name: str, parent: int, parent_name: str, ns_pid: int, mtu: int | None = None) -> None:
        """A macvlan (bridge mode) on link `parent` of the socket's namespace, made straight
        inside the namespace of host `ns_pid`, down."""
        self._queue(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, m.macvlan_body(name, parent, self.netns_fd(ns_pid), mtu),
                    f"add macvlan {name} (on {parent_name})")

    def set_alias(self, name: str, alias: str) -> None:
        self._queue(RTM_NEWLINK, 0, m.alias_body(name, alias), f"tag {name}")

    def set_up(self, index: int, what: str) -> None:
        # The hot path's most frequent request: its description stays a single f-string.
        self._queue(RTM_NEWLINK, 0, m.setlink_body(index, up=True), f"set {what} up")

    def set_link(self, index: int, what: str, *, up: bool | None = None, master: int | None = None,
                 mtu: int | None = None) -> None:
        """Set link `index` up or down, into bridge `master` (0: out of its bridge), its MTU."""
        changes = [f"{'up' if up else 'down'}" if up is not None else "",
                   f"master {master}" if master is not None else "", f"mtu {mtu}" if mtu else ""]
        self._queue(RTM_NEWLINK, 0, m.setlink_body(index, up=up, master=master, mtu=mtu),
                    f"set {what} {' '.join(c for c in changes if c)}")

    def delete_link(self, index: int, what: str) -> None:
        """Delete a link; one already gone (with its peer or its namespace) is not an error."""
        self._queue(RTM_DELLINK, 0, m.ifinfo(index), f"delete {what}", frozenset({errno.ENODEV}))

    def add_address(self, index: int, iface: IPInterface, what: str) -> None:
        self._queue(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, m.address_body(index, iface),
                    f"add address {iface} to {what}")

    def add_route(self, dst: str, via: str | None, oif: int | None, *,
                  tolerate: frozenset[int] = frozenset()) -> None:
        """A route in the main table, as `ip route add DST [via GW] [dev DEV]` makes it; refusals
        with an errno in `tolerate` (EEXIST when re-adding, say) are not errors."""
        self._queue(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, m.route_body(dst, via, oif),
                    f"add route {dst} via {via or oif}", tolerate)

    # sending ---------------------------------------------------------------------------
    def commit(self) -> None:
        if not self.pending:
            self._close_fds()
            return
        queued, self.pending, self.size = self.pending, [], 0
        try:
            for chunk in _chunks(queued):
                self.sock.sock.sendall(chunk)
            first_error = self._read_acks(len(queued))
        finally:
            self._close_fds()
        self.described.clear()
        if first_error:
            raise first_error

    def _read_acks(self, expected: int) -> RtnlError | None:
        first: RtnlError | None = None
        while expected:
            for kind, flags, seq, payload in m.messages(self.sock.recv()):
                if kind != NLMSG_ERROR or seq not in self.described:
                    continue
                expected -= 1
                code = m.error_code(payload)
                if code and first is None and code not in self.described[seq][1]:
                    first = self._refusal(code, flags, seq, payload)
        return first

    def _refusal(self, code: int, flags: int, seq: int, payload: bytes) -> RtnlError:
        reason = os.strerror(code)
        if flags & NLM_F_ACK_TLVS:
            # With NETLINK_CAP_ACK the refused request's header only is echoed (int + nlmsghdr).
            text = m.cstr(m.parse_attrs(payload, 4 + m.HEADER.size).get(NLMSGERR_ATTR_MSG))
            if text:
                reason = f"{reason} ({text})"
        return RtnlError(code, f"{self.described[seq][0]}: {reason}")

    def _close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def _chunks(requests: list[bytes]) -> list[bytes]:
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for request in requests:
        if size + len(request) > SEND_CHUNK and current:
            chunks.append(b"".join(current))
            current, size = [], 0
        current.append(request)
        size += len(request)
    if current:
        chunks.append(b"".join(current))
    return chunks
