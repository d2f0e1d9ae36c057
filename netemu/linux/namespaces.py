"""Linux namespaces: setns(2) through ctypes (os.setns needs Python 3.12), and the
`ip netns` names that make a host's network namespace visible to `ip netns exec`."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NETNS_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(pid: int, kinds: tuple[str, ...] = ("net",)) -> Iterator[None]:
    """Run the body inside some namespaces of process `pid` (this thread only), then come back.

    Sockets opened inside stay bound to the host's namespace after we leave, which is how one
    netlink socket per host is made without a helper process."""
    own = {kind: os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in kinds}
    try:
        theirs = {kind: os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in kinds}
    except OSError:
        for fd in own.values():
            os.close(fd)
        raise
    try:
        for fd in theirs.values():
            setns(fd)
        yield
    finally:
        for fd in own.values():
            setns(fd)
            os.close(fd)
        for fd in theirs.values():
            os.close(fd)


def same_namespace(pid_a: int | str, pid_b: int | str, kind: str) -> bool:
    return os.stat(f"/proc/{pid_a}/ns/{kind}").st_ino == os.stat(f"/proc/{pid_b}/ns/{kind}").st_ino


def name_netns(name: str, pid: int) -> Path:
    """Make `ip netns exec NAME` reach the network namespace of `pid`.

    A symlink and not a bind mount: it adds nothing to the machine's mount table and does not
    keep the namespace alive after the host's PID 1 dies."""
    link = NETNS_DIR / name
    target = f"/proc/{pid}/ns/net"
    try:
        os.symlink(target, link)  # one file operation: /run may be on a journaled disk
    except FileExistsError:  # a stale name of a dead host: replace it
        link.unlink()
        os.symlink(target, link)
    except FileNotFoundError:
        NETNS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)  # as `ip netns` makes it, whatever the umask
        os.symlink(target, link)
    return link


def netns_names(prefix: str) -> list[str]:
    """netemu's names that start with `prefix`: netemu names a namespace with a symlink (see
    name_netns), and `ip netns add` with a bind mount, so a user's namespace is never one of them."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix) and p.is_symlink())


def unname_netns(name: str) -> None:
    (NETNS_DIR / name).unlink(missing_ok=True)
