"""The devices a host may open: a cgroup device allow-list, as runc keeps one.

On cgroup v2 the list is a BPF program of type CGROUP_DEVICE attached to the host's group in the
v2 tree (the kernel asks it at every open and mknod of a device node); on cgroup v1 it is the
`devices` controller's devices.allow list. On a hybrid machine both are set: the kernel checks
the program of the v2 group and then the v1 list, and both must allow. Creating a node (mknod)
is allowed for every device, as in Docker: opening it is what the list decides."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from netemu.errors import MachineError

CHAR, BLOCK = "c", "b"
ANY = -1


@dataclass(frozen=True)
class Rule:
    kind: str  # "c" or "b"
    major: int  # ANY for every major
    minor: int  # ANY for every minor
    access: str  # a subset of "rwm"

    def v1(self) -> str:
        number = lambda n: "*" if n == ANY else str(n)  # noqa: E731
        return f"{self.kind} {number(self.major)}:{number(self.minor)} {self.access}"


# Docker's default allow-list: mknod of anything; the minimal /dev; every pseudo-terminal.
DEFAULT_RULES = (
    Rule(CHAR, ANY, ANY, "m"), Rule(BLOCK, ANY, ANY, "m"),
    Rule(CHAR, 1, 3, "rwm"), Rule(CHAR, 1, 5, "rwm"), Rule(CHAR, 1, 7, "rwm"),  # null, zero, full
    Rule(CHAR, 1, 8, "rwm"), Rule(CHAR, 1, 9, "rwm"),  # random, urandom
    Rule(CHAR, 5, 0, "rwm"), Rule(CHAR, 5, 2, "rwm"),  # tty, ptmx
    Rule(CHAR, 136, ANY, "rwm"),  # /dev/pts/N
)  # fmt: skip


def rule_for(path: str) -> Rule:
    """The rule that lets a host use the machine's device node `path` (for `devices:`)."""
    st = os.stat(path)
    if stat.S_ISCHR(st.st_mode):
        kind = CHAR
    elif stat.S_ISBLK(st.st_mode):
        kind = BLOCK
    else:
        raise ValueError(f"{path} is not a device node")
    return Rule(kind, os.major(st.st_rdev), os.minor(st.st_rdev), "rwm")


# --- cgroup v1: devices.deny then devices.allow -------------------------------------------------


def apply_v1(group_dir: Path, rules: list[Rule]) -> None:
    """Deny everything, then allow the rules. A v1 child group starts from its parent's list, so
    writing "a" to devices.deny first is what makes the list an allow-list."""
    (group_dir / "devices.deny").write_text("a")
    for rule in rules:
        (group_dir / "devices.allow").write_text(rule.v1())


# --- cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program ------------------------------------------

_BPF_PROG_LOAD, _BPF_PROG_ATTACH = 5, 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_*
_TYPE = {BLOCK: 1, CHAR: 2}  # BPF_DEVCG_DEV_*
# eBPF opcodes (linux/bpf.h): load a word, 32-bit and/shift, 64-bit move, jumps, exit.
_LDXW, _AND32, _RSH32, _MOV64X, _MOV64K, _JNE_K, _EXIT = 0x61, 0x54, 0x74, 0xBF, 0xB7, 0x55, 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def program(rules: list[Rule]) -> bytes:
    """r2 = device type, r3 = access asked, r4 = major, r5 = minor (struct bpf_cgroup_dev_ctx);
    each rule is a block that returns 1 when all of its tests pass and falls through to the next
    block otherwise; past the last, 0 (denied)."""
    head = [_insn(_LDXW, 2, 1, 0), _insn(_AND32, 2, imm=0xFFFF), _insn(_LDXW, 3, 1, 0),
            _insn(_RSH32, 3, imm=16), _insn(_LDXW, 4, 1, 4), _insn(_LDXW, 5, 1, 8)]
    body: list[bytes] = []
    for rule in rules:
        body += _rule_block(rule)
    return b"".join([*head, *body, _insn(_MOV64K, 0, imm=0), _insn(_EXIT)])


def _rule_block(rule: Rule) -> list[bytes]:
    allowed = sum(_ACCESS[a] for a in rule.access)
    tests: list[tuple[int, int, int]] = [(_JNE_K, 2, _TYPE[rule.kind])]  # (op, register, value)
    if rule.major != ANY:
        tests.append((_JNE_K, 4, rule.major))
    if rule.minor != ANY:
        tests.append((_JNE_K, 5, rule.minor))
    block: list[bytes] = []
    # Every test jumps past the rest of the block (the block's length is known in advance):
    # tests, the access test's 3 instructions when needed, then "r0 = 1; exit".
    access_len = 3 if allowed != 7 else 0
    length = len(tests) + access_len + 2
    for op, reg, value in tests:
        block.append(_insn(op, reg, off=length - len(block) - 1, imm=value))
    if access_len:
        # r1 = r3 & ~allowed: any access asked beyond the rule's leaves bits set.
        block += [_insn(_MOV64X, 1, 3), _insn(_AND32, 1, imm=~allowed)]
        block.append(_insn(_JNE_K, 1, off=length - len(block) - 1, imm=0))
    return [*block, _insn(_MOV64K, 0, imm=1), _insn(_EXIT)]


# Programs loaded by this process, by their code: a lab's hosts mostly share one list, and a
# program attached to many groups is loaded (and verified) once.
_loaded: dict[bytes, int] = {}


def attach_v2(group_dir: Path, rules: list[Rule]) -> None:
    """Attach the program of `rules` to the group (replacing one attached before, on restart).
    Attached without BPF_F_ALLOW_OVERRIDE or _MULTI, so nothing below the group (a host given
    SYS_ADMIN and bpf) can attach a program of its own that would widen the list."""
    code = program(rules)
    if code not in _loaded:
        _loaded[code] = _bpf_prog_load(code)
    fd = os.open(group_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = struct.pack("<IIII", fd, _loaded[code], _BPF_CGROUP_DEVICE, 0).ljust(64, b"\0")
        _bpf(_BPF_PROG_ATTACH, attr, f"attach the device filter to {group_dir}")
    finally:
        os.close(fd)


def _bpf_prog_load(code: bytes) -> int:
    """Load quietly; only a refused program is loaded again with the verifier's log, to say why
    (a log too small for a verbose success is itself an error, ENOSPC)."""
    try:
        return _load(code, 0)
    except MachineError:
        return _load(code, 1)


def _load(code: bytes, log_level: int) -> int:
    insns = ctypes.create_string_buffer(code, len(code))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 16 if log_level else 1)
    attr = struct.pack("<IIQQIIQ", _BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8, ctypes.addressof(insns),
                       ctypes.addressof(license), log_level, len(log) if log_level else 0,
                       ctypes.addressof(log) if log_level else 0).ljust(128, b"\0")
    return _bpf(_BPF_PROG_LOAD, attr, "load the device filter", log if log_level else None)


def _bpf(cmd: int, attr: bytes, what: str, log: ctypes.Array[ctypes.c_char] | None = None) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise MachineError(f"no bpf(2) number known for {platform.machine()}: cannot filter devices")
    libc = _libc()
    buf = ctypes.create_string_buffer(attr, len(attr))
    result = libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        detail = log.value.decode(errors="replace").strip().splitlines()[-1:] if log is not None else []
        raise MachineError(f"cannot {what}: {os.strerror(err)}"
                           + (f" ({detail[0]})" if detail else "")
                           + (" (the kernel needs CONFIG_CGROUP_BPF)" if err == errno.EINVAL else ""))
    return int(result)


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
