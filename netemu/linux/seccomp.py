"""The seccomp filter of a confined host: which system calls it may not make, as a classic BPF
program that netemu-init installs in the host's PID 1 and in every `netemu exec` process.

The policy is Docker's default profile, written as a deny list: each refused call is listed
with the capability that unlocks it (Docker's profile lets a call through when the container
holds that capability; `None`: never, short of `privileged`). A refused call fails with EPERM,
as it would without the capability, so programs take their usual error path. The numbers are
the kernel's syscall table for each architecture (asm/unistd_64.h on x86_64,
asm-generic/unistd.h on aarch64); tests/unit/test_confinement.py checks them against the C
library headers of the machine.

A call made through another ABI (i386 or x32 on an x86_64 kernel) fails with ENOSYS: its
numbers are a different table, so the whole ABI is refused rather than half-filtered."""

from __future__ import annotations

import platform
import struct

from netemu.errors import MachineError

# name -> the capability that unlocks it (None: only `privileged`), with Docker's reasons.
POLICY: dict[str, str | None] = {
    # Mounts and namespaces: a new mount namespace or a mount could uncover what is masked.
    **dict.fromkeys(("mount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
                     "move_mount", "open_tree", "open_tree_attr", "mount_setattr", "unshare", "setns"),
                    "SYS_ADMIN"),
    # Machine-wide: swap, disk quotas, fanotify of every filesystem, BPF and perf of the kernel.
    **dict.fromkeys(("swapon", "swapoff", "quotactl", "quotactl_fd", "fanotify_init", "lookup_dcookie",
                     "bpf", "perf_event_open", "nfsservctl", "sysfs", "_sysctl", "ustat", "uselib"),
                    "SYS_ADMIN"),
    # Kernel modules and rebooting or replacing the kernel.
    **dict.fromkeys(("init_module", "finit_module", "delete_module", "create_module", "query_module",
                     "get_kernel_syms"), "SYS_MODULE"),
    **dict.fromkeys(("reboot", "kexec_load", "kexec_file_load"), "SYS_BOOT"),
    # The clock is not namespaced: setting it sets the machine's.
    **dict.fromkeys(("settimeofday", "clock_settime", "clock_adjtime"), "SYS_TIME"),
    "acct": "SYS_PACCT",
    **dict.fromkeys(("iopl", "ioperm"), "SYS_RAWIO"),
    **dict.fromkeys(("mbind", "set_mempolicy", "migrate_pages", "move_pages"), "SYS_NICE"),
    "syslog": "SYSLOG",
    "vhangup": "SYS_TTY_CONFIG",
    # open_by_handle_at reaches any file of a filesystem from any bind of it (the "shocker" escape).
    "open_by_handle_at": "DAC_READ_SEARCH",
    **dict.fromkeys(("kcmp", "userfaultfd"), "SYS_PTRACE"),
    # The kernel keyring is not namespaced; io_uring bypasses syscall filtering.
    **dict.fromkeys(("add_key", "keyctl", "request_key", "io_uring_setup", "io_uring_enter",
                     "io_uring_register"), None),
}
# clone with a namespace flag, and clone3 (its flags sit in memory a filter cannot read, so it
# answers ENOSYS and the C library falls back to clone), unless SYS_ADMIN.
CLONE_NAMESPACE_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

# A deny list lets through what it does not know: calls numbered above the last one reviewed
# (file_setattr, Linux 6.17; the same number on both architectures from 424 on) answer ENOSYS,
# as on an older kernel, until they are reviewed and added here.
LAST_REVIEWED = 469

# AUDIT_ARCH_* of linux/audit.h, and each architecture's numbers of the calls above.
ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000
TABLES: dict[str, dict[str, int]] = {
    "x86_64": {
        "mount": 165, "umount2": 166, "pivot_root": 155, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "move_mount": 429, "open_tree": 428, "open_tree_attr": 467, "mount_setattr": 442,
        "unshare": 272,
        "setns": 308, "swapon": 167, "swapoff": 168, "quotactl": 179, "quotactl_fd": 443,
        "fanotify_init": 300, "lookup_dcookie": 212, "bpf": 321, "perf_event_open": 298,
        "nfsservctl": 180, "sysfs": 139, "_sysctl": 156, "ustat": 136, "uselib": 134, "init_module": 175,
        "finit_module": 313, "delete_module": 176, "create_module": 174, "query_module": 178,
        "get_kernel_syms": 177, "reboot": 169, "kexec_load": 246, "kexec_file_load": 320,
        "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "acct": 163, "iopl": 172,
        "ioperm": 173, "mbind": 237, "set_mempolicy": 238, "migrate_pages": 256, "move_pages": 279,
        "syslog": 103, "vhangup": 153, "open_by_handle_at": 304, "add_key": 248, "keyctl": 250,
        "request_key": 249, "kcmp": 312, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "clone": 56, "clone3": 435,
    },
    "aarch64": {
        "mount": 40, "umount2": 39, "pivot_root": 41, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "move_mount": 429, "open_tree": 428, "open_tree_attr": 467, "mount_setattr": 442,
        "unshare": 97,
        "setns": 268, "swapon": 224, "swapoff": 225, "quotactl": 60, "quotactl_fd": 443,
        "fanotify_init": 262, "lookup_dcookie": 18, "bpf": 280, "perf_event_open": 241,
        "nfsservctl": 42, "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142,
        "kexec_load": 104, "kexec_file_load": 294, "settimeofday": 170, "clock_settime": 112,
        "clock_adjtime": 266, "acct": 89, "mbind": 235, "set_mempolicy": 237, "migrate_pages": 238,
        "move_pages": 239, "syslog": 116, "vhangup": 58, "open_by_handle_at": 265, "add_key": 217,
        "keyctl": 219, "request_key": 218, "kcmp": 272, "userfaultfd": 282, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "clone": 220, "clone3": 435,
    },
}  # fmt: skip

# Classic BPF (linux/filter.h, linux/seccomp.h).
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
EPERM, ENOSYS = 1, 38
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (arg0's low half: little-endian)


def machine_arch() -> str:
    arch = platform.machine()
    if arch not in TABLES:
        raise MachineError(f"netemu has no seccomp syscall table for this architecture ({arch}): "
                           "use `privileged: true` hosts")
    return arch


def denied(caps: set[str], arch: str) -> list[str]:
    """The calls refused to a host holding `caps`, those its architecture has."""
    return [name for name, unlock in POLICY.items() if name in TABLES[arch] and unlock not in caps]


def program(caps: set[str], arch: str | None = None) -> bytes:
    """The filter as struct sock_filter[] bytes, for netemu-init's --seccomp."""
    arch = arch or machine_arch()
    table = TABLES[arch]
    insns: list[tuple[int, int | str, int | str, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH), (_JEQ_K, 0, "enosys", ARCH[arch]), (_LD_W_ABS, 0, 0, _NR)]
    if arch == "x86_64":
        insns.append((_JGE_K, "enosys", 0, X32_SYSCALL_BIT))
    insns.append((_JGE_K, "enosys", 0, LAST_REVIEWED + 1))
    insns += [(_JEQ_K, "eperm", 0, table[name]) for name in denied(caps, arch)]
    if "SYS_ADMIN" not in caps:
        insns += [(_JEQ_K, "enosys", 0, table["clone3"]), (_JEQ_K, 0, "allow", table["clone"]),
                  (_LD_W_ABS, 0, 0, _ARG0), (_JSET_K, "eperm", "allow", CLONE_NAMESPACE_FLAGS)]
    labels = {"allow": len(insns), "eperm": len(insns) + 1, "enosys": len(insns) + 2}
    insns += [(_RET_K, 0, 0, _RET_ALLOW), (_RET_K, 0, 0, _RET_ERRNO | EPERM), (_RET_K, 0, 0, _RET_ERRNO | ENOSYS)]
    return b"".join(_encode(i, insn, labels) for i, insn in enumerate(insns))


def _encode(index: int, insn: tuple[int, int | str, int | str, int], labels: dict[str, int]) -> bytes:
    """One sock_filter; a jump to a label becomes the offset from the next instruction."""
    code, jt, jf, k = insn
    offsets = [labels[j] - index - 1 if isinstance(j, str) else j for j in (jt, jf)]
    if not all(0 <= off <= 255 for off in offsets):
        raise ValueError(f"seccomp jump out of range at instruction {index}")
    return struct.pack("=HBBI", code, offsets[0], offsets[1], k)
