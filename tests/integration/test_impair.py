"""Impairments measured with real traffic, and failure injection on a running lab."""

from __future__ import annotations

import time

from tests.conftest import run_cli

PAIR = {
    "nodes": {"a": {}, "b": {}},
    "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.73.0.1/24", "10.73.0.2/24"]}],
}
SEND_UDP = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for i in range({n}):\n    s.sendto(b'x' * 64, ('10.73.0.2', 9))\n")
RECEIVE = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(1); open("/tmp/ready", "w").close()
c, _ = s.accept(); total = 0; first = None
while True:
    data = c.recv(65536)
    if not data:
        break
    first = first or time.monotonic(); total += len(data)
print(total, time.monotonic() - first)
"""
SEND_TCP = ("import socket; s=socket.create_connection(('10.73.0.2', 5001)); "
            "s.sendall(b'x' * {size}); s.close()")


def _rx_packets(lab, node: str) -> int:
    return int(lab.exec(node, ["cat", "/sys/class/net/eth0/statistics/rx_packets"]).stdout)


def _with_impair(impair: dict[str, str]) -> dict:
    return {**PAIR, "links": [{**PAIR["links"][0], "impair": impair}]}


def test_loss_drops_its_share_of_1000_probes(make_lab):
    lab = make_lab(_with_impair({"loss": "20%"}))
    lab.exec("a", ["ping", "-c5", "-i0.05", "-W1", "10.73.0.2"])  # resolve the neighbour first
    before = _rx_packets(lab, "b")
    lab.exec("a", ["python3", "-c", SEND_UDP.format(n=1000)], check=True)
    received = _rx_packets(lab, "b") - before
    assert 750 <= received <= 850, f"{1000 - received} of 1000 dropped, expected 200 +- 50"


def test_rate_limit_measured_by_a_tcp_transfer(make_lab):
    lab = make_lab(_with_impair({"rate": "10mbit"}))
    lab.exec("b", ["sh", "-c", "cat > /tmp/rx.py"], input=RECEIVE)
    lab.exec("b", ["sh", "-c", "nohup python3 /tmp/rx.py > /tmp/rx.out 2>&1 &"])
    for _ in range(100):
        if lab.exec("b", ["test", "-e", "/tmp/ready"]).returncode == 0:
            break
        time.sleep(0.05)
    size = 3_000_000  # 2.4 s at 10 mbit/s
    lab.exec("a", ["python3", "-c", SEND_TCP.format(size=size)], check=True, timeout=60)
    for _ in range(100):
        out = lab.exec("b", ["cat", "/tmp/rx.out"]).stdout.split()
        if out:
            break
        time.sleep(0.05)
    total, seconds = int(out[0]), float(out[1])
    mbit = total * 8 / seconds / 1e6
    assert total == size
    # tbf counts whole frames: TCP payload is at most 1448/1514 of them (about 9.6 mbit/s).
    assert 8.5 <= mbit <= 10.5, f"measured {mbit:.2f} mbit/s of payload for a 10mbit limit"


def test_link_down_stops_traffic_and_up_restores_it_with_routes(make_lab):
    topo = {**PAIR, "nodes": {"a": {"routes": [{"dst": "10.99.0.0/24", "via": "10.73.0.2"}]}, "b": {}}}
    lab = make_lab(topo)
    ping = ["ping", "-c1", "-W1", "10.73.0.2"]
    assert lab.exec("a", ping).returncode == 0
    assert run_cli("link", lab.name, "a:eth0", "down").returncode == 0
    assert lab.exec("a", ping).returncode != 0
    state = lab.inspect().nodes["a"].interface("eth0").state
    assert state == "down"
    assert run_cli("link", lab.name, "a:eth0", "up").returncode == 0
    for _ in range(50):
        if lab.exec("a", ping).returncode == 0:
            break
        time.sleep(0.1)
    assert lab.exec("a", ping).returncode == 0
    assert "10.99.0.0/24 via 10.73.0.2" in lab.exec("a", ["ip", "route"]).stdout


def test_link_set_changes_loss_on_a_running_lab(make_lab):
    lab = make_lab(PAIR)
    assert lab.exec("a", ["ping", "-c1", "-W2", "10.73.0.2"]).returncode == 0  # neighbour resolved
    result = run_cli("link", lab.name, "a:eth0", "set", "--loss", "100%")
    assert result.returncode == 0, result.stderr
    before = _rx_packets(lab, "b")
    lab.exec("a", ["python3", "-c", SEND_UDP.format(n=50)], check=True)
    assert _rx_packets(lab, "b") == before
    assert run_cli("link", lab.name, "a:eth0", "set", "--clear").returncode == 0
    assert lab.exec("a", ["ping", "-c1", "-W2", "10.73.0.2"]).returncode == 0
    assert run_cli("link", lab.name, "a:eth0", "set", "--loss", "lots").returncode == 2


def test_link_flap(make_lab):
    lab = make_lab(PAIR)
    result = run_cli("link", lab.name, "b:eth0", "flap", "--period", "0.2s", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("down") == 2 and result.stdout.count("up") == 2
    assert lab.exec("a", ["ping", "-c1", "-W2", "10.73.0.2"]).returncode == 0


def test_delay_without_sch_netem_exits_3_naming_it(make_lab, tmp_path):
    from pathlib import Path

    if Path("/sys/module/sch_netem").exists():
        import pytest
        pytest.skip("this kernel has sch_netem: the refusal cannot be shown here")
    path = make_lab(_with_impair({"delay": "20ms"}), up=False)
    result = run_cli("up", str(path))
    assert result.returncode == 3, result.stderr
    assert "sch_netem" in result.stderr


def test_node_stop_keeps_its_layer_and_start_rewires_its_links(make_lab):
    lab = make_lab({
        "nodes": {"a": {"routes": [{"dst": "10.98.0.0/24", "via": "10.73.0.2"}]}, "b": {}, "c": {}},
        "networks": {"lan": {"subnet": "10.74.0.0/24", "gateway": "10.74.0.1"}},
        "links": [{**PAIR["links"][0], "impair": {"rate": "50mbit"}},
                  {"endpoints": ["a:eth1", "lan"], "addresses": ["10.74.0.10/24"]},
                  {"endpoints": ["c:eth0", "lan"], "addresses": ["10.74.0.11/24"]}],
    })
    assert lab.exec("a", ["sh", "-c", "echo kept > /root/marker"]).returncode == 0
    old_pid = lab.pid("a")
    assert run_cli("node", lab.name, "a", "stop").returncode == 0
    assert lab.inspect().nodes["a"].alive is False
    assert lab.exec("b", ["ping", "-c1", "-W1", "10.73.0.1"]).returncode != 0
    assert "stopped" in run_cli("inspect", lab.name).stdout
    assert run_cli("node", lab.name, "a", "start").returncode == 0
    assert lab.pid("a") != old_pid
    assert lab.exec("a", ["cat", "/root/marker"]).stdout.strip() == "kept"
    assert lab.exec("b", ["ping", "-c1", "-W2", "10.73.0.1"]).returncode == 0
    assert lab.exec("c", ["ping", "-c1", "-W2", "10.74.0.10"]).returncode == 0
    assert "10.98.0.0/24 via 10.73.0.2" in lab.exec("a", ["ip", "route"]).stdout
    assert "tbf" in lab.exec("a", ["tc", "qdisc", "show", "dev", "eth0"]).stdout, "impairment restored"
    assert run_cli("node", lab.name, "b", "restart").returncode == 0
    assert lab.exec("a", ["ping", "-c1", "-W2", "10.73.0.2"]).returncode == 0
