"""Packets: every probe is built by scapy and every answer is dissected by scapy.

Only the layers netemu needs are imported (scapy.all costs a few hundred milliseconds more) and
scapy's own routing and sending are never used (see hostnet.py)."""

from __future__ import annotations

import ipaddress
import random
import socket
from dataclasses import dataclass

from scapy.compat import raw
from scapy.layers.inet import ICMP, IP, TCP, UDP, ICMPerror, IPerror, TCPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPerror6,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet
from scapy.utils6 import in6_getnsma, in6_getnsmac

from netemu.probe.hostnet import Received

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAGIC = b"netemu-probe:"  # starts every payload we send, so a listener can tell our packets apart
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
V6_ERRORS = (ICMPv6DestUnreach, ICMPv6TimeExceeded, ICMPv6PacketTooBig, ICMPv6ParamProblem)

__all__ = ["ETH_P_ARP", "ETH_P_IPV6", "MAGIC", "Packet", "raw"]


def _ip(src: IPAddress, dst: IPAddress, ttl: int) -> Packet:
    if dst.version == 6:
        return IPv6(src=str(src), dst=str(dst), hlim=ttl)
    return IP(src=str(src), dst=str(dst), ttl=ttl, id=random.randint(1, 0xFFFF))


def echo_request(src: IPAddress, dst: IPAddress, ident: int, seq: int, payload: bytes, ttl: int = 64) -> Packet:
    if dst.version == 6:
        return _ip(src, dst, ttl) / ICMPv6EchoRequest(id=ident, seq=seq, data=payload)
    return _ip(src, dst, ttl) / ICMP(type=8, id=ident, seq=seq) / payload


def syn(src: IPAddress, dst: IPAddress, sport: int, dport: int, isn: int, ttl: int = 64) -> Packet:
    return _ip(src, dst, ttl) / TCP(sport=sport, dport=dport, flags="S", seq=isn, window=64240,
                                    options=[("MSS", 1460)])


def reset(src: IPAddress, dst: IPAddress, sport: int, dport: int, seq: int) -> Packet:
    return _ip(src, dst, 64) / TCP(sport=sport, dport=dport, flags="R", seq=seq, window=0)


def datagram(src: IPAddress, dst: IPAddress, sport: int, dport: int, payload: bytes, ttl: int = 64) -> Packet:
    return _ip(src, dst, ttl) / UDP(sport=sport, dport=dport) / payload


def arp_request(mac: str, src: IPAddress, target: IPAddress) -> Packet:
    return Ether(dst="ff:ff:ff:ff:ff:ff", src=mac) / ARP(op=1, hwsrc=mac, psrc=str(src), pdst=str(target))


def neighbour_solicitation(mac: str, src: IPAddress, target: IPAddress) -> Packet:
    packed = socket.inet_pton(socket.AF_INET6, str(target))
    group = socket.inet_ntop(socket.AF_INET6, in6_getnsma(packed))
    return (Ether(dst=in6_getnsmac(packed), src=mac) / IPv6(src=str(src), dst=group, hlim=255)
            / ICMPv6ND_NS(tgt=str(target)) / ICMPv6NDOptSrcLLAddr(lladdr=mac))


def dissect(rx: Received) -> Packet:
    if rx.family == socket.AF_INET:
        return IP(rx.data)
    if rx.family == socket.AF_INET6:
        return IPv6(rx.data)
    return Ether(rx.data)


def summary(pkt: Packet) -> str:
    """scapy's one-line summary; IPv6 ones get the addresses scapy leaves out for ICMPv6."""
    if isinstance(pkt, IPv6):
        return f"IPv6 {pkt.src} > {pkt.dst} / {pkt.payload.summary()}"
    return str(pkt.summary())


# --- answers ----------------------------------------------------------------------------------
@dataclass
class IcmpError:
    kind: str  # time-exceeded | port-unreachable | unreachable
    text: str  # e.g. "dest-unreach host-unreachable"
    sender: str
    inner: Packet  # the packet it quotes (IPerror / IPerror6 and what follows)


def icmp_error(pkt: Packet) -> IcmpError | None:
    if ICMP in pkt and pkt[ICMP].type in (3, 11, 12) and IPerror in pkt:
        icmp = pkt[ICMP]
        kind = "time-exceeded" if icmp.type == 11 else "port-unreachable" if (icmp.type, icmp.code) == (3, 3) \
            else "unreachable"
        return IcmpError(kind, icmp.sprintf("%ICMP.type% %ICMP.code%"), pkt[IP].src, pkt[IPerror])
    for cls in V6_ERRORS:
        if cls in pkt and IPerror6 in pkt:
            layer = pkt[cls]
            kind = ("time-exceeded" if cls is ICMPv6TimeExceeded
                    else "port-unreachable" if cls is ICMPv6DestUnreach and layer.code == 4 else "unreachable")
            text = layer.sprintf(f"%{cls.__name__}.type% %{cls.__name__}.code%").lower().replace(" ", "-")
            return IcmpError(kind, text.replace("-unreachable-", "-unreachable "), pkt[IPv6].src, pkt[IPerror6])
    return None


def echo_reply(pkt: Packet) -> tuple[int, int, bytes] | None:
    """(id, seq, payload) of an echo reply."""
    if ICMP in pkt and pkt[ICMP].type == 0:
        return pkt[ICMP].id, pkt[ICMP].seq, raw(pkt[ICMP].payload)
    if ICMPv6EchoReply in pkt:
        layer = pkt[ICMPv6EchoReply]
        return layer.id, layer.seq, bytes(layer.data)
    return None


def echo_request_payload(pkt: Packet) -> bytes | None:
    if ICMP in pkt and pkt[ICMP].type == 8 and IPerror not in pkt:
        return raw(pkt[ICMP].payload)
    if ICMPv6EchoRequest in pkt and IPerror6 not in pkt:
        return bytes(pkt[ICMPv6EchoRequest].data)
    return None


def quoted_echo(inner: Packet) -> tuple[int, int] | None:
    if ICMPerror in inner and inner[ICMPerror].type == 8:
        return inner[ICMPerror].id, inner[ICMPerror].seq
    if ICMPv6EchoRequest in inner:
        return inner[ICMPv6EchoRequest].id, inner[ICMPv6EchoRequest].seq
    return None


def quoted_ports(inner: Packet, proto: str) -> tuple[int, int, int | None] | None:
    """(sport, dport, tcp seq) of the TCP or UDP header an ICMP error quotes."""
    layer_cls = TCPerror if proto == "tcp" else UDPerror
    if layer_cls not in inner:
        return None
    layer = inner[layer_cls]
    return layer.sport, layer.dport, layer.seq if proto == "tcp" else None


def tcp_segment(pkt: Packet) -> Packet | None:
    return pkt[TCP] if TCP in pkt and TCPerror not in pkt else None


def udp_datagram(pkt: Packet) -> Packet | None:
    return pkt[UDP] if UDP in pkt and UDPerror not in pkt else None


def source(pkt: Packet) -> str:
    return str(pkt[IPv6].src if IPv6 in pkt else pkt[IP].src)


def arp_reply(pkt: Packet) -> tuple[str, str, str] | None:
    """(sender address, its MAC, target address) of an ARP reply."""
    if ARP in pkt and pkt[ARP].op == 2:
        return pkt[ARP].psrc, pkt[ARP].hwsrc, pkt[ARP].pdst
    return None


def neighbour_advert(pkt: Packet) -> tuple[str, str] | None:
    """(target address, the MAC it came from) of a neighbour advertisement."""
    if ICMPv6ND_NA in pkt:
        return str(pkt[ICMPv6ND_NA].tgt), str(pkt[Ether].src) if Ether in pkt else "?"
    return None


def keys(pkt: Packet) -> list[tuple[str, object]]:
    """What ties a packet to the probe it concerns, read once per packet: the engine offers it
    only to the probes holding one of these keys (see Probe.keys), not to every probe in flight.
    Echo requests, SYNs and datagrams are keyed by what NAT leaves alone (payload, sequence
    number), so their arrival is found behind masquerade; answers by our own id or port."""
    found: list[tuple[str, object]] = []
    reply = echo_reply(pkt)
    if reply is not None:
        found.append(("icmp", reply[0]))
    request = echo_request_payload(pkt)
    if request is not None:
        found.append(("echo", request))
    error = icmp_error(pkt)
    if error is not None:
        quoted = quoted_echo(error.inner)
        if quoted is not None:
            found.append(("icmp", quoted[0]))
        for proto in ("tcp", "udp"):
            ports = quoted_ports(error.inner, proto)
            if ports is not None:
                found.append((proto, ports[0]))
    segment = tcp_segment(pkt)
    if segment is not None:
        found += [("tcp", segment.dport), ("syn", segment.seq)]
    datagram = udp_datagram(pkt)
    if datagram is not None:
        found += [("udp", datagram.dport), ("datagram", bytes(datagram.payload))]
    return found
