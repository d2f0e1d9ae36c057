"""`userns: true`: root inside the host is an unprivileged id range outside, its overlay root
still works (idmapped lower layers), it configures its own network, `netemu exec` runs as its
root, and the hosts without it are exactly as before."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from netemu import images
from netemu.linux import capabilities
from netemu.runtime import userns
from tests.conftest import NETEMU, ROOT, run_cli, unique_name
from tests.integration.test_images import base_layer, top_layer, write_archive

PAIR = {
    "nodes": {"u": {"userns": True}, "n": {}},
    "links": [{"endpoints": ["u:eth0", "n:eth0"], "addresses": ["10.73.0.1/30", "10.73.0.2/30"]}],
}


def _record(lab) -> dict:
    return json.loads(Path(f"/run/netemu/{lab.name}/state.json").read_text())


def _base(lab, node: str) -> int:
    base, count = _record(lab)["nodes"][node]["extra"]["userns"].split(":")
    assert int(count) == 65536
    return int(base)


def _ids(pid: int | str) -> tuple[list[int], list[int]]:
    """Real, effective, saved and filesystem uids and gids of a process, as the machine sees them."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return [int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()]


def _host_pids(pid1: int) -> list[str]:
    """Every process on the machine in the PID namespace of host `pid1`."""
    ns = os.stat(f"/proc/{pid1}/ns/pid").st_ino
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.stat(entry / "ns/pid").st_ino == ns:
                found.append(entry.name)
        except OSError:
            continue
    return found


def test_root_inside_is_an_unprivileged_range_outside(make_lab):
    lab = make_lab(PAIR)
    base = _base(lab, "u")
    assert base >= userns.FIRST_ID and (base - userns.FIRST_ID) % 65536 == 0
    assert lab.exec("u", ["cat", "/proc/self/uid_map"]).stdout.split() == ["0", str(base), "65536"]
    assert lab.exec("u", ["cat", "/proc/self/gid_map"]).stdout.split() == ["0", str(base), "65536"]
    assert lab.exec("u", ["id", "-u"]).stdout.strip() == "0"
    assert lab.exec("u", ["id", "-g"]).stdout.strip() == "0"
    # From the machine: PID 1 and every process `netemu exec` starts belong to the range's root.
    lab.exec("u", ["sh", "-c", "sleep 60 >/dev/null 2>&1 &"])
    pids = _host_pids(lab.pid("u"))
    assert len(pids) >= 2
    for pid in pids:
        assert _ids(pid) == ([base] * 4, [base] * 4), pid
    ps = subprocess.run(["ps", "-o", "uid=", "-p", str(lab.pid("u"))], capture_output=True, text=True, check=True)
    assert ps.stdout.strip() == str(base)
    # Root inside holds a default host's capabilities (Docker's set plus NET_ADMIN), over its
    # own namespaces only.
    default = capabilities.host_set(False, [], [])
    assert f"CapEff:\t{default:016x}" in lab.exec("u", ["cat", "/proc/self/status"]).stdout


def test_the_overlay_root_works_for_root_inside(make_lab):
    lab = make_lab(PAIR)
    base = _base(lab, "u")
    layer = Path(_record(lab)["nodes"]["u"]["layers"]) / "upper"
    # The machine's root-owned files (the lower layer, idmapped) are root's inside.
    assert lab.exec("u", ["stat", "-c", "%u:%g", "/etc/passwd", "/"]).stdout.split() == ["0:0", "0:0"]
    # The injected files too (netemu hands the writable layer to the range).
    assert lab.exec("u", ["cat", "/etc/hostname"]).stdout == "u\n"
    assert "10.73.0.2\tn" in lab.exec("u", ["cat", "/etc/hosts"]).stdout
    assert lab.exec("u", ["stat", "-c", "%u:%g", "/etc/hostname", "/etc/hosts"]).stdout.split() == ["0:0", "0:0"]
    assert lab.exec("u", ["sh", "-c", "echo again > /etc/hostname"]).returncode == 0
    # New files, copied-up files, other owners, deletions (whiteouts), renames: all in the
    # host's own layer.
    script = ("set -e; touch /etc/x; echo 'zz:x:5000:5000::/:/bin/sh' >> /etc/passwd; "
              "touch /tmp/u1000; chown 1000:1000 /tmp/u1000; "
              "cp /etc/group /tmp/g; rm /etc/group; test ! -e /etc/group; mv /tmp/g /etc/group; id -u zz")
    result = lab.exec("u", ["sh", "-c", script])
    assert result.stdout.strip() == "5000", result.stdout + result.stderr
    assert lab.exec("u", ["stat", "-c", "%u:%g", "/etc/x", "/tmp/u1000"]).stdout.split() == ["0:0", "1000:1000"]
    assert (layer / "etc/x").stat().st_uid == base
    assert ((layer / "tmp/u1000").stat().st_uid, (layer / "tmp/u1000").stat().st_gid) == (base + 1000, base + 1000)
    assert "zz:" not in Path("/etc/passwd").read_text() and not Path("/etc/x").exists()
    assert Path("/etc/group").exists()
    # What the machine's root alone may change stays out of reach.
    assert lab.exec("u", ["sh", "-c", "echo 1 > /proc/sys/kernel/panic"]).returncode != 0
    assert lab.exec("u", ["touch", "/sys/x"]).returncode != 0


def test_networking_and_exec_into_the_userns_host(make_lab):
    lab = make_lab(PAIR)
    assert lab.exec("u", ["ping", "-c1", "-W2", "10.73.0.2"]).returncode == 0
    assert lab.exec("n", ["ping", "-c1", "-W2", "10.73.0.1"]).returncode == 0
    # Its network namespace belongs to its user namespace: root inside configures it.
    assert lab.exec("u", ["ip", "addr", "add", "10.73.9.1/32", "dev", "lo"]).returncode == 0
    assert lab.exec("u", ["sysctl", "-w", "net.ipv4.ip_forward=1"]).returncode == 0
    assert lab.exec("u", ["ls", "/sys/class/net"]).stdout.split() == ["eth0", "lo"]
    result = run_cli("exec", lab.name, "u", "--", "sh", "-c", "id -u; cat /proc/self/uid_map; hostname")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0" and lines[1].split() == ["0", str(_base(lab, "u")), "65536"] and lines[2] == "u"
    assert run_cli("exec", lab.name, "u", "--", "sh", "-c", "exit 7").returncode == 7


def test_hosts_without_userns_are_unchanged(make_lab):
    lab = make_lab(PAIR)
    pid = lab.pid("n")
    assert "userns" not in _record(lab)["nodes"]["n"]["extra"]
    assert os.stat(f"/proc/{pid}/ns/user").st_ino == os.stat("/proc/self/ns/user").st_ino
    assert lab.exec("n", ["cat", "/proc/self/uid_map"]).stdout.split() == ["0", "0", "4294967295"]
    assert _ids(pid) == ([0] * 4, [0] * 4)
    assert lab.exec("n", ["sh", "-c", "touch /etc/y && stat -c %u /etc/y"]).stdout.strip() == "0"
    assert os.stat(f"/proc/{lab.pid('u')}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino


def test_each_userns_host_has_its_own_range_kept_across_restarts(make_lab):
    lab = make_lab({"nodes": {"a": {"userns": True}, "b": {"userns": True}},
                    "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.74.0.1/30", "10.74.0.2/30"]}]})
    a, b = _base(lab, "a"), _base(lab, "b")
    assert abs(a - b) >= 65536
    assert lab.exec("a", ["sh", "-c", "echo kept > /root/note"]).returncode == 0
    result = run_cli("node", lab.name, "a", "restart")
    assert result.returncode == 0, result.stderr
    assert _base(lab, "a") == a and _ids(lab.pid("a"))[0] == [a] * 4
    assert lab.exec("a", ["sh", "-c", "cat /root/note; stat -c %u /root/note"]).stdout.split() == ["kept", "0"]
    assert lab.exec("a", ["ping", "-c1", "-W2", "10.74.0.2"]).returncode == 0
    name = lab.name
    lab.down()
    assert not Path(f"/run/netemu/{name}").exists()  # its ranges are free again


def test_a_userns_host_on_the_machines_network_cannot_change_it(make_lab):
    lab = make_lab({"nodes": {"h": {"userns": True, "network": "host"}}})
    assert lab.exec("h", ["id", "-u"]).stdout.strip() == "0"
    assert "lo" in lab.exec("h", ["ls", "/sys/class/net"]).stdout.split()
    assert lab.exec("h", ["ip", "link", "set", "lo", "mtu", "1280"]).returncode != 0


@pytest.fixture
def two_layer_image(tmp_path: Path) -> Iterator[str]:
    """test_images' busybox image: a whiteout and an opaque directory in its top layer."""
    if not Path("/bin/busybox").exists():
        pytest.skip("needs busybox-static (apt-get install busybox-static)")
    name = unique_name("img")
    layers = [base_layer(Path("/bin/busybox").read_bytes()), top_layer()]
    images.import_image(write_archive("oci-tar", tmp_path, layers, f"{name}:latest"), name)
    yield name
    if images.find_image(name):
        images.remove_image(name, in_use=lambda _name: [])


def test_an_image_s_layers_are_idmapped_too(make_lab, two_layer_image):
    lab = make_lab({"nodes": {"h": {"image": two_layer_image, "userns": True}}})
    info = images.get_image(two_layer_image)
    top, base = images.layer_dirs(info)
    assert lab.exec("h", ["busybox", "id", "-u"]).stdout.strip() == "0"
    assert lab.exec("h", ["test", "-e", "/etc/removeme"]).returncode == 1  # the top layer's whiteout
    assert lab.exec("h", ["ls", "/data"]).stdout.split() == ["new.txt"]  # its opaque directory
    # /root is the image's, 0700 and root's: root inside enters it only because it is root's there.
    assert lab.exec("h", ["busybox", "stat", "-c", "%a %u:%g", "/root", "/bin/busybox"]).stdout.splitlines() == [
        "700 0:0", "755 0:0"]
    assert lab.exec("h", ["sh", "-c", "echo hi > /root/x; echo changed > /data/new.txt; rm /bin/busybox-hard"]
                    ).returncode == 0
    assert lab.exec("h", ["cat", "/root/x", "/data/new.txt"]).stdout == "hi\nchanged\n"
    assert (top / "data/new.txt").read_text() == "new\n" and (base / "bin/busybox-hard").exists()
    assert base.stat().st_uid == 0  # the store is untouched: an idmapped mount only translates


def test_binds_keep_the_machine_s_ids(make_lab, tmp_path):
    shared, given = tmp_path / "shared", tmp_path / "given"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # writable by everyone: root inside is nobody special here
    given.mkdir()
    (given / "file.txt").write_text("from the machine\n")
    lab = make_lab({"nodes": {"u": {"userns": True, "binds": [f"{shared}:/mnt/rw", f"{given}:/mnt/ro:ro"]}}})
    base = _base(lab, "u")
    assert lab.exec("u", ["cat", "/mnt/ro/file.txt"]).stdout == "from the machine\n"
    assert lab.exec("u", ["stat", "-c", "%u", "/mnt/ro/file.txt"]).stdout.strip() == "65534"  # the machine's root
    assert lab.exec("u", ["sh", "-c", "echo x > /mnt/ro/new"]).returncode != 0
    assert "ro" in lab.exec("u", ["sh", "-c", "grep ' /mnt/ro ' /proc/self/mounts"]).stdout.split()[3].split(",")
    assert lab.exec("u", ["sh", "-c", "echo written > /mnt/rw/out.txt"]).returncode == 0
    assert (shared / "out.txt").read_text() == "written\n" and (shared / "out.txt").stat().st_uid == base


def test_binds_of_a_shared_mount_propagate_nothing_either_way(make_lab, tmp_path):
    """Bind sources are cloned before the host's mount namespace exists: the clones must be made
    private, or the host's mounts would show on the machine (and the machine's in the host)."""
    shared = tmp_path / "shared"
    for sub in ("from-host-n", "from-host-u", "from-machine"):
        (shared / sub).mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(shared), str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        # SYS_ADMIN: mounting inside is what this test needs a host to do.
        lab = make_lab({"nodes": {"n": {"binds": [f"{shared}:/mnt/s"], "cap_add": ["SYS_ADMIN"]},
                                  "u": {"userns": True, "binds": [f"{shared}:/mnt/s"], "cap_add": ["SYS_ADMIN"]}}})
        for node in ("n", "u"):
            assert lab.exec(node, ["mount", "-t", "tmpfs", "x", f"/mnt/s/from-host-{node}"]).returncode == 0
        subprocess.run(["mount", "-t", "tmpfs", "x", str(shared / "from-machine")], check=True)
        assert "from-host" not in Path("/proc/self/mountinfo").read_text()
        for node in ("n", "u"):
            assert "from-machine" not in lab.exec(node, ["cat", "/proc/self/mountinfo"]).stdout
    finally:
        subprocess.run(["umount", "-R", str(shared)], check=False)


def test_labs_coming_up_together_never_share_a_range(make_lab):
    paths = [make_lab({"nodes": {"a": {"userns": True}, "b": {"userns": True}}}, up=False) for _ in range(3)]
    ups = [subprocess.Popen([*NETEMU, "up", str(path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True) for path in paths]
    for up in ups:
        assert up.wait(timeout=120) == 0, up.stderr.read() if up.stderr else ""
    bases = []
    for path in paths:
        record = json.loads(Path(f"/run/netemu/{path.stem}/state.json").read_text())
        bases += [int(info["extra"]["userns"].split(":")[0]) for info in record["nodes"].values()]
    assert len(set(bases)) == 6


def test_exec_into_a_userns_host_sharing_another_hosts_network(make_lab):
    # Its network namespace belongs to the machine's user namespace, not to its own: exec must
    # join it while still the machine's root, and only then become the host's root.
    lab = make_lab({
        "nodes": {"a": {}, "b": {"userns": True, "network": "container:a"}, "c": {}},
        "links": [{"endpoints": ["a:eth0", "c:eth0"], "addresses": ["10.74.0.1/30", "10.74.0.2/30"]}],
    })
    result = lab.exec("b", ["sh", "-c", "id -u; cat /proc/self/uid_map; ip -o -4 addr show eth0"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(_base(lab, "b")), "65536"]
    assert "10.74.0.1/30" in lines[2]
