"""Namespaces a host takes from a host of another lab: `network: lab:LAB/NODE`, which only
`netemu run --network container:NAME` makes (a file shares within its lab: `container:NODE`).

The other lab is not ours: it may be taken down, or replaced by a lab of the same name, at any
moment, and the PID its record names may then go to any process of the machine. So the
namespace is opened here, through a descriptor of /proc/PID that is checked against the
recorded start time after the namespace was opened through it, and held open: netemu-init joins
that very namespace (/proc/OURPID/fd/N), never whatever the PID names by the time it starts.
Every caller while one host starts (its confinement, then its launch) gets the same answer: a
host judged to have a namespace of its own (NET_ADMIN) cannot then be put into the machine's."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from netemu.errors import InputError
from netemu.linux import procs
from netemu.runtime import state
from netemu.runtime.records import LabRecord, NodeRecord
from netemu.topology.model import OTHER_LAB


@dataclass(frozen=True)
class _Held:
    owner: tuple[int | None, int | None]  # the owner's PID 1 and start time when it was opened
    answer: tuple[str, int | None]
    fd: int | None  # the namespace, held open (None: the machine's network)


_HELD: dict[str, _Held] = {}


def other_lab_netns(network: str) -> tuple[str, int | None]:
    """`lab:LAB/NODE`: netemu-init's --net for the namespace of NODE of another running lab
    (`host` when NODE uses the machine's), and whose it is. Read from that lab's record: a node
    that stopped or was replaced since it was first read here is refused, never guessed at."""
    lab, _, node = network.removeprefix(OTHER_LAB).partition("/")
    record = state.load(lab)
    owner = record.nodes.get(node)
    if owner is None or not owner.alive:
        raise InputError(f"container:{node}: lab '{lab}' has no running node '{node}' (netemu ps lists the labs)")
    key = (owner.pid, owner.start_time)
    held = _HELD.get(network)
    if held is not None and held.owner != key:
        _release(network)
        raise InputError(f"container:{node}: lab '{lab}' was replaced while this host started: run it again")
    if held is None:
        held = _HELD[network] = _hold(lab, node, record, owner)
    return held.answer


def _hold(lab: str, node: str, record: LabRecord, owner: NodeRecord) -> _Held:
    key = (owner.pid, owner.start_time)
    if owner.netns_pid is None:
        return _Held(key, ("host", None), None)
    # The namespace's holder is the owner itself, or the node of its lab whose network it shares.
    holder = next((n for n in record.nodes.values() if n.pid == owner.netns_pid), None)
    fd = None if holder is None else procs.open_namespace(owner.netns_pid, holder.start_time, "net")
    if fd is None:
        raise InputError(f"container:{node}: lab '{lab}': the host whose network '{node}' uses is not running")
    return _Held(key, (f"/proc/{os.getpid()}/fd/{fd}", owner.netns_pid), fd)


def release_all() -> None:
    """After a build: the hosts joined what they were given, and the next build reads afresh."""
    for network in list(_HELD):
        _release(network)


def _release(network: str) -> None:
    held = _HELD.pop(network, None)
    if held is not None and held.fd is not None:
        with contextlib.suppress(OSError):
            os.close(held.fd)
