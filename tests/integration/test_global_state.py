"""The machine-wide sysctls netemu raises (IPv4 forwarding for NAT, the neighbour-table
thresholds for big segments) come back to their old values when the last lab that needed them
goes: after `down`, and after a crash followed by `down` or `clean` (docs/contract.md §6.2, §6.3)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import kernel_snapshot
from tests.conftest import NETEMU, ROOT, run_cli, unique_name

FORWARDING = "net.ipv4.ip_forward"
THRESH3 = "net.ipv4.neigh.default.gc_thresh3"
HOSTS = 40  # 41 neighbours on one segment: 41^2 entries, twice that is past the default 1024


def _sysctl(key: str) -> int:
    return int(Path("/proc/sys", key.replace(".", "/")).read_text())


def _lab(directory: Path, nat: bool) -> tuple[str, Path]:
    name = unique_name("g")
    nodes = {f"h{i}": {} for i in range(HOSTS)}
    topo = {"name": name, "nodes": nodes,
            "networks": {"lan": {"subnet": "10.233.0.0/24" if nat else "10.234.0.0/24",
                                 "gateway": "10.233.0.1" if nat else "10.234.0.1", "nat": nat}},
            "links": [{"endpoints": [f"{n}:eth0", "lan"], "addresses": ["auto"]} for n in nodes]}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return name, path


@pytest.fixture
def quiet_machine() -> Iterator[set[str]]:
    """The sysctls as no lab has them (the test is skipped while another lab holds them raised);
    yields the set the test's labs' names go into, and takes them down at the end."""
    if kernel_snapshot.sysctl_claimants():
        pytest.skip(f"other labs hold the machine's sysctls raised: {sorted(kernel_snapshot.sysctl_claimants())}")
    before = kernel_snapshot.host_sysctls()
    names: set[str] = set()
    yield names
    for name in names:
        run_cli("down", "-q", name)
    if not kernel_snapshot.sysctl_claimants() - names:
        assert kernel_snapshot.host_sysctls() == before


def _assert_restored(before: set[str], names: set[str]) -> None:
    others = kernel_snapshot.sysctl_claimants() - names
    if others:
        pytest.skip(f"other labs raised the machine's sysctls meanwhile: {sorted(others)}")
    assert kernel_snapshot.host_sysctls() == before


def test_raised_while_running_and_restored_by_the_last_down(tmp_path, quiet_machine):
    before = kernel_snapshot.host_sysctls()
    nat, nat_path = _lab(tmp_path, nat=True)
    plain, plain_path = _lab(tmp_path, nat=False)
    quiet_machine.update({nat, plain})
    for path in (nat_path, plain_path):
        assert run_cli("up", "-q", str(path)).returncode == 0
    assert _sysctl(FORWARDING) == 1 and _sysctl(THRESH3) >= 2 * 2 * (HOSTS + 1) ** 2
    assert run_cli("down", nat).returncode == 0
    # No lab routes through the machine any more: forwarding goes back at once, the
    # neighbour thresholds stay for the lab still running.
    assert f"{FORWARDING}={_old(before, FORWARDING)}" in kernel_snapshot.host_sysctls()
    assert _sysctl(THRESH3) >= 2 * (HOSTS + 1) ** 2
    assert run_cli("down", plain).returncode == 0
    _assert_restored(before, quiet_machine)


def _old(state: set[str], key: str) -> str:
    return next(entry.split("=", 1)[1] for entry in state if entry.startswith(f"{key}="))


def _kill_once_raised(path: Path, name: str) -> None:
    """Start `netemu up` and SIGKILL it as soon as the machine's sysctls are raised for it."""
    proc = subprocess.Popen([*NETEMU, "up", "-q", str(path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a speed requirement
        while time.monotonic() < deadline and proc.poll() is None:
            if name in kernel_snapshot.sysctl_claimants() and _sysctl(FORWARDING) == 1:
                break
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("recovery", ["down", "clean"])
def test_restored_after_a_crash(tmp_path, quiet_machine, recovery):
    if recovery == "clean" and kernel_snapshot.shared_machine():
        pytest.skip("clean removes every dead lab of the machine: not on a machine shared with other labs")
    before = kernel_snapshot.host_sysctls()
    name, path = _lab(tmp_path, nat=True)
    quiet_machine.add(name)
    _kill_once_raised(path, name)
    result = run_cli(*(["down", name] if recovery == "down" else ["clean"]))
    assert result.returncode == 0, result.stderr
    assert name not in kernel_snapshot.sysctl_claimants()
    _assert_restored(before, quiet_machine)
