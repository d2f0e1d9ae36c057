"""Changing a running lab's links: impairments, up/down, flapping (failure injection).

Works from the lab's state record, so it needs neither the file nor the process that ran `up`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from netemu.errors import InputError, LabError
from netemu.linux.netlink import Netlink
from netemu.runtime import impair, state
from netemu.runtime.impair import Shaping


def shape(entry: dict[str, Any], shaping: Shaping, netns_of: Callable[[str], int]) -> None:
    """Apply `shaping` to both directions of the link described by a state `entry`."""
    ends = entry["endpoints"]
    to_network = any(":" not in end for end in ends)
    for end in ends:
        if ":" not in end:
            continue
        node, iface = end.split(":", 1)
        impair.shape_host_end(netns_of(node), iface, shaping, ingress_loss=to_network)
    if to_network and entry.get("machine_side"):  # a macvlan has no machine end to shape
        impair.shape_machine_end(entry["machine_side"], shaping)


def find(record: dict[str, Any], endpoint: str) -> dict[str, Any]:
    for entry in record["links"]:
        if endpoint in entry["endpoints"]:
            return entry
    known = ", ".join(e for entry in record["links"] for e in entry["endpoints"] if ":" in e)
    raise InputError(f"lab '{record['name']}' has no link {endpoint} (links: {known})")


def _netns_of(record: dict[str, Any]) -> Callable[[str], int]:
    def lookup(node: str) -> int:
        info = record["nodes"][node]
        if not info.get("netns_pid"):
            raise LabError(f"node {node} has no network namespace")
        return int(info["netns_pid"])
    return lookup


def set_impairment(lab: str, endpoint: str, changes: dict[str, str], clear: bool = False) -> dict[str, str]:
    """Change a running link's impairment (both directions); returns the one now in force."""
    with state.locked(lab):
        record = state.read(lab) or {}
        entry = find(record, endpoint)
        current = {} if clear else dict(entry.get("impair") or {})
        current.update(changes)
        shaping = Shaping.parse(current)
        shape(entry, shaping, _netns_of(record))
        entry["impair"] = current or None
        state.write(lab, record)
        return current


def set_state(lab: str, endpoint: str, up: bool) -> None:
    """Take one end of a link administratively down (the peer loses carrier) or bring it back,
    restoring the static routes the kernel flushed with it."""
    record = state.read(lab) or {}
    find(record, endpoint)
    node, iface = endpoint.split(":", 1)
    pid = _netns_of(record)(node)
    with Netlink(pid) as nl:
        nl.set_link(iface, state="up" if up else "down")
        if up:
            _restore_routes(lab, node, nl)


def _restore_routes(lab: str, node: str, nl: Netlink) -> None:
    topo = state.load_topology(lab)
    if topo is None:
        return
    for route in topo.nodes[node].routes:
        nl.add_route(route.dst, str(route.via) if route.via else None, route.dev, exist_ok=True)


def flap(lab: str, endpoint: str, period: float, count: int, say: Callable[[str], None] | None = None) -> None:
    """Down for half a period, up for the other half, `count` times."""
    for number in range(count):
        set_state(lab, endpoint, up=False)
        if say:
            say(f"{endpoint} down ({number + 1}/{count})")
        time.sleep(period / 2)
        set_state(lab, endpoint, up=True)
        if say:
            say(f"{endpoint} up ({number + 1}/{count})")
        if number + 1 < count:
            time.sleep(period / 2)

