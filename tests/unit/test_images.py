"""The image store on its own: layer unpacking (whiteouts, opaque directories, modes, links),
refusal of unsafe or corrupt archives, the archive formats, naming, and removal.

The archive builders here are also used by tests/integration/test_images.py. Creating device
nodes, setting owners and trusted.* xattrs needs root, so these tests skip without it."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from netemu import images
from netemu.errors import InputError
from netemu.images import ImageStore, unpack_layer

Member = tuple[tarfile.TarInfo, bytes | None]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod, chown and trusted.* xattrs")


# archive builders ------------------------------------------------------------------------------
def _info(name: str, kind: bytes, mode: int, **attrs: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 1_700_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def directory(name: str, mode: int = 0o755) -> Member:
    return _info(name, tarfile.DIRTYPE, mode), None


def file(name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Member:
    return _info(name, tarfile.REGTYPE, mode, size=len(data), uid=uid, gid=gid), data


def symlink(name: str, target: str) -> Member:
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target), None


def hardlink(name: str, target: str) -> Member:
    return _info(name, tarfile.LNKTYPE, 0o644, linkname=target), None


def chardev(name: str, major: int, minor: int) -> Member:
    return _info(name, tarfile.CHRTYPE, 0o666, devmajor=major, devminor=minor), None


def layer_tar(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_config(layers: list[bytes], **settings: Any) -> dict[str, Any]:
    return {"architecture": "amd64", "os": "linux", "config": settings,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(t)}" for t in layers]}}


def _tar_dir(files: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            tar.addfile(_info(name, tarfile.REGTYPE, 0o644, size=len(data)), io.BytesIO(data))
    return path


def write_docker_legacy(path: Path, layers: list[bytes], config: dict[str, Any], tags: list[str]) -> Path:
    """`docker save` before Docker 25: manifest.json, HEX.json config, ID/layer.tar."""
    raw = json.dumps(config).encode()
    files = {f"{sha(raw)}.json": raw}
    paths = []
    for number, layer in enumerate(layers):
        files[f"layer{number}/layer.tar"] = layer
        paths.append(f"layer{number}/layer.tar")
    manifest = [{"Config": f"{sha(raw)}.json", "RepoTags": tags, "Layers": paths}]
    files["manifest.json"] = json.dumps(manifest).encode()
    return _tar_dir(files, path)


def _oci_files(layers: list[bytes], config: dict[str, Any], ref: str | None,
               gzipped: set[int]) -> tuple[dict[str, bytes], str]:
    raw = json.dumps(config).encode()
    files = {f"blobs/sha256/{sha(raw)}": raw}
    descriptors = []
    for number, layer in enumerate(layers):
        blob = gzip.compress(layer, mtime=0) if number in gzipped else layer
        files[f"blobs/sha256/{sha(blob)}"] = blob
        kind = "tar+gzip" if number in gzipped else "tar"
        descriptors.append({"mediaType": f"application/vnd.oci.image.layer.v1.{kind}",
                            "digest": f"sha256:{sha(blob)}", "size": len(blob)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": f"sha256:{sha(raw)}", "size": len(raw)},
                           "layers": descriptors}).encode()
    files[f"blobs/sha256/{sha(manifest)}"] = manifest
    entry: dict[str, Any] = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                             "digest": f"sha256:{sha(manifest)}", "size": len(manifest)}
    if ref:
        entry["annotations"] = {"org.opencontainers.image.ref.name": ref}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    return files, sha(raw)


def write_oci(path: Path, layers: list[bytes], config: dict[str, Any], ref: str | None = None,
              gzipped: frozenset[int] = frozenset({0}), as_dir: bool = False) -> Path:
    files, _ = _oci_files(layers, config, ref, set(gzipped))
    if not as_dir:
        return _tar_dir(files, path)
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def write_docker25(path: Path, layers: list[bytes], config: dict[str, Any], tags: list[str]) -> Path:
    """`docker save` from Docker 25 on: an OCI layout plus a manifest.json naming its blobs."""
    files, config_hex = _oci_files(layers, config, tags[0] if tags else None, set())
    manifest = [{"Config": f"blobs/sha256/{config_hex}", "RepoTags": tags,
                 "Layers": [f"blobs/sha256/{sha(t)}" for t in layers]}]
    files["manifest.json"] = json.dumps(manifest).encode()
    return _tar_dir(files, path)


# unpacking ---------------------------------------------------------------------------------------
@needs_root
def test_whiteouts_and_opaque_directories_become_overlay_ones(tmp_path):
    layer = layer_tar([directory("etc"), file("etc/.wh.removeme", b""), directory("data"),
                       file("data/.wh..wh..opq", b""), file("data/new.txt", b"new\n"),
                       file("deep/dir/.wh..wh..opq", b"")])
    unpack_layer(io.BytesIO(layer), tmp_path / "diff", "test")
    whiteout = os.lstat(tmp_path / "diff/etc/removeme")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert os.getxattr(tmp_path / "diff/data", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(tmp_path / "diff/deep/dir", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(tmp_path / "diff/data")) == ["new.txt"]
    assert not list((tmp_path / "diff").rglob(".wh.*"))


@needs_root
def test_modes_owners_links_and_devices_are_kept(tmp_path):
    layer = layer_tar([directory("bin", 0o700), file("bin/tool", b"#!x", 0o4755, uid=1000, gid=50),
                       hardlink("bin/tool2", "bin/tool"), symlink("bin/abs", "/etc/passwd"),
                       chardev("dev/null", 1, 3), file("./etc/./conf", b"x")])
    size = unpack_layer(io.BytesIO(layer), tmp_path / "diff", "test")
    root = tmp_path / "diff"
    tool = os.lstat(root / "bin/tool")
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid) == (0o4755, 1000, 50)
    assert os.lstat(root / "bin/tool2").st_ino == tool.st_ino
    assert os.readlink(root / "bin/abs") == "/etc/passwd"
    assert stat.S_IMODE(os.lstat(root / "bin").st_mode) == 0o700
    assert os.lstat(root / "dev/null").st_rdev == os.makedev(1, 3)
    assert (root / "etc/conf").read_bytes() == b"x"
    assert size == 4


@needs_root
@pytest.mark.parametrize("members", [
    [file("../evil", b"x")],
    [file("/abs", b"x")],
    [file("a/../../evil", b"x")],
    [symlink("link", "../outside"), file("link/evil", b"x")],
    [symlink("link", "/"), file("link/evil", b"x")],
    [hardlink("evil", "../outside/secret")],
    [file(".wh...", b"")],
], ids=["dotdot", "absolute", "nested-dotdot", "through-relative-symlink", "through-absolute-symlink",
        "hardlink-outside", "whiteout-dotdot"])
def test_paths_outside_the_layer_are_refused(tmp_path, members):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    with pytest.raises(InputError, match="test"):
        unpack_layer(io.BytesIO(layer_tar(members)), tmp_path / "diff", "test")
    assert sorted(os.listdir(outside)) == ["secret"]
    assert not (tmp_path / "evil").exists() and not Path("/evil").exists()


@needs_root
def test_a_layer_whose_digest_differs_from_the_config_is_refused(tmp_path):
    good = layer_tar([file("a", b"1")])
    config = image_config([layer_tar([file("a", b"2")])])
    archive = write_oci(tmp_path / "bad.tar", [good], config, ref="bad")
    store = ImageStore(tmp_path / "store")
    with pytest.raises(InputError, match=r"bad\.tar.*digest mismatch"):
        store.import_archive(archive)
    assert store.list_images() == []
    assert not list((tmp_path / "store/layers/sha256").iterdir())  # nor half a layer


@needs_root
def test_a_blob_whose_digest_differs_from_its_descriptor_is_refused(tmp_path):
    layer = layer_tar([file("a", b"1")])
    archive = write_oci(tmp_path / "oci", [layer], image_config([layer]), ref="x", as_dir=True)
    blob = next(p for p in (archive / "blobs/sha256").iterdir() if p.read_bytes()[:2] == b"\x1f\x8b")
    blob.write_bytes(gzip.compress(layer, mtime=12345))  # same content, other bytes
    with pytest.raises(InputError, match="digest mismatch: the blob"):
        ImageStore(tmp_path / "store").import_archive(archive)


@needs_root
def test_not_an_archive_is_input_error_naming_the_file(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(InputError, match=r"junk\.tar"):
        ImageStore(tmp_path / "store").import_archive(junk)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="neither a docker save archive"):
        ImageStore(tmp_path / "store").import_archive(empty)


# formats, names, removal -----------------------------------------------------------------------
@needs_root
def test_every_format_imports_to_the_same_image(tmp_path):
    layers = [layer_tar([file("a", b"1")]), layer_tar([file("b", b"22")])]
    config = image_config(layers, Env=["FOO=bar"], Cmd=["sh"], WorkingDir="/w", Entrypoint=["/init"])
    store = ImageStore(tmp_path / "store")
    legacy = store.import_archive(write_docker_legacy(tmp_path / "l.tar", layers, config, ["demo:1"]))
    modern = store.import_archive(write_docker25(tmp_path / "m.tar", layers, config, ["docker.io/library/m:2"]))
    oci = store.import_archive(write_oci(tmp_path / "o.tar", layers, config, gzipped=frozenset({0, 1})))
    oci_dir = store.import_archive(write_oci(tmp_path / "odir", layers, config, ref="d:3", as_dir=True),
                                   name="chosen")
    assert [i.name for i in legacy + modern + oci + oci_dir] == ["demo:1", "m:2", "o", "chosen"]
    assert len({i.id for i in legacy + modern + oci + oci_dir}) == 1
    info = legacy[0]
    assert (info.env, info.cmd, info.working_dir, info.entrypoint, info.size) == (["FOO=bar"], ["sh"], "/w",
                                                                                  ["/init"], 3)
    assert [d.parent.name for d in store.layer_dirs(info)] == [sha(layers[1]), sha(layers[0])]  # top first
    assert store.get_image("o:latest").name == "o"
    with pytest.raises(InputError, match="images: chosen, demo:1, m:2, o"):
        store.get_image("nope")


@needs_root
def test_a_name_is_not_silently_repointed(tmp_path):
    store = ImageStore(tmp_path / "store")
    one, two = layer_tar([file("a", b"1")]), layer_tar([file("a", b"2")])
    store.import_archive(write_oci(tmp_path / "one.tar", [one], image_config([one])), name="x")
    store.import_archive(write_oci(tmp_path / "one.tar", [one], image_config([one])), name="x")  # same: fine
    with pytest.raises(InputError, match="other content"):
        store.import_archive(write_oci(tmp_path / "two.tar", [two], image_config([two])), name="x")
    with pytest.raises(InputError, match="not a valid image name"):
        store.import_archive(tmp_path / "one.tar", name="../x")


@needs_root
def test_rm_is_refused_in_use_and_frees_only_unshared_layers(tmp_path):
    store = ImageStore(tmp_path / "store")
    base, top_a, top_b = (layer_tar([file(n, n.encode())]) for n in ("base", "a", "b"))
    a = store.import_archive(write_oci(tmp_path / "a.tar", [base, top_a], image_config([base, top_a])))[0]
    b = store.import_archive(write_oci(tmp_path / "b.tar", [base, top_b], image_config([base, top_b])))[0]
    with pytest.raises(InputError, match="used by lab lab1"):
        store.remove_image("a", in_use=lambda name: ["lab1"] if name == "a" else [])
    assert store.remove_image("a", in_use=lambda _name: []) == [a.layers[1]]
    assert store.layer_dir(b.layers[0]).is_dir() and not store.layer_dir(a.layers[1]).exists()
    assert store.remove_image("b", in_use=lambda _name: []) == b.layers
    assert not list((tmp_path / "store/layers/sha256").iterdir())
    assert not list((tmp_path / "store/images").iterdir())


def test_the_default_store_lives_under_the_lib_dir():
    assert images.STORE_DIR.name == "images"


# limits: the cap, free space, digests before unpacking, modes -----------------------------------
def zeros_layer(size: int) -> bytes:
    """One file of `size` zero bytes: gzip makes the blob about a thousandth of that."""
    return layer_tar([file("zeros", bytes(size))])


def store_is_empty(store: ImageStore) -> bool:
    """No image, no layer and no temporary layer directory."""
    layers = list(store.layers_root.iterdir()) if store.layers_root.exists() else []
    return not layers and store.list_images() == []


@needs_root
def test_a_gzip_bomb_stops_at_the_cap_set_by_the_environment(tmp_path, monkeypatch):
    bomb = zeros_layer(64 << 20)
    archive = write_oci(tmp_path / "bomb.tar", [bomb], image_config([bomb]), ref="bomb")
    assert archive.stat().st_size < 1 << 20
    monkeypatch.setenv(images.MAX_BYTES_ENV, "1M")
    store = ImageStore(tmp_path / "store")
    with pytest.raises(InputError, match=r"image 'bomb': layer 1/1 [0-9a-f]{12} unpacks to more than the cap "
                                         r"of 1 MiB \(1048576 bytes") as refused:
        store.import_archive(archive)
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
    assert store_is_empty(store)


@needs_root
def test_a_stream_of_zeros_stops_at_the_cap_given_to_the_import(tmp_path):
    zeros = bytes(64 << 20)  # not one member: tar reads zeros as the end of the archive, then drains them
    archive = write_oci(tmp_path / "zeros.tar", [zeros], image_config([zeros]), ref="zeros")
    store = ImageStore(tmp_path / "store")
    with pytest.raises(InputError, match="cap of 2 MiB"):
        store.import_archive(archive, max_bytes=2 << 20)
    assert store_is_empty(store)


@needs_root
def test_empty_files_count_against_the_cap_too(tmp_path):
    many = layer_tar([file(f"f{i}", b"") for i in range(2000)])  # no data, 2000 inodes
    archive = write_oci(tmp_path / "many.tar", [many], image_config([many]), ref="many")
    store = ImageStore(tmp_path / "store")
    with pytest.raises(InputError, match="cap of 4 MiB"):
        store.import_archive(archive, max_bytes=4 << 20)
    assert store_is_empty(store)
    assert store.import_archive(archive, max_bytes=16 << 20)[0].size == 0


@needs_root
def test_a_failed_import_leaves_none_of_its_layers_but_keeps_those_other_images_use(tmp_path):
    small, bomb = layer_tar([file("a", b"1")]), zeros_layer(8 << 20)
    archive = write_oci(tmp_path / "two.tar", [small, bomb], image_config([small, bomb]), ref="two")
    store = ImageStore(tmp_path / "store")
    with pytest.raises(InputError, match="layer 2/2"):
        store.import_archive(archive, max_bytes=1 << 20)
    assert store_is_empty(store)  # layer 1/2 was unpacked, and removed with the failure
    store.import_archive(write_oci(tmp_path / "small.tar", [small], image_config([small])))
    with pytest.raises(InputError, match="layer 2/2"):
        store.import_archive(archive, max_bytes=1 << 20)
    assert [p.name for p in store.layers_root.iterdir()] == [sha(small)]


@needs_root
def test_no_room_on_the_store_s_filesystem_is_a_machine_error_naming_needed_and_free(tmp_path):
    from netemu.errors import MachineError
    from netemu.linux import mounts

    small = tmp_path / "small"
    mounts.mount_tmpfs(small, "size=16m")
    try:
        store = ImageStore(small / "store")
        big = layer_tar([file("big", bytes(32 << 20))])
        for gzipped in (frozenset({0}), frozenset()):  # refused while unpacking; before, from the blob's size
            archive = write_oci(tmp_path / "big.tar", [big], image_config([big]), ref="big", gzipped=gzipped)
            with pytest.raises(MachineError, match=r"no room in .*/small/store for image 'big' \(layer 1/1 \w+\): "
                                                   r"[\d.]+ MiB needed \([\d.]+ \w+ of it kept free\), "
                                                   r"[\d.]+ MiB free") as refused:
                store.import_archive(archive)
            assert refused.value.exit_code == 3
            assert store_is_empty(store)
    finally:
        mounts.unmount(small)


@needs_root
def test_a_tampered_blob_is_refused_before_anything_of_it_is_unpacked(tmp_path):
    layer = layer_tar([file("a", b"1")])
    # Unpacked, this would write `first`, then fail on its absolute path: the digest's refusal
    # shows that it was never unpacked.
    evil = layer_tar([file("first", b"x"), file("/abs", b"y")])
    archive = write_oci(tmp_path / "oci", [layer], image_config([layer]), ref="x", as_dir=True)
    blob = next(p for p in (archive / "blobs/sha256").iterdir() if p.read_bytes()[:2] == b"\x1f\x8b")
    blob.write_bytes(gzip.compress(evil, mtime=0))
    store = ImageStore(tmp_path / "store")
    with pytest.raises(InputError, match=f"blobs/sha256/{blob.name}: digest mismatch: the blob is sha256:"):
        store.import_archive(archive)
    assert store_is_empty(store)
    # A legacy docker save names no blob digest, but its uncompressed layer.tar must be the diff_id.
    legacy = write_docker_legacy(tmp_path / "legacy.tar", [evil], image_config([layer]), ["legacy:1"])
    with pytest.raises(InputError, match=r"layer0/layer\.tar: digest mismatch: the uncompressed layer is"):
        store.import_archive(legacy)
    assert store_is_empty(store)


@pytest.mark.parametrize(("text", "value"), [("100", 100), ("64k", 64 << 10), ("512M", 512 << 20), ("4G", 4 << 30),
                                             ("4GiB", 4 << 30), (" 2 mb", 2 << 20), ("1T", 1 << 40)])
def test_sizes_are_bytes_or_binary_units(text, value):
    assert images.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "x", "0", "-1", "1.5G", "4P", "4 G B"])
def test_sizes_that_are_none_are_refused(text):
    with pytest.raises(ValueError, match="invalid size"):
        images.parse_size(text)


def test_the_cap_is_4_gib_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv(images.MAX_BYTES_ENV, raising=False)
    assert images.max_image_bytes() == 4 << 30
    monkeypatch.setenv(images.MAX_BYTES_ENV, "100M")
    assert images.max_image_bytes() == 100 << 20
    monkeypatch.setenv(images.MAX_BYTES_ENV, "lots")
    with pytest.raises(InputError, match=f"{images.MAX_BYTES_ENV}: invalid size 'lots'"):
        images.max_image_bytes()


@needs_root
def test_the_store_is_root_s_alone_whatever_the_umask(tmp_path):
    old_store = tmp_path / "lib/images"
    old_store.mkdir(0o755, parents=True)
    (old_store / "images").mkdir(0o777)  # as an older netemu under umask 000 left them
    layer = layer_tar([file("bin/su", b"#!", 0o4755), directory("bin")])
    umask = os.umask(0)
    try:
        store = ImageStore(old_store, lib_dir=tmp_path / "lib")
        info = store.import_archive(write_oci(tmp_path / "x.tar", [layer], image_config([layer]), ref="x"))[0]
    finally:
        os.umask(umask)
    layer_dir = store.layer_dir(info.layers[0])
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
             for p in (tmp_path / "lib", old_store, old_store / "layers", store.layers_root, layer_dir,
                       store.images_root, old_store / "images/x.json", layer_dir / "meta.json", old_store / ".lock")}
    assert modes == {"lib": 0o700, "lib/images": 0o700, "lib/images/layers": 0o700,
                     "lib/images/layers/sha256": 0o700, f"lib/images/layers/sha256/{sha(layer)}": 0o700,
                     "lib/images/images": 0o700, "lib/images/images/x.json": 0o600,
                     f"lib/images/layers/sha256/{sha(layer)}/meta.json": 0o600, "lib/images/.lock": 0o600}
    # The image's own modes are kept inside, where only the host sees them.
    assert stat.S_IMODE((layer_dir / "diff/bin/su").stat().st_mode) == 0o4755
