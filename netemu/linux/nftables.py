"""nftables through the `nft` command: a whole table is loaded in one atomic transaction.

netemu keeps each lab's rules in a table of its own (netemu-LAB, family inet) so that removing
the lab is one `delete table`, and never touches a rule of the machine's or of another lab."""

from __future__ import annotations

import json
import shutil
import subprocess

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


def load(script: str) -> None:
    """Apply a ruleset script atomically: all of it or nothing."""
    _nft(["-f", "-"], script)


def tables() -> list[tuple[str, str]]:
    """(family, name) of every table on the machine (in this network namespace)."""
    if shutil.which("nft") is None:
        return []
    data = json.loads(_nft(["-j", "list", "tables"]))
    return [(t["table"]["family"], t["table"]["name"]) for t in data.get("nftables", []) if "table" in t]


def list_table(family: str, name: str) -> str:
    return _nft(["list", "table", family, name])


def delete_table(family: str, name: str) -> None:
    _nft(["delete", "table", family, name])
