"""Changing a running lab's links: impairments, up/down, flapping (failure injection).

Works from the lab's state record, so it needs neither the file nor the process that ran `up`."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

from netemu.errors import InputError, LabError
from netemu.linux import netlink
from netemu.runtime import impair, state
from netemu.runtime.impair import Shaping
from netemu.runtime.records import LabRecord, LinkRecord


def shape(entry: LinkRecord, shaping: Shaping, netns_of: Callable[[str], int]) -> None:
    """Apply `shaping` to both directions of the link described by a state `entry`."""
    ends = entry.endpoints
    to_network = any(":" not in end for end in ends)
    for end in ends:
        if ":" not in end:
            continue
        node, iface = end.split(":", 1)
        impair.shape_host_end(netns_of(node), iface, shaping, ingress_loss=to_network)
    if to_network and entry.machine_side:  # a macvlan has no machine end to shape
        impair.shape_machine_end(entry.machine_side, shaping)


def find(record: LabRecord, endpoint: str) -> LinkRecord:
    for entry in record.links:
        if endpoint in entry.endpoints:
            return entry
    known = ", ".join(e for entry in record.links for e in entry.endpoints if ":" in e)
    raise InputError(f"lab '{record.name}' has no link {endpoint} (links: {known})")


def _netns_of(record: LabRecord) -> Callable[[str], int]:
    def lookup(node: str) -> int:
        pid = record.nodes[node].netns_pid
        if not pid:
            raise LabError(f"node {node} has no network namespace")
        return pid
    return lookup


def set_impairment(lab: str, endpoint: str, changes: dict[str, str], clear: bool = False) -> dict[str, str]:
    """Change a running link's impairment (both directions); returns the one now in force."""
    with state.locked(lab):
        record = _record(lab)
        entry = find(record, endpoint)
        current = {} if clear else dict(entry.impair or {})
        current.update(changes)
        shaping = Shaping.parse(current)
        shape(entry, shaping, _netns_of(record))
        entry.impair = current or None
        state.write(lab, record)
        return current


def set_state(lab: str, endpoint: str, up: bool) -> None:
    """Take one end of a link administratively down (the peer loses carrier) or bring it back,
    restoring the static routes the kernel flushed with it."""
    record = _record(lab)
    find(record, endpoint)
    node, iface = endpoint.split(":", 1)
    pid = _netns_of(record)(node)
    with netlink.Socket(pid) as sock:
        with sock.batch() as batch:
            batch.set_link(sock.index(iface), iface, up=up)
        if up:
            _restore_routes(lab, node, sock)


def _record(lab: str) -> LabRecord:
    return state.load(lab)


def _restore_routes(lab: str, node: str, sock: netlink.Socket) -> None:
    topo = state.load_topology(lab)
    if topo is None:
        return
    index = netlink.Indexes(sock)
    with sock.batch() as batch:  # routes still there (on another link) are fine
        for route in topo.nodes[node].routes:
            batch.add_route(route.dst, str(route.via) if route.via else None,
                            index[route.dev] if route.dev else None, tolerate=frozenset({errno.EEXIST}))


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

