"""Bridging a machine interface into a lab network, with a veth pair standing in for the NIC
(the machine's own eth0 is never touched)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import unique_name


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def fake_nic():
    """nic0 on the machine (with an address), its peer in an 'outside' namespace."""
    tag = unique_name("u")[:8]
    nic, peer, outside = f"{tag}n", f"{tag}p", f"{tag}-out"
    _ip("netns", "add", outside)
    try:
        _ip("link", "add", nic, "type", "veth", "peer", "name", peer, "netns", outside)
        _ip("addr", "add", "10.76.9.1/24", "dev", nic)
        _ip("link", "set", nic, "up")
        _ip("-n", outside, "addr", "add", "10.76.0.200/24", "dev", peer)
        _ip("-n", outside, "link", "set", peer, "up")
        yield nic
    finally:
        subprocess.run(["ip", "link", "del", nic], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", outside])


def test_uplink_is_enslaved_and_given_back_with_its_addresses(make_lab, fake_nic):
    lab = make_lab({
        "nodes": {"h": {}},
        "networks": {"lan": {"subnet": "10.76.0.0/24", "uplink": fake_nic}},
        "links": [{"endpoints": ["h:eth0", "lan"], "addresses": ["10.76.0.10/24"]}],
    })
    bridge = lab.record.networks["lan"].bridge
    detail = json.loads(_ip("-j", "link", "show", fake_nic))[0]
    assert detail["master"] == bridge
    ping = lab.exec("h", ["ping", "-c1", "-W2", "10.76.0.200"])
    assert ping.returncode == 0, "the host reaches the far side of the machine's interface"
    lab.down()
    detail = json.loads(_ip("-j", "addr", "show", fake_nic))[0]
    assert "master" not in detail
    assert "UP" in detail["flags"]
    assert any(a["local"] == "10.76.9.1" and a["prefixlen"] == 24 for a in detail["addr_info"])


def test_uplink_that_does_not_exist_is_bad_input(make_lab):
    from netemu.errors import InputError

    with pytest.raises(InputError, match="no interface"):
        make_lab({"nodes": {"h": {}}, "networks": {"lan": {"subnet": "10.76.1.0/24", "uplink": "nosuchif0"}},
                  "links": [{"endpoints": ["h:eth0", "lan"], "addresses": ["auto"]}]})


def test_macvlan_network_gives_hosts_interfaces_on_the_uplink(make_lab, fake_nic):
    lab = make_lab({
        "nodes": {"a": {}, "b": {}},
        "networks": {"wire": {"subnet": "10.76.0.0/24", "uplink": fake_nic, "driver": "macvlan"}},
        "links": [{"endpoints": ["a:eth0", "wire"], "addresses": ["10.76.0.11/24"]},
                  {"endpoints": ["b:eth0", "wire"], "addresses": ["auto"]}],
    })
    detail = lab.exec("a", ["ip", "-d", "link", "show", "eth0"]).stdout
    assert "macvlan mode bridge" in detail
    assert lab.exec("a", ["ping", "-c1", "-W2", "10.76.0.200"]).returncode == 0, "out through the uplink"
    b_addr = lab.inspect().nodes["b"].interface("eth0").addresses[0]
    assert lab.exec("a", ["ping", "-c1", "-W2", b_addr.split("/")[0]]).returncode == 0, "host to host"
    assert "master" not in json.loads(_ip("-j", "link", "show", fake_nic))[0], "no bridge for macvlan"
