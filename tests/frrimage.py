"""An FRRouting image for the tests, built from Debian packages: a minimal Debian bookworm made
by mmdebstrap (variant minbase) with frr, iproute2, iputils-ping and procps, turned into a
one-layer OCI image layout made the way FRR's own images are (docker/debian/Dockerfile in
FRR's tree): /var/run/frr in the image, and FRR's docker-start as the command (watchfrr in
the foreground, starting the daemons /etc/frr/daemons names).

The .debs come from the Debian mirror this machine's apt already uses (its sources.list
entries for bookworm, bookworm-updates and bookworm-security), and from nowhere else. The
layout is built at most once per machine: it is cached under /var/cache/netemu-tests/ under a
hash of the package list and the recipe, built under a lock (two test processes never build it
twice) in a temporary directory renamed into place when complete.

`frr_layout` (a session fixture) gives the layout's path, or skips the test, naming
mmdebstrap or the mirror, when the image cannot be built. `variant()` makes a second image on
the same layer with another configuration (a PC that only sleeps).

    python -m tests.frrimage        # build (or find) the layout and print its path
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

CACHE = Path("/var/cache/netemu-tests")
SUITE = "bookworm"
PACKAGES = ("frr", "iproute2", "iputils-ping", "procps")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))

# The image is made the way FRR's own Debian image is (docker/debian/Dockerfile and
# docker-start in FRR's tree, frr-10.5.1; the alpine image on quay.io, frr01's default, is made
# the same way): /var/run/frr made in the image, /etc/frr and /var/run/frr given to frr, and
# this script, verbatim, as the command (under tini there; netemu-init is PID 1 here). It runs
# watchfrr in the foreground, which starts the daemons of /etc/frr/daemons and has vtysh apply
# /etc/frr/frr.conf; it relies on /var/run/frr being there, as the image made it.
DOCKER_START = """#!/bin/bash

source /usr/lib/frr/frrcommon.sh
/usr/lib/frr/watchfrr $(daemon_list)
"""

# What mmdebstrap is asked, apart from the suite, the output and the mirrors. Part of the key.
MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    "--mode=root",
    "--format=tar",
    # merged /usr made by symlinks, with usr-is-merged: without it init-system-helpers brings
    # usrmerge and all of perl
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    f"--include={','.join(PACKAGES)}",
    # The machine's mirror is a dated snapshot: its Release files may be past Valid-Until.
    '--aptopt=Acquire::Check-Valid-Until "false"',
    '--aptopt=Acquire::Languages "none"',
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/lintian/*",
    '--customize-hook=cp "$NETEMU_DOCKER_START" "$1/usr/lib/frr/docker-start"',
    '--customize-hook=chmod 0755 "$1/usr/lib/frr/docker-start"',
    # /var/run/frr, as FRR's Dockerfile makes it: inside the chroot (its /var/run is a symlink to
    # /run, which must not be the machine's). mmdebstrap's cleanup would empty /run, /run/frr with
    # it: /run is emptied here instead, before the directory is made.
    # The emptying only when the chroot's /run is its own directory, never a mount from outside.
    "--skip=cleanup/run",
    """--customize-hook=chroot "$1" sh -ec '[ "$(stat -c %d /run)" = "$(stat -c %d /)" ]"""
    """ && find /run -xdev -mindepth 1 -delete && mkdir -m 1777 /run/lock && mkdir /var/run/frr"""
    """ && chown -R frr:frr /etc/frr /var/run/frr'""",
    '--customize-hook=test -x "$1/usr/lib/frr/frrinit.sh" && test -x "$1/usr/bin/vtysh"',
    '--customize-hook=rm -rf "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/*.log'
    ' "$1"/var/log/apt/*',
)

# Entries of the layer left out: device nodes (a container gets its own /dev, as from Docker).
SKIPPED_PREFIXES = ("dev/",)
RECIPE_VERSION = 3


def architecture() -> str:
    """The machine's architecture in OCI's words (what netemu chooses from an index)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def config(layer_diff_id: str, **settings: Any) -> dict[str, Any]:
    """The image configuration: FRR's start script as the command, Docker's PATH."""
    container = {"Env": [f"PATH={PATH}"], "Cmd": ["/usr/lib/frr/docker-start"], "WorkingDir": "/", **settings}
    return {"architecture": architecture(), "os": "linux", "config": container,
            "rootfs": {"type": "layers", "diff_ids": [layer_diff_id]},
            "history": [{"created_by": f"tests/frrimage.py: mmdebstrap {SUITE} {' '.join(PACKAGES)}"}]}


def cache_key() -> str:
    recipe = {"suite": SUITE, "packages": PACKAGES, "options": MMDEBSTRAP_OPTIONS, "start": DOCKER_START,
              "skipped": SKIPPED_PREFIXES, "config": config("sha256:0"), "version": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


# the machine's mirror --------------------------------------------------------------------------
def _source_files() -> Iterator[Path]:
    main, folder = SOURCES
    if main.is_file():
        yield main
    if folder.is_dir():
        yield from sorted(p for p in folder.iterdir() if p.suffix in (".list", ".sources") and p.is_file())


def _entries(path: Path) -> Iterator[tuple[str, list[str], list[str], list[str]]]:
    """(type, URIs, suites, components) of each entry of a one-line or deb822 sources file."""
    text = path.read_text(errors="replace")
    if path.suffix == ".sources":
        for paragraph in text.split("\n\n"):
            fields: dict[str, str] = {}
            key = ""
            for line in paragraph.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0].isspace() and key:
                    fields[key] += " " + line.strip()
                elif ":" in line:
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for kind in fields.get("types", "").split():
                yield kind, fields.get("uris", "").split(), fields.get("suites", "").split(), \
                    fields.get("components", "").split()
        return
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[1:2] and words[1].startswith("["):  # [options]
            while words[1:] and not words[1].endswith("]"):
                del words[1]
            del words[1]
        if len(words) >= 3:
            yield words[0], [words[1]], [words[2]], words[3:]


def mirrors(suite: str = SUITE) -> list[str]:
    """One-line apt entries for SUITE, SUITE-updates and SUITE-security (main), as this
    machine's apt sources give them: the mirror apt already uses, and only that."""
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    lines: list[str] = []
    for path in _source_files():
        for kind, uris, suites, components in _entries(path):
            if kind != "deb" or "main" not in components:
                continue
            for uri in uris:
                for name in suites:
                    line = f"deb {uri} {name} main"
                    if name in wanted and line not in lines:
                        lines.append(line)
    return lines


# building --------------------------------------------------------------------------------------
class _Tee:
    """A write-only stream that hashes what goes through it (and counts it) on its way to `out`."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _write_blob(blobs: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_layout(where: Path, layer_blob: Path, diff_id: str, image_config: dict[str, Any],
                 ref: str = "latest") -> Path:
    """An OCI image layout in `where` of one gzip layer (`layer_blob`, moved or hard-linked into
    the blobs) and `image_config`, named `ref` (what `skopeo copy oci:DIR:REF` takes)."""
    blobs = where / "blobs/sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with layer_blob.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    target = blobs / digest.hexdigest()
    if not target.exists():
        os.rename(layer_blob, target)
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{digest.hexdigest()}",
             "size": target.stat().st_size}
    image_config = {**image_config, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    config_d = _write_blob(blobs, json.dumps(image_config, sort_keys=True).encode())
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_d},
                           "layers": [layer]}, sort_keys=True).encode()
    manifest_d = _write_blob(blobs, manifest)
    (where / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (where / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_d,
         "annotations": {"org.opencontainers.image.ref.name": ref}}]}))
    return where


def read_layout(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, config) of the layout's one image."""
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs/sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    return manifest, json.loads((blobs / manifest["config"]["digest"][7:]).read_text())


def variant(layout: Path, where: Path, **settings: Any) -> Path:
    """A second layout in `where` on the same layer (hard-linked, not copied), its config's
    `config` updated with `settings` (Cmd=[...], Env=[...])."""
    manifest, image_config = read_layout(layout)
    layer = manifest["layers"][0]["digest"]
    changed = {**image_config, "config": {**image_config["config"], **settings}}
    blobs = where / "blobs/sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    os.link(layout / "blobs/sha256" / layer[7:], blobs / layer[7:])
    return write_layout(where, blobs / layer[7:], image_config["rootfs"]["diff_ids"][0], changed)


def _layer_from_rootfs_tar(rootfs: Path, out: Path) -> str:
    """Re-write mmdebstrap's tarball as a gzip layer at `out`, without device nodes; the diff_id."""
    with out.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as zipped:
        tee = _Tee(zipped)
        with tarfile.open(rootfs, "r|") as source, \
                    tarfile.open(fileobj=tee, mode="w|", format=tarfile.PAX_FORMAT) as layer:
            for member in source:
                name = member.name.removeprefix("./")
                if any(name.startswith(p) for p in SKIPPED_PREFIXES) or member.isdev():
                    continue
                layer.addfile(member, source.extractfile(member) if member.isreg() else None)
    return f"sha256:{tee.hash.hexdigest()}"


class BuildError(Exception):
    pass


def build(where: Path, work: Path) -> Path:
    """mmdebstrap the root filesystem into `work`, then the OCI layout into `where`."""
    if shutil.which("mmdebstrap") is None:
        raise BuildError("needs mmdebstrap (apt-get install mmdebstrap)")
    if os.geteuid() != 0:
        raise BuildError("mmdebstrap --mode=root needs root")
    sources = mirrors()
    if not sources:
        raise BuildError(f"no Debian {SUITE} mirror (main) in /etc/apt/sources.list or sources.list.d")
    work.mkdir(parents=True, exist_ok=True)
    start_script = work / "docker-start"
    start_script.write_text(DOCKER_START)
    rootfs = work / "rootfs.tar"
    argv = ["mmdebstrap", "--quiet", *MMDEBSTRAP_OPTIONS, SUITE, str(rootfs), *sources]
    env = {**os.environ, "NETEMU_DOCKER_START": str(start_script), "TMPDIR": str(work)}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env=env)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"mmdebstrap from {', '.join(sources)} took longer than {e.timeout:.0f}s") from e
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise BuildError(f"mmdebstrap {SUITE} from {', '.join(sources)} failed ({done.returncode}): {tail}")
    blob = work / "layer.tar.gz"
    diff_id = _layer_from_rootfs_tar(rootfs, blob)
    rootfs.unlink()
    return write_layout(where, blob, diff_id, config(diff_id))


_FAILED: dict[str, str] = {}


def ensure_layout(cache: Path = CACHE, log: IO[str] | None = None) -> Path:
    """The cached layout, built first when it is not there (under a lock, renamed into place).
    Raises BuildError saying why it cannot be built."""
    key = cache_key()
    if key in _FAILED:  # one attempt per process
        raise BuildError(_FAILED[key])
    final = cache / f"frr-{SUITE}-{key}"
    if (final / "index.json").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"frr-{SUITE}-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait for it
        if (final / "index.json").is_file():
            return final
        for stale in cache.glob(f".frr-{SUITE}-{key}.*"):  # a build that died half-way
            shutil.rmtree(stale, ignore_errors=True)
        temporary = cache / f".frr-{SUITE}-{key}.{os.getpid()}"
        started = time.monotonic()
        try:
            build(temporary / "layout", temporary / "work")
            shutil.rmtree(temporary / "work")
            os.rename(temporary / "layout", final)
        except BuildError as e:
            _FAILED[key] = str(e)
            raise
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        if log is not None:
            print(f"built {final} in {time.monotonic() - started:.0f}s", file=log)
    return final


@pytest.fixture(scope="session")
def frr_layout() -> Path:
    """The FRR image's OCI layout (one gzip layer, named `latest`), built once per machine."""
    try:
        return ensure_layout()
    except BuildError as e:
        pytest.skip(f"cannot build the FRR image with mmdebstrap from the Debian mirror: {e}")


if __name__ == "__main__":
    try:
        print(ensure_layout(log=sys.stderr))
    except BuildError as e:
        sys.exit(f"frrimage: {e}")
