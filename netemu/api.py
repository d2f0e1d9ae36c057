"""The Python API (docs/contract.md §4): `with Lab.up("file.yaml") as lab: ...`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netemu.errors import InputError, LabError
from netemu.runtime import execution
from netemu.runtime import lab as runtime
from netemu.topology import Topology, load_topology

if TYPE_CHECKING:
    from netemu.probe.checks import CheckReport, CheckResult
    from netemu.probe.model import ProbeResult, ReachMatrix

Result = Any  # ProbeResult | CheckResult | CheckReport | ReachMatrix, kept in Lab.history


class Lab:
    """A running lab. Use it as a context manager: it is taken down on exit, even on error."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.history: list[Result] = []  # probes and checks run through this object, oldest first

    @classmethod
    def up(cls, topology: str | Path | Topology) -> Lab:
        topo = topology if isinstance(topology, Topology) else load_topology(topology)
        runtime.up(topo)
        return cls(topo.name)

    @classmethod
    def attach(cls, name: str) -> Lab:
        runtime.load_record(name)
        return cls(name)

    def down(self) -> None:
        runtime.down(self.name)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def inspect(self) -> dict[str, Any]:
        from netemu.runtime import inspection

        return inspection.inspect(self.name)

    @property
    def nodes(self) -> list[str]:
        return list(runtime.load_record(self.name).nodes)

    def pid(self, node: str) -> int:
        info = runtime.load_record(self.name).nodes[node]
        if info.pid is None:
            raise TypeError(f"node {node} is stopped: it has no pid")
        return info.pid

    def exec(self, node: str, argv: list[str] | str, *, check: bool = False, env: dict[str, str] | None = None,
             timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in a node; a string runs through /bin/sh -c."""
        args = ["/bin/sh", "-c", argv] if isinstance(argv, str) else list(argv)
        result = execution.run(runtime.load_record(self.name), node, args, env=env, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise LabError(f"{node}: {args!r} exited with {result.returncode}: "
                           f"{(result.stdout + result.stderr).strip()[-2000:]}")
        return result

    # --- probes and checks (netemu.probe) ---------------------------------------------------
    def probe(self, src: str, dst: str, proto: str = "icmp", port: int | None = None, *, timeout: float = 2.0,
              trace: bool = False) -> ProbeResult:
        """One probe from node `src` to `dst` (a node, node:iface or an address), crafted with
        scapy inside src's network namespace. proto: icmp, tcp or udp (with a port), or arp (ARP
        or NDP for a neighbour). The result has .reachable, .outcome (reachable, unreachable or
        refused), .rtt (seconds), .reason and .evidence; with trace=True also .path."""
        from netemu import probe as probing

        request = probing.ProbeRequest(src, dst, proto=proto, port=port, timeout=timeout, trace=trace)
        result = probing.probe(runtime.load_record(self.name), request)
        self.history.append(result)
        return result

    def reach(self, timeout: float = 2.0) -> ReachMatrix:
        """The all-pairs ICMP reachability matrix (every node to every other node's first address)."""
        from netemu import probe as probing

        matrix = probing.reach(runtime.load_record(self.name), timeout=timeout)
        self.history.append(matrix)
        return matrix

    def check(self, src: str, dst: str, expect: str = "reachable", proto: str = "icmp", port: int | None = None,
              *, via: list[str] | None = None, seen_as: str | None = None, within: float | None = None,
              timeout: float | None = None) -> CheckResult:
        """One check, as in a topology file's `checks:`. The result is true when it passed;
        `assert lab.check(...)` prints what was expected and what was seen when it did not."""
        from netemu.probe import checks

        check = _make_check(src, dst, expect, proto, port, via, seen_as, within, timeout)
        result = checks.run_checks(runtime.load_record(self.name), [check]).results[0]
        self.history.append(result)
        return result

    def checks(self, path: str | Path | None = None, *, timeout: float | None = None) -> CheckReport:
        """Run the checks of `path` (a topology or checks file; default: the file this lab was
        made from) against this lab. The report is true when every check passed."""
        from netemu.probe import checks

        record = runtime.load_record(self.name)
        source = path or record.file
        if not source:
            raise InputError(f"lab '{self.name}' was not made from a file: give the checks file")
        checkset = checks.load_checks(source, lab=self.name)
        report = checks.run_checks(record, checkset.checks, file=str(source), timeout=timeout)
        self.history.append(report)
        return report

    def assert_checks(self, path: str | Path | None = None, *, timeout: float | None = None) -> CheckReport:
        """Like checks(), but raise AssertionError listing every failed check with its evidence."""
        __tracebackhide__ = True  # pytest: show the test's line, not this one
        report = self.checks(path, timeout=timeout)
        if not report.passed:
            raise AssertionError(report.failure_message())
        return report


def _make_check(src: str, dst: str, expect: str, proto: str, port: int | None, via: list[str] | None,
                seen_as: str | None, within: float | None, timeout: float | None) -> Any:
    """A checks-file entry from arguments, with the loader's rules and error messages' spirit."""
    import ipaddress

    from netemu.probe.model import OUTCOMES, PROTOS
    from netemu.topology.model import Check

    if expect not in OUTCOMES:
        raise InputError(f"expect must be one of {', '.join(OUTCOMES)}, not {expect!r}")
    if proto not in PROTOS:
        raise InputError(f"proto must be one of {', '.join(PROTOS)}, not {proto!r}")
    if proto in ("tcp", "udp") and not port:
        raise InputError(f"proto {proto} needs a port")
    if proto in ("icmp", "arp") and (port or expect == "refused"):
        raise InputError(f"proto {proto} takes no port and cannot be refused")
    if seen_as is not None:
        try:
            seen_as = str(ipaddress.ip_address(seen_as))
        except ValueError:
            raise InputError(f"seen_as must be an address, not {seen_as!r}") from None
    for name, value in (("within", within), ("timeout", timeout)):
        if value is not None and value <= 0:
            raise InputError(f"{name} must be a positive number of seconds")
    return Check(src=src, dst=dst, expect=expect, proto=proto, port=port, via=list(via or []), seen_as=seen_as,
                 within=within, timeout=timeout)
