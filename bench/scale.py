"""Scale: big labs (1,000 hosts on one bridge, 1,000 hosts as a tree of bridges and routers, a
chain of 100 routers), each next to a kernel floor measured in the same run, plus reachability
of random pairs and the memory an idle host costs.

For every scenario and run (default 3) it measures:

- the kernel floor: the same namespaces, bridges, veth pairs, addresses and routes made with
  iproute2 alone (one `ip -batch` in the machine's namespace, one `ip -n NS -batch` per
  namespace), no processes, cgroups or root filesystems; teardown by deleting the namespaces
  and bridges, timed until the last machine-side link is gone;
- netemu through the Python API: `up`, then (untimed) probes of random pairs of hosts (`--pairs`,
  ICMP through the probe engine; every pair must answer), then `down`, timed the same way.

With `--memory` it also brings up the bridge lab once and reports per idle host: the PSS of
its processes (from /proc/PID/smaps_rollup), and the machine's kernel slab and shared-memory
growth (from /proc/meminfo) divided by the number of hosts.

Run as root:  .venv/bin/python bench/scale.py [--hosts 1000] [--routers 100] [--runs 3]
              [--pairs 1000] [--scenarios bridge,tree,chain] [--memory] [--json]
It asserts nothing about speed. Everything is removed in `finally`, also on Ctrl-C."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labgen import bridge_lab_yaml, chain_lab_yaml, tree_lab_yaml
from updown import BenchError, _sigterm, exit_codes, log, median, netns_named, ratio, run_ip, shielded, wait_gone

from netemu import api
from netemu.linux.cgroups import Cgroup
from netemu.probe import ProbeRequest, open_engine
from netemu.runtime import paths
from netemu.topology import load_topology_text
from netemu.topology.model import Topology

FLOOR = "nbs-"  # floor object names: namespaces nbs-N, bridges nbs-bN, veths nbs-vN
SYS_NET = Path("/sys/class/net")
PROBE_ROUND = 250  # probes in flight at once


@dataclass(frozen=True)
class Scenario:
    name: str
    lab: str
    yaml: str
    pairs: tuple[tuple[str, str], ...] = ()  # probed instead of random pairs (a chain: end to end)


def scenarios(hosts: int, routers: int) -> dict[str, Scenario]:
    return {
        "bridge": Scenario(f"{hosts} hosts, one bridge", f"sbr{hosts}",
                           bridge_lab_yaml(f"sbr{hosts}", hosts, ipaddress.ip_network("10.77.0.0/16"))),
        "tree": Scenario(f"{hosts} hosts, tree of routers", f"stree{hosts}", tree_lab_yaml(f"stree{hosts}", hosts)),
        "chain": Scenario(f"chain of {routers} routers", f"schain{routers}",
                          chain_lab_yaml(f"schain{routers}", routers),
                          pairs=(("r1", f"r{routers}:eth0"), (f"r{routers}", "r1:eth1"))),
    }


# the kernel floor ------------------------------------------------------------------------------
def floor_plan(topo: Topology) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """iproute2 commands for the topology's network objects: the machine's batch, one batch per
    namespace, and the machine-side link names."""
    ns = {node: f"{FLOOR}{i}" for i, node in enumerate(topo.nodes)}
    bridges = {net: f"{FLOOR}b{i}" for i, net in enumerate(topo.networks)}
    machine = [f"netns add {name}" for name in ns.values()]
    inside: dict[str, list[str]] = {name: ["link set lo up"] for name in ns.values()}
    outer_links = list(bridges.values())
    for net, bridge in bridges.items():
        machine.append(f"link add {bridge} type bridge")
        machine += [f"addr add {g} dev {bridge}"
                    for g in topo.networks[net].gateways]
        machine.append(f"link set {bridge} up")
    for k, link in enumerate(topo.links):
        a, b = link.endpoints
        if a.is_network or b.is_network:
            host, net = (b, a) if a.is_network else (a, b)
            outer = f"{FLOOR}v{k}"
            outer_links.append(outer)
            machine += [f"link add {outer} type veth peer name {host.iface} netns {ns[host.node]}",
                        f"link set {outer} master {bridges[net.network]} up"]
        else:
            machine.append(f"link add {a.iface} netns {ns[a.node]} type veth peer name {b.iface} netns {ns[b.node]}")
        for ep, addrs in link.host_endpoints():
            inside[ns[ep.node]] += [f"addr add {addr} dev {ep.iface}" for addr in addrs]
            inside[ns[ep.node]].append(f"link set {ep.iface} up")
    for node, spec in topo.nodes.items():
        for route in spec.routes:
            inside[ns[node]].append(f"route add {route.dst} via {route.via}" if route.via
                                    else f"route add {route.dst} dev {route.dev}")
    return machine, inside, outer_links


def floor_run(topo: Topology) -> dict[str, float]:
    machine, inside, outer = floor_plan(topo)
    try:
        start = time.perf_counter()
        run_ip(["-batch", "-"], machine)
        for name, commands in inside.items():
            run_ip(["-n", name, "-batch", "-"], commands)
        up = time.perf_counter() - start
        start = time.perf_counter()
        run_ip(["-batch", "-"], [f"netns del {name}" for name in inside]
               + [f"link del {b}" for b in outer if b.startswith(f"{FLOOR}b")])
        left = wait_gone(outer)
        down = time.perf_counter() - start
        if left:
            raise BenchError(f"floor links still present after deletion: {left[:5]}")
        return {"up": up, "down": down}
    finally:
        with shielded():
            floor_cleanup()


def floor_cleanup() -> None:
    names = netns_named(FLOOR)
    links = [n for n in os.listdir(SYS_NET) if n.startswith(FLOOR)]
    batch = [f"netns del {n}" for n in names] + [f"link del {n}" for n in links]
    if batch:
        run_ip(["-force", "-batch", "-"], batch, check=False)


# netemu ----------------------------------------------------------------------------------------
def netemu_run(scenario: Scenario, pairs: int, rng: random.Random) -> dict[str, Any]:
    topo = load_topology_text(scenario.yaml, f"{scenario.lab}.yaml")
    try:
        start = time.perf_counter()
        record = api.up(topo)
        up = time.perf_counter() - start
        reach = sample_reachability(record, topo, scenario.pairs or random_pairs(topo, pairs, rng))
        machine_side = [n for n in os.listdir(SYS_NET) if is_lab_link(n, scenario.lab)]
        start = time.perf_counter()
        api.down(scenario.lab)
        returned = time.perf_counter() - start
        left = wait_gone(machine_side)
        down = time.perf_counter() - start
        return {"up": up, "down": down, "down_returned": returned, "left": left, **reach}
    finally:
        with shielded():
            api.down(scenario.lab)


def is_lab_link(name: str, lab: str) -> bool:
    try:
        alias = (SYS_NET / name / "ifalias").read_text().strip()
    except OSError:
        return False
    return alias.startswith(paths.alias(lab, ""))


def random_pairs(topo: Topology, count: int, rng: random.Random) -> list[tuple[str, str]]:
    linked = {ep.node for link in topo.links for ep, _ in link.host_endpoints()}
    nodes = [n for n in topo.nodes if n in linked]
    return [tuple(rng.sample(nodes, 2)) for _ in range(count)]  # type: ignore[misc]


def sample_reachability(record: dict[str, Any], topo: Topology, pairs: Any) -> dict[str, Any]:
    """ICMP from each source to its target's first address (or node:iface), in rounds."""
    requests = [ProbeRequest(src=src, dst=dst, timeout=3.0) for src, dst in pairs]
    start = time.perf_counter()
    with open_engine(record) as engine:
        results = _in_rounds(engine, requests)
        failed = [r for r in results if not r.reachable]
        # A pair that failed is probed once more, and both counts are reported: the first
        # pass right after `up` competes with every host's first ARP and IPv6 chatter.
        again = _in_rounds(engine, [ProbeRequest(src=r.src, dst=r.dst, timeout=3.0) for r in failed])
    still = [f"{r.src}->{r.dst}: {r.outcome} ({r.reason})" for r in again if not r.reachable]
    return {"pairs": len(results), "first_pass": len(results) - len(failed), "reachable": len(results) - len(still),
            "failed": still[:5], "probe_s": time.perf_counter() - start}


def _in_rounds(engine: Any, requests: list[ProbeRequest]) -> list[Any]:
    # A thousand hosts sending their first ARP broadcast at once on one bridge (each copied to
    # every port) overflow the kernel's backlog queue: 250 probes in flight at a time.
    results = []
    for first in range(0, len(requests), PROBE_ROUND):
        results += engine.run(requests[first:first + PROBE_ROUND])
    return results


def meminfo() -> dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, rest = line.split(":", 1)
        values[key] = int(rest.split()[0]) * 1024
    return values


def pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_run(scenario: Scenario) -> dict[str, Any]:
    topo = load_topology_text(scenario.yaml, f"{scenario.lab}.yaml")
    n = len(topo.nodes)
    before = meminfo()
    try:
        api.up(topo)
        time.sleep(1.0)  # idle: let deferred kernel work (RCU frees, addrconf) settle
        after = meminfo()
        pids = Cgroup(paths.cgroup_path(scenario.lab)).pids()
        total_pss = sum(pss(pid) for pid in pids)
    finally:
        with shielded():
            api.down(scenario.lab)
    return {"hosts": n, "processes": len(pids), "pss_per_host": total_pss / n,
            "slab_per_host": (after["Slab"] - before["Slab"]) / n,
            "unreclaimable_slab_per_host": (after["SUnreclaim"] - before["SUnreclaim"]) / n,
            "shmem_per_host": (after["Shmem"] - before["Shmem"]) / n,
            "used_per_host": (before["MemAvailable"] - after["MemAvailable"]) / n}


# the run ---------------------------------------------------------------------------------------
def bench(scenario: Scenario, runs: int, pairs: int, rng: random.Random) -> dict[str, Any]:
    topo = load_topology_text(scenario.yaml, f"{scenario.lab}.yaml")
    samples: dict[str, list[float]] = {}
    reach = {"pairs": 0, "first_pass": 0, "reachable": 0, "failed": []}
    left: list[str] = []
    for run in range(1, runs + 1):
        log(f"{scenario.name}: run {run}/{runs}: floor")
        for key, value in floor_run(topo).items():
            samples.setdefault(f"floor_{key}", []).append(value)
        log(f"{scenario.name}: run {run}/{runs}: netemu")
        result = netemu_run(scenario, pairs, rng)
        for key in ("up", "down", "down_returned", "probe_s"):
            samples.setdefault(f"netemu_{key}", []).append(result[key])
        reach["pairs"] += result["pairs"]
        reach["reachable"] += result["reachable"]
        reach["first_pass"] += result["first_pass"]
        reach["failed"] += result["failed"]
        left += result["left"]
    med = {key: median(values) for key, values in samples.items()}
    return {"scenario": scenario.name, "hosts": len(topo.nodes), "links": len(topo.links), "runs": runs,
            "floor_up_s": med["floor_up"], "netemu_up_s": med["netemu_up"],
            "ratio_up": ratio(med["netemu_up"], med["floor_up"]),
            "floor_down_s": med["floor_down"], "netemu_down_s": med["netemu_down"],
            "ratio_down": ratio(med["netemu_down"], med["floor_down"]),
            "reach": reach, "left_after_down": left, "medians_s": med, "samples_s": samples}


def table(rows: list[dict[str, Any]]) -> str:
    head = ["scenario", "nodes", "floor up", "netemu up", "ratio", "floor down", "netemu down", "ratio",
            "pairs ok"]
    body = [[r["scenario"], str(r["hosts"]), f"{r['floor_up_s']:.2f}s", f"{r['netemu_up_s']:.2f}s",
             f"x{r['ratio_up']:.1f}", f"{r['floor_down_s']:.2f}s", f"{r['netemu_down_s']:.2f}s",
             f"x{r['ratio_down']:.1f}",
             f"{r['reach']['reachable']}/{r['reach']['pairs']} ({r['reach']['first_pass']} at first)"] for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def memory_table(m: dict[str, Any]) -> str:
    kib = 1024
    return (f"memory, {m['hosts']} idle hosts ({m['processes']} processes): "
            f"PSS {m['pss_per_host'] / kib:.0f} KiB/host; kernel slab {m['slab_per_host'] / kib:.0f} KiB/host "
            f"(unreclaimable {m['unreclaimable_slab_per_host'] / kib:.0f} KiB); tmpfs (writable layers) "
            f"{m['shmem_per_host'] / kib:.0f} KiB/host; MemAvailable drop {m['used_per_host'] / kib:.0f} KiB/host")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000, help="hosts of the bridge and tree labs")
    parser.add_argument("--routers", type=int, default=100, help="routers of the chain")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=1000, help="random pairs probed after each up")
    parser.add_argument("--scenarios", default="bridge,tree,chain")
    parser.add_argument("--memory", action="store_true", help="also measure memory per idle host")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        log("bench: run as root")
        return 1
    signal.signal(signal.SIGTERM, _sigterm)
    rng = random.Random(args.seed)
    known = scenarios(args.hosts, args.routers)
    chosen = [known[s] for s in args.scenarios.split(",") if s]
    with exit_codes():
        floor_cleanup()
        rows = [bench(s, args.runs, args.pairs, rng) for s in chosen]
        memory = memory_run(known["bridge"]) if args.memory else None
    if args.json:
        print(json.dumps({"results": rows, "memory": memory}, indent=2))
    else:
        print(table(rows))
        print(f"\nmedians of {args.runs} run(s); floor = iproute2 alone (no processes, cgroups or root "
              "filesystems); down = until the machine-side links are gone")
        for r in rows:
            if r["reach"]["failed"]:
                print(f"{r['scenario']}: unreachable pairs, e.g. {r['reach']['failed'][:3]}")
            if r["left_after_down"]:
                print(f"{r['scenario']}: links left after down: {r['left_after_down'][:5]}")
        if memory:
            print(memory_table(memory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
