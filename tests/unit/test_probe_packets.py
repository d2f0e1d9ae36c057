"""Crafting and matching with scapy, without a lab: the probe kinds are fed packets built here."""

from __future__ import annotations

import ipaddress
import socket
from types import SimpleNamespace
from typing import Any

import pytest

from netemu.probe import scapyload

scapyload.load()

from scapy.compat import raw  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6TimeExceeded, IPv6  # noqa: E402

from netemu.probe import packets as pk  # noqa: E402
from netemu.probe import rstguard  # noqa: E402
from netemu.probe.hostnet import Received  # noqa: E402
from netemu.probe.kinds import EchoProbe, TcpProbe, UdpProbe  # noqa: E402
from netemu.probe.model import ProbeRequest  # noqa: E402
from netemu.probe.session import Context  # noqa: E402
from netemu.probe.sweep import Sweep  # noqa: E402
from netemu.probe.targets import LabView  # noqa: E402

SRC, DST, ROUTER = "10.75.0.1", "10.75.1.2", "10.75.0.254"


def make(kind: type, proto: str = "icmp", port: int | None = None, dst: str = DST, src: str = SRC,
         trace: bool = False) -> Any:
    engine = SimpleNamespace(view=SimpleNamespace(label=lambda a: {ROUTER: "r1"}.get(str(a))), ports=set())
    host = SimpleNamespace(label="h1", pid=None, default_ttl=lambda family: 64)
    request = ProbeRequest("h1", dst, proto=proto, port=port, trace=trace)
    ctx = Context(engine, request, host, ipaddress.ip_address(dst), ipaddress.ip_address(src), "h2")  # type: ignore
    probe = kind(ctx)
    for i, flow in enumerate(probe.flows):
        flow.sport, flow.isn, flow.payload = 61000 + i, 1000 + i, pk.MAGIC + bytes([i])
        flow.sent[0] = 100.0
    return probe


def feed(probe: Any, pkt: Any, ts: float = 100.001) -> None:
    family = socket.AF_INET6 if IPv6 in pkt else socket.AF_INET
    rx = Received(probe.src, family, 0, raw(pkt), ts)
    probe.on_packet(rx, pk.dissect(rx))


def quote(pkt: Any) -> bytes:
    return raw(pkt)[:28] if IP in pkt else raw(pkt)


def test_tcp_synack_is_reachable_rst_refused() -> None:
    probe = make(TcpProbe, "tcp", 80)
    probe.send = lambda packet: 100.0  # the RST that closes the half-open connection
    syn = probe.packet(probe.flows[0], 0)
    assert syn[TCP].flags == "S" and syn[TCP].seq == 1000 and syn[IP].src == SRC
    feed(probe, IP(src=DST, dst=SRC) / TCP(sport=80, dport=61000, flags="SA", ack=999))  # wrong ack: ignored
    assert not probe.done
    feed(probe, IP(src=DST, dst=SRC) / TCP(sport=80, dport=61000, flags="SA", ack=1001))
    assert probe.result.outcome == "reachable" and probe.result.reason == f"SYN/ACK from {DST}:80"
    assert probe.result.rtt == pytest.approx(0.001)
    assert any("closes the half-open connection" in line for line in probe.evidence)

    refused = make(TcpProbe, "tcp", 80)
    feed(refused, IP(src=DST, dst=SRC) / TCP(sport=80, dport=61000, flags="RA", ack=1001))
    assert refused.result.outcome == "refused" and refused.result.reason == f"RST from {DST}:80"


def test_our_own_outgoing_rst_is_not_an_answer() -> None:
    """The RST the source sends (its kernel's, or ours) goes the other way: never 'refused'."""
    probe = make(TcpProbe, "tcp", 80)
    feed(probe, IP(src=SRC, dst=DST) / TCP(sport=61000, dport=80, flags="R", seq=1001))
    assert not probe.done


def test_tcp_icmp_error_is_unreachable() -> None:
    probe = make(TcpProbe, "tcp", 80)
    original = probe.packet(probe.flows[0], 0)
    feed(probe, IP(src=ROUTER, dst=SRC) / ICMP(type=3, code=13) / quote(original))
    assert probe.result.outcome == "unreachable"
    assert probe.result.reason == f"ICMP dest-unreach communication-prohibited from {ROUTER}"


def test_udp_reply_port_unreachable_and_other_errors() -> None:
    probe = make(UdpProbe, "udp", 53)
    feed(probe, IP(src=DST, dst=SRC) / UDP(sport=53, dport=61000) / b"answer")
    assert probe.result.outcome == "reachable"

    refused = make(UdpProbe, "udp", 53)
    feed(refused, IP(src=DST, dst=SRC) / ICMP(type=3, code=3) / quote(refused.packet(refused.flows[0], 0)))
    assert refused.result.outcome == "refused"

    unreachable = make(UdpProbe, "udp", 53)
    original = unreachable.packet(unreachable.flows[0], 0)
    feed(unreachable, IP(src=ROUTER, dst=SRC) / ICMP(type=3, code=1) / quote(original))
    assert unreachable.result.outcome == "unreachable"


def test_echo_reply_must_carry_our_payload() -> None:
    probe = make(EchoProbe)
    request = probe.packet(probe.flows[0], 0)
    feed(probe, IP(src=DST, dst=SRC) / ICMP(type=0, id=request[ICMP].id, seq=0) / b"someone else's")
    assert not probe.done
    feed(probe, IP(src=DST, dst=SRC) / ICMP(type=0, id=request[ICMP].id, seq=0) / probe.payload)
    assert probe.result.outcome == "reachable" and probe.result.reason == f"echo reply from {DST}"


def test_echo_v6_reply_and_unreachable() -> None:
    probe = make(EchoProbe, dst="fd00:75::2", src="fd00:75::1")
    request = probe.packet(probe.flows[0], 0)
    assert IPv6 in request and request[IPv6].hlim == 64
    feed(probe, IPv6(src="fd00:75::2", dst="fd00:75::1") / ICMPv6EchoReply(id=probe.ident, seq=0,
                                                                         data=probe.payload))
    assert probe.result.outcome == "reachable"

    lost = make(EchoProbe, dst="fd00:75::2", src="fd00:75::1")
    feed(lost, IPv6(src="fd00:75::fe", dst="fd00:75::1") / ICMPv6DestUnreach(code=3)
         / raw(lost.packet(lost.flows[0], 0)))
    assert lost.result.outcome == "unreachable" and "address-unreachable" in lost.result.reason


def test_trace_collects_hops_then_the_target() -> None:
    probe = make(EchoProbe, trace=True)
    assert [f.ttl for f in probe.flows[:3]] == [1, 2, 3]
    first = probe.packet(probe.flows[0], 0)
    second = probe.packet(probe.flows[1], 0)
    assert first[IP].ttl == 1
    feed(probe, IP(src=DST, dst=SRC) / ICMP(type=0, id=probe.ident, seq=second[ICMP].seq) / probe.payload)
    assert not probe.done  # hop 1 has not answered yet
    feed(probe, IP(src=ROUTER, dst=SRC) / ICMP(type=11) / quote(first))
    assert probe.result.outcome == "reachable"
    assert [(h.ttl, h.node) for h in probe.result.path] == [(1, "r1")]
    assert probe.result.path_text() == "h1 -> r1 -> h2"


def test_trace_v6_time_exceeded() -> None:
    probe = make(EchoProbe, dst="fd00:75::2", src="fd00:75::1", trace=True)
    first = probe.packet(probe.flows[0], 0)
    feed(probe, IPv6(src="fd00:75::fe", dst="fd00:75::1") / ICMPv6TimeExceeded() / raw(first))
    assert probe.flows[0].answer is not None and probe.flows[0].answer.outcome is None


def test_observer_records_the_source_seen_at_the_target() -> None:
    probe = make(TcpProbe, "tcp", 80)
    target = SimpleNamespace(label="web")
    translated = IP(src="192.0.2.1", dst="10.75.9.9") / TCP(sport=1234, dport=8080, flags="S", seq=1000)
    rx = Received(target, socket.AF_INET, 6, raw(translated), 100.0)  # type: ignore[arg-type]
    probe.on_packet(rx, pk.dissect(rx))
    assert probe.arrival == ("web", "192.0.2.1")


def test_sweep_patches_the_scapy_template_exactly() -> None:
    view = LabView({"name": "x", "nodes": {"a": {"pid": 1, "netns_pid": 1, "start_time": -1}}, "links": []})
    sweep = Sweep(view, ["a"], 1.0)
    for ident, seq in [(0, 0), (7, 9), (0xFFFF, 0xFFFF), (12345, 99)]:
        expected = raw(ICMP(type=8, id=ident, seq=seq) / sweep.payload)
        assert sweep._echo(socket.AF_INET, ident, seq) == expected


def test_rst_guard_rule_spares_our_marked_packets() -> None:
    script = rstguard._script()
    assert "tcp flags & rst == rst" in script and "meta mark != 0x6e657470" in script
    assert "61000-65535" in script and "hook output priority -300" in script
