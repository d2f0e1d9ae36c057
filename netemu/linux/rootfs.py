"""A host's root filesystem on the machine's side: the directories of its overlay (the private
writable layer and the mount point) and the files injected into that writable layer.

The overlay itself is mounted by netemu-init inside the host's own mount namespace, so it
never appears in the machine's mount table."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LayerDirs:
    base: Path

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def merged(self) -> Path:
        return self.base / "merged"

    def create(self) -> None:
        for d in (self.upper, self.work, self.merged):
            d.mkdir(parents=True, exist_ok=True)

    def inject(self, relpath: str, content: str, mode: int = 0o644) -> None:
        """Write a file into the writable layer: it shadows the image's file of that name."""
        target = self.upper / relpath.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():  # e.g. an image's /etc/resolv.conf -> ../run/...
            target.unlink()
        tmp = target.with_name(f".{target.name}.netemu-tmp")
        tmp.write_text(content)
        tmp.chmod(mode)
        os.replace(tmp, target)

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def hosts_file(own_name: str, entries: list[tuple[str, str]]) -> str:
    lines = [
        "127.0.0.1\tlocalhost",
        f"127.0.1.1\t{own_name}",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    lines += [f"{address}\t{name}" for name, address in entries]
    return "\n".join(lines) + "\n"


def resolv_conf(nameservers: list[str] | None, search: list[str]) -> str:
    """The host's resolv.conf: the given servers, or a copy of the machine's (docker's default)."""
    if nameservers is None:
        try:
            base = Path("/etc/resolv.conf").read_text()
        except OSError:
            base = ""
        lines = [ln for ln in base.splitlines() if not (search and ln.startswith("search"))]
    else:
        lines = [f"nameserver {ns}" for ns in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    return "\n".join(lines) + "\n"
