"""`netemu run`: `docker run` lines with `netemu` in place of `docker`, on an image
named `busybox` that the test's own registry on 127.0.0.1 serves as docker.io/library/busybox
(built from the static busybox; see test_registry.py). Interactive runs are driven through a
real pseudo-terminal, as a user types them."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import kernel_snapshot
from tests.conftest import NETEMU, ROOT, run_cli, unique_name
from tests.integration.test_registry import base, conf, layout, local, start_registry, tools  # noqa: F401

BUSYBOX = "docker.io/library/busybox:latest"


@pytest.fixture
def busybox(tmp_path: Path, start_registry, conf, base) -> Iterator[str]:  # noqa: F811
    """`busybox` resolvable: pulled from the test's registry into the machine's store, removed
    after the test, unless the store had an image of that name already (then it is used as is)."""
    had = run_cli("image", "ls", "--format", "json").stdout
    registry = start_registry()
    registry.push(layout(tmp_path / "bb", [base]), "library/busybox")
    conf(local(registry))
    yield "busybox"
    if f'"{BUSYBOX}"' not in had:
        run_cli("image", "rm", BUSYBOX)


def in_terminal(args: list[str], keys: bytes, prompt: bytes = b"# ", timeout: float = 90) -> tuple[int, str]:
    """Run netemu ARGS on a new pseudo-terminal; type `keys` once `prompt` shows; the exit code
    and everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: netemu on the terminal, as a shell would start it
        os.chdir(ROOT)
        os.execve(NETEMU[0], [*NETEMU, *args], dict(os.environ))
    output, sent, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sent and prompt in output:
                os.write(fd, keys)
                sent = True
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not data:
                break
            output += data
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def lab_names() -> set[str]:
    return {line.split()[0] for line in run_cli("ps").stdout.splitlines()[1:] if line.strip()}


def test_an_interactive_run_with_rm_on_a_terminal_leaves_nothing(busybox: str) -> None:
    name = unique_name("b")
    before = kernel_snapshot.snapshot()
    code, screen = in_terminal(
        ["run", "-it", "--name", name, "--network", "bridge", "-h", "test", "--dns", "114.114.114.114",
         "--add-host", "www.baidu.com:192.168.0.148", "--rm", busybox],
        b"busybox hostname; busybox cat /etc/resolv.conf; busybox grep baidu /etc/hosts; "
        b"busybox ip -4 -o addr show eth0; busybox tty; exit 7\r")
    assert code == 7, screen
    assert "\ntest\r" in screen and "nameserver 114.114.114.114" in screen, screen
    assert "192.168.0.148" in screen and "www.baidu.com" in screen
    assert "inet " in screen and "eth0" in screen and "/dev/pts/" in screen  # on the NAT bridge, on a terminal
    assert name not in lab_names()
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


def test_network_none_exit_code_env_and_stdin(busybox: str) -> None:
    name = unique_name("n")
    before = kernel_snapshot.snapshot()
    result = subprocess.run(
        [*NETEMU, "run", "--rm", "-i", "--name", name, "--network", "none", "-e", "GREETING=hi", "-e", "FROM_SHELL",
         busybox, "busybox", "sh", "-c", "busybox ip -o link; echo $GREETING $FROM_SHELL; busybox cat; exit 3"],
        input="typed in\n", capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "FROM_SHELL": "passed"})
    assert result.returncode == 3, result.stderr
    links = [line.split(":")[1].strip() for line in result.stdout.splitlines() if ": <" in line]
    assert links == ["lo"]  # network none: loopback only
    assert "hi passed" in result.stdout and "typed in" in result.stdout
    assert name not in lab_names()
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


def test_detached_then_exec_ps_container_network_and_down(busybox: str) -> None:
    name, other = unique_name("d"), unique_name("c")
    try:
        started = run_cli("run", "-d", "--name", name, busybox, "busybox", "sleep", "300")
        assert started.returncode == 0 and started.stdout.strip() == name, started.stderr
        ps = run_cli("ps", "--nodes", "--format", "json").stdout
        assert f'"lab": "{name}"' in ps and '"state": "up"' in ps
        assert "sleep 300" in run_cli("exec", name, name, "busybox", "ps").stdout  # its command runs
        own = run_cli("exec", name, name, "busybox", "ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3]
        shared = subprocess.run([*NETEMU, "run", "--rm", "--name", other, "--network", f"container:{name}", busybox,
                                 "busybox", "ip", "-4", "-o", "addr", "show", "eth0"],
                                capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert shared.returncode == 0 and own in shared.stdout, shared.stderr  # the same network namespace
        assert other not in lab_names()
    finally:
        run_cli("down", other)
        assert run_cli("down", name).returncode == 0
    assert name not in lab_names()


def test_without_rm_the_host_stops_with_its_command_and_down_removes_it(busybox: str) -> None:
    name = unique_name("s")
    try:
        result = run_cli("run", "--name", name, busybox, "busybox", "true")
        assert result.returncode == 0, result.stderr
        nodes = run_cli("ps", "--nodes", "--format", "json").stdout
        assert f'"lab": "{name}"' in nodes and '"state": "stopped"' in nodes  # as Docker's container exits
        assert run_cli("exec", name, name, "true").returncode != 0
    finally:
        assert run_cli("down", name).returncode == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--memory", "lots"], "--memory: invalid memory size 'lots'"),
    (["--name", "Has_Caps"], "--name 'Has_Caps'"),
    (["--add-host", "nocolon"], "--add-host 'nocolon'"),
    (["-d", "--rm"], "--rm with -d is not supported"),
    (["--network", "container:nosuchlab"], "no lab named 'nosuchlab'"),
])
def test_bad_options_are_one_line_exit_2_and_create_nothing(args: list[str], message: str) -> None:
    before = kernel_snapshot.snapshot()
    result = run_cli("run", *args, "--pull", "never", "host", "true")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


def test_sharing_the_network_of_a_run_on_the_machines_network_gives_no_net_admin(busybox: str) -> None:
    """NET_ADMIN (bit 12) is a default only over a network namespace of the host's own: a host
    that takes the network of one with `--network host` would hold it over the machine's."""
    name, other = unique_name("h"), unique_name("j")
    caps = ["busybox", "grep", "CapEff", "/proc/self/status"]
    try:
        assert run_cli("run", "-d", "--name", name, "--network", "host", busybox, "busybox", "sleep", "300"
                       ).returncode == 0
        shared = run_cli("run", "--rm", "--name", other, "--network", f"container:{name}", busybox, *caps)
        own = run_cli("run", "--rm", "--name", other, "--network", "none", busybox, *caps)
        assert shared.returncode == own.returncode == 0, shared.stderr + own.stderr
        assert not int(shared.stdout.split()[1], 16) & (1 << 12)
        assert int(own.stdout.split()[1], 16) & (1 << 12)
    finally:
        run_cli("down", other)
        assert run_cli("down", name).returncode == 0


def test_image_pull_on_the_command_line(busybox: str) -> None:
    pulled = run_cli("image", "pull", busybox)
    assert pulled.returncode == 0 and f"pulled {BUSYBOX}" in pulled.stdout, pulled.stderr
    assert BUSYBOX in run_cli("image", "ls").stdout
    missing = run_cli("image", "pull", "busybox:no-such-tag")
    assert missing.returncode == 2 and "busybox:no-such-tag" in missing.stderr
    assert len(missing.stderr.splitlines()) == 1
    assert run_cli("image", "pull", "Not A Reference").returncode == 2
