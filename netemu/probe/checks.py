"""Checks: load them (from a topology file or a separate checks file), run them against a
running lab, and judge each one by the packets its probe saw.

All checks of a run are probed concurrently. A check whose expectation does not hold yet and
that has a `within:` window is probed again (every RETRY_PAUSE seconds) until it holds or the
window, counted from the start of the run, is over. `timeout:` bounds each single probe."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netemu.errors import InputError, NetemuError, TopologyError
from netemu.probe import statechecks
from netemu.probe.model import ERROR, REACHABLE, REFUSED, ProbeRequest, ProbeResult
from netemu.progress import Say, Step
from netemu.runtime import state
from netemu.runtime.records import LabRecord
from netemu.topology import Invalid, Item, load_topology, parse_checks, parse_tree
from netemu.topology.loader import is_foreign
from netemu.topology.model import AnyCheck, Check, CommandCheck, Endpoint, Link, Node, RouteCheck

DEFAULT_TIMEOUT = 2.0
RETRY_PAUSE = 0.5
CHECKS_FILE_KEYS = ("lab", "checks")


# --- loading ----------------------------------------------------------------------------------
@dataclass
class CheckSet:
    lab: str
    checks: list[AnyCheck]
    file: str | None = None


def load_checks(path: str | Path, lab: str | None = None) -> CheckSet:
    """`path` is a topology file (its `checks:`) or a checks file: `{lab: NAME, checks: [...]}`
    or a bare list of checks. A checks file is validated against the running lab: its nodes and
    interfaces. `lab` overrides the lab the file names."""
    path = Path(path)
    if is_foreign(path):  # a containerlab or Kathara lab: its checks, if any, are the model's
        topo = load_topology(path)
        return CheckSet(lab or topo.name, topo.checks, str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(str(path), None, "", f"cannot read the file: {exc}") from None
    try:
        root = parse_tree(text)
    except Invalid as exc:
        raise TopologyError(str(path), exc.line, exc.path, exc.reason) from None
    if root is not None and isinstance(root.value, dict) and "nodes" in root.value:
        topo = load_topology(path)
        return CheckSet(lab or topo.name, topo.checks, str(path))
    try:
        return _checks_file(root, path, lab)
    except Invalid as exc:
        raise TopologyError(str(path), exc.line, exc.path, exc.reason) from None


def _checks_file(root: Item | None, path: Path, lab: str | None) -> CheckSet:
    if root is None:
        raise Invalid(1, "", "the file is empty: expected 'checks:' (and 'lab:'), or a topology")
    items = root
    if isinstance(root.value, dict):
        fields = root.mapping(CHECKS_FILE_KEYS, required=("checks",))
        items = fields["checks"]
        if lab is None and "lab" in fields:
            lab = str(fields["lab"].scalar())
    if lab is None:
        raise InputError(f"{path}: name the lab to check: add 'lab: NAME' to the file or pass --lab NAME")
    record = state.load(lab)
    nodes, links = _shape(record)
    return CheckSet(lab, parse_checks(items, nodes, links), str(path))


def parse_entries(record: LabRecord, entries: list[dict[str, Any]]) -> list[AnyCheck]:
    """Checks given as a file writes them (the Python API's), under the file's rules and
    messages: one reading of the format, whoever writes it."""
    import json

    try:
        root = parse_tree(json.dumps(entries))  # JSON is YAML: every value keeps its type
        nodes, links = _shape(record)
        return parse_checks(root, nodes, links)
    except Invalid as exc:
        raise TopologyError("<api>", None, f"checks{exc.path}", exc.reason) from None


def _shape(record: LabRecord) -> tuple[dict[str, Node], list[Link]]:
    """The node names and interfaces of a running lab, as the check parser wants them."""
    nodes = {name: Node(name=name) for name in record.nodes}
    links = []
    for link in record.links:
        ends = []
        for text in link.endpoints:
            node, sep, iface = text.partition(":")
            ends.append(Endpoint(node=node, iface=iface) if sep else Endpoint(network=text))
        links.append(Link(endpoints=(ends[0], ends[1])))
    return nodes, links


# --- results ----------------------------------------------------------------------------------
def describe_check(check: AnyCheck) -> str:
    if isinstance(check, RouteCheck):
        return f"on {check.on}: {statechecks.describe_route_check(check)} expect {check.expect}"
    if isinstance(check, CommandCheck):
        return f"on {check.on}: {statechecks._prompt(check).split('$ ', 1)[1]}"
    proto = f"{check.proto}/{check.port}" if check.port else check.proto
    text = f"{check.src} -> {check.dst} {proto} expect {check.expect}"
    if check.via:
        text += f" via {', '.join(check.via)}"
    if check.seen_as:
        text += f" seen as {check.seen_as}"
    return text


@dataclass
class CheckResult:
    index: int  # 1-based position in the file
    check: AnyCheck
    passed: bool
    message: str  # what was expected and what was seen
    probe: ProbeResult | None = None  # probe checks
    evidence: list[str] = field(default_factory=list)  # route and command checks: the FIB, the output
    seen: str = "-"  # route and command checks: present, absent, match, mismatch
    attempts: int = 0
    elapsed: float = 0.0
    file: str | None = None
    passed_after: float | None = None  # seconds from the run's start to the first pass (checks with `within`)

    @property
    def title(self) -> str:
        return describe_check(self.check)

    @property
    def location(self) -> str:
        line = f":{self.check.line}" if self.check.line else ""
        return f"{self.file or '<api>'}{line}"

    @property
    def error(self) -> bool:
        return self.probe is not None and self.probe.outcome == ERROR

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return f"check {self.index} ({self.location}) {self.title}: {verdict}: {self.message}"

    def details(self) -> list[str]:
        lines = self.probe.details() if self.probe is not None else list(self.evidence)
        if self.attempts > 1:
            lines.append(f"{self.attempts} attempts over {self.elapsed:.2f}s")
        if self.passed_after is not None:
            lines.append(f"passed after {self.passed_after:.2f}s")
        return lines

    def __bool__(self) -> bool:
        return self.passed  # `assert lab.check(...)` then shows the repr below when it fails

    def __repr__(self) -> str:
        return f"<{self}>"

    def to_dict(self) -> dict[str, Any]:
        check = asdict(self.check)
        if isinstance(self.check, Check):
            check["from"], check["to"] = check.pop("src"), check.pop("dst")
        else:
            check["kind"] = "route" if isinstance(self.check, RouteCheck) else "command"
        return {"evidence": list(self.evidence), "index": self.index, "location": self.location,
                "title": self.title, "check": check,
                "passed": self.passed, "message": self.message, "attempts": self.attempts,
                "elapsed": round(self.elapsed, 4), "probe": self.probe.to_dict() if self.probe else None,
                "passed_after": None if self.passed_after is None else round(self.passed_after, 4)}


@dataclass
class CheckReport:
    lab: str
    results: list[CheckResult] = field(default_factory=list)
    file: str | None = None
    elapsed: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        total, failed = len(self.results), len(self.failures)
        return (f"{total} check{'' if total == 1 else 's'}, {total - failed} passed, {failed} failed "
                f"in {self.elapsed:.2f}s (lab {self.lab})")

    def failure_message(self) -> str:
        """Every failed check with what was expected, what was seen and the packets."""
        where = f" ({self.file})" if self.file else ""
        total = len(self.results)
        lines = [f"{len(self.failures)} of {total} check{'' if total == 1 else 's'} failed{where}:"]
        for result in self.failures:
            lines.append(f"  {result}")
            lines += [f"      {line}" for line in result.details()]
        return "\n".join(lines)

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        if self.passed:
            return f"<{self.summary()}>"
        first = self.failures[0]
        return f"<{self.summary()}; first failure: {first}>"

    def __str__(self) -> str:
        return self.summary() if self.passed else self.failure_message()

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "file": self.file, "passed": self.passed, "total": len(self.results),
                "failed": len(self.failures), "elapsed": round(self.elapsed, 4),
                "checks": [r.to_dict() for r in self.results]}


# --- judging ----------------------------------------------------------------------------------
def evaluate(check: Check, result: ProbeResult) -> tuple[bool, str]:
    """(passed, message): the message says what was expected and what was seen."""
    if result.outcome == ERROR:
        return False, f"could not probe: {result.reason}"
    if result.outcome != check.expect:
        return False, f"expected {check.expect}, saw {result.describe()}"
    problems = []
    arrived = result.outcome in (REACHABLE, REFUSED)  # the target's stack got the probe
    if arrived and check.via and not _visits(result, check.via, exact=check.path == "exact"):
        how = "exactly" if check.path == "exact" else "via"
        problems.append(f"expected the path {how} {', '.join(check.via)}, saw {result.path_text()}")
    if arrived and check.seen_as and result.seen_source != check.seen_as:
        if result.seen_source is None:
            problems.append(f"expected it to arrive from {check.seen_as}, but no lab host saw it arrive")
        else:
            problems.append(f"expected it to arrive from {check.seen_as}, but {result.seen_at} saw it "
                            f"from {result.seen_source}")
    if problems:
        return False, f"{result.describe()}; but " + "; ".join(problems)
    extra = ""
    if check.via:
        extra += f"; path {result.path_text()}"
    if check.seen_as:
        extra += f"; {result.seen_at} saw it from {result.seen_source}"
    return True, result.describe() + extra


def _visits(result: ProbeResult, via: list[str], exact: bool = False) -> bool:
    """The steps of `via` (nodes or addresses) appear on the path in that order: others may come
    between, unless `exact`. The target is the path's last step: `via: [r1, pc2]` holds when the
    probe reached pc2 through r1, and an exact list may name it or leave it out."""
    steps = [{hop.node, hop.address} for hop in result.path or []]
    steps.append({result.target_node, result.address})
    if exact:
        return any(len(want) == len(steps) and all(w in s for w, s in zip(want, steps, strict=True))
                   for want in (via, [*via, result.target_node or result.address]))
    remaining = iter(steps)
    return all(any(wanted in step for step in remaining) for wanted in via)


# --- running ----------------------------------------------------------------------------------
def request_for(check: Check, timeout: float | None = None) -> ProbeRequest:
    return ProbeRequest(src=check.src, dst=check.dst, proto=check.proto, port=check.port,
                        timeout=check.timeout or timeout or DEFAULT_TIMEOUT, trace=bool(check.via))


def run_checks(record: LabRecord, checks: list[Check], file: str | None = None,
               timeout: float | None = None, progress: Say | None = None) -> CheckReport:
    """Run `checks` against the running lab of `record`; `timeout` is the default per probe.
    `progress` hears how many checks are decided after each round of probes."""
    from netemu.probe import open_engine

    say = progress or (lambda _msg: None)
    report = CheckReport(lab=record.name, file=file)
    started = time.monotonic()
    results: dict[int, CheckResult] = {
        i: CheckResult(index=i + 1, check=c, passed=False, message="not run", file=file)
        for i, c in enumerate(checks)}
    pending = list(results)
    say(Step("checks", 0, len(checks)))
    with open_engine(record) as engine:
        while pending:
            round_start = time.monotonic()
            probing = [i for i in pending if isinstance(checks[i], Check)]
            probes = engine.run([request_for(checks[i], timeout) for i in probing])  # type: ignore[arg-type]
            for i, probe in zip(probing, probes, strict=True):
                result = results[i]
                result.probe, result.attempts = probe, result.attempts + 1
                result.passed, result.message = evaluate(result.check, probe)  # type: ignore[arg-type]
                # probes run side by side: a check's time is from the start of the run to the
                # end of its own last probe, not to the end of the slowest one
                _settle(result, round_start - started + probe.elapsed)
            for i in (i for i in pending if not isinstance(checks[i], Check)):
                _judge_state(record, results[i], timeout or DEFAULT_TIMEOUT)
                _settle(results[i], time.monotonic() - started)
            pending = [i for i in pending if _retry(results[i], started)]
            say(Step("checks", len(checks) - len(pending), len(checks)))
            if pending:
                time.sleep(max(0.0, round_start + RETRY_PAUSE - time.monotonic()))
                engine.view.refresh()  # addresses a daemon set meanwhile count as the kernel has them
    report.results = [results[i] for i in sorted(results)]
    report.elapsed = time.monotonic() - started
    return report


def _settle(result: CheckResult, elapsed: float) -> None:
    result.elapsed = elapsed
    if result.passed and result.check.within is not None:
        result.passed_after = elapsed  # convergence: the first pass, as it ends the retries


def _judge_state(record: LabRecord, result: CheckResult, timeout: float) -> None:
    """A route or command check, judged once on the host as it is now."""
    result.attempts += 1
    try:
        if isinstance(result.check, RouteCheck):
            state = statechecks.route_state(record, result.check)
        else:
            assert isinstance(result.check, CommandCheck)
            state = statechecks.command_state(record, result.check, timeout)
    except (ValueError, OSError, NetemuError) as e:  # a host that is down, a namespace that went away
        state = statechecks.StateResult(False, f"could not look: {e}", [], "error")
    result.passed, result.message = state.passed, state.message
    result.evidence, result.seen = state.evidence, state.seen


def _retry(result: CheckResult, started: float) -> bool:
    window = result.check.within
    return not result.passed and not result.error and window is not None and \
        time.monotonic() + RETRY_PAUSE < started + window


# --- convergence over repeated runs -------------------------------------------------------------
@dataclass
class Convergence:
    """One check over `netemu check --repeat N`: in how many runs it passed, and min, median and
    max of its passed_after (None without `within:`, or when it never passed)."""

    index: int
    title: str
    runs: int
    passed: int
    passed_after: list[float]

    def stats(self) -> tuple[float, float, float] | None:
        if not self.passed_after:
            return None
        return min(self.passed_after), statistics.median(self.passed_after), max(self.passed_after)

    def to_dict(self) -> dict[str, Any]:
        stats = self.stats()
        keys = ("min", "median", "max")
        return {"index": self.index, "title": self.title, "runs": self.runs, "passed": self.passed,
                "passed_after": [round(v, 4) for v in self.passed_after],
                **{key: None if stats is None else round(value, 4)
                   for key, value in zip(keys, stats or (0.0, 0.0, 0.0), strict=True)}}


def convergence(reports: list[CheckReport]) -> list[Convergence]:
    """Per check, across runs of the same checks."""
    found = []
    for position, first in enumerate(reports[0].results if reports else []):
        runs = [report.results[position] for report in reports]
        found.append(Convergence(first.index, first.title, len(runs), sum(r.passed for r in runs),
                                 [r.passed_after for r in runs if r.passed_after is not None]))
    return found
