"""Checks judged on a host's state rather than on packets: a route in its FIB, read over netlink
(never from a tool's text, whose format changes), and the output of a command, the escape hatch
for what only a routing daemon knows (`vtysh -c '... json'`)."""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from typing import Any

from netemu.linux import netlink
from netemu.runtime import execution
from netemu.runtime.records import LabRecord
from netemu.topology._values import PROTOCOL_NAMES, parse_path, protocol_number, table_number
from netemu.topology.model import CommandCheck, RouteCheck

OUTPUT_LINES = 20  # of a command's stdout shown when its check fails


@dataclass
class StateResult:
    passed: bool
    message: str  # what was expected and what was seen, one line
    evidence: list[str] = field(default_factory=list)
    seen: str = "-"  # the table's SEEN column


# --- routes -----------------------------------------------------------------------------------
def route_state(record: LabRecord, check: RouteCheck) -> StateResult:
    pid = _netns_of(record, check.on)
    with netlink.Socket(pid) as sock:
        names = {link.index: link.name for link in sock.links()}
        routes = sock.routes(table_number(check.table))
    wanted = _destinations(check)
    candidates = [r for r in routes if r.dst in wanted]
    matching = [r for r in candidates if _matches(r, check, names)]
    present = bool(matching)
    seen = "present" if present else "absent"
    shown = [describe_route(r, names) for r in (matching or candidates)]
    evidence = [f"{check.on}'s table {check.table}: {line}" for line in shown] or \
        [f"{check.on}'s table {check.table} has no route to {check.route}"]
    if present == (check.expect == "present"):
        return StateResult(True, f"{seen}: {'; '.join(shown) or 'no route to ' + check.route}", evidence, seen)
    what = f"expected {describe_route_check(check)} {check.expect}"
    if present:
        return StateResult(False, f"{what}, but it is there: {'; '.join(shown)}", evidence, seen)
    found = f"the routes to {check.route} are: {'; '.join(shown)}" if shown else f"no route to {check.route}"
    return StateResult(False, f"{what}, saw {found}", evidence, seen)


def _netns_of(record: LabRecord, node: str) -> int:
    info = record.nodes.get(node)
    if info is None:
        raise ValueError(f"lab '{record.name}' has no node '{node}'")
    if not info.alive or info.netns_pid is None:
        raise ValueError(f"node '{node}' is not running" if not info.alive else
                         f"node '{node}' uses the machine's network: its routes are the machine's")
    return info.netns_pid


def _destinations(check: RouteCheck) -> set[Any]:
    if check.route != "default":
        return {ipaddress.ip_network(check.route, strict=False)}
    families = {ipaddress.ip_address(v).version for v in check.via} or {4, 6}
    return {ipaddress.ip_network("0.0.0.0/0" if f == 4 else "::/0") for f in families}


def _matches(route: netlink.Route, check: RouteCheck, names: dict[int, str]) -> bool:
    hops = route.hops()
    gateways = {str(ipaddress.ip_address(h.gateway)) for h in hops if h.gateway}
    if any(str(ipaddress.ip_address(v)) not in gateways for v in check.via):
        return False
    if check.dev is not None and check.dev not in {names.get(h.oif or -1) for h in hops}:
        return False
    return check.proto is None or route.protocol == protocol_number(check.proto)


def describe_route(route: netlink.Route, names: dict[int, str]) -> str:
    """`10.2.0.0/24 proto ospf via 10.1.0.2 dev eth1, via 10.1.1.2 dev eth2`, as `ip route` would."""
    dst = str(route.dst) if route.dst.prefixlen else "default"
    proto = PROTOCOL_NAMES.get(route.protocol, str(route.protocol))
    hops = [" ".join(part for part in (f"via {h.gateway}" if h.gateway else "",
                                       f"dev {names.get(h.oif or -1, h.oif)}" if h.oif else "") if part)
            for h in route.hops()]
    return f"{dst} proto {proto} " + ", ".join(h for h in hops if h)


def describe_route_check(check: RouteCheck) -> str:
    parts = [f"route {check.route}"]
    parts += [f"via {v}" for v in check.via]
    parts += [f"dev {check.dev}"] if check.dev else []
    parts += [f"proto {check.proto}"] if check.proto else []
    parts += [f"table {check.table}"] if check.table != "main" else []
    return " ".join(parts)


# --- commands ---------------------------------------------------------------------------------
def command_state(record: LabRecord, check: CommandCheck, timeout: float) -> StateResult:
    try:
        done = execution.run(record, check.on, check.exec, timeout=check.timeout or timeout)
    except subprocess.TimeoutExpired:
        return StateResult(False, f"did not finish within {check.timeout or timeout:g}s", [_prompt(check)], "timeout")
    problems = _exit_problem(check, done.returncode) + _json_problems(check, done.stdout) + \
        _regex_problem(check, done.stdout)
    evidence = [_prompt(check), *_tail(done.stdout, OUTPUT_LINES), *(f"stderr: {line}" for line in
                                                                    _tail(done.stderr, 5)), f"exit {done.returncode}"]
    if problems:
        return StateResult(False, "; ".join(problems), evidence, "mismatch")
    return StateResult(True, f"exit {done.returncode}" + (", output matched" if check.json or check.regex else ""),
                       evidence, "match")


def _prompt(check: CommandCheck) -> str:
    argv = check.exec[2:] if check.exec[:2] == ["/bin/sh", "-c"] else check.exec
    return f"{check.on}$ {argv[0] if len(argv) == 1 else shlex.join(argv)}"


def _tail(text: str, count: int) -> list[str]:
    lines = text.rstrip("\n").splitlines()
    return lines[-count:] if lines else []


def _exit_problem(check: CommandCheck, code: int) -> list[str]:
    return [] if check.exit is None or code == check.exit else [f"exited {code}, expected {check.exit}"]


def _regex_problem(check: CommandCheck, stdout: str) -> list[str]:
    if check.regex is None or re.search(check.regex, stdout, re.MULTILINE):
        return []
    return [f"no line of its output matches /{check.regex}/"]


def _json_problems(check: CommandCheck, stdout: str) -> list[str]:
    if not check.json:
        return []
    try:
        data = json.loads(stdout)
    except ValueError as e:
        return [f"its output is not JSON ({e.msg} at line {e.lineno})"]
    problems = []
    for path, wanted in check.json.items():
        found, value = lookup(data, path)
        if not found:
            problems.append(f"{path}: not in the output")
        elif value != wanted:
            problems.append(f"{path}: {json.dumps(value)}, expected {json.dumps(wanted)}")
    return problems


def lookup(data: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of a JSON path in decoded JSON."""
    value = data
    for step in parse_path(path):
        in_list = isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value)
        in_map = isinstance(step, str) and isinstance(value, dict) and step in value
        if not (in_list or in_map):
            return False, None
        value = value[step]
    return True, value
