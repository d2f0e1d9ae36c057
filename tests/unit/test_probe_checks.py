"""Judging checks and rendering reports: pure code, no lab needed."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netemu.errors import InputError, TopologyError
from netemu.probe import report
from netemu.probe.checks import CheckReport, CheckResult, describe_check, evaluate, load_checks, request_for
from netemu.probe.model import Hop, ProbeResult, ReachCell, ReachMatrix, format_rtt
from netemu.topology.model import Check


def result(outcome: str = "reachable", **kw: object) -> ProbeResult:
    fields: dict[str, object] = dict(src="h1", dst="h2", address="10.75.0.2", proto="tcp", port=80,
                                     outcome=outcome, reason="SYN/ACK from 10.75.0.2:80", rtt=0.00042,
                                     evidence=["sent: IP / TCP ...", "got: IP / TCP ..."], target_node="h2")
    fields.update(kw)
    return ProbeResult(**fields)  # type: ignore[arg-type]


def test_format_rtt() -> None:
    assert format_rtt(None) == "-"
    assert format_rtt(0.00042) == "420 us"
    assert format_rtt(0.0123) == "12.30 ms"


def test_probe_result_text_is_one_readable_line() -> None:
    r = result()
    assert r.reachable
    assert str(r) == "h1 -> h2 (10.75.0.2) tcp/80: reachable in 420 us: SYN/ACK from 10.75.0.2:80"
    assert "\n" not in repr(r) and repr(r).startswith("<probe h1 -> h2")
    assert r.to_dict()["reachable"] is True


def test_matching_outcome_passes_and_says_what_was_seen() -> None:
    passed, message = evaluate(Check("h1", "h2", proto="tcp", port=80), result())
    assert passed
    assert message == "reachable in 420 us: SYN/ACK from 10.75.0.2:80"


def test_mismatch_says_expected_and_seen() -> None:
    passed, message = evaluate(Check("h1", "h2", expect="unreachable", proto="tcp", port=80), result())
    assert not passed
    assert message == "expected unreachable, saw reachable in 420 us: SYN/ACK from 10.75.0.2:80"


def test_refused_is_distinct_from_unreachable() -> None:
    refused = result("refused", reason="RST from 10.75.0.2:80")
    assert evaluate(Check("h1", "h2", expect="refused", proto="tcp", port=80), refused)[0]
    assert not evaluate(Check("h1", "h2", expect="unreachable", proto="tcp", port=80), refused)[0]


def test_probe_error_fails_with_the_reason() -> None:
    broken = result("error", reason="node 'h1' of lab 'x' is not running")
    passed, message = evaluate(Check("h1", "h2"), broken)
    assert not passed and message == "could not probe: node 'h1' of lab 'x' is not running"


@pytest.mark.parametrize(("via", "ok"), [(["r1"], True), (["r1", "r2"], True), (["r2", "r1"], False),
                                         (["r3"], False), ([], True)])
def test_via_is_an_ordered_subsequence_of_the_path(via: list[str], ok: bool) -> None:
    path = [Hop(1, "10.75.1.1", "r1"), Hop(2, None), Hop(3, "10.75.2.1", "r2")]
    passed, message = evaluate(Check("h1", "h2", via=via), result("reachable", path=path))
    assert passed is ok
    if not ok:
        assert "expected the path via" in message and "h1 -> r1 -> * -> r2 -> h2" in message


def test_seen_as_compares_the_source_address_at_the_target() -> None:
    check = Check("h1", "h2", seen_as="192.0.2.1")
    nat = result(seen_at="h2", seen_source="192.0.2.1")
    assert evaluate(check, nat)[0]
    passed, message = evaluate(check, result(seen_at="h2", seen_source="10.75.0.1"))
    assert not passed and "expected it to arrive from 192.0.2.1, but h2 saw it from 10.75.0.1" in message
    passed, message = evaluate(check, result())
    assert not passed and "no lab host saw it arrive" in message


def test_request_for_uses_the_check_timeout_first() -> None:
    assert request_for(Check("h1", "h2", timeout=0.5), 3.0).timeout == 0.5
    assert request_for(Check("h1", "h2"), 3.0).timeout == 3.0
    assert request_for(Check("h1", "h2")).timeout == 2.0
    assert request_for(Check("h1", "h2", via=["r1"])).trace


def sample_report() -> CheckReport:
    good = CheckResult(1, Check("h1", "h2", proto="tcp", port=80, line=10), True, "reachable", result(),
                       attempts=1, elapsed=0.01, file="lab.yaml")
    bad_check = Check("h1", "h2", expect="unreachable", proto="tcp", port=80, line=11)
    bad = CheckResult(2, bad_check, False, evaluate(bad_check, result())[1], result(), attempts=3,
                      elapsed=2.5, file="lab.yaml")
    return CheckReport("lab1", [good, bad], file="lab.yaml", elapsed=2.6)


def test_check_result_text_and_truth() -> None:
    rep = sample_report()
    good, bad = rep.results
    assert good and not bad
    assert str(bad) == ("check 2 (lab.yaml:11) h1 -> h2 tcp/80 expect unreachable: FAILED: expected "
                        "unreachable, saw reachable in 420 us: SYN/ACK from 10.75.0.2:80")
    assert "3 attempts over 2.50s" in bad.details()
    assert describe_check(Check("a", "b", via=["r"], seen_as="1.2.3.4")) == "a -> b icmp expect reachable via r " \
                                                                            "seen as 1.2.3.4"


def test_report_failure_message_lists_failures_with_evidence() -> None:
    rep = sample_report()
    assert not rep.passed and rep.failures == [rep.results[1]]
    text = rep.failure_message()
    assert text.startswith("1 of 2 checks failed (lab.yaml):")
    assert "check 2 (lab.yaml:11)" in text and "got: IP / TCP" in text
    assert "\n" not in repr(rep)


def test_table_json_and_summary() -> None:
    text = report.checks_table(sample_report())
    assert "EXPECT" in text and "FAIL" in text and "2 checks, 1 passed, 1 failed" in text
    data = json.loads(json.dumps(sample_report().to_dict()))
    assert data["failed"] == 1 and data["checks"][1]["check"]["from"] == "h1"
    assert data["checks"][1]["probe"]["outcome"] == "reachable"


def test_junit_has_one_testcase_per_check_and_a_clear_failure() -> None:
    root = ET.fromstring(report.junit(sample_report()))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert len(cases) == 2 and cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == ("lab.yaml:11: expected unreachable, saw reachable in 420 us: "
                                      "SYN/ACK from 10.75.0.2:80")
    assert cases[1].get("line") == "11" and "got: IP / TCP" in (failure.text or "")


def test_junit_reports_probe_errors_as_errors() -> None:
    broken = CheckResult(1, Check("h1", "h2"), False, "could not probe: x", result("error"), file="f.yaml")
    root = ET.fromstring(report.junit(CheckReport("lab1", [broken])))
    assert root.get("errors") == "1" and root.get("failures") == "0"


def test_reach_table() -> None:
    cells = {"a": {"b": ReachCell("reachable", 0.001)}, "b": {"a": ReachCell("unreachable", reason="silence")}}
    matrix = ReachMatrix("lab1", ["a", "b"], {"a": "10.75.0.1", "b": "10.75.0.2"}, cells, elapsed=0.01)
    text = report.reach_table(matrix)
    assert "1/2 pairs reachable" in text and "b -> a (10.75.0.1): silence" in text
    assert matrix.to_dict()["matrix"]["a"]["b"]["outcome"] == "reachable"


def test_probe_text_shows_path() -> None:
    traced = result(path=[Hop(1, "10.75.1.1", "r1", 0.0001)])
    text = report.probe_text(traced)
    assert "path: h1 -> r1 -> h2" in text and "10.75.1.1" in text


# --- loading ----------------------------------------------------------------------------------
def test_topology_file_checks(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("name: lab1\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a:eth0, b:eth0]\n"
                    "    addresses: [10.75.0.1/24, 10.75.0.2/24]\nchecks:\n"
                    "  - {from: a, to: b, proto: tcp, port: 22, expect: refused, within: 5s}\n")
    checkset = load_checks(path)
    assert checkset.lab == "lab1" and len(checkset.checks) == 1
    assert checkset.checks[0].within == 5.0 and checkset.checks[0].line == 7
    assert load_checks(path, lab="other").lab == "other"


def test_bad_checks_in_a_topology_are_topology_errors(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("name: lab1\nnodes: {a: {}}\nchecks:\n  - {from: a, to: nobody}\n")
    with pytest.raises(TopologyError) as info:
        load_checks(path)
    assert info.value.line == 4 and "nobody" in str(info.value)


def test_checks_file_needs_a_lab(tmp_path: Path) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text("checks:\n  - {from: a, to: b}\n")
    with pytest.raises(InputError, match="name the lab"):
        load_checks(path)


def test_checks_file_unknown_key_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text("lab: x\nchekcs: []\n")
    with pytest.raises(TopologyError, match="checks"):
        load_checks(path)
    path.write_text("")
    with pytest.raises(TopologyError, match="empty"):
        load_checks(path)
    with pytest.raises(TopologyError, match="cannot read"):
        load_checks(tmp_path / "missing.yaml")
