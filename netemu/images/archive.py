"""Reading an image archive: a `docker save` tar or an OCI image layout (a tar, compressed or
not, or a directory), read in place; its manifests and image configs.

An archive is untrusted input. A layer's blob is hashed before it is unpacked, when the archive
says what its digest must be (verify_blob), so a tampered blob writes nothing; a manifest or a
config larger than JSON_LIMIT is refused unread."""

from __future__ import annotations

import hashlib
import json
import platform
import posixpath
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from netemu.errors import InputError
from netemu.images.unpack import GZIP_MAGIC, ZSTD_MAGIC, first_line

JSON_LIMIT = 16 << 20  # a manifest or config bigger than this is not one
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_BLOB_PATH = re.compile(r"(?:.*/)?blobs/sha256/([0-9a-f]{64})|([0-9a-f]{64})\.json")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")


@dataclass
class Layer:
    path: str  # inside the archive
    blob_hex: str | None  # the digest of its bytes as stored, when the archive names one


@dataclass
class Manifest:
    name: str | None
    config: dict[str, Any]
    config_digest: str
    layers: list[Layer]


class Archive:
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
            raise InputError(f"{path}: not a tar archive nor a directory ({first_line(e)})") from None

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


def _digest_hex(archive: Archive, value: object, what: str) -> str:
    match = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise archive.bad(f"{what}: not a sha256 digest: {value!r}")
    return match.group(1)


def _blob_hex(rel: str) -> str | None:
    """The content digest an archive path promises (blobs/sha256/HEX, or a legacy HEX.json)."""
    match = _BLOB_PATH.fullmatch(rel)
    return (match.group(1) or match.group(2)) if match else None


def read_manifests(archive: Archive) -> list[Manifest]:
    # Docker 25+ writes both files; its manifest.json names the same blobs with the tags.
    if archive.exists("manifest.json"):
        return _docker_manifests(archive)
    if archive.exists("index.json"):
        return _oci_manifests(archive)
    raise archive.bad("neither a docker save archive (manifest.json) nor an OCI image layout (index.json)")


def _docker_manifests(archive: Archive) -> list[Manifest]:
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
        found.append(Manifest(name=tags[0] if tags and isinstance(tags[0], str) else None,
                              config=archive.loads(raw, entry["Config"]),
                              config_digest="sha256:" + hashlib.sha256(raw).hexdigest(),
                              layers=[Layer(p, _blob_hex(p)) for p in entry["Layers"]]))
    return found


def _oci_manifests(archive: Archive) -> list[Manifest]:
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


def _resolve_manifest(archive: Archive, desc: dict[str, Any], depth: int) -> dict[str, Any]:
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


def _oci_manifest(archive: Archive, manifest: dict[str, Any], name: str | None) -> Manifest:
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
        refs.append(Layer(f"blobs/sha256/{hex_}", hex_))
    return Manifest(name=name, config=archive.loads(raw, "config"), config_digest=f"sha256:{config_hex}",
                    layers=refs)


def verify_blob(archive: Archive, layer: Layer, diff_id: str) -> int:
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


def parse_config(archive: Archive, manifest: Manifest) -> tuple[list[str], dict[str, Any]]:
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
