"""Where netemu keeps things on the machine, and the names of the kernel objects it makes.

Every name is derived from the lab's name, so `down` and `clean` can find every object of a lab
from the kernel alone, even when the state file was never written (a crash during `up`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from netemu.errors import InputError, one_line
from netemu.linux import files
from netemu.topology import LAB_NAME_MAX, NAME_RE
from netemu.topology.model import Network

RUN_DIR = Path(os.environ.get("NETEMU_RUN_DIR", "/run/netemu"))  # state files and locks
LIB_DIR = Path(os.environ.get("NETEMU_LIB_DIR", "/var/lib/netemu"))  # writable layers
LABS_LIB_DIR = LIB_DIR / "labs"
# Everything below RUN_DIR and LIB_DIR is root's alone: a local user must not read a lab's state,
# reach a host's files or run a setuid binary of an image. Nothing non-root needs a way through:
# netemu-init reaches layers and binds while it is still the machine's root.
PRIVATE_DIR = files.PRIVATE_DIR

CGROUP_ROOT = "netemu"
NETNS_PREFIX = "netemu-"
IFNAME_MAX = 15
NAME_MAX = 255  # one path component


def is_lab_name(name: str) -> bool:
    """A name `up` could have given a lab (the file format's rule)."""
    return len(name) <= LAB_NAME_MAX and NAME_RE.fullmatch(name) is not None


def _component(name: str) -> str:
    """A lab or node name about to become a path component. `netemu down ..` (or a netns or
    alias naming lab '..' or '') would otherwise reach the root cgroup, whose processes are
    every process of the machine, and the whole of /run or /var/lib/netemu."""
    if (name in ("", ".", "..") or "/" in name or len(name.encode("utf-8", "surrogatepass")) > NAME_MAX
            or not name.isprintable()):
        raise InputError(one_line(f"'{name[:100]}' is not a lab name"))
    return name


def run_dir() -> Path:
    """RUN_DIR, made or tightened to 0700."""
    return files.private_dir(RUN_DIR, PRIVATE_DIR)


def private_lib_dirs() -> None:
    """LIB_DIR and the directory of the labs' layers, made or tightened to 0700."""
    for directory in (LIB_DIR, LABS_LIB_DIR):
        files.private_dir(directory, PRIVATE_DIR)


def state_dir(lab: str) -> Path:
    return RUN_DIR / _component(lab)


def layers_dir(lab: str, node: str | None = None) -> Path:
    return LABS_LIB_DIR / _component(lab) if node is None else LABS_LIB_DIR / _component(lab) / _component(node)


def cgroup_path(lab: str, node: str | None = None) -> str:
    lab = _component(lab)
    return f"{CGROUP_ROOT}/{lab}" if node is None else f"{CGROUP_ROOT}/{lab}/{cgroup_component(node)}"


# Files of a cgroup directory whose names a node could have: every v2 file and most v1 ones
# hold a '.', which node names may now hold too (r1.site, cpu.max); these three v1 files do not.
_CGROUP_FILES = frozenset({"tasks", "notify_on_release", "release_agent"})


def cgroup_component(node: str) -> str:
    """A node's cgroup directory, beside the lab group's control files. A name of the lab
    alphabet ([a-z0-9-], never one of those files) stays as it is, so groups look as they
    always did; any other (PC1, r1.site, srl_1, cpu.max, tasks) gets a '_' in front, which no
    control file starts with and no node name does (node names start with a letter or digit),
    so two nodes never share a group and no node is a control file."""
    name = _component(node)
    return name if NAME_RE.fullmatch(name) and name not in _CGROUP_FILES else "_" + name


def netns_prefix(lab: str) -> str:
    # "." cannot occur in lab names, so one lab's prefix never matches another lab (node names
    # may hold dots: the lab is what comes before the first one).
    return f"{NETNS_PREFIX}{_component(lab)}."


def netns_name(lab: str, node: str) -> str:
    """The `ip netns` name of a node: node names are case-sensitive file names there, and
    the loader refuses names that only differ in case, so none collide either way."""
    return netns_prefix(lab) + _component(node)


def lab_of_netns(name: str) -> str | None:
    if not name.startswith(NETNS_PREFIX) or "." not in name:
        return None
    lab = name[len(NETNS_PREFIX):].split(".", 1)[0]
    return lab if is_lab_name(lab) else None  # netemu-..x is nobody's: never a lab to remove


def alias(lab: str, detail: str) -> str:
    """The tag on every link netemu makes in the machine's namespace."""
    return f"netemu:{lab}:{detail}"


def lab_of_alias(value: str) -> str | None:
    parts = value.split(":")
    if len(parts) >= 3 and parts[0] == "netemu" and is_lab_name(parts[1]):
        return parts[1]
    return None


def _short_hash(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()


def bridge_name(lab: str, network: str) -> str:
    # "." is in neither kind of name: lab "a" with network "b-c" and lab "a-b" with "c" differ.
    readable = f"ne-{lab}.{network}"
    return readable if len(readable) <= IFNAME_MAX else "ne-" + _short_hash(lab, network)[:12]


def network_bridge(lab: str, network: Network) -> str:
    """The bridge of a bridge-driver network: the machine's own one it joins (`bridge:`), or
    the one netemu makes for it."""
    return network.bridge if network.bridge is not None else bridge_name(lab, network.name)


def host_veth_name(lab: str, node: str, iface: str) -> str:
    """The machine-side end of a host's link to a bridge: unique across labs, at most 15 chars."""
    return "nv" + _short_hash(lab, node, iface)[:13]
