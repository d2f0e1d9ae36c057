"""Docker's four network modes, the lab's default NAT bridge, published ports, NAT, and what is
injected into a host (DNS, hosts entries, environment, binds)."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
while True:
    c, peer = s.accept()
    open("/tmp/peers", "a").write(peer[0] + "\\n")
    c.sendall(b"hello from " + socket.gethostname().encode()); c.close()
"""


def _start_listener(lab, node: str, port: int) -> None:
    lab.exec(node, ["sh", "-c", f"cat > /tmp/listener.py; nohup python3 /tmp/listener.py {port} "
                    ">/dev/null 2>&1 &"], input=LISTENER)
    for _ in range(100):
        # a listening socket (state 0A) on the port, in the node's own /proc/net/tcp
        table = lab.exec(node, ["cat", "/proc/net/tcp"]).stdout.upper()
        if any(f":{port:04X} " in line and line.split()[3] == "0A" for line in table.splitlines()[1:]):
            return
        time.sleep(0.05)
    raise AssertionError(f"no listener on {node}:{port}")


def _machine_address() -> str:
    routes = json.loads(subprocess.run(["ip", "-j", "route", "get", "192.0.2.123"], capture_output=True,
                                       text=True).stdout or "[]")
    if routes and "prefsrc" in routes[0]:
        return routes[0]["prefsrc"]
    pytest.skip("the machine has no IPv4 address with a route to use as the published address")


def test_bridge_mode_attaches_to_the_labs_nat_bridge(make_lab):
    forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    lab = make_lab({"nodes": {"a": {"network": "bridge"}, "b": {"network": "bridge"}}})
    info = lab.inspect()
    bridge = info.record.networks["bridge"]
    subnet = ipaddress.ip_network(bridge.subnets[0])
    b_eth0 = info.nodes["b"].interface("eth0")
    assert b_eth0 is not None and ipaddress.ip_interface(b_eth0.addresses[0]).ip in subnet
    assert f"default via {bridge.gateways[0].split('/')[0]} dev eth0" in lab.exec("a", ["ip", "route"]).stdout
    assert info.nodes["a"].routes[0].dst == "default" and info.nodes["a"].routes[0].dev == "eth0"
    assert lab.exec("a", ["ping", "-c1", "-W2", b_eth0.addresses[0].split("/")[0]]).returncode == 0
    table = subprocess.run(["nft", "list", "table", "inet", f"netemu-{lab.name}"], capture_output=True,
                           text=True, check=True).stdout
    assert f"ip saddr {subnet}" in table and "masquerade" in table
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    lab.down()
    assert f"netemu-{lab.name}" not in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                                       text=True).stdout
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward_before


def test_nat_translates_the_source_seen_by_the_target(make_lab):
    lab = make_lab({
        "nodes": {"inside": {"routes": [{"dst": "default", "via": "10.71.1.1"}]},
                  "target": {"routes": [{"dst": "default", "via": "10.71.2.1"}]}},
        "networks": {"priv": {"subnet": "10.71.1.0/24", "gateway": "10.71.1.1", "nat": True},
                     "pub": {"subnet": "10.71.2.0/24", "gateway": "10.71.2.1"}},
        "links": [{"endpoints": ["inside:eth0", "priv"], "addresses": ["10.71.1.10/24"]},
                  {"endpoints": ["target:eth0", "pub"], "addresses": ["10.71.2.20/24"]}],
    })
    _start_listener(lab, "target", 7001)
    reply = lab.exec("inside", ["python3", "-c", "import socket; s=socket.create_connection(('10.71.2.20', 7001), 3);"
                                "print(s.recv(100).decode())"])
    assert "hello from target" in reply.stdout, reply.stderr
    seen = lab.exec("target", ["cat", "/tmp/peers"]).stdout.split()
    assert seen == ["10.71.2.1"], "the target sees the bridge's address, not 10.71.1.10"


def test_published_port_reaches_the_node_and_goes_away(make_lab):
    address = _machine_address()
    lab = make_lab({"nodes": {"web": {"network": "bridge", "ports": ["18080:80/tcp"]}}})
    _start_listener(lab, "web", 80)
    with socket.create_connection((address, 18080), timeout=5) as conn:
        assert conn.recv(100) == b"hello from web"
    lab.down()
    with pytest.raises(OSError):
        socket.create_connection((address, 18080), timeout=2).close()


def test_container_mode_shares_the_network_only(make_lab):
    lab = make_lab({
        "nodes": {"main": {}, "side": {"network": "container:main"}, "peer": {}},
        "links": [{"endpoints": ["main:eth0", "peer:eth0"], "addresses": ["10.72.0.1/24", "10.72.0.2/24"]}],
    })
    assert "10.72.0.1/24" in lab.exec("side", ["ip", "-br", "addr"]).stdout
    assert lab.exec("side", ["ping", "-c1", "-W2", "10.72.0.2"]).returncode == 0
    assert lab.exec("side", ["hostname"]).stdout.strip() == "side"
    lab.exec("side", ["sh", "-c", "sleep 100 >/dev/null 2>&1 &"])
    assert "sleep" in lab.exec("side", ["sh", "-c", "cat /proc/[0-9]*/cmdline"]).stdout
    assert "sleep" not in lab.exec("main", ["sh", "-c", "cat /proc/[0-9]*/cmdline"]).stdout, "own PID namespace"
    assert lab.inspect().nodes["side"].netns is None


def test_host_mode_uses_the_machines_network(make_lab):
    lab = make_lab({"nodes": {"h": {"network": "host"}}})
    machine = sorted(p.name for p in Path("/sys/class/net").iterdir())
    inside = sorted(lab.exec("h", ["ls", "/sys/class/net"]).stdout.split())
    assert inside == machine
    assert lab.exec("h", ["hostname"]).stdout.strip() == "h"
    assert socket.gethostname() != "h"


def test_injected_dns_hosts_env_and_binds(make_lab, tmp_path):
    shared = tmp_path / "rw"
    shared.mkdir()
    readonly = tmp_path / "ro"
    readonly.mkdir()
    (readonly / "given.txt").write_text("from the machine\n")
    lab = make_lab({"nodes": {"h": {
        "dns": ["192.0.2.53", "192.0.2.54"], "dns_search": ["lab.example"],
        "extra_hosts": {"www.baidu.com": "192.168.0.148"},
        "env": {"GREETING": "hi there"},
        "binds": [f"{shared}:/mnt/rw", f"{readonly}:/mnt/ro:ro"],
    }}})
    resolv = lab.exec("h", ["cat", "/etc/resolv.conf"]).stdout
    assert "nameserver 192.0.2.53" in resolv and "nameserver 192.0.2.54" in resolv
    assert "search lab.example" in resolv
    assert "192.168.0.148\twww.baidu.com" in lab.exec("h", ["cat", "/etc/hosts"]).stdout
    assert lab.exec("h", ["sh", "-c", "echo $GREETING"]).stdout.strip() == "hi there"
    assert lab.exec("h", ["sh", "-c", "echo written > /mnt/rw/out.txt"]).returncode == 0
    assert (shared / "out.txt").read_text() == "written\n"
    assert lab.exec("h", ["cat", "/mnt/ro/given.txt"]).stdout == "from the machine\n"
    assert lab.exec("h", ["sh", "-c", "echo x > /mnt/ro/nope"]).returncode != 0
    assert not (readonly / "nope").exists()
    # The host's overlay and binds live in its own mount namespace; the machine shows only the
    # lab's one tmpfs of writable layers.
    lab_mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if lab.name in line]
    assert [line.split()[2] for line in lab_mounts] == ["tmpfs"], lab_mounts


def test_auto_point_to_point_links_never_collide_across_labs(make_lab):
    topo = {"nodes": {"a": {}, "b": {}},
            "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["auto", "auto"]}]}
    first, second = make_lab(topo), make_lab(topo)
    nets = []
    for lab in (first, second):
        eth0 = lab.inspect().nodes["b"].interface("eth0")
        assert eth0 is not None
        v4 = next(a for a in eth0.addresses if ":" not in a)
        nets.append(ipaddress.ip_interface(v4).network)
        peer = ipaddress.ip_interface(v4).ip - 1
        assert lab.exec("b", ["ping", "-c1", "-W2", str(peer)]).returncode == 0
    assert nets[0] != nets[1] and nets[0].prefixlen == 30
    first.down()
    second.down()
    ledger = Path("/run/netemu/pools.json")
    assert not ledger.exists() or (first.name not in ledger.read_text() and second.name not in ledger.read_text())
