"""Traffic shaping on one interface of the current network namespace: tc qdiscs (tbf, netem)
and nftables drop rules drawn at random for loss (which needs no sch_netem).

Callers enter the right namespace first (namespaces.entered): `tc` and `nft` are forked from
the calling thread and so run in its network namespace."""

from __future__ import annotations

import shutil
import subprocess

from netemu.errors import MachineError

LOSS_SCALE = 10_000  # loss is drawn as numgen random mod 10000 < pct*100: 0.01% steps


def _run(argv: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise MachineError(f"{argv[0]} is not installed (package {'iproute2' if argv[0] == 'tc' else 'nftables'})")
    return subprocess.run(argv, input=script, capture_output=True, text=True)


def clear_qdisc(dev: str) -> None:
    _run(["tc", "qdisc", "del", "dev", dev, "root"])  # absent is fine


def set_rate(dev: str, rate_bps: int) -> None:
    """A token bucket on the device's egress: at most rate_bps, bursts of 10 ms worth."""
    burst = max(3200, rate_bps // 8 // 100)
    result = _run(["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate_bps}bit",
                   "burst", str(burst), "latency", "100ms"])
    if result.returncode != 0:
        raise MachineError(f"tc tbf on {dev}: {result.stderr.strip()} (kernel module sch_tbf)")


def set_netem(dev: str, params: list[str]) -> None:
    result = _run(["tc", "qdisc", "replace", "dev", dev, "root", "netem", *params])
    if result.returncode != 0:
        if "unknown" in result.stderr.lower() or "not supported" in result.stderr.lower():
            raise MachineError("delay, jitter, corruption and duplication need the kernel module sch_netem, "
                               "which this kernel lacks (loss and rate work without it)")
        raise MachineError(f"tc netem on {dev}: {result.stderr.strip()}")


def _loss_table(dev: str) -> str:
    return f"netemu-loss-{dev}"


def set_loss(dev: str, egress_pct: float | None, ingress_pct: float | None) -> None:
    """Drop packets at random on the device, per direction, with an nftables netdev table."""
    table = _loss_table(dev)
    lines = [f"add table netdev {table}", f"delete table netdev {table}"]  # replace atomically
    chains = [(hook, pct) for hook, pct in (("egress", egress_pct), ("ingress", ingress_pct)) if pct]
    if chains:
        lines.append(f"table netdev {table} {{")
        for hook, pct in chains:
            threshold = round(pct * LOSS_SCALE / 100)
            draw = f"numgen random mod {LOSS_SCALE} < {threshold} " if threshold < LOSS_SCALE else ""
            lines += [f"  chain {hook} {{", f'    type filter hook {hook} device "{dev}" priority 0;',
                      # IP only: ARP must still resolve, or the first packets of a burst
                      # would wait for a neighbour and a loss setting would count twice.
                      f"    meta protocol {{ ip, ip6 }} {draw}drop",
                      "  }"]
        lines.append("}")
    result = _run(["nft", "-f", "-"], "\n".join(lines) + "\n")
    if result.returncode != 0:
        raise MachineError(f"nft loss rule on {dev}: {result.stderr.strip().splitlines()[:1]} "
                           "(needs nf_tables with netdev egress, kernel 5.16 or later)")
