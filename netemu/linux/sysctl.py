"""Reading and writing sysctls, on the machine or inside a host's namespaces."""

from __future__ import annotations

from pathlib import Path

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
            write(key, value)
