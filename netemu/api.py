"""netemu's one facade (docs/contract.md §4). The command line, the pytest plugin and the
benchmarks call these functions and nothing below them, as Kathara's CLI talks to its one
manager; a second backend (labs across machines) would sit behind the same names.

- module functions: every operation, by lab name (`up`, `down`, `labs`, `inspect`, `link`,
  `node`, `exec`, `probe`, `check`, the image store). They return typed results (records,
  views, reports) that the caller renders; progress goes to an optional `say(message)`
  callback (netemu.progress).
- `Lab`: one running lab as an object, `with Lab.up("file.yaml") as lab: ...`, taken down on
  exit; the same operations bound to its name, plus a history of the probes and checks run.

Every failure is a NetemuError with one located line and the contract's exit code."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from netemu.errors import InputError, LabError, LabExists
from netemu.topology import Topology, load_topology
from netemu.topology.runspec import RunSpec

if TYPE_CHECKING:
    from netemu.images import ImageInfo
    from netemu.probe.checks import CheckReport, CheckResult, CheckSet, Convergence
    from netemu.probe.model import ProbeResult, ReachMatrix
    from netemu.runtime.cleanup import Removed
    from netemu.runtime.inspection import LabSummary, LabView, NodeSummary
    from netemu.runtime.records import LabRecord

Say = Callable[[str], None]
Seconds = float | int | str  # 2, 0.5, "30s", "500ms": as a topology file writes durations
Result = Any  # ProbeResult | CheckResult | CheckReport | ReachMatrix, kept in Lab.history
NODE_ACTIONS = ("stop", "start", "restart")
PULL_POLICIES = ("always", "missing", "never")


# --- files and names --------------------------------------------------------------------------
def load(file: str | Path) -> Topology:
    """A validated topology (`netemu validate`); nothing touches the kernel."""
    return load_topology(file)


def is_file_argument(target: str) -> bool:
    """A topology file (netemu's or containerlab's YAML, a Kathara `lab.conf`) or a Kathara lab
    directory, rather than a lab name: lab names hold neither '/' nor '.', so nothing else is
    taken for a file but a directory of that name holding a lab.conf."""
    if target.endswith((".yaml", ".yml")) or "/" in target or target == "lab.conf":
        return True
    try:
        return Path(target).is_dir() and Path(target, "lab.conf").is_file()
    except OSError:  # a name too long to be a path is no directory either
        return False


def lab_name(target: str) -> str:
    """`down` and friends take a lab name or the topology file that names it."""
    return load_topology(target).name if is_file_argument(target) else target


def record(name: str) -> LabRecord:
    """The typed record of lab `name` (LabNotFound, exit 2, when there is none)."""
    from netemu.runtime import state

    return state.load(name)


def topology_of(target: str) -> Topology:
    """A topology file's model, or a running lab's as `up` settled it (with its addresses)."""
    from netemu.runtime import state

    if is_file_argument(target) or _is_file(target):
        return load_topology(target)
    topo = state.load_topology(target)
    if topo is None:
        raise InputError(f"{target}: neither a topology file nor a running lab (netemu ps lists the labs)")
    _live_addresses(topo, inspect(target))
    return topo


def _is_file(target: str) -> bool:
    try:
        return Path(target).is_file()
    except OSError:
        return False


def _live_addresses(topo: Topology, view: LabView) -> None:
    """A running lab's picture shows the addresses its hosts have now: a link end the file gave
    none (a routing daemon or an `exec:` step set them) gets the kernel's, link-local left out."""
    import ipaddress

    for link in topo.links:
        ends = list(link.addresses)
        for position, (endpoint, addrs) in enumerate(zip(link.endpoints, link.addresses, strict=True)):
            node = view.nodes.get(endpoint.node or "")
            iface = node.interface(endpoint.iface or "") if node is not None and not endpoint.is_network else None
            if iface is not None and not addrs:
                found = [ipaddress.ip_interface(a) for a in iface.addresses]
                ends[position] = [a for a in found if not a.ip.is_link_local]
        link.addresses = (ends[0], ends[1])


# --- lifecycle --------------------------------------------------------------------------------
def up(topology: str | Path | Topology, *, progress: Say | None = None, pull: str = "missing") -> LabRecord:
    """Create a lab; on any failure nothing is left. `pull` is Docker's --pull for registry images."""
    from netemu.runtime import lab

    topo = topology if isinstance(topology, Topology) else load_topology(topology)
    _check_choice("pull", pull, PULL_POLICIES)
    ensure_images(topo, pull, progress)
    return lab.up(topo, progress=progress)


def ensure_images(topo: Topology, pull: str = "missing", progress: Say | None = None) -> None:
    """Every image the nodes name is in the store (pulled under the `pull` policy) before
    anything is created, so a missing image costs no rollback. Each node then names the image
    it got by its stored name: under `always`, a pulled `busybox` must win over an imported one."""
    from netemu import images

    got: dict[str, str] = {}
    for node in topo.nodes.values():
        if not _registry_image(node.image):
            continue
        if node.image not in got:
            got[node.image] = images.ensure_image(node.image, policy=pull, progress=progress).name
        node.image = got[node.image]


def _registry_image(image: str) -> bool:
    """Not `host` and not a directory: a name the store or a registry resolves."""
    from netemu.topology.model import is_stored_image

    return is_stored_image(image)


def down(name: str, *, progress: Say | None = None) -> Removed:
    """Remove everything lab `name` created; idempotent (nothing left: nothing removed)."""
    from netemu.runtime import lab

    if progress:
        progress(f"removing lab '{name}'")
    return lab.down(name)


def labs() -> list[LabSummary]:
    """Every lab on the machine (`netemu ps`)."""
    from netemu.runtime import inspection

    return inspection.list_labs()


def lab_nodes() -> list[NodeSummary]:
    """Every node of every lab (`netemu ps --nodes`)."""
    from netemu.runtime import inspection

    return inspection.list_nodes()


def inspect(name: str) -> LabView:
    """The lab's record joined with what the kernel says now (`netemu inspect`)."""
    from netemu.runtime import inspection

    return inspection.inspect(record(name))


def clean() -> dict[str, Removed]:
    """Remove every netemu object that no live lab accounts for."""
    from netemu.runtime import lab

    return lab.clean()


def require_root() -> None:
    from netemu.linux.privilege import require_root as check

    check()


# --- inside hosts -----------------------------------------------------------------------------
def exec_command(name: str, node: str, argv: list[str] | str, *, env: dict[str, str] | None = None,
         timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in a node (all its namespaces, its cgroup, its confinement); a string runs
    through /bin/sh -c."""
    from netemu.runtime import execution

    args = ["/bin/sh", "-c", argv] if isinstance(argv, str) else list(argv)
    return execution.run(record(name), node, args, env=env, timeout=timeout, input=input)


def attach(name: str, node: str, argv: list[str], *, env: dict[str, str] | None = None,
           tty: bool = False) -> NoReturn:
    """Become a command in a node (`netemu exec`): this process is replaced, its exit code is the command's."""
    from netemu.runtime import execution

    execution.replace_process(record(name), node, argv, env=env, tty=tty)
    raise AssertionError("replace_process returns only by raising")


def run(spec: RunSpec, *, pull: str = "missing", display: Callable[[], Any] | None = None,
        announce: Say | None = None) -> int:
    """`netemu run`: the one-host lab the options describe, up (under `display()`, a context
    giving a progress callback). Detached (`-d`) the host runs the command itself, `announce`
    hears the lab's name, and the result is 0. Otherwise the host's main program runs on the
    caller's terminal and the result is its exit code; then the host stops, as Docker's
    container does, or with `--rm` the lab is removed: also when anything fails, or a signal
    comes, once `up` began, but never a lab of that name that was there before."""
    import contextlib
    import os

    from netemu.topology import runspec

    name = runspec.lab_name(spec)
    ours = True
    try:
        try:
            with display() if display else contextlib.nullcontext(None) as say:
                up(runspec.topology(spec, name, dict(os.environ)), progress=say, pull=pull)
        except LabExists:
            ours = False  # somebody else's lab: not ours to stop or remove
            raise
        if spec.detach:
            ours = False
            if announce:
                announce(name)
            return 0
        return _run_main(name, spec)
    finally:
        if ours:
            _run_finished(name, spec)


def _run_main(name: str, spec: RunSpec) -> int:
    """The host's main program (the image's Entrypoint, then COMMAND or the image's Cmd) on the
    caller's terminal; its exit code."""
    from netemu.runtime import execution, nodes, state

    saved = state.load_topology(name)  # never a file of that name in the current directory
    if saved is None:
        raise LabError(f"lab '{name}' lost its saved topology")
    node = saved.nodes[name]
    argv = nodes.command(node)
    if not argv:
        raise InputError(f"{spec.image}: the image has no Cmd or Entrypoint: give a command")
    info = nodes.image_of(node)
    return execution.run_attached(record(name), name, argv, tty=spec.tty, stdin=spec.interactive,
                                  cwd=info.working_dir if info is not None and info.working_dir else None)


def _run_finished(name: str, spec: RunSpec) -> None:
    """--rm: the lab removed; else its host stopped. Signals wait until it is done: a second
    SIGTERM or Ctrl-C must not leave it half removed. A lab that `up` rolled back is gone."""
    from netemu.runtime import execution, state

    with execution.shielded():
        found = state.read(name)
        if spec.remove:
            down(name)
        elif found is not None and name in found.nodes and found.nodes[name].alive:
            node_action(name, name, "stop")


# --- failure injection ------------------------------------------------------------------------
def link_action(name: str, endpoint: str, action: str, *, period: Seconds = 1.0, count: int = 3, clear: bool = False,
         say: Say | None = None, **impair: str) -> dict[str, str]:
    """Take a link end `down` or `up`, `flap` it, or `set` its impairment (delay=, loss=, rate=,
    ...; clear=True removes the others first). Returns the impairment now in force for `set`."""
    from netemu.runtime import links
    from netemu.topology import check_impairment

    _check_choice("action", action, ("up", "down", "set", "flap"))
    if action in ("up", "down"):
        links.set_state(name, endpoint, up=action == "up")
    elif action == "flap":
        links.flap(name, endpoint, seconds(period, "--period"), count, say=say)
    else:
        changes = {key: _parsed(lambda text, key=key: check_impairment(key, text), str(value), f"--{key}")
                   for key, value in impair.items() if value is not None}
        if not changes and not clear:
            raise InputError("set: give at least one impairment (--delay, --jitter, --loss, --rate, --corrupt, "
                             "--duplicate) or --clear")
        return links.set_impairment(name, endpoint, changes, clear=clear)
    return {}


def node_action(name: str, node: str, action: str) -> None:
    """Node failure: `stop` a host (its writable layer kept), `start` it with its links, `restart`."""
    from netemu.runtime import nodectl

    _check_choice("action", action, NODE_ACTIONS)
    {"stop": nodectl.stop, "start": nodectl.start, "restart": nodectl.restart}[action](name, node)


# --- images -----------------------------------------------------------------------------------
def import_image(file: str, name: str | None = None, *, progress: Say | None = None,
                 max_size: str | None = None) -> list[ImageInfo]:
    """Import a `docker save` archive or an OCI layout (tar or directory) into the store."""
    from netemu import images

    require_root()
    max_bytes = None if max_size is None else _parsed(images.parse_size, max_size, "--max-size")
    return list(images.import_archive(file, name, progress=progress, max_bytes=max_bytes))


def pull_image(ref: str, *, policy: str = "always", progress: Say | None = None) -> ImageInfo:
    """Fetch an image from a registry (or the local Docker daemon) into the store."""
    from netemu import images

    require_root()
    _check_choice("pull", policy, PULL_POLICIES)
    return images.pull(ref, policy=policy, progress=progress)


def list_images() -> list[ImageInfo]:
    from netemu import images

    return images.list_images()


def remove_image(name: str) -> list[str]:
    """Remove an image and the layers no other image uses; refused while a lab uses it."""
    from netemu import images
    from netemu.runtime.nodes import labs_using_image

    require_root()
    return images.remove_image(name, in_use=labs_using_image)


# --- probes and checks ------------------------------------------------------------------------
def probe(name: str, src: str, dst: str, proto: str = "icmp", port: int | None = None, *,
          timeout: Seconds = 2.0, trace: bool = False) -> ProbeResult:
    """One probe from node `src` to `dst` (a node, node:iface or an address), crafted with scapy
    inside src's network namespace; see Lab.probe."""
    from netemu import probe as probing

    request = probing.ProbeRequest(src, dst, proto=proto, port=port, timeout=seconds(timeout, "timeout"),
                                   trace=trace)
    return probing.probe(record(name), request)


def reach(name: str, timeout: Seconds = 2.0) -> ReachMatrix:
    from netemu import probe as probing

    return probing.reach(record(name), timeout=seconds(timeout, "timeout"))


def load_checks(file: str | Path, lab: str | None = None) -> CheckSet:
    """The checks of a topology or checks file, validated against the running lab's shape."""
    from netemu.probe import checks

    return checks.load_checks(file, lab)


def check(checkset: CheckSet, *, timeout: Seconds | None = None, progress: Say | None = None) -> CheckReport:
    """Run a set of checks against its lab."""
    from netemu.probe import checks

    limit = None if timeout is None else seconds(timeout, "timeout")
    return checks.run_checks(record(checkset.lab), checkset.checks, file=checkset.file, timeout=limit,
                             progress=progress)


def convergence(reports: list[CheckReport]) -> list[Convergence]:
    """Per check, over repeated runs of the same checks: the runs it passed, and its passed_after."""
    from netemu.probe import checks

    return checks.convergence(reports)


# --- shell completion: state files only, never the kernel, never an error -----------------------
def lab_names_quietly() -> list[str]:
    from netemu.runtime import state

    try:
        return state.lab_names()
    except OSError:  # not root: the state is root's alone
        return []


def record_quietly(target: str) -> LabRecord:
    """The record of a lab (or of the lab a file names), or an empty one."""
    from netemu.errors import NetemuError
    from netemu.runtime import state
    from netemu.runtime.records import LabRecord

    try:
        return state.read(lab_name(target)) or LabRecord(name=target)
    except (NetemuError, OSError):
        return LabRecord(name=target)


# --- values as the file writes them -----------------------------------------------------------
def seconds(value: Seconds, what: str) -> float:
    """A duration as in a topology file: a number of seconds, or "30s", "500ms", "2m"."""
    from netemu.topology import parse_duration

    if isinstance(value, bool):
        raise InputError(f"{what} must be a duration, not {value!r}")
    number = float(value) if isinstance(value, int | float) else _parsed(parse_duration, str(value), what)
    if number <= 0:
        raise InputError(f"{what} must be a positive duration, not {value!r}")
    return float(number)


def _parsed(parser: Callable[[str], Any], text: str, what: str) -> Any:
    try:
        return parser(text)
    except ValueError as e:
        raise InputError(f"{what}: {e}") from None


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{what} must be one of {', '.join(choices)}, not {value!r}")


class Lab:
    """A running lab. Use it as a context manager: it is taken down on exit, even on error."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.history: list[Result] = []  # probes and checks run through this object, oldest first

    @classmethod
    def up(cls, topology: str | Path | Topology, *, progress: Say | None = None, pull: str = "missing") -> Lab:
        return cls(up(topology, progress=progress, pull=pull).name)

    @classmethod
    def attach(cls, name: str) -> Lab:
        record(name)
        return cls(name)

    def down(self) -> None:
        down(self.name)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def inspect(self) -> LabView:
        return inspect(self.name)

    @property
    def record(self) -> LabRecord:
        return record(self.name)

    @property
    def nodes(self) -> list[str]:
        return list(record(self.name).nodes)

    def pid(self, node: str) -> int:
        info = record(self.name).nodes[node]
        if info.pid is None:
            raise LabError(f"node {node} is stopped: it has no pid")
        return info.pid

    def exec(self, node: str, argv: list[str] | str, *, check: bool = False, env: dict[str, str] | None = None,
             timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in a node; a string runs through /bin/sh -c."""
        result = exec_command(self.name, node, argv, env=env, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise LabError(f"{node}: {result.args!r} exited with {result.returncode}: "
                           f"{(result.stdout + result.stderr).strip()[-2000:]}")
        return result

    def link(self, endpoint: str, action: str, **options: Any) -> dict[str, str]:
        """Failure injection on NODE:IF: "down", "up", "flap" (period=, count=) or "set" (delay=,
        loss=, rate=, ..., clear=)."""
        return link_action(self.name, endpoint, action, **options)

    def node(self, node: str, action: str) -> None:
        """"stop", "start" or "restart" a host."""
        node_action(self.name, node, action)

    # --- probes and checks (netemu.probe) ---------------------------------------------------
    def probe(self, src: str, dst: str, proto: str = "icmp", port: int | None = None, *, timeout: Seconds = 2.0,
              trace: bool = False) -> ProbeResult:
        """One probe from node `src` to `dst` (a node, node:iface or an address), crafted with
        scapy inside src's network namespace. proto: icmp, tcp or udp (with a port), or arp (ARP
        or NDP for a neighbour). The result has .reachable, .outcome (reachable, unreachable or
        refused), .rtt (seconds), .reason and .evidence; with trace=True also .path."""
        result = probe(self.name, src, dst, proto, port, timeout=timeout, trace=trace)
        self.history.append(result)
        return result

    def reach(self, timeout: Seconds = 2.0) -> ReachMatrix:
        """The all-pairs ICMP reachability matrix (every node to every other node's first address)."""
        matrix = reach(self.name, timeout)
        self.history.append(matrix)
        return matrix

    def check(self, src: str, dst: str, expect: str = "reachable", proto: str = "icmp", port: int | None = None,
              *, via: list[str] | None = None, path: str = "ordered", seen_as: str | None = None,
              within: Seconds | None = None, timeout: Seconds | None = None) -> CheckResult:
        """One check, as in a topology file's `checks:`; durations as the file writes them
        ("30s", "500ms", or seconds). The result is true when it passed; `assert lab.check(...)`
        prints what was expected and what was seen when it did not."""
        return self._run_one({"from": src, "to": dst, "expect": expect, "proto": proto, "port": port, "via": via,
                              "path": path, "seen_as": seen_as, "within": within, "timeout": timeout})

    def route(self, on: str, route: str, *, via: str | list[str] | None = None, dev: str | None = None,
              proto: str | None = None, table: str | int = "main", expect: str = "present",
              within: Seconds | None = None) -> CheckResult:
        """A route check on `on`'s own FIB, read over netlink: `route` ("default" or a CIDR) with
        these next hops (all of them, of an ECMP route), device, protocol (ospf, bgp, static, a
        number) and table, `present` or `absent`."""
        return self._run_one({"on": on, "route": route, "via": via, "dev": dev, "proto": proto, "table": table,
                              "expect": expect, "within": within})

    def command(self, on: str, argv: list[str] | str, *, exit: int | str = 0, json: dict[str, Any] | None = None,
                regex: str | None = None, within: Seconds | None = None,
                timeout: Seconds | None = None) -> CheckResult:
        """A command check: `argv` in `on` passes when it exits `exit` ("any": any code), each
        JSON path of `json` (`neighbors["10.0.0.2"][0].nbrState`) equals its value in the output,
        and `regex` matches a line of it. The escape hatch for state only a daemon holds."""
        return self._run_one({"on": on, "exec": argv, "exit": exit, "json": json, "regex": regex, "within": within,
                              "timeout": timeout})

    def _run_one(self, entry: dict[str, Any]) -> CheckResult:
        """One check written as a file writes it (None: left out), read by the file's own rules."""
        from netemu.probe import checks

        lab = record(self.name)
        written = {key: value for key, value in entry.items() if value is not None}
        (parsed,) = checks.parse_entries(lab, [written])
        result = checks.run_checks(lab, [parsed]).results[0]
        self.history.append(result)
        return result

    def checks(self, path: str | Path | None = None, *, timeout: Seconds | None = None) -> CheckReport:
        """Run the checks of `path` (a topology or checks file; default: the file this lab was
        made from) against this lab. The report is true when every check passed."""
        source = path or record(self.name).file
        if not source:
            raise InputError(f"lab '{self.name}' was not made from a file: give the checks file")
        report = check(load_checks(source, lab=self.name), timeout=timeout)
        self.history.append(report)
        return report

    def assert_checks(self, path: str | Path | None = None, *, timeout: Seconds | None = None) -> CheckReport:
        """Like checks(), but raise AssertionError listing every failed check with its evidence."""
        __tracebackhide__ = True  # pytest: show the test's line, not this one
        report = self.checks(path, timeout=timeout)
        if not report.passed:
            raise AssertionError(report.failure_message())
        return report
