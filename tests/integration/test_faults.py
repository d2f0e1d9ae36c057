"""Crash safety under SIGKILL at random instants of `up` and `down` of a 50-host lab with NAT
networks, pool addresses, a published port and limits (docs/contract.md §6.3: "if netemu is killed at
any instant, `netemu down NAME` or `netemu clean` removes what was created, and nothing that
netemu does not own"). A few seeded trials here; bench/faults.py runs the full count.

Faults inside `up`'s rollback itself: an `up` bound to fail is SIGKILLed at a random instant of
its rollback (then `down`, `clean` or a new `up` of the name recovers), and, in this process, one
removal step at a time is made to raise (once: the rollback's second try finishes the job; on
every try: the lab is left `failed`, and the first `down`, or a new `up`, removes it)."""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netemu.errors import LabError
from netemu.linux import mounts, namespaces
from netemu.linux.cgroups import Cgroup
from netemu.runtime import cleanup, state
from netemu.runtime import lab as runtime
from netemu.topology import load_topology
from tests import kernel_snapshot
from tests.conftest import unique_name
from tests.faultlab import FaultRunner, cli, fault_topology, tokens, write_topology

SEED = int(os.environ.get("NETEMU_FAULT_SEED", "8"))
# (phase killed, recovery): `clean` removes every dead lab of the machine, so on a machine
# shared with other developers' labs the recovery is always `down NAME`.
TRIALS = [("up", "down"), ("up", "clean"), ("up", "down"), ("up", "clean"), ("up", "down"),
          ("down", "down"), ("down", "clean"), ("down", "down"),
          ("rollback", "down"), ("rollback", "up"), ("rollback", "clean"), ("rollback", "up")]


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultRunner]:
    directory: Path = tmp_path_factory.mktemp("faults")
    fault_runner = FaultRunner(directory, unique_name("f"), hosts=50, seed=SEED)
    try:
        fault_runner.calibrate()
        yield fault_runner
    finally:
        fault_runner.cleanup()


@pytest.mark.parametrize(("phase", "recovery"), TRIALS, ids=[f"{p}-then-{r}-{i}" for i, (p, r) in enumerate(TRIALS)])
def test_sigkill_at_a_random_instant_leaves_nothing_after_recovery(runner: FaultRunner, phase: str,
                                                                    recovery: str) -> None:
    if recovery == "clean" and kernel_snapshot.shared_machine():
        recovery = "down"
    trial = runner.trial(phase, recovery)
    assert not trial.errors, f"{trial.describe()}: {trial.errors}"
    assert not trial.leaks, f"{trial.describe()}: left on the machine: {trial.leaks}"


# --- a host's PID 1 killed from outside ---------------------------------------------------------

def _inspect_json(name: str) -> dict:
    result = cli("inspect", name, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _ps_status(name: str) -> str:
    result = cli("ps", "--format", "json")
    assert result.returncode == 0, result.stderr
    return next(lab["status"] for lab in json.loads(result.stdout) if lab["name"] == name)


@pytest.mark.parametrize("victims", [["h2"], ["h1", "h2", "h3"]], ids=["one-host", "every-host"])
def test_pid1_killed_from_outside_shows_dead_and_down_still_cleans(tmp_path, victims):
    topo = fault_topology(unique_name("p"), hosts=3)
    path = write_topology(tmp_path, topo)
    before = kernel_snapshot.snapshot()
    try:
        assert cli("up", "-q", str(path)).returncode == 0
        pids = {node: _inspect_json(topo["name"])["nodes"][node]["pid"] for node in victims}
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pids.values())
        info = _inspect_json(topo["name"])
        assert all(info["nodes"][n]["alive"] is (n not in victims) for n in info["nodes"]), info["nodes"]
        table = cli("inspect", topo["name"])
        assert table.returncode == 0 and "dead" in table.stdout, table.stdout + table.stderr
        assert _ps_status(topo["name"]) == ("dead" if len(victims) == 3 else "degraded")
        result = cli("down", topo["name"])
        assert result.returncode == 0, result.stderr
    finally:
        cli("down", "-q", topo["name"])
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), tokens(topo)) == {}


def test_clean_removes_a_lab_whose_hosts_all_died(tmp_path):
    if kernel_snapshot.shared_machine():
        pytest.skip("clean removes every dead lab of the machine: not on a machine shared with other labs")
    topo = fault_topology(unique_name("p"), hosts=3)
    before = kernel_snapshot.snapshot()
    try:
        assert cli("up", "-q", str(write_topology(tmp_path, topo))).returncode == 0
        pids = [node["pid"] for node in _inspect_json(topo["name"])["nodes"].values()]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pids)
        result = cli("clean")
        assert result.returncode == 0 and topo["name"] in result.stdout, result.stdout + result.stderr
    finally:
        cli("down", "-q", topo["name"])
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), tokens(topo)) == {}


def _wait_gone(pids: Iterable[int]) -> None:
    """Until the killed PIDs are reaped (their zombies gone); a hang guard, not a timing."""
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


# --- a removal step that raises, inside `up`'s rollback ------------------------------------------

# Each step of cleanup.remove_lab, by a function it calls.
REMOVAL_STEPS: dict[str, tuple[Any, str]] = {
    "processes": (cleanup, "_kill_processes"),
    "links": (cleanup, "_remove_links"),
    "netns names": (namespaces, "unname_netns"),
    "cgroups": (Cgroup, "remove"),
    "layers": (mounts, "unmount"),
    "state": (state, "remove"),
}


def _inject(monkeypatch: pytest.MonkeyPatch, step: str, times: int) -> list[str]:
    """Make `step` raise its first `times` calls in this process (the CLI's own processes never
    see it); returns the list of calls made."""
    owner, name = REMOVAL_STEPS[step]
    real: Callable[..., Any] = getattr(owner, name)
    calls: list[str] = []

    def faulty(*args: Any, **kwargs: Any) -> Any:
        calls.append(step)
        if len(calls) <= times:
            raise OSError(errno.EIO, f"injected fault in {step}")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, faulty)
    return calls


def _failing_up(tmp_path: Path) -> tuple[dict, Path, dict[str, set[str]]]:
    """A small lab whose `up` fails at its very end (an exec exits 3), and the machine before it."""
    topo = fault_topology(unique_name("r"), hosts=4, port=18081, fail=True)
    return topo, write_topology(tmp_path, topo), kernel_snapshot.snapshot()


@pytest.mark.parametrize("step", list(REMOVAL_STEPS))
def test_a_rollback_step_that_fails_once_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         step: str) -> None:
    topo, path, before = _failing_up(tmp_path)
    try:
        calls = _inject(monkeypatch, step, times=1)
        with pytest.raises(LabError, match="exec") as failed:
            runtime.up(load_topology(path))
        assert calls, f"the rollback never reached {step}"
        assert not getattr(failed.value, "__notes__", None)  # the second try finished the rollback
        assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), tokens(topo)) == {}
    finally:
        monkeypatch.undo()
        cli("down", "-q", topo["name"])


@pytest.mark.parametrize("recovery", ["down", "up"])
@pytest.mark.parametrize("step", list(REMOVAL_STEPS))
def test_a_rollback_that_cannot_finish_leaves_a_lab_that_down_or_up_removes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, recovery: str) -> None:
    topo, path, before = _failing_up(tmp_path)
    name = topo["name"]
    try:
        _inject(monkeypatch, step, times=1_000)
        with pytest.raises(LabError, match="exec") as failed:
            runtime.up(load_topology(path))
        monkeypatch.undo()
        notes = getattr(failed.value, "__notes__", [])
        assert notes and "the rollback did not finish" in notes[0] and step in notes[0], notes
        assert f"netemu down {name}" in notes[0]
        assert _ps_status(name) == "failed"
        if recovery == "down":
            result = cli("down", name)
            assert result.returncode == 0 and f"lab '{name}' is down" in result.stdout, result.stdout + result.stderr
        else:  # the name is free: the failed lab is removed first, never "already exists"
            (tmp_path / "good").mkdir()
            good = write_topology(tmp_path / "good", fault_topology(name, hosts=4, port=18081))
            result = cli("up", "-q", str(good))
            assert result.returncode == 0, result.stderr
            assert _ps_status(name) == "running"
            assert cli("down", "-q", name).returncode == 0
        again = cli("down", name)
        assert again.returncode == 0 and "nothing to remove" in again.stdout, again.stdout + again.stderr
    finally:
        monkeypatch.undo()
        cli("down", "-q", name)
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), tokens(topo)) == {}
