"""Checks that see the live network: a lab whose addresses and routes only `exec:` steps set (the
file has none), judged from the hosts' kernels: targets and `via:` steps, route checks on the
FIB (ECMP included), command checks, `proto: arp`, and every kind failing on purpose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.conftest import run_cli

LAB = {
    "nodes": {
        "a": {"exec": ["ip addr add 10.70.0.1/24 dev eth0", "ip route add 10.71.0.0/24 via 10.70.0.2 proto static"]},
        "r": {"sysctls": {"net.ipv4.ip_forward": 1},
              "exec": ["ip addr add 10.70.0.2/24 dev eth0", "ip addr add 10.71.0.1/24 dev eth1"]},
        "b": {"exec": ["ip addr add 10.71.0.2/24 dev eth0", "ip route add default via 10.71.0.1",
                       "ip route add 10.80.0.0/24 nexthop via 10.71.0.1 nexthop via 10.71.0.3 weight 2"]},
    },
    "links": [{"endpoints": ["a:eth0", "r:eth0"]}, {"endpoints": ["r:eth1", "b:eth0"]}],
}

PASSING = [
    {"from": "a", "to": "b", "via": ["r"]},  # b and r have only the addresses exec: gave them
    {"from": "a", "to": "b:eth0", "via": ["10.70.0.2", "b"], "path": "exact"},  # an address, the target last
    {"from": "a", "to": "r:eth1"},
    {"from": "a", "to": "10.70.0.2", "proto": "arp"},
    {"on": "a", "route": "10.71.0.0/24", "via": "10.70.0.2", "dev": "eth0", "proto": "static"},
    {"on": "a", "route": "10.99.0.0/24", "expect": "absent"},
    {"on": "b", "route": "default", "via": "10.71.0.1"},
    {"on": "b", "route": "10.80.0.0/24", "via": ["10.71.0.1", "10.71.0.3"]},  # both hops of the ECMP route
    {"on": "a", "exec": "ip -j addr show eth0", "json": {"[0].addr_info[0].local": "10.70.0.1"}},
    {"on": "r", "exec": "cat /proc/sys/net/ipv4/ip_forward", "regex": "^1$"},
]
FAILING = [
    ({"from": "a", "to": "b", "via": ["r", "a"]}, "expected the path via r, a"),
    ({"from": "a", "to": "b", "via": ["b"], "path": "exact"}, "expected the path exactly b"),
    ({"on": "a", "route": "10.71.0.0/24", "via": "10.70.0.9"}, "saw the routes to 10.71.0.0/24 are: 10.71.0.0/24"),
    ({"on": "a", "route": "10.71.0.0/24", "proto": "ospf"}, "proto ospf present"),
    ({"on": "a", "route": "10.71.0.0/24", "expect": "absent"}, "but it is there"),
    ({"on": "r", "exec": "echo hello; exit 3"}, "exited 3, expected 0"),
    ({"on": "a", "exec": "ip -j addr show eth0", "json": {"[0].addr_info[0].local": "10.70.0.7"}},
     '"10.70.0.1", expected "10.70.0.7"'),
    ({"on": "r", "exec": "echo hello", "regex": "^bye"}, "no line of its output matches /^bye/"),
]


def checks_file(tmp_path: Path, lab: str, checks: list[dict]) -> Path:
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump({"lab": lab, "checks": checks}, sort_keys=False))
    return path


def test_every_kind_passes_on_a_lab_the_file_gives_no_address(make_lab, tmp_path: Path) -> None:
    lab = make_lab(LAB)
    result = run_cli("check", str(checks_file(tmp_path, lab.name, PASSING)), "--format", "json")
    report = json.loads(result.stdout)
    failed = [(c["title"], c["message"]) for c in report["checks"] if not c["passed"]]
    assert result.returncode == 0 and not failed, failed
    first = report["checks"][0]
    assert first["probe"]["address"] == "10.71.0.2"  # b resolved from its kernel, not the file
    assert "r" in first["message"]  # the hop named after the node that owns 10.70.0.2
    ecmp = next(r for r in lab.inspect().nodes["b"].routes if r.dst == "10.80.0.0/24")
    assert [(h.via, h.weight) for h in ecmp.nexthops] == [("10.71.0.1", 1), ("10.71.0.3", 2)]
    table = run_cli("inspect", lab.name).stdout
    assert "10.71.0.1 (ecmp)" in table and "10.71.0.3 (weight 2)" in table


def test_every_kind_fails_on_purpose_with_what_it_saw(make_lab, tmp_path: Path) -> None:
    lab = make_lab(LAB)
    result = run_cli("check", str(checks_file(tmp_path, lab.name, [c for c, _ in FAILING])), "--format", "json")
    assert result.returncode == 1
    checks = json.loads(result.stdout)["checks"]
    for check, (_, expected) in zip(checks, FAILING, strict=True):
        assert not check["passed"] and expected in check["message"], (check["title"], check["message"])
    command = checks[5]
    assert any("hello" in line for line in command["evidence"])  # the output is shown when it fails
    table = run_cli("check", str(checks_file(tmp_path, lab.name, [FAILING[5][0]])))
    assert "hello" in table.stderr + table.stdout and "exit 3" in table.stderr + table.stdout


def test_the_python_api_runs_route_and_command_checks_and_durations_as_the_file(make_lab) -> None:
    lab = make_lab(LAB)
    assert lab.route("a", "10.71.0.0/24", via="10.70.0.2", proto="static", within="2s")
    assert not lab.route("a", "10.71.0.0/24", expect="absent")
    assert lab.command("r", "cat /proc/sys/net/ipv4/ip_forward", regex="^1$", timeout="5s")
    assert lab.check("a", "b", via=["r", "b"], path="exact", within="500ms")
    lab.link("r:eth1", "down")
    assert not lab.check("a", "b", timeout=0.3)
    lab.link("r:eth1", "up")
    assert lab.check("a", "b", within=10)


def test_bad_route_and_command_checks_are_one_line_with_line_and_key(make_lab, tmp_path: Path) -> None:
    lab = make_lab(LAB)
    cases = [
        ({"on": "a", "route": "10.0.0.1/24"}, "checks[0].route"),
        ({"on": "a", "route": "10.0.0.0/24", "proto": "nonsense"}, "unknown route protocol 'nonsense'"),
        ({"on": "a", "route": "10.0.0.0/24", "expect": "maybe"}, "expected one of present, absent"),
        ({"on": "nobody", "route": "default"}, "unknown node 'nobody'"),
        ({"on": "a", "exec": "true", "json": {"a..b": 1}}, "invalid JSON path"),
        ({"on": "a", "exec": "true", "regex": "("}, "invalid regular expression"),
        ({"on": "a"}, "needs `route:` (a route check) or `exec:`"),
        ({"from": "a", "to": "r", "proto": "arp", "via": ["r"]}, "via is not used with proto arp"),
        ({"from": "a", "to": "r", "via": ["r"], "path": "loose"}, "expected one of ordered, exact"),
    ]
    for check, message in cases:
        result = run_cli("check", str(checks_file(tmp_path, lab.name, [check])))
        assert result.returncode == 2 and message in result.stderr, (check, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert re.search(r"checks\.yaml:\d+: checks\[0\]", result.stderr), result.stderr  # file, line, key


def test_graph_of_a_running_lab_shows_the_addresses_its_kernels_have(make_lab) -> None:
    lab = make_lab(LAB)
    picture = run_cli("graph", lab.name, "--format", "dot").stdout
    assert "10.70.0.1/24" in picture and "10.71.0.2/24" in picture  # set by exec:, not in the file


def test_the_python_api_reads_checks_by_the_files_rules(make_lab) -> None:
    import pytest

    from netemu.errors import TopologyError

    lab = make_lab(LAB)
    for call, message in [
        (lambda: lab.command("a", "true", regex="("), "checks[0].regex: invalid regular expression"),
        (lambda: lab.route("a", "10.71.0.0/24", dev="bad/name"), "checks[0].dev"),
        (lambda: lab.command("a", "true", exit=300), "checks[0].exit"),
        (lambda: lab.check("a", "nobody"), "unknown node 'nobody'"),
        (lambda: lab.check("a", "b", within="soon"), "checks[0].within"),
    ]:
        with pytest.raises(TopologyError, match=re.escape(message)):
            call()
    r = lab.record.nodes["r"]
    lab.node("r", "stop")
    try:
        stopped = lab.command("r", "true")  # a host that is down: a failed check, not an error
        assert not stopped and "could not look" in stopped.message and r.pid is not None
    finally:
        lab.node("r", "start")
