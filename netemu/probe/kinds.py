"""The probe kinds: what each one sends and which packets answer it.

Every kind sends one or more *flows*. A plain probe has one flow (TTL 64); a traced probe (for
`via:`) has one flow per TTL from 1 to MAX_HOPS, sent at once, so a router's "time exceeded"
names hop N and the target's own answer ends the path. Each flow is told apart from the others
(and from every other packet in the host) by what NAT leaves alone: ICMP echo by its sequence
number and payload, TCP by source port and initial sequence number, UDP by source port and
payload.

A probe ends on its first deciding answer, or at its timeout in silence. A flow still silent
after RESEND seconds is sent again: the kernel rate-limits ICMP errors (about one a second per
peer once a small burst is spent), so a lost "port unreachable" or "time exceeded" gets a
second chance before silence is believed.

Besides its own host, every probe watches all hosts of the lab for its packet arriving: the
host whose stack accepts it records the source address it had there (`seen_as`, NAT), and a
probe that got no answer can tell "never arrived" from "arrived, answer lost"."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import time
from dataclasses import dataclass, field

from netemu.errors import InputError
from netemu.probe import packets as pk
from netemu.probe.hostnet import Received
from netemu.probe.model import REACHABLE, REFUSED, UNREACHABLE, Hop, ProbeResult, format_rtt
from netemu.probe.session import Context

RESEND = 1.0  # seconds between sends of a still silent flow
MAX_HOPS = 16
MAX_EVIDENCE = 24


@dataclass
class Answer:
    outcome: str | None  # None: a router's "time exceeded", a hop and not the end
    reason: str
    sender: str
    rtt: float | None = None


@dataclass
class Flow:
    index: int
    ttl: int
    sent: dict[int, float] = field(default_factory=dict)  # attempt -> send time
    answer: Answer | None = None
    sport: int = 0
    isn: int = 0
    payload: bytes = b""


def _last(flow: Flow) -> int:
    """The attempt an answer belongs to when the packets of all attempts are the same (TCP,
    UDP, ARP resend identical packets): the latest, which gives the shortest honest RTT."""
    return max(flow.sent) if flow.sent else 0


class Probe:
    noun = "packet"  # for messages: "no answer to 2 SYNs"
    proto = socket.IPPROTO_ICMP

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.req = ctx.request
        self.src = ctx.src
        self.address = ctx.address
        self.family = socket.AF_INET6 if ctx.address.version == 6 else socket.AF_INET
        # An untraced probe leaves with the TTL the host's own stack would use (ping's).
        ttls = range(1, MAX_HOPS + 1) if self.req.trace else [ctx.src.default_ttl(self.family)]
        self.flows = [Flow(index, ttl) for index, ttl in enumerate(ttls)]
        self.evidence: list[str] = []
        self.arrival: tuple[str, str] | None = None  # (host label, source address seen there)
        self.reserved: list[socket.socket] = []  # sockets holding our source ports
        self.result: ProbeResult | None = None
        self.attempts = 0
        self.started = self.deadline = self.next_send = time.monotonic()

    # --- life cycle -----------------------------------------------------------------------
    def prepare(self) -> None:
        """Reserve ports and register the sockets to watch (before anything is sent)."""
        self.ctx.engine.watch(self.src, self.family, self.proto)
        self.ctx.engine.watch(self.src, self.family, self.icmp_proto)
        self.ctx.engine.observe(self.family, self.proto)

    @property
    def icmp_proto(self) -> int:
        return socket.IPPROTO_ICMPV6 if self.family == socket.AF_INET6 else socket.IPPROTO_ICMP

    @property
    def done(self) -> bool:
        return self.result is not None

    def start(self, now: float) -> None:
        self.started = now
        self.deadline = now + self.req.timeout
        self._send_round(now)

    def wake(self) -> float:
        return min(self.deadline, self.next_send)

    def tick(self, now: float) -> None:
        if self.done:
            return
        if now >= self.deadline:
            self._finish_at_deadline()
        elif now >= self.next_send:
            self._send_round(now)

    def _pending(self) -> list[Flow]:
        end = self._terminal_index()
        limit = len(self.flows) if end is None else end
        return [flow for flow in self.flows[:limit] if flow.answer is None]

    def _send_round(self, now: float) -> None:
        attempt = self.attempts
        self.attempts += 1
        self.next_send = now + RESEND
        flows = self._pending()
        if not flows:
            return
        for flow in flows:
            packet = self.packet(flow, attempt)
            if flow is flows[0]:
                what = f"{len(flows)} {self.noun}s with TTL {flows[0].ttl}..{flows[-1].ttl}, first: " \
                    if len(flows) > 1 else ""
                self.note(f"sent{' again' if attempt else ''}: {what}{pk.summary(packet)}")
            try:
                flow.sent[attempt] = self.send(packet)
            except OSError as exc:
                self.finish(UNREACHABLE, f"{self.req.src} could not send: {os.strerror(exc.errno or 0)}"
                            f"{' (its own firewall refused it)' if exc.errno == 1 else ''}")
                return

    def send(self, packet: pk.Packet) -> float:
        return self.src.send(pk.raw(packet), self.address)

    # --- packets ----------------------------------------------------------------------------
    def on_packet(self, rx: Received, pkt: pk.Packet) -> None:
        if self.arrival is None and rx.family != socket.AF_PACKET and self.is_mine(pkt):
            self.arrival = (rx.host.label, pk.source(pkt))
            self.note(f"seen at {rx.host.label}: {pk.summary(pkt)}")
        if rx.host is not self.src:
            return
        found = self.match(pkt)
        if found is None:
            return
        flow, attempt, answer = found
        if self.done or flow.answer is not None:
            self.late_answer(flow, answer)
            return
        sent = flow.sent.get(attempt)
        answer.rtt = rx.ts - sent if sent else None
        flow.answer = answer
        self.note(f"got{f' (TTL {flow.ttl})' if self.req.trace else ''}: {pk.summary(pkt)} "
                  f"after {format_rtt(answer.rtt)}")
        self.after_answer(flow, answer)
        self._maybe_finish()

    def packet(self, flow: Flow, attempt: int) -> pk.Packet:
        raise NotImplementedError

    def match(self, pkt: pk.Packet) -> tuple[Flow, int, Answer] | None:
        raise NotImplementedError

    def is_mine(self, pkt: pk.Packet) -> bool:
        raise NotImplementedError

    def keys(self) -> list[tuple[str, object]]:
        """The packet keys (packets.keys) of every packet `match` or `is_mine` can accept; none:
        the probe sees every packet (ARP and NDP have no such key)."""
        return []

    def after_answer(self, flow: Flow, answer: Answer) -> None:
        """A hook: the TCP probe closes a half-open connection here."""

    def late_answer(self, flow: Flow, answer: Answer) -> None:
        """An answer after the probe decided (another TTL of a trace, a duplicate)."""

    def error_answer(self, error: pk.IcmpError) -> Answer:
        outcome = None if error.kind == "time-exceeded" and self.req.trace else \
            REFUSED if error.kind == "port-unreachable" and self.req.proto == "udp" else UNREACHABLE
        return Answer(outcome, f"ICMP {error.text} from {error.sender}", error.sender)

    def note(self, line: str) -> None:
        if len(self.evidence) < MAX_EVIDENCE:
            self.evidence.append(line)

    # --- the end ----------------------------------------------------------------------------
    def _terminal_index(self) -> int | None:
        return next((f.index for f in self.flows if f.answer and f.answer.outcome is not None), None)

    def _maybe_finish(self) -> None:
        end = self._terminal_index()
        if end is not None and all(f.answer for f in self.flows[:end]):
            self._finish_with(end)

    def _finish_at_deadline(self) -> None:
        end = self._terminal_index()
        if end is not None:
            self._finish_with(end)
            return
        sends = sum(len(f.sent) for f in self.flows)
        where = (f"; it reached {self.arrival[0]} (from {self.arrival[1]}) but no answer came back"
                 if self.arrival else "")
        self.finish(UNREACHABLE, f"no answer to {sends} {self.noun}{'s' if sends != 1 else ''} "
                                 f"within {self.req.timeout:g}s{where}", path=self._hops(None))

    def _finish_with(self, end: int) -> None:
        answer = self.flows[end].answer
        assert answer is not None and answer.outcome is not None
        self.finish(answer.outcome, answer.reason, rtt=answer.rtt, path=self._hops(end))

    def _hops(self, end: int | None) -> list[Hop] | None:
        if not self.req.trace:
            return None
        if end is None:  # no answer from the target: the path as far as routers answered
            answered = [f.index for f in self.flows if f.answer]
            end = max(answered) + 1 if answered else 0
        hops = []
        for flow in self.flows[:end]:
            address = flow.answer.sender if flow.answer else None
            node = self.ctx.engine.view.label(ipaddress.ip_address(address)) if address else None
            hops.append(Hop(flow.ttl, address, node, flow.answer.rtt if flow.answer else None))
        return hops

    def finish(self, outcome: str, reason: str, rtt: float | None = None, path: list[Hop] | None = None) -> None:
        if self.done:
            return
        self.result = ProbeResult(
            src=self.req.src, dst=self.req.dst, address=str(self.address), proto=self.req.proto,
            port=self.req.port, outcome=outcome, reason=reason, rtt=rtt, evidence=self.evidence,
            path=path, attempts=self.attempts, elapsed=time.monotonic() - self.started,
            target_node=self.ctx.target_node)

    def seal(self) -> ProbeResult:
        """The result, with what the observers saw (they may be read after the answer). The
        source ports are given back: a `within:` window may run hundreds of probes."""
        assert self.result is not None
        if self.arrival:
            self.result.seen_at, self.result.seen_source = self.arrival
        for sock in self.reserved:
            self.src.release(sock)
        self.reserved.clear()
        return self.result


class EchoProbe(Probe):
    """ICMP echo (v4) / ICMPv6 echo: the reply, an ICMP error, or silence."""

    noun = "echo request"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.proto = self.icmp_proto
        self.ident = random.randint(1, 0xFFFF)
        self.payload = pk.MAGIC + os.urandom(8)

    def packet(self, flow: Flow, attempt: int) -> pk.Packet:
        # seq: the flow in the high bits, the attempt in the low 4, so a reply names both.
        return pk.echo_request(self.ctx.source, self.address, self.ident, flow.index << 4 | attempt & 15,
                               self.payload, flow.ttl)

    def _flow(self, seq: int) -> tuple[Flow, int] | None:
        index = seq >> 4
        return (self.flows[index], seq & 15) if index < len(self.flows) else None

    def match(self, pkt: pk.Packet) -> tuple[Flow, int, Answer] | None:
        reply = pk.echo_reply(pkt)
        if reply is not None:
            ident, seq, payload = reply
            found = self._flow(seq) if payload == self.payload and ident == self.ident else None
            if found is None:
                return None
            return *found, Answer(REACHABLE, f"echo reply from {pk.source(pkt)}", pk.source(pkt))
        error = pk.icmp_error(pkt)
        quoted = pk.quoted_echo(error.inner) if error else None
        if error is None or quoted is None or quoted[0] != self.ident or str(error.inner.dst) != str(self.address):
            return None
        found = self._flow(quoted[1])
        return (*found, self.error_answer(error)) if found else None

    def is_mine(self, pkt: pk.Packet) -> bool:
        return pk.echo_request_payload(pkt) == self.payload

    def keys(self) -> list[tuple[str, object]]:
        return [("icmp", self.ident), ("echo", self.payload)]


class TcpProbe(Probe):
    """TCP SYN: SYN/ACK is reachable, RST is refused, an ICMP error or silence is unreachable."""

    noun = "SYN"
    proto = socket.IPPROTO_TCP

    def prepare(self) -> None:
        problem = self.ctx.engine.guard.ensure(self.src.pid)
        if problem:
            self.note(f"note: this host's own RSTs for our SYN/ACKs are not held back ({problem})")
        for flow in self.flows:
            sock, flow.sport = self.src.reserve(socket.SOCK_STREAM, self.family)
            self.reserved.append(sock)
            flow.isn = random.randint(1, 0xFFFFFFFE)
            self.ctx.engine.ports.add(flow.sport)
        super().prepare()

    def packet(self, flow: Flow, attempt: int) -> pk.Packet:
        assert self.req.port is not None
        return pk.syn(self.ctx.source, self.address, flow.sport, self.req.port, flow.isn, flow.ttl)

    def _by_port(self, sport: int, isn: int | None = None) -> Flow | None:
        return next((f for f in self.flows if f.sport == sport and (isn is None or f.isn == isn)), None)

    def match(self, pkt: pk.Packet) -> tuple[Flow, int, Answer] | None:
        segment = pk.tcp_segment(pkt)
        if segment is not None:
            flow = self._by_port(segment.dport)
            if flow is None or segment.sport != self.req.port or segment.ack != (flow.isn + 1) & 0xFFFFFFFF:
                return None
            flags = str(segment.flags)
            peer = f"{pk.source(pkt)}:{segment.sport}"
            if "R" in flags:
                return flow, _last(flow), Answer(REFUSED, f"RST from {peer}", pk.source(pkt))
            if "S" in flags and "A" in flags:
                return flow, _last(flow), Answer(REACHABLE, f"SYN/ACK from {peer}", pk.source(pkt))
            return None
        error = pk.icmp_error(pkt)
        quoted = pk.quoted_ports(error.inner, "tcp") if error else None
        if error is None or quoted is None or quoted[1] != self.req.port:
            return None
        flow = self._by_port(quoted[0], quoted[2])
        return (flow, _last(flow), self.error_answer(error)) if flow else None

    def after_answer(self, flow: Flow, answer: Answer) -> None:
        if self._close(flow, answer):
            self.note(f"sent: {pk.summary(self._reset(flow))} (closes the half-open connection)")

    def late_answer(self, flow: Flow, answer: Answer) -> None:
        self._close(flow, answer)

    def _reset(self, flow: Flow) -> pk.Packet:
        assert self.req.port is not None
        return pk.reset(self.ctx.source, self.address, flow.sport, self.req.port, (flow.isn + 1) & 0xFFFFFFFF)

    def _close(self, flow: Flow, answer: Answer) -> bool:
        """Close the half-open connection a SYN/ACK opened, with a RST we send on purpose
        (marked, so the RST guard lets it through)."""
        if answer.outcome != REACHABLE:
            return False
        try:
            self.send(self._reset(flow))
        except OSError:
            return False
        return True

    def is_mine(self, pkt: pk.Packet) -> bool:
        segment = pk.tcp_segment(pkt)
        if segment is None or str(segment.flags) != "S":
            return False
        return any(segment.seq == f.isn for f in self.flows)

    def keys(self) -> list[tuple[str, object]]:
        return [key for f in self.flows for key in (("tcp", f.sport), ("syn", f.isn))]


class UdpProbe(Probe):
    """UDP: a reply is reachable, ICMP port unreachable is refused, silence is unreachable."""

    noun = "datagram"
    proto = socket.IPPROTO_UDP

    def prepare(self) -> None:
        nonce = os.urandom(8)
        for flow in self.flows:
            sock, flow.sport = self.src.reserve(socket.SOCK_DGRAM, self.family)
            self.reserved.append(sock)
            flow.payload = pk.MAGIC + nonce + bytes([flow.index])
            self.ctx.engine.ports.add(flow.sport)
        super().prepare()

    def packet(self, flow: Flow, attempt: int) -> pk.Packet:
        assert self.req.port is not None
        return pk.datagram(self.ctx.source, self.address, flow.sport, self.req.port, flow.payload, flow.ttl)

    def match(self, pkt: pk.Packet) -> tuple[Flow, int, Answer] | None:
        datagram = pk.udp_datagram(pkt)
        if datagram is not None:
            flow = next((f for f in self.flows if f.sport == datagram.dport), None)
            if flow is None or datagram.sport != self.req.port:
                return None
            peer = f"{pk.source(pkt)}:{datagram.sport}"
            return flow, _last(flow), Answer(REACHABLE, f"UDP reply from {peer}", pk.source(pkt))
        error = pk.icmp_error(pkt)
        quoted = pk.quoted_ports(error.inner, "udp") if error else None
        if error is None or quoted is None or quoted[1] != self.req.port:
            return None
        flow = next((f for f in self.flows if f.sport == quoted[0]), None)
        return (flow, _last(flow), self.error_answer(error)) if flow else None

    def is_mine(self, pkt: pk.Packet) -> bool:
        datagram = pk.udp_datagram(pkt)
        return datagram is not None and any(bytes(datagram.payload) == f.payload for f in self.flows)

    def keys(self) -> list[tuple[str, object]]:
        return [key for f in self.flows for key in (("udp", f.sport), ("datagram", f.payload))]


class NeighbourProbe(Probe):
    """ARP (IPv4) or NDP (IPv6) for an on-link neighbour, on the interface the route uses."""

    def prepare(self) -> None:
        if self.req.trace:
            raise InputError("a neighbour probe (arp) cannot be traced: it never leaves the link")
        route = self.src.route(self.address)
        if route.get("gateway"):
            raise InputError(f"{self.address} is not on a link of {self.req.src} (its route goes via "
                             f"{route['gateway']}): ARP and NDP only ask neighbours")
        self.ifname = str(route["ifname"])
        self.ethertype = pk.ETH_P_IPV6 if self.family == socket.AF_INET6 else pk.ETH_P_ARP
        self.sock = self.src.packet_socket(self.ifname, self.ethertype)
        mac = self.sock.getsockname()[4]
        self.mac = ":".join(f"{b:02x}" for b in mac)
        self.noun = "neighbour solicitation" if self.family == socket.AF_INET6 else "ARP request"
        self.ctx.engine.watch_packet_socket(self.src, self.sock, self.ethertype)

    def packet(self, flow: Flow, attempt: int) -> pk.Packet:
        if self.family == socket.AF_INET6:
            return pk.neighbour_solicitation(self.mac, self.ctx.source, self.address)
        return pk.arp_request(self.mac, self.ctx.source, self.address)

    def send(self, packet: pk.Packet) -> float:
        sent = time.time()
        self.sock.send(pk.raw(packet))
        return sent

    def match(self, pkt: pk.Packet) -> tuple[Flow, int, Answer] | None:
        flow = self.flows[0]
        reply = pk.arp_reply(pkt)
        if reply and reply[0] == str(self.address) and reply[2] == str(self.ctx.source):
            return flow, _last(flow), Answer(REACHABLE, f"ARP reply on {self.ifname}: "
                                                                    f"{reply[0]} is-at {reply[1]}", reply[0])
        advert = pk.neighbour_advert(pkt)
        if advert and ipaddress.ip_address(advert[0]) == self.address:
            return flow, _last(flow), Answer(
                REACHABLE, f"neighbour advertisement on {self.ifname}: {advert[0]} is-at {advert[1]}", advert[0])
        return None

    def is_mine(self, pkt: pk.Packet) -> bool:
        return False


KINDS: dict[str, type[Probe]] = {"icmp": EchoProbe, "tcp": TcpProbe, "udp": UdpProbe, "arp": NeighbourProbe}
