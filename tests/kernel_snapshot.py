"""What netemu-owned (or netemu-like) objects exist on the machine right now, read from the
kernel and the filesystem, never from netemu's own code."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
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
        # os.walk skips what vanishes while it reads: other labs may be going down meanwhile.
        found.update(directory for directory, _subdirs, _files in os.walk(base))
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


def forward_rules() -> set[str]:
    """Rules tagged netemu: in the machine's firewalls outside netemu's own tables: iptables and
    ip6tables of both backends (the legacy one only when the kernel holds its filter table:
    asking would create it), and native nftables chains ("TABLE: RULE")."""
    found = set()
    for family, save in (("ip", "iptables"), ("ip6", "ip6tables")):
        backends = ["nft"]
        names = Path(f"/proc/net/{family}_tables_names")
        if names.exists() and "filter" in names.read_text().split():
            backends.append("legacy")
        for backend in backends:
            try:
                text = _run(f"{save}-{backend}-save", "-t", "filter")
            except (OSError, subprocess.CalledProcessError):
                continue
            found.update(f"{save}-{backend}: {line}" for line in text.splitlines() if '--comment "netemu:' in line)
    table = ""
    for line in nft_ruleset().splitlines():
        if line.startswith("table "):
            table = line.rstrip(" {")
        elif 'comment "netemu:' in line and not line.strip().startswith("comment ") and "netemu-" not in table:
            found.add(f"{table}: {line.strip()}")
    return found


def nft_ruleset() -> str:
    try:
        return _run("nft", "list", "ruleset")
    except (OSError, subprocess.CalledProcessError):
        return ""


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
        "forward rules": forward_rules(),
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
        "forward rules": forward_rules(),
    }


def diff(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, dict[str, set[str]]]:
    changes = {}
    for key in before:
        added, gone = after[key] - before[key], before[key] - after[key]
        if added or gone:
            changes[key] = {"added": added, "removed": gone}
    return changes


# Machine-wide sysctls netemu may raise while a lab runs (runtime/hostsettings.py).
HOST_SYSCTLS = ("net.ipv4.ip_forward", *(f"net.{fam}.neigh.default.gc_thresh{i}"
                                         for fam in ("ipv4", "ipv6") for i in (1, 2, 3)))


def host_sysctls() -> set[str]:
    return {f"{key}={Path('/proc/sys', key.replace('.', '/')).read_text().strip()}" for key in HOST_SYSCTLS}


def sysctl_claimants() -> set[str]:
    """Labs that hold a claim on the machine's sysctls right now (the host-settings ledger)."""
    try:
        return set(json.loads((RUN_DIR / "host-sysctls.json").read_text()).get("labs", {}))
    except (FileNotFoundError, ValueError):
        return set()


def shared_machine() -> bool:
    """Other developers' labs may come and go while this suite runs (NETEMU_TEST_SHARED_MACHINE)."""
    return bool(os.environ.get("NETEMU_TEST_SHARED_MACHINE"))


def diff_mine(before: dict[str, set[str]], after: dict[str, set[str]],
              tokens: Iterable[str]) -> dict[str, dict[str, set[str]]]:
    """diff(), but on a shared machine only the entries that name one of `tokens` (lab names,
    and the hashed link names of those labs) count: other labs' objects come and go meanwhile."""
    changes = diff(before, after)
    if not shared_machine():
        return changes
    words = list(tokens)
    mine = {key: {side: {e for e in entries if any(w in e for w in words)} for side, entries in change.items()}
            for key, change in changes.items()}
    return {key: change for key, change in mine.items() if change["added"] or change["removed"]}


def is_root() -> bool:
    return os.geteuid() == 0
