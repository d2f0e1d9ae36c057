"""What probes and checks produce: plain data with readable text forms. No kernel, no scapy.

These objects are what users see: in the CLI's table and JSON, in JUnit XML and in pytest's
assertion messages (pytest prints the repr of the object whose attribute failed an `assert`),
so their text says what was sent, what came back and who answered."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

REACHABLE = "reachable"
UNREACHABLE = "unreachable"
REFUSED = "refused"
ERROR = "error"  # the probe could not run at all (a node is not running, a bad target)
OUTCOMES = (REACHABLE, UNREACHABLE, REFUSED)
PROTOS = ("icmp", "tcp", "udp", "arp")  # arp means ARP for IPv4 targets and NDP for IPv6 ones


def format_rtt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    return f"{seconds * 1000:.2f} ms"


@dataclass
class ProbeRequest:
    """One probe to run: from node `src` to `dst` (a node, node:iface or an address)."""

    src: str
    dst: str
    proto: str = "icmp"
    port: int | None = None
    timeout: float = 2.0
    trace: bool = False  # send TTL 1..max_hops too and report the path (for `via:`)


@dataclass
class Hop:
    """One router on a traced path: the address that said "time exceeded", and its node."""

    ttl: int
    address: str | None = None  # None: that TTL got no answer
    node: str | None = None
    rtt: float | None = None

    def label(self) -> str:
        return self.node or self.address or "*"


@dataclass
class ProbeResult:
    src: str
    dst: str
    address: str  # the address probed (a node name resolves to its first address)
    proto: str
    port: int | None
    outcome: str  # reachable | unreachable | refused | error
    reason: str  # one line: the packet (or silence) that decided the outcome
    rtt: float | None = None  # seconds, from the kernel's receive timestamp
    evidence: list[str] = field(default_factory=list)  # summaries of the packets sent and seen
    path: list[Hop] | None = None  # routers before the target, when traced
    seen_at: str | None = None  # the lab node whose stack received the probe
    seen_source: str | None = None  # the source address the probe had when it arrived there
    attempts: int = 0
    elapsed: float = 0.0
    target_node: str | None = None  # the lab node that owns `address`, if any

    @property
    def reachable(self) -> bool:
        return self.outcome == REACHABLE

    @property
    def flow(self) -> str:
        target = self.dst if self.dst == self.address else f"{self.dst} ({self.address})"
        proto = f"{self.proto}/{self.port}" if self.port else self.proto
        return f"{self.src} -> {target} {proto}"

    def describe(self) -> str:
        """'reachable in 0.31 ms: SYN/ACK from 10.0.1.2:80' (the outcome and why)."""
        timing = f" in {format_rtt(self.rtt)}" if self.rtt is not None else ""
        return f"{self.outcome}{timing}: {self.reason}"

    def path_text(self) -> str:
        if self.path is None:
            return ""
        return " -> ".join([self.src, *(hop.label() for hop in self.path), self.target_node or self.address])

    def __str__(self) -> str:
        return f"{self.flow}: {self.describe()}"

    def __repr__(self) -> str:
        # One line: pytest shows it (escaped and cut at a few hundred characters) when an
        # `assert result.reachable` fails. The evidence is in details() and the plugin's report.
        return f"<probe {self}>"

    def details(self) -> list[str]:
        """The path (when traced) and the evidence, one line each."""
        lines = [f"path: {self.path_text()}"] if self.path is not None else []
        return lines + self.evidence

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reachable"] = self.reachable
        return data


@dataclass
class ReachCell:
    outcome: str
    rtt: float | None = None
    reason: str = ""


@dataclass
class ReachMatrix:
    """All-pairs reachability: cells[src][dst] for every pair of distinct nodes."""

    lab: str
    nodes: list[str]
    addresses: dict[str, str | None]  # the address probed for each node (its first one)
    cells: dict[str, dict[str, ReachCell]]
    elapsed: float = 0.0

    @property
    def pairs(self) -> int:
        return sum(len(row) for row in self.cells.values())

    @property
    def reachable(self) -> int:
        return sum(cell.outcome == REACHABLE for row in self.cells.values() for cell in row.values())

    def unreachable_pairs(self) -> list[tuple[str, str, ReachCell]]:
        return [(s, d, c) for s, row in self.cells.items() for d, c in row.items() if c.outcome != REACHABLE]

    def to_dict(self) -> dict[str, Any]:
        return {
            "lab": self.lab, "nodes": self.nodes, "addresses": self.addresses,
            "pairs": self.pairs, "reachable": self.reachable, "elapsed": round(self.elapsed, 4),
            "matrix": {s: {d: asdict(c) for d, c in row.items()} for s, row in self.cells.items()},
        }
