"""`ipc:` and `pid:` (Docker's --ipc and --pid): a node in another node's IPC and PID namespaces,
or in the machine's, checked against the kernel's own namespace files, what the hosts see
inside, the start order, `netemu node stop|start` and `netemu exec`."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from netemu.errors import InputError
from tests import kernel_snapshot
from tests.conftest import run_cli

KINDS = ("ipc", "pid")
SHARING = {"nodes": {
    "b": {"ipc": "container:a", "pid": "container:a", "cmd": "sleep 4711 &"},  # listed first: starts second
    "a": {"cmd": "sleep 4242"},
    "c": {},
}}
CAP_SYS_PTRACE = 19


def _ns(pid: int | str, kind: str) -> str:
    """A namespace as the machine sees it: "ipc:[4026531839]" ("self": the test's own, the
    machine's; the machine's PID 1 may be out of the test's reach)."""
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def _namespaces(lab, node: str) -> dict[str, str]:
    return {kind: _ns(lab.pid(node), kind) for kind in ("ipc", "pid", "net", "uts", "mnt")}


def _processes(lab, node: str) -> list[str]:
    """Every command line the node's /proc shows, its arguments joined by spaces."""
    script = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"
    return [line.strip() for line in lab.exec(node, ["sh", "-c", script]).stdout.splitlines()]


def _machine_process(argv: str) -> int:
    """The PID on the machine of the process whose command line is `argv`."""
    wanted = argv.replace(" ", "\0") + "\0"
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_text() == wanted:
                return int(entry.name)
        except OSError:
            continue
    raise AssertionError(f"no process {argv!r} on the machine")


def _ppid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def _wait_for(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_node_shares_another_nodes_ipc_and_pid_namespaces(make_lab):
    lab = make_lab(SHARING)
    a, b, c = (_namespaces(lab, n) for n in "abc")
    assert {k: a[k] for k in KINDS} == {k: b[k] for k in KINDS}
    assert all(c[k] != a[k] for k in KINDS), "a third node keeps namespaces of its own"
    assert all(b[k] != a[k] for k in ("net", "uts", "mnt")), "only IPC and PID are shared"
    # b sees a's processes and a sees b's: one PID namespace; c sees neither.
    assert "sleep 4242" in _processes(lab, "b") and "sleep 4711" in _processes(lab, "a")
    assert "sleep 4242" not in _processes(lab, "c")
    # The namespace's init is a's PID 1; b's is an ordinary process of it.
    assert lab.exec("b", ["cat", "/proc/1/cmdline"]).stdout == Path(f"/proc/{lab.pid('a')}/cmdline").read_text()
    assert lab.exec("b", ["hostname"]).stdout.strip() == "b"


def test_the_orphans_of_a_host_in_a_joined_pid_namespace_stay_with_its_pid_1(make_lab):
    """b's cmd leaves `sleep 4711` behind: as a subreaper b's PID 1 gets it, not a's."""
    lab = make_lab(SHARING)
    _wait_for(lambda: "sleep 4711" in _processes(lab, "b"), "b's orphan")
    assert _ppid(_machine_process("sleep 4711")) == lab.pid("b")


@pytest.mark.skipif(shutil.which("ipcmk") is None, reason="needs ipcmk (util-linux)")
def test_a_sysv_segment_made_in_one_host_is_seen_in_the_one_sharing_its_ipc(make_lab):
    lab = make_lab(SHARING)
    made = lab.exec("a", ["ipcmk", "-M", "4096"], check=True).stdout  # "Shared memory id: N"
    shmid = made.split(":")[1].strip()
    ids = {node: [line.split()[1] for line in lab.exec(node, ["cat", "/proc/sysvipc/shm"]).stdout.splitlines()[1:]]
           for node in "bc"}
    assert ids == {"b": [shmid], "c": []}
    assert lab.exec("b", ["ipcrm", "-m", shmid]).returncode == 0, "root in b owns what root in a made"
    assert lab.exec("a", ["cat", "/proc/sysvipc/shm"]).stdout.count("\n") == 1


def test_host_modes_are_the_machines_namespaces_and_stay_confined(make_lab):
    lab = make_lab({"nodes": {"h": {"ipc": "host", "pid": "host", "cmd": "sleep 4343 &"}}})
    for kind in KINDS:
        assert _ns(lab.pid("h"), kind) == _ns("self", kind)
    assert _ns(lab.pid("h"), "net") != _ns("self", "net")
    # It sees the machine's processes, netemu's own among them, as `docker run --pid host` does.
    assert str(os.getpid()) in lab.exec("h", ["ls", "/proc"]).stdout.split()
    assert lab.exec("h", ["cat", "/proc/1/comm"]).stdout == Path("/proc/1/comm").read_text()
    # ...but without SYS_PTRACE it cannot look into them (environment, files, root, memory).
    cap_eff = lab.exec("h", ["sh", "-c", "grep CapEff /proc/self/status"]).stdout.split()[1]
    assert not int(cap_eff, 16) >> CAP_SYS_PTRACE & 1
    me = os.getpid()
    for argv in (["cat", f"/proc/{me}/environ"], ["head", "-c1", f"/proc/{me}/mem"], ["ls", f"/proc/{me}/root/"],
                 ["readlink", f"/proc/{me}/fd/0"], ["readlink", f"/proc/{me}/ns/mnt"], ["cat", "/proc/1/environ"]):
        assert lab.exec("h", argv).returncode != 0, argv
    assert lab.exec("h", ["cat", f"/proc/{lab.pid('h')}/environ"]).returncode != 0, "PID 1 is not dumpable"
    assert lab.exec("h", ["sh", "-c", "cat /proc/self/environ"]).returncode == 0, "its own processes are its own"
    # Its own orphans come back to its PID 1 rather than to the machine's init.
    _wait_for(lambda: "sleep 4343" in _processes(lab, "h"), "h's orphan")
    assert _ppid(_machine_process("sleep 4343")) == lab.pid("h")


def test_exec_lands_in_the_shared_namespaces(make_lab):
    lab = make_lab({"nodes": {"a": {}, "b": {"ipc": "container:a", "pid": "container:a"},
                              "h": {"pid": "host", "ipc": "host"}}})
    for node, owner in (("b", lab.pid("a")), ("h", "self")):
        inside = lab.exec(node, ["readlink", "/proc/self/ns/ipc", "/proc/self/ns/pid"]).stdout.split()
        assert inside == [_ns(owner, "ipc"), _ns(owner, "pid")]
    # exec's command is one more process of a's PID namespace, not its init
    assert lab.exec("b", ["sh", "-c", "echo $$"]).stdout.strip() != "1"


def test_with_network_container_too_b_has_a_s_network_ipc_and_pid(make_lab):
    lab = make_lab({
        "nodes": {"b": {"network": "container:a", "ipc": "container:a", "pid": "container:a"},
                  "a": {"cmd": "sleep 4242"}, "peer": {}},
        "links": [{"endpoints": ["a:eth0", "peer:eth0"], "addresses": ["10.74.0.1/24", "10.74.0.2/24"]}],
    })
    a, b = _namespaces(lab, "a"), _namespaces(lab, "b")
    assert [a[k] == b[k] for k in ("net", "ipc", "pid", "uts", "mnt")] == [True, True, True, False, False]
    assert "10.74.0.1/24" in lab.exec("b", ["ip", "-br", "addr"]).stdout
    assert lab.exec("b", ["ping", "-c1", "-W2", "10.74.0.2"]).returncode == 0
    assert "sleep 4242" in _processes(lab, "b")


def test_node_stop_and_start_with_a_node_sharing_the_namespaces(make_lab):
    lab = make_lab(SHARING)
    with pytest.raises(InputError, match="node a lends its IPC namespace and its PID namespace to b: stop those"):
        lab.node("a", "stop")
    with pytest.raises(InputError, match="lends its IPC namespace and its PID namespace to b"):
        lab.node("a", "restart")
    lab.node("b", "restart")  # a borrower restarts alone, into a's namespaces again
    assert _ns(lab.pid("b"), "pid") == _ns(lab.pid("a"), "pid")
    lab.node("b", "stop")
    lab.node("a", "stop")  # nothing runs in its namespaces now
    with pytest.raises(InputError, match="node b shares namespaces of a, not running: start those first"):
        lab.node("b", "start")
    lab.node("a", "start")
    lab.node("b", "start")
    b = lab.record.nodes["b"]
    assert b.alive, "b died after its start; its console:\n" + Path(b.console).read_text(errors="replace")[-2000:]
    for kind in KINDS:
        assert _ns(lab.pid("b"), kind) == _ns(lab.pid("a"), kind)
    assert "sleep 4242" in _processes(lab, "b")


def test_the_pid_namespace_ends_with_its_init_and_takes_the_sharing_host_along(make_lab):
    """The kernel kills every process of a PID namespace whose init exits: a crash of a takes
    b with it, and netemu shows both down; a, then b, restart."""
    lab = make_lab(SHARING)
    os.kill(lab.pid("a"), signal.SIGKILL)
    _wait_for(lambda: not any(lab.record.nodes[n].alive for n in "ab"), "a and b to exit")
    states = {name: view.state for name, view in lab.inspect().nodes.items()}
    assert states["a"] == states["b"] != "up" and states["c"] == "up", states
    with pytest.raises(InputError, match="node b shares namespaces of a, not running: start those first"):
        lab.node("b", "restart")
    lab.node("a", "restart")  # a dead borrower does not hold its lender
    lab.node("b", "restart")
    assert _ns(lab.pid("b"), "pid") == _ns(lab.pid("a"), "pid")


USERNS_REFUSED = {
    "borrower": ({"a": {}, "b": {"userns": True, "pid": "container:a"}},
                 "nodes.b.pid: pid: container:a needs both nodes in one user namespace, but node 'b' has userns: true"),
    "lender": ({"a": {"userns": True}, "b": {"ipc": "container:a"}},
               "nodes.b.ipc: ipc: container:a needs both nodes in one user namespace, but node 'a' has userns: true"),
    "both": ({"a": {"userns": True}, "b": {"userns": True, "ipc": "container:a"}},
             "nodes.b.ipc: ipc: container:a needs both nodes in one user namespace"),
    "host": ({"b": {"userns": True, "ipc": "host"}},
             "nodes.b.ipc: ipc: host cannot be used with userns: true"),
}


@pytest.mark.parametrize("case", USERNS_REFUSED)
def test_userns_nodes_share_no_ipc_or_pid_and_up_creates_nothing(make_lab, case: str):
    nodes, message = USERNS_REFUSED[case]
    path = make_lab({"nodes": nodes}, up=False)
    before = kernel_snapshot.snapshot()
    result = run_cli("up", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and f"{path}:" in result.stderr
    assert message in result.stderr
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


def test_a_userns_node_still_shares_nothing_but_its_network(make_lab):
    """What userns nodes may share is unchanged: the network (docs/internals.md)."""
    lab = make_lab({"nodes": {"a": {}, "b": {"userns": True, "network": "container:a"}}})
    assert _ns(lab.pid("b"), "net") == _ns(lab.pid("a"), "net")
    assert all(_ns(lab.pid("b"), k) != _ns(lab.pid("a"), k) for k in KINDS)
