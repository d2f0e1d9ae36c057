"""Directories and files that netemu keeps on the machine, made with the mode asked for whatever
the process's umask.

mkdir(2) and open(2) take a mode but the umask filters it, and `umask 000` (or a library
caller's odd umask) would leave state and layers open to every local user; so each is made and
then chmod-ed to exactly its mode. A directory an older netemu left looser is tightened when
it is next used."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from netemu.errors import MachineError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
PUBLIC_DIR = 0o755  # a missing ancestor of netemu's own directories (as mkdir -p under umask 022)


def private_dir(path: Path, mode: int = PRIVATE_DIR, *, exist_ok: bool = True) -> Path:
    """Directory `path` with exactly `mode`: made if missing (its missing ancestors 0755), its mode
    set if it exists. FileExistsError when it exists and `exist_ok` is false."""
    path = Path(path)
    _make_ancestors(path.parent)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not exist_ok:
            raise
    tighten(path, mode)
    return path


def tighten(path: Path, mode: int) -> None:
    """Give a directory of ours exactly `mode`; one not owned by this user is refused: whoever
    owns it could have put anything inside."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise MachineError(f"{path} is not a directory: remove it")
    if st.st_uid != os.geteuid():
        raise MachineError(f"{path} belongs to uid {st.st_uid}, not to netemu's user: remove it")
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def _make_ancestors(directory: Path) -> None:
    if directory.is_dir():
        return
    _make_ancestors(directory.parent)
    try:
        os.mkdir(directory, PUBLIC_DIR)
        os.chmod(directory, PUBLIC_DIR)  # umask 000 would leave it world-writable: anyone could swap ours
    except FileExistsError:
        pass  # a concurrent netemu made it


def write_file(target: Path, data: bytes, *, mode: int = PRIVATE_FILE, tmp: Path | None = None,
               sync: bool = False) -> None:
    """Write `data` to `target` with exactly `mode`. With `tmp` (a name no concurrent writer uses)
    the data goes there first and is renamed over `target`: a reader sees the old file or the
    new one, never half of one."""
    tmp = tmp or target
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask filtered open's mode; a stale tmp kept its own
        with open(fd, "wb", closefd=False) as out:
            out.write(data)
            out.flush()
            if sync:
                os.fsync(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    if tmp != target:
        os.replace(tmp, target)


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename `source` to `target`, or FileExistsError if `target` exists: rename(2) would
    silently replace an empty directory. renameat2(RENAME_NOREPLACE) since Linux 3.15 (tmpfs 3.17)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_noreplace_flag = -100, 1
    if libc.renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_noreplace_flag) == 0:
        return
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), str(target))
    raise OSError(code, os.strerror(code), str(source))


def lock_held(fd: int, exclusive: bool = False) -> bool:
    """Whether another open file holds a lock on `fd`'s file that ours (shared or exclusive)
    cannot get now; closes `fd`. A lock dies with its process, so this tells a live holder
    from one that was killed."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
