"""Crash safety, the full count: SIGKILL `netemu up` of a 50-host lab (NAT bridge, NAT network,
pool addresses, a published port, limits) at 30 random instants, `netemu down` at 15, and an `up`
bound to fail (its last exec exits 3) at 10 random instants of its own rollback, then recover
with `netemu down NAME` (or `netemu clean`; the rollback trials every other time with a new
`up` of the same name, which must not find the name taken) and compare the machine with how it
was: netns, links, mounts, cgroups, nftables, /run/netemu, processes, and the machine's sysctls.

Run it as root:  .venv/bin/python bench/faults.py [--up-trials 30] [--down-trials 15]
                     [--rollback-trials 10] [--seed 1] [--hosts 50] [--clean] [--json]

`--clean` recovers every other trial with `netemu clean`, which removes every dead lab of the
machine: use it only where nobody else runs labs. With NETEMU_TEST_SHARED_MACHINE=1, objects of
other labs that come and go meanwhile are ignored. Exits 1 when a trial leaked or failed."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faultlab import FaultRunner, Trial


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def kills(runner: FaultRunner, phase: str, count: int, clean: bool) -> list[Trial]:
    """Trials until `count` of them killed the command mid-way (one that finished before its
    kill instant does not count), at most twice as many trials."""
    trials: list[Trial] = []
    while sum(t.killed for t in trials) < count and len(trials) < 2 * count:
        trials.append(runner.trial(phase, _recovery(phase, len(trials), clean)))
    return trials


def _recovery(phase: str, number: int, clean: bool) -> str:
    """down, or every other time clean (with --clean); a rollback trial every third time is
    recovered by a new `up` of the same name."""
    if phase == "rollback" and number % 3 == 1:
        return "up"
    return "clean" if clean and number % 2 else "down"


def run(args: argparse.Namespace) -> list[Trial]:
    with tempfile.TemporaryDirectory(prefix="netemu-faults-") as directory:
        runner = FaultRunner(Path(directory), f"fb{uuid.uuid4().hex[:6]}", args.hosts, args.seed, log)
        try:
            runner.calibrate()
            return (kills(runner, "up", args.up_trials, args.clean)
                    + kills(runner, "down", args.down_trials, args.clean)
                    + kills(runner, "rollback", args.rollback_trials, args.clean))
        finally:
            runner.cleanup()


def summary(trials: list[Trial]) -> dict[str, object]:
    return {
        "trials": len(trials),
        "killed": sum(t.killed for t in trials),
        "killed_during_up": sum(t.killed and t.phase == "up" for t in trials),
        "killed_during_down": sum(t.killed and t.phase == "down" for t in trials),
        "killed_during_rollback": sum(t.killed and t.phase == "rollback" for t in trials),
        "recovered_by_clean": sum(t.recovery == "clean" for t in trials),
        "recovered_by_up": sum(t.recovery == "up" for t in trials),
        "leaks": sum(bool(t.leaks) for t in trials),
        "errors": sum(bool(t.errors) for t in trials),
        "failures": [f"{t.describe()}: leaks {t.leaks} errors {t.errors}" for t in trials if t.leaks or t.errors],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--up-trials", type=int, default=30, help="kills that land during up")
    parser.add_argument("--down-trials", type=int, default=15, help="kills that land during down")
    parser.add_argument("--rollback-trials", type=int, default=10,
                        help="kills that land during the rollback of a failing up")
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clean", action="store_true", help="recover every other trial with `netemu clean`")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = summary(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['trials']} trials ({result['killed_during_up']} kills during up, "
              f"{result['killed_during_down']} during down, {result['killed_during_rollback']} during the "
              f"rollback of a failing up; {result['recovered_by_clean']} recovered by clean, "
              f"{result['recovered_by_up']} by a new up): {result['leaks']} leaked, {result['errors']} failed")
        for line in result["failures"]:  # type: ignore[attr-defined]
            print(f"  {line}")
    return 1 if result["leaks"] or result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
