"""What default confinement costs `up` and `down`: N hosts on one bridge, each confined (Docker's
capabilities plus NET_ADMIN, the seccomp filter, masked and read-only kernel paths, the cgroup
device allow-list), next to the same lab with every host `privileged: true` (none of it),
measured in the same run, alternating, medians over the runs. It asserts nothing.

Run it as root:  .venv/bin/python bench/confinement.py [--sizes 100,1000] [--runs 3] [--json]
Labs are named benchcf<N>/benchcp<N> (10.79.0.0/16) and removed in `finally`, also on failure.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import sys
import time

from labgen import bridge_lab_yaml

import netemu
from netemu import api
from netemu.topology import load_topology_text

SUBNET = ipaddress.ip_network("10.79.0.0/16")
VARIANTS = {"confined": "benchcf", "privileged": "benchcp"}


def lab_text(variant: str, n: int) -> str:
    text = bridge_lab_yaml(f"{VARIANTS[variant]}{n}", n, SUBNET)
    if variant == "privileged":
        text = text.replace("nodes:\n", "defaults: {privileged: true}\nnodes:\n", 1)
    return text


def one_run(variant: str, n: int) -> tuple[float, float]:
    """Seconds for `up` and for `down` through the Python API; h1 pings h2 in between."""
    topo = load_topology_text(lab_text(variant, n), f"<{variant}>")
    try:
        start = time.perf_counter()
        lab = netemu.Lab.up(topo)
        up = time.perf_counter() - start
        ping = lab.exec("h1", ["ping", "-c1", "-W2", str(SUBNET.network_address + 3)])
        if ping.returncode != 0:
            raise SystemExit(f"{variant} {n}: h1 could not ping h2: {ping.stdout}{ping.stderr}")
        start = time.perf_counter()
        lab.down()
        return up, time.perf_counter() - start
    finally:
        api.down(topo.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000", help="host counts, e.g. 100,1000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for n in (int(s) for s in args.sizes.split(",")):
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        for _ in range(args.runs):
            for variant in VARIANTS:  # alternating, so a noisy minute hits both alike
                times[variant].append(one_run(variant, n))
        results[str(n)] = {v: {"up": statistics.median(t[0] for t in ts), "down": statistics.median(t[1] for t in ts)}
                           for v, ts in times.items()}
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'hosts':>6}  {'privileged up':>14}  {'confined up':>12}  {'ratio':>6}  "
          f"{'privileged down':>16}  {'confined down':>14}  {'ratio':>6}")
    for n, r in results.items():
        p, c = r["privileged"], r["confined"]
        print(f"{n:>6}  {p['up']:>13.3f}s  {c['up']:>11.3f}s  x{c['up'] / p['up']:>4.2f}  "
              f"{p['down']:>15.3f}s  {c['down']:>13.3f}s  x{c['down'] / p['down']:>4.2f}")
    print(f"medians of {args.runs} runs each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
