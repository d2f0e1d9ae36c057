"""Linux capabilities by name, and the sets a host gets.

A host's set is written once as a 64-bit mask and applied by netemu-init to the bounding,
permitted and effective sets of the host's PID 1 and of every `netemu exec` process (inheritable
and ambient are emptied, as Docker does since version 23). Root inside then holds exactly these,
in its own user namespace or the machine's, and cannot get any other back: a capability dropped
from the bounding set is gone for the process and all its descendants."""

from __future__ import annotations

from netemu.capability_names import ALL, NAMES

NUMBERS = {name: number for number, name in enumerate(NAMES)}

# Docker's default set, plus NET_ADMIN: a host of a network lab
# configures its own interfaces, addresses, routes and firewall, all inside its own namespace.
DOCKER_DEFAULT = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
    "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip
HOST_DEFAULT = (*DOCKER_DEFAULT, "NET_ADMIN")


def mask(names: tuple[str, ...] | list[str] | set[str]) -> int:
    value = 0
    for name in names:
        value |= 1 << NUMBERS[name]
    return value


def names_of(value: int) -> list[str]:
    return [name for number, name in enumerate(NAMES) if value >> number & 1]


def own_bounding_set() -> int:
    """The capabilities netemu itself may pass on: a host can get no more than the machine's
    root that starts it has (in a container or a CI sandbox that may be less than every one)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return (1 << len(NAMES)) - 1


def host_set(privileged: bool, add: list[str], drop: list[str], default: list[str] | None = None) -> int:
    """Docker's rule: start from the default set (every capability when privileged), remove
    `cap_drop` (ALL empties it), then add `cap_add` (ALL gives every one)."""
    everything = own_bounding_set()
    value = everything if privileged else mask(HOST_DEFAULT if default is None else default)
    if ALL in drop:
        value = 0
    value &= ~mask([n for n in drop if n != ALL])
    if ALL in add:
        value = everything
    return (value | mask([n for n in add if n != ALL])) & everything
