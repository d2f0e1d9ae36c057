"""The one renderer: what the command line prints, from the facade's typed results. Tables for
people (aligned columns, `-` for nothing), JSON for programs (`--format json`: each result's
`to_json()`, or a dataclass's fields). Check reports and reachability grids are rendered by
netemu.probe.report with the same `table`."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netemu.images import ImageInfo
    from netemu.runtime.cleanup import Removed
    from netemu.runtime.inspection import LabSummary, LabView, NodeSummary, NodeView


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [tuple(headers), *rows]]
    return "\n".join(lines)


def as_json(value: Any) -> str:
    return json.dumps(_plain(value), indent=2, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    """Views and reports by their to_json()/to_dict(), dataclasses by their fields, containers through."""
    for method in ("to_json", "to_dict"):
        if hasattr(value, method):
            return getattr(value, method)()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# --- units ------------------------------------------------------------------------------------
def age(created: float | None) -> str:
    if not created:
        return "-"
    seconds = max(0, int(time.time() - created))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def memory(n: float) -> str:
    """Memory as the kernel counts it (powers of 1024)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}".removesuffix(".0") + unit
        n /= 1024
    return f"{n:.1f}GiB"


def size(n: float) -> str:
    """Sizes as `docker images` shows them (powers of 1000)."""
    if n < 1000:
        return f"{n:.0f}B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f}{unit}"
    return f"{n / 1000:.1f}GB"


# --- ps ---------------------------------------------------------------------------------------
def labs_table(labs: list[LabSummary]) -> str:
    return table(["LAB", "STATUS", "NODES", "CREATED", "FILE"],
                 [(e.name, e.status, f"{e.alive}/{e.nodes}", age(e.created), e.file or "") for e in labs])


def nodes_table(nodes: list[NodeSummary]) -> str:
    return table(["LAB", "NODE", "PID", "STATE", "NETNS"],
                 [(n.lab, n.node, str(n.pid or "-"), n.state, n.netns or "-") for n in nodes])


def images_table(infos: list[ImageInfo]) -> str:
    return table(["NAME", "IMAGE ID", "SIZE", "LAYERS"],
                 [(i.name, i.short_id, size(i.size), str(len(i.layers))) for i in infos])


def removed_line(name: str, removed: Removed) -> str:
    return (f"removed lab '{name}': {removed.processes} processes, {len(removed.links)} links, "
            f"{len(removed.netns)} netns names, {len(removed.cgroups)} cgroups, "
            f"{len(removed.directories)} directories")


# --- inspect ----------------------------------------------------------------------------------
def inspect_text(view: LabView) -> str:
    """The lab's line, then tables of nodes, interfaces, routes and links. Loopback and IPv6
    link-local addresses and routes are left out (JSON has them all)."""
    record = view.record
    blocks = [f"lab {view.name}: {view.status}, {len(view.nodes)} nodes, {len(view.links)} links, "
              f"created {age(record.created)} ({record.file or 'no file'})"]
    nodes = list(view.nodes.values())
    for headers, rows in (_node_rows(nodes), _interface_rows(nodes), _route_rows(nodes), _link_rows(view)):
        if rows:
            blocks.append(table(headers, rows))
    return "\n\n".join(blocks)


def _node_rows(nodes: list[NodeView]) -> tuple[list[str], list[tuple[str, ...]]]:
    rows = []
    for node in nodes:
        extra = node.record.extra
        rows.append((node.record.name, str(node.record.pid or "-"), node.state, node.netns or "-",
                     extra.image or "-", _limits_text(extra.limits),
                     memory(node.usage["memory_bytes"]) if "memory_bytes" in node.usage else "-",
                     str(node.usage.get("pids", "-"))))
    return ["NODE", "PID", "STATE", "NETNS", "IMAGE", "LIMITS", "MEMORY", "PIDS"], rows


def _limits_text(limits: Any) -> str:
    parts = []
    if limits.cpus is not None:
        parts.append(f"cpus {limits.cpus:g}")
    if limits.memory is not None:
        parts.append(f"memory {memory(limits.memory)}")
    if limits.pids is not None:
        parts.append(f"pids {limits.pids}")
    return ", ".join(parts) or "-"


def _link_local(text: str | None) -> bool:
    return bool(text) and str(text).lower().startswith("fe80:")


def _interface_rows(nodes: list[NodeView]) -> tuple[list[str], list[tuple[str, ...]]]:
    rows = []
    for node in nodes:
        for iface in node.interfaces:
            if iface.name == "lo":
                continue
            shown = [a for a in iface.addresses if not _link_local(a)]
            rows.append((node.record.name, iface.name, iface.state, str(iface.mtu), " ".join(shown) or "-"))
    return ["NODE", "IF", "STATE", "MTU", "ADDRESSES"], rows


def _route_rows(nodes: list[NodeView]) -> tuple[list[str], list[tuple[str, ...]]]:
    """One row per next hop: an ECMP route shows each of its hops (with its weight when it has one)."""
    rows = []
    for node in nodes:
        for route in node.routes:
            if _link_local(route.dst):
                continue
            multipath = len(route.nexthops) > 1
            for hop in route.nexthops:
                via = hop.via or "-"
                if multipath:
                    via += f" (weight {hop.weight})" if hop.weight != 1 else " (ecmp)"
                rows.append((node.record.name, route.dst, via, hop.dev or "-"))
    return ["NODE", "ROUTE", "VIA", "DEV"], rows


def _link_rows(view: LabView) -> tuple[list[str], list[tuple[str, ...]]]:
    rows = []
    for entry in view.links:
        bad = [f"{end} {state}" for end, state in entry.state.items() if state not in ("up", "n/a")]
        impair = ", ".join(f"{k} {v}" for k, v in (entry.record.impair or {}).items())
        rows.append((" -- ".join(entry.record.endpoints), "; ".join(bad) or "up", str(entry.record.mtu or "-"),
                     impair or "-"))
    return ["LINK", "STATE", "MTU", "IMPAIRMENT"], rows
