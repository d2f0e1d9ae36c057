"""OSPF convergence on the bundled lab (topologies/ospf.yaml), as checks report it: passed_after.

For each of N runs (default 10) this brings the lab up under its own name and measures:

- fresh: passed_after of its checks from the moment `up` returns (h1 -> h2 via r1, r2; r1's
  route to 10.2.0.0/24 learned by OSPF; r1's neighbours Full in vtysh's JSON);
- link failure: r1:eth1 (the r1-r2 link) taken down, then passed_after of h1 -> h2 by the
  other way round (via r1, r3, r2) and of r1's route to 10.2.0.0/24 through r3.

It prints min, median and max over the runs next to the floor set in the lab's FRR config:
a hello every 1 s and a dead interval of 4 s (a neighbour behind a link that is down is seen
only when its link goes down, since both ends lose carrier: no dead interval to wait out).
Nothing asserts on speed. Run it as root:  .venv/bin/python bench/convergence.py [--runs 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from netemu import api
from netemu.probe.checks import CheckSet
from netemu.topology.model import Check, CommandCheck, RouteCheck

ROOT = Path(__file__).resolve().parent.parent
LAB = "benchospf"

FRESH = [
    Check(src="h1", dst="h2", via=["r1", "r2"], within=60),
    RouteCheck(on="r1", route="10.2.0.0/24", via=["10.0.12.2"], proto="ospf", within=60),
    CommandCheck(on="r1", exec=["vtysh", "-c", "show ip ospf neighbor json"],
                 json={'neighbors["10.255.0.2"][0].converged': "Full",
                       'neighbors["10.255.0.3"][0].converged': "Full"}, within=60),
]
AFTER_FAILURE = [
    Check(src="h1", dst="h2", via=["r1", "r3", "r2"], path="exact", within=60),
    RouteCheck(on="r1", route="10.2.0.0/24", via=["10.0.13.2"], dev="eth2", proto="ospf", within=60),
]


def one_run() -> dict[str, list[float | None]]:
    topo = api.load(ROOT / "topologies" / "ospf.yaml")
    topo.name = LAB
    try:
        api.up(topo)
        fresh = api.check(CheckSet(LAB, FRESH))
        api.link_action(LAB, "r1:eth1", "down")
        failed = api.check(CheckSet(LAB, AFTER_FAILURE))
    finally:
        api.down(LAB)
    return {"fresh": [r.passed_after for r in fresh.results], "link failure": [r.passed_after for r in failed.results]}


def summary(values: list[float | None]) -> str:
    passed = [v for v in values if v is not None]
    if not passed:
        return "never passed"
    failed = len(values) - len(passed)
    text = f"{min(passed):.2f} / {statistics.median(passed):.2f} / {max(passed):.2f} s"
    return text + (f" ({failed} runs failed)" if failed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = []
    for number in range(args.runs):
        print(f"run {number + 1}/{args.runs}", file=sys.stderr)
        runs.append(one_run())
    titles = {"fresh": [str(c.__class__.__name__) for c in FRESH], "link failure": [c.__class__.__name__
                                                                                  for c in AFTER_FAILURE]}
    names = {"fresh": ["h1 -> h2 via r1, r2", "r1 route 10.2.0.0/24 proto ospf", "r1 neighbours Full (vtysh)"],
             "link failure": ["h1 -> h2 exactly r1, r3, r2", "r1 route 10.2.0.0/24 via r3"]}
    if args.json:
        print(json.dumps({"runs": runs, "checks": names, "kinds": titles}, indent=1))
        return
    print(f"passed_after over {args.runs} runs (min / median / max); floor: OSPF hello 1 s, dead interval 4 s")
    for phase, checks in names.items():
        for position, name in enumerate(checks):
            print(f"  {phase:<13} {name:<34} {summary([run[phase][position] for run in runs])}")


if __name__ == "__main__":
    main()
