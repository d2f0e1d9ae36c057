"""Turning a validated topology into a running lab, and back.

`up` is apply-with-rollback: the lab's name is reserved first, every object is named after the
lab (see paths.py), and any failure, or an interrupt, removes whatever exists by that name
(cleanup.remove_lab) before the error goes on. State is written a few times ("creating" with
the planned names first, the full record at the end), never once per object.

A rollback that meets an error itself is tried once more; if it still fails, the lab stays
`failed` (its state names what is left) for `down` to finish. A `failed` lab, one whose `up` or
`down` never finished, is never in use: the next `up` of its name removes it first."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from netemu.errors import InputError, LabError, LabNotFound, MachineError
from netemu.linux.initbin import init_binary
from netemu.linux.privilege import require_root
from netemu.runtime import cleanup, firewall, hostsettings, paths, plan, state, uplinks
from netemu.runtime.builder import Builder
from netemu.runtime.inspection import lab_status
from netemu.runtime.records import LabRecord
from netemu.topology.model import Topology

Progress = Callable[[str], None]
UNFINISHED = ("creating", "removing", "failed")  # record statuses of a lab whose up or down did not end
ROLLBACK_TRIES = 2  # a step that fails once (a link going away with its namespace) gets a second go


def require_kernel() -> None:
    with open("/proc/filesystems") as f:
        filesystems = f.read().split()
    if "overlay" not in filesystems:
        raise MachineError("the kernel has no overlay filesystem: load the module with `modprobe overlay`")


def _unsupported(topo: Topology) -> None:
    """Combinations that cannot be built (a link on a host that uses the machine's network):
    refused before anything is created, naming the file and line."""
    for link in topo.links:
        for ep, _ in link.host_endpoints():
            if topo.nodes[ep.node].network == "host":
                raise InputError(f"{topo.where(link.line)}: links: node {ep.node} uses the machine's "
                                 "network (network: host) and cannot have links")


def up(topo: Topology, progress: Progress | None = None) -> LabRecord:
    require_root()
    require_kernel()
    _unsupported(topo)
    firewall.check_ports_free(topo)  # before the name is reserved: a refused `up` leaves no trace
    uplinks.check_machine_networks(topo)
    init = init_binary()
    paths.private_lib_dirs()
    say = progress or (lambda _msg: None)
    _remove_failed(topo.name, say)
    with state.reserve(topo.name):
        record = _initial_record(topo)
        state.write(topo.name, record)
        try:
            topo = plan.expand(topo)
            record.planned_links = _planned_links(topo)  # now with the default bridge's
            state.write(topo.name, record)
            state.save_topology(topo.name, topo)
            Builder(topo, init, record, say).apply()
        except BaseException as error:
            say("failed: removing what was created")
            _roll_back(topo.name, record, error)
            raise
        record.status = "running"
        state.write(topo.name, record)
    return record


def _remove_failed(name: str, say: Progress) -> None:
    """Remove a `failed` lab of this name, as `down` would, so that it cannot block the name: its
    `up` or `down` never finished, so nobody uses it. A lab that came up (running, degraded or
    dead) is left alone, and `reserve` then refuses the name."""
    if not paths.state_dir(name).exists():
        return
    try:
        with state.locked(name, timeout=0):
            record = state.read(name)  # none: killed before its first write
            if record is not None and record.status not in UNFINISHED:
                return
            say(f"removing the failed lab '{name}' first")
            cleanup.remove_lab(name)
    except (LabNotFound, state.LabBusy):
        return  # gone meanwhile, or in the hands of a running up or down: reserve decides


def _roll_back(name: str, record: LabRecord, error: BaseException) -> None:
    """Remove what the failed `up` made. If that meets errors twice, leave the lab `failed`
    with the reason, and say on `error` what is left and that `down` removes it."""
    left = ""
    for _ in range(ROLLBACK_TRIES):
        try:
            cleanup.remove_lab(name)
            return
        except cleanup.RemovalIncomplete as e:
            left = "; ".join(e.failures)
        except Exception as e:  # the rollback's own failure must not hide why `up` failed
            left = str(e) or type(e).__name__
    record.status, record.error, record.rollback_error = "failed", str(error) or type(error).__name__, left
    with contextlib.suppress(OSError):
        state.write(name, record)
    error.add_note(f"the rollback did not finish ({left}): `netemu down {name}` removes what is left")


def _planned_links(topo: Topology) -> list[str]:
    """Names of the links `up` will make in the machine's namespace, recorded before any exists:
    the kernel tags a link only after creating it, so a crash in between leaves a link that only
    this list names."""
    names = [paths.bridge_name(topo.name, n.name) for n in topo.networks.values()
             if n.driver == "bridge" and n.bridge is None]  # never the machine's own bridge
    for link in topo.links:
        nets = [topo.networks[ep.network] for ep in link.endpoints if ep.network]
        if nets and nets[0].driver == "bridge":
            names += [paths.host_veth_name(topo.name, ep.node, ep.iface) for ep, _ in link.host_endpoints()]
    return names


def _initial_record(topo: Topology) -> LabRecord:
    return LabRecord(name=topo.name, status="creating", file=str(topo.path.resolve()) if topo.path else None,
                     created=time.time(), owner_pid=os.getpid(), planned_links=_planned_links(topo))


# down, listing, inspection -------------------------------------------------------------------
def down(name: str) -> cleanup.Removed:
    """Remove lab `name`; idempotent: with nothing left to remove it removes nothing."""
    require_root()
    if paths.state_dir(name).exists():
        try:
            with state.locked(name):
                _mark_removing(name)
                return cleanup.remove_lab(name)
        except LabNotFound:
            pass  # a concurrent down won the race
    return cleanup.remove_lab(name)  # no state: the leftovers of a crash, found by name


def _mark_removing(name: str) -> None:
    """A `down` killed half-way leaves a lab on its way out, not a degraded one: `clean` finishes it."""
    record = state.read(name)
    if record is not None and record.status != "removing":
        record.status = "removing"
        state.write(name, record)




def clean() -> dict[str, cleanup.Removed]:
    """Remove every netemu object that no live lab accounts for."""
    require_root()
    live = set()
    for name in state.lab_names():
        record = state.read(name)
        if state.is_busy(name) or (record and lab_status(record) in ("running", "degraded")):
            live.add(name)
    removed = {}
    incomplete: dict[str, str] = {}
    for name in sorted(cleanup.owned_lab_names() - live):
        try:
            removed[name] = cleanup.remove_lab(name)
        except cleanup.RemovalIncomplete as e:  # the other labs are still removed
            incomplete[name] = str(e)
    hostsettings.release("", live_labs=live | set(incomplete))  # what is left keeps its claims
    if incomplete:
        raise LabError("; ".join(incomplete.values()))
    return removed
