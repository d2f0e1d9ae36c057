"""The seed lab (r1 10.1.0.1/24 <-> r2 10.1.0.2/24): hosts are real, isolated containers."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import kernel_snapshot
from tests.conftest import ROOT, run_cli, unique_name

SEED = {
    "nodes": {"r1": {}, "r2": {}},
    "links": [{"endpoints": ["r1:eth0", "r2:eth0"], "addresses": ["10.1.0.1/24", "10.1.0.2/24"]}],
}


@pytest.fixture
def seed(make_lab):
    return make_lab(SEED)


def test_ping_between_hosts(seed):
    result = seed.exec("r1", ["ping", "-c", "1", "-W", "2", "10.1.0.2"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 received" in result.stdout


def test_hostname_is_the_node_and_machine_unchanged(seed):
    assert seed.exec("r1", ["hostname"]).stdout.strip() == "r1"
    assert seed.exec("r2", ["cat", "/etc/hostname"]).stdout.strip() == "r2"
    assert socket.gethostname() not in ("r1", "r2")


def test_pid1_is_init_and_exec_is_not(seed):
    out = seed.exec("r1", ["sh", "-c", "echo $$; tr '\\0' ' ' < /proc/1/cmdline"]).stdout.split("\n")
    assert out[0].strip() != "1"
    assert "netemu-init" in out[1] and " run " in out[1]


def test_proc_lists_only_the_hosts_processes(seed):
    script = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done"
    lines = [ln for ln in seed.exec("r1", ["sh", "-c", script]).stdout.splitlines() if ln.strip()]
    # PID 1 and the shell running the loop (and its own children): nothing of the machine.
    assert all("netemu-init" in ln or ln.startswith(("sh ", "tr ")) for ln in lines), lines
    assert len(lines) <= 4


def test_sys_shows_only_own_interfaces(seed):
    names = seed.exec("r1", ["ls", "/sys/class/net"]).stdout.split()
    assert sorted(names) == ["eth0", "lo"]


def test_writes_stay_private(seed):
    marker = f"/etc/netemu-private-{unique_name()}"
    assert seed.exec("r1", ["sh", "-c", f"echo secret > {marker}"]).returncode == 0
    assert seed.exec("r1", ["cat", marker]).stdout.strip() == "secret"
    assert not Path(marker).exists()
    assert seed.exec("r2", ["test", "-e", marker]).returncode != 0


def test_etc_hosts_lists_every_node(seed):
    hosts = seed.exec("r1", ["cat", "/etc/hosts"]).stdout
    assert "10.1.0.1\tr1" in hosts and "10.1.0.2\tr2" in hosts


def test_minimal_dev(seed):
    names = set(seed.exec("r1", ["ls", "/dev"]).stdout.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx"} <= names
    assert len(names - {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx",
                        "fd", "stdin", "stdout", "stderr"}) == 0


def test_only_the_labs_layer_tmpfs_is_mounted_on_the_machine(seed):
    mounts = Path("/proc/mounts").read_text().splitlines()
    ours = [line.split() for line in mounts if seed.name in line]
    assert [(m[1], m[2]) for m in ours] == [(f"/var/lib/netemu/labs/{seed.name}", "tmpfs")]
    assert not any(line.startswith("overlay ") for line in mounts)
    # the hosts' writable layers are in it
    assert Path(f"/var/lib/netemu/labs/{seed.name}/r1/upper/etc/hostname").read_text() == "r1\n"


# The hierarchies a host's group lives in: the v2 tree and the v1 controllers netemu uses.
USED_V1 = {"cpu", "cpuacct", "memory", "pids"}


def _used_hierarchies() -> list[Path]:
    if Path("/sys/fs/cgroup/cgroup.procs").exists():  # pure v2
        return [Path("/sys/fs/cgroup")]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ")[1].split()
        mountpoint = Path(line.split()[4])
        if fields[0] == "cgroup2" or (fields[0] == "cgroup" and USED_V1 & set(fields[2].split(","))):
            found.append(mountpoint)
    return found


def test_exec_process_is_in_the_hosts_cgroup_on_every_controller(seed):
    seed.exec("r1", ["sh", "-c", "sleep 1000 >/dev/null 2>&1 &"])
    record = json.loads(Path(f"/run/netemu/{seed.name}/state.json").read_text())
    group = record["nodes"]["r1"]["cgroup"]
    hierarchies = _used_hierarchies()
    assert hierarchies
    for hierarchy in hierarchies:
        pids = (hierarchy / group / "cgroup.procs").read_text().split()
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids]
        assert b"sleep\x001000\x00" in cmdlines, f"no exec'd sleep in {hierarchy / group}"


def test_netns_is_reachable_with_ip_netns(seed):
    out = subprocess.run(["ip", "netns", "exec", f"netemu-{seed.name}.r1", "ip", "-br", "addr"],
                         capture_output=True, text=True, check=True).stdout
    assert "10.1.0.1/24" in out


def test_down_removes_everything(make_lab):
    before = kernel_snapshot.snapshot()
    lab = make_lab(SEED)
    during = kernel_snapshot.snapshot()
    assert any(n.startswith(f"netemu-{lab.name}.") for n in during["netns"])
    lab.down()
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


def test_cli_up_exec_ps_inspect_down(tmp_path):
    name = unique_name()
    path = tmp_path / "seed.yaml"
    path.write_text((ROOT / "topologies/seed.yaml").read_text().replace("name: seed", f"name: {name}"))
    try:
        assert run_cli("up", str(path)).returncode == 0
        ping = run_cli("exec", name, "r1", "--", "ping", "-c1", "-W2", "10.1.0.2")
        assert ping.returncode == 0, ping.stderr
        assert run_cli("exec", name, "r1", "--", "sh", "-c", "exit 7").returncode == 7
        echoed = run_cli("exec", name, "r2", "--", "cat", input="through stdin\n")
        assert echoed.stdout == "through stdin\n"
        assert name in run_cli("ps").stdout
        data = json.loads(run_cli("inspect", name, "--format", "json").stdout)
        r1 = data["nodes"]["r1"]
        assert r1["alive"] and r1["pid"] > 1
        eth0 = next(i for i in r1["interfaces"] if i["name"] == "eth0")
        assert "10.1.0.1/24" in eth0["addresses"]
    finally:
        down = run_cli("down", name)
    assert down.returncode == 0, down.stderr
    again = run_cli("down", name)
    assert again.returncode == 0, "down is idempotent"
    assert name not in run_cli("ps").stdout


def test_exec_it_gives_a_terminal(seed):
    script = shutil.which("script")
    if script is None:
        pytest.skip("script (bsdutils) is needed to play a terminal")
    command = f"{sys.executable} -m netemu.cli exec -it {seed.name} r1"
    result = subprocess.run([script, "-qec", command, "/dev/null"], input="hostname; test -t 0 && echo TTY\nexit 5\n",
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 5
    assert "r1" in result.stdout and "TTY" in result.stdout
