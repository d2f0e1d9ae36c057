"""A machine where another tool keeps a thousand links and adds and removes fifty at a time
("Real machines"): `up`, `inspect`, `link`, `node`, `down` and `clean` of a 30-host lab must
work every time, and each `down` must leave nothing of the lab.

The test counts cycles and failures and prints them (pytest -s shows them), with the median
timings of `up` and `down` without churn and with it. Nothing here holds a timing threshold."""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from netemu.runtime import cleanup, paths
from tests import kernel_snapshot
from tests.churn import Churn
from tests.conftest import unique_name
from tests.faultlab import cli, write_topology

HOSTS = 30
CYCLES = int(os.environ.get("NETEMU_CHURN_CYCLES", "10"))
QUIET_CYCLES = 3  # the same cycle before the churn starts: the timings to compare with


def churn_topology(name: str, hosts: int = HOSTS) -> dict:
    """`hosts` hosts on one lab bridge (auto addresses of its subnet), and the first ten also
    paired by point-to-point links with pool addresses (so `up` reads the machine's networks)."""
    links: list[dict] = [{"endpoints": [f"h{i}:eth0", "lan"], "addresses": ["auto"]} for i in range(1, hosts + 1)]
    links += [{"endpoints": [f"h{i}:p0", f"h{i + 1}:p0"], "addresses": ["auto", "auto"]}
              for i in range(1, min(hosts, 10), 2)]
    return {
        "name": name,
        "nodes": {f"h{i}": {} for i in range(1, hosts + 1)},
        "networks": {"lan": {"subnet": "10.232.0.0/24"}},
        "links": links,
    }


def lab_tokens(topo: dict) -> set[str]:
    lab = topo["name"]
    found = {lab, paths.bridge_name(lab, "lan")}
    for node in topo["nodes"]:
        found |= {paths.host_veth_name(lab, node, iface) for iface in ("eth0", "p0")}
    return found


@dataclass
class Cycles:
    cycles: int = 0
    failures: list[str] = field(default_factory=list)
    up_seconds: list[float] = field(default_factory=list)
    down_seconds: list[float] = field(default_factory=list)

    def run(self, *args: str) -> bool:
        """One netemu command; a failure is counted, never raised (every cycle runs)."""
        started = time.monotonic()
        result = cli(*args)
        seconds = time.monotonic() - started
        if args[0] == "up":
            self.up_seconds.append(seconds)
        elif args[0] == "down":
            self.down_seconds.append(seconds)
        if result.returncode != 0:
            self.failures.append(f"cycle {self.cycles}: netemu {' '.join(args[:2])} -> {result.returncode}: "
                                 f"{result.stderr.strip()[-300:]}")
        return result.returncode == 0

    def summary(self, label: str) -> str:
        def median(values: list[float]) -> str:
            return f"{statistics.median(values):.2f}s" if values else "-"
        return (f"{label}: {self.cycles} cycles, {len(self.failures)} failures; median up {median(self.up_seconds)}, "
                f"down {median(self.down_seconds)}")


def cycle(stats: Cycles, path: Path, topo: dict, before: dict[str, set[str]], churn: Churn | None) -> None:
    """up, inspect, a link down and up, a node restart, down; then nothing of the lab left."""
    name = topo["name"]
    stats.cycles += 1
    if stats.run("up", "-q", str(path)):
        stats.run("inspect", name, "--format", "json")
        stats.run("link", name, "h1:eth0", "down")
        stats.run("link", name, "h1:eth0", "up")
        stats.run("node", name, "h2", "restart")
    if not stats.run("down", "-q", name):
        stats.run("down", "-q", name)  # counted too: `down` must work on its first try
    after = churn.snapshot() if churn else kernel_snapshot.snapshot()
    left = kernel_snapshot.diff_mine(before, after, lab_tokens(topo))
    if left:
        stats.failures.append(f"cycle {stats.cycles}: left after down: {_brief(left)}")


def test_up_down_cycles_while_another_tool_churns_links(tmp_path: Path) -> None:
    topo = churn_topology(unique_name("c"))
    path = write_topology(tmp_path, topo)
    quiet, churning = Cycles(), Cycles()
    try:
        before = kernel_snapshot.snapshot()
        for _ in range(QUIET_CYCLES):
            cycle(quiet, path, topo, before, None)
        with Churn(links=1000, step=50) as churn:
            before = churn.snapshot()
            for _ in range(CYCLES):
                cycle(churning, path, topo, before, churn)
            _clean_while_churning(churning, path, topo, churn)
            assert churn.rounds > CYCLES, f"the churn hardly ran: {churn.rounds} rounds"
            assert churn.error is None, churn.error
            print(f"\nchurn: {churn.rounds} rounds of {churn.pairs_per_round * 2} links added and removed")
    finally:
        cli("down", "-q", topo["name"])
        print(quiet.summary("without churn"))
        print(churning.summary("with churn"))
        for failure in churning.failures[:20]:
            print(f"  {failure}")
    assert not quiet.failures, quiet.failures
    assert not churning.failures, churning.failures[:5]


def _clean_while_churning(stats: Cycles, path: Path, topo: dict, churn: Churn) -> None:
    """A lab whose hosts all died is removed by `clean` (on a machine of one's own: `clean`
    takes every dead lab); on a shared one, by its discovery and then `down`."""
    name = topo["name"]
    before = churn.snapshot()
    stats.cycles += 1
    if not stats.run("up", "-q", str(path)):
        return
    pids = [info["pid"] for info in json.loads(cli("inspect", name, "--format", "json").stdout)["nodes"].values()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    if kernel_snapshot.shared_machine():
        if name not in cleanup.owned_lab_names():
            stats.failures.append(f"clean's discovery did not find the dead lab {name}")
        stats.run("down", "-q", name)
    else:
        stats.run("clean")
    left = kernel_snapshot.diff_mine(before, churn.snapshot(), lab_tokens(topo))
    if left:
        stats.failures.append(f"after clean: left {_brief(left)}")


def _brief(changes: dict[str, dict[str, set[str]]]) -> str:
    """A few entries of each kind of leftover: a 30-host lab leaves hundreds of cgroups."""
    return "; ".join(f"{key} {side} {len(entries)}: {sorted(entries)[:3]}"
                     for key, change in changes.items() for side, entries in change.items() if entries)
