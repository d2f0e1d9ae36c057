"""Where netemu keeps things on the machine, and the names of the kernel objects it makes.

Every name is derived from the lab's name, so `down` and `clean` can find every object of a lab
from the kernel alone, even when the state file was never written (a crash during `up`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

RUN_DIR = Path(os.environ.get("NETEMU_RUN_DIR", "/run/netemu"))  # state files and locks
LIB_DIR = Path(os.environ.get("NETEMU_LIB_DIR", "/var/lib/netemu"))  # writable layers
LABS_LIB_DIR = LIB_DIR / "labs"

CGROUP_ROOT = "netemu"
NETNS_PREFIX = "netemu-"
IFNAME_MAX = 15


def state_dir(lab: str) -> Path:
    return RUN_DIR / lab


def layers_dir(lab: str, node: str | None = None) -> Path:
    return LABS_LIB_DIR / lab if node is None else LABS_LIB_DIR / lab / node


def cgroup_path(lab: str, node: str | None = None) -> str:
    return f"{CGROUP_ROOT}/{lab}" if node is None else f"{CGROUP_ROOT}/{lab}/{node}"


def netns_prefix(lab: str) -> str:
    # "." cannot occur in lab or node names, so one lab's prefix never matches another lab.
    return f"{NETNS_PREFIX}{lab}."


def netns_name(lab: str, node: str) -> str:
    return netns_prefix(lab) + node


def lab_of_netns(name: str) -> str | None:
    if not name.startswith(NETNS_PREFIX) or "." not in name:
        return None
    return name[len(NETNS_PREFIX):].split(".", 1)[0]


def alias(lab: str, detail: str) -> str:
    """The tag on every link netemu makes in the machine's namespace."""
    return f"netemu:{lab}:{detail}"


def lab_of_alias(value: str) -> str | None:
    parts = value.split(":")
    return parts[1] if len(parts) >= 3 and parts[0] == "netemu" else None


def _short_hash(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()


def bridge_name(lab: str, network: str) -> str:
    readable = f"ne-{lab}-{network}"
    return readable if len(readable) <= IFNAME_MAX else "ne-" + _short_hash(lab, network)[:12]


def host_veth_name(lab: str, node: str, iface: str) -> str:
    """The machine-side end of a host's link to a bridge: unique across labs, at most 15 chars."""
    return "nv" + _short_hash(lab, node, iface)[:13]
