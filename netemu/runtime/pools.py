"""Address pools shared by every lab on the machine: subnets for default bridges and for
point-to-point links with `auto` addresses.

A ledger under /run/netemu (guarded by flock) records which lab holds which subnet, so labs
side by side never collide; a subnet the machine already routes is never handed out."""

from __future__ import annotations

import ipaddress
from contextlib import AbstractContextManager
from typing import Any

from netemu.errors import MachineError
from netemu.linux import netlink
from netemu.runtime import state

LEDGER = "pools.json"
# Docker's default-address-pools idea: bridges take /24s from 172.30.0.0/16; point-to-point
# links take /30s out of a per-lab block of the shared address space (RFC 6598).
BRIDGE_POOL = ipaddress.ip_network("172.30.0.0/16")
P2P_POOL = ipaddress.ip_network("100.64.0.0/10")

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ledger() -> AbstractContextManager[dict[str, Any]]:
    return state.ledger(LEDGER, dict)


def _machine_networks() -> list[Net]:
    """Subnets the machine already uses: its addresses and its routes (no link names needed,
    so no dump of the machine's links, which other tools may be changing all the time)."""
    with netlink.Socket() as sock:
        used: list[Net] = [address.interface.network for address in sock.addresses()]
        used += [route.dst for route in sock.routes() if route.dst.prefixlen]
    return used


def claim(lab: str, pool: Net, prefixlen: int, count: int, avoid: list[Net]) -> list[Net]:
    """Take `count` subnets of /prefixlen from `pool` for `lab`, clear of other labs, of the
    machine's networks and of `avoid` (the lab's own explicit subnets)."""
    if count == 0:
        return []
    with _ledger() as data:
        taken = [ipaddress.ip_network(n) for nets in data.values() for n in nets]
        busy = taken + _machine_networks() + avoid
        chosen: list[Net] = []
        for candidate in pool.subnets(new_prefix=prefixlen):
            if not any(candidate.overlaps(b) for b in busy):
                chosen.append(candidate)
                if len(chosen) == count:
                    break
        if len(chosen) < count:
            raise MachineError(f"address pool {pool} is exhausted (another lab or the machine uses it)")
        data.setdefault(lab, []).extend(str(n) for n in chosen)
        return chosen


def release(lab: str) -> None:
    with _ledger() as data:
        data.pop(lab, None)


def held_by(lab: str) -> list[str]:
    with _ledger() as data:
        return list(data.get(lab, []))
