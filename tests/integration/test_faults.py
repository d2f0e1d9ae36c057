"""Crash safety under SIGKILL at random instants of `up` and `down` of a 50-host lab with NAT
networks, pool addresses, a published port and limits (spec section 5: "if netemu is killed at any
instant, `netemu down NAME` or `netemu clean` removes what was created, and nothing netemu does
not own"). A few seeded trials here; bench/faults.py runs the full count."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import kernel_snapshot
from tests.conftest import unique_name
from tests.faultlab import FaultRunner

SEED = int(os.environ.get("NETEMU_FAULT_SEED", "8"))
# (phase killed, recovery): `clean` removes every dead lab of the machine, so on a machine
# shared with other developers' labs the recovery is always `down NAME`.
TRIALS = [("up", "down"), ("up", "clean"), ("up", "down"), ("up", "clean"), ("up", "down"),
          ("down", "down"), ("down", "clean"), ("down", "down")]


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
