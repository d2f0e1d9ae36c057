"""A lab written in netemu's own format with what containerlab and Kathara labs bring: anchors
and merge keys, binds and `files:` relative to the file, node names with upper case and dots,
`wait_for`, `entrypoint`, `labels` and `systemctl: true`, checked against the kernel (PID 1
start times, cgroup directories, namespaces) and inside the hosts. A host that turned the
directories netemu copies into with symbolic links to the machine gets nothing written through
them at its restart."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from netemu import Lab
from netemu.errors import InputError
from netemu.linux import cgroups
from tests import kernel_snapshot
from tests.conftest import run_cli

MANY_FILES = 1500  # copied into the waiting node: its start then clearly follows the other's


def _write_lab(make_lab, text: str) -> Path:
    """The file make_lab names (and takes down), with `text` as written: anchors and merge keys
    are what this test is about, and make_lab's own writer emits none."""
    path = make_lab({"nodes": {"x": {}}}, up=False)
    name = path.stem
    path.write_text(f"name: {name}\n" + textwrap.dedent(text))
    return path


def _start_ticks(pid: int) -> int:
    """/proc/PID/stat's starttime (clock ticks since boot), read after the command's ')'."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _out(lab: Lab, node: str, script: str) -> str:
    return lab.exec(node, ["sh", "-c", script], check=True).stdout


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _tree(root: Path) -> Path:
    """The `files:` directories of the lab: a shared one, one for PC1, and many small files."""
    common = root / "common"
    (common / "etc").mkdir(parents=True)
    (common / "etc" / "motd").write_text("from common\n")
    (common / "usr/local/bin").mkdir(parents=True)
    hello = common / "usr/local/bin/hello"
    hello.write_text("#!/bin/sh\necho hello from files\n")
    hello.chmod(0o755)
    suid = common / "usr/local/bin/suid-tool"
    suid.write_text("#!/bin/sh\n")
    suid.chmod(0o4755)
    (common / "opt/app").mkdir(parents=True)
    secret = common / "opt/app/secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    (common / "opt/app/private").mkdir()
    (common / "opt/app/private").chmod(0o700)
    (common / "etc/link-to-hostname").symlink_to("/etc/hostname")
    (common / "etc/relative-link").symlink_to("motd")
    os.mkfifo(common / "opt/app/fifo")
    pc1 = root / "pc1"
    (pc1 / "etc").mkdir(parents=True)
    (pc1 / "etc/motd").write_text("from pc1\n")  # the later directory wins
    many = root / "many" / "srv" / "many"
    many.mkdir(parents=True)
    for i in range(MANY_FILES):
        (many / f"f{i}").write_text(str(i))
    (root / "data").mkdir()
    (root / "data" / "hello.txt").write_text("bound\n")
    return root


LAB = """
x-base: &base
  image: host
  labels: {team: byol}
x-router: &router
  <<: *base
  sysctls: {net.ipv4.ip_forward: 1}
  labels: {team: byol, role: router}
nodes:
  late:                        # listed first, started second
    <<: *base
    wait_for: [PC1]
    files: many
  PC1:
    <<: *router
    files: [common, ./pc1]
    binds: ["data:/data:ro"]
    entrypoint: [/bin/sh, -c, 'echo "$0 $1" > /tmp/entrypoint; exec sleep 100000']
    cmd: [hello, world]
  r1.site:
    <<: *base
    entrypoint: "echo ran > /tmp/entrypoint; exec sleep 100000"
links:
  - endpoints: [PC1:eth0, r1.site:eth0]
    addresses: [10.77.0.1/30, 10.77.0.2/30]
"""


def test_a_lab_in_netemu_format_with_anchors_files_wait_for_entrypoint_and_labels(make_lab, tmp_path: Path) -> None:
    _tree(tmp_path)
    machine_motd = Path("/etc/motd")
    before = _digest(machine_motd) if machine_motd.exists() else None
    path = _write_lab(make_lab, LAB)
    name = path.stem
    with Lab.up(path) as lab:
        record = lab.record
        # wait_for: PC1's PID 1 started first, late's after PC1 reported and late's files were copied
        assert _start_ticks(record.nodes["PC1"].pid) < _start_ticks(record.nodes["late"].pid)
        assert _out(lab, "late", "ls /srv/many | wc -l").strip() == str(MANY_FILES)
        # names: the cgroup of a name outside the lab alphabet starts with '_'; netns as written
        assert record.nodes["PC1"].cgroup == f"netemu/{name}/_PC1"
        assert record.nodes["r1.site"].cgroup == f"netemu/{name}/_r1.site"
        assert record.nodes["late"].cgroup == f"netemu/{name}/late"
        for hierarchy in cgroups.layout().used:
            assert (hierarchy.mountpoint / record.nodes["PC1"].cgroup / "cgroup.procs").is_file()
        assert os.path.exists(f"/run/netns/netemu-{name}.PC1") and os.path.exists(f"/run/netns/netemu-{name}.r1.site")
        assert _out(lab, "PC1", "hostname").strip() == "PC1"
        assert lab.exec("PC1", ["ping", "-c1", "-W2", "10.77.0.2"]).returncode == 0
        # files: contents, the later directory winning, modes without setuid, links as links, no FIFO
        assert _out(lab, "PC1", "cat /etc/motd") == "from pc1\n"
        assert _out(lab, "PC1", "hello") == "hello from files\n"
        modes = _out(lab, "PC1", "stat -c '%a %U' /usr/local/bin/hello /usr/local/bin/suid-tool /opt/app/secret "
                                 "/opt/app/private").split("\n")
        assert modes[:4] == ["755 root", "755 root", "600 root", "700 root"]
        assert _out(lab, "PC1", "readlink /etc/link-to-hostname /etc/relative-link") == "/etc/hostname\nmotd\n"
        assert _out(lab, "PC1", "cat /etc/relative-link") == "from pc1\n"
        assert lab.exec("PC1", ["test", "-e", "/opt/app/fifo"]).returncode == 1
        console = Path(record.nodes["PC1"].console).read_text()
        assert "/opt/app/fifo: not copied: a FIFO" in console
        # a relative bind, from the file's directory
        assert _out(lab, "PC1", "cat /data/hello.txt") == "bound\n"
        # entrypoint: replaces the image's, the node's cmd are its arguments; a string runs through sh
        _wait_for(lambda: lab.exec("PC1", ["test", "-s", "/tmp/entrypoint"]).returncode == 0)
        assert _out(lab, "PC1", "cat /tmp/entrypoint") == "hello world\n"
        _wait_for(lambda: lab.exec("r1.site", ["test", "-s", "/tmp/entrypoint"]).returncode == 0)
        assert _out(lab, "r1.site", "cat /tmp/entrypoint") == "ran\n"
        # labels: in the record, through merge keys, shown by inspect's JSON
        result = run_cli("inspect", name, "--format", "json")
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)["nodes"]
        assert shown["PC1"]["extra"]["labels"] == {"team": "byol", "role": "router"}
        assert shown["late"]["extra"]["labels"] == {"team": "byol"}
    # the machine's own files never changed (image: host reads them as the lower layer)
    assert (_digest(machine_motd) if machine_motd.exists() else None) == before


def test_a_restart_writes_nothing_through_links_the_host_put_in_place_of_copied_paths(make_lab,
                                                                                      tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "opt/app").mkdir(parents=True)
    canary = f"netemu-canary-{uuid.uuid4().hex[:8]}"
    (files / "opt/app" / canary).write_text("copied\n")
    (files / "etc").mkdir()
    (files / "etc/motd").write_text("copied motd\n")
    (files / "var/lib/thing").mkdir(parents=True)
    (files / "var/lib/thing/state").write_text("copied state\n")
    victim = tmp_path / "machine-file"
    victim.write_text("the machine's\n")
    victim_dir = tmp_path / "machine-dir"
    victim_dir.mkdir()
    lab = make_lab({"nodes": {"r1": {"files": str(files)}}})
    try:
        assert _out(lab, "r1", f"cat /opt/app/{canary}") == "copied\n"
        # the host points what netemu copies into at the machine: / itself, a directory, a file
        lab.exec("r1", ["sh", "-c", f"rm -rf /opt/app && ln -s / /opt/app && rm -rf /var/lib/thing && "
                        f"ln -s {victim_dir} /var/lib/thing && ln -sf {victim} /etc/motd"], check=True)
        lab.node("r1", "restart")
        assert not Path("/", canary).exists() and not os.path.lexists(Path("/", canary))
        assert list(victim_dir.iterdir()) == []
        assert victim.read_text() == "the machine's\n"
        # the links stay as the host made them; a link in place of a file is replaced by the copy
        assert _out(lab, "r1", "readlink /opt/app /var/lib/thing") == f"/\n{victim_dir}\n"
        assert _out(lab, "r1", "cat /etc/motd; test -L /etc/motd || echo regular") == "copied motd\nregular\n"
        console = Path(lab.record.nodes["r1"].console).read_text()
        assert "'/opt/app' in the host's root is not a directory" in console
        assert "'/var/lib/thing' in the host's root is not a directory" in console
        # a host that put a file where a copied file's directory was: the file is its own
        lab.exec("r1", ["sh", "-c", "rm /opt/app && mkdir /opt/app && mkdir /opt/app/" + canary], check=True)
        lab.node("r1", "restart")
        assert "not copied: the host has a directory there" in Path(lab.record.nodes["r1"].console).read_text()
    finally:
        lab.down()


def test_a_missing_files_directory_refuses_up_before_anything_is_made(make_lab, tmp_path: Path) -> None:
    path = make_lab({"nodes": {"a": {}, "b": {"files": "nothere"}}}, up=False)
    before = kernel_snapshot.snapshot()
    with pytest.raises(InputError) as info:
        Lab.up(path)
    assert info.value.exit_code == 2
    line = path.read_text().splitlines().index("  b:") + 1
    assert str(info.value) == f"{path}:{line}: nodes.b.files: {tmp_path / 'nothere'} does not exist"
    changes = kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), [path.stem])
    assert changes == {}


def test_wait_for_does_not_tie_stop_and_start(make_lab) -> None:
    """A waited-for node may stop while its dependents run, and a dependent starts alone."""
    lab = make_lab({"nodes": {"b": {"wait_for": ["a"]}, "a": {}}})
    try:
        lab.node("a", "stop")
        lab.node("b", "restart")
        assert lab.inspect().nodes["b"].state == "up" and lab.inspect().nodes["a"].state == "stopped"
        lab.node("a", "start")
    finally:
        lab.down()


FRR = Path("/usr/lib/frr/zebra")


@pytest.mark.skipif(not FRR.exists(), reason="FRRouting is not installed on this machine (apt-get install frr)")
def test_systemctl_starts_and_stops_frr_without_systemd(make_lab) -> None:
    machine_systemctl = shutil.which("systemctl")
    before = _digest(Path(machine_systemctl)) if machine_systemctl else None
    # FRR's daemons want SYS_ADMIN: in a user namespace of the host's own, as the ospf lab does
    lab = make_lab({"nodes": {"r1": {"systemctl": True, "userns": True, "cap_add": ["SYS_ADMIN"],
                                     "sysctls": {"net.ipv4.ip_forward": 1}}}})
    try:
        assert _out(lab, "r1", "command -v systemctl") == "/usr/local/sbin/systemctl\n"
        assert lab.exec("r1", ["systemctl", "is-active", "frr"]).stdout == "inactive\n"
        started = lab.exec("r1", ["systemctl", "start", "frr.service"])
        assert started.returncode == 0, started.stdout + started.stderr
        _wait_for(lambda: lab.exec("r1", ["pgrep", "-x", "zebra"]).returncode == 0, 20)
        status = lab.exec("r1", ["systemctl", "status", "frr"])
        assert status.returncode == 0 and "Active: active" in status.stdout
        assert lab.exec("r1", ["systemctl", "is-active", "frr"]).stdout == "active\n"
        assert lab.exec("r1", ["systemctl", "enable", "frr"]).returncode == 0
        assert lab.exec("r1", ["systemctl", "daemon-reload"]).returncode == 0
        # stopped: no zebra is left in r1
        assert lab.exec("r1", ["systemctl", "stop", "frr"]).returncode == 0
        _wait_for(lambda: lab.exec("r1", ["pgrep", "-x", "zebra"]).returncode == 1, 20)
        inactive = lab.exec("r1", ["systemctl", "is-active", "frr"])
        assert (inactive.returncode, inactive.stdout) == (3, "inactive\n")
        assert lab.exec("r1", ["systemctl", "status", "frr"]).returncode == 3
        missing = lab.exec("r1", ["systemctl", "start", "no-such-unit"])
        assert missing.returncode == 5 and "Unit no-such-unit.service not found" in missing.stderr
        assert lab.exec("r1", ["systemctl", "status", "no-such-unit"]).returncode == 4
        mode = os.stat(Path(lab.record.nodes["r1"].layers) / "upper/usr/local/sbin/systemctl").st_mode
        assert stat.S_IMODE(mode) == 0o755
    finally:
        lab.down()
    assert (_digest(Path(machine_systemctl)) if machine_systemctl else None) == before
