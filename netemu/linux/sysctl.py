"""Reading and writing sysctls, on the machine or inside a host's namespaces."""

from __future__ import annotations

from pathlib import Path

from netemu.errors import InputError
from netemu.linux import namespaces

PROC_SYS = Path("/proc/sys")


def _path(key: str) -> Path:
    return PROC_SYS / key.replace(".", "/")


def read(key: str) -> str:
    return _path(key).read_text().strip()


def write(key: str, value: str) -> None:
    _path(key).write_text(str(value))


def write_in(pid: int, values: dict[str, str]) -> None:
    """Set sysctls in the namespaces of host `pid`: /proc/sys/net and the IPC keys resolve to
    the namespaces of the task that opens them, so entering them is enough."""
    if not values:
        return
    kinds = ("net",) if all(key.startswith("net.") for key in values) else ("net", "ipc", "uts")
    with namespaces.entered(pid, kinds):
        for key, value in values.items():
            _write_checked(key, value)


def _write_checked(key: str, value: str) -> None:
    """The file cannot know which sysctls this kernel has inside a namespace, nor which values
    it takes: say which, instead of an internal error."""
    try:
        write(key, value)
    except (FileNotFoundError, PermissionError):
        raise InputError(f"sysctl {key} does not exist, or cannot be set, inside a host on this kernel") from None
    except OSError as e:
        raise InputError(f"sysctl {key}: the kernel refused the value {value!r} ({e.strerror})") from None
