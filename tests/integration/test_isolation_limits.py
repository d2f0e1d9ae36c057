"""cgroup limits, PID 1 duties (reaping, signals) and the programs a host runs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from netemu.linux import cgroups

ONE = {"nodes": {"h1": {}}}


def _hierarchy_file(lab, node: str, controller: str, v1_name: str, v2_name: str) -> Path:
    record = json.loads(Path(f"/run/netemu/{lab.name}/state.json").read_text())
    group = record["nodes"][node]["cgroup"]
    hierarchy = cgroups.layout().for_controller(controller)
    assert hierarchy is not None, f"no {controller} controller"
    return hierarchy.mountpoint / group / (v1_name if hierarchy.version == 1 else v2_name)


def _counter(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    raise AssertionError(f"{key} not in {path}")


def test_memory_limit_kills_a_process_allocating_beyond_it(make_lab):
    lab = make_lab({"nodes": {"h1": {"limits": {"memory": "64M"}}}})
    limit = _hierarchy_file(lab, "h1", "memory", "memory.limit_in_bytes", "memory.max")
    assert int(limit.read_text()) == 64 * 1024 * 1024
    # tail -n 1 keeps a whole newline-free "line" in memory: 200M of it.
    result = lab.exec("h1", ["sh", "-c", "head -c 200M /dev/zero | tail -n 1 >/dev/null; echo status=$?"])
    assert "status=137" in result.stdout, result.stdout + result.stderr
    events = _hierarchy_file(lab, "h1", "memory", "memory.oom_control", "memory.events")
    assert _counter(events, "oom_kill") >= 1


def test_pids_limit_stops_a_fork_loop(make_lab):
    lab = make_lab({"nodes": {"h1": {"limits": {"pids": 20}}}})
    assert _hierarchy_file(lab, "h1", "pids", "pids.max", "pids.max").read_text().strip() == "20"
    script = "n=0; for i in $(seq 60); do sleep 5 & n=$((n+1)); done 2>/dev/null; echo started"
    lab.exec("h1", ["sh", "-c", script])  # the shell's complaint varies: the kernel's counters decide
    current = int(_hierarchy_file(lab, "h1", "pids", "pids.current", "pids.current").read_text())
    assert current <= 20
    assert _counter(_hierarchy_file(lab, "h1", "pids", "pids.events", "pids.events"), "max") >= 1


def test_cpu_limit_throttles(make_lab):
    lab = make_lab({"nodes": {"h1": {"limits": {"cpus": 0.2}}}})
    hierarchy = cgroups.layout().for_controller("cpu")
    if hierarchy.version == 1:
        quota = _hierarchy_file(lab, "h1", "cpu", "cpu.cfs_quota_us", "cpu.max").read_text().split()[0]
        assert quota == "20000"
    else:
        assert _hierarchy_file(lab, "h1", "cpu", "", "cpu.max").read_text().split()[0] == "20000"
    lab.exec("h1", ["timeout", "1", "sh", "-c", "while :; do :; done"])
    stat = _hierarchy_file(lab, "h1", "cpu", "cpu.stat", "cpu.stat")
    assert _counter(stat, "nr_throttled") >= 1


def test_orphans_leave_no_zombies(make_lab):
    lab = make_lab(ONE)
    lab.exec("h1", ["sh", "-c", "for i in 1 2 3 4 5; do (sleep 0.2 &) ; done"])
    time.sleep(1.0)
    record = json.loads(Path(f"/run/netemu/{lab.name}/state.json").read_text())
    pids = _hierarchy_file(lab, "h1", "pids", "cgroup.procs", "cgroup.procs").read_text().split()
    states = [Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] for p in pids
              if Path(f"/proc/{p}").exists()]
    assert "Z" not in states
    assert int(pids[0]) == record["nodes"]["h1"]["pid"] and len(pids) == 1


def test_pid1_forwards_sigterm_to_the_command(make_lab):
    script = "trap 'echo got-term > /tmp/term; exit 0' TERM; echo started > /tmp/started; " \
             "while :; do sleep 0.05; done"
    lab = make_lab({"nodes": {"h1": {"cmd": script}}})
    for _ in range(100):
        if lab.exec("h1", ["cat", "/tmp/started"]).returncode == 0:
            break
        time.sleep(0.05)
    os.kill(lab.pid("h1"), signal.SIGTERM)
    for _ in range(100):
        if lab.exec("h1", ["cat", "/tmp/term"]).stdout.strip() == "got-term":
            break
        time.sleep(0.05)
    assert lab.exec("h1", ["cat", "/tmp/term"]).stdout.strip() == "got-term"
    # The host itself survives its command: PID 1 is still there.
    assert lab.exec("h1", ["true"]).returncode == 0


def test_cmd_env_and_exec_commands_run_after_links(make_lab):
    lab = make_lab({
        "nodes": {
            "a": {"env": {"GREETING": "hello"},
                  "exec": ["ip -br addr show eth0 > /tmp/at-exec", "echo $GREETING > /tmp/env"]},
            "b": {},
        },
        "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.2.0.1/30", "10.2.0.2/30"]}],
    })
    assert "10.2.0.1/30" in lab.exec("a", ["cat", "/tmp/at-exec"]).stdout
    assert lab.exec("a", ["cat", "/tmp/env"]).stdout.strip() == "hello"


def test_sysctls_are_set_inside_the_host_only(make_lab):
    lab = make_lab({"nodes": {"r": {"sysctls": {"net.ipv4.ip_forward": 1}}}})
    assert lab.exec("r", ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() in ("0", "1")
