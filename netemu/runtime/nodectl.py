"""Node failure on a running lab: stop a host (its writable layer kept), start it again with its
links rewired, addresses and routes restored, or both (restart)."""

from __future__ import annotations

import contextlib

from netemu.errors import InputError, LabError
from netemu.linux import namespaces, netlink, procs
from netemu.linux.cgroups import Cgroup
from netemu.linux.initbin import init_binary
from netemu.runtime import paths, state
from netemu.runtime.builder import Builder, Progress
from netemu.runtime.records import LabRecord, NodeRecord

# What a node lends, in messages: "node a lends its network to b".
_LENT = {"network": "its network", "ipc": "its IPC namespace", "pid": "its PID namespace"}


def _check_node(record: LabRecord, node: str) -> None:
    if node not in record.nodes:
        raise InputError(f"lab '{record.name}' has no node '{node}' (nodes: {', '.join(record.nodes)})")


def _shares_of(info: NodeRecord) -> list[tuple[str, str]]:
    """(kind, node) for each namespace a node took from another node (`container:<node>`)."""
    modes = (("network", info.extra.network), ("ipc", info.extra.ipc), ("pid", info.extra.pid))
    return [(kind, mode.removeprefix("container:")) for kind, mode in modes if mode.startswith("container:")]


def _check_no_borrowers(record: LabRecord, node: str) -> None:
    """A node may not stop while a running node uses one of its namespaces: the borrower would
    be left on a network namespace that is gone, or killed with the PID namespace (the kernel
    kills every process of a PID namespace whose init exits), and a later start of the lender
    makes new namespaces the borrower is not in. Stopped borrowers join the new ones at their
    own start."""
    lent: dict[str, list[str]] = {}  # borrower: what it took
    for name, info in record.nodes.items():
        kinds = [_LENT[kind] for kind, owner in _shares_of(info) if owner == node]
        if kinds and info.alive:
            lent[name] = kinds
    if lent:
        what = ", ".join(f"{' and '.join(kinds)} to {name}" for name, kinds in lent.items())
        raise InputError(f"node {node} lends {what}: stop those first")


def _check_lenders(record: LabRecord, node: str) -> None:
    """A node starts in the namespaces of the nodes it shares with: they must run (the record's
    PID with its start time, so a PID the kernel gave to another process is not joined)."""
    stopped = sorted({owner for _, owner in _shares_of(record.nodes[node]) if not record.nodes[owner].alive})
    if stopped:
        raise InputError(f"node {node} shares namespaces of {', '.join(stopped)}, not running: start those first")


def stop(lab: str, node: str) -> None:
    """Kill every process of the host; its namespaces and links go with them, its layer stays."""
    with state.locked(lab):
        record = _record(lab)
        _check_node(record, node)
        _check_no_borrowers(record, node)
        info = record.nodes[node]
        group = Cgroup(info.cgroup)
        if info.pid:
            procs.kill_and_wait([info.pid])
        group.kill_all()
        namespaces.unname_netns(paths.netns_name(lab, node))
        own_netns = info.netns_pid == info.pid
        if own_netns:
            _cut_links(record, node)
        info.pid, info.start_time, info.stopped = None, None, True
        if own_netns:
            info.netns_pid = None
        state.write(lab, record)


def _cut_links(record: LabRecord, node: str) -> None:
    """Delete the other ends of the stopped node's links now. The kernel deletes them with the
    node's network namespace, but later, from a work queue: a `start` right after would find
    their names still taken (File exists)."""
    mine = f"{node}:"
    machine_ends: list[str] = []
    peer_ends: dict[int, list[str]] = {}
    for entry in record.links:
        if not any(end.startswith(mine) for end in entry.endpoints):
            continue
        if entry.machine_side:
            machine_ends.append(entry.machine_side)
        for end in entry.endpoints:
            peer, sep, iface = end.partition(":")
            peer_info = record.nodes.get(peer)
            netns_pid = peer_info.netns_pid if peer_info else None
            if sep and peer != node and netns_pid:
                peer_ends.setdefault(netns_pid, []).append(iface)
    _delete_links(None, machine_ends, paths.alias(record.name, ""))
    for pid, names in peer_ends.items():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # that peer is gone too
            _delete_links(pid, names, "")


def _delete_links(pid: int | None, names: list[str], alias_prefix: str) -> None:
    """Delete the named links of a namespace (the machine's: only those with the lab's alias)."""
    if not names:
        return
    with netlink.Socket(pid) as sock, sock.batch() as batch:
        for name, link in sock.links_by_name(names).items():
            if link.alias.startswith(alias_prefix):
                batch.delete_link(link.index, name)


def start(lab: str, node: str, progress: Progress | None = None) -> None:
    with state.locked(lab):
        record = _record(lab)
        _check_node(record, node)
        if record.nodes[node].pid:
            raise InputError(f"node {node} is running (netemu node {lab} {node} restart)")
        _check_lenders(record, node)
        topo = state.load_topology(lab)
        if topo is None:
            raise LabError(f"lab '{lab}' has no saved topology: it was made by an older netemu")
        Builder(topo, init_binary(), record, progress or (lambda _msg: None), only={node}).apply()
        state.write(lab, record)


def restart(lab: str, node: str, progress: Progress | None = None) -> None:
    stop(lab, node)
    start(lab, node, progress)


def _record(lab: str) -> LabRecord:
    record = state.read(lab)
    if record is None:
        raise InputError(f"no lab named '{lab}'")
    return record
