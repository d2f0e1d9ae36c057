"""A Kathara lab run for real (docs/kathara.md): tests/data/kathara/rip, three FRR routers and two
pcs, on `image: host` through NETEMU_KATHARA_IMAGE. The lab's name comes from its directory, so
the fixture is copied under a unique directory name. Each test asks the kernel or the hosts one
thing; the last one takes the lab down with `netemu down DIR/lab.conf` and checks that nothing
of it is left. The lab goes down at the end whatever happened."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netemu import Lab, api
from netemu.runtime import paths
from netemu.topology.kathara import IMAGE_ENV, load_kathara
from tests import kernel_snapshot
from tests.conftest import ROOT, run_cli, unique_name

FIXTURE = ROOT / "tests" / "data" / "kathara" / "rip"
CONVERGENCE = 60.0  # seconds RIP gets (timers basic 5: in practice a few seconds)
# node -> {interface: (collision domain's netemu network, address its .startup sets)}
WIRING = {
    "pc1": {"eth0": ("a", "10.0.1.10/24")},
    "r1": {"eth0": ("a", "10.0.1.1/24"), "eth1": ("b", "10.0.12.1/24")},
    "r2": {"eth0": ("b", "10.0.12.2/24"), "eth1": ("c", "10.0.23.2/24")},
    "r3": {"eth0": ("c", "10.0.23.3/24"), "eth1": ("d", "10.0.4.1/24")},
    "pc2": {"eth0": ("d", "10.0.4.10/24")},
}
ROUTERS = ("r1", "r2", "r3")
DEPENDENCIES = {"r2": ("r1", "r3"), "pc1": ("r1",), "pc2": ("r3",)}  # tests/data/kathara/rip/lab.dep

pytestmark = pytest.mark.skipif(not Path("/usr/lib/frr/ripd").exists(), reason="FRRouting is not installed")


@dataclass
class Running:
    lab: Lab
    directory: Path
    before: dict[str, set[str]]


@pytest.fixture(scope="module")
def rip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    name = unique_name("k")
    directory = tmp_path_factory.mktemp("kathara") / name
    shutil.copytree(FIXTURE, directory)
    # Root inside a userns host is an unprivileged id outside: shared/ must let it write.
    (directory / "shared").chmod(0o1777)
    old = os.environ.get(IMAGE_ENV)
    os.environ[IMAGE_ENV] = "host"
    before = kernel_snapshot.snapshot()
    try:
        topo = load_kathara(directory / "lab.conf")
        assert topo.name == name
        yield Running(Lab(api.up(topo).name), directory, before)
    finally:
        api.down(name)
        if old is None:
            os.environ.pop(IMAGE_ENV, None)
        else:
            os.environ[IMAGE_ENV] = old


def _ip_json(*args: str) -> list[dict]:
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout)


def _sh(lab: Lab, node: str, command: str) -> subprocess.CompletedProcess[str]:
    return lab.exec(node, ["/bin/sh", "-c", command])


def test_collision_domains_are_bridges(rip: Running) -> None:
    lab = rip.lab.name
    for network in "abcd":
        bridge = paths.bridge_name(lab, network)
        (detail,) = _ip_json("-d", "link", "show", "dev", bridge)
        assert detail["linkinfo"]["info_kind"] == "bridge", detail
        expected = {paths.host_veth_name(lab, node, iface)
                    for node, ifaces in WIRING.items() for iface, (net, _) in ifaces.items() if net == network}
        ports = {link["ifname"] for link in _ip_json("link", "show", "master", bridge)}
        assert ports == expected, (network, ports, expected)


def test_machine_directories_are_copied(rip: Running) -> None:
    for router in ROUTERS:
        conf = _sh(rip.lab, router, "cat /etc/frr/frr.conf; grep '^ripd=' /etc/frr/daemons")
        assert conf.returncode == 0, conf.stderr
        assert f"hostname {router}" in conf.stdout and "ripd=yes" in conf.stdout, conf.stdout


def test_startup_files_ran(rip: Running) -> None:
    for node, ifaces in WIRING.items():
        for iface, (_, address) in ifaces.items():
            (link,) = _ip_json("-n", f"netemu-{rip.lab.name}.{node}", "address", "show", "dev", iface)
            got = {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"}
            assert address in got, (node, iface, got)
        log = _sh(rip.lab, node, "cat /var/log/startup.log")
        assert "exit status 0" in log.stdout, (node, log.stdout)


def test_systemctl_started_frr(rip: Running) -> None:
    for router in ROUTERS:
        for daemon in ("zebra", "ripd"):
            found = rip.lab.exec(router, ["pgrep", "-x", daemon])
            assert found.returncode == 0, (router, daemon, _sh(rip.lab, router, "cat /var/log/startup.log").stdout)


def test_rip_converges_end_to_end(rip: Running) -> None:
    deadline = time.monotonic() + CONVERGENCE
    while True:
        ping = rip.lab.exec("pc1", ["ping", "-c1", "-W1", "10.0.4.10"])
        if ping.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    routes = _sh(rip.lab, "r1", "vtysh -c 'show ip route rip'").stdout
    assert ping.returncode == 0, f"pc1 cannot ping pc2 after {CONVERGENCE:.0f}s; r1's RIP routes:\n{routes}"


def test_lab_dep_order(rip: Running) -> None:
    shared = rip.directory / "shared"
    ran = {node: int((shared / f"started-{node}").read_text()) for node in WIRING}  # shared.startup's clock
    started = {node: _start_time(rip.lab.pid(node)) for node in WIRING}  # PID 1's start, in ticks
    for node, needs in DEPENDENCIES.items():
        for need in needs:
            assert ran[need] < ran[node], (node, need, ran)
            assert started[need] <= started[node], (node, need, started)


def _start_time(pid: int) -> int:
    """Clock ticks since boot at which the process started (field 22 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_down_by_lab_conf_leaves_nothing(rip: Running) -> None:
    result = run_cli("down", str(rip.directory / "lab.conf"))
    assert result.returncode == 0, result.stderr
    left = kernel_snapshot.diff_mine(rip.before, kernel_snapshot.snapshot(), [rip.lab.name])
    assert left == {}, left
