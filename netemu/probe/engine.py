"""The probe engine: one thread, sockets in every host's network namespace, one poll() loop.

Probes run concurrently: all of them send, then every answer is read from whichever host it
lands in and handed to the probes, until each has decided or timed out. A session keeps its
sockets (and the RST guards it installed) until it is closed.

    with netemu.probe.open_engine(record) as engine:    # loads scapy the cheap way first
        result = engine.probe(ProbeRequest("h1", "h2", proto="tcp", port=80))
"""

from __future__ import annotations

import select
import socket
import struct
import time

from netemu.errors import InputError, NetemuError
from netemu.probe import packets as pk
from netemu.probe.hostnet import HostNet, Received
from netemu.probe.kinds import KINDS, Probe
from netemu.probe.model import ERROR, PROTOS, UNREACHABLE, ProbeRequest, ProbeResult
from netemu.probe.rstguard import RstGuard
from netemu.probe.session import Context
from netemu.probe.targets import LabView
from netemu.runtime.records import LabRecord

SYN, ACK = 0x02, 0x10


class Engine:
    def __init__(self, record: LabRecord) -> None:
        self.view = LabView(record)
        self.hosts: dict[int | None, HostNet] = {}
        self.guard = RstGuard()
        self.ports: set[int] = set()  # every probe source port in use: answers go to these
        self.poller = select.poll()
        self.watched: dict[int, tuple[HostNet, socket.socket, int, int]] = {}
        self.probes: list[Probe] = []
        self.by_key: dict[tuple[str, object], list[Probe]] = {}  # packets.keys -> the probes they concern
        self.keyless: list[Probe] = []  # probes offered every packet

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.guard.remove_all()
        for host in self.hosts.values():
            host.close()
        self.hosts.clear()
        self.watched.clear()

    # --- hosts and sockets ------------------------------------------------------------------
    def host(self, node: str) -> HostNet:
        view = self.view.running(node)
        if view.netns_pid not in self.hosts:
            owner = self.view.netns_owners().get(view.netns_pid, node)
            self.hosts[view.netns_pid] = HostNet(view.netns_pid, owner)
        return self.hosts[view.netns_pid]

    def watch(self, host: HostNet, family: int, proto: int) -> None:
        sock = host.receiver(family, proto)
        self._register(host, sock, family, proto)

    def watch_packet_socket(self, host: HostNet, sock: socket.socket, ethertype: int) -> None:
        self._register(host, sock, socket.AF_PACKET, ethertype)

    def _register(self, host: HostNet, sock: socket.socket, family: int, proto: int) -> None:
        if sock.fileno() not in self.watched:
            self.watched[sock.fileno()] = (host, sock, family, proto)
            self.poller.register(sock, select.POLLIN)

    def observe(self, family: int, proto: int) -> None:
        """Watch every running host of the lab for packets of `proto` arriving."""
        for node in self.view.netns_owners().values():
            self.watch(self.host(node), family, proto)

    # --- running probes ---------------------------------------------------------------------
    def probe(self, request: ProbeRequest) -> ProbeResult:
        """One probe; a probe that cannot run (bad target, node not running) raises."""
        return self.run([request], raise_errors=True)[0]

    def run(self, requests: list[ProbeRequest], raise_errors: bool = False) -> list[ProbeResult]:
        """Run probes concurrently; results in the order of `requests`."""
        results: list[ProbeResult | None] = [None] * len(requests)
        probes: dict[int, Probe] = {}
        for i, request in enumerate(requests):
            try:
                probes[i] = self._build(request)
            except (NetemuError, OSError) as exc:
                if raise_errors:
                    raise
                results[i] = _error_result(request, exc)
        self._loop(list(probes.values()))
        for i, probe in probes.items():
            results[i] = probe.seal()
        return [r for r in results if r is not None]

    def _build(self, request: ProbeRequest) -> Probe:
        if request.proto not in PROTOS:
            raise InputError(f"unknown protocol '{request.proto}': expected one of {', '.join(PROTOS)}")
        if request.proto in ("tcp", "udp") and not request.port:
            raise InputError(f"a {request.proto} probe needs a port")
        if request.proto in ("icmp", "arp") and request.port:
            raise InputError(f"a port means nothing to an {request.proto} probe")
        src = self.host(request.src)
        address, target_node = self.view.resolve(request.dst)
        try:
            source = src.source_for(address)
        except OSError as exc:
            probe = KINDS[request.proto](Context(self, request, src, address, address, target_node))
            probe.finish(UNREACHABLE, f"{request.src} has no route to {address} ({exc.strerror})")
            return probe
        probe = KINDS[request.proto](Context(self, request, src, address, source, target_node))
        probe.prepare()
        return probe

    def _loop(self, probes: list[Probe]) -> None:
        self.probes = probes
        self._index(probes)
        now = time.monotonic()
        for probe in probes:
            if not probe.done:
                probe.start(now)
        try:
            while True:
                now = time.monotonic()
                for probe in probes:
                    probe.tick(now)
                active = [p for p in probes if not p.done]
                if not active:
                    break
                wait = max(0.0, min(p.wake() for p in active) - time.monotonic())
                for fd, _event in self.poller.poll(wait * 1000 + 1):
                    self._drain(fd)
            # Observers may still hold the arrival of a probe whose answer was read first.
            for fd, _event in self.poller.poll(0):
                self._drain(fd)
        finally:
            self.probes = []

    def _drain(self, fd: int) -> None:
        host, sock, family, proto = self.watched[fd]
        for rx in host.drain(sock, family, proto):
            if not self._interesting(rx):
                continue
            pkt = pk.dissect(rx)
            for probe in self._concerned(pk.keys(pkt)):
                probe.on_packet(rx, pkt)

    def _index(self, probes: list[Probe]) -> None:
        # Offering every packet to every probe made a round of N probes cost N^2 matches: a
        # thousand probes in flight fell behind their own deadlines.
        self.by_key = {}
        self.keyless = []
        for probe in probes:
            keys = probe.keys()
            if not keys:
                self.keyless.append(probe)
            for key in keys:
                self.by_key.setdefault(key, []).append(probe)

    def _concerned(self, keys: list[tuple[str, object]]) -> list[Probe]:
        found = list(self.keyless)
        for key in keys:
            found += [probe for probe in self.by_key.get(key, ()) if probe not in found]
        return found

    def _interesting(self, rx: Received) -> bool:
        """A cheap look at the header before scapy dissects: raw TCP and UDP sockets get every
        segment the host receives, and only answers to our ports or our own probes matter."""
        if rx.family == socket.AF_PACKET or rx.proto not in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
            return True
        offset = (rx.data[0] & 15) * 4 if rx.family == socket.AF_INET else 40
        if len(rx.data) < offset + 14:
            return False
        if struct.unpack_from("!H", rx.data, offset + 2)[0] in self.ports:
            return True
        if rx.proto == socket.IPPROTO_TCP:
            return rx.data[offset + 13] & (SYN | ACK) == SYN
        return pk.MAGIC in rx.data


def _error_result(request: ProbeRequest, exc: Exception) -> ProbeResult:
    return ProbeResult(src=request.src, dst=request.dst, address=request.dst, proto=request.proto,
                       port=request.port, outcome=ERROR, reason=str(exc))
