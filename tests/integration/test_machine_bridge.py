"""A network joining a bridge the machine already has (`bridge:`, containerlab's kind: bridge):
the hosts' veths become its ports, and `down` leaves the bridge, its addresses and its other
ports as they were."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from netemu.runtime import paths
from tests.conftest import run_cli, unique_name


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


def _ports(bridge: str) -> list[str]:
    return sorted(link["ifname"] for link in json.loads(_ip("-j", "link", "show", "master", bridge)))


def _addresses(bridge: str) -> list[str]:
    info = json.loads(_ip("-j", "addr", "show", "dev", bridge))[0]
    return sorted(f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a["family"] == "inet")


@pytest.fixture
def machine_bridge() -> Iterator[tuple[str, str]]:
    """A bridge of the machine's (10.66.7.1/24, up) with a port of its own: a veth whose peer
    stays on the machine. Named nx*, never like one of netemu's."""
    tag = uuid.uuid4().hex[:8]
    bridge, port = f"nxb{tag}", f"nxp{tag}"
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", "10.66.7.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        _ip("link", "add", port, "type", "veth", "peer", "name", f"{port}x")
        _ip("link", "set", port, "master", bridge, "up")
        yield bridge, port
    finally:
        subprocess.run(["ip", "link", "del", port], stderr=subprocess.DEVNULL, check=False)
        subprocess.run(["ip", "link", "del", bridge], stderr=subprocess.DEVNULL, check=False)


def _lab(bridge: str) -> dict:
    return {
        "nodes": {"a": {}, "b": {}},
        "networks": {"lan": {"bridge": bridge, "subnet": "10.66.7.0/24"}},
        "links": [{"endpoints": ["a:eth0", "lan"], "addresses": ["10.66.7.10/24"]},
                  {"endpoints": ["b:eth0", "lan"], "addresses": ["10.66.7.11/24"]}],
    }


def test_hosts_join_the_machine_s_bridge_and_down_leaves_it_as_it_was(make_lab, machine_bridge):
    bridge, port = machine_bridge
    before = (_ports(bridge), _addresses(bridge), json.loads(_ip("-j", "-d", "link", "show", bridge))[0]["mtu"])
    lab = make_lab(_lab(bridge))
    ports = _ports(bridge)
    assert port in ports and len(ports) == 3, ports  # its own port and the two hosts'
    assert lab.exec("a", ["ping", "-c1", "-W2", "10.66.7.11"]).returncode == 0  # host to host
    assert lab.exec("a", ["ping", "-c1", "-W2", "10.66.7.1"]).returncode == 0  # the bridge's own address
    assert lab.inspect().record.networks["lan"].bridge == bridge
    lab.down()
    after = (_ports(bridge), _addresses(bridge), json.loads(_ip("-j", "-d", "link", "show", bridge))[0]["mtu"])
    assert after == before
    assert "UP" in json.loads(_ip("-j", "link", "show", bridge))[0]["flags"]


def _refused(tmp_path: Path, topology: dict) -> subprocess.CompletedProcess[str]:
    name = unique_name()
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(topology, name=name), sort_keys=False))
    result = run_cli("up", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{path}:" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not paths.state_dir(name).exists(), "a refused up left its state"
    assert not any(n.startswith(paths.netns_prefix(name)) for n in _ip("netns", "list").split()), "a netns was made"
    return result


def test_uplink_naming_a_bridge_points_at_bridge(tmp_path, machine_bridge):
    bridge, _ = machine_bridge
    topology = {"nodes": {"a": {}}, "networks": {"lan": {"subnet": "10.66.7.0/24", "uplink": bridge}},
                "links": [{"endpoints": ["a:eth0", "lan"], "addresses": ["10.66.7.10/24"]}]}
    result = _refused(tmp_path, topology)
    assert f"use `bridge: {bridge}`" in result.stderr
    assert _ports(bridge) == [machine_bridge[1]]


def test_a_bridge_the_machine_lacks_is_refused(tmp_path):
    missing = f"nxm{uuid.uuid4().hex[:8]}"
    result = _refused(tmp_path, _lab(missing))
    assert f"networks.lan.bridge: the machine has no interface '{missing}'" in result.stderr


def test_an_interface_that_is_not_a_bridge_is_refused(tmp_path, machine_bridge):
    _, port = machine_bridge
    result = _refused(tmp_path, _lab(port))
    assert f"{port} is not a bridge" in result.stderr
