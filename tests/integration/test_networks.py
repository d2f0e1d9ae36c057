"""Bridges from `networks:`, static routes across a router, MTU, IPv6, neighbour-table limits."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def _ping(lab, node: str, target: str) -> subprocess.CompletedProcess[str]:
    return lab.exec(node, ["ping", "-c", "1", "-W", "2", target])


def test_hosts_on_a_bridge_reach_each_other_and_the_gateway(make_lab):
    lab = make_lab({
        "nodes": {"h1": {}, "h2": {}, "h3": {}},
        "networks": {"lan": {"subnet": "10.31.0.0/24", "gateway": "10.31.0.1"}},
        "links": [
            {"endpoints": ["h1:eth0", "lan"], "addresses": ["10.31.0.11/24"]},
            {"endpoints": ["h2:eth0", "lan"], "addresses": ["auto"]},
            {"endpoints": ["h3:eth0", "lan"], "addresses": ["auto"]},
        ],
    })
    info = lab.inspect()
    bridge = info.record.networks["lan"].bridge
    assert bridge is not None
    detail = json.loads(subprocess.run(["ip", "-j", "-d", "addr", "show", bridge], capture_output=True,
                                       text=True, check=True).stdout)[0]
    assert detail["linkinfo"]["info_kind"] == "bridge"
    assert detail["ifalias"].startswith(f"netemu:{lab.name}:")
    assert any(a["local"] == "10.31.0.1" for a in detail["addr_info"])
    h3 = info.nodes["h3"].interface("eth0")
    assert h3 is not None
    h3_addr = h3.addresses[0].split("/")[0]
    assert _ping(lab, "h1", h3_addr).returncode == 0
    assert _ping(lab, "h2", "10.31.0.11").returncode == 0
    assert _ping(lab, "h1", "10.31.0.1").returncode == 0
    ports = json.loads(subprocess.run(["ip", "-j", "link", "show", "master", bridge], capture_output=True,
                                      text=True, check=True).stdout)
    assert len(ports) == 3


def test_router_chain_with_static_routes_ipv4_and_ipv6(make_lab):
    lab = make_lab({
        "nodes": {
            "h1": {"routes": [{"dst": "default", "via": "10.40.1.1"}, {"dst": "default", "via": "fd40:1::1"}]},
            "r1": {"sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}},
            "h2": {"routes": [{"dst": "10.40.1.0/24", "via": "10.40.2.1"},
                              {"dst": "fd40:1::/64", "via": "fd40:2::1"}]},
        },
        "links": [
            {"endpoints": ["h1:eth0", "r1:eth1"], "addresses": [["10.40.1.2/24", "fd40:1::2/64"],
                                                                 ["10.40.1.1/24", "fd40:1::1/64"]]},
            {"endpoints": ["r1:eth2", "h2:eth0"], "addresses": [["10.40.2.1/24", "fd40:2::1/64"],
                                                                 ["10.40.2.2/24", "fd40:2::2/64"]],
             "mtu": 1400},
        ],
    })
    assert _ping(lab, "h1", "10.40.2.2").returncode == 0
    assert _ping(lab, "h2", "10.40.1.2").returncode == 0
    v6 = _ping(lab, "h1", "fd40:2::2")
    assert v6.returncode == 0, v6.stdout + v6.stderr
    assert _ping(lab, "h2", "fd40:1::2").returncode == 0
    assert "mtu 1400" in lab.exec("h2", ["ip", "link", "show", "eth0"]).stdout
    routes = lab.exec("h1", ["ip", "route"]).stdout
    assert "default via 10.40.1.1 dev eth0" in routes


def test_neighbour_thresholds_raised_for_a_big_segment_and_restored(make_lab):
    key = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
    before = key.read_text().strip()
    count = 40  # 40 hosts on one bridge: up to 1,600 neighbour entries, over the default 1,024
    nodes = {f"h{i}": {} for i in range(count)}
    lab = make_lab({
        "nodes": nodes,
        "networks": {"lan": {"subnet": "10.50.0.0/24"}},
        "links": [{"endpoints": [f"{n}:eth0", "lan"], "addresses": ["auto"]} for n in nodes],
    })
    assert int(key.read_text()) >= 2 * count * count > int(before)
    lab.down()
    assert key.read_text().strip() == before
