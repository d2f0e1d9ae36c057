"""The image store: `docker save` archives and OCI image layouts, unpacked once per layer into a
content-addressed store, so that a host's root can be an overlay of its image's layers (spec 2).

Layout under the store root (default /var/lib/netemu/images):

    layers/sha256/<diff-id hex>/diff        one unpacked layer: an overlay lower directory
    layers/sha256/<diff-id hex>/meta.json   its size
    images/<quoted name>.json               one image: config digest, layers bottom to top, defaults
    .lock                                   flock: imports share it, `rm` holds it alone

A layer is named by its diff_id (the digest of its uncompressed tar, as the image config lists
it), is unpacked into a temporary directory next to its final place and renamed into place, so a
reader never sees half a layer and two imports of the same layer do not collide. OCI whiteouts
become overlay whiteouts: `.wh.NAME` a 0/0 character device, `.wh..wh..opq` the opaque xattr.

The store is root's alone (0700, as is /var/lib/netemu): its layers hold whatever the images
hold, setuid-root binaries and device nodes included, and no local user may reach them.

An archive is untrusted input. A layer's blob is hashed before it is unpacked, when the archive
says what its digest must be, so a tampered blob writes nothing. What an import writes is
counted before it is written (regular files' bytes plus ENTRY_COST per entry) against a cap per
image (MAX_BYTES_DEFAULT, NETEMU_MAX_IMAGE_BYTES or `--max-size`) and against the store's free
space, so that a small gzip bomb stops early; a failed import leaves no layer behind.

This module knows nothing of labs or topologies: `remove_image` asks its caller which labs use
an image."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import json
import os
import platform
import posixpath
import re
import shutil
import stat
import sys
import tarfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from netemu.errors import InputError, MachineError
from netemu.linux import files

LIB_DIR = Path(os.environ.get("NETEMU_LIB_DIR", "/var/lib/netemu"))
STORE_DIR = LIB_DIR / "images"

MAX_BYTES_ENV = "NETEMU_MAX_IMAGE_BYTES"
MAX_BYTES_DEFAULT = 4 << 30
# What an entry costs besides its data: an inode, a directory entry, a block. Counted so that a
# layer of millions of empty files reaches the cap too.
ENTRY_COST = 4096
# An uncompressed layer is its files plus a header and padding per entry (less than ENTRY_COST)
# and the end-of-archive blocks: a stream much larger than the cap is no honest layer.
STREAM_SLACK = 1 << 20
FREE_RESERVE = 256 << 20  # kept free on the store's filesystem (at most 5% of it)
SPACE_RECHECK = 64 << 20  # free space is asked again after this much: other writers share the disk
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
JSON_LIMIT = 16 << 20  # a manifest or config bigger than this is not one
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_BLOB_PATH = re.compile(r"(?:.*/)?blobs/sha256/([0-9a-f]{64})|([0-9a-f]{64})\.json")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,199}")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")

Progress = Callable[[str], None]


@dataclass
class ImageInfo:
    name: str
    id: str  # the config's digest, "sha256:..."
    layers: list[str]  # diff_ids, bottom layer first
    env: list[str] = field(default_factory=list)  # "KEY=VALUE", from the config
    working_dir: str = ""
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    size: int = 0  # bytes of regular files over all layers
    created: float = 0.0  # when it was imported
    source: str = ""

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


@dataclass
class _Layer:
    path: str  # inside the archive
    blob_hex: str | None  # the digest of its bytes as stored, when the archive names one


@dataclass
class _Manifest:
    name: str | None
    config: dict[str, Any]
    config_digest: str
    layers: list[_Layer]


# reading an archive ----------------------------------------------------------------------------
class _Archive:
    """The files of an archive: a directory, or a tar (compressed or not) read in place."""

    def __init__(self, path: Path) -> None:
        self.label = str(path)
        self.root: Path | None = None
        self.tar: tarfile.TarFile | None = None
        if path.is_dir():
            self.root = path.resolve()
            return
        try:
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
            self.members = {posixpath.normpath(m.name.lstrip("/")): m for m in self.tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            self.close()
            raise InputError(f"{path}: not a tar archive nor a directory ({_first_line(e)})") from None

    def bad(self, reason: str) -> InputError:
        return InputError(f"{self.label}: {reason}")

    def exists(self, rel: str) -> bool:
        if self.tar is not None:
            return posixpath.normpath(rel) in self.members
        return self._path(rel).is_file()

    def open(self, rel: str) -> IO[bytes]:
        if self.tar is not None:
            member = self.members.get(posixpath.normpath(rel))
            try:
                stream = self.tar.extractfile(member) if member is not None else None
            except KeyError:  # a link to a member that is not there
                stream = None
            if stream is None:
                raise self.bad(f"{rel}: missing or not a file")
            return stream
        try:
            return open(self._path(rel), "rb")
        except OSError as e:
            raise self.bad(f"{rel}: {e.strerror}") from None

    def _path(self, rel: str) -> Path:
        assert self.root is not None
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):
            raise self.bad(f"{rel}: points outside the layout")
        return path

    def read_bytes(self, rel: str, expected_hex: str | None = None) -> bytes:
        with self.open(rel) as f:
            data = f.read(JSON_LIMIT + 1)
        if len(data) > JSON_LIMIT:
            raise self.bad(f"{rel}: larger than {JSON_LIMIT} bytes")
        if expected_hex and hashlib.sha256(data).hexdigest() != expected_hex:
            raise self.bad(f"{rel}: digest mismatch (expected sha256:{expected_hex})")
        return data

    def read_json(self, rel: str, expected_hex: str | None = None) -> Any:
        return self.loads(self.read_bytes(rel, expected_hex), rel)

    def loads(self, data: bytes, rel: str) -> Any:
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise self.bad(f"{rel}: not valid JSON: {e}") from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def _first_line(error: BaseException) -> str:
    """tarfile's errors can span lines (one per compression it tried): the contract wants one."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(":")


def _digest_hex(archive: _Archive, value: object, what: str) -> str:
    match = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise archive.bad(f"{what}: not a sha256 digest: {value!r}")
    return match.group(1)


def _blob_hex(rel: str) -> str | None:
    """The content digest an archive path promises (blobs/sha256/HEX, or a legacy HEX.json)."""
    match = _BLOB_PATH.fullmatch(rel)
    return (match.group(1) or match.group(2)) if match else None


def _manifests(archive: _Archive) -> list[_Manifest]:
    # Docker 25+ writes both files; its manifest.json names the same blobs with the tags.
    if archive.exists("manifest.json"):
        return _docker_manifests(archive)
    if archive.exists("index.json"):
        return _oci_manifests(archive)
    raise archive.bad("neither a docker save archive (manifest.json) nor an OCI image layout (index.json)")


def _docker_manifests(archive: _Archive) -> list[_Manifest]:
    entries = archive.read_json("manifest.json")
    if not isinstance(entries, list) or not entries:
        raise archive.bad("manifest.json: expected a non-empty list of images")
    found = []
    for number, entry in enumerate(entries):
        where = f"manifest.json[{number}]"
        if not (isinstance(entry, dict) and isinstance(entry.get("Config"), str)
                and isinstance(entry.get("Layers"), list) and all(isinstance(p, str) for p in entry["Layers"])):
            raise archive.bad(f"{where}: expected Config (a path) and Layers (a list of paths)")
        raw = archive.read_bytes(entry["Config"], _blob_hex(entry["Config"]))
        tags = entry.get("RepoTags") or []
        found.append(_Manifest(name=tags[0] if tags and isinstance(tags[0], str) else None,
                               config=archive.loads(raw, entry["Config"]),
                               config_digest="sha256:" + hashlib.sha256(raw).hexdigest(),
                               layers=[_Layer(p, _blob_hex(p)) for p in entry["Layers"]]))
    return found


def _oci_manifests(archive: _Archive) -> list[_Manifest]:
    index = archive.read_json("index.json")
    descriptors = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(descriptors, list):
        raise archive.bad("index.json: expected a list of manifests")
    found = []
    for desc in descriptors:
        if not isinstance(desc, dict) or _is_attestation(desc):
            continue
        notes = desc.get("annotations") or {}
        name = notes.get("io.containerd.image.name") or notes.get("org.opencontainers.image.ref.name")
        found.append(_oci_manifest(archive, _resolve_manifest(archive, desc, 0), name))
    if not found:
        raise archive.bad("index.json: no image manifest")
    return found


def _is_attestation(desc: dict[str, Any]) -> bool:
    notes = desc.get("annotations") or {}
    platform_ = desc.get("platform") or {}
    return notes.get("vnd.docker.reference.type") == "attestation-manifest" or platform_.get("os") == "unknown"


def _resolve_manifest(archive: _Archive, desc: dict[str, Any], depth: int) -> dict[str, Any]:
    """An image manifest, following an image index down to this machine's platform."""
    hex_ = _digest_hex(archive, desc.get("digest"), "index.json: manifest digest")
    doc = archive.read_json(f"blobs/sha256/{hex_}", hex_)
    if not isinstance(doc, dict):
        raise archive.bad(f"blobs/sha256/{hex_}: expected a manifest")
    if desc.get("mediaType") not in _INDEX_TYPES and "manifests" not in doc:
        return doc
    if depth > 3:
        raise archive.bad("image indexes nested too deep")
    candidates = [d for d in doc.get("manifests") or [] if isinstance(d, dict) and not _is_attestation(d)]
    arch = _ARCH.get(platform.machine(), platform.machine())
    mine = [d for d in candidates if (d.get("platform") or {}).get("architecture") == arch]
    if not (mine or candidates):
        raise archive.bad(f"blobs/sha256/{hex_}: an image index with no image")
    return _resolve_manifest(archive, (mine or candidates)[0], depth + 1)


def _oci_manifest(archive: _Archive, manifest: dict[str, Any], name: str | None) -> _Manifest:
    config = manifest.get("config")
    layers = manifest.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise archive.bad("an image manifest without config or layers")
    config_hex = _digest_hex(archive, config.get("digest"), "manifest: config digest")
    raw = archive.read_bytes(f"blobs/sha256/{config_hex}", config_hex)
    refs = []
    for number, layer in enumerate(layers):
        hex_ = _digest_hex(archive, layer.get("digest") if isinstance(layer, dict) else None,
                           f"manifest: layer {number} digest")
        refs.append(_Layer(f"blobs/sha256/{hex_}", hex_))
    return _Manifest(name=name, config=archive.loads(raw, "config"), config_digest=f"sha256:{config_hex}",
                     layers=refs)


# limits ----------------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    """Bytes, or a size with a binary unit (K=1024): 512M, 4G, 4GiB."""
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"invalid size '{text}': use bytes or a size like 512M, 4G")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def max_image_bytes() -> int:
    """The cap on what one image's import may unpack: $NETEMU_MAX_IMAGE_BYTES, or 4 GiB."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return MAX_BYTES_DEFAULT
    try:
        return parse_size(text)
    except ValueError as e:
        raise InputError(f"{MAX_BYTES_ENV}: {e}") from None


def _amount(n: int) -> str:
    """1.5 GiB, 4 MiB, 100 bytes."""
    if n < 1 << 10:
        return f"{n} bytes"
    unit = max((u for u in ("k", "m", "g", "t") if n >= _SIZE_UNITS[u]), key=_SIZE_UNITS.__getitem__)
    return f"{n / _SIZE_UNITS[unit]:.1f}".removesuffix(".0") + f" {unit.upper()}iB"


class Budget:
    """What one image's import may still write, charged before each write: the cap (regular
    files' bytes plus ENTRY_COST per entry, and the uncompressed stream, which a bomb of zeros
    fills without making a file) and the free space and inodes of the store's filesystem."""

    def __init__(self, image: str = "", cap: int = sys.maxsize, store: Path | None = None) -> None:
        self.image = image
        self.cap = cap
        self.store = store  # None: no free-space checks
        self.layer = "a layer"  # what the messages name; set per layer by the import
        self.written = 0
        self.streamed = 0
        self.bytes_left = 0  # may be written before statvfs is asked again
        self.inodes_left = 0

    def charge(self, size: int, entries: int = 1) -> None:
        cost = size + entries * ENTRY_COST
        self.written += cost
        if self.written > self.cap:
            raise self._over_cap()
        self.bytes_left -= cost
        self.inodes_left -= entries
        if self.bytes_left < 0 or self.inodes_left < 0:
            self.check_space(cost, entries)

    def stream(self, n: int) -> None:
        self.streamed += n
        if self.streamed > self.cap + STREAM_SLACK:
            raise self._over_cap()

    def _over_cap(self) -> InputError:
        return InputError(f"image '{self.image}': {self.layer} unpacks to more than the cap of {_amount(self.cap)} "
                          f"({self.cap} bytes, set by --max-size or {MAX_BYTES_ENV}): nothing of it was kept")

    def check_space(self, size: int, entries: int = 0) -> None:
        """Room for `size` more bytes and `entries` more inodes, besides what is kept free."""
        if self.store is None:
            self.bytes_left = self.inodes_left = sys.maxsize
            return
        st = os.statvfs(self.store)
        free, reserve = st.f_bavail * st.f_frsize, min(FREE_RESERVE, st.f_blocks * st.f_frsize // 20)
        if free - reserve < size:
            raise MachineError(f"no room in {self.store} for image '{self.image}' ({self.layer}): "
                               f"{_amount(size + reserve)} needed ({_amount(reserve)} of it kept free), "
                               f"{_amount(free)} free")
        self.bytes_left = min(free - reserve - size, SPACE_RECHECK)
        self.inodes_left = sys.maxsize
        if st.f_files:  # 0: a filesystem with no fixed number of inodes (btrfs)
            spare = st.f_favail - st.f_files // 20
            if spare < entries:
                raise MachineError(f"no room in {self.store} for image '{self.image}' ({self.layer}): "
                                   f"{entries} more files needed, {st.f_favail} free inodes")
            self.inodes_left = spare - entries


# unpacking one layer ---------------------------------------------------------------------------
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
        raise InputError(f"{label}: corrupt layer: {_first_line(e)}") from None
    if blob_hex and blob.sha.hexdigest() != blob_hex:
        raise InputError(f"{label}: digest mismatch: the blob is sha256:{blob.sha.hexdigest()}, "
                         f"its descriptor says sha256:{blob_hex}")
    if diff_id_hex and plain.sha.hexdigest() != diff_id_hex:
        raise InputError(f"{label}: digest mismatch: the uncompressed layer is sha256:{plain.sha.hexdigest()}, "
                         f"the image config says sha256:{diff_id_hex}")
    return unpacker.size


def _verify_blob(archive: _Archive, layer: _Layer, diff_id: str) -> int:
    """Hash a layer's blob before anything of it is unpacked, when the archive says what its
    digest must be (a docker save or OCI blob's descriptor; the diff_id, for an uncompressed
    layer of a legacy docker save), so that a tampered blob writes nothing. Returns its size."""
    sha, size, head = hashlib.sha256(), 0, b""
    with archive.open(layer.path) as raw:
        while chunk := raw.read(1 << 20):
            head = head or chunk[:4]
            sha.update(chunk)
            size += len(chunk)
    got, label = sha.hexdigest(), f"{archive.label}: {layer.path}"
    if layer.blob_hex and got != layer.blob_hex:
        raise InputError(f"{label}: digest mismatch: the blob is sha256:{got}, "
                         f"its descriptor says sha256:{layer.blob_hex}")
    if not layer.blob_hex and not head.startswith((GZIP_MAGIC, ZSTD_MAGIC)) and got != diff_id[7:]:
        raise InputError(f"{label}: digest mismatch: the uncompressed layer is sha256:{got}, "
                         f"the image config says {diff_id}")
    return size


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


# the store -------------------------------------------------------------------------------------
def _check_name(name: str, label: str) -> str:
    if (not _NAME.fullmatch(name) or name == "host"
            or any(part in ("", ".", "..") for part in name.split("/"))):
        raise InputError(f"{label}: '{name}' is not a valid image name "
                         "(letters, digits and . _ - / : @ +, not 'host', not a path)")
    return name


def _reference(name: str) -> str:
    """`docker.io/library/busybox:latest` is known as `busybox:latest`, as `docker images` shows it."""
    for prefix in ("docker.io/library/", "docker.io/"):
        name = name.removeprefix(prefix)
    return name


def _candidates(ref: str) -> list[str]:
    """Names a reference may mean: itself, and with or without the implicit `:latest` tag."""
    tagged = ":" in ref.rsplit("/", 1)[-1]
    return [ref, ref.removesuffix(":latest") if ref.endswith(":latest") else ref + (":latest" if not tagged else "")]


def _stem(path: Path) -> str:
    name = path.resolve().name
    for suffix in (".tar.gz", ".tgz", ".tar", ".oci"):
        name = name.removesuffix(suffix)
    return name


class ImageStore:
    def __init__(self, root: Path = STORE_DIR, lib_dir: Path | None = None) -> None:
        self.root = Path(root)
        self.lib_dir = lib_dir  # netemu's directory that holds the store (LIB_DIR): private too
        self.layers_root = self.root / "layers" / "sha256"
        self.images_root = self.root / "images"

    def _private_dirs(self, *below: Path) -> None:
        """The store's root (and `below`), made or tightened to 0700 whatever the umask."""
        for directory in (*([self.lib_dir] if self.lib_dir else []), self.root, *below):
            files.private_dir(directory)

    # lookups -----------------------------------------------------------------------------------
    def _record_path(self, name: str) -> Path:
        return self.images_root / (quote(name, safe="") + ".json")

    def layer_dir(self, diff_id: str) -> Path:
        return self.layers_root / diff_id.removeprefix("sha256:")

    def list_images(self) -> list[ImageInfo]:
        if not self.images_root.is_dir():
            return []
        return sorted((self._read(p) for p in self.images_root.glob("*.json")), key=lambda i: i.name)

    def _read(self, path: Path) -> ImageInfo:
        try:
            data = json.loads(path.read_text())
            return ImageInfo(**{f.name: data[f.name] for f in fields(ImageInfo) if f.name in data})
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"image record {path} is damaged ({e}): remove it and import the image again") from None

    def find_image(self, ref: str) -> ImageInfo | None:
        """The image a reference names (`busybox` finds `busybox:latest`), or None."""
        if not _NAME.fullmatch(ref):
            return None
        for name in _candidates(ref):
            path = self._record_path(name)
            if path.is_file():
                return self._read(path)
        return None

    def get_image(self, ref: str) -> ImageInfo:
        info = self.find_image(ref)
        if info is None:
            known = ", ".join(i.name for i in self.list_images()) or "none"
            raise InputError(f"no image '{ref}' in the store (images: {known}; `netemu image import FILE` adds one)")
        return info

    def layer_dirs(self, info: ImageInfo) -> list[Path]:
        """The image's unpacked layers, top first: the order of overlay's lowerdir."""
        dirs = [self.layer_dir(d) / "diff" for d in reversed(info.layers)]
        for path in dirs:
            if not path.is_dir():
                raise InputError(f"image '{info.name}' is damaged: layer {path.parent.name[:12]} is missing "
                                 f"(`netemu image rm {info.name}` and import it again)")
        return dirs

    # import ------------------------------------------------------------------------------------
    def import_archive(self, path: str | Path, name: str | None = None, progress: Progress | None = None,
                       max_bytes: int | None = None) -> list[ImageInfo]:
        """Import every image of a docker save archive or an OCI layout (tar or directory); each
        may unpack to at most `max_bytes` (default: max_image_bytes())."""
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such file or directory")
        if name is not None:
            _check_name(name, "--name")
        cap = max_image_bytes() if max_bytes is None else max_bytes
        archive = _Archive(path)
        try:
            manifests = _manifests(archive)
            names = self._names(archive, manifests, name, path)
            return self._import_all(archive, list(zip(manifests, names, strict=True)), cap,
                                    progress or (lambda _msg: None))
        finally:
            archive.close()

    def _import_all(self, archive: _Archive, todo: list[tuple[_Manifest, str]], cap: int,
                    say: Progress) -> list[ImageInfo]:
        made: list[str] = []  # the layers this import unpacked
        try:
            with self._lock(exclusive=False):
                return [self._import_one(archive, manifest, name, say, Budget(name, cap, self.root), made)
                        for manifest, name in todo]
        except BaseException:
            self._forget(made)
            raise

    def _forget(self, diff_ids: list[str]) -> None:
        """The layers a failed import made that no image uses. Under the exclusive lock every
        other import has written its record or failed, so none is about to use one of them."""
        if not diff_ids:
            return
        with self._lock(exclusive=True):
            try:
                used = {d for info in self.list_images() for d in info.layers}
            except InputError:
                return  # a damaged record: what it uses is unknown, so nothing is removed
            for diff_id in dict.fromkeys(diff_ids):
                if diff_id not in used:
                    self._delete(self.layer_dir(diff_id))

    def _names(self, archive: _Archive, manifests: list[_Manifest], name: str | None, path: Path) -> list[str]:
        if name is not None:
            if len(manifests) != 1:
                raise archive.bad(f"holds {len(manifests)} images: --name can name only one")
            return [name]
        names = [_reference(m.name) if m.name else _stem(path) for m in manifests]
        if len(set(names)) != len(names):
            names = [f"{n}-{i + 1}" for i, n in enumerate(names)]
        return [_check_name(n, f"{path} (use --name)") for n in names]

    def _import_one(self, archive: _Archive, manifest: _Manifest, name: str, say: Progress, budget: Budget,
                    made: list[str]) -> ImageInfo:
        diff_ids, defaults = _parse_config(archive, manifest)
        existing = self.find_image(name)
        if existing is not None and existing.name == name and existing.id != manifest.config_digest:
            raise archive.bad(f"an image named '{name}' with other content exists: "
                              f"`netemu image rm {name}` first, or choose another --name")
        size = 0
        for number, (layer, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
            budget.layer = f"layer {number + 1}/{len(diff_ids)} {diff_id[7:19]}"
            size += self._ensure_layer(archive, layer, diff_id, budget, made)
            say(f"{name}: {budget.layer} ready")
        info = ImageInfo(name=name, id=manifest.config_digest, layers=diff_ids, size=size, created=time.time(),
                         source=str(Path(archive.label).resolve()), **defaults)
        self._write_record(info)
        return info

    def _ensure_layer(self, archive: _Archive, layer: _Layer, diff_id: str, budget: Budget,
                      made: list[str]) -> int:
        """Unpack a layer unless the store has it (noting it in `made`); its size either way.
        Layers already in the store cost the budget nothing: this import writes none of them."""
        final = self.layer_dir(diff_id)
        if not final.is_dir():
            self._private_dirs(self.root / "layers", self.layers_root)
            budget.check_space(_verify_blob(archive, layer, diff_id))  # room for at least the blob
            tmp = files.private_dir(self.layers_root / f".tmp-{final.name[:12]}-{uuid.uuid4().hex[:8]}",
                                    exist_ok=False)
            try:
                with archive.open(layer.path) as raw:
                    # The blob's digest was checked just now, and the diff_id checks what it
                    # unpacks to: no second hash of the blob.
                    size = unpack_layer(raw, tmp / "diff", f"{archive.label}: {layer.path}",
                                        final.name, None, budget)
                files.write_file(tmp / "meta.json", json.dumps({"diff_id": diff_id, "size": size}).encode())
                if _rename_unless_there(tmp, final):
                    made.append(diff_id)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp)
        try:
            return int(json.loads((final / "meta.json").read_text())["size"])
        except (OSError, ValueError, KeyError):
            return 0

    def _write_record(self, info: ImageInfo) -> None:
        self._private_dirs(self.images_root)
        target = self._record_path(info.name)
        files.write_file(target, json.dumps(asdict(info), indent=1, sort_keys=True).encode(),
                         tmp=target.with_name(f".tmp-{uuid.uuid4().hex}"))

    # removal -----------------------------------------------------------------------------------
    def remove_image(self, ref: str, in_use: Callable[[str], list[str]]) -> list[str]:
        """Remove an image and every layer no other image uses; refused while a lab uses it.
        Returns the diff_ids of the layers removed."""
        with self._lock(exclusive=True):
            info = self.get_image(ref)
            users = in_use(info.name)
            if users:
                raise InputError(f"image '{info.name}' is used by lab {', '.join(users)}: "
                                 f"`netemu down {users[0]}` first")
            self._record_path(info.name).unlink()
            kept = {d for other in self.list_images() for d in other.layers}
            freed = [d for d in dict.fromkeys(info.layers) if d not in kept]
            for diff_id in freed:
                self._delete(self.layer_dir(diff_id))
            self._sweep()
            return freed

    def _delete(self, path: Path) -> None:
        """Rename first, so that no reader ever sees half a layer under its real name."""
        if not path.exists():
            return
        trash = path.with_name(f".trash-{path.name[:12]}-{uuid.uuid4().hex[:8]}")
        os.rename(path, trash)
        shutil.rmtree(trash)

    def _sweep(self) -> None:
        """Leftovers of imports that were killed: under the exclusive lock no import runs."""
        for directory in (self.layers_root, self.images_root):
            if directory.is_dir():
                for entry in directory.glob(".t*-*"):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        self._private_dirs()  # an older netemu's store is tightened here, at its next import or rm
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)


def _rename_unless_there(tmp: Path, final: Path) -> bool:
    """Whether `tmp` became `final`."""
    try:
        os.rename(tmp, final)
    except OSError as e:
        # A concurrent import of the same layer got there first: its copy is as good as ours.
        if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not final.is_dir():
            raise
        return False
    return True


def _parse_config(archive: _Archive, manifest: _Manifest) -> tuple[list[str], dict[str, Any]]:
    """The config's diff_ids (checked against the manifest) and the node defaults it sets."""
    config = manifest.config if isinstance(manifest.config, dict) else {}
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise archive.bad("image config without rootfs.diff_ids")
    diff_ids = [f"sha256:{_digest_hex(archive, d, 'config: rootfs.diff_ids')}" for d in diff_ids]
    if len(diff_ids) != len(manifest.layers):
        raise archive.bad(f"the manifest lists {len(manifest.layers)} layers, the config {len(diff_ids)}")
    settings = config.get("config") or {}
    defaults = {"env": settings.get("Env") or [], "working_dir": settings.get("WorkingDir") or "",
                "entrypoint": settings.get("Entrypoint") or None, "cmd": settings.get("Cmd") or None}
    for key in ("env", "entrypoint", "cmd"):
        value = defaults[key]
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise archive.bad(f"image config: {key}: expected a list of strings")
    if not isinstance(defaults["working_dir"], str):
        raise archive.bad("image config: WorkingDir: expected a string")
    return diff_ids, defaults


# the default store -----------------------------------------------------------------------------
def store() -> ImageStore:
    return ImageStore(STORE_DIR, LIB_DIR)


def import_archive(path: str | Path, name: str | None = None, progress: Progress | None = None,
                   max_bytes: int | None = None) -> list[ImageInfo]:
    return store().import_archive(path, name, progress, max_bytes)


def import_image(path: str | Path, name: str | None = None, max_bytes: int | None = None) -> ImageInfo:
    """Import an archive; the first of its images (an archive of several imports them all)."""
    return import_archive(path, name, max_bytes=max_bytes)[0]


def list_images() -> list[ImageInfo]:
    return store().list_images()


def find_image(ref: str) -> ImageInfo | None:
    return store().find_image(ref)


def get_image(ref: str) -> ImageInfo:
    return store().get_image(ref)


def remove_image(ref: str, in_use: Callable[[str], list[str]]) -> list[str]:
    return store().remove_image(ref, in_use)


def layer_dirs(info: ImageInfo) -> list[Path]:
    return store().layer_dirs(info)
