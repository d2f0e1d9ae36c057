"""Mounts in the machine's mount namespace: the one tmpfs per lab that holds its hosts'
writable layers, found again from /proc/self/mountinfo by `down` and `clean`."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from netemu.linux import files

MS_NOSUID = 0x2
MS_NODEV = 0x4
MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount_tmpfs(target: Path, options: str = "mode=0700") -> None:
    """A tmpfs on `target` (created 0700 if missing), unless one is mounted there already. Its
    root is 0700 (the default `options`): netemu-init reaches the layers as the machine's root,
    and no local user may."""
    files.private_dir(target)
    if is_mountpoint(target):
        return
    _check(_libc.mount(b"netemu", os.fsencode(target), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()),
           f"mount tmpfs on {target}")


def unmount(target: Path) -> bool:
    """Detach every mount stacked on `target`; True when there was one. Hosts still holding
    files there keep them until they die (a lazy unmount, as `umount -l`)."""
    found = False
    target = Path(os.path.realpath(target))
    while is_mountpoint(target):
        result = _libc.umount2(os.fsencode(target), MNT_DETACH)
        if result != 0 and ctypes.get_errno() == errno.EINVAL:
            break  # not a mount point after all (a race with another unmount)
        _check(result, f"unmount {target}")
        found = True
    return found


def mountpoints(under: Path) -> list[Path]:
    """Mount points at or below `under` in this process's mount namespace."""
    prefix = str(under).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return found


def is_mountpoint(path: Path) -> bool:
    # mountinfo shows resolved paths: a symlink on the way (a linked /var/lib) must not hide it.
    real = Path(os.path.realpath(path))
    return real in mountpoints(real)


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
