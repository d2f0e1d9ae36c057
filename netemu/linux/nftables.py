"""nftables through the `nft` command: a whole table is loaded in one atomic transaction.

netemu keeps each lab's rules in a table of its own (netemu-LAB, family inet) so that removing
the lab is one `delete table`, and never changes a rule of the machine's or of another lab. The
one exception is additive: accept rules for the lab's bridges at the top of the machine's forward
chains that would drop them, each with the comment netemu:LAB (runtime/firewall.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from netemu.errors import MachineError

TABLE_PREFIX = "netemu-"


def _nft(args: list[str], script: str | None = None) -> str:
    binary = shutil.which("nft")
    if binary is None:
        raise MachineError("nft (package nftables) is not installed: NAT and published ports need it")
    result = subprocess.run([binary, *args], input=script, capture_output=True, text=True)
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[:1] or ["nft failed"]
        if "Protocol not supported" in result.stderr or "No such file" in result.stderr:
            raise MachineError(f"the kernel lacks nftables support (nf_tables, nft_nat): {reason[0]}")
        raise MachineError(f"nft: {reason[0]}")
    return result.stdout


def available() -> bool:
    return shutil.which("nft") is not None


def load(script: str) -> None:
    """Apply a ruleset script atomically: all of it or nothing."""
    _nft(["-f", "-"], script)


def load_json(commands: list[dict[str, Any]]) -> None:
    """Apply commands in nft's JSON syntax ({"insert": {"rule": ...}}, ...) atomically. JSON
    names tables and chains whatever they are called; the text syntax cannot name one that is
    also a keyword (a chain called "fwd"), which other programs may have made through JSON."""
    _nft(["-j", "-f", "-"], json.dumps({"nftables": commands}))


def tables() -> list[tuple[str, str]]:
    """(family, name) of every table on the machine (in this network namespace)."""
    if shutil.which("nft") is None:
        return []
    data = json.loads(_nft(["-j", "list", "tables"]))
    return [(t["table"]["family"], t["table"]["name"]) for t in data.get("nftables", []) if "table" in t]


def ruleset() -> list[dict[str, Any]]:
    """Every object of the machine's ruleset, as `nft -j` lists them: {"table": {...}},
    {"chain": {...}} (a base chain has "hook" and "policy"), {"rule": {...}} (with "handle",
    "expr" and, when it has one, "comment"). Empty without nft."""
    if shutil.which("nft") is None:
        return []
    return json.loads(_nft(["-j", "list", "ruleset"])).get("nftables", [])


def list_table(family: str, name: str) -> str:
    return _nft(["list", "table", family, name])


def delete_table(family: str, name: str) -> None:
    _nft(["delete", "table", family, name])
