"""Fault injection shared by tests/integration/test_faults.py (a few trials in CI) and
bench/faults.py (the full count): SIGKILL `netemu up` or `netemu down` at a random instant, or
an `up` bound to fail at a random instant of its own rollback, let `netemu down NAME` (or
`netemu clean`, or a new `up` of the same name) recover, and compare the machine with how it
was before.

The lab is big enough for a kill to land anywhere in `up`: 50 hosts with limits on the lab's
default NAT bridge (`network: bridge`), a declared NAT network, point-to-point links with pool
addresses, and a published port."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from netemu.runtime import paths
from tests import kernel_snapshot

ROOT = Path(__file__).resolve().parent.parent
NETEMU = [sys.executable, "-m", "netemu.cli"]
LIMITS = {"memory": "64M", "pids": 128, "cpus": 0.5}
CLI_TIMEOUT = 300.0  # a hang is a failure too, but never a timing verdict
LIVE = ("running", "degraded")  # what `clean` leaves alone (see netemu.runtime.lab.clean)
ROLLBACK_MARK = "failed: removing what was created"  # what `up -v` says as its rollback begins


def fault_topology(name: str, hosts: int = 50, port: int = 18080, fail: bool = False) -> dict:
    """`hosts` hosts on the default NAT bridge; the first eight also on a NAT LAN and on
    point-to-point links between pairs. With `fail`, the last host's `exec` fails once
    everything is made, so `up` rolls the whole lab back."""
    nodes: dict[str, dict] = {f"h{i}": {} for i in range(1, hosts + 1)}
    nodes["h1"] = {"ports": [f"{port}:80/tcp"]}
    if fail:
        nodes[f"h{hosts}"] = {"exec": ["exit 3"]}
    links: list[dict] = []
    lan = min(8, hosts)
    for i in range(1, lan + 1):
        links.append({"endpoints": [f"h{i}:lan0", "lan"], "addresses": ["auto"]})
    for i in range(1, lan, 2):
        links.append({"endpoints": [f"h{i}:p0", f"h{i + 1}:p0"], "addresses": ["auto", "auto"]})
    return {
        "name": name,
        "defaults": {"network": "bridge", "limits": LIMITS},
        "nodes": nodes,
        "networks": {"lan": {"subnet": "10.231.0.0/24", "gateway": "10.231.0.1", "nat": True}},
        "links": links,
    }


def tokens(topo: dict) -> set[str]:
    """Every string that names an object of this lab on the machine: its name, and the hashed
    names of the links it makes there (a link made by an `up` killed before tagging it carries
    no alias)."""
    lab = topo["name"]
    found = {lab, paths.bridge_name(lab, "bridge")}
    found |= {paths.bridge_name(lab, net) for net in topo.get("networks", {})}
    for node in topo["nodes"]:
        found |= {paths.host_veth_name(lab, node, iface) for iface in ("eth0", "eth1", "lan0", "p0")}
    return found


def write_topology(directory: Path, topo: dict) -> Path:
    path = directory / f"{topo['name']}.yaml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NETEMU, *args], capture_output=True, text=True, cwd=ROOT, timeout=CLI_TIMEOUT)


def timed_cli(*args: str) -> float:
    """Seconds one netemu command takes from process start to exit (interpreter start-up included,
    as for the commands the trials kill); it must succeed."""
    started = time.monotonic()
    result = cli(*args)
    if result.returncode != 0:
        raise AssertionError(f"netemu {' '.join(args)} failed: {result.stderr.strip()}")
    return time.monotonic() - started


def kill_in_rollback(args: list[str], delay: float) -> bool | None:
    """Start `netemu ARGS -v` (an `up` bound to fail) and SIGKILL it `delay` seconds into its
    rollback: True if killed, False if it ended first, None if it never began one."""
    proc = subprocess.Popen([*NETEMU, *args, "-v"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        if not any(ROLLBACK_MARK in line for line in proc.stderr):
            return None  # stderr closed: the process ended without a rollback
        try:
            proc.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            return True
    finally:
        proc.wait(timeout=CLI_TIMEOUT)
        proc.stderr.close()


def kill_after(args: list[str], delay: float) -> int | None:
    """Start `netemu ARGS`, SIGKILL it `delay` seconds later; its exit status if it ended first."""
    proc = subprocess.Popen([*NETEMU, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None


@dataclass
class MachineState:
    """The kernel snapshot, plus the machine-wide sysctls when no other lab holds them raised."""

    objects: dict[str, set[str]]
    others: set[str]  # other labs with a claim on the machine's sysctls
    sysctls: set[str] = field(default_factory=set)


def machine_state(ignore: set[str]) -> MachineState:
    others = kernel_snapshot.sysctl_claimants() - ignore
    return MachineState(kernel_snapshot.snapshot(), others, kernel_snapshot.host_sysctls())


def leaks(before: MachineState, after: MachineState, names: set[str]) -> dict[str, object]:
    """What differs between two states, as far as this lab is concerned. The sysctls are judged
    only when no other lab held a claim before or after: while one does, netemu rightly keeps
    them raised until the last lab goes."""
    found: dict[str, object] = dict(kernel_snapshot.diff_mine(before.objects, after.objects, names))
    if not before.others and not after.others and before.sysctls != after.sysctls:
        found["sysctls"] = {"before": before.sysctls - after.sysctls, "after": after.sysctls - before.sysctls}
    return found


@dataclass
class Trial:
    phase: str  # "up", "down", or "rollback" (an `up` that fails, killed in its rollback)
    delay: float
    recovery: str  # "down", "clean", or "up" (the same name brought up again, then down)
    killed: bool = False
    status: str | None = None  # the lab's status in `netemu ps` after the kill
    found: int = 0  # this lab's objects on the machine right after the kill
    leaks: dict[str, object] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.phase == "rollback":
            what = (f"up killed {self.delay:.3f}s into its rollback" if self.killed
                    else f"up rolled back before its kill at {self.delay:.3f}s")
        else:
            what = f"{self.phase} {'killed' if self.killed else 'finished before the kill'} at {self.delay:.3f}s"
        return (f"{what} with {self.found} objects of the lab on the machine (ps: {self.status or 'not listed'}), "
                f"recovered by {self.recovery}")


class FaultRunner:
    """Runs kill trials on one lab name, one after the other; `say` reports progress."""

    def __init__(self, directory: Path, name: str, hosts: int, seed: int,
                 say: Callable[[str], None] = lambda _msg: None) -> None:
        self.topo = fault_topology(name, hosts)
        self.name = name
        self.path = write_topology(directory, self.topo)
        (directory / "failing").mkdir(exist_ok=True)
        self.failing_path = write_topology(directory / "failing", fault_topology(name, hosts, fail=True))
        self.names = tokens(self.topo)
        self.rng = random.Random(seed)
        self.say = say
        self.start_seconds = 0.0
        self.up_seconds = 0.0
        self.down_seconds = 0.0
        self.rollback_seconds = 0.0

    def calibrate(self) -> None:
        """One whole up and down: the kill instants are drawn over these spans, past the
        interpreter's start-up (a kill there proves nothing)."""
        self.start_seconds = timed_cli("--version")
        self.up_seconds = timed_cli("up", "-q", str(self.path))
        self.down_seconds = timed_cli("down", "-q", self.name)
        self.rollback_seconds = self._time_rollback()
        self.say(f"calibration: start-up {self.start_seconds:.2f}s, up {self.up_seconds:.2f}s, "
                 f"down {self.down_seconds:.2f}s, rollback of a failed up {self.rollback_seconds:.2f}s")

    def _time_rollback(self) -> float:
        """Seconds from the start of a failing `up`'s rollback to its exit (which must be 4, the
        failed exec's LabError, and leave nothing: a second `down` finds nothing)."""
        proc = subprocess.Popen([*NETEMU, "up", "-v", str(self.failing_path)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if ROLLBACK_MARK in line:
                break
        started = time.monotonic()
        lines += proc.stderr.readlines()
        proc.wait(timeout=CLI_TIMEOUT)
        seconds = time.monotonic() - started
        proc.stderr.close()
        left = cli("down", self.name)
        if proc.returncode != 4 or "nothing to remove" not in left.stdout:
            raise AssertionError(f"a failing up -> {proc.returncode}, then down: {left.stdout.strip()}: "
                                 f"{''.join(lines[-3:]).strip()}")
        return seconds

    def trial(self, phase: str, recovery: str) -> Trial:
        before = machine_state({self.name})
        if phase == "down":
            result = cli("up", "-q", str(self.path))
            if result.returncode != 0:
                return Trial(phase, 0.0, recovery, errors=[f"up before the down trial: {result.stderr.strip()}"])
        trial = self._kill(phase, recovery)
        trial.found = sum(len(v["added"]) for v in kernel_snapshot.diff_mine(
            before.objects, kernel_snapshot.snapshot(), self.names).values())
        self._inspect_after_kill(trial)
        self._recover(trial)
        trial.leaks = leaks(before, machine_state({self.name}), self.names)
        self.say(f"{trial.describe()}: {'LEAKS ' + repr(trial.leaks) if trial.leaks else 'nothing left'}"
                 + (f"; errors: {trial.errors}" if trial.errors else ""))
        return trial

    def _kill(self, phase: str, recovery: str) -> Trial:
        if phase == "rollback":
            trial = Trial(phase, self.rng.uniform(0.0, self.rollback_seconds * 0.95), recovery)
            outcome = kill_in_rollback(["up", str(self.failing_path)], trial.delay)
            if outcome is None:
                trial.errors.append("the failing up never began its rollback")
            trial.killed = bool(outcome)
            return trial
        span = self.up_seconds if phase == "up" else self.down_seconds
        delay = self.rng.uniform(min(self.start_seconds, span) * 0.8, span * 0.95)
        args = ["up", "-q", str(self.path)] if phase == "up" else ["down", "-q", self.name]
        trial = Trial(phase, delay, recovery)
        trial.killed = kill_after(args, delay) is None
        return trial

    def _inspect_after_kill(self, trial: Trial) -> None:
        """`ps` and `inspect` must still answer (a half-made lab is a state, not a crash)."""
        for args in (["ps"], ["inspect", self.name]):
            result = cli(*args)
            if result.returncode not in (0, 2) or "Traceback" in result.stderr:
                trial.errors.append(f"netemu {' '.join(args)} -> {result.returncode}: {result.stderr.strip()}")
        trial.status = self._status()

    def _status(self) -> str | None:
        result = cli("ps", "--format", "json")
        if result.returncode != 0:
            return f"ps failed: {result.stderr.strip()}"
        return next((lab["status"] for lab in json.loads(result.stdout) if lab["name"] == self.name), None)

    def _recover(self, trial: Trial) -> None:
        if trial.recovery == "up":
            self._recover_by_up(trial)
            return
        args = ["down", self.name] if trial.recovery == "down" else ["clean"]
        result = cli(*args)
        if result.returncode != 0:
            trial.errors.append(f"netemu {' '.join(args)} -> {result.returncode}: {result.stderr.strip()}")
        if trial.recovery == "clean" and trial.status in LIVE:
            # Killed after `up` finished its work, or before `down` began: the lab is whole and
            # running, so `clean` rightly leaves it. `down` removes it.
            left = self._status()
            if left != trial.status:
                trial.errors.append(f"clean changed a {trial.status} lab: now {left}")
            cli("down", self.name)
        again = cli("down", self.name)
        if again.returncode != 0 or "nothing to remove" not in again.stdout:
            trial.errors.append(f"a second down still found something: {again.stdout.strip()} {again.stderr.strip()}")

    def _recover_by_up(self, trial: Trial) -> None:
        """The name must be free again: a lab that never came up never blocks it ("already
        exists"), it is removed by the new `up` first. A lab that did come up (the kill missed)
        still blocks it, and is taken down first."""
        if trial.status in LIVE:
            cli("down", self.name)
        for args in (["up", "-q", str(self.path)], ["down", self.name]):
            result = cli(*args)
            if result.returncode != 0:
                trial.errors.append(f"netemu {' '.join(args[:1])} -> {result.returncode}: {result.stderr.strip()}")
        again = cli("down", self.name)
        if again.returncode != 0 or "nothing to remove" not in again.stdout:
            trial.errors.append(f"a second down still found something: {again.stdout.strip()} {again.stderr.strip()}")

    def cleanup(self) -> None:
        cli("down", "-q", self.name)
