"""Published ports never take anything from the machine: a port a socket of the machine already
listens on is refused before `up` creates anything, and the machine's own loopback connections
are never translated. Sockets on 127.0.0.1 and the lab's own addresses only."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from netemu.runtime import paths
from tests import kernel_snapshot
from tests.conftest import run_cli, unique_name

# Binds, prints its port (0: one the kernel picks free) and holds the socket until killed.
HOLDER = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(family, kind)
s.bind((sys.argv[2], int(sys.argv[3])))
if kind == socket.SOCK_STREAM:
    s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    if kind == socket.SOCK_STREAM:
        c, _ = s.accept(); c.sendall(sys.argv[4].encode()); c.close()
    else:
        s.recv(100)
"""


@pytest.fixture
def refused_labs() -> Iterator[list[str]]:
    """Labs whose `up` must fail: removed at the end should one come up all the same."""
    from netemu.runtime import cleanup

    names: list[str] = []
    yield names
    for name in names:
        cleanup.remove_lab(name)


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _hold(holders: list[subprocess.Popen[str]], proto: str, address: str, port: int = 0,
          reply: str = "machine") -> tuple[int, int]:
    """A python3 process of the machine holding `address`:`port`: (its pid, the port)."""
    proc = subprocess.Popen(["python3", "-c", HOLDER, proto, address, str(port), reply], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    holders.append(proc)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip():
        error = proc.stderr.read() if proc.stderr else ""
        if "Cannot assign requested address" in error or "Address family not supported" in error:
            pytest.skip(f"the machine has no {address}")
        raise AssertionError(f"the holder did not start: {error}")
    return proc.pid, int(line)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write(tmp_path: Path, name: str, ports: list[str]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "nodes": {"web": {"network": "bridge", "ports": ports}}},
                                   sort_keys=False))
    return path


def _names_of(lab: str) -> list[str]:
    """What a lab of this name would create in the kernel: objects carry the name or these."""
    return [lab, paths.bridge_name(lab, "bridge"), paths.host_veth_name(lab, "web", "eth0")]


@pytest.mark.parametrize(("proto", "address"), [("tcp", "0.0.0.0"), ("udp", "127.0.0.1"), ("tcp", "::")])
def test_port_the_machine_listens_on_is_refused_and_nothing_is_created(tmp_path, holders, refused_labs, proto,
                                                                      address):
    pid, port = _hold(holders, proto, address)
    name = unique_name("p")
    refused_labs.append(name)
    path = _write(tmp_path, name, [f"{port}:80/{proto}"])
    before = kernel_snapshot.snapshot()
    result = run_cli("up", str(path))
    assert result.returncode == 2, result.stderr
    shown = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    verb = "listens on" if proto == "tcp" else "is bound to"
    assert result.stderr.strip().splitlines()[-1] == (
        f"netemu: {path}:3: nodes.web.ports: port {port}/{proto} is already in use on the machine: "
        f"python3 (pid {pid}) {verb} {shown}"), result.stderr
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), _names_of(name)) == {}
    assert f"netemu-{name}" not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert not Path(f"/run/netemu/{name}").exists()
    for ledger in (Path("/run/netemu/pools.json"), Path("/run/netemu/host-sysctls.json")):
        assert not ledger.exists() or name not in ledger.read_text(), f"{ledger} names the refused lab"


def _start_server(lab, node: str, port: int, reply: str) -> None:
    lab.exec(node, ["sh", "-c", f"cat > /tmp/holder.py; nohup python3 /tmp/holder.py tcp 0.0.0.0 {port} '{reply}' "
                    ">/dev/null 2>&1 &"], input=HOLDER)
    for _ in range(100):
        if lab.exec(node, ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"
                           ]).returncode == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"no server on {node}:{port}")


def _receive(address: str, port: int) -> bytes:
    with socket.create_connection((address, port), timeout=5) as conn:
        return conn.recv(100)


def test_loopback_is_never_forwarded_the_labs_gateway_is(make_lab, holders):
    port = _free_port()
    lab = make_lab({"nodes": {"web": {"network": "bridge", "ports": [f"{port}:80/tcp"]}}})
    _start_server(lab, "web", 80, "from web")
    gateway = lab.inspect().record.networks["bridge"].gateways[0].split("/")[0]
    assert _receive(gateway, port) == b"from web"  # a local address of the machine: forwarded
    with pytest.raises(ConnectionRefusedError):
        _receive("127.0.0.1", port)  # nothing of the machine's listens there, and the node is not reached
    _hold(holders, "tcp", "127.0.0.1", port, "machine")  # after `up`: nothing refuses it now
    assert _receive("127.0.0.1", port) == b"machine"
    assert _receive(gateway, port) == b"from web"

    text = subprocess.run(["nft", "list", "table", "inet", f"netemu-{lab.name}"], capture_output=True, text=True,
                          check=True).stdout
    output = text.split("chain output {", 1)[1].split("}", 1)[0]
    rules = [line.strip() for line in output.splitlines()[2:] if line.strip()]
    assert rules[:2] == ["ip daddr 127.0.0.0/8 return", "ip6 daddr ::1 return"], output
    assert rules[2].startswith(f"fib daddr type local tcp dport {port} dnat ip to "), output
    assert len(rules) == 3 and "oifname" not in output, output  # in output every local address goes out lo
    prerouting = text.split("chain prerouting {", 1)[1].split("}", 1)[0]
    assert 'iifname "lo" return' in prerouting and "ip daddr 127.0.0.0/8 return" in prerouting, prerouting


def test_an_explicit_loopback_address_is_refused(tmp_path, refused_labs):
    name = unique_name("p")
    refused_labs.append(name)
    path = _write(tmp_path, name, ["127.0.0.1:8080:80"])
    result = subprocess.run([sys.executable, "-m", "netemu.cli", "validate", str(path)], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "route_localnet" in result.stderr, result.stderr
    before = kernel_snapshot.snapshot()
    assert run_cli("up", str(path)).returncode == 2
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), _names_of(name)) == {}
