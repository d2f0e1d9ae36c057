"""The per-lab state file: written atomically (temporary file + rename), guarded by a lock.

The lock is flock(2) on the lab's state directory: the kernel drops it when its holder dies,
so a lab whose `up` was killed is told apart from one being created right now. A lab's directory
appears under its name already locked (see reserve), so one that nobody holds is never an `up`
that has only just begun."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netemu.errors import LabExists, LabNotFound, MachineError
from netemu.linux import files, procs
from netemu.runtime import paths
from netemu.runtime.records import LabRecord
from netemu.topology import serialize
from netemu.topology.model import Topology

STATE_FILE = "state.json"
TOPOLOGY_FILE = "topology.json"
RESERVING = ".reserving"  # suffix of a directory being claimed: .LAB.PID.reserving


class LabBusy(MachineError):
    """Another netemu process holds the lab's lock."""


def _open_dir(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@contextmanager
def reserve(lab: str) -> Iterator[Path]:
    """Claim a new lab name: fails cleanly when a lab of that name exists. The directory is made
    and locked under a temporary name, then renamed to the lab's without replacing anything."""
    paths.run_dir()
    directory = paths.state_dir(lab)
    remove_stale_reservations(lab)
    temporary = paths.RUN_DIR / f".{lab}.{os.getpid()}{RESERVING}"
    files.private_dir(temporary, paths.PRIVATE_DIR, exist_ok=False)
    fd = _open_dir(temporary)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            files.rename_noreplace(temporary, directory)
        except FileExistsError:
            raise LabExists(f"a lab named '{lab}' already exists (netemu down {lab} removes it)") from None
        yield directory
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            temporary.rmdir()  # not renamed: the name was taken


def remove_stale_reservations(lab: str) -> None:
    """What a process killed while claiming the name left (its pid is in the name)."""
    for path in paths.RUN_DIR.glob(f".{lab}.*{RESERVING}"):
        pid = path.name[len(lab) + 2:-len(RESERVING)]
        if pid.isdigit() and not procs.alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                path.rmdir()


@contextmanager
def locked(lab: str, timeout: float = 60.0) -> Iterator[Path]:
    """Hold the lab's lock (waiting for a running `up` or `down` to finish)."""
    directory = paths.state_dir(lab)
    try:
        fd = _open_dir(directory)
    except FileNotFoundError:
        raise LabNotFound(f"no lab named '{lab}'") from None
    try:
        files.tighten(directory, paths.PRIVATE_DIR)  # a lab made by an older netemu
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno != errno.EWOULDBLOCK:
                    raise
                if time.monotonic() > deadline:
                    raise LabBusy(f"lab '{lab}' is locked by another netemu process") from None
                time.sleep(0.05)
        yield directory
    finally:
        os.close(fd)


def is_busy(lab: str) -> bool:
    """True while another live process holds the lab's lock."""
    try:
        fd = _open_dir(paths.state_dir(lab))
    except FileNotFoundError:
        return False
    return files.lock_held(fd)


def write(lab: str, record: LabRecord) -> None:
    directory = paths.state_dir(lab)
    # Compact: json's C encoder runs only without indent (a 1000-host record in 6 ms, not 20).
    files.write_file(directory / STATE_FILE, json.dumps(record.to_json(), separators=(",", ":")).encode(),
                     tmp=directory / f".{STATE_FILE}.{os.getpid()}", sync=True)


def read(lab: str) -> LabRecord | None:
    """The lab's record; None when it has none yet (or an unreadable one: it cannot happen with
    atomic writes, unless the disk lied). A record of a newer version raises RecordError."""
    path = paths.state_dir(lab) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return LabRecord.from_json(data, source=str(path))


def load(lab: str) -> LabRecord:
    """The record of an existing lab; LabNotFound (exit 2) names `netemu ps` when there is none."""
    record = read(lab)
    if record is None:
        raise LabNotFound(f"no lab named '{lab}' (netemu ps lists the labs)")
    return record


def save_topology(lab: str, topo: Topology) -> None:
    """The lab's settled topology (pools applied), for operations on a running lab (link up
    restores routes, node start rewires links): versioned JSON (topology.serialize)."""
    directory = paths.state_dir(lab)
    data = json.dumps(serialize.topology_to_dict(topo), separators=(",", ":")).encode()
    files.write_file(directory / TOPOLOGY_FILE, data, tmp=directory / f".{TOPOLOGY_FILE}.{os.getpid()}")


def load_topology(lab: str) -> Topology | None:
    """None for a lab without one (made by an older netemu, which pickled it); a newer version
    of the format raises serialize.TopologyFormatError."""
    path = paths.state_dir(lab) / TOPOLOGY_FILE
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return serialize.topology_from_dict(data, source=str(path))


@contextmanager
def ledger(filename: str, empty: Callable[[], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A machine-wide JSON ledger under the run directory, read and rewritten under one lock
    shared by every netemu process; removed when it holds nothing (all values empty)."""
    path = paths.RUN_DIR / filename
    fd = _open_dir(paths.run_dir())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A temporary file seen while holding the lock is what a writer killed mid-write left.
        path.with_suffix(".tmp").unlink(missing_ok=True)
        data = json.loads(path.read_text()) if path.exists() else empty()
        yield data
        save_ledger(filename, data)
    finally:
        os.close(fd)


def save_ledger(filename: str, data: dict[str, Any]) -> None:
    """Write a ledger atomically; inside `ledger()` (which holds its lock) this records a change
    before it is made to the machine, so a crash right after it leaves a record to undo it."""
    path = paths.RUN_DIR / filename
    if any(data.values()):
        files.write_file(path, json.dumps(data, indent=1, sort_keys=True).encode(), tmp=path.with_suffix(".tmp"))
    else:
        path.unlink(missing_ok=True)


def lab_names() -> list[str]:
    if not paths.RUN_DIR.is_dir():
        return []
    # Only names `up` can give: a stray directory there is no lab (and may be no path component).
    return sorted(p.name for p in paths.RUN_DIR.iterdir() if p.is_dir() and paths.is_lab_name(p.name))


def remove(lab: str) -> None:
    directory = paths.state_dir(lab)
    if not directory.exists():
        return
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()
