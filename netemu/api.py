"""The Python API (spec section 4): `with Lab.up("file.yaml") as lab: ...`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from netemu.errors import LabError
from netemu.runtime import execution
from netemu.runtime import lab as runtime
from netemu.topology import Topology, load_topology


class Lab:
    """A running lab. Use it as a context manager: it is taken down on exit, even on error."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def up(cls, topology: str | Path | Topology) -> Lab:
        topo = topology if isinstance(topology, Topology) else load_topology(topology)
        runtime.up(topo)
        return cls(topo.name)

    @classmethod
    def attach(cls, name: str) -> Lab:
        runtime.load_record(name)
        return cls(name)

    def down(self) -> None:
        runtime.down(self.name)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def inspect(self) -> dict[str, Any]:
        return runtime.inspect(self.name)

    @property
    def nodes(self) -> list[str]:
        return list(runtime.load_record(self.name)["nodes"])

    def pid(self, node: str) -> int:
        return int(runtime.load_record(self.name)["nodes"][node]["pid"])

    def exec(self, node: str, argv: list[str] | str, *, check: bool = False, env: dict[str, str] | None = None,
             timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in a node; a string runs through /bin/sh -c."""
        args = ["/bin/sh", "-c", argv] if isinstance(argv, str) else list(argv)
        result = execution.run(runtime.load_record(self.name), node, args, env=env, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise LabError(f"{node}: {args!r} exited with {result.returncode}: "
                           f"{(result.stdout + result.stderr).strip()[-2000:]}")
        return result
