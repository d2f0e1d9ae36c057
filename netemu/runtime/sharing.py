"""Namespaces a host takes from a host of another lab: `network: lab:LAB/NODE`, which only
`netemu run --network container:NAME` makes (a file shares within its lab: `container:NODE`)."""

from __future__ import annotations

from netemu.errors import InputError
from netemu.runtime import state
from netemu.topology.model import OTHER_LAB


def other_lab_netns(network: str) -> tuple[str, int | None]:
    """`lab:LAB/NODE`: netemu-init's --net for the namespace of NODE of another running lab
    (the machine's when NODE uses it), and whose it is. Read from that lab's record when this
    host starts: a node that stopped or was replaced since is refused, never guessed at."""
    lab, _, node = network.removeprefix(OTHER_LAB).partition("/")
    owner = state.load(lab).nodes.get(node)
    if owner is None or not owner.alive:
        raise InputError(f"container:{node}: lab '{lab}' has no running node '{node}' (netemu ps lists the labs)")
    if owner.netns_pid is None:
        return "host", None
    return f"/proc/{owner.netns_pid}/ns/net", owner.netns_pid
