"""All-pairs reachability (`netemu reach`): an ICMP echo from every host to every other host's
first address, all in flight at once.

One raw ICMP socket per host namespace both sends (the host's kernel routes and picks the
source, as for ping) and receives. The echo request is crafted by scapy once per sweep; each
pair's copy only differs in identifier, sequence number and checksum, which are patched in
place: scapy needs about half a millisecond to build a packet here, and 9,900 of them would
take longer than the whole sweep may. For the same reason the answers are matched on their
fixed header offsets (type, identifier, sequence, our payload) rather than dissected; scapy
only renders the few ICMP errors that end up in the matrix as reasons.

Sends go out in rounds (every host to its k-th neighbour, k = 1..n-1), so each target gets one
request per round instead of n-1 at once, and the sockets are drained between rounds. A pair
still silent RESEND seconds after the last send is sent once more; the sweep ends when every
pair is answered or `timeout` after the last send."""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import time
from dataclasses import dataclass

from netemu.probe.hostnet import HostNet, Received
from netemu.probe.model import REACHABLE, UNREACHABLE, ReachCell, ReachMatrix
from netemu.probe.targets import IPAddress, LabView

RESEND = 0.5
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
ERRORS = {socket.AF_INET: (3, 11, 12), socket.AF_INET6: (1, 2, 3, 4)}


@dataclass
class _Pair:
    src: int
    dst: int
    sent: float = 0.0


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


class Sweep:
    def __init__(self, view: LabView, nodes: list[str], timeout: float) -> None:
        self.view = view
        self.nodes = nodes
        self.timeout = timeout
        self.addresses: list[IPAddress | None] = [view.first_address(n) for n in nodes]
        self.payload = b"netemu-reach:" + os.urandom(8)
        self.base_id = random.randint(0, 0xFFFF)
        self.hosts: dict[int | None, HostNet] = {}
        self.sockets: dict[tuple[int | None, int], socket.socket] = {}
        self.by_fd: dict[int, tuple[HostNet, socket.socket, int]] = {}
        self.poller = select.poll()
        self.cells: dict[tuple[int, int], ReachCell] = {}
        self.pending: dict[tuple[int, int], _Pair] = {}
        self.template4 = self._template(socket.AF_INET)
        self.template6 = self._template(socket.AF_INET6)
        padded = self.template4 + (b"\0" if len(self.template4) % 2 else b"")
        self.sum4 = sum(struct.unpack(f"!{len(padded) // 2}H", padded))  # its checksum field is zero

    def _template(self, family: int) -> bytes:
        from scapy.compat import raw
        from scapy.layers.inet import ICMP
        from scapy.layers.inet6 import ICMPv6EchoRequest

        if family == socket.AF_INET6:  # the kernel fills in the ICMPv6 checksum itself
            return raw(ICMPv6EchoRequest(id=0, seq=0, cksum=0, data=self.payload))
        return raw(ICMP(type=8, id=0, seq=0, chksum=0) / self.payload)

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()

    # --- sockets ----------------------------------------------------------------------------
    def _socket(self, node: str, family: int) -> tuple[HostNet, socket.socket]:
        view = self.view.nodes[node]
        host = self.hosts.get(view.netns_pid)
        if host is None:
            host = self.hosts[view.netns_pid] = HostNet(view.netns_pid, node)
        key = (view.netns_pid, family)
        if key not in self.sockets:
            proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
            sock = host.raw_receiver(family, proto, (ECHO_REPLY[family], *ERRORS[family]))
            self.sockets[key] = sock
            self.by_fd[sock.fileno()] = (host, sock, family)
            self.poller.register(sock, select.POLLIN)
        return host, self.sockets[key]

    def _echo(self, family: int, ident: int, seq: int) -> bytes:
        if family == socket.AF_INET6:
            return self.template6[:4] + struct.pack("!HH", ident, seq) + self.template6[8:]
        # RFC 1071: the template's sum plus the two words that change
        csum = ~_fold(self.sum4 + ident + seq) & 0xFFFF
        return self.template4[:2] + struct.pack("!HHH", csum, ident, seq) + self.template4[8:]

    # --- the sweep --------------------------------------------------------------------------
    def run(self) -> ReachMatrix:
        started = time.monotonic()
        sources = [i for i, n in enumerate(self.nodes) if self.view.nodes[n].alive]
        targets = {j for j, a in enumerate(self.addresses) if a is not None}
        count = len(self.nodes)
        for i in range(count):
            for j in range(count):
                if i != j:
                    self.cells[(i, j)] = self._initial(i, j)
        for k in range(1, count):
            for i in sources:
                j = (i + k) % count
                if j in targets and (i, j) in self.cells and self.cells[(i, j)].outcome == UNREACHABLE:
                    self._send(_Pair(i, j))
            self._poll(0)
        last_send = time.monotonic()
        resent = False
        while self.pending:
            now = time.monotonic()
            if now >= last_send + self.timeout:
                break
            if not resent and now >= last_send + RESEND:
                resent = True
                for pair in list(self.pending.values()):
                    self._send(pair)
            wake = last_send + (self.timeout if resent else RESEND)
            self._poll(max(0.0, wake - now))
        for pair in self.pending.values():
            cell = self.cells[(pair.src, pair.dst)]
            if not cell.reason:
                cell.reason = f"no answer within {self.timeout:g}s"
        matrix = ReachMatrix(
            lab=self.view.name, nodes=self.nodes,
            addresses={n: str(a) if a else None for n, a in zip(self.nodes, self.addresses, strict=True)},
            cells={n: {} for n in self.nodes})
        for (i, j), cell in self.cells.items():
            matrix.cells[self.nodes[i]][self.nodes[j]] = cell
        matrix.elapsed = time.monotonic() - started
        return matrix

    def _initial(self, i: int, j: int) -> ReachCell:
        if not self.view.nodes[self.nodes[i]].alive:
            return ReachCell(UNREACHABLE, reason=f"{self.nodes[i]} is not running")
        if self.addresses[j] is None:
            return ReachCell(UNREACHABLE, reason=f"{self.nodes[j]} has no address")
        return ReachCell(UNREACHABLE)

    def _send(self, pair: _Pair) -> None:
        address = self.addresses[pair.dst]
        assert address is not None
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        _host, sock = self._socket(self.nodes[pair.src], family)
        packet = self._echo(family, (self.base_id + pair.src) & 0xFFFF, pair.dst)
        self.pending[(pair.src, pair.dst)] = pair
        pair.sent = time.time()
        try:
            sock.sendto(packet, (str(address), 0))
        except OSError as exc:
            del self.pending[(pair.src, pair.dst)]
            self.cells[(pair.src, pair.dst)].reason = f"could not send: {exc.strerror}"

    def _poll(self, timeout: float) -> None:
        for fd, _event in self.poller.poll(timeout * 1000):
            host, sock, family = self.by_fd[fd]
            proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
            for rx in host.drain(sock, family, proto):
                self._match(rx)

    def _match(self, rx: Received) -> None:
        data = rx.data
        offset = (data[0] & 15) * 4 if rx.family == socket.AF_INET else 40
        if len(data) < offset + 8:
            return
        kind = data[offset]
        if kind == ECHO_REPLY[rx.family]:
            if data[offset + 8:] != self.payload:
                return
            self._answer(rx, *struct.unpack_from("!HH", data, offset + 4), REACHABLE, "")
        elif kind in ERRORS[rx.family]:
            quoted = offset + 8  # the packet the error quotes: its IP header, then our echo
            inner = quoted + ((data[quoted] & 15) * 4 if rx.family == socket.AF_INET else 40)
            if len(data) >= inner + 8:
                self._answer(rx, *struct.unpack_from("!HH", data, inner + 4), UNREACHABLE, self._describe(rx))

    def _answer(self, rx: Received, ident: int, seq: int, outcome: str, reason: str) -> None:
        src = (ident - self.base_id) & 0xFFFF
        pair = self.pending.pop((src, seq), None)
        if pair is None:
            return
        self.cells[(src, seq)] = ReachCell(outcome, rtt=rx.ts - pair.sent if outcome == REACHABLE else None,
                                           reason=reason)

    @staticmethod
    def _describe(rx: Received) -> str:
        from netemu.probe import packets

        return packets.summary(packets.dissect(rx))


def sweep(view: LabView, nodes: list[str] | None = None, timeout: float = 2.0) -> ReachMatrix:
    runner = Sweep(view, nodes or list(view.nodes), timeout)
    try:
        return runner.run()
    finally:
        runner.close()
