"""Confinement: what root inside a host may do to the machine. Every attack below runs from inside
a host (`lab.exec`), must fail, and the machine is looked at afterwards (the kernel's own files,
not netemu's word). A default host (`image: host`, no `userns`) and a `userns: true` host get the
same attacks; the node keys that loosen or tighten a host (`privileged`, `cap_add`, `cap_drop`,
`devices`, `read_only`) have their own lab.

The confined set is Docker's default: its capabilities plus NET_ADMIN, a seccomp filter, a /dev
of its own, /proc/sys and /sys read-only (but a host's own /proc/sys/net), the kernel's
sensitive /proc files masked.

The probes are harmless on a machine that lets them through: every syscall gets arguments that
make it fail after its permission check (a bad magic, a missing file, an unknown key type), the
clock is "set" to the time it already shows, core_pattern is put back, the machine's disk is only
ever opened for reading and mounted read-only, files under /proc and /sys are opened for writing
but never written."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from netemu import Lab
from netemu.runtime import cleanup
from tests.conftest import NETEMU, ROOT, run_cli, unique_name
from tests.integration.test_isolation_limits import _hierarchy_file

MODES = ["default", "userns"]
SECRET = "NETEMU_SECRET_TEST"

# Docker's default capabilities, plus NET_ADMIN (a network emulator's hosts configure their network).
CAPS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10, "NET_BROADCAST": 11,
    "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15, "SYS_MODULE": 16, "SYS_RAWIO": 17,
    "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20, "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23,
    "SYS_RESOURCE": 24, "SYS_TIME": 25, "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29,
    "AUDIT_CONTROL": 30, "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}  # fmt: skip
DEFAULT_CAP_NAMES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
                     "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP", "NET_ADMIN")


def _mask(*names: str) -> int:
    return sum(1 << CAPS[name] for name in set(names))


DEFAULT_CAPS = _mask(*DEFAULT_CAP_NAMES)
assert DEFAULT_CAPS == 0xA80435FB  # Docker's 0xa80425fb, plus NET_ADMIN (bit 12)

# The /dev of a host, nothing more (plus its `devices:`).
DEV_ENTRIES = {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd", "stdin", "stdout",
               "stderr"}
DEV_NUMBERS = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}

# Syscall numbers of the probes, per architecture (<asm/unistd_64.h>, <asm-generic/unistd.h>).
SYSCALLS = {
    "x86_64": {
        "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246, "swapon": 167,
        "swapoff": 168, "unshare": 272, "mount": 165, "umount2": 166, "acct": 163, "reboot": 169,
        "settimeofday": 164, "clock_settime": 227, "name_to_handle_at": 303, "open_by_handle_at": 304,
    },
    "aarch64": {
        "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280, "perf_event_open": 241,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104, "swapon": 224,
        "swapoff": 225, "unshare": 97, "mount": 40, "umount2": 39, "acct": 89, "reboot": 142,
        "settimeofday": 170, "clock_settime": 112, "name_to_handle_at": 264, "open_by_handle_at": 265,
    },
}  # fmt: skip

# Run by the host's own python3 (its image is the machine's /): raw syscalls through libc, each in
# a forked child, so that what one changes (a mount, a user namespace) stays out of the next.
PRELUDE = r"""
import ctypes, errno, json, os, platform, stat, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = @SYSCALLS@[platform.machine()]

def err(number):
    return errno.errorcode.get(number, str(number))

def arg(value):
    if value is None:
        return ctypes.c_void_p(None)
    if isinstance(value, bytes):
        return ctypes.c_char_p(value)
    if isinstance(value, int):
        return ctypes.c_long(value)
    return value

def raw(name, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(NR[name]), *[arg(a) for a in args])
    return ret, (ctypes.get_errno() if ret == -1 else 0)

def in_child(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, str(fn()).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 200).decode() or "no answer"
    os.close(r)
    os.waitpid(pid, 0)
    return out

def forked(name, *args):
    def call():
        ret, number = raw(name, *args)
        return "ok" if ret != -1 else err(number)
    return in_child(call)

def try_os(fn, *args):
    try:
        fn(*args)
        return "ok"
    except OSError as e:
        return err(e.errno)

def emit(obj):
    print(json.dumps(obj))
""".replace("@SYSCALLS@", json.dumps(SYSCALLS))


def _host_python() -> str:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("the machine (the hosts' image) has no /usr/bin/python3")


def _py(lab: Lab, node: str, code: str, *args: str) -> Any:
    """Run `code` (after PRELUDE) with the host's python3; its last line of output, as JSON."""
    result = lab.exec(node, [_host_python(), "-c", PRELUDE + code, *args], timeout=60)
    assert result.returncode == 0 and result.stdout.strip(), f"probe failed in {node}: {result.stdout}{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _sh(lab: Lab, node: str, script: str) -> Any:
    return lab.exec(node, ["/bin/sh", "-c", script], timeout=60)


def _record(lab: Lab) -> dict:
    return json.loads(Path(f"/run/netemu/{lab.name}/state.json").read_text())


def _status(text: str) -> dict[str, int]:
    """The capability sets (hex) and the seccomp and no_new_privs fields of a /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    found = {key: int(fields[key].strip(), 16) for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    found.update({key: int(fields[key].strip()) for key in ("Seccomp", "NoNewPrivs") if key in fields})
    return found


def _names(mask: int) -> list[str]:
    by_bit = {bit: name for name, bit in CAPS.items()}
    return [by_bit.get(bit, str(bit)) for bit in range(64) if mask >> bit & 1]


def _cap_diff(found: int, expected: int) -> str:
    return f"{found:016x}: extra {_names(found & ~expected)}, missing {_names(expected & ~found)}"


def _children(pid: int, comm: str, wait: float = 10.0) -> int:
    """The child of `pid` (on the machine) running `comm`: a host's cmd, started once links are up."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = dict(line.split(":\t", 1) for line in (entry / "status").read_text().splitlines())
            except (OSError, ValueError):
                continue
            if fields.get("PPid", "").strip() == str(pid) and fields.get("Name", "").strip() == comm:
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"no child {comm} of {pid}")


def _environ(pid: int) -> dict[str, str]:
    items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in items if b"=" in item)


def _root_disk() -> tuple[int, int, str]:
    """(major, minor, name) of the block device holding the machine's /, or of some disk."""
    candidates = []
    dev = os.stat("/").st_dev
    candidates.append((os.major(dev), os.minor(dev)))
    for line in Path("/proc/self/mountinfo").read_text().splitlines():  # btrfs, overlay: the source
        fields = line.split()
        if fields[4] == "/" and "-" in fields:
            source = fields[fields.index("-") + 2]
            try:
                st = os.stat(source)
            except OSError:
                continue
            if stat.S_ISBLK(st.st_mode):
                candidates.insert(0, (os.major(st.st_rdev), os.minor(st.st_rdev)))
    blocks = sorted(Path("/sys/dev/block").iterdir()) if Path("/sys/dev/block").is_dir() else []
    candidates += [tuple(int(x) for x in p.name.split(":")) for p in blocks
                   if not (p / "loop").exists() and "zram" not in p.resolve().name]
    for major, minor in candidates:
        uevent = Path(f"/sys/dev/block/{major}:{minor}/uevent")
        if major and uevent.exists():
            names = [ln.split("=", 1)[1] for ln in uevent.read_text().splitlines() if ln.startswith("DEVNAME=")]
            return major, minor, names[0] if names else ""
    pytest.skip("no block device found on the machine")


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[int, int, str]]]:
    """The machine's root disk, and a read-only loop device over a file of the test's own: a block
    device the machine's root can read for sure (a sandbox may refuse it even its own disk)."""
    found = [_root_disk()]
    backing = tmp_path_factory.mktemp("loop") / "disk.img"
    backing.write_bytes(b"NETEMU-LOOP-MARKER" * 1024)
    made = subprocess.run(["losetup", "--find", "--show", "--read-only", str(backing)], capture_output=True,
                          text=True, check=False)
    loop = made.stdout.strip()
    try:
        if made.returncode == 0 and loop:
            with open(loop, "rb") as f:
                assert f.read(18) == b"NETEMU-LOOP-MARKER"
            rdev = os.stat(loop).st_rdev
            found.append((os.major(rdev), os.minor(rdev), loop))
        yield found
    finally:
        if made.returncode == 0 and loop:
            subprocess.run(["losetup", "-d", loop], check=False)


# ---- labs: one per mode (and one for the bind through a symlink), one for the node keys --------

@contextmanager
def _running(topology: dict, directory: Path, env: dict[str, str] | None = None) -> Iterator[Lab]:
    """A lab up for as long as the block runs, taken down whatever happens; `env` is set in the
    environment of `up` only (what a host must not inherit)."""
    name = unique_name()
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(topology, name=name), sort_keys=False))
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            lab = Lab.up(path)
        yield lab
    finally:
        cleanup.remove_lab(name)


def _mode_keys(mode: str) -> dict[str, Any]:
    return {"userns": True} if mode == "userns" else {}


@pytest.fixture(scope="module", params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def lab(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """h1: limits, env and a cmd, a bind of a directory of the machine's disk; evil-a and evil-b
    are for the /etc symlink attack (each restarted once); nethost is on the machine's network."""
    directory = tmp_path_factory.mktemp(f"confinement-{mode}")
    shock = directory / "shock"
    shock.mkdir()
    shock.chmod(0o755)  # root inside a userns host is nobody here: it opens it by its mode bits
    (shock / "file.txt").write_text("bound\n")
    keys = _mode_keys(mode)
    topology = {"nodes": {
        "h1": {**keys, "limits": {"memory": "64M", "pids": 100}, "env": {"NODE_VAR": "from-node"},
               "cmd": ["sleep", "1000000"], "binds": [f"{shock}:/mnt/shock:ro"]},  # no shell: no PWD of its own
        "evil-a": dict(keys),
        "evil-b": dict(keys),
        "nethost": {**keys, "network": "host"},
        "onhost": {**keys, "network": "container:nethost"},  # the machine's network, one step removed
    }}  # fmt: skip
    with _running(topology, directory, env={SECRET: "xyz"}) as running:
        yield running


@pytest.fixture(scope="module")
def bind_lab(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, str]]:
    """Host b binds a directory of the machine on /var/run/TOKEN, /var/run being a symlink to /run."""
    if not Path("/var/run").is_symlink() or os.readlink("/var/run") not in ("/run", "../run"):
        pytest.skip("the machine's /var/run is not a symlink to /run")
    directory = tmp_path_factory.mktemp(f"confinement-bind-{mode}")
    source = directory / "src"
    source.mkdir()
    source.chmod(0o755)
    (source / "content.txt").write_text("from the machine\n")
    token = f"netemu-y-{uuid.uuid4().hex[:10]}"
    try:
        with _running({"nodes": {"b": {**_mode_keys(mode), "binds": [f"{source}:/var/run/{token}"]}}},
                      directory) as running:
            yield running, token
    finally:
        leaked = Path("/run") / token  # what an unconfined bind leaves on the machine: an empty directory
        if leaked.is_dir() and not leaked.is_symlink():
            leaked.rmdir()


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    nodes: dict[str, dict[str, Any]] = {
        "priv": {"privileged": True},
        "capadd": {"cap_add": ["SYS_TIME"]},
        "capdrop": {"cap_drop": ["NET_RAW"]},
        "ro": {"read_only": True},
    }
    if Path("/dev/net/tun").exists():
        nodes["tun"] = {"devices": ["/dev/net/tun"]}
    topology = {"nodes": nodes,
                "links": [{"endpoints": ["ro:eth0", "priv:eth0"], "addresses": ["10.79.0.1/30", "10.79.0.2/30"]}]}
    with _running(topology, tmp_path_factory.mktemp("confinement-features")) as running:
        yield running


# ---- 1. capabilities and the seccomp filter ---------------------------------------------------

def _confinement_problems(who: str, fields: dict[str, int]) -> list[str]:
    problems = []
    wrong = [key for key in ("CapBnd", "CapPrm", "CapEff") if fields[key] != DEFAULT_CAPS]
    for value in sorted({fields[key] for key in wrong}):
        keys = "=".join(key for key in wrong if fields[key] == value)
        problems.append(f"{who} {keys} {_cap_diff(value, DEFAULT_CAPS)}")
    if fields["CapInh"] not in (0, DEFAULT_CAPS):
        problems.append(f"{who} CapInh {_cap_diff(fields['CapInh'], DEFAULT_CAPS)}")
    if fields["CapAmb"] & ~DEFAULT_CAPS:
        problems.append(f"{who} CapAmb {_cap_diff(fields['CapAmb'], DEFAULT_CAPS)}")
    if fields.get("Seccomp") != 2:
        problems.append(f"{who} Seccomp {fields.get('Seccomp')} (2: a filter)")
    return problems


def test_capabilities_are_docker_s_default_set_plus_net_admin(mode: str, lab: Lab) -> None:
    pid1 = _record(lab)["nodes"]["h1"]["pid"]  # the host's PID 1, on the machine
    cmd = _children(pid1, "sleep")
    seen = {
        "netemu exec (its /proc/self/status)": _status(lab.exec("h1", ["cat", "/proc/self/status"]).stdout),
        "PID 1 (seen from the machine)": _status(Path(f"/proc/{pid1}/status").read_text()),
        "cmd (seen from the machine)": _status(Path(f"/proc/{cmd}/status").read_text()),
    }
    problems = [problem for who, fields in seen.items() for problem in _confinement_problems(who, fields)]
    assert not problems, "\n".join(problems)


# ---- 2. devices: the machine's disk, the host's /dev ------------------------------------------

DEV_SCRIPT = r"""
def kind(mode):
    for name in ("LNK", "DIR", "CHR", "BLK", "REG"):
        if getattr(stat, "S_IS" + name)(mode):
            return name.lower()
    return "other"
entries = {}
for name in sorted(os.listdir("/dev")):
    st = os.lstat("/dev/" + name)
    entries[name] = [kind(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev)]
blocks = []
for directory, dirs, files in os.walk("/dev"):
    if directory == "/dev" and "shm" in dirs:
        dirs.remove("shm")  # the host's own files
    for name in dirs + files:
        if stat.S_ISBLK(os.lstat(os.path.join(directory, name)).st_mode):
            blocks.append(os.path.join(directory, name))
emit({"entries": entries, "block devices": blocks})
"""


def test_dev_holds_only_the_usual_nodes(mode: str, lab: Lab) -> None:
    found = _py(lab, "h1", DEV_SCRIPT)
    entries = found["entries"]
    assert set(entries) == DEV_ENTRIES, f"extra {sorted(set(entries) - DEV_ENTRIES)}, " \
                                        f"missing {sorted(DEV_ENTRIES - set(entries))}"
    assert found["block devices"] == []
    for name, numbers in DEV_NUMBERS.items():
        assert entries[name] == ["chr", *numbers], name
    assert entries["pts"][0] == "dir" and entries["shm"][0] == "dir"
    assert all(entries[name][0] == "lnk" for name in ("ptmx", "fd", "stdin", "stdout", "stderr"))


MKNOD_SCRIPT = r"""
major, minor, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
out = {}
for directory in ("/tmp", "/dev", "/dev/shm", "/run"):
    path = f"{directory}/netemu-disk-{token}"
    made = try_os(os.mknod, path, stat.S_IFBLK | 0o600, os.makedev(major, minor))
    result = {"mknod": made, "open": None, "read": None, "ext4 superblock": None, "mount -o ro": None}
    if made == "ok":
        try:
            fd = os.open(path, os.O_RDONLY)
            result["open"] = "ok"
            try:
                data = os.pread(fd, 2048, 0)
                result["read"] = len(data)
                result["ext4 superblock"] = data[1080:1082] == b"\x53\xef"
            except OSError as e:
                result["read"] = err(e.errno)
            os.close(fd)
        except OSError as e:
            result["open"] = err(e.errno)
        target = f"/dev/shm/netemu-mnt-{token}"
        os.makedirs(target, exist_ok=True)
        # MS_RDONLY, and noload: no journal replay, were it ever let through
        result["mount -o ro"] = forked("mount", path.encode(), target.encode(), b"ext4", 1, b"noload")
        if result["mount -o ro"] == "ok":
            raw("umount2", target.encode(), 2)
        os.rmdir(target)
        os.unlink(path)
    out[directory] = result
emit(out)
"""


def test_the_machine_s_disks_cannot_be_opened(mode: str, lab: Lab, disks: list[tuple[int, int, str]]) -> None:
    problems = []
    for major, minor, name in disks:
        found = _py(lab, "h1", MKNOD_SCRIPT, str(major), str(minor), uuid.uuid4().hex[:8])
        # Opening must be refused; a mount must be refused before the kernel looks at the device:
        # EBUSY ("would change RO state": the disk is mounted read-write) means it passed every check.
        problems += [f"a node of {name} ({major}:{minor}) made in {directory}: {result}"
                     for directory, result in found.items()
                     if result["read"] is not None
                     or (result["mknod"] == "ok" and result["open"] not in ("EPERM", "EACCES"))
                     or result["mount -o ro"] not in (None, "EPERM", "EACCES")]
    assert not problems, "\n".join(problems)


# ---- 3. /proc and /sys -------------------------------------------------------------------------

WRITE_OPEN_SCRIPT = r"""
out = {}
for path in sys.argv[1:]:
    out[path] = try_os(lambda: os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK)))  # never written
emit(out)
"""


def test_kernel_sysctls_are_read_only(mode: str, lab: Lab) -> None:
    core = Path("/proc/sys/kernel/core_pattern")
    before = core.read_text()
    marker = f"core.netemu-{uuid.uuid4().hex[:8]}"
    try:
        attack = _sh(lab, "h1", "mount -o remount,rw /proc/sys 2>/dev/null; mount -o remount,rw /proc 2>/dev/null; "
                                f"echo {marker} > /proc/sys/kernel/core_pattern")
        after = core.read_text()
    finally:
        if core.read_text() != before:
            core.write_text(before)
    assert after == before, f"the machine's kernel.core_pattern became {after!r}"
    assert attack.returncode != 0
    sysctls = ["/proc/sys/kernel/core_pattern", "/proc/sys/kernel/panic", "/proc/sys/vm/swappiness",
               "/proc/sys/fs/file-max", "/proc/sys/kernel/modprobe"]
    opened = _py(lab, "h1", WRITE_OPEN_SCRIPT, *[p for p in sysctls if Path(p).exists()])
    assert not [path for path, outcome in opened.items() if outcome == "ok"], opened


def test_the_host_s_own_network_sysctls_stay_writable(mode: str, lab: Lab) -> None:
    forward, ttl = Path("/proc/sys/net/ipv4/ip_forward"), Path("/proc/sys/net/ipv4/ip_default_ttl")
    machine = forward.read_text().strip(), ttl.read_text().strip()
    value = "0" if machine[0] == "1" else "1"
    result = _sh(lab, "h1", f"cd /proc/sys/net/ipv4 && echo {value} > ip_forward && echo 77 > ip_default_ttl"
                            " && cat ip_forward ip_default_ttl")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [value, "77"]
    assert (forward.read_text().strip(), ttl.read_text().strip()) == machine


def test_a_host_on_the_machine_s_network_cannot_write_its_sysctls(mode: str, lab: Lab) -> None:
    ttl = Path("/proc/sys/net/ipv4/ip_default_ttl")
    before = ttl.read_text()
    try:  # the machine's own value written back: harmless even when it gets through
        attack = _sh(lab, "nethost", f"echo {before.strip()} > /proc/sys/net/ipv4/ip_default_ttl")
    finally:
        if ttl.read_text() != before:
            ttl.write_text(before)
    assert attack.returncode != 0, "a network: host host wrote the machine's net.ipv4.ip_default_ttl"


PROC_SCRIPT = r"""
out = {"open /proc/sysrq-trigger for writing": try_os(lambda: os.close(os.open("/proc/sysrq-trigger", os.O_WRONLY)))}
writable = []
for top in ("/proc/irq", "/proc/bus"):
    for directory, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(directory, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and mode & 0o222 and try_os(lambda: os.close(os.open(path, os.O_WRONLY))) == "ok":
                writable.append(path)
out["opened for writing under /proc/irq and /proc/bus"] = writable[:5] + ([f"{len(writable)} in all"] * bool(writable))
masked = {}
for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats"):
    try:
        with open(path, "rb") as f:
            masked[path] = len(f.read(4096))
    except OSError as e:
        masked[path] = err(e.errno)
out["bytes read"] = masked
try:
    out["/sys/firmware"] = sorted(os.listdir("/sys/firmware"))
except OSError as e:
    out["/sys/firmware"] = err(e.errno)
emit(out)
"""


def test_proc_s_kernel_interfaces_are_read_only_or_masked(mode: str, lab: Lab) -> None:
    found = _py(lab, "h1", PROC_SCRIPT)
    assert found["open /proc/sysrq-trigger for writing"] != "ok", found
    assert found["opened for writing under /proc/irq and /proc/bus"] == [], found
    assert all(isinstance(n, str) or n == 0 for n in found["bytes read"].values()), found["bytes read"]
    assert found["/sys/firmware"] in ([],) or isinstance(found["/sys/firmware"], str), found


SYS_SCRIPT = r"""
paths = []
for directory in ("/sys/kernel", "/sys/kernel/mm/transparent_hugepage", "/sys/class/net/lo", "/sys/fs/cgroup"):
    try:
        names = os.listdir(directory)
    except OSError:
        continue
    for name in names:
        path = os.path.join(directory, name)
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and mode & 0o222:
            paths.append(path)
# opened for writing, never written
opened = [p for p in paths if try_os(lambda: os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))) == "ok"]
emit({"read-only": bool(os.statvfs("/sys").f_flag & os.ST_RDONLY), "candidates": len(paths),
      "opened for writing": opened})
"""


def test_sys_is_read_only(mode: str, lab: Lab) -> None:
    remount = _sh(lab, "h1", "mount -o remount,rw /sys")
    found = _py(lab, "h1", SYS_SCRIPT)
    assert remount.returncode != 0, "mount -o remount,rw /sys worked"
    assert found["read-only"] and found["opened for writing"] == [], found


# ---- 4. the clock --------------------------------------------------------------------------------

CLOCK_SCRIPT = r"""
class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
def set_to_now():
    now = Timespec()
    libc.clock_gettime(0, ctypes.byref(now))
    ret, number = raw("clock_settime", 0, ctypes.byref(now))  # CLOCK_REALTIME, to what it shows
    return "ok" if ret == 0 else err(number)
emit({"settimeofday(NULL, NULL)": forked("settimeofday", None, None), "clock_settime(now)": in_child(set_to_now)})
"""


def test_the_clock_cannot_be_set(mode: str, lab: Lab) -> None:
    wall, mono = time.time(), time.monotonic()
    calls = _py(lab, "h1", CLOCK_SCRIPT)
    date = _sh(lab, "h1", 'date -s "@$(date +%s.%N)"')  # at worst, the clock moves back a millisecond
    jump = (time.time() - wall) - (time.monotonic() - mono)
    assert abs(jump) < 60, f"the machine's clock jumped by {jump:.0f} s"
    assert calls == dict.fromkeys(calls, "EPERM"), calls
    assert date.returncode != 0, date.stdout


# ---- 5. cgroups ----------------------------------------------------------------------------------

CGROUP_SCRIPT = r"""
attempt() {
    d=$(mktemp -d /dev/shm/netemu-cg.XXXXXX)
    fs=$1 opts=$2
    shift 2
    if mount -t "$fs" $opts none "$d" 2>/dev/null; then
        echo "$fs $opts: mounted"
        for w in "$@"; do
            f=${w%%=*} v=${w#*=}
            [ -e "$d/$f" ] && echo "$v" > "$d/$f" 2>/dev/null && echo "  wrote $v to $f"
        done
        umount "$d"
    else
        echo "$fs $opts: refused"
    fi
    rmdir "$d"
}
attempt cgroup "-o memory" memory.memsw.limit_in_bytes=-1 memory.limit_in_bytes=-1
attempt cgroup "-o pids" pids.max=max
attempt cgroup2 "" memory.max=max memory.swap.max=max pids.max=max
"""


def test_cgroup_filesystems_cannot_be_mounted(mode: str, lab: Lab) -> None:
    attack = _sh(lab, "h1", CGROUP_SCRIPT)
    memory = _hierarchy_file(lab, "h1", "memory", "memory.limit_in_bytes", "memory.max").read_text().strip()
    pids = _hierarchy_file(lab, "h1", "pids", "pids.max", "pids.max").read_text().strip()
    assert (memory, pids) == (str(64 << 20), "100"), attack.stdout
    assert "mounted" not in attack.stdout, attack.stdout


# ---- 6 and 7. syscalls that Docker's filter refuses ----------------------------------------------

HANDLE_SCRIPT = r"""
class Handle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]
def by_handle(mount, handle, flags):
    mfd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ret, number = raw("open_by_handle_at", mfd, ctypes.byref(handle), flags)
    finally:
        os.close(mfd)
    if ret < 0:
        return err(number)
    try:
        if stat.S_ISDIR(os.fstat(ret).st_mode):
            return "ok: " + " ".join(sorted(os.listdir(f"/proc/self/fd/{ret}"))[:15])
        return "ok: " + os.read(ret, 64).decode(errors="replace")
    finally:
        os.close(ret)
base = "/dev/shm/netemu-fh-" + sys.argv[1]
os.makedirs(base, exist_ok=True)
with open(base + "/file", "w") as f:
    f.write("through a handle\n")
out = {}
for kind, path, flags in (("file", base + "/file", os.O_RDONLY), ("directory", base, os.O_RDONLY | os.O_DIRECTORY)):
    handle, mount_id = Handle(handle_bytes=128), ctypes.c_int()
    ret, number = raw("name_to_handle_at", -100, path.encode(), ctypes.byref(handle), ctypes.byref(mount_id), 0)
    out[f"name_to_handle_at {kind}"] = "ok" if ret == 0 else err(number)
    if ret == 0:
        out[f"open_by_handle_at {kind}"] = by_handle("/dev/shm", handle, flags)
# The shocker: the handle of an ext4 root directory (inode 2, generation 0) against a bind mount
# of a directory of the machine's disk opens the machine's whole filesystem.
forged = Handle(handle_bytes=8, handle_type=1)
ctypes.memmove(forged.f_handle, struct.pack("<II", 2, 0), 8)
out["open_by_handle_at forged ext4 root"] = by_handle("/mnt/shock", forged, os.O_RDONLY | os.O_DIRECTORY)
emit(out)
"""


def test_open_by_handle_at_is_refused(mode: str, lab: Lab) -> None:
    found = _py(lab, "h1", HANDLE_SCRIPT, uuid.uuid4().hex[:8])
    opened = {key: value for key, value in found.items() if key.startswith("open_by_handle_at")}
    assert opened and opened == dict.fromkeys(opened, "EPERM"), found


SYSCALL_SCRIPT = r"""
scratch = "/dev/shm/netemu-sc-" + sys.argv[1]
os.makedirs(scratch + "/plain", exist_ok=True)
os.makedirs(scratch + "/target", exist_ok=True)
# Arguments that make each call fail after its permission check when it is let through.
emit({
    "keyctl(GET_KEYRING_ID)": forked("keyctl", 0, -3, 0),
    "add_key(unknown type)": forked("add_key", b"netemu-no-such-type", b"netemu", None, 0, -2),
    "request_key(unknown type)": forked("request_key", b"netemu-no-such-type", b"netemu", None, 0),
    "bpf(bad command)": forked("bpf", 0x7FFF, None, 0),
    "perf_event_open(NULL)": forked("perf_event_open", None, 0, -1, -1, 0),
    "init_module(empty)": forked("init_module", None, 0, b""),
    "finit_module(-1)": forked("finit_module", -1, b"", 0),
    "delete_module(missing)": forked("delete_module", b"netemu_no_such_module", 0),
    "kexec_load(too many segments)": forked("kexec_load", 0, 0x7FFFFFFF, None, 0),
    "swapon(missing)": forked("swapon", b"/netemu-no-such-swapfile", 0),
    "swapoff(missing)": forked("swapoff", b"/netemu-no-such-swapfile"),
    "unshare(CLONE_NEWUSER)": forked("unshare", 0x10000000),
    "unshare(CLONE_NEWNS)": forked("unshare", 0x00020000),
    "unshare(CLONE_NEWUSER|CLONE_NEWNS)": forked("unshare", 0x10020000),
    "mount(tmpfs)": forked("mount", b"none", (scratch + "/target").encode(), b"tmpfs", 0, None),
    "umount2(not a mount)": forked("umount2", (scratch + "/plain").encode(), 0),
    "acct(missing)": forked("acct", b"/netemu-no-such-file"),
    "reboot(bad magic)": forked("reboot", 0, 0, 0xDEADBEEF, None),
})
"""


def test_syscalls_outside_docker_s_profile_fail_with_eperm(mode: str, lab: Lab) -> None:
    found = _py(lab, "h1", SYSCALL_SCRIPT, uuid.uuid4().hex[:8])
    let_through = {call: outcome for call, outcome in found.items() if outcome != "EPERM"}
    assert not let_through, f"not refused with EPERM: {let_through}"


# ---- 8. the environment ----------------------------------------------------------------------------

HOST_ENV = {"PATH", "HOME", "HOSTNAME", "TERM", "NODE_VAR"}


def _environ_text(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split("\0") if "=" in item)


def test_the_host_s_environment_is_its_own(mode: str, lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET, "xyz")
    pid1 = lab.pid("h1")
    seen = {
        "PID 1": _environ(pid1),
        "cmd": _environ(_children(pid1, "sleep")),
        "lab.exec": _environ_text(lab.exec("h1", ["cat", "/proc/self/environ"]).stdout),
        "netemu exec": _environ_text(run_cli("exec", lab.name, "h1", "--", "cat", "/proc/self/environ").stdout),
    }
    problems = [f"{who}: {sorted(set(env) - HOST_ENV)} are not the host's" for who, env in seen.items()
                if set(env) - HOST_ENV]
    problems += [f"{who} lacks the node's env" for who in ("cmd", "lab.exec", "netemu exec")
                 if seen[who].get("NODE_VAR") != "from-node" or seen[who].get("HOSTNAME") != "h1"]
    assert not problems, "\n".join(problems)


def test_commands_are_found_on_the_host_s_path(mode: str, lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else Path(sys.prefix) / "bin"
    decoy = venv / "python3"
    if not decoy.exists() or os.path.realpath(decoy).startswith(("/usr/bin/", "/usr/local/bin/")):
        pytest.skip(f"{decoy} is the machine's own python3: nothing tells the two apart")
    monkeypatch.setenv("PATH", f"{venv}:{os.environ.get('PATH', '')}")
    result = run_cli("exec", lab.name, "h1", "--", "python3", "-c",
                     "import os, sys; print(sys.executable); print(os.readlink('/proc/self/exe')); import socket")
    executable, binary = ([*result.stdout.split(), "?", "?"])[:2]
    assert binary.startswith(("/usr/bin/", "/usr/local/bin/")), f"ran {binary}, found on the caller's PATH"
    assert executable in ("/usr/bin/python3", "/usr/local/bin/python3")
    assert result.returncode == 0, result.stderr


def test_the_caller_s_terminal_and_files_stay_out_of_the_host(mode: str, lab: Lab) -> None:
    """`netemu exec` from a terminal without -t: the command gets pipes, no controlling terminal
    (so no TIOCSTI into the caller's shell, no reading its keystrokes later), and no descriptor
    of the caller's beyond 0, 1 and 2."""
    inside = ("import fcntl, os, termios; "
              "print(sorted(int(f) for f in os.listdir('/proc/self/fd'))); "
              "print([os.readlink(f'/proc/self/fd/{f}').split(':')[0] for f in (0, 1, 2)]); "
              "exec('try:\\n open(\\'/dev/tty\\')\\n print(\\'tty opened\\')\\n"
              "except OSError as e:\\n print(e.errno)'); "
              "exec('try:\\n fcntl.ioctl(0, termios.TIOCSTI, b\\'x\\')\\n print(\\'pushed\\')\\n"
              "except OSError as e:\\n print(e.errno)')")
    command = f"exec 7</dev/null; {' '.join(NETEMU)} exec {lab.name} h1 -- python3 -c \"{inside}\""
    # script(1) runs the command on a pseudo-terminal of its own, as an interactive shell would.
    result = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60, stdin=subprocess.DEVNULL)
    lines = [line.strip() for line in result.stdout.replace("\r", "").splitlines() if line.strip()]
    assert lines[:4] == ["[0, 1, 2, 3]", "['pipe', 'pipe', 'pipe']", "6", "25"], result.stdout + result.stderr


# ---- 9. the writable layer: an /etc symlink pointing out of the host ------------------------------

@pytest.mark.parametrize("target_kind", ["existing", "missing"])
def test_an_etc_symlink_makes_netemu_write_nothing_on_the_machine(mode: str, lab: Lab, target_kind: str) -> None:
    node = {"existing": "evil-a", "missing": "evil-b"}[target_kind]
    if target_kind == "existing":  # a directory of the machine the attacker names: it must stay empty
        target = Path(tempfile.mkdtemp(prefix="netemu-evil-", dir="/tmp"))
    else:
        target = Path("/tmp") / f"netemu-evil-{uuid.uuid4().hex[:12]}"
    try:
        # Only ever inside an overlay root: rm -rf /etc must never reach the machine's.
        attack = _sh(lab, node, '[ "$(stat -f -c %T /)" = overlayfs ] || exit 99; '
                                f"rm -rf /etc && ln -s {target} /etc && readlink /etc")
        assert attack.returncode == 0 and attack.stdout.strip() == str(target), attack.stdout + attack.stderr
        result = run_cli("node", lab.name, node, "restart")
        if target_kind == "existing":
            assert sorted(p.name for p in target.iterdir()) == [], f"netemu wrote into the machine's {target}"
        else:
            assert not os.path.lexists(target), f"netemu created the machine's {target}"
        if result.returncode == 0:
            # Restarted without following the link: the host keeps the /etc it made, and the
            # node's console.log says netemu left its files out.
            console = Path(json.loads(Path(f"/run/netemu/{lab.name}/state.json").read_text())
                           ["nodes"][node]["console"]).read_text()
            assert "/etc/hostname left as the host made it" in console, console
            assert lab.exec(node, ["readlink", "/etc"]).stdout.strip() == str(target)
        else:  # refused: with a reason, not a crash
            assert result.returncode != 4 and result.stderr.strip() and "Traceback" not in result.stderr, \
                result.stderr
    finally:
        shutil.rmtree(target, ignore_errors=True)


# ---- 10. binds -------------------------------------------------------------------------------------

def test_a_bind_target_through_a_symlink_stays_inside_the_host(mode: str, bind_lab: tuple[Lab, str]) -> None:
    running, token = bind_lab
    assert not os.path.lexists(f"/run/{token}"), f"the bind made /run/{token} on the machine"
    script = f"readlink /var/run; cat /var/run/{token}/content.txt /run/{token}/content.txt"
    inside = running.exec("b", ["sh", "-c", script])
    expected = [os.readlink("/var/run"), "from the machine", "from the machine"]
    assert inside.stdout.splitlines() == expected, inside.stdout + inside.stderr


@pytest.mark.parametrize("source", ["/", "/proc", "/sys", "/dev", "a symlink to /proc"])
def test_binds_of_the_machine_itself_are_refused(mode: str, source: str, tmp_path: Path) -> None:
    from tests import kernel_snapshot

    if source == "a symlink to /proc":
        link = tmp_path / "proc-link"
        link.symlink_to("/proc")
        source = str(link)
    name = unique_name()
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "nodes": {"h": {**_mode_keys(mode), "binds": [f"{source}:/mnt/m"]}}}))
    try:
        result = run_cli("up", str(path))
        assert result.returncode == 2, f"exit {result.returncode}: {result.stderr}"
        assert source in result.stderr or "bind" in result.stderr.lower(), result.stderr
        assert not Path(f"/run/netemu/{name}").exists()
        assert not [n for n in kernel_snapshot.netns() if n.startswith(f"netemu-{name}.")]
        assert not [c for c in kernel_snapshot.cgroups() if f"/netemu/{name}" in c]
    finally:
        cleanup.remove_lab(name)


def test_a_privileged_host_may_bind_the_machine_s_proc(make_lab) -> None:
    running = make_lab({"nodes": {"p": {"privileged": True, "binds": ["/proc:/mnt/machine-proc:ro"]}}})
    assert running.exec("p", ["cat", "/mnt/machine-proc/1/comm"]).stdout == Path("/proc/1/comm").read_text()


# ---- 11. privileged, cap_add, cap_drop, devices, read_only ------------------------------------------

def test_a_privileged_host_has_the_machine_s_capabilities_and_no_filter(features: Lab) -> None:
    mine = _status(Path("/proc/self/status").read_text())
    seen = {"netemu exec": _status(features.exec("priv", ["cat", "/proc/self/status"]).stdout),
            "PID 1": _status(Path(f"/proc/{features.pid('priv')}/status").read_text())}
    for who, fields in seen.items():
        assert fields["CapBnd"] == mine["CapBnd"], f"{who} CapBnd {_cap_diff(fields['CapBnd'], mine['CapBnd'])}"
        assert fields["CapEff"] == mine["CapBnd"], f"{who} CapEff {_cap_diff(fields['CapEff'], mine['CapBnd'])}"
        assert fields["Seccomp"] == 0, who
    # It may write the kernel's sysctls (opened for writing here, never written).
    assert _py(features, "priv", WRITE_OPEN_SCRIPT, "/proc/sys/kernel/core_pattern") == {
        "/proc/sys/kernel/core_pattern": "ok"}
    # It sees the machine's devices.
    _major, _minor, disk = _root_disk()
    devices = [p for p in ("/dev/loop-control", f"/dev/{disk}" if disk else "") if p and os.path.exists(p)]
    listed = features.exec("priv", ["ls", "-d", *devices]) if devices else None
    assert listed is None or sorted(listed.stdout.split()) == sorted(devices), listed and listed.stderr


def test_cap_add_adds_a_capability(features: Lab) -> None:
    fields = _status(features.exec("capadd", ["cat", "/proc/self/status"]).stdout)
    expected = DEFAULT_CAPS | _mask("SYS_TIME")
    assert fields["CapEff"] == expected, _cap_diff(fields["CapEff"], expected)
    assert fields["CapBnd"] == expected, _cap_diff(fields["CapBnd"], expected)
    # As in Docker, the filter lets what the capability allows through (a no-op settimeofday).
    assert _py(features, "capadd", 'emit(forked("settimeofday", None, None))') == "ok"


def test_cap_drop_removes_a_capability(features: Lab) -> None:
    fields = _status(features.exec("capdrop", ["cat", "/proc/self/status"]).stdout)
    expected = DEFAULT_CAPS & ~_mask("NET_RAW")
    assert fields["CapEff"] == expected, _cap_diff(fields["CapEff"], expected)
    assert fields["CapBnd"] == expected, _cap_diff(fields["CapBnd"], expected)
    raw_socket = "import socket\nemit(try_os(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1).close()))"
    assert _py(features, "capdrop", raw_socket) == "EPERM"
    group_range = features.exec("capdrop", ["cat", "/proc/sys/net/ipv4/ping_group_range"]).stdout.split()
    if len(group_range) == 2 and int(group_range[0]) > 0:  # root may not use ICMP datagram sockets either
        assert features.exec("capdrop", ["ping", "-c1", "-W1", "127.0.0.1"]).returncode != 0


def test_devices_hands_a_host_the_node_it_names(features: Lab) -> None:
    if "tun" not in features.nodes:
        pytest.skip("the machine has no /dev/net/tun")
    found = _py(features, "tun", 'st = os.stat("/dev/net/tun")\n'
                                 'emit([os.major(st.st_rdev), os.minor(st.st_rdev), '
                                 'try_os(lambda: os.close(os.open("/dev/net/tun", os.O_RDWR)))])')
    machine = os.stat("/dev/net/tun").st_rdev
    assert found == [os.major(machine), os.minor(machine), "ok"]
    assert features.exec("capadd", ["test", "-e", "/dev/net/tun"]).returncode == 1  # not asked for: absent


READ_ONLY_SCRIPT = r"""
def write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError as e:
        return err(e.errno)
    os.unlink(path)
    return "ok"
emit({"/ read-only": bool(os.statvfs("/").f_flag & os.ST_RDONLY),
      **{path: write(path) for path in ("/etc/netemu-x", "/usr/netemu-x", "/run/netemu-x", "/dev/shm/netemu-x")}})
"""


def test_a_read_only_host_writes_only_to_run_and_dev_shm(features: Lab) -> None:
    found = _py(features, "ro", READ_ONLY_SCRIPT)
    assert found == {"/ read-only": True, "/etc/netemu-x": "EROFS", "/usr/netemu-x": "EROFS",
                     "/run/netemu-x": "ok", "/dev/shm/netemu-x": "ok"}
    hosts = features.exec("ro", ["cat", "/etc/hosts"]).stdout.splitlines()
    assert "127.0.0.1\tlocalhost" in hosts and "10.79.0.1\tro" in hosts and "10.79.0.2\tpriv" in hosts, hosts
    assert features.exec("ro", ["cat", "/etc/hostname"]).stdout == "ro\n"


# ---- found by a hostile review ------------------------------------------------------------------

@pytest.mark.parametrize("node", ["nethost", "onhost"])
def test_a_host_on_the_machine_s_network_cannot_change_it(mode: str, lab: Lab, node: str) -> None:
    """No NET_ADMIN over the machine's network namespace (Docker's --network host has none
    either), and its /proc/sys/net stays read-only, also through a container: chain."""
    status = _status(_sh(lab, node, "cat /proc/self/status").stdout)
    assert not status["CapEff"] >> 12 & 1, f"{node} holds NET_ADMIN over the machine's network"
    link = f"ne{uuid.uuid4().hex[:8]}"
    try:
        made = _sh(lab, node, f"ip link add {link} type veth peer name {link}p")
        assert made.returncode != 0, f"{node} made a link on the machine"
        forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        wrote = _sh(lab, node, f"echo {forward} > /proc/sys/net/ipv4/ip_forward")
        assert wrote.returncode != 0, f"{node} wrote the machine's net.ipv4.ip_forward"
    finally:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


def test_the_machine_s_device_nodes_cannot_be_changed_from_inside(mode: str, lab: Lab) -> None:
    before = os.stat("/dev/null")
    result = _sh(lab, "h1", "chmod 0600 /dev/null; chown 1:1 /dev/null; touch -d 2001-01-01 /dev/null")
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, before.st_gid), \
        result.stderr
    assert after.st_mtime == before.st_mtime or after.st_mtime > 978307200, "the machine's /dev/null was touched"
    assert _sh(lab, "h1", "echo x > /dev/null && head -c 4 /dev/zero | wc -c").stdout.strip() == "4"


def test_a_file_the_caller_redirects_to_stays_out_of_the_host(mode: str, lab: Lab, tmp_path: Path) -> None:
    """`netemu exec ... > FILE`: the command writes to a pipe netemu copies into FILE; it cannot
    chmod, chown or truncate the machine's file (a setuid binary for any local user)."""
    out = tmp_path / "out.txt"
    code = "import os; print(os.readlink('/proc/self/fd/1')); os.fchmod(1, 0o4755)"
    with open(out, "w") as target:
        subprocess.run([*NETEMU, "exec", lab.name, "h1", "--", "python3", "-c", code], stdout=target,
                       stderr=subprocess.PIPE, cwd=ROOT, timeout=60, check=False)
    assert stat.S_IMODE(out.stat().st_mode) & 0o7000 == 0 and out.stat().st_uid == 0
    assert out.read_text().startswith("pipe:"), out.read_text()


def test_netemu_exec_runs_from_a_sealed_copy_of_itself(mode: str, lab: Lab) -> None:
    """The helper behind `netemu exec` is never the machine's netemu-init file: a command run as
    "#!/proc/self/exe" gets the sealed copy in memory, which nobody can write."""
    proc = subprocess.Popen([*NETEMU, "exec", lab.name, "h1", "--", "sleep", "30"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        helper = _netemu_init_child(proc.pid)
        exe = os.readlink(f"/proc/{helper}/exe")
        assert exe.startswith("/memfd:netemu-init"), exe
    finally:
        proc.kill()
        proc.wait()


def _netemu_init_child(pid: int, wait: float = 10.0) -> int:
    """`netemu exec` replaces itself with netemu-init: the same pid, once it has re-executed."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/exe").startswith("/memfd:"):
                return pid
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} never ran netemu-init from memory: {os.readlink(f'/proc/{pid}/exe')}")
