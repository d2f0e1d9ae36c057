"""Unpacking one layer (a tar, uncompressed or gzip) into a new directory that overlay can use
as a lower layer. OCI whiteouts become overlay whiteouts: `.wh.NAME` a 0/0 character device,
`.wh..wh..opq` the opaque xattr. Nothing is written outside the directory, and every write is
charged to a Budget (limits.py) before it is made."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from netemu.errors import InputError
from netemu.images.limits import Budget

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def first_line(error: BaseException) -> str:
    """tarfile's errors can span lines (one per compression it tried): the contract wants one."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(":")


class _Digesting:
    """A read-only stream that hashes every byte read through it (unless `digest` is false);
    `peek` looks ahead unhashed. `count` is told of every byte read."""

    def __init__(self, raw: IO[bytes], count: Callable[[int], None] | None = None, digest: bool = True) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.digest = digest
        self.head = b""
        self.count = count

    def peek(self, n: int) -> bytes:
        if len(self.head) < n:
            self.head += self.raw.read(n - len(self.head))
        return self.head[:n]

    def read(self, n: int | None = -1) -> bytes:
        head, self.head = self.head, b""
        if n is None or n < 0:
            data = head + self.raw.read()
        elif len(head) >= n:
            data, self.head = head[:n], head[n:]
        else:
            data = head + self.raw.read(n - len(head))
        if self.digest:
            self.sha.update(data)
        if self.count is not None:
            self.count(len(data))
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def unpack_layer(raw: IO[bytes], dest: Path, label: str, diff_id_hex: str | None = None,
                 blob_hex: str | None = None, budget: Budget | None = None) -> int:
    """Unpack one layer (a tar, uncompressed or gzip) into the new directory `dest`, checking the
    digest of the bytes as stored and of the uncompressed tar, and charging `budget` before each
    write. Returns the size of its files."""
    budget = budget or Budget()
    blob = _Digesting(raw, digest=blob_hex is not None)
    magic = blob.peek(4)
    if magic.startswith(ZSTD_MAGIC):
        raise InputError(f"{label}: zstd-compressed layers are not supported (gzip and uncompressed are)")
    plain = _Digesting(gzip.GzipFile(fileobj=blob, mode="rb") if magic.startswith(GZIP_MAGIC) else blob,
                       budget.stream)
    unpacker = _Unpacker(dest, label, budget)
    try:
        if plain.peek(1):  # an empty stream is an empty layer
            with tarfile.open(fileobj=plain, mode="r|") as tar:
                unpacker.run(tar)
        else:
            unpacker.run([])
        plain.drain()  # the digest covers the tar's padding too
        blob.drain()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"{label}: corrupt layer: {first_line(e)}") from None
    if blob_hex and blob.sha.hexdigest() != blob_hex:
        raise InputError(f"{label}: digest mismatch: the blob is sha256:{blob.sha.hexdigest()}, "
                         f"its descriptor says sha256:{blob_hex}")
    if diff_id_hex and plain.sha.hexdigest() != diff_id_hex:
        raise InputError(f"{label}: digest mismatch: the uncompressed layer is sha256:{plain.sha.hexdigest()}, "
                         f"the image config says sha256:{diff_id_hex}")
    return unpacker.size


def _clean_path(name: str, label: str) -> str:
    """A member's path relative to the layer root; absolute paths and `..` are refused."""
    if name.startswith("/"):
        raise InputError(f"{label}: {name}: absolute path in a layer")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{label}: {name}: path goes outside the layer")
    return "/".join(parts)


class _Unpacker:
    """Writes a layer's members under `root`, never outside it: parents are real directories made
    by this layer (a symlink in the way is refused), and links point inside the layer."""

    def __init__(self, root: Path, label: str, budget: Budget) -> None:
        self.root = root
        self.label = label
        self.budget = budget
        self.safe: set[str] = {""}  # directories known to be real, made or checked by us
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []
        self.opaque: list[str] = []
        self.size = 0

    def run(self, members: Any) -> None:
        self.root.mkdir(mode=0o755)
        os.chmod(self.root, 0o755)  # whatever the umask: the root of the host's filesystem
        for member in members:
            self._member(members, member)
        for rel in self.opaque:
            self._ensure_dir(rel)
            os.setxattr(self._path(rel), OPAQUE_XATTR, b"y", follow_symlinks=False)
        for rel, member in reversed(self.dirs):  # children first: their entries change the parent's mtime
            with contextlib.suppress(FileNotFoundError):  # replaced later in the same layer
                self._attributes(self._path(rel), member)

    def _path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        # Charged before anything is written: a member declares its size in its header.
        self.budget.charge(member.size if member.isreg() else 0)
        rel = _clean_path(member.name, self.label)
        if not rel:
            if member.isdir():
                self.dirs.append(("", member))
            return
        parent, base = posixpath.split(rel)
        self._ensure_dir(parent)
        if base == OPAQUE:
            self.opaque.append(parent)
        elif base.startswith(WHITEOUT + WHITEOUT):
            pass  # other aufs bookkeeping (.wh..wh.plnk, ...): not content
        elif base.startswith(WHITEOUT):
            hidden = base[len(WHITEOUT):]
            if hidden in ("", ".", ".."):
                raise InputError(f"{self.label}: {member.name}: a whiteout of no name")
            target = posixpath.join(parent, hidden)
            self._clear(target, keep_dir=False)
            os.mknod(self._path(target), stat.S_IFCHR, os.makedev(0, 0))
        else:
            self._entry(tar, member, rel)

    def _ensure_dir(self, rel: str) -> None:
        """Make `rel` and its parents real directories; refuse a symlink or a file on the way."""
        if rel in self.safe:
            return
        parent = posixpath.dirname(rel)
        self._ensure_dir(parent)
        path = self._path(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.budget.charge(0)  # a long path may make thousands of them
            os.mkdir(path, 0o755)
            os.chmod(path, 0o755)  # whatever the umask
        else:
            if not stat.S_ISDIR(st.st_mode):
                raise InputError(f"{self.label}: {rel}: a path inside the layer goes through a symlink or a file")
        self.safe.add(rel)

    def _clear(self, rel: str, keep_dir: bool) -> None:
        """Make room for a new entry at `rel` (a later member replaces an earlier one)."""
        path = self._path(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return
            shutil.rmtree(path)
            self.safe = {d for d in self.safe if d != rel and not d.startswith(rel + "/")}
            self.dirs = [(d, m) for d, m in self.dirs if d != rel and not d.startswith(rel + "/")]
        else:
            os.unlink(path)

    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str) -> None:
        path = self._path(rel)
        self._clear(rel, keep_dir=member.isdir())
        if member.isdir():
            if not path.is_dir():
                os.mkdir(path, 0o700)
            self.safe.add(rel)
            self.dirs.append((rel, member))
            return
        if member.islnk():
            os.link(self._link_source(member), path, follow_symlinks=False)
            return  # the same inode: its attributes are the source's
        if member.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(tar.extractfile(member), out, 1 << 20)
            self.size += member.size
        elif member.issym():
            os.symlink(member.linkname, path)  # resolved inside the host's root, never here
        elif member.ischr() or member.isblk():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            return  # nothing else has a meaning in a root filesystem
        self._attributes(path, member)

    def _link_source(self, member: tarfile.TarInfo) -> Path:
        """A hard link's target: an earlier non-directory member of this layer, reached without symlinks."""
        source = _clean_path(member.linkname, self.label)
        self._ensure_dir(posixpath.dirname(source))
        try:
            is_dir = stat.S_ISDIR(os.lstat(self._path(source)).st_mode)
        except FileNotFoundError:
            is_dir = True
        if not source or is_dir:
            raise InputError(f"{self.label}: {member.name}: hard link to {member.linkname}, not a file of the layer")
        return self._path(source)

    def _attributes(self, path: Path, member: tarfile.TarInfo) -> None:
        os.chown(path, member.uid, member.gid, follow_symlinks=False)
        if not member.issym():
            os.chmod(path, stat.S_IMODE(member.mode))  # after chown, which clears setuid bits
        for key, value in member.pax_headers.items():
            name = key.removeprefix("SCHILY.xattr.")
            # File capabilities and user xattrs only: a layer must not forge overlay's trusted.* ones.
            if key.startswith("SCHILY.xattr.") and (name == "security.capability" or name.startswith("user.")):
                with contextlib.suppress(OSError):
                    os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
