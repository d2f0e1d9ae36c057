"""Whether this process may do what netemu does: checked first, so that a user without root gets
one clear sentence (exit 3) instead of the first EPERM of a half-made lab or probe."""

from __future__ import annotations

import os

from netemu.errors import MachineError


def require_root() -> None:
    if os.geteuid() != 0:
        raise MachineError("netemu needs root (it creates namespaces, links and cgroups): run it with sudo")
