"""Probes, checks and reachability, all made of packets crafted and dissected by scapy inside
the hosts' network namespaces.

- model.py: results (ProbeResult, ReachMatrix); checks.py: CheckResult, CheckReport, running;
- engine.py + kinds.py: the probe engine (ICMP echo, TCP SYN, UDP, ARP/NDP, traceroute);
  session.py: what the kinds know of the engine, so that only the engine imports them;
- sweep.py: the all-pairs ICMP sweep; hostnet.py: sockets per namespace; rstguard.py;
- report.py: table, JSON and JUnit XML.

This module stays light (the pytest plugin and the CLI import it); the entry points below load
scapy the cheap way (scapyload.py) before the modules that need it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from netemu.linux.privilege import require_root
from netemu.probe.model import ProbeRequest, ProbeResult, ReachMatrix
from netemu.runtime.records import LabRecord

if TYPE_CHECKING:
    from netemu.probe.engine import Engine

__all__ = ["ProbeRequest", "ProbeResult", "ReachMatrix", "open_engine", "probe", "reach"]


def open_engine(record: LabRecord) -> Engine:
    """A probe session on a running lab (close it, or use it as a context manager)."""
    from netemu.probe import scapyload

    require_root()  # raw sockets in other namespaces: exit 3 with a clear message, not a traceback

    scapyload.load(record)
    from netemu.probe.engine import Engine

    return Engine(record)


def probe(record: LabRecord, request: ProbeRequest) -> ProbeResult:
    with open_engine(record) as engine:
        return engine.probe(request)


def reach(record: LabRecord, nodes: list[str] | None = None, timeout: float = 2.0) -> ReachMatrix:
    """The all-pairs ICMP reachability matrix of a running lab."""
    from netemu.probe import scapyload

    require_root()

    scapyload.load(record)
    from netemu.probe.sweep import sweep
    from netemu.probe.targets import LabView

    return sweep(LabView(record), nodes, timeout)
