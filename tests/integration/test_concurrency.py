"""Labs side by side (docs/contract.md §6.4): several `up` at once from separate processes, the same name
twice at once, and ten labs whose addresses all come from the machine-wide pools."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import kernel_snapshot
from tests.conftest import NETEMU, ROOT, run_cli, unique_name

CLI_TIMEOUT = 300


def _auto_topology(name: str) -> dict:
    """Three hosts on the lab's default NAT bridge (a /24 from the pool) and a point-to-point link
    with pool addresses (a /30 from 100.64.0.0/10): every address is chosen at `up`."""
    return {
        "name": name,
        "defaults": {"network": "bridge"},
        "nodes": {"a": {}, "b": {}, "c": {}},
        "links": [{"endpoints": ["a:p0", "b:p0"], "addresses": ["auto", "auto"]}],
    }


def _write(directory: Path, topo: dict) -> Path:
    path = directory / f"{topo['name']}.yaml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return path


def _up_at_once(paths: list[Path]) -> list[subprocess.CompletedProcess[str]]:
    """Start every `netemu up` before waiting for any."""
    procs = [subprocess.Popen([*NETEMU, "up", "-q", str(p)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in paths]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def _inspect(name: str) -> dict:
    result = run_cli("inspect", name, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _addresses(info: dict) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Every address the lab's hosts and bridges hold, as the kernel reports them."""
    found = [ipaddress.ip_interface(a) for net in info["networks"].values() for a in net.get("gateways", [])]
    for node in info["nodes"].values():
        for iface in node.get("interfaces", []):
            found += [ipaddress.ip_interface(a) for a in iface["addresses"]]
    # Loopback and link-local addresses are the same in every namespace by design.
    return [a for a in found if not (a.ip.is_loopback or a.ip.is_link_local)]


def _ping(name: str, node: str, address: str) -> subprocess.CompletedProcess[str]:
    return run_cli("exec", name, node, "--", "ping", "-c1", "-W2", address)


@pytest.fixture
def lab_names() -> Iterator[list[str]]:
    """Names of the labs a test makes; each is taken down at the end whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        run_cli("down", "-q", name)


def test_two_labs_up_at_once_from_two_processes(tmp_path, lab_names):
    before = kernel_snapshot.snapshot()
    lab_names += [unique_name("c"), unique_name("c")]
    results = _up_at_once([_write(tmp_path, _auto_topology(name)) for name in lab_names])
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    for name in lab_names:
        info = _inspect(name)
        assert info["status"] == "running"
        b = next(i for i in info["nodes"]["b"]["interfaces"] if i["name"] == "p0")
        assert _ping(name, "a", b["addresses"][0].split("/")[0]).returncode == 0
    for name in lab_names:
        assert run_cli("down", name).returncode == 0
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), lab_names) == {}


def test_same_name_twice_at_once_one_wins_and_is_untouched(tmp_path, lab_names):
    name = unique_name("s")
    lab_names.append(name)
    path = _write(tmp_path, _auto_topology(name))
    results = _up_at_once([path, path])
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 2], [(r.returncode, r.stderr) for r in results]
    loser = next(r for r in results if r.returncode == 2)
    assert "already exists" in loser.stderr and "Traceback" not in loser.stderr
    info = _inspect(name)
    assert info["status"] == "running" and all(node["alive"] for node in info["nodes"].values())
    gateway = info["networks"]["bridge"]["gateways"][0].split("/")[0]
    assert _ping(name, "c", gateway).returncode == 0


def test_same_name_again_while_it_runs_changes_nothing(tmp_path, lab_names):
    name = unique_name("s")
    lab_names.append(name)
    path = _write(tmp_path, _auto_topology(name))
    assert run_cli("up", "-q", str(path)).returncode == 0
    during = kernel_snapshot.snapshot()
    second = run_cli("up", str(path))
    assert second.returncode == 2 and "already exists" in second.stderr, second.stderr
    assert kernel_snapshot.diff_mine(during, kernel_snapshot.snapshot(), [name]) == {}
    assert _inspect(name)["status"] == "running"


def test_ten_labs_side_by_side_with_automatic_addresses_never_collide(tmp_path, lab_names):
    before = kernel_snapshot.snapshot()
    lab_names += [unique_name("m") for _ in range(10)]
    results = _up_at_once([_write(tmp_path, _auto_topology(name)) for name in lab_names])
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    owner: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {}
    for name in lab_names:
        info = _inspect(name)
        for address in _addresses(info):
            clash = [other for net, other in owner.items() if other != name and net.overlaps(address.network)]
            assert not clash, f"{name}'s {address} overlaps a subnet of lab {clash[0]}"
            owner[address.network] = name
        bridge = info["networks"]["bridge"]["gateways"][0].split("/")[0]
        assert _ping(name, "a", bridge).returncode == 0
    for name in lab_names:
        assert run_cli("down", name).returncode == 0
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), lab_names) == {}


def test_two_downs_of_the_same_lab_at_once_both_succeed(tmp_path, lab_names):
    name = unique_name("d")
    lab_names.append(name)
    before = kernel_snapshot.snapshot()
    assert run_cli("up", "-q", str(_write(tmp_path, _auto_topology(name)))).returncode == 0
    procs = [subprocess.Popen([*NETEMU, "down", name], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=CLI_TIMEOUT), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in outcomes), outcomes
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), [name]) == {}
