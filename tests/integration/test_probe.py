"""The probe engine against real hosts: every kind and every outcome, IPv4 and IPv6.

    h1 ---- r1 ---- h2           h2 runs a TCP server (80), a UDP echo server (7), and a
    10.75.1.0/24    10.75.2.0/24 firewall that drops tcp/81 and udp/54 and rejects tcp/82
    fd00:75:1::/64  fd00:75:2::/64 with ICMP admin-prohibited.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from netemu import Lab
from netemu.errors import InputError
from tests.conftest import run_cli, unique_name

UDP_ECHO = ("import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(('::', 7)); "
            "[s.sendto(d, a) for d, a in iter(lambda: s.recvfrom(2048), None)]")
FIREWALL = """nft -f - <<'EOF'
table inet fw {
  chain input {
    type filter hook input priority filter; policy accept;
    tcp dport 81 drop
    udp dport 54 drop
    tcp dport 82 reject with icmpx type admin-prohibited
  }
}
EOF
"""
TOPOLOGY = {
    "nodes": {
        "h1": {"routes": [{"dst": "default", "via": "10.75.1.1"}, {"dst": "default", "via": "fd00:75:1::1"}]},
        "r1": {"sysctls": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}},
        "h2": {
            "routes": [{"dst": "default", "via": "10.75.2.1"}, {"dst": "default", "via": "fd00:75:2::1"}],
            "cmd": f"python3 -c \"{UDP_ECHO}\" & exec python3 -m http.server 80 --bind ::",
            "exec": [FIREWALL],
        },
    },
    "links": [
        {"endpoints": ["h1:eth0", "r1:eth0"],
         "addresses": [["10.75.1.2/24", "fd00:75:1::2/64"], ["10.75.1.1/24", "fd00:75:1::1/64"]]},
        {"endpoints": ["r1:eth1", "h2:eth0"],
         "addresses": [["10.75.2.1/24", "fd00:75:2::1/64"], ["10.75.2.2/24", "fd00:75:2::2/64"]]},
    ],
}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One lab for the module (probes do not change it); removed whatever happens."""
    from netemu.runtime import cleanup

    name = unique_name("p")
    path = tmp_path_factory.mktemp("probe") / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **TOPOLOGY}, sort_keys=False))
    try:
        lab = Lab.up(path)
        # the servers start after `up` returns: wait for them with a convergence check
        assert lab.check("h1", "h2", proto="tcp", port=80, within=15), lab.history[-1]
        assert lab.check("h1", "h2", proto="udp", port=7, within=15), lab.history[-1]
        yield lab
    finally:
        cleanup.remove_lab(name)


# --- ICMP -------------------------------------------------------------------------------------
def test_icmp_echo_v4_through_a_router(lab: Lab) -> None:
    result = lab.probe("h1", "h2")
    assert result.reachable, result
    assert result.address == "10.75.2.2" and result.target_node == "h2"
    assert result.rtt is not None and result.rtt > 0
    assert result.reason == "echo reply from 10.75.2.2"
    assert any(line.startswith("got: IP / ICMP 10.75.2.2 > 10.75.1.2 echo-reply") for line in result.evidence)
    assert result.seen_at == "h2" and result.seen_source == "10.75.1.2"


def test_icmp_echo_v6(lab: Lab) -> None:
    result = lab.probe("h1", "fd00:75:2::2")
    assert result.reachable, result
    assert result.reason == "echo reply from fd00:75:2::2"


def test_icmp_silence_is_unreachable(lab: Lab) -> None:
    result = lab.probe("h1", "10.75.2.99", timeout=0.5)  # on h2's link, nobody there
    assert result.outcome == "unreachable", result
    assert result.rtt is None


def test_no_route_is_unreachable_without_sending(lab: Lab) -> None:
    result = lab.probe("r1", "10.75.99.1", timeout=0.5)
    assert result.outcome == "unreachable"
    assert "no route" in result.reason


# --- TCP: three distinct outcomes ---------------------------------------------------------------
def test_tcp_synack_is_reachable(lab: Lab) -> None:
    result = lab.probe("h1", "h2", proto="tcp", port=80)
    assert result.outcome == "reachable", result
    assert result.reason == "SYN/ACK from 10.75.2.2:80"
    assert any("closes the half-open connection" in line for line in result.evidence)


def test_tcp_rst_is_refused(lab: Lab) -> None:
    result = lab.probe("h1", "h2", proto="tcp", port=8080)
    assert result.outcome == "refused", result
    assert result.reason == "RST from 10.75.2.2:8080"


def test_tcp_silence_is_unreachable_and_says_it_never_arrived(lab: Lab) -> None:
    result = lab.probe("h1", "h2", proto="tcp", port=81, timeout=0.5)
    assert result.outcome == "unreachable", result
    assert result.reason.startswith("no answer to")
    assert result.seen_at is None  # h2's firewall dropped it before its stack took it


def test_tcp_icmp_error_is_unreachable(lab: Lab) -> None:
    result = lab.probe("h1", "h2", proto="tcp", port=82)
    assert result.outcome == "unreachable", result
    assert result.reason == "ICMP dest-unreach communication-prohibited from 10.75.2.2"


def test_tcp_v6(lab: Lab) -> None:
    assert lab.probe("h1", "fd00:75:2::2", proto="tcp", port=80).outcome == "reachable"
    assert lab.probe("h1", "fd00:75:2::2", proto="tcp", port=8080).outcome == "refused"


def test_the_source_kernels_rst_is_held_back(lab: Lab) -> None:
    """The SYN/ACK reaches h1, whose kernel knows no such connection and answers with a RST of
    its own; the session's nftables rule drops that RST (its counter shows it), our own marked
    RST closes the connection, and the table is gone when the session ends."""
    from netemu import probe
    from netemu.probe.model import ProbeRequest
    with probe.open_engine(lab.record) as engine:
        result = engine.probe(ProbeRequest("h1", "h2", proto="tcp", port=80))
        assert result.reachable, result
        table = lab.exec("h1", ["nft", "list", "table", "inet", "netemu_probe"], check=True).stdout
        assert "counter packets 0 " not in table and "counter packets" in table, table
    assert "netemu_probe" not in lab.exec("h1", ["nft", "list", "tables"], check=True).stdout


# --- UDP ----------------------------------------------------------------------------------------
def test_udp_reply_port_unreachable_and_silence(lab: Lab) -> None:
    reply = lab.probe("h1", "h2", proto="udp", port=7)
    assert reply.outcome == "reachable" and reply.reason == "UDP reply from 10.75.2.2:7", reply
    refused = lab.probe("h1", "h2", proto="udp", port=9)
    assert refused.outcome == "refused", refused
    assert refused.reason == "ICMP dest-unreach port-unreachable from 10.75.2.2"
    silent = lab.probe("h1", "h2", proto="udp", port=54, timeout=0.5)
    assert silent.outcome == "unreachable", silent
    assert lab.probe("h1", "fd00:75:2::2", proto="udp", port=7).outcome == "reachable"


# --- neighbours -------------------------------------------------------------------------------
def test_arp_and_ndp(lab: Lab) -> None:
    arp = lab.probe("h1", "r1:eth0", proto="arp")
    assert arp.reachable, arp
    assert arp.reason.startswith("ARP reply on eth0: 10.75.1.1 is-at ")
    ndp = lab.probe("h1", "fd00:75:1::1", proto="arp")
    assert ndp.reachable, ndp
    assert ndp.reason.startswith("neighbour advertisement on eth0: fd00:75:1::1 is-at ")
    missing = lab.probe("h1", "10.75.1.77", proto="arp", timeout=0.5)
    assert missing.outcome == "unreachable" and "ARP request" in missing.reason


def test_arp_needs_an_on_link_target(lab: Lab) -> None:
    with pytest.raises(InputError, match="not on a link of h1"):
        lab.probe("h1", "h2", proto="arp")


# --- paths and NAT ------------------------------------------------------------------------------
def test_trace_names_the_router(lab: Lab) -> None:
    result = lab.probe("h1", "h2", trace=True)
    assert result.reachable, result
    assert [hop.node for hop in result.path or []] == ["r1"]
    assert result.path_text() == "h1 -> r1 -> h2"
    tcp = lab.probe("h1", "fd00:75:2::2", proto="tcp", port=80, trace=True)
    assert tcp.reachable and [hop.node for hop in tcp.path or []] == ["r1"], tcp


def test_via_check(lab: Lab) -> None:
    assert lab.check("h1", "h2", via=["r1"])
    failed = lab.check("h1", "h2", via=["h1"])
    assert not failed and "expected the path via h1, saw h1 -> r1 -> h2" in failed.message


def test_bad_arguments_are_input_errors(lab: Lab) -> None:
    with pytest.raises(InputError, match="no node 'nobody'"):
        lab.probe("nobody", "h2")
    with pytest.raises(InputError, match="needs a port"):
        lab.probe("h1", "h2", proto="tcp")
    with pytest.raises(InputError):
        lab.check("h1", "h2", expect="maybe")


def test_cli_probe(lab: Lab) -> None:
    result = run_cli("probe", lab.name, "h1", "h2", "--proto", "tcp", "--port", "8080")
    assert result.returncode == 1 and "refused" in result.stdout and "RST from 10.75.2.2:8080" in result.stdout
    assert "expected reachable, saw refused" in result.stderr
    result = run_cli("probe", lab.name, "h1", "h2", "--proto", "tcp", "--port", "8080", "--expect", "refused",
                     "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["outcome"] == "refused" and data["evidence"]
    traced = run_cli("probe", lab.name, "h1", "h2", "--trace")
    assert traced.returncode == 0 and "path: h1 -> r1 -> h2" in traced.stdout
    bad = run_cli("probe", lab.name, "h1", "h2", "--proto", "tcp")
    assert bad.returncode == 2 and "needs a port" in bad.stderr
    missing = run_cli("probe", "nosuchlab", "h1", "h2")
    assert missing.returncode == 2


def test_reach_matrix(lab: Lab) -> None:
    matrix = lab.reach()
    assert matrix.pairs == 6 and matrix.reachable == 6, matrix.unreachable_pairs()
    assert matrix.addresses == {"h1": "10.75.1.2", "r1": "10.75.1.1", "h2": "10.75.2.2"}
    result = run_cli("reach", lab.name, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["reachable"] == 6
    table = run_cli("reach", lab.name)
    assert "6/6 pairs reachable (3 hosts)" in table.stdout


def test_seen_as_through_masquerade(make_lab) -> None:
    """A NAT router made of an nftables rule inside a node: the target sees the router's address."""
    lab = make_lab({
        "nodes": {
            "inside": {"routes": [{"dst": "default", "via": "10.75.5.1"}]},
            "nat": {"sysctls": {"net.ipv4.ip_forward": 1},
                    "exec": ["nft add table ip nat && nft 'add chain ip nat post { type nat hook postrouting "
                             "priority srcnat; }' && nft add rule ip nat post oifname eth1 masquerade"]},
            "outside": {},
        },
        "links": [
            {"endpoints": ["inside:eth0", "nat:eth0"], "addresses": ["10.75.5.2/24", "10.75.5.1/24"]},
            {"endpoints": ["nat:eth1", "outside:eth0"], "addresses": ["10.75.6.1/24", "10.75.6.2/24"]},
        ],
    })
    for proto, port in (("icmp", None), ("tcp", 5555), ("udp", 5555)):
        result = lab.check("inside", "outside", "refused" if port else "reachable", proto, port,
                           seen_as="10.75.6.1")
        assert result, result
        assert result.probe.seen_at == "outside" and result.probe.seen_source == "10.75.6.1"
    wrong = lab.check("inside", "outside", seen_as="10.75.5.2")
    assert not wrong
    assert wrong.message.endswith("expected it to arrive from 10.75.5.2, but outside saw it from 10.75.6.1")


def test_reach_ipv6_and_a_node_without_address(make_lab) -> None:
    lab = make_lab({
        "nodes": {"a": {}, "b": {}, "alone": {}},
        "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["fd00:75:7::1/64", "fd00:75:7::2/64"]}],
    })
    matrix = lab.reach(timeout=0.5)
    assert matrix.addresses == {"a": "fd00:75:7::1", "b": "fd00:75:7::2", "alone": None}
    assert matrix.cells["a"]["b"].outcome == "reachable" and matrix.cells["b"]["a"].outcome == "reachable"
    assert matrix.cells["a"]["alone"].reason == "alone has no address"
    assert matrix.cells["alone"]["a"].outcome == "unreachable"
    assert "could not send" in matrix.cells["alone"]["a"].reason
    assert matrix.reachable == 2 and matrix.pairs == 6
