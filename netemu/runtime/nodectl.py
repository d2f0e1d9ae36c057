"""Node failure on a running lab: stop a host (its writable layer kept), start it again with its
links rewired, addresses and routes restored, or both (restart)."""

from __future__ import annotations

from netemu.errors import InputError, LabError
from netemu.linux import namespaces, procs
from netemu.linux.cgroups import Cgroup
from netemu.linux.initbin import init_binary
from netemu.runtime import paths, state
from netemu.runtime.builder import Builder, Progress


def _check_node(record: dict, node: str) -> None:
    if node not in record["nodes"]:
        raise InputError(f"lab '{record['name']}' has no node '{node}' (nodes: {', '.join(record['nodes'])})")
    sharing = [n for n, info in record["nodes"].items()
               if info.get("extra", {}).get("network") == f"container:{node}"]
    if sharing:
        raise InputError(f"node {node} lends its network to {', '.join(sharing)}: stop those first")


def stop(lab: str, node: str) -> None:
    """Kill every process of the host; its namespaces and links go with them, its layer stays."""
    with state.locked(lab):
        record = _record(lab)
        _check_node(record, node)
        info = record["nodes"][node]
        group = Cgroup(info["cgroup"])
        if info.get("pid"):
            procs.kill_and_wait([info["pid"]])
        group.kill_all()
        namespaces.unname_netns(paths.netns_name(lab, node))
        own_netns = info.get("netns_pid") == info.get("pid")
        info.update(pid=None, start_time=None, stopped=True,
                    netns_pid=None if own_netns else info.get("netns_pid"))
        state.write(lab, record)


def start(lab: str, node: str, progress: Progress | None = None) -> None:
    with state.locked(lab):
        record = _record(lab)
        _check_node(record, node)
        if record["nodes"][node].get("pid"):
            raise InputError(f"node {node} is running (netemu node {lab} {node} restart)")
        topo = state.load_topology(lab)
        if topo is None:
            raise LabError(f"lab '{lab}' has no saved topology: it was made by an older netemu")
        Builder(topo, init_binary(), record, progress or (lambda _msg: None), only={node}).apply()
        state.write(lab, record)


def restart(lab: str, node: str, progress: Progress | None = None) -> None:
    stop(lab, node)
    start(lab, node, progress)


def _record(lab: str) -> dict:
    record = state.read(lab)
    if record is None:
        raise InputError(f"no lab named '{lab}'")
    return record
