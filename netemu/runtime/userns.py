"""Id ranges for hosts with `userns: true`.

Each such host gets 65536 uids and gids of its own on the machine, /etc/subuid style: slot N is
FIRST_ID + N * 65536 (0x10000000 up, far above the ranges /etc/subuid hands to users, which are
skipped anyway). Root inside the host is the range's first id outside. netemu-init maps the
range (`--userns BASE:COUNT`); this module only picks it and prepares the writable layer.

The slots a lab holds are recorded in its state directory (/run/netemu/LAB/userns.json), read
and written under the lock of the run directory, so concurrent `up`s never share a slot. `down`
and `clean` remove the state directory, which frees the slots with nothing else to undo. A
node keeps its slot while its lab exists: files its root wrote in the writable layer belong to
that range, and `netemu node ... start` gives the same range back."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from netemu.errors import MachineError
from netemu.linux import files
from netemu.runtime import paths, state

FIRST_ID = 0x10000000
COUNT = 65536
# The last slot ends below 2**32 - 1, the id the kernel reserves as "no id".
SLOTS = (2**32 - 1 - FIRST_ID) // COUNT
FILE = "userns.json"
SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))


@dataclass(frozen=True)
class IdRange:
    """Ids base..base+count-1 on the machine: 0..count-1 inside the host."""

    base: int
    count: int = COUNT

    def arg(self) -> str:
        """netemu-init's --userns value."""
        return f"{self.base}:{self.count}"

    def __contains__(self, outside_id: int) -> bool:
        return self.base <= outside_id < self.base + self.count

    def outside(self, inside_id: int) -> int:
        """The machine's id for `inside_id` (ids beyond the range become the host's root)."""
        return self.base + (inside_id if 0 <= inside_id < self.count else 0)


def claim(lab: str, node: str) -> IdRange:
    """The id range of `node`: the one it holds, or a free slot recorded for it now."""
    with _run_dir_locked():
        mine = _slots(lab)
        if node not in mine:
            mine[node] = _free_slot()
            _write_slots(lab, mine)
        return _range(mine[node])


def own_layer(upper: Path, ids: IdRange) -> None:
    """Give the writable layer to the host's root: netemu made it and wrote /etc files into it as
    the machine's root, which the host could neither change nor see as its own. Entries already
    in the range (what the host wrote on an earlier start) are left alone."""
    _own(upper, ids)
    for directory, dirnames, filenames in os.walk(upper):
        for name in dirnames + filenames:
            _own(Path(directory, name), ids)


def _own(path: Path, ids: IdRange) -> None:
    st = path.lstat()
    if st.st_uid not in ids or st.st_gid not in ids:
        uid = st.st_uid if st.st_uid in ids else ids.outside(st.st_uid)
        gid = st.st_gid if st.st_gid in ids else ids.outside(st.st_gid)
        os.lchown(path, uid, gid)


def _range(slot: int) -> IdRange:
    return IdRange(FIRST_ID + slot * COUNT)


def _free_slot() -> int:
    taken = {slot for lab in state.lab_names() for slot in _slots(lab).values()}
    reserved = _subid_ranges()
    for slot in range(SLOTS):
        ids = _range(slot)
        if slot not in taken and not any(ids.base < end and start < ids.base + ids.count
                                          for start, end in reserved):
            return slot
    raise MachineError(f"no free user namespace id range: {SLOTS} hosts with `userns: true` run already")


def _subid_ranges() -> list[tuple[int, int]]:
    """[start, end) of every range /etc/subuid and /etc/subgid hand out."""
    ranges = []
    for path in SUBID_FILES:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                ranges.append((int(fields[1]), int(fields[1]) + int(fields[2])))
    return ranges


def _slots(lab: str) -> dict[str, int]:
    try:
        return dict(json.loads((paths.state_dir(lab) / FILE).read_text()))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return {}


def _write_slots(lab: str, slots: dict[str, int]) -> None:
    target = paths.state_dir(lab) / FILE
    files.write_file(target, json.dumps(slots, sort_keys=True).encode(), tmp=target.with_name(f".{FILE}.{os.getpid()}"))


@contextmanager
def _run_dir_locked() -> Iterator[None]:
    """The machine-wide lock that netemu's ledgers share (flock on the run directory)."""
    fd = os.open(paths.run_dir(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
