"""`netemu check` on the realistic lab (topologies/natweb.yaml: a web server behind a NAT
router, a client outside, a port blocked by nftables inside the web server), checks files,
convergence windows and timeouts."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import ROOT, run_cli

NATWEB = ROOT / "topologies" / "natweb.yaml"


def natweb(make_lab, tmp_path: Path):
    """The realistic lab, verbatim but for a unique name (so line numbers match the original);
    make_lab reserves the name and takes the lab down after the test. Returns (lab, its file)."""
    from netemu import Lab

    path = make_lab({"nodes": {"x": {}}}, up=False)
    text = NATWEB.read_text()
    path.write_text(text.replace("\nname: natweb\n", f"\nname: {path.stem}\n", 1))
    return Lab.up(path), path


def test_realistic_lab_passes_then_fails_when_the_firewall_rule_breaks(make_lab, tmp_path: Path) -> None:
    lab, path = natweb(make_lab, tmp_path)
    junit = tmp_path / "checks.xml"
    result = run_cli("check", str(path), "--junit", str(junit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 checks, 8 passed, 0 failed" in result.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "8" and suite.get("failures") == "0"

    # Break the rule that keeps the admin page (port 9000) closed from outside.
    lab.exec("web", ["nft", "delete", "table", "inet", "webfw"], check=True)
    result = run_cli("check", str(path), "--junit", str(junit))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 of 8 checks failed" in result.stderr
    line = next(i for i, text in enumerate(NATWEB.read_text().splitlines(), 1) if "port: 9000, expect: unre" in text)
    assert (f"check 2 ({path}:{line}) client -> 203.0.113.1 tcp/9000 expect unreachable: FAILED: "
            "expected unreachable, saw reachable") in result.stdout
    assert "SYN/ACK from 203.0.113.1:9000" in result.stdout
    assert "seen at web: IP / TCP 203.0.113.10:" in result.stdout  # it now gets through to web
    failures = ET.parse(junit).getroot().findall(".//testcase/failure")
    assert len(failures) == 1
    assert failures[0].get("message", "").startswith(f"{path}:{line}: expected unreachable, saw reachable")


def test_realistic_lab_json_shows_nat_path_and_outcomes(make_lab, tmp_path: Path) -> None:
    _lab, path = natweb(make_lab, tmp_path)
    result = run_cli("check", str(path), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["passed"] and data["total"] == 8
    outcomes = [c["probe"]["outcome"] for c in data["checks"]]
    assert outcomes == ["reachable", "unreachable", "reachable", "refused", "refused", "unreachable",
                        "reachable", "refused"]
    traced = data["checks"][6]
    assert [hop["node"] for hop in traced["probe"]["path"]] == ["nat"]
    assert traced["probe"]["seen_at"] == "client" and traced["probe"]["seen_source"] == "203.0.113.1"
    forwarded = data["checks"][0]["probe"]
    assert any(line.startswith("seen at web:") and "> 192.168.10.10:8000 S" in line for line in forwarded["evidence"])


def test_checks_file_against_a_running_lab(make_lab, tmp_path: Path) -> None:
    lab = make_lab({
        "nodes": {"a": {}, "b": {"cmd": "exec python3 -m http.server 8000"}},
        "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.75.8.1/24", "10.75.8.2/24"]}],
    })
    checks = tmp_path / "checks.yaml"
    checks.write_text(f"lab: {lab.name}\nchecks:\n"
                      "  - {from: a, to: b, proto: tcp, port: 8000, expect: reachable, within: 15s}\n"
                      "  - {from: a, to: b:eth0, proto: tcp, port: 8001, expect: refused}\n"
                      "  - {from: b, to: 10.75.8.1, expect: reachable}\n")
    result = run_cli("check", str(checks))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 checks, 3 passed" in result.stdout

    # a bare list of checks, with the lab named on the command line
    listed = tmp_path / "list.yaml"
    listed.write_text("- {from: a, to: b, proto: udp, port: 9, expect: refused}\n")
    result = run_cli("check", str(listed), "--lab", lab.name)
    assert result.returncode == 0, result.stdout + result.stderr

    # bad files: exit 2, the file, the line and the key named
    checks.write_text(f"lab: {lab.name}\nchecks:\n  - {{from: a, to: c}}\n")
    result = run_cli("check", str(checks))
    assert result.returncode == 2 and f"{checks}:3: checks[0].to: unknown node 'c'" in result.stderr
    result = run_cli("check", str(listed))
    assert result.returncode == 2 and "name the lab" in result.stderr
    result = run_cli("check", str(listed), "--lab", "nosuchlab1")
    assert result.returncode == 2 and "no lab named 'nosuchlab1'" in result.stderr


def test_check_of_a_lab_that_is_not_running_is_bad_input(make_lab) -> None:
    path = make_lab({"nodes": {"a": {}}, "checks": [{"from": "a", "to": "a"}]}, up=False)
    result = run_cli("check", str(path))
    assert result.returncode == 2 and "no lab named" in result.stderr


def test_within_waits_for_convergence_and_timeout_bounds_each_probe(make_lab) -> None:
    lab = make_lab({
        "nodes": {"a": {}, "b": {"cmd": "sleep 2; exec python3 -m http.server 8000"}},
        "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.75.9.1/24", "10.75.9.2/24"]}],
    })
    converged = lab.check("a", "b", proto="tcp", port=8000, within=20)
    assert converged, converged
    assert converged.attempts > 1  # refused while the server was still sleeping
    never = lab.check("a", "10.75.9.99", within=1.5, timeout=0.3)
    assert not never
    assert never.attempts > 1
    assert never.message.startswith("expected reachable, saw unreachable: "), never.message
    silent = lab.probe("a", "10.75.9.98", timeout=0.3)
    assert silent.reason == "no answer to 1 echo request within 0.3s"


def test_lab_checks_and_assert_checks(make_lab) -> None:
    lab = make_lab({
        "nodes": {"a": {}, "b": {}},
        "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.75.10.1/24", "10.75.10.2/24"]}],
        "checks": [{"from": "a", "to": "b", "expect": "reachable"},
                   {"from": "a", "to": "b", "proto": "tcp", "port": 22, "expect": "unreachable",
                    "timeout": "500ms"}],
    })
    report = lab.checks()
    assert not report and len(report.failures) == 1
    try:
        lab.assert_checks()
    except AssertionError as exc:
        text = str(exc)
    else:
        raise AssertionError("assert_checks did not raise")
    assert text.startswith("1 of 2 checks failed")
    assert "expected unreachable, saw refused" in text and "RST from 10.75.10.2:22" in text


def test_passed_after_is_when_a_within_check_first_passed(make_lab, tmp_path: Path) -> None:
    """Convergence time: the link comes back 1.5 s into the check; passed_after says so in the
    table, the JSON and the JUnit file, and `--repeat` gives min/median/max across runs."""
    import threading
    import time

    lab = make_lab({"nodes": {"a": {}, "b": {}},
                    "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.66.0.1/24", "10.66.0.2/24"]}]})
    checks = tmp_path / "checks.yaml"
    checks.write_text(f"lab: {lab.name}\nchecks:\n  - {{from: a, to: 10.66.0.2, within: 20s, timeout: 0.3s}}\n"
                      "  - {from: a, to: 10.66.0.2}\n")
    lab.link("a:eth0", "down")
    timer = threading.Timer(1.5, lambda: lab.link("a:eth0", "up"))
    started = time.monotonic()
    timer.start()
    try:
        junit = tmp_path / "checks.xml"
        result = run_cli("check", str(checks), "--format", "json", "--junit", str(junit))
    finally:
        timer.join()
    assert result.returncode == 1  # the check without `within` ran once, while the link was down
    first, second = json.loads(result.stdout)["checks"]
    assert first["passed"] and 1.4 <= first["passed_after"] <= time.monotonic() - started
    assert not second["passed"] and second["passed_after"] is None
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert case is not None and abs(float(case.get("time", "0")) - first["passed_after"]) < 0.002
    assert case.find("properties/property[@name='passed_after']") is not None

    checks.write_text(f"lab: {lab.name}\nchecks:\n  - {{from: a, to: 10.66.0.2, within: 20s}}\n")
    repeated = run_cli("check", str(checks), "--repeat", "3")
    assert repeated.returncode == 0, repeated.stderr
    assert "MEDIAN" in repeated.stdout and "3/3" in repeated.stdout
    data = json.loads(run_cli("check", str(checks), "--repeat", "2", "--format", "json").stdout)
    assert len(data["runs"]) == 2 and data["convergence"][0]["passed"] == 2
    assert len(data["convergence"][0]["passed_after"]) == 2 and data["convergence"][0]["median"] is not None
