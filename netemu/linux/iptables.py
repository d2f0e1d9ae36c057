"""iptables and ip6tables through their save and restore commands, for either backend.

A machine can hold two iptables firewalls at once: the legacy one (x_tables; the kernel lists
its loaded tables in /proc/net/ip_tables_names) and iptables-nft's (nftables tables named
`ip filter`, `ip6 filter`, ...). A packet must pass both. Each is changed here with one
`*-restore --noflush` per family and backend (one process, one transaction), never flushed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from netemu.errors import MachineError

FAMILIES = (4, 6)
BACKENDS = ("nft", "legacy")
LEGACY_TABLES = {4: Path("/proc/net/ip_tables_names"), 6: Path("/proc/net/ip6_tables_names")}
# The tables iptables-nft makes in the nftables families ip and ip6: they are iptables', not for `nft` to change.
NFT_TABLES = ("filter", "nat", "mangle", "raw", "security")


@dataclass(frozen=True)
class Tool:
    """The save and restore commands of one family (4 or 6) and backend ("nft" or "legacy")."""

    family: int
    backend: str
    save: str
    restore: str

    @property
    def name(self) -> str:
        return f"{'iptables' if self.family == 4 else 'ip6tables'}-{self.backend}"


def tool(family: int, backend: str) -> Tool | None:
    """The commands for that family and backend, or None when the machine has none.
    Debian installs both backends' commands by name (iptables-nft-save, iptables-legacy-save);
    elsewhere the plain iptables-save may be the only one, and says which backend it is."""
    base = "iptables" if family == 4 else "ip6tables"
    for stem in (f"{base}-{backend}", base):
        save, restore = shutil.which(f"{stem}-save"), shutil.which(f"{stem}-restore")
        if save and restore and (stem != base or backend_of(restore) == backend):
            return Tool(family, backend, save, restore)
    return None


def backend_of(binary: str) -> str:
    # The commands are links to one multi-call binary whose name says the backend; an iptables
    # older than 1.8 has no nft backend and prints no backend in its version.
    real = os.path.basename(os.path.realpath(binary))
    for backend in BACKENDS:
        if backend in real:
            return backend
    version = subprocess.run([binary, "-V"], capture_output=True, text=True).stdout
    return "nft" if "nf_tables" in version else "legacy"


def legacy_tables(family: int) -> set[str]:
    """The legacy tables the kernel holds now. Read from /proc, because any legacy command
    would load the table's module (and so create the table) just by asking."""
    try:
        return set(LEGACY_TABLES[family].read_text().split())
    except OSError:
        return set()


def save(tool: Tool, table: str) -> str:
    """One table as iptables-save prints it; empty when the machine has no such table. Asked for
    by name (-t), iptables-nft-save prints a missing table's built-in chains as if they existed,
    and the legacy one loads its module: so every table is saved, and the one is cut out."""
    lines = _run([tool.save], tool).splitlines()
    if f"*{table}" not in lines:
        return ""
    start = lines.index(f"*{table}")
    return "\n".join(lines[start:lines.index("COMMIT", start) + 1]) + "\n"


def restore(tool: Tool, script: str) -> None:
    """Apply `script` (iptables-save syntax) on top of what exists: nothing is flushed. -w waits
    for the legacy backend's lock instead of failing while another program holds it."""
    _run([tool.restore, "--noflush", "-w"], tool, script)


def script(table: str, lines: list[str]) -> str:
    return "\n".join([f"*{table}", *lines, "COMMIT"]) + "\n"


def chains(saved: str) -> set[str]:
    """The chain names of one table in iptables-save output."""
    return {line[1:].split()[0] for line in saved.splitlines() if line.startswith(":")}


def rules(saved: str) -> list[str]:
    """The rules of one table in iptables-save output, each as its `-A CHAIN ...` line."""
    return [line for line in saved.splitlines() if line.startswith("-A ")]


COMMENT = re.compile(r'-m comment --comment (?:"([^"]*)"|(\S+))')


def comment(rule: str) -> str | None:
    """The text of a saved rule's comment (iptables-save quotes it), or None."""
    match = COMMENT.search(rule)
    return None if match is None else match.group(1) or match.group(2)


def _run(argv: list[str], tool: Tool, script: str | None = None) -> str:
    result = subprocess.run(argv, input=script, capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
        raise MachineError(f"{os.path.basename(argv[0])} ({tool.name}): {reason}")
    return result.stdout
