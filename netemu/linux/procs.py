"""Processes: liveness (of a pid, and of a pid with the start time it had) and waiting for exit
without being the parent (pidfd)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Mapping
from typing import Any


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks after boot): with the pid it names one
    process for ever, so a recycled pid is never mistaken for a host."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return _start_field(f.read())
    except FileNotFoundError:
        return None


def _start_field(stat: str) -> int | None:
    """Field 22 of a /proc/PID/stat line (counted after the command's name, which may hold spaces)."""
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def open_namespace(pid: int, started: int | None, kind: str) -> int | None:
    """A descriptor of PID's namespace `kind` (net, ipc, pid), if PID is still the process
    started at `started`. The start time is read through the same /proc/PID descriptor after the
    namespace: lookups through it fail once that process exits, even when its PID has gone to
    another, so the namespace is that process's."""
    try:
        directory = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = os.open(f"ns/{kind}", os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory)
        with open(os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory)) as stat:
            now = _start_field(stat.read())
    except OSError:
        return None
    finally:
        os.close(directory)
    if started is None or now != started:
        os.close(fd)
        return None
    return fd


def is_running(pid: int | None, started: int | None) -> bool:
    """Whether `pid` still runs and is the process that had start time `started`: a pid alone
    may have been given to another process since it was recorded."""
    if not pid:
        return False
    return alive(pid) and start_time(pid) == started


def node_alive(info: Mapping[str, Any]) -> bool:
    """Whether a lab record's host entry (its "pid" and "start_time") names a running process."""
    return is_running(info.get("pid"), info.get("start_time"))


def kill_and_wait(pids: list[int], timeout: float = 10.0) -> None:
    """SIGKILL each process and wait for all of them to be gone."""
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            continue
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fds[-1], signal.SIGKILL)
    try:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        pending = len(fds)
        while pending:
            events = poller.poll(int(timeout * 1000))
            if not events:
                break
            for fd, _ in events:
                poller.unregister(fd)
                pending -= 1
    finally:
        for fd in fds:
            os.close(fd)


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group; one already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
