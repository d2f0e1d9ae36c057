"""Machine-wide sysctls that labs need raised, restored when the last lab that needed them goes.

Two of them: IPv4 forwarding, which NAT networks and published ports need (as Docker turns it
on for docker0), and the neighbour-table thresholds.

The neighbour (ARP/NDP) table is shared by all network namespaces and its garbage collector
starts refusing entries at gc_thresh3 (1024 by default): a lab of a few hundred hosts
overflows it and pings fail. Each lab records its need; the machine keeps the largest sum,
and the values found before the first lab are written back after the last one."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from netemu.linux import sysctl
from netemu.runtime import state

LEDGER = "host-sysctls.json"
FORWARDING = "net.ipv4.ip_forward"


def _ledger() -> AbstractContextManager[dict[str, Any]]:
    return state.ledger(LEDGER, lambda: {"saved": {}, "labs": {}})


def neighbour_entries(hosts_per_segment: list[int]) -> int:
    """Worst-case neighbour entries of a lab: on a segment of n hosts each may learn the n-1
    others and the gateway."""
    return sum(n * n for n in hosts_per_segment)


def thresholds_for(entries: int) -> dict[str, int]:
    third = max(1024, 2 * entries)
    values = {}
    for fam in ("ipv4", "ipv6"):
        values[f"net.{fam}.neigh.default.gc_thresh1"] = third // 8
        values[f"net.{fam}.neigh.default.gc_thresh2"] = third // 2
        values[f"net.{fam}.neigh.default.gc_thresh3"] = third
    return values


def claim(lab: str, entries: int, forwarding: bool = False) -> None:
    """Record the lab's needs and raise the machine's settings where they fall short."""
    with _ledger() as data:
        data["labs"][lab] = {"neigh": entries, "forward": forwarding}
        _apply(data)


def release(lab: str, live_labs: set[str] | None = None) -> None:
    """Forget the lab (and any lab not in `live_labs`); restore the machine when none is left."""
    with _ledger() as data:
        data["labs"].pop(lab, None)
        if live_labs is not None:
            data["labs"] = {k: v for k, v in data["labs"].items() if k in live_labs}
        if not data["labs"]:
            for key, value in data["saved"].items():
                sysctl.write(key, value)
            data["saved"] = {}
        elif FORWARDING in data["saved"] and not any(need["forward"] for need in data["labs"].values()):
            # No lab routes through the machine any more: forwarding goes back at once.
            sysctl.write(FORWARDING, data["saved"].pop(FORWARDING))


def _apply(data: dict[str, Any]) -> None:
    wanted = thresholds_for(sum(need["neigh"] for need in data["labs"].values()))
    if any(need["forward"] for need in data["labs"].values()):
        wanted[FORWARDING] = 1
    raise_now = {}
    for key, value in wanted.items():
        current = int(sysctl.read(key))
        if value > current:
            data["saved"].setdefault(key, str(current))
            raise_now[key] = value
    if raise_now:
        # The old values reach the disk before the new ones reach the kernel: netemu killed in
        # between still finds what to put back at `down` or `clean`.
        state.save_ledger(LEDGER, data)
    for key, value in raise_now.items():
        sysctl.write(key, str(value))
