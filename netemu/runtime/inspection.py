"""What `netemu inspect` shows: lab.inspect's record, interfaces, addresses and routes, plus
what the kernel says right now about each link's ends and each host's cgroup usage."""

from __future__ import annotations

from typing import Any

from netemu.linux import cgroups, netlink
from netemu.runtime import lab

# The files that count what a group uses, per cgroup version (v1 on hybrid machines).
USAGE_FILES = {
    "memory_bytes": ("memory", {1: "memory.usage_in_bytes", 2: "memory.current"}),
    "pids": ("pids", {1: "pids.current", 2: "pids.current"}),
}


def inspect(name: str) -> dict[str, Any]:
    data = lab.inspect(name)
    for info in data["nodes"].values():
        info["usage"] = cgroup_usage(info["cgroup"]) if info.get("alive") and info.get("cgroup") else {}
    machine = _machine_link_states(data["links"])
    data["links"] = [dict(entry, state=_end_states(entry, data["nodes"], machine)) for entry in data["links"]]
    return data


def cgroup_usage(relpath: str) -> dict[str, int]:
    found = {}
    for key, (controller, files) in USAGE_FILES.items():
        hierarchy = cgroups.layout().for_controller(controller)
        if hierarchy is None:
            continue
        try:
            found[key] = int((hierarchy.mountpoint / relpath / files[hierarchy.version]).read_text())
        except (OSError, ValueError):
            continue  # the controller is not enabled for the group: nothing to report
    return found


def _machine_link_states(links: list[dict[str, Any]]) -> dict[str, str]:
    """State of the bridge-side veth ends, which live in the machine's namespace: each looked
    up by name, since the machine may hold many other links, changing all the time."""
    wanted = {entry["machine_side"] for entry in links if entry.get("machine_side")}
    if not wanted:
        return {}
    with netlink.Socket() as sock:
        return {name: link.state for name, link in sock.links_by_name(sorted(wanted)).items()}


def _end_states(entry: dict[str, Any], nodes: dict[str, Any], machine: dict[str, str]) -> dict[str, str]:
    """State of each end, keyed by the endpoint as the file writes it: the kernel's operstate
    (up, or down, also when only the peer was taken down: the end lost its carrier), `stopped`
    for a host that is not running, `missing` when the interface is gone. A network end reports
    its bridge port (`n/a` for macvlan, which has none)."""
    states = {}
    for endpoint in entry["endpoints"]:
        node, sep, iface = endpoint.partition(":")
        if not sep:
            side = entry.get("machine_side")
            states[endpoint] = machine.get(side, "missing") if side else "n/a"  # macvlan: no bridge port
            continue
        info = nodes.get(node, {})
        if not info.get("alive"):
            states[endpoint] = "stopped"
            continue
        found = [i["state"] for i in info.get("interfaces", []) if i["name"] == iface]
        states[endpoint] = found[0] if found else "missing"
    return states
