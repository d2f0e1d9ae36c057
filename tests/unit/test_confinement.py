"""Confinement's pure parts: the seccomp filter and the device filter run in small interpreters
of their instruction sets, the syscall tables checked against this machine's C headers, and the
capability arithmetic and file keys."""

from __future__ import annotations

import platform
import re
import shutil
import struct
import subprocess

import pytest

from netemu.errors import InputError
from netemu.linux import capabilities, devices, seccomp
from netemu.topology.loader import load_topology_text

# --- a classic BPF interpreter for seccomp programs ------------------------------------------


def run_seccomp(prog: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x06:  # ret k
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        pc += 1


ARCH = "x86_64" if platform.machine() not in seccomp.TABLES else platform.machine()
NATIVE = seccomp.ARCH[ARCH]
ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050001, 0x00050026
DEFAULT = set(capabilities.HOST_DEFAULT)


def nr(name: str) -> int:
    return seccomp.TABLES[ARCH][name]


@pytest.mark.parametrize("name", ["mount", "umount2", "unshare", "setns", "kexec_load", "init_module",
                                  "finit_module", "open_by_handle_at", "keyctl", "add_key", "bpf",
                                  "perf_event_open", "clock_settime", "settimeofday", "swapon", "reboot",
                                  "io_uring_setup", "pivot_root", "fsopen", "open_tree", "move_mount"])
def test_default_filter_refuses_dockers_list(name):
    assert run_seccomp(seccomp.program(DEFAULT, ARCH), nr(name), NATIVE) == EPERM


def test_default_filter_allows_ordinary_calls():
    prog = seccomp.program(DEFAULT, ARCH)
    table = {"x86_64": (0, 1, 2, 41, 59), "aarch64": (63, 64, 56, 198, 221)}[ARCH]  # read write open socket exec
    for number in table:
        assert run_seccomp(prog, number, NATIVE) == ALLOW


def test_clone_with_namespace_flags_is_refused_and_clone3_falls_back():
    prog = seccomp.program(DEFAULT, ARCH)
    assert run_seccomp(prog, nr("clone"), NATIVE, arg0=0x01200011) == ALLOW  # fork's flags
    assert run_seccomp(prog, nr("clone"), NATIVE, arg0=0x00020000 | 17) == EPERM  # CLONE_NEWNS
    assert run_seccomp(prog, nr("clone"), NATIVE, arg0=0x10000000) == EPERM  # CLONE_NEWUSER
    assert run_seccomp(prog, nr("clone3"), NATIVE) == ENOSYS


def test_a_capability_unlocks_what_docker_gates_behind_it():
    prog = seccomp.program(DEFAULT | {"SYS_ADMIN", "SYS_TIME"}, ARCH)
    for name in ("mount", "unshare", "setns", "clock_settime"):
        assert run_seccomp(prog, nr(name), NATIVE) == ALLOW
    assert run_seccomp(prog, nr("clone"), NATIVE, arg0=0x40000000) == ALLOW  # CLONE_NEWNET
    assert run_seccomp(prog, nr("kexec_load"), NATIVE) == EPERM
    assert run_seccomp(prog, nr("keyctl"), NATIVE) == EPERM  # only privileged hosts


def test_calls_newer_than_the_review_answer_enosys():
    prog = seccomp.program(DEFAULT, ARCH)
    assert run_seccomp(prog, seccomp.LAST_REVIEWED + 1, NATIVE) == ENOSYS
    assert run_seccomp(prog, 452, NATIVE) == ALLOW  # fchmodat2, reviewed: harmless
    assert run_seccomp(prog, nr("open_tree_attr"), NATIVE) == EPERM


def test_other_abis_are_refused_whole():
    prog = seccomp.program(DEFAULT, ARCH)
    assert run_seccomp(prog, 0, 0x40000003) == ENOSYS  # i386
    if ARCH == "x86_64":
        assert run_seccomp(prog, 0x40000000 | 1, NATIVE) == ENOSYS  # x32 write


def _header_numbers(source: str, defines: list[str]) -> dict[str, int]:
    out = subprocess.run(["cc", "-dM", "-E", *defines, "-"], input=source, capture_output=True, text=True,
                         check=True).stdout
    raw = dict(re.findall(r"#define (__NR3264_\w+|__NR_\w+) (.+)", out))

    def value(text: str) -> int:
        text = text.strip("() ")
        if text.isdigit():
            return int(text)
        base, _, offset = text.partition("+")
        return value(raw[base.strip()]) + (int(offset) if offset else 0)

    return {key.removeprefix("__NR_"): value(v) for key, v in raw.items() if key.startswith("__NR_")}


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler and the kernel headers")
@pytest.mark.parametrize("arch", sorted(seccomp.TABLES))
def test_syscall_tables_match_the_kernel_headers(arch):
    if arch == "x86_64":
        if platform.machine() != "x86_64":
            pytest.skip("the x86_64 header is there only on x86_64 machines")
        found = _header_numbers("#include <asm/unistd_64.h>\n", [])
    else:
        found = _header_numbers("#include <asm-generic/unistd.h>\n",
                                ["-D__BITS_PER_LONG=64", "-D__ARCH_WANT_SYS_CLONE3"])
    # Calls newer than the headers (open_tree_attr on Debian 12's) are checked where they are known.
    known = {name: number for name, number in seccomp.TABLES[arch].items() if name in found}
    assert {name: found[name] for name in known} == known
    assert len(known) >= len(seccomp.TABLES[arch]) - 1
    # Every policy entry the architecture has is in the table (the rest are gone from its ABI).
    missing = [name for name in seccomp.POLICY if name in found and name not in seccomp.TABLES[arch]]
    assert not missing


# --- an eBPF interpreter for the device filter ------------------------------------------------


def run_device_filter(prog: bytes, kind: str, major: int, minor: int, access: str) -> int:
    acc = sum({"m": 1, "r": 2, "w": 4}[a] for a in access)
    ctx = struct.pack("<III", ({"b": 1, "c": 2}[kind]) | acc << 16, major, minor)
    regs = [0] * 11
    pc = 0
    while True:
        code, regbyte, off, imm = struct.unpack_from("<BBhi", prog, pc * 8)
        dst, src = regbyte & 0xF, regbyte >> 4
        pc += 1
        if code == 0x61:
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:
            regs[dst] = regs[dst] & (imm & 0xFFFFFFFF)
        elif code == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == 0xBF:
            regs[dst] = regs[src]
        elif code == 0xB7:
            regs[dst] = imm
        elif code == 0x55:
            pc += off if regs[dst] != imm else 0
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unknown opcode {code:#x}")


def test_device_filter_allows_the_minimal_dev_and_mknod_only():
    prog = devices.program(list(devices.DEFAULT_RULES))
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, 4)):
        assert run_device_filter(prog, "c", major, minor, "rw") == 1
    assert run_device_filter(prog, "b", 8, 0, "r") == 0  # the machine's disk
    assert run_device_filter(prog, "b", 8, 0, "m") == 1  # mknod is fine: opening is what counts
    assert run_device_filter(prog, "c", 1, 1, "r") == 0  # /dev/mem
    assert run_device_filter(prog, "c", 10, 200, "rw") == 0  # /dev/net/tun unless asked
    assert run_device_filter(prog, "c", 1, 3, "rwm") == 1


def test_device_filter_access_subsets():
    prog = devices.program([devices.Rule("c", 10, 200, "r")])
    assert run_device_filter(prog, "c", 10, 200, "r") == 1
    assert run_device_filter(prog, "c", 10, 200, "rw") == 0
    assert run_device_filter(prog, "c", 10, 201, "r") == 0


def test_device_rules_as_v1_lines():
    assert devices.Rule("c", devices.ANY, devices.ANY, "m").v1() == "c *:* m"
    assert devices.Rule("c", 136, devices.ANY, "rwm").v1() == "c 136:* rwm"


# --- capability sets and the file keys ---------------------------------------------------------


def test_capability_sets_follow_dockers_rules():
    full = capabilities.own_bounding_set()
    default = capabilities.mask(capabilities.HOST_DEFAULT) & full
    assert capabilities.host_set(False, [], []) == default
    assert "NET_ADMIN" in capabilities.names_of(default) and "SYS_ADMIN" not in capabilities.names_of(default)
    assert capabilities.host_set(False, ["SYS_TIME"], ["NET_RAW"]) == (default | 1 << 25) & ~(1 << 13) & full
    assert capabilities.host_set(False, ["NET_RAW"], ["ALL"]) == 1 << 13
    assert capabilities.host_set(False, ["ALL"], []) == full
    assert capabilities.host_set(True, [], []) == full


def test_file_keys_parse_and_bad_values_point_at_the_key():
    topo = load_topology_text("name: x\nnodes:\n  a: {cap_add: [net_admin, CAP_SYS_TIME], cap_drop: [ALL],"
                              " devices: [/dev/net/tun], read_only: true, privileged: false}\n")
    node = topo.nodes["a"]
    assert (node.cap_add, node.cap_drop, node.devices, node.read_only) == (
        ["NET_ADMIN", "SYS_TIME"], ["ALL"], ["/dev/net/tun"], True)
    for bad, key in (("cap_add: [FLY]", "cap_add[0]"), ("devices: [/etc/passwd]", "devices[0]"),
                     ('binds: ["/proc:/p"]', "binds[0]"), ('binds: ["/:/m"]', "binds[0]"),
                     ('binds: ["/sys/fs/cgroup:/c"]', "binds[0]"), ('binds: ["//dev/./sda:/d"]', "binds[0]")):
        with pytest.raises(InputError, match=rf"<string>:3: nodes\.a\.{re.escape(key)}: "):
            load_topology_text(f"name: x\nnodes:\n  a: {{{bad}}}\n")


def test_privileged_nodes_may_bind_the_machine():
    topo = load_topology_text('name: x\nnodes:\n  a: {privileged: true, binds: ["/proc:/hostproc"]}\n')
    assert topo.nodes["a"].binds[0].source == "/proc"
