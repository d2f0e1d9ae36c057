"""Linux capability names in the kernel's number order (linux/capability.h).

Shared by the file format (netemu/topology checks `cap_add` and `cap_drop` against it, without
touching the kernel) and netemu/linux/capabilities.py (which turns names into masks), as
errors.py is shared: plain data, no import."""

NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
ALL = "ALL"  # Docker's word for every capability, in cap_add and cap_drop


def canonical(text: str) -> str:
    """`net_admin`, `CAP_NET_ADMIN` and `NET_ADMIN` are one capability (Docker takes all three);
    ValueError names an unknown one."""
    name = text.strip().upper().removeprefix("CAP_")
    if name != ALL and name not in NAMES:
        raise ValueError(f"unknown capability '{text}'")
    return name
