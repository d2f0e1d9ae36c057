"""All-pairs reachability of N hosts on one bridge (default 100: 9,900 ordered pairs), netemu
next to a baseline measured in the same run.

What is timed, on one lab brought up once:

- netemu, in process: `netemu.probe.reach()` on the running lab, the call behind `netemu reach`
  and `Lab.reach()`. The first sweep runs right after `up`, with every neighbour cache empty
  (each pair needs its ARP exchange first): that is "cold". Then --runs more sweeps reuse the
  neighbour entries: "warm" is their median. The first in-process call also pays for loading
  scapy; that is part of "cold".
- netemu, CLI: `netemu reach NAME --format json` in a subprocess (interpreter start-up, imports
  and the sweep), what a user waits for at a prompt. Median of --runs.
- the baseline, Mininet's pingAll done the same way Mininet does it: for each ordered pair, one
  `ping -c1 -W1 DST` run inside the source host (through netemu-init exec, which enters the
  host's namespaces and cgroup the way Mininet's `host.cmd` runs in its host's shell), one
  after the other. `--baseline fping` instead runs one `fping -c1 -t1000 -i1 -q` per source
  host with all its targets (fping sends to them 1 ms apart and waits for all the answers at
  once), sources one after the other; it needs the fping package. `--baseline ping,fping`
  runs both; `--baseline none` skips it.

Each side also reports how many pairs it found reachable, so both are seen to measure the same
thing. The target is the in-process sweep within 2 s for 100 hosts (Mininet's pingAll takes
about 20 s for that on this kind of machine): the table says whether it was met. Nothing else
is judged, and the exit status is 0 unless a step failed.

    sudo .venv/bin/python bench/reach.py [--hosts 100] [--runs 3] [--baseline ping,fping|none] [--json]

The lab is named reach<N> on 10.79.0.0/16 and is taken down in `finally`, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from labgen import bridge_lab_yaml

from netemu import api
from netemu.errors import LabNotFound
from netemu.runtime.records import LabRecord
from netemu.topology import load_topology_text

SUBNET = ipaddress.ip_network("10.79.0.0/16")
LOCK_FILE = Path("/run/lock/netemu-bench-reach.lock")
TARGET_S = 2.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def topology_yaml(name: str, n: int) -> str:
    return bridge_lab_yaml(name, n, SUBNET)


# --- netemu ---------------------------------------------------------------------------------------
def netemu_sweep(record: LabRecord) -> tuple[float, int, int]:
    start = time.perf_counter()
    matrix = api.reach(record.name)
    return time.perf_counter() - start, matrix.reachable, matrix.pairs


def netemu_cli(name: str) -> tuple[float, int, int]:
    exe = Path(sys.executable).with_name("netemu")
    argv = [str(exe) if exe.exists() else shutil.which("netemu") or "netemu", "reach", name, "--format", "json"]
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"netemu reach exited {result.returncode}: {result.stderr.strip()[-500:]}")
    data = json.loads(result.stdout)
    return elapsed, data["reachable"], data["pairs"]


# --- baselines ------------------------------------------------------------------------------------
def addresses(record: LabRecord) -> dict[str, str]:
    found = {}
    for link in record.links:
        node = link.endpoints[0].split(":")[0]
        found[node] = link.addresses[0][0].split("/")[0]
    return found


def baseline_ping(record: LabRecord) -> tuple[float, int, int]:
    """Mininet's pingAll: one `ping -c1 -W1` per ordered pair, sequentially, in the source host."""
    addr = addresses(record)
    nodes = list(record.nodes)
    ok = pairs = 0
    start = time.perf_counter()
    for src in nodes:
        for dst in nodes:
            if src == dst:
                continue
            pairs += 1
            result = api.exec_command(record.name, src, ["ping", "-c1", "-W1", addr[dst]], timeout=10)
            ok += result.returncode == 0
    return time.perf_counter() - start, ok, pairs


def baseline_fping(record: LabRecord) -> tuple[float, int, int]:
    """One fping per source host with all its targets at once; sources one after the other."""
    addr = addresses(record)
    nodes = list(record.nodes)
    ok = pairs = 0
    start = time.perf_counter()
    for src in nodes:
        targets = [addr[d] for d in nodes if d != src]
        pairs += len(targets)
        result = api.exec_command(record.name, src, ["fping", "-c1", "-t1000", "-i1", "-q", *targets], timeout=60)
        # fping -q prints one summary line per target on stderr: "ADDR : xmt/rcv/%loss = 1/1/0%"
        ok += sum(1 for line in result.stderr.splitlines() if "/1/0%" in line)
    return time.perf_counter() - start, ok, pairs


BASELINES = {"ping": ("sequential ping via netemu exec (Mininet pingAll)", baseline_ping),
             "fping": ("fping per source host via netemu exec", baseline_fping)}


# --- the run --------------------------------------------------------------------------------------
def bench(n: int, runs: int, baselines: list[str]) -> dict[str, Any]:
    name = f"reach{n}"
    topo = load_topology_text(topology_yaml(name, n), f"{name}.yaml")
    log(f"up: {n} hosts on one bridge (lab {name})")
    record = api.up(topo)
    try:
        log("netemu reach, in process: cold (first sweep after up)")
        cold = netemu_sweep(record)
        warm = []
        for run in range(runs):
            log(f"netemu reach, in process: warm {run + 1}/{runs}")
            warm.append(netemu_sweep(record))
        cli = []
        for run in range(runs):
            log(f"netemu reach, CLI: {run + 1}/{runs}")
            cli.append(netemu_cli(name))
        base = {}
        for baseline in baselines:
            log(f"baseline: {BASELINES[baseline][0]} ({n * (n - 1)} pairs, this takes a while)")
            seconds, ok, _pairs = BASELINES[baseline][1](record)
            base[baseline] = {"name": BASELINES[baseline][0], "seconds": seconds, "reachable": ok}
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with contextlib.suppress(LabNotFound):
            api.down(name)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return {
        "hosts": n, "pairs": n * (n - 1), "runs": runs,
        "netemu_cold_s": cold[0], "netemu_cold_reachable": cold[1],
        "netemu_warm_s": statistics.median(w[0] for w in warm) if warm else None,
        "netemu_warm_reachable": min((w[1] for w in warm), default=None),
        "netemu_cli_s": statistics.median(c[0] for c in cli) if cli else None,
        "netemu_cli_reachable": min((c[1] for c in cli), default=None),
        "baselines": base,
        "target_s": TARGET_S, "target_met": max(cold[0], *(w[0] for w in warm)) <= TARGET_S,
        "machine": {"kernel": platform.release(), "cpus": len(os.sched_getaffinity(0)),
                    "python": platform.python_version()},
    }


def render(r: dict[str, Any]) -> str:
    def row(label: str, seconds: float | None, ok: int | None) -> str:
        if seconds is None:
            return f"{label:<58} {'-':>9}"
        return f"{label:<58} {seconds:>8.3f}s  {ok}/{r['pairs']} reachable"

    lines = [f"all-pairs reachability, {r['hosts']} hosts on one bridge ({r['pairs']} pairs), "
             f"kernel {r['machine']['kernel']}, {r['machine']['cpus']} CPUs",
             row("netemu reach, in process, cold (first sweep after up)", r["netemu_cold_s"],
                 r["netemu_cold_reachable"]),
             row(f"netemu reach, in process, warm (median of {r['runs']})", r["netemu_warm_s"],
                 r["netemu_warm_reachable"]),
             row(f"netemu reach NAME, CLI subprocess (median of {r['runs']})", r["netemu_cli_s"],
                 r["netemu_cli_reachable"])]
    for base in r["baselines"].values():
        lines.append(row(f"baseline: {base['name']}", base["seconds"], base["reachable"]))
        lines.append(f"    netemu is x{base['seconds'] / r['netemu_cold_s']:.0f} faster cold, "
                     f"x{base['seconds'] / (r['netemu_warm_s'] or r['netemu_cold_s']):.0f} warm")
    verdict = "met" if r["target_met"] else "NOT met"
    lines.append(f"target: every in-process sweep within {r['target_s']:.0f}s: {verdict}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", default="ping", help="ping, fping, ping,fping or none")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    baselines = [] if args.baseline == "none" else args.baseline.split(",")
    if any(b not in BASELINES for b in baselines):
        parser.error(f"--baseline: expected a list of {', '.join(BASELINES)}, or none")
    if "fping" in baselines and not shutil.which("fping"):
        parser.error("--baseline fping needs fping (apt-get install fping)")
    signal.signal(signal.SIGTERM, _sigterm)
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another bench/reach.py is running")
            return 1
        result = bench(args.hosts, args.runs, baselines)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
