"""Rendering check reports and reachability matrices: a table for people, JSON for programs,
JUnit XML for CI servers (one testcase per check; a failure says what was expected and seen)."""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET

from netemu.probe.checks import CheckReport, CheckResult, Convergence, describe_check
from netemu.probe.model import REACHABLE, ProbeResult, ReachMatrix, format_rtt
from netemu.render import table
from netemu.topology.model import CommandCheck, RouteCheck


# --- checks -----------------------------------------------------------------------------------
def _row(result: CheckResult) -> tuple[str, ...]:
    """A probe check's row; a route check shows ROUTE as its proto and the route as its target,
    a command check EXEC and the command."""
    check, probe = result.check, result.probe
    after = f"{result.passed_after:.2f}s" if result.passed_after is not None else "-"
    verdict = "ok" if result.passed else "FAIL"
    if isinstance(check, RouteCheck):
        return (str(result.index), str(check.line or "-"), check.on, check.route, "route", check.expect,
                result.seen, "-", after, verdict)
    if isinstance(check, CommandCheck):
        command = describe_check(check).split(": ", 1)[1]
        return (str(result.index), str(check.line or "-"), check.on, command[:40], "exec", "match", result.seen,
                "-", after, verdict)
    target = check.dst
    if probe is not None and probe.address not in (check.dst, ""):
        target = f"{check.dst} ({probe.address})"
    proto = f"{check.proto}/{check.port}" if check.port else check.proto
    seen = probe.outcome if probe else "-"
    return (str(result.index), str(check.line or "-"), check.src, target, proto, check.expect, seen,
            format_rtt(probe.rtt) if probe else "-", after, verdict)


def checks_table(report: CheckReport) -> str:
    """AFTER is passed_after: when a check with `within:` first passed (convergence time)."""
    headers = ("#", "LINE", "FROM", "TO", "PROTO", "EXPECT", "SEEN", "RTT", "AFTER", "RESULT")
    lines = [table(headers, [_row(r) for r in report.results])]
    if report.failures:
        lines.append("")
        lines.append(report.failure_message())
    lines.append("")
    lines.append(report.summary())
    return "\n".join(lines)


def junit(report: CheckReport) -> str:
    """JUnit XML as Jenkins, GitLab and GitHub test reporters read it."""
    suite_name = f"netemu.{report.lab}"
    failures = sum(1 for r in report.failures if not r.error)
    errors = sum(1 for r in report.failures if r.error)
    root = ET.Element("testsuites", name="netemu check", tests=str(len(report.results)),
                      failures=str(failures), errors=str(errors), time=f"{report.elapsed:.3f}")
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(report.results)),
                          failures=str(failures), errors=str(errors), skipped="0",
                          time=f"{report.elapsed:.3f}", hostname=socket.gethostname(),
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if report.file:
        ET.SubElement(ET.SubElement(suite, "properties"), "property", name="file", value=report.file)
    for result in report.results:
        # A check with `within:` takes as its time the moment it first passed (its convergence).
        seconds = result.passed_after if result.passed_after is not None else result.elapsed
        case = ET.SubElement(suite, "testcase", classname=suite_name,
                             name=f"check {result.index}: {result.title}", time=f"{seconds:.3f}")
        if result.passed_after is not None:
            ET.SubElement(ET.SubElement(case, "properties"), "property", name="passed_after",
                          value=f"{result.passed_after:.3f}")
        if report.file:
            case.set("file", report.file)
        if result.check.line:
            case.set("line", str(result.check.line))
        details = "\n".join([str(result), *result.details()])
        if not result.passed:
            tag = "error" if result.error else "failure"
            failure = ET.SubElement(case, tag, message=f"{result.location}: {result.message}",
                                    type="ProbeError" if result.error else "CheckFailed")
            failure.text = details
        ET.SubElement(case, "system-out").text = details
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- one probe --------------------------------------------------------------------------------
def probe_text(result: ProbeResult) -> str:
    lines = [str(result)]
    if result.path is not None:
        lines.append(f"  path: {result.path_text()}")
        for hop in result.path:
            lines.append(f"    {hop.ttl:2d}  {hop.label():<16} {hop.address or '*':<24} {format_rtt(hop.rtt)}")
    lines += [f"  {line}" for line in result.evidence]
    return "\n".join(lines)


# --- reachability -----------------------------------------------------------------------------
def reach_table(matrix: ReachMatrix) -> str:
    """A grid: row = from, column = to (numbered like the rows); o reachable, x not."""
    nodes = matrix.nodes
    width = len(str(len(nodes)))
    name_width = max([len(n) for n in nodes] + [4])
    header = " " * (width + name_width + 3) + " ".join(str(i + 1).rjust(width) for i in range(len(nodes)))
    lines = [header]
    for i, src in enumerate(nodes):
        cells = []
        for dst in nodes:
            cell = matrix.cells[src].get(dst)
            mark = "-" if cell is None else "o" if cell.outcome == REACHABLE else "x"
            cells.append(mark.rjust(width))
        lines.append(f"{str(i + 1).rjust(width)} {src.ljust(name_width)}  " + " ".join(cells))
    lines.append("")
    lines.append("o reachable (ICMP echo reply), x unreachable, - self")
    bad = matrix.unreachable_pairs()
    for src, dst, cell in bad[:20]:
        lines.append(f"  {src} -> {dst} ({matrix.addresses.get(dst) or 'no address'}): {cell.reason}")
    if len(bad) > 20:
        lines.append(f"  ... and {len(bad) - 20} more unreachable pairs")
    lines.append(f"{matrix.reachable}/{matrix.pairs} pairs reachable ({len(nodes)} hosts) in {matrix.elapsed:.2f}s")
    return "\n".join(lines)


def convergence_table(stats: list[Convergence]) -> str:
    """`check --repeat N`: per check, the runs it passed and min/median/max of passed_after."""
    rows = []
    for item in stats:
        numbers = item.stats()
        cells = tuple(f"{v:.2f}s" for v in numbers) if numbers else ("-", "-", "-")
        rows.append((str(item.index), item.title, f"{item.passed}/{item.runs}", *cells))
    return table(("#", "CHECK", "PASSED", "MIN", "MEDIAN", "MAX"), rows)
