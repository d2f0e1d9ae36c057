"""Atomic up, complete down, crash safety, clean, and bad input that touches nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from netemu.errors import LabError, LabExists
from tests import kernel_snapshot
from tests.conftest import NETEMU, ROOT, run_cli, unique_name

BAD_FILES = sorted((ROOT / "tests/data/bad").glob("*.yaml"))
PAIR = {
    "nodes": {"a": {}, "b": {}},
    "networks": {"lan": {"subnet": "10.60.0.0/24", "gateway": "10.60.0.1"}},
    "links": [
        {"endpoints": ["a:eth0", "lan"], "addresses": ["auto"]},
        {"endpoints": ["b:eth0", "lan"], "addresses": ["auto"]},
        {"endpoints": ["a:eth1", "b:eth1"], "addresses": ["10.61.0.1/30", "10.61.0.2/30"]},
    ],
}


def test_failed_exec_command_undoes_everything(make_lab):
    before = kernel_snapshot.snapshot()
    topo = {**PAIR, "nodes": {"a": {}, "b": {"exec": ["echo about to fail; exit 3"]}}}
    with pytest.raises(LabError, match="about to fail"):
        make_lab(topo)
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


def test_failure_midway_in_node_start_undoes_everything(make_lab, tmp_path):
    before = kernel_snapshot.snapshot()
    topo = {**PAIR, "nodes": {"a": {}, "b": {"binds": [f"{tmp_path}/missing:/mnt"]}}}
    path = make_lab(topo, up=False)
    result = run_cli("up", str(path))
    assert result.returncode == 2, result.stderr
    assert "missing" in result.stderr and "Traceback" not in result.stderr
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


def test_same_name_twice_fails_cleanly_and_keeps_the_first(make_lab):
    from netemu import Lab

    lab = make_lab(PAIR)
    path = Path(f"/run/netemu/{lab.name}/state.json")
    during = kernel_snapshot.snapshot()
    with pytest.raises(LabExists):
        Lab.up(Path(yaml.safe_load(path.read_text())["file"]))
    assert kernel_snapshot.diff(during, kernel_snapshot.snapshot()) == {}
    assert lab.exec("a", ["ping", "-c1", "-W2", "10.61.0.2"]).returncode == 0


def _start_up_and_kill(tmp_path: Path, when: str) -> str:
    """Start `netemu up` in a child process and SIGKILL it at a chosen moment."""
    name = unique_name("k")
    topo = {**PAIR, "name": name, "nodes": {"a": {"exec": ["sleep 60"]}, "b": {}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(topo))
    proc = subprocess.Popen([*NETEMU, "up", str(path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    marker = {"netns": Path(f"/run/netns/netemu-{name}.b"), "state": Path(f"/run/netemu/{name}")}[when]
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    if when == "netns":
        time.sleep(0.2)  # well into link creation and the sleeping exec command
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return name


@pytest.mark.parametrize("when", ["state", "netns"])
def test_killed_up_is_removed_by_down(tmp_path, when):
    before = kernel_snapshot.snapshot()
    name = _start_up_and_kill(tmp_path, when)
    try:
        result = run_cli("down", name)
        assert result.returncode == 0, result.stderr
        assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}
    finally:
        run_cli("down", name)


def test_killed_up_is_removed_by_clean(tmp_path):
    before = kernel_snapshot.snapshot()
    name = _start_up_and_kill(tmp_path, "netns")
    try:
        assert run_cli("ps").returncode == 0
        result = run_cli("clean")
        assert result.returncode == 0, result.stderr
        assert name in result.stdout
        assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}
    finally:
        run_cli("down", name)


def test_down_without_the_state_file(make_lab):
    before = kernel_snapshot.snapshot()
    lab = make_lab(PAIR)
    for entry in Path(f"/run/netemu/{lab.name}").iterdir():
        entry.unlink()
    assert run_cli("down", lab.name).returncode == 0
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


def test_dead_pid1_shows_in_ps_and_down_still_cleans(make_lab):
    before = kernel_snapshot.snapshot()
    lab = make_lab(PAIR)
    os.kill(lab.pid("a"), signal.SIGKILL)
    time.sleep(0.2)
    assert lab.inspect().nodes["a"].state == "dead"
    assert "degraded" in run_cli("ps").stdout
    lab.down()
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


def test_clean_leaves_objects_that_are_not_ours(make_lab):
    user = unique_name("u")
    cgroup = Path("/sys/fs/cgroup/pids") if Path("/sys/fs/cgroup/pids").is_dir() else Path("/sys/fs/cgroup")
    commands = [
        ["ip", "netns", "add", f"{user}-ns"],
        ["ip", "link", "add", f"{user}-br", "type", "bridge"],
        ["ip", "link", "add", f"{user}-v0", "type", "veth", "peer", "name", f"{user}-v1"],
        ["ip", "link", "add", f"ne-{user[:8]}", "type", "bridge"],  # our prefix, but not our tag
    ]
    try:
        for argv in commands:
            subprocess.run(argv, check=True)
        (cgroup / user).mkdir()
        live = make_lab(PAIR)
        before = kernel_snapshot.snapshot()
        assert run_cli("clean").returncode == 0
        assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}
        assert live.exec("a", ["true"]).returncode == 0, "a live lab is not touched by clean"
    finally:
        subprocess.run(["ip", "netns", "del", f"{user}-ns"], check=False)
        for link in (f"{user}-br", f"{user}-v0", f"ne-{user[:8]}"):
            subprocess.run(["ip", "link", "del", link], check=False, stderr=subprocess.DEVNULL)
        if (cgroup / user).exists():
            (cgroup / user).rmdir()


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_file_exits_2_with_location_and_touches_nothing(path):
    before = kernel_snapshot.snapshot()
    result = run_cli("up", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert f"{path}:" in message
    expected = path.read_bytes().decode(errors="replace").splitlines()[0].removeprefix("# expect:").strip()
    line = expected.split(":", 1)[0].removeprefix("line ").strip()
    assert f"{path}:{line}:" in message, message
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


def test_not_root_exits_3_and_names_it(tmp_path):
    if not Path("/usr/sbin/setpriv").exists() and not Path("/usr/bin/setpriv").exists():
        pytest.skip("setpriv (util-linux) is needed to drop root")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-m", "netemu.cli", "up", str(ROOT / "topologies/seed.yaml")],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "root" in result.stderr
