"""The image store: images unpacked once per layer into a content-addressed store, so that a
host's root can be an overlay of its image's layers (spec 2).

Layout under the store root (default /var/lib/netemu/images):

    layers/sha256/<diff-id hex>/diff        one unpacked layer: an overlay lower directory
    layers/sha256/<diff-id hex>/meta.json   its size
    images/<quoted name>.json               one image: config digest, layers bottom to top, defaults
    images/aliases/<quoted name>.json       another name of a pulled image: the short name the user wrote
    .pull-<id>/                             a registry pull under way (registry.py): its OCI layout
    .lock                                   flock: imports share it, `rm` holds it alone

A layer is named by its diff_id (the digest of its uncompressed tar, as the image config lists
it), is unpacked into a temporary directory next to its final place and renamed into place, so a
reader never sees half a layer and two imports of the same layer do not collide. A failed import
leaves no layer behind.

The store is root's alone (0700, as is /var/lib/netemu): its layers hold whatever the images
hold, setuid-root binaries and device nodes included, and no local user may reach them."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import quote, unquote

from netemu.errors import InputError
from netemu.images.archive import Archive, Layer, Manifest, parse_config, read_manifests, verify_blob
from netemu.images.limits import Budget, max_image_bytes
from netemu.images.unpack import unpack_layer
from netemu.linux import files

LIB_DIR = Path(os.environ.get("NETEMU_LIB_DIR", "/var/lib/netemu"))
STORE_DIR = LIB_DIR / "images"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,199}")

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
    digest: str = ""  # a pulled image's manifest digest in its registry ("sha256:..."), else ""

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


@dataclass
class Pulled:
    """What a registry pull adds to an import: where the image came from, its manifest digest.
    A pulled name may be replaced by newer content (the tag moved), unlike an imported one."""

    source: str  # docker://quay.io/x/y:1, docker-daemon:...
    digest: str = ""


# A record's file name is the quoted name plus ".json" (and a `.tmp-` name while it is written):
# '/' and ':' take three bytes each once quoted, so a name of 200 characters can exceed the
# 255 bytes a directory entry may have.
_FILE_NAME_MAX = 240


def storable(name: str) -> bool:
    """Whether `name` can name a record or alias in the store: its pattern, and its quoted file
    name short enough for the filesystem (else every lookup would fail with ENAMETOOLONG)."""
    return bool(_NAME.fullmatch(name)) and len(quote(name, safe="") + ".json") <= _FILE_NAME_MAX


def _check_name(name: str, label: str) -> str:
    if (not storable(name) or name == "host"
            or any(part in ("", ".", "..") for part in name.split("/"))):
        raise InputError(f"{label}: '{name[:300]}' is not a valid image name "
                         "(letters, digits and . _ - / : @ +, not 'host', not a path, "
                         f"at most {_FILE_NAME_MAX} bytes once '/' and ':' are quoted)")
    return name


def check_name(name: str, label: str) -> str:
    """`name` as an image's name in the store, or InputError (exit 2) saying why not."""
    return _check_name(name, label)


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
        self.aliases_root = self.images_root / "aliases"

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
        """The image a reference names (`busybox` finds `busybox:latest`), or None. An image's own
        name wins over an alias: an imported `busybox:latest` over a pulled image's short name."""
        if not _NAME.fullmatch(ref):
            return None
        for name in [c for c in _candidates(ref) if storable(c)]:
            path = self._record_path(name)
            if path.is_file():
                return self._read(path)
        for name in [c for c in _candidates(ref) if storable(c)]:
            target = self._alias_target(name)
            if target is not None and self._record_path(target).is_file():
                return self._read(self._record_path(target))
        return None

    # aliases -----------------------------------------------------------------------------------
    def _alias_path(self, alias: str) -> Path:
        return self.aliases_root / (quote(alias, safe="") + ".json")

    def _alias_target(self, alias: str) -> str | None:
        try:
            name = json.loads(self._alias_path(alias).read_text()).get("name")
        except (OSError, ValueError, AttributeError):
            return None
        return name if isinstance(name, str) else None

    def add_alias(self, alias: str, name: str) -> None:
        """`alias` finds image `name` from now on (the last pull of a short name wins). An alias
        equal to an image's own name is not written: the name finds it already."""
        if alias == name or not storable(alias) or self._alias_target(alias) == name:
            return
        self._private_dirs(self.images_root, self.aliases_root)
        target = self._alias_path(alias)
        files.write_file(target, json.dumps({"name": name}).encode(),
                         tmp=target.with_name(f".tmp-{uuid.uuid4().hex}"))

    def aliases(self, name: str) -> list[str]:
        """The other names that find image `name`."""
        if not self.aliases_root.is_dir():
            return []
        found = []
        for path in self.aliases_root.glob("*.json"):
            alias = unquote(path.name.removesuffix(".json"))
            if self._alias_target(alias) == name:
                found.append(alias)
        return sorted(found)

    def _drop_aliases(self, name: str) -> None:
        for alias in self.aliases(name):
            self._alias_path(alias).unlink(missing_ok=True)

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
        archive = Archive(path)
        try:
            manifests = read_manifests(archive)
            names = self._names(archive, manifests, name, path)
            return self._import_all(archive, list(zip(manifests, names, strict=True)), cap,
                                    progress or (lambda _msg: None))
        finally:
            archive.close()

    def _import_all(self, archive: Archive, todo: list[tuple[Manifest, str]], cap: int,
                    say: Progress, pulled: Pulled | None = None) -> list[ImageInfo]:
        made: list[str] = []  # the layers this import unpacked
        try:
            with self._lock(exclusive=False):
                return [self._import_one(archive, manifest, name, say, Budget(name, cap, self.root), made, pulled)
                        for manifest, name in todo]
        except BaseException:
            self._forget(made)
            raise

    def import_pulled(self, layout: Path, name: str, pulled: Pulled, progress: Progress | None = None,
                      max_bytes: int | None = None) -> ImageInfo:
        """Import the one image of an OCI layout that a pull wrote, under `name`; the digests of
        its manifest, config and every blob unpacked are checked, as for `image import`."""
        _check_name(name, "pulled image")
        cap = max_image_bytes() if max_bytes is None else max_bytes
        archive = Archive(Path(layout))
        archive.label = pulled.source  # messages name the reference, not the temporary layout
        try:
            manifests = read_manifests(archive)
            if len(manifests) != 1:
                raise archive.bad(f"the pull wrote {len(manifests)} images, expected 1")
            return self._import_all(archive, [(manifests[0], name)], cap, progress or (lambda _msg: None),
                                    pulled)[0]
        finally:
            archive.close()

    def pull_dir(self) -> contextlib.AbstractContextManager[Path]:
        """A private working directory for one pull, under the store (on its filesystem, never
        the machine's /tmp), removed afterwards; one a killed pull left is swept by `rm`."""
        return _pull_dir(self)

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

    def _names(self, archive: Archive, manifests: list[Manifest], name: str | None, path: Path) -> list[str]:
        if name is not None:
            if len(manifests) != 1:
                raise archive.bad(f"holds {len(manifests)} images: --name can name only one")
            return [name]
        names = [_reference(m.name) if m.name else _stem(path) for m in manifests]
        if len(set(names)) != len(names):
            names = [f"{n}-{i + 1}" for i, n in enumerate(names)]
        return [_check_name(n, f"{path} (use --name)") for n in names]

    def _import_one(self, archive: Archive, manifest: Manifest, name: str, say: Progress, budget: Budget,
                    made: list[str], pulled: Pulled | None = None) -> ImageInfo:
        diff_ids, defaults = parse_config(archive, manifest)
        existing = self.find_image(name)
        moved = existing is not None and existing.name == name and existing.id != manifest.config_digest
        if moved and pulled is None:
            raise archive.bad(f"an image named '{name}' with other content exists: "
                              f"`netemu image rm {name}` first, or choose another --name")
        size = 0
        for number, (layer, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
            budget.layer = f"layer {number + 1}/{len(diff_ids)} {diff_id[7:19]}"
            size += self._ensure_layer(archive, layer, diff_id, budget, made)
            say(f"{name}: {budget.layer} ready")
        info = ImageInfo(name=name, id=manifest.config_digest, layers=diff_ids, size=size, created=time.time(),
                         source=pulled.source if pulled else str(Path(archive.label).resolve()),
                         digest=pulled.digest if pulled else "", **defaults)
        if moved and existing is not None:
            self._keep_previous(existing)
        self._write_record(info)
        return info

    def _keep_previous(self, old: ImageInfo) -> None:
        """A pull that moves a tag keeps the image it replaces under `repository@digest` (Docker
        keeps it untagged): labs started before the pull may still run on its layers."""
        repository = re.sub(r"(:[\w][\w.-]*)?(@sha256:[0-9a-f]{64})?$", "", old.name)
        keep = f"{repository}@{old.digest}" if old.digest else f"{old.name}-{old.short_id}"
        if _NAME.fullmatch(keep) and not self._record_path(keep).exists():
            self._write_record(ImageInfo(**{**asdict(old), "name": keep}))

    def _ensure_layer(self, archive: Archive, layer: Layer, diff_id: str, budget: Budget,
                      made: list[str]) -> int:
        """Unpack a layer unless the store has it (noting it in `made`); its size either way.
        Layers already in the store cost the budget nothing: this import writes none of them."""
        final = self.layer_dir(diff_id)
        if not final.is_dir():
            self._private_dirs(self.root / "layers", self.layers_root)
            budget.check_space(verify_blob(archive, layer, diff_id))  # room for at least the blob
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
            self._drop_aliases(info.name)
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
        """Leftovers of imports that were killed: under the exclusive lock no import runs. A pull
        downloads without the lock, so its directory goes only once its own flock is free."""
        for directory in (self.layers_root, self.images_root, self.aliases_root):
            if directory.is_dir():
                for entry in directory.glob(".t*-*"):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
        for entry in self.root.glob(".pull-*"):
            if entry.is_dir() and not entry.is_symlink() and _abandoned(entry):
                shutil.rmtree(entry, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        self._private_dirs()  # an older netemu's store is tightened here, at its next import or rm
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)


@contextlib.contextmanager
def _pull_dir(store: ImageStore) -> Iterator[Path]:
    store._private_dirs()
    work = files.private_dir(store.root / f".pull-{uuid.uuid4().hex[:12]}", exist_ok=False)
    fd = os.open(work / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while the pull runs: see _abandoned
        yield work
    finally:
        os.close(fd)
        shutil.rmtree(work, ignore_errors=True)


def _abandoned(work: Path) -> bool:
    """Whether no pull holds this directory's lock any more (its process was killed)."""
    try:
        fd = os.open(work / ".lock", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return True
    return not files.lock_held(fd, exclusive=True)


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
