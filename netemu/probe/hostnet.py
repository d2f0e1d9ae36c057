"""Sockets opened inside one host's network namespace and used from this thread.

A socket stays bound to the namespace it was created in, so every socket is made inside
`namespaces.entered(pid)` and then used from outside: one thread can send and receive in all
the hosts of a lab with poll(). Nothing here reads scapy's routing table (conf.route is the
namespace scapy was loaded in): the host's kernel routes what we send, because we send through
raw IP sockets and let it pick the route, the next hop and the neighbour."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import random
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from netemu.linux import namespaces, netlink

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SO_TIMESTAMPNS = 35
SO_MARK = 36
SO_RCVBUFFORCE = 33
SOL_RAW = 255
ICMP_FILTER = 1
ICMP6_FILTER = 1
PACKET_OUTGOING = 4
IPV6_PKTINFO = 50
IPV6_HOPLIMIT = 52

# Our own packets carry this mark, so the RST guard (rstguard.py) drops only the kernel's RSTs.
PROBE_MARK = 0x6E657470
# Probe source ports: above Linux's default ephemeral range (32768-60999), so the kernel never
# hands them to an application's connect(), and each one is also bound while a probe uses it.
PORT_RANGE = (61000, 65535)
RCVBUF = 4 << 20  # replies of a whole sweep may queue before we read them

# ICMP types a receiving socket keeps: echo request and reply, and the errors.
ICMP4_TYPES = (0, 3, 8, 11, 12)
ICMP6_TYPES = (1, 2, 3, 4, 128, 129)


@dataclass
class Received:
    host: HostNet
    family: int  # AF_INET, AF_INET6 or AF_PACKET
    proto: int  # IP protocol, or the ethertype for AF_PACKET
    data: bytes  # the whole IP packet (IPv6: header rebuilt), or the Ethernet frame
    ts: float  # kernel receive time, CLOCK_REALTIME seconds
    ifname: str | None = None


def _icmp4_filter(keep: tuple[int, ...]) -> bytes:
    mask = 0xFFFFFFFF
    for kind in keep:
        mask &= ~(1 << kind)
    return struct.pack("I", mask)


def _icmp6_filter(keep: tuple[int, ...]) -> bytes:
    words = [0xFFFFFFFF] * 8  # a set bit blocks that type
    for kind in keep:
        words[kind >> 5] &= ~(1 << (kind & 31))
    return struct.pack("8I", *words)


def _ancillary(ancdata: list[tuple[int, int, bytes]]) -> tuple[float, bytes | None, int]:
    ts, dst, hlim = 0.0, None, 64
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", value[:16])
            ts = sec + nsec / 1e9
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
            dst = value[:16]
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_HOPLIMIT:
            hlim = struct.unpack("i", value[:4])[0]
    return ts, dst, hlim


class HostNet:
    """The sockets of one network namespace: `pid` is a process in it (None: ours)."""

    def __init__(self, pid: int | None, label: str) -> None:
        self.pid = pid
        self.label = label  # a node living in this namespace, for messages
        self.sockets: list[socket.socket] = []
        self.receivers: dict[tuple[int, int], socket.socket] = {}
        self.senders: dict[int, socket.socket] = {}
        self.packet_sockets: dict[tuple[str, int], socket.socket] = {}
        self.ttls: dict[int, int] = {}

    @contextlib.contextmanager
    def _inside(self) -> Iterator[None]:
        if self.pid is None:
            yield
        else:
            with namespaces.entered(self.pid, ("net",)):
                yield

    def open(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        with self._inside():
            sock = socket.socket(family, kind, proto)
        self.sockets.append(sock)
        return sock

    def default_ttl(self, family: int) -> int:
        """The namespace's net.ipv4.ip_default_ttl (or IPv6 hop limit): what its own stack sends
        with, so a lab that raises it for a long chain of routers is probed the same way."""
        if family not in self.ttls:
            key = "ipv6/conf/default/hop_limit" if family == socket.AF_INET6 else "ipv4/ip_default_ttl"
            with self._inside(), open(f"/proc/sys/net/{key}") as f:
                self.ttls[family] = int(f.read())
        return self.ttls[family]

    def release(self, sock: socket.socket) -> None:
        if sock in self.sockets:
            self.sockets.remove(sock)
        sock.close()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        self.receivers.clear()
        self.senders.clear()
        self.packet_sockets.clear()

    # sending -------------------------------------------------------------------------------
    def sender(self, family: int) -> socket.socket:
        """A raw socket taking whole IP packets (scapy builds the header; the kernel routes)."""
        if family not in self.senders:
            sock = self.open(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, PROBE_MARK)
            self.senders[family] = sock
        return self.senders[family]

    def send(self, packet: bytes, address: IPAddress) -> float:
        """Send one IP packet; returns the send time (CLOCK_REALTIME, like the receive stamps)."""
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = self.sender(family)
        sent = _now()
        sock.sendto(packet, (str(address), 0))
        return sent

    def source_for(self, address: IPAddress) -> IPAddress:
        """The source address this host's kernel picks for `address` (a connected UDP socket
        asks the routing table; nothing is sent). Raises OSError when there is no route."""
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        with self._inside():
            sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.connect((str(address), 9))
            return ipaddress.ip_address(sock.getsockname()[0])
        finally:
            sock.close()

    def reserve(self, kind: int, family: int) -> tuple[socket.socket, int]:
        """Bind a TCP or UDP socket to a free probe port, so that no application (and no other
        probe) uses the same port while our probe does. A bound UDP socket also swallows the
        reply, so the kernel sends no port-unreachable back to the target."""
        for _ in range(200):
            port = random.randint(*PORT_RANGE)
            sock = self.open(family, kind)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            except OSError as exc:
                sock.close()
                self.sockets.remove(sock)
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            return sock, port
        raise OSError(errno.EADDRINUSE, f"no free probe port in {PORT_RANGE} on {self.label}")

    # receiving -----------------------------------------------------------------------------
    def receiver(self, family: int, proto: int) -> socket.socket:
        """A raw socket that gets a copy of every packet of `proto` this host's stack accepts:
        after its firewall and NAT, so a reply dropped by the host itself counts as lost."""
        key = (family, proto)
        if key not in self.receivers:
            self.receivers[key] = self.raw_receiver(family, proto, ICMP6_TYPES if family == socket.AF_INET6
                                                    else ICMP4_TYPES)
        return self.receivers[key]

    def raw_receiver(self, family: int, proto: int, icmp_types: tuple[int, ...]) -> socket.socket:
        """A new non-blocking raw socket with kernel timestamps; an ICMP one keeps only
        `icmp_types` (the kernel filters the rest, so they cost us nothing)."""
        sock = self.open(family, socket.SOCK_RAW, proto)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if family == socket.AF_INET and proto == socket.IPPROTO_ICMP:
            sock.setsockopt(SOL_RAW, ICMP_FILTER, _icmp4_filter(icmp_types))
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            if proto == socket.IPPROTO_ICMPV6:
                sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _icmp6_filter(icmp_types))
        return sock

    def packet_socket(self, ifname: str, ethertype: int) -> socket.socket:
        """An AF_PACKET socket on one interface, for ARP and NDP (layer 2)."""
        key = (ifname, ethertype)
        if key not in self.packet_sockets:
            sock = self.open(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
            sock.bind((ifname, ethertype))
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.packet_sockets[key] = sock
        return self.packet_sockets[key]

    def drain(self, sock: socket.socket, family: int, proto: int) -> list[Received]:
        """Everything queued on a receiving socket, without blocking."""
        found = []
        while True:
            try:
                data, ancdata, _flags, addr = sock.recvmsg(65535, 256)
            except (BlockingIOError, InterruptedError):
                return found
            ts, dst, hlim = _ancillary(ancdata)
            if family == socket.AF_PACKET:
                if addr[2] == PACKET_OUTGOING:
                    continue
                found.append(Received(self, family, proto, data, ts or _now(), ifname=addr[0]))
                continue
            if family == socket.AF_INET6:
                # An IPv6 raw socket gets the payload only: rebuild the header from what the
                # kernel tells us, so that scapy dissects whole packets for both families.
                src = socket.inet_pton(socket.AF_INET6, addr[0].split("%")[0])
                header = struct.pack("!IHBB16s16s", 0x60000000, len(data), proto, hlim, src, dst or bytes(16))
                data = header + data
            found.append(Received(self, family, proto, data, ts or _now()))

    # routes (for neighbour probes) --------------------------------------------------------
    def route(self, address: IPAddress) -> dict[str, Any]:
        """The route to `address`: output interface name, gateway (None: on-link), source.
        Raises netlink.RtnlError (an OSError) when there is none."""
        with netlink.Socket(self.pid) as sock:
            route = sock.route_to(address)
            ifname = sock.link_by_index(route.oif).name if route.oif else None
        return {"ifname": ifname, "gateway": route.gateway, "source": route.source}


def _now() -> float:
    return time.time()
