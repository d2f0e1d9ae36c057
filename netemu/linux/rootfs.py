"""A host's root filesystem on the machine's side: the directories of its overlay (the private
writable layer and the mount point) and the files injected into that writable layer.

The overlay itself is mounted by netemu-init inside the host's own mount namespace, so it
never appears in the machine's mount table."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from netemu.linux import files


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
        """The node's directory (0700: local users keep out) and its layer's three, whatever the
        umask. The upper directory's mode is the mode of the host's `/`; an existing one is the
        host's own (restarted, or chowned to a userns host's range) and is left as it is."""
        files.private_dir(self.base)
        for d, mode in ((self.upper, 0o755), (self.work, 0o700), (self.merged, 0o755)):
            try:
                os.mkdir(d, mode)
            except FileExistsError:
                continue
            os.chmod(d, mode)

    def inject(self, relpath: str, content: str, mode: int = 0o644) -> None:
        """Write a file into the writable layer: it shadows the image's file of that name.

        The layer is the host's own: a host may have replaced /etc with a symbolic link to
        anywhere, so the path is walked one component at a time from the layer's directory with
        O_NOFOLLOW and written through descriptors (openat), never through a path the host
        could redirect. A symlink in place of the file itself (an image's /etc/resolv.conf ->
        ../run/...) is replaced; one in place of a directory is refused."""
        *dirs, name = relpath.strip("/").split("/")
        fd = os.open(self.upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for part in dirs:
                parent, fd = fd, -1
                fd = _enter(parent, part, relpath)  # closes `parent`, even when it fails
            _replace_file(fd, name, content.encode(), mode)
        finally:
            if fd >= 0:
                os.close(fd)

    def open_console(self) -> int:
        """The node's console.log for appending (0600, whatever the umask), as a descriptor."""
        fd = os.open(self.base / "console.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


class UnsafeLayerPath(OSError):
    """A directory on the way to an injected file is not a plain directory of the layer."""


def _enter(parent: int, name: str, relpath: str) -> int:
    """The directory `name` below descriptor `parent` (made, 0755, when missing); `parent` is
    closed. Never follows a symbolic link."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent)
        os.chmod(name, 0o755, dir_fd=parent, follow_symlinks=False)  # whatever the umask
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except (NotADirectoryError, OSError) as exc:
        if isinstance(exc, NotADirectoryError) or exc.errno == errno.ELOOP:
            raise UnsafeLayerPath(errno.ELOOP, f"/{relpath}: '{name}' in the host's root is not a directory "
                                  "(a symbolic link?): netemu writes nothing through it") from None
        raise
    finally:
        os.close(parent)


def _replace_file(directory: int, name: str, data: bytes, mode: int) -> None:
    """Atomically replace `name` in `directory` (a symlink there is replaced, not followed)."""
    tmp = f".{name}.netemu-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=directory)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=directory)
    with open(fd, "wb") as out:
        out.write(data)
        os.fchmod(out.fileno(), mode)  # whatever the umask
    os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)


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
