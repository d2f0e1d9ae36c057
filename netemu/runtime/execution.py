"""Running a program inside a host: all its namespaces and its cgroup (netemu-init exec)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

from netemu.errors import LabError
from netemu.linux import initargs, procs
from netemu.linux.cgroups import Cgroup
from netemu.linux.initbin import init_binary
from netemu.runtime import confinement
from netemu.runtime.nodes import DEFAULT_PATH
from netemu.runtime.records import LabRecord

TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for a command past its timeout


def helper_argv(record: LabRecord, node: str, argv: list[str], env: dict[str, str] | None = None,
                cwd: str | None = None, tty: bool = False) -> list[str]:
    info = record.nodes.get(node)
    if info is None:
        raise LabError(f"lab '{record.name}' has no node '{node}' (nodes: {', '.join(record.nodes)})")
    pid = info.pid
    if pid is None or not (procs.alive(pid) and procs.start_time(pid) == info.start_time):
        raise LabError(f"node '{node}' of lab '{record.name}' is not running")
    full_env = {"PATH": DEFAULT_PATH, "HOME": "/root", "TERM": os.environ.get("TERM", "xterm"),
                "HOSTNAME": info.extra.hostname or node}
    full_env.update(info.extra.env)  # the node's `env`, as for its cmd
    full_env.update(env or {})
    # --start-time: netemu-init refuses the pid if it now names another process (a host that
    # sees others' processes, `pid: host`, could kill a PID 1 and race to take its number).
    return initargs.Exec(
        pid=pid, command=argv, cgroups=[str(f) for f in Cgroup(info.cgroup).procs_files()], env=full_env,
        cwd=cwd or None, tty=tty, start_time=str(info.start_time) if info.start_time is not None else None,
        **confinement.from_record(info.extra.confinement),
    ).argv(init_binary())


def run(record: LabRecord, node: str, argv: list[str], env: dict[str, str] | None = None,
        timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run to completion and capture the output (for the API, `exec:` steps and command checks).
    At the timeout the command gets SIGTERM, which netemu-init passes on inside the host, and
    SIGKILL only after a grace: killing the helper alone would leave the command running there
    (a command check retried every half second would pile them up)."""
    args = helper_argv(record, node, argv, env)
    with subprocess.Popen(args, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={}) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.communicate(timeout=TERM_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def replace_process(record: LabRecord, node: str, argv: list[str], env: dict[str, str] | None = None,
                    tty: bool = False) -> NoReturn:
    """For `netemu exec`: stdio passes straight through and the exit status is the command's.
    With `tty`, netemu-init makes a pseudo-terminal inside the host and relays it, as
    `docker exec -t` does."""
    args = helper_argv(record, node, argv, env, tty=tty)
    os.execve(args[0], args, {})  # the command's environment is --env; the caller's stays out


def run_attached(record: LabRecord, node: str, argv: list[str], env: dict[str, str] | None = None,
                 tty: bool = False, stdin: bool = True, cwd: str | None = None) -> int:
    """For `netemu run`: the command in the foreground, on the caller's terminal (a
    pseudo-terminal inside the host with `tty`), and its exit status, 128+N for signal N as
    Docker reports it. Unlike replace_process, netemu is still there afterwards to stop or
    remove the host. SIGTERM and SIGHUP sent to netemu are passed on to the command; Ctrl-C
    reaches the command from the terminal, so netemu itself ignores it while it waits."""
    args = helper_argv(record, node, argv, env, cwd=cwd, tty=tty)
    child = subprocess.Popen(args, env={}, stdin=None if stdin else subprocess.DEVNULL)

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGINT, signal.SIG_IGN), (signal.SIGTERM, forward), (signal.SIGHUP, forward))}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


@contextlib.contextmanager
def shielded() -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP held off while the body runs (netemu run --rm removing its
    lab: a second signal, a terminal closing after Ctrl-C, would otherwise leave it half
    removed); the signals that came are listed, and the first is raised again afterwards."""
    came: list[int] = []
    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, _frame: came.append(signum)) for sig in watched}
    try:
        yield came
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if came:
        signal.raise_signal(came[0])
