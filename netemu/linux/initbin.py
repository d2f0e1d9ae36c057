"""Build and locate netemu-init, the static helper that is every host's PID 1.

The C source ships inside the package; the binary is compiled once per source version
into /var/lib/netemu/bin (named by the source's hash, so an upgrade rebuilds it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from netemu.errors import MachineError

BIN_DIR = Path(os.environ.get("NETEMU_LIB_DIR", "/var/lib/netemu")) / "bin"


def _source() -> bytes:
    return resources.files("netemu.linux").joinpath("init/netemu-init.c").read_bytes()


def init_binary() -> Path:
    """The path of a netemu-init built from this package's source, compiling it if needed."""
    source = _source()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = BIN_DIR / f"netemu-init-{digest}"
    if target.exists():
        return target
    return _compile(source, target)


def _compile(source: bytes, target: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise MachineError("building netemu-init needs a C compiler: install gcc and libc6-dev")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Per-process names: processes that start labs at once all compile, and one rewriting a
    # shared source file under another's compiler makes it fail ("undefined reference to main").
    src = target.with_name(target.name + f".tmp{os.getpid()}.c")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    src.write_bytes(source)
    # Static, so that a host whose image has no libc still gets a working PID 1.
    result = subprocess.run(
        [compiler, "-static", "-O2", "-o", str(tmp), str(src)], capture_output=True, text=True
    )
    src.unlink(missing_ok=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        last_line = (result.stderr.strip().splitlines() or ["compiler failed"])[-1]
        raise MachineError(f"cannot build netemu-init (is libc6-dev installed?): {last_line}")
    os.replace(tmp, target)  # atomic: a concurrent build never sees half a binary
    return target


if __name__ == "__main__":
    print(init_binary())
