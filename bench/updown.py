"""Wall time of netemu `up`/`down` for N hosts on one bridge, next to the kernel floor.

For each N (default 10 and 100) and each run (default 3) this measures, in the same process:

- the kernel floor: the same network objects made with iproute2 alone (N named network
  namespaces, a bridge with the gateway address, N veth pairs with one end in each namespace,
  an address on each, links up), timed for setup and for teardown;
- netemu through the Python API (`lab.up` / `lab.down`), with a ping h1 -> h2 after each up;
- with --cli, the same through `netemu up` / `netemu down` in a subprocess.

It prints medians over the runs (or JSON with --json). It asserts nothing about speed.
Run it as root:  .venv/bin/python bench/updown.py [--sizes 10,100] [--runs 3] [--cli] [--json]

Every object is removed in `finally` blocks, also on failure, Ctrl-C or SIGTERM.
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
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from labgen import bridge_lab_yaml, host_address

import netemu
from netemu import api
from netemu.errors import LabNotFound
from netemu.runtime import paths
from netemu.topology import load_topology_text

SUBNET = ipaddress.ip_network("10.77.0.0/16")  # netemu lab
FLOOR_SUBNET = ipaddress.ip_network("10.78.0.0/16")  # floor objects: never the same addresses
FLOOR_PREFIX = "nbf-"
FLOOR_BRIDGE = "nbf-br"
LOCK_FILE = Path("/run/lock/netemu-bench-updown.lock")
SETTLE_TIMEOUT = 30.0  # seconds to wait for the kernel to finish destroying links
SYS_NET = Path("/sys/class/net")
NETNS_DIR = Path("/run/netns")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A step of the benchmark failed (not a timing: timings never fail)."""


# signals ---------------------------------------------------------------------------------------
def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Defer SIGINT/SIGTERM while cleaning up, so a second Ctrl-C cannot leave objects behind;
    a signal that arrived meanwhile is raised once the cleanup is done."""
    pending: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM)
    old = {sig: signal.signal(sig, lambda s, _f: pending.append(s)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt(f"signal {pending[0]} during cleanup")


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """Ctrl-C and a failed step end the script with 130 and 1 (everything made was removed by
    the `finally` blocks on the way out)."""
    try:
        yield
    except KeyboardInterrupt:
        log("interrupted: everything created was removed")
        raise SystemExit(130) from None
    except BenchError as e:
        log(f"bench: {e}")
        raise SystemExit(1) from None


# helpers ---------------------------------------------------------------------------------------
def gateway(subnet: ipaddress.IPv4Network) -> str:
    return f"{subnet.network_address + 1}/{subnet.prefixlen}"


def run_ip(argv: list[str], batch: list[str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    stdin = "".join(line + "\n" for line in batch) if batch is not None else None
    result = subprocess.run(["ip", *argv], input=stdin, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise BenchError(f"ip {' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return result


def links_named(pred: Callable[[str], bool]) -> list[str]:
    try:
        return sorted(n for n in os.listdir(SYS_NET) if pred(n))
    except FileNotFoundError:
        return []


def netns_named(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def wait_gone(names: list[str], timeout: float = SETTLE_TIMEOUT) -> list[str]:
    """Poll until none of these machine-side links exists; return those still there at timeout."""
    deadline = time.monotonic() + timeout
    left = [n for n in names if (SYS_NET / n).exists()]
    while left and time.monotonic() < deadline:
        time.sleep(0.002)
        left = [n for n in left if (SYS_NET / n).exists()]
    return left


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# the kernel floor ------------------------------------------------------------------------------
def floor_names(n: int) -> tuple[list[str], list[str]]:
    return [f"{FLOOR_PREFIX}ns{i}" for i in range(1, n + 1)], [f"{FLOOR_PREFIX}v{i}" for i in range(1, n + 1)]


def floor_up(n: int) -> dict[str, float]:
    """One `ip -batch` in the machine's namespace, then one `ip -n NS -batch` per namespace
    (iproute2's batch mode cannot switch namespaces, and addresses do not survive a move)."""
    netns, veths = floor_names(n)
    machine = [f"netns add {ns}" for ns in netns]
    machine += [f"link add {FLOOR_BRIDGE} type bridge",
                f"addr add {gateway(FLOOR_SUBNET)} dev {FLOOR_BRIDGE}",
                f"link set {FLOOR_BRIDGE} up"]
    for ns, veth in zip(netns, veths, strict=True):
        machine += [f"link add {veth} type veth peer name eth0 netns {ns}",
                    f"link set {veth} master {FLOOR_BRIDGE} up"]
    start = time.perf_counter()
    run_ip(["-batch", "-"], machine)
    mid = time.perf_counter()
    for i, ns in enumerate(netns, start=1):
        run_ip(["-n", ns, "-batch", "-"],
               [f"addr add {host_address(FLOOR_SUBNET, i)} dev eth0", "link set eth0 up", "link set lo up"])
    end = time.perf_counter()
    return {"up": end - start, "up_machine_batch": mid - start, "up_netns_batches": end - mid}


def floor_ping() -> bool:
    peer = host_address(FLOOR_SUBNET, 2).split("/")[0]
    result = subprocess.run(["ip", "netns", "exec", f"{FLOOR_PREFIX}ns1", "ping", "-c1", "-W1", peer],
                            capture_output=True, text=True)
    return result.returncode == 0


def floor_down(n: int) -> dict[str, float]:
    """`ip -batch` deleting the namespaces and the bridge. The kernel destroys a namespace (and
    so the veth pairs) asynchronously after `netns del` returns, so "down" is timed until the
    last machine-side veth is gone; "down_returned" is when `ip` returned."""
    netns, veths = floor_names(n)
    start = time.perf_counter()
    run_ip(["-batch", "-"], [f"netns del {ns}" for ns in netns] + [f"link del {FLOOR_BRIDGE}"])
    returned = time.perf_counter()
    left = wait_gone([*veths, FLOOR_BRIDGE])
    end = time.perf_counter()
    if left:
        raise BenchError(f"floor links still present {SETTLE_TIMEOUT:.0f}s after deletion: {left[:5]}")
    return {"down": end - start, "down_returned": returned - start}


def floor_cleanup() -> list[str]:
    """Remove every floor object, whatever state a run stopped in. Returns what it removed."""
    removed: list[str] = []
    netns = netns_named(FLOOR_PREFIX)
    batch = [f"netns del {ns}" for ns in netns]
    links = links_named(lambda n: n.startswith(FLOOR_PREFIX))
    batch += [f"link del {name}" for name in links if not name.startswith(f"{FLOOR_PREFIX}v")]
    if batch:
        run_ip(["-force", "-batch", "-"], batch, check=False)
        removed += netns + links
    # veths whose namespace is gone go away by themselves; any still there after that are deleted
    for name in wait_gone(links_named(lambda n: n.startswith(FLOOR_PREFIX)), timeout=10):
        run_ip(["link", "del", name], check=False)
    return removed


# netemu ----------------------------------------------------------------------------------------
def topology_yaml(name: str, n: int) -> str:
    return bridge_lab_yaml(name, n, SUBNET)


def lab_links(name: str, n: int) -> list[str]:
    """The machine-side objects a lab of n hosts on network `lan` has, by netemu's naming rules."""
    veths = [paths.host_veth_name(name, f"h{i}", "eth0") for i in range(1, n + 1)]
    return [paths.bridge_name(name, "lan"), *veths]


def lab_exists(name: str) -> bool:
    return paths.state_dir(name).exists() or bool(netns_named(paths.netns_prefix(name)))


def netemu_ping(name: str) -> bool:
    peer = host_address(SUBNET, 2).split("/")[0]
    try:
        result = netemu.Lab(name).exec("h1", ["ping", "-c1", "-W1", peer], timeout=10)
    except Exception as e:
        log(f"  ping from {name}:h1 raised {type(e).__name__}: {e}")
        return False
    return result.returncode == 0


def settle_after_down(name: str, n: int, down_start: float, returned: float) -> dict[str, Any]:
    """After `down` returned: wait for the lab's veths to vanish (they may go asynchronously with
    their namespace) and note what netemu left behind. The leftovers are then removed here,
    untimed, so the next run starts clean."""
    bridge, *veths = lab_links(name, n)
    left_veths = wait_gone(veths)
    gone = time.perf_counter()
    leftovers = [x for x in [bridge, *left_veths] if (SYS_NET / x).exists()]
    leftovers += netns_named(paths.netns_prefix(name))
    if paths.state_dir(name).exists():
        leftovers.append(str(paths.state_dir(name)))
    if paths.layers_dir(name).exists():
        leftovers.append(str(paths.layers_dir(name)))
    cgroup = Path("/sys/fs/cgroup") / paths.cgroup_path(name)
    if cgroup.exists():
        leftovers.append(str(cgroup))
    return {"down": gone - down_start, "down_returned": returned - down_start, "leftovers": leftovers}


def lab_cleanup(name: str, n: int) -> None:
    """Take the lab down if anything of it exists, then remove what netemu's down left."""
    if lab_exists(name):
        try:
            api.down(name)
        except LabNotFound:
            pass
        except Exception as e:
            log(f"  netemu down {name} during cleanup failed: {type(e).__name__}: {e}")
    bridge, *veths = lab_links(name, n)
    for link in [*wait_gone(veths, timeout=10), bridge]:
        if (SYS_NET / link).exists():
            run_ip(["link", "del", link], check=False)


def api_run(name: str, n: int) -> dict[str, Any]:
    topo = load_topology_text(topology_yaml(name, n), "gen.yaml")
    try:
        start = time.perf_counter()
        api.up(topo)
        up = time.perf_counter() - start
        ping = netemu_ping(name)
        start = time.perf_counter()
        api.down(name)
        returned = time.perf_counter()
        return {"up": up, "ping": ping, **settle_after_down(name, n, start, returned)}
    finally:
        with shielded():
            lab_cleanup(name, n)


def run_child(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a netemu command; on Ctrl-C let it finish its own rollback instead of killing it."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate()
        except KeyboardInterrupt:
            with shielded():
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {result.returncode}: {(out + err).strip()[-800:]}")
    return result


def cli_run(name: str, n: int, workdir: Path) -> dict[str, Any]:
    exe = str(Path(sys.executable).with_name("netemu"))
    if not Path(exe).exists():
        exe = shutil.which("netemu") or exe
    topo_file = workdir / f"{name}.yaml"
    topo_file.write_text(topology_yaml(name, n))
    try:
        start = time.perf_counter()
        run_child([exe, "up", "-q", str(topo_file)])
        up = time.perf_counter() - start
        ping = netemu_ping(name)
        start = time.perf_counter()
        run_child([exe, "down", "-q", name])
        returned = time.perf_counter()
        return {"up": up, "ping": ping, **settle_after_down(name, n, start, returned)}
    finally:
        with shielded():
            lab_cleanup(name, n)


# the benchmark ---------------------------------------------------------------------------------
def bench_size(n: int, runs: int, cli: bool, workdir: Path) -> dict[str, Any]:
    samples: dict[str, list[float]] = {}
    checks: dict[str, list[bool]] = {"floor_ping": [], "netemu_ping": [], "cli_ping": []}
    leftovers: set[str] = set()

    def add(prefix: str, figures: dict[str, Any]) -> None:
        for key, value in figures.items():
            if isinstance(value, float):
                samples.setdefault(f"{prefix}_{key}", []).append(value)

    for run in range(1, runs + 1):
        log(f"N={n} run {run}/{runs}: floor")
        try:
            figures = floor_up(n)
            checks["floor_ping"].append(floor_ping())
            figures.update(floor_down(n))
            add("floor", figures)
        finally:
            with shielded():
                floor_cleanup()

        log(f"N={n} run {run}/{runs}: netemu (Python API)")
        result = api_run(f"bench{n}", n)
        checks["netemu_ping"].append(result["ping"])
        leftovers.update(result["leftovers"])
        add("netemu", result)

        if cli:
            log(f"N={n} run {run}/{runs}: netemu (CLI)")
            result = cli_run(f"benchc{n}", n, workdir)
            checks["cli_ping"].append(result["ping"])
            leftovers.update(result["leftovers"])
            add("cli", result)

    med = {key: median(values) for key, values in samples.items()}
    row: dict[str, Any] = {
        "n": n,
        "runs": runs,
        "floor_up_s": med["floor_up"],
        "netemu_up_s": med["netemu_up"],
        "ratio_up": ratio(med["netemu_up"], med["floor_up"]),
        "floor_down_s": med["floor_down"],
        "netemu_down_s": med["netemu_down"],
        "ratio_down": ratio(med["netemu_down"], med["floor_down"]),
        "floor_ping_ok": sum(checks["floor_ping"]),
        "netemu_ping_ok": sum(checks["netemu_ping"]),
        "medians_s": med,
        "samples_s": samples,
        "netemu_left_after_down": sorted(leftovers),
    }
    if cli:
        row.update({"cli_up_s": med["cli_up"], "cli_down_s": med["cli_down"],
                    "cli_ping_ok": sum(checks["cli_ping"])})
    return row


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def fmt_x(value: float | None) -> str:
    return "-" if value is None else f"x{value:.1f}"


def table(rows: list[dict[str, Any]], cli: bool) -> str:
    head = ["N", "floor up", "netemu up", "ratio up", "floor down", "netemu down", "ratio down"]
    if cli:
        head += ["cli up", "cli down"]
    head += ["ping h1->h2"]
    body = []
    for r in rows:
        line = [str(r["n"]), fmt_s(r["floor_up_s"]), fmt_s(r["netemu_up_s"]), fmt_x(r["ratio_up"]),
                fmt_s(r["floor_down_s"]), fmt_s(r["netemu_down_s"]), fmt_x(r["ratio_down"])]
        if cli:
            line += [fmt_s(r["cli_up_s"]), fmt_s(r["cli_down_s"])]
        pings = f"{r['netemu_ping_ok']}/{r['runs']}"
        if cli:
            pings += f" (cli {r['cli_ping_ok']}/{r['runs']})"
        body.append([*line, pings])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    out = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in [head, *body]]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def preflight(sizes: list[int], cli: bool) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the benchmark creates namespaces, links and containers")
    if shutil.which("ip") is None:
        raise BenchError("iproute2's `ip` is not installed")
    for n in sizes:
        for name in [f"bench{n}"] + ([f"benchc{n}"] if cli else []):
            if paths.state_dir(name).exists():
                raise BenchError(f"a lab named {name} exists already: take it down first "
                                 f"(netemu down {name})")
            if lab_exists(name):
                raise BenchError(f"leftovers of a lab named {name} exist: remove them first "
                                 f"(netemu down {name})")
            bridge = paths.bridge_name(name, "lan")
            if (SYS_NET / bridge).exists():  # what an earlier netemu down of this lab left behind
                log(f"removing {bridge}, left by an earlier `netemu down {name}`")
                run_ip(["link", "del", bridge])
    stale = netns_named(FLOOR_PREFIX) + links_named(lambda n: n.startswith(FLOOR_PREFIX))
    if stale:
        log(f"removing stale floor objects of an earlier run: {', '.join(stale[:8])}")
        floor_cleanup()


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or any(n < 2 or n > 60000 for n in sizes):
        raise argparse.ArgumentTypeError("each size must be between 2 and 60000 (the ping needs two hosts)")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[10, 100], help="host counts, e.g. 10,100")
    parser.add_argument("--runs", type=int, default=3, help="runs per size; medians are reported")
    parser.add_argument("--cli", action="store_true", help="also time `netemu up/down` as subprocesses")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    signal.signal(signal.SIGTERM, _sigterm)
    with exit_codes():
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        with open(LOCK_FILE, "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BenchError(f"another run of this benchmark holds {LOCK_FILE}") from None
            preflight(args.sizes, args.cli)
            with tempfile.TemporaryDirectory(prefix="netemu-bench-") as workdir:
                rows = [bench_size(n, args.runs, args.cli, Path(workdir)) for n in args.sizes]

    if args.json:
        meta = {"kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count(),
                "netemu": netemu.__version__, "iproute2": run_ip(["-V"]).stdout.strip()}
        print(json.dumps({"meta": meta, "results": rows}, indent=2))
    else:
        print(table(rows, args.cli))
        print(f"\nmedians of {args.runs} run(s); floor = iproute2 `ip -batch` alone; down = until the "
              "machine-side links are gone")
        for r in rows:
            if r["netemu_ping_ok"] < r["runs"] or r["floor_ping_ok"] < r["runs"]:
                print(f"N={r['n']}: ping failures: netemu {r['runs'] - r['netemu_ping_ok']}, "
                      f"floor {r['runs'] - r['floor_ping_ok']}")
            if r["netemu_left_after_down"]:
                left = r["netemu_left_after_down"]
                print(f"N={r['n']}: netemu down left behind (removed by the bench): {', '.join(left[:6])}"
                      + (" ..." if len(left) > 6 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
