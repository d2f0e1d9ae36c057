"""Running a program inside a host: all its namespaces and its cgroup (netemu-init exec)."""

from __future__ import annotations

import os
import subprocess
from typing import NoReturn

from netemu.errors import LabError
from netemu.linux import initargs, procs
from netemu.linux.cgroups import Cgroup
from netemu.linux.initbin import init_binary
from netemu.runtime import confinement
from netemu.runtime.nodes import DEFAULT_PATH
from netemu.runtime.records import LabRecord


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
    return initargs.Exec(
        pid=pid, command=argv, cgroups=[str(f) for f in Cgroup(info.cgroup).procs_files()], env=full_env,
        cwd=cwd or None, tty=tty, **confinement.from_record(info.extra.confinement),
    ).argv(init_binary())


def run(record: LabRecord, node: str, argv: list[str], env: dict[str, str] | None = None,
        timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run to completion and capture the output (for the API and `exec:` commands)."""
    return subprocess.run(helper_argv(record, node, argv, env), capture_output=True, text=True, env={},
                          timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)


def replace_process(record: LabRecord, node: str, argv: list[str], env: dict[str, str] | None = None,
                    tty: bool = False) -> NoReturn:
    """For `netemu exec`: stdio passes straight through and the exit status is the command's.
    With `tty`, netemu-init makes a pseudo-terminal inside the host and relays it, as
    `docker exec -t` does."""
    args = helper_argv(record, node, argv, env, tty=tty)
    os.execve(args[0], args, {})  # the command's environment is --env; the caller's stays out
