"""What a probe kind knows of the session that runs it, and what the session resolved for one
probe before it starts.

The engine (engine.py) is the session: it builds the probes of kinds.py and feeds them packets.
The kinds know it only through `Session`, so the imports go one way: engine -> kinds -> session."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Protocol

from netemu.probe.hostnet import HostNet
from netemu.probe.model import ProbeRequest
from netemu.probe.rstguard import RstGuard
from netemu.probe.targets import LabView

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Session(Protocol):
    """The engine as its probes use it: the lab, the RST guard, and the sockets it polls."""

    view: LabView
    guard: RstGuard
    ports: set[int]  # every probe source port in use: answers go to these

    def watch(self, host: HostNet, family: int, proto: int) -> None:
        """Poll `host`'s receiver for `proto` packets."""

    def watch_packet_socket(self, host: HostNet, sock: socket.socket, ethertype: int) -> None:
        """Poll a packet socket the probe opened itself (ARP, NDP)."""

    def observe(self, family: int, proto: int) -> None:
        """Watch every running host of the lab for packets of `proto` arriving."""


@dataclass
class Context:
    """What the engine resolved for a probe before it starts."""

    engine: Session
    request: ProbeRequest
    src: HostNet
    address: IPAddress
    source: IPAddress  # the source address the src host's kernel picks for `address`
    target_node: str | None
