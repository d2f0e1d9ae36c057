"""Control groups on cgroup v1, hybrid (v1 controllers plus a v2 tree) and pure v2 machines.

A `Cgroup` is one relative path (e.g. netemu/lab/r1) present in every hierarchy the machine
mounts, so a host's processes are in its group on every controller, as with runc."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from netemu.errors import MachineError

CPU_PERIOD_US = 100_000
# Controllers netemu enables below its own root on a v2 tree, when the machine offers them.
V2_CONTROLLERS = ("cpu", "memory", "pids")
# The v1 hierarchies a host's group is made in: the limits netemu sets and the CPU accounting.
# runc joins every hierarchy, but each is a mkdir under the kernel's global cgroup lock per host
# and per lab, and netemu sets nothing in the others (devices, freezer, blkio, ...). A v2 tree,
# pure or hybrid, is always used: it tracks every process and has cgroup.kill.
# `devices` holds the host's device allow-list (on a hybrid machine, beside the v2 tree's program).
V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "memory", "pids", "devices"})
GROUP_MODE = 0o755  # a group's directory; mkdir's mode, which the umask can only narrow


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: Path
    version: int  # 1 or 2
    controllers: frozenset[str]


@dataclass(frozen=True)
class Layout:
    hierarchies: tuple[Hierarchy, ...]

    @property
    def mode(self) -> str:
        versions = {h.version for h in self.hierarchies}
        if versions == {2}:
            return "v2"
        return "hybrid" if 2 in versions else "v1"

    @property
    def used(self) -> tuple[Hierarchy, ...]:
        """The hierarchies netemu's groups live in (all of them if none qualifies)."""
        has_v2 = any(h.version == 2 for h in self.hierarchies)
        # Without a v2 tree the machine's manager tracks processes in name=systemd: hosts must
        # leave the unit of whoever ran `up`, or stopping that unit would kill them.
        chosen = tuple(h for h in self.hierarchies if h.version == 2 or h.controllers & V1_CONTROLLERS
                       or (not has_v2 and "name=systemd" in h.controllers))
        return chosen or self.hierarchies

    @property
    def tracking(self) -> Hierarchy:
        """Where a group's processes are read from: every host process joins every used
        hierarchy before it runs anything, so one is enough; v2 first (it has cgroup.kill)."""
        return sorted(self.used, key=lambda h: -h.version)[0]

    def for_controller(self, controller: str) -> Hierarchy | None:
        """The hierarchy that enforces `controller`: v1 wins on hybrid machines, where the
        v2 tree usually has no controllers at all."""
        for h in sorted(self.hierarchies, key=lambda h: h.version):
            if controller in h.controllers:
                return h
        return None


@cache
def layout() -> Layout:
    found: list[Hierarchy] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fstype, _source, superopts = tail.split()[:3]
            mountpoint = Path(head.split()[4])
            if fstype == "cgroup2":
                ctrls = (mountpoint / "cgroup.controllers").read_text().split()
                found.append(Hierarchy(mountpoint, 2, frozenset(ctrls)))
            elif fstype == "cgroup":
                opts = set(superopts.split(","))
                names = {o for o in opts if o in _known_v1_controllers()}
                names |= {o for o in opts if o.startswith("name=")}
                found.append(Hierarchy(mountpoint, 1, frozenset(names)))
    unique = {h.mountpoint: h for h in found}  # the same hierarchy may be mounted twice
    if not unique:
        raise MachineError("no cgroup filesystem is mounted (need cgroup v1 or v2 under /sys/fs/cgroup)")
    return Layout(tuple(unique.values()))


@cache
def _known_v1_controllers() -> frozenset[str]:
    with open("/proc/cgroups") as f:
        return frozenset(line.split()[0] for line in f if not line.startswith("#"))


class Cgroup:
    """One group, e.g. Cgroup("netemu/seed/r1"), across all hierarchies."""

    def __init__(self, relpath: str) -> None:
        self.relpath = relpath.strip("/")

    def paths(self) -> list[Path]:
        return [h.mountpoint / self.relpath for h in layout().used]

    def procs_files(self) -> list[Path]:
        return [p / "cgroup.procs" for p in self.paths()]

    def everywhere(self) -> list[Path]:
        """The group's path in every hierarchy: what removal looks at, so groups that an older
        netemu made in all of them are found too."""
        return [h.mountpoint / self.relpath for h in layout().hierarchies]

    def exists(self) -> bool:
        return any(p.is_dir() for p in self.everywhere())

    def create(self) -> None:
        for h in layout().used:
            self._create_in(h)

    def _create_in(self, h: Hierarchy) -> None:
        current = h.mountpoint
        for part in self.relpath.split("/"):
            parent, current = current, current / part
            if h.version == 2:
                _enable_v2_controllers(h, parent)
            # 0755 as the machine's own groups, whatever the umask: under umask 000 a local user
            # could make groups of their own inside a lab's.
            try:
                current.mkdir(GROUP_MODE)
            except FileExistsError:
                continue
            except FileNotFoundError:
                # A concurrent `down` removed an empty parent between our steps: retry once.
                parent.mkdir(GROUP_MODE, exist_ok=True)
                current.mkdir(GROUP_MODE, exist_ok=True)
            if "cpuset" in h.controllers:
                _inherit_cpuset(parent, current)

    def set_limits(self, cpus: float | None, memory: int | None, pids: int | None) -> None:
        if memory is not None:
            self._write_limit("memory", {1: "memory.limit_in_bytes", 2: "memory.max"}, str(memory))
            # No swap: the limit is the whole memory a host may use, as `docker run -m` with
            # --memory-swap equal to it.
            self._write_optional("memory", {1: "memory.memsw.limit_in_bytes", 2: "memory.swap.max"},
                                 {1: str(memory), 2: "0"})
        if pids is not None:
            self._write_limit("pids", {1: "pids.max", 2: "pids.max"}, str(pids))
        if cpus is not None:
            quota = max(1000, int(cpus * CPU_PERIOD_US))
            h = self._hierarchy("cpu")
            if h.version == 1:
                (h.mountpoint / self.relpath / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                (h.mountpoint / self.relpath / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (h.mountpoint / self.relpath / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")

    def _hierarchy(self, controller: str) -> Hierarchy:
        h = layout().for_controller(controller)
        if h is None:
            raise MachineError(f"the cgroup controller '{controller}' is not available on this machine")
        return h

    def _write_limit(self, controller: str, files: dict[int, str], value: str) -> None:
        h = self._hierarchy(controller)
        path = h.mountpoint / self.relpath / files[h.version]
        if not path.exists():
            raise MachineError(f"the cgroup controller '{controller}' is not enabled for {path.parent}")
        path.write_text(value)

    def _write_optional(self, controller: str, files: dict[int, str], values: dict[int, str]) -> None:
        h = self._hierarchy(controller)
        path = h.mountpoint / self.relpath / files[h.version]
        if path.exists():
            # Refused when swap accounting is off at boot: then there is no swap to limit.
            with contextlib.suppress(OSError):
                path.write_text(values[h.version])

    def pids(self, everywhere: bool = False) -> set[int]:
        """Every process in the group or any group below it: read from the tracking hierarchy,
        or with `everywhere` from each (a process killed while joining may be in some only)."""
        hierarchies = layout().hierarchies if everywhere else (layout().tracking,)
        found: set[int] = set()
        for h in hierarchies:
            for directory in _walk_dirs(h.mountpoint / self.relpath):
                try:
                    with open(os.path.join(directory, "cgroup.procs")) as f:
                        found.update(int(x) for x in f.read().split())
                except FileNotFoundError:
                    continue  # removed meanwhile
        return found

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every process of the group until it is empty (forks can race a first pass)."""
        deadline = time.monotonic() + timeout
        self._kill_v2()
        while pids := self.pids(everywhere=True):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise MachineError(f"processes {sorted(pids)} of cgroup {self.relpath} do not die")
            time.sleep(0.005)

    def _kill_v2(self) -> None:
        # cgroup.kill (Linux 5.14) kills the whole subtree in the kernel, forks included.
        for h in layout().hierarchies:
            kill = h.mountpoint / self.relpath / "cgroup.kill"
            if h.version == 2:
                with contextlib.suppress(FileNotFoundError, PermissionError, OSError):
                    kill.write_text("1")

    def remove(self, timeout: float = 10.0) -> None:
        """Remove the group everywhere (children first); dying processes may hold it briefly."""
        for path in self.everywhere():
            _rmtree_cgroup(path, time.monotonic() + timeout)

    def remove_if_empty(self) -> None:
        """Remove the group where it has no children and no processes; leave it otherwise."""
        for path in self.everywhere():
            try:
                path.rmdir()
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                    raise

    def leaf_names(self) -> list[str]:
        """Names of the groups right below this one, in any hierarchy (also the ones a netemu
        that made groups everywhere left behind)."""
        names: set[str] = set()
        for h in layout().hierarchies:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError), \
                    os.scandir(h.mountpoint / self.relpath) as entries:
                names.update(e.name for e in entries if e.is_dir(follow_symlinks=False))
        return sorted(names)


def _walk_dirs(top: Path) -> list[str]:
    """`top` and every directory below it, parents first. scandir's d_type spares the stat(2)
    of each of the dozens of control files in every group."""
    found: list[str] = []
    pending = [str(top)]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            continue
        found.append(directory)
    return found


def _rmtree_cgroup(path: Path, deadline: float) -> None:
    for directory in reversed(_walk_dirs(path)):  # children before their parents
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)


def _inherit_cpuset(parent: Path, child: Path) -> None:
    # A v1 cpuset group starts empty and refuses processes until it has CPUs and memory nodes.
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not (child / name).read_text().strip():
            (child / name).write_text((parent / name).read_text().strip())


def _enable_v2_controllers(h: Hierarchy, parent: Path) -> None:
    available = set((parent / "cgroup.controllers").read_text().split())
    enabled = set((parent / "cgroup.subtree_control").read_text().split())
    wanted = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
    # The root's subtree_control belongs to the machine's manager: use what it enabled.
    if wanted and parent != h.mountpoint:
        (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
