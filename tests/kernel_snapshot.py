"""What netemu-owned (or netemu-like) objects exist on the machine right now, read from the
kernel and the filesystem, never from netemu's own code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

RUN_DIR = Path("/run/netemu")
LABS_DIR = Path("/var/lib/netemu/labs")


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def netns() -> set[str]:
    return {line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()}


def links() -> set[str]:
    data = json.loads(_run("ip", "-j", "-d", "link", "show"))
    return {f"{d['ifname']}|{d.get('ifalias', '')}" for d in data}


def netemu_links() -> set[str]:
    return {entry for entry in links() if "|netemu:" in entry or entry.startswith(("ne-", "nv"))}


def cgroups() -> set[str]:
    found = set()
    root = Path("/sys/fs/cgroup")
    for hierarchy in root.iterdir():
        base = hierarchy / "netemu"
        if base.is_dir():
            found.update(str(p) for p in [base, *base.rglob("*")] if p.is_dir())
    if (root / "netemu").is_dir():  # pure v2
        found.add(str(root / "netemu"))
    return found


def processes() -> set[str]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "netemu-init" in cmdline and " run " in cmdline and stat != "Z":
            found.add(f"{entry.name} {cmdline}")
    return found


def mounts() -> set[str]:
    text = Path("/proc/mounts").read_text()
    return {line for line in text.splitlines() if "netemu" in line or line.startswith("overlay ")}


def state_entries() -> set[str]:
    found = set()
    if RUN_DIR.is_dir():
        found.update(f"run:{p.name}" for p in RUN_DIR.iterdir())
    if LABS_DIR.is_dir():
        found.update(f"lib:{p.name}" for p in LABS_DIR.iterdir())
    return found


def nft_tables() -> set[str]:
    try:
        return {line for line in _run("nft", "list", "tables").splitlines() if "netemu" in line}
    except (OSError, subprocess.CalledProcessError):
        return set()


def snapshot() -> dict[str, set[str]]:
    """Everything that must be identical before a lab and after its removal."""
    return {
        "netns": netns(),
        "links": links(),
        "cgroups": cgroups(),
        "processes": processes(),
        "mounts": mounts(),
        "state": state_entries(),
        "nft": nft_tables(),
    }


def leftovers() -> dict[str, set[str]]:
    """netemu objects present now: must be empty when no lab runs."""
    return {
        "netns": {n for n in netns() if n.startswith("netemu-")},
        "links": netemu_links(),
        "cgroups": cgroups(),
        "processes": processes(),
        "mounts": {m for m in mounts() if "netemu" in m},
        "state": {s for s in state_entries() if s != "run:host-sysctls.json"} | (
            {"run:host-sysctls.json"} if (RUN_DIR / "host-sysctls.json").exists() else set()),
        "nft": nft_tables(),
    }


def diff(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, dict[str, set[str]]]:
    changes = {}
    for key in before:
        added, gone = after[key] - before[key], before[key] - after[key]
        if added or gone:
            changes[key] = {"added": added, "removed": gone}
    return changes


def is_root() -> bool:
    return os.geteuid() == 0
