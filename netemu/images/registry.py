"""Pulls: an image from an OCI/Docker registry, or from the local Docker daemon, fetched by
skopeo into an OCI layout under the store and imported like `image import` does.

Why skopeo rather than netemu's own HTTP client: the registry protocol is the easy part; what
users expect besides it is the containers tools' behaviour: token and basic auth from auth.json
and ~/.docker/config.json (credential helpers included), mirrors, insecure and blocked
registries from registries.conf, TLS certificates under /etc/containers/certs.d, retries, the
Docker daemon's API. skopeo (Debian package `skopeo`) is that code, maintained with Podman.

A pull, in steps:
1. resolve the reference (reference.py): a short name through registries.conf's aliases and
   search registries, else docker.io;
2. read the manifest with `skopeo inspect --raw`, following an index to this machine's
   platform, and the config, each checked against its digest;
3. layers whose diff_id the store has already are not downloaded: an empty file stands for their
   blob in the layout, which skopeo takes as present (and the importer never reads, because the
   store has the layer);
4. `skopeo copy docker://REPO@DIGEST oci:LAYOUT`, pinned to the digest read in 2, into a private
   directory under the store (never the machine's /tmp; skopeo's own temporary files too);
5. the store's importer checks every digest again and unpacks the new layers once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netemu.errors import InputError, MachineError, NetemuError, one_line
from netemu.images.imagestore import ImageInfo, ImageStore, Pulled, check_name
from netemu.images.imagestore import store as default_store
from netemu.images.limits import STREAM_SLACK, Budget, max_image_bytes
from netemu.images.reference import Reference, RegistriesConf, load_registries_conf, parse_reference, resolve
from netemu.progress import Step
from netemu.topology.model import is_stored_image

Progress = Callable[[str], None]
POLICIES = ("always", "missing", "never")
SKOPEO = "skopeo"
SKOPEO_PACKAGE = "skopeo"
INSPECT_TIMEOUT = 120  # seconds for reading one manifest or config; a copy has no limit
POLICY_FILES = (Path.home() / ".config/containers/policy.json", Path("/etc/containers/policy.json"))
_ARCH = {"x86_64": ("amd64", None), "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
         "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i686": ("386", None), "ppc64le": ("ppc64le", None),
         "s390x": ("s390x", None), "riscv64": ("riscv64", None)}
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.list.v2+json")
# What the registry answered that is the user's to fix (exit 2); anything else is the machine's
# or the network's (exit 3): refused connections, DNS, TLS, timeouts, no Docker daemon.
_INPUT_ANSWERS = ("manifest unknown", "name unknown", "not found", "unauthorized", "authentication required",
                  "denied", "no image found", "invalid reference", "digest did not match", "digest mismatch",
                  "does not match", "no such image", "reference does not exist", "blocked", "no linux/",
                  "repository name must", "invalid image name", "registries configuration",
                  # a manifest or config the registry sent that is not one: the registry's content is
                  # wrong (exit 2), not the network
                  "error parsing manifest", "cannot unmarshal", "unsupported manifest", "invalid character",
                  "more than its manifest declares")
# What a pull's directory may hold besides the layers to download: the manifest and config, each
# at most 4 MiB to skopeo, index.json and the layout's small files.
METADATA_SLACK = 9 << 20


def machine_platform() -> tuple[str, str, str | None]:
    """(os, architecture, variant) of this machine, as image indexes write them."""
    arch, variant = _ARCH.get(platform.machine(), (platform.machine(), None))
    return "linux", arch, variant


def _check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InputError(f"--pull: '{policy}' is not one of {', '.join(POLICIES)}")
    return policy


# the two entry points -----------------------------------------------------------------------
def pull(ref: str, *, policy: str = "missing", progress: Progress | None = None, max_bytes: int | None = None,
         store: ImageStore | None = None) -> ImageInfo:
    """The image `ref` names, pulled as Docker's --pull says: `always` from its registry (or the
    Docker daemon, for `docker-daemon:NAME`), `missing` only when the store has none of that
    name, `never` from the store only. It is then found by find_image() under its canonical name
    (docker.io/library/busybox:latest) and under the name written (`busybox`)."""
    _check_policy(policy)
    st = store or default_store()
    say = progress or (lambda _msg: None)
    target = parse_reference(ref)
    conf = load_registries_conf() if target.transport == "docker" else None
    if policy != "always" and (local := _local(st, ref, target, conf)) is not None:
        return local
    if policy == "never":
        raise InputError(f"image '{ref}' is not in the store and the pull policy is never "
                         f"(`netemu image pull {ref}` fetches it)")
    if target.transport == "docker-daemon":
        check_name(f"{target.repository}:{target.tag}", f"pull {ref}")
        info = _pull_daemon(st, ref, target, say, max_bytes)
    else:
        assert conf is not None
        candidates = resolve(target, conf)
        for candidate in candidates:  # before any download: the name the image is stored under
            check_name(candidate.canonical, f"pull {ref}")
        info = _pull_first(st, ref, candidates, conf, say, max_bytes)
    st.add_alias(_alias_key(ref, target), info.name)
    return info


def ensure_image(ref: str, policy: str = "missing", progress: Progress | None = None, *,
                 store: ImageStore | None = None, max_bytes: int | None = None) -> ImageInfo:
    """What `up` calls for each node's image: an image of that name in the store (imported or
    pulled) wins under `missing`; `never` fails with exit 2 naming it when there is none. The
    ImageInfo returned is the image to run: under `always` it is the one just pulled, even where
    an imported image of the same short name exists."""
    if not is_stored_image(ref):
        raise InputError(f"image '{ref}': the machine's root or a directory is not an image to pull")
    return pull(ref, policy=policy, progress=progress, store=store, max_bytes=max_bytes)


def _alias_key(text: str, target: Reference) -> str:
    """The name written, with Docker's implicit `:latest`, so `busybox` and `busybox:latest`
    both find it."""
    if target.transport == "docker" and not target.digest and target.tag == "latest" \
            and not text.endswith(":latest"):
        return f"{text}:latest"
    return text


def _local(st: ImageStore, text: str, target: Reference, conf: RegistriesConf | None) -> ImageInfo | None:
    """An image of that name in the store: its own name or an earlier pull's alias, else (for a
    registry reference) any name it resolves to, remembered as an alias from now on."""
    info = st.find_image(text)
    if info is not None or target.transport != "docker":
        return info
    for candidate in resolve(target, conf):
        info = st.find_image(candidate.canonical)
        if info is not None:
            st.add_alias(_alias_key(text, target), info.name)
            return info
    return None


# registry pulls ---------------------------------------------------------------------------
class PullFailed(NetemuError):
    """One candidate's pull failed: `input` says whether the answer was the user's to fix."""

    def __init__(self, candidate: str, answer: str, input_: bool) -> None:
        super().__init__(answer)
        self.candidate, self.answer, self.input = candidate, answer, input_


def _pull_first(st: ImageStore, text: str, candidates: list[Reference], conf: RegistriesConf, say: Progress,
                max_bytes: int | None) -> ImageInfo:
    """The first candidate that pulls, in order (a short name's search registries). One line
    names the reference and every answer; exit 2 only when every answer was the user's to fix."""
    failures: list[PullFailed] = []
    for candidate in candidates:
        try:
            return _pull_registry(st, candidate, conf, say, max_bytes)
        except PullFailed as e:
            failures.append(e)
    if len(failures) == 1:
        only = failures[0]
        where = "" if only.candidate in (text, f"{text}:latest") else f" ({only.candidate})"
        message = one_line(f"pull {text}{where}: {only.answer}")
    else:
        message = one_line(f"pull {text}: " + "; ".join(f"{f.candidate}: {f.answer}" for f in failures))
    if all(f.input for f in failures):
        raise InputError(message)
    raise MachineError(message)


@dataclass
class Plan:
    """What a pull fetches: the manifest pinned by digest, its layers and their diff_ids."""

    digest: str  # of the image manifest for this platform
    config_digest: str
    layers: list[tuple[str, int]] = field(default_factory=list)  # (blob digest, size), bottom first
    diff_ids: list[str] = field(default_factory=list)


def _pull_registry(st: ImageStore, candidate: Reference, conf: RegistriesConf, say: Progress,
                   max_bytes: int | None) -> ImageInfo:
    skopeo = Skopeo(conf, candidate)
    label = candidate.familiar
    say(f"{label}: resolving")
    plan = _plan(skopeo, candidate)
    existing = st.find_image(candidate.canonical)
    if (existing is not None and existing.name == candidate.canonical and existing.id == plan.config_digest
            and all(st.layer_dir(d).is_dir() for d in existing.layers)):
        say(f"{label}: up to date ({existing.short_id})")
        return existing
    cap = max_image_bytes() if max_bytes is None else max_bytes
    for attempt in (1, 2):
        with st.pull_dir() as work:
            # Layers the store holds are not downloaded; the second attempt, after a concurrent
            # `image rm` took one of them away meanwhile, downloads every layer.
            reuse = [d for d in plan.diff_ids if st.layer_dir(d).is_dir()] if attempt == 1 else []
            layout = _seed(work, plan, reuse)
            _check_room(st, candidate.canonical, plan, reuse, cap)
            source = f"docker://{candidate.repository}@{plan.digest}"
            skopeo.copy(source, layout, work, Bars(label, plan, reuse, say, layout), _allowed(plan, reuse))
            try:
                return st.import_pulled(layout, candidate.canonical, Pulled(f"docker://{candidate}", plan.digest),
                                        say, cap)
            except InputError as e:
                if attempt == 2 or all(st.layer_dir(d).is_dir() for d in reuse):
                    raise PullFailed(str(candidate), str(e), True) from None
    raise AssertionError("unreachable")


def _plan(skopeo: Skopeo, candidate: Reference) -> Plan:
    """The manifest for this machine (an index followed to its platform) and the config, each
    checked against the digest it was asked by."""
    raw = skopeo.inspect(f"docker://{candidate}")
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    if candidate.digest and candidate.digest != digest:
        raise PullFailed(str(candidate), f"the registry's manifest is {digest}, not the {candidate.digest} asked for",
                         True)
    doc = _json(candidate, raw, "manifest")
    if doc.get("mediaType") in _INDEX_TYPES or "manifests" in doc:
        digest = _choose_platform(candidate, doc)
        raw = skopeo.inspect(f"docker://{candidate.repository}@{digest}")
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise PullFailed(str(candidate), f"manifest {digest}: digest mismatch", True)
        doc = _json(candidate, raw, "manifest")
    if doc.get("schemaVersion") != 2 or not isinstance(doc.get("config"), dict):
        raise PullFailed(str(candidate), "a manifest of schema version 1 or without config: not supported", True)
    config_digest = str(doc["config"].get("digest"))
    config_raw = skopeo.inspect(f"docker://{candidate.repository}@{digest}", "--config")
    if "sha256:" + hashlib.sha256(config_raw).hexdigest() != config_digest:
        raise PullFailed(str(candidate), f"config {config_digest}: digest mismatch", True)
    config = _json(candidate, config_raw, "config")
    layers = _layers(candidate, doc)
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        diff_ids = []  # an odd image: the importer reports it; nothing is reused meanwhile
    return Plan(digest, config_digest, layers, [str(d) for d in diff_ids])


def _layers(candidate: Reference, doc: dict[str, Any]) -> list[tuple[str, int]]:
    """The manifest's layer descriptors. Each must declare its size as a non-negative integer:
    the download is held to what they declare (Skopeo.copy), so a registry cannot have an
    undeclared or negative size fill the store's filesystem with a blob of any length."""
    entries = doc.get("layers")
    if not isinstance(entries, list) or not all(isinstance(d, dict) for d in entries):
        raise PullFailed(str(candidate), "the registry's manifest has no list of layer descriptors", True)
    layers = []
    for number, entry in enumerate(entries):
        size = entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PullFailed(str(candidate), f"the registry's manifest gives layer {number + 1} the size "
                                             f"{one_line(repr(size))[:40]}, not a number of bytes", True)
        layers.append((str(entry.get("digest")), size))
    return layers


def _json(candidate: Reference, raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        raise PullFailed(str(candidate), f"the registry's {what} is not a JSON object", True)
    return doc


def _choose_platform(candidate: Reference, index: dict[str, Any]) -> str:
    """The index entry for this machine: its os and architecture, the variant when one is given
    (arm64's v8 is the default), as Docker chooses."""
    os_, arch, variant = machine_platform()
    listed = index.get("manifests")
    listed = listed if isinstance(listed, list) else []  # an index without a list offers nothing
    entries = [d for d in listed if isinstance(d, dict) and isinstance(d.get("platform"), dict)]
    mine = [d for d in entries if d["platform"].get("os") == os_ and d["platform"].get("architecture") == arch]
    exact = [d for d in mine if d["platform"].get("variant") in (variant, None)]
    chosen = (exact or mine)[:1]
    if not chosen:
        offered = sorted({f"{d['platform'].get('os')}/{d['platform'].get('architecture')}" for d in entries})
        raise PullFailed(str(candidate), f"no {os_}/{arch} image in its index (it has {', '.join(offered) or 'none'})",
                         True)
    digest = chosen[0].get("digest")
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise PullFailed(str(candidate), f"its index names the {os_}/{arch} image by "
                                         f"{one_line(repr(digest))[:80]}, not a sha256 digest", True)
    return digest


def _seed(work: Path, plan: Plan, reuse: list[str]) -> Path:
    """The layout skopeo writes into, with an empty stand-in for each blob whose layer the store
    holds: skopeo's OCI destination takes an existing blob file as already there."""
    layout = work / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for (digest, _size), diff_id in zip(plan.layers, plan.diff_ids, strict=False):
        if diff_id in reuse and re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            (blobs / digest[7:]).touch()
    return layout


def _allowed(plan: Plan, reuse: list[str]) -> int:
    """What the pull's directory may hold: the blobs to download as the manifest declares them,
    and the metadata. skopeo takes a blob's declared size on trust and writes what the registry
    sends, so the copy is watched against this bound (Skopeo.copy)."""
    pairs = zip(plan.layers, plan.diff_ids or [""] * len(plan.layers), strict=False)
    return sum(size for (_digest, size), diff_id in pairs if diff_id not in reuse) + METADATA_SLACK


def _check_room(st: ImageStore, name: str, plan: Plan, reuse: list[str], cap: int) -> None:
    """Before downloading: the blobs must fit on the store's filesystem, and blobs larger than
    the cap cannot unpack below it (the importer counts what they unpack to, exactly)."""
    todo = sum(size for (_digest, size), diff_id in zip(plan.layers, plan.diff_ids or [""] * len(plan.layers),
                                                         strict=False) if diff_id not in reuse)
    budget = Budget(name, cap, st.root)
    budget.layer = f"{len(plan.layers) - len(reuse)} layers to download"
    if todo > cap + STREAM_SLACK:
        raise PullFailed(name, f"its layers are {todo} bytes to download, more than the cap of {cap} bytes "
                               "(--max-size or NETEMU_MAX_IMAGE_BYTES)", True)
    budget.check_space(todo)


# the docker daemon ----------------------------------------------------------------------------
def _pull_daemon(st: ImageStore, text: str, target: Reference, say: Progress, max_bytes: int | None) -> ImageInfo:
    """`docker-daemon:NAME[:TAG]`: the image `docker pull` or `docker build` left in the local
    daemon (DOCKER_HOST or /var/run/docker.sock), exported by skopeo through the daemon's API."""
    if target.digest:
        raise InputError(f"pull {text}: the Docker daemon is asked by name and tag, not by digest")
    skopeo = Skopeo(None, target)
    cap = max_image_bytes() if max_bytes is None else max_bytes
    name = f"{target.repository}:{target.tag}"
    say(f"{target.familiar}: exporting from the Docker daemon")
    with st.pull_dir() as work:
        layout = work / "layout"
        try:
            skopeo.copy(f"docker-daemon:{name}", layout, work, Bars(target.familiar, None, [], say, layout))
            return st.import_pulled(layout, name, Pulled(f"docker-daemon:{name}"), say, cap)
        except PullFailed as e:
            message = one_line(f"pull {text}: {e.answer}")
            raise (InputError(message) if e.input else MachineError(message)) from None


# skopeo -------------------------------------------------------------------------------------
class Skopeo:
    """skopeo commands for one reference, pointed at the registries.conf netemu read, the store's
    temporary directory and this machine's platform. Credentials: skopeo reads them itself
    ($REGISTRY_AUTH_FILE, else ${XDG_RUNTIME_DIR}/containers/auth.json, then
    ~/.config/containers/auth.json, $DOCKER_CONFIG/config.json or ~/.docker/config.json), so
    its environment is netemu's own."""

    def __init__(self, conf: RegistriesConf | None, ref: Reference) -> None:
        binary = shutil.which(SKOPEO)
        if binary is None:
            raise MachineError(f"pull {ref}: skopeo is not installed: apt-get install {SKOPEO_PACKAGE} "
                               "(netemu pulls images through it)")
        os_, arch, variant = machine_platform()
        self.ref = ref
        self.base = [binary, "--override-os", os_, "--override-arch", arch]
        if variant:
            self.base += ["--override-variant", variant]
        if conf is not None and conf.skopeo_path is not None:
            self.base += ["--registries-conf", str(conf.skopeo_path)]
        if not any(p.is_file() for p in POLICY_FILES):
            self.base.append("--insecure-policy")  # no signature policy on this machine: Docker's default

    def _failed(self, stderr: str) -> PullFailed:
        answer = _answer(stderr)
        return PullFailed(str(self.ref), answer, any(m in answer.lower() for m in _INPUT_ANSWERS))

    def inspect(self, source: str, *extra: str) -> bytes:
        try:
            done = subprocess.run([*self.base, "inspect", "--raw", *extra, source], capture_output=True,
                                  timeout=INSPECT_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise PullFailed(str(self.ref), f"no answer in {INSPECT_TIMEOUT}s", False) from None
        if done.returncode != 0:
            raise self._failed(done.stderr.decode(errors="replace"))
        return done.stdout

    def copy(self, source: str, layout: Path, work: Path, bars: Bars, allowed: int | None = None) -> None:
        """skopeo copy into the layout, its progress read 5 times a second into `bars`; killed
        once `work` holds more than `allowed` bytes (None: no bound, the local Docker daemon)."""
        tmp = work / "tmp"
        tmp.mkdir(exist_ok=True)
        argv = [*self.base, "--tmpdir", str(tmp), "copy", "--retry-times", "2",
                "--dest-oci-accept-uncompressed-layers", *_daemon_host(source), source, f"oci:{layout}:image"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                env={**os.environ, "TMPDIR": str(tmp)})
        errors: list[str] = []
        lines: list[str] = []
        # Both pipes are drained by threads; `bars` is fed from this thread only, so a progress
        # callback never runs concurrently with itself.
        readers = [threading.Thread(target=lambda: errors.extend(proc.stderr or []), daemon=True),
                   threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)]
        for reader in readers:
            reader.start()
        seen = 0
        try:
            while True:
                finished = _wait(proc, 0.2)
                for line in lines[seen:]:
                    bars.line(line.strip())
                seen = len(lines)
                bars.tick()
                if finished:
                    break
                if allowed is not None and _bytes_under(work) > allowed:
                    raise PullFailed(str(self.ref), f"the registry sent more than its manifest declares "
                                                    f"({allowed} bytes with the metadata): the pull was stopped",
                                     True)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for reader in readers:
                reader.join(5)
        if proc.returncode != 0:
            raise self._failed("".join(errors))


def _bytes_under(path: Path) -> int:
    """Bytes of the regular files below `path` (skopeo's blobs, whole or being written)."""
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):  # renamed or removed meanwhile
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _wait(proc: subprocess.Popen[str], seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def _daemon_host(source: str) -> list[str]:
    host = os.environ.get("DOCKER_HOST", "")
    return ["--src-daemon-host", host] if source.startswith("docker-daemon:") and host else []


def _answer(stderr: str) -> str:
    """skopeo's fatal message without its wrapping (`Error parsing image name "...": `)."""
    found = re.findall(r'level=fatal msg="((?:[^"\\]|\\.)*)"', stderr)
    text = found[-1].replace('\\"', '"') if found else (stderr.strip().splitlines() or ["skopeo failed"])[-1]
    text = re.sub(r'^(Error parsing image name|initializing source) "?[^"]*"?: ', "", text)
    head, sep, tail = text.rpartition(": ")
    if sep and head.endswith(tail):  # "manifest unknown: manifest unknown"
        text = head
    return one_line(text)


# progress -------------------------------------------------------------------------------------
class Bars:
    """A pull's progress from what skopeo prints and writes: a bar per layer to download (KiB
    written into the layout, from its temporary `oci-put-blob*` file, then the finished blob)
    and one per image (layers there, those the store had counting at once)."""

    def __init__(self, label: str, plan: Plan | None, reuse: list[str], say: Progress, layout: Path) -> None:
        self.label, self.say, self.layout = label, say, layout
        pairs = zip(plan.layers, plan.diff_ids or [""] * len(plan.layers), strict=False) if plan else []
        self.sizes = {digest: size for (digest, size), diff_id in pairs if diff_id not in reuse}
        self.total = len(plan.layers) if plan else 0
        self.done: set[str] = set()
        self.started: list[str] = []  # blobs skopeo began, in order
        self.temps: dict[str, str] = {}  # temporary file -> the blob it is taken to be
        self.shown: dict[str, int] = {}
        if self.total:
            self._count()

    def _count(self) -> None:
        have = self.total - len(self.sizes) + len(self.done)
        self.say(Step(f"{self.label} layers", have, self.total, f"{self.label}: {have}/{self.total} layers"))

    def line(self, text: str) -> None:
        match = re.match(r"Copying blob (sha256:[0-9a-f]{64})", text)
        if match and match.group(1) in self.sizes and match.group(1) not in self.started:
            self.started.append(match.group(1))
        elif text and not self.sizes:
            self.say(f"{self.label}: {text}")  # no plan (the Docker daemon): skopeo's own lines

    def tick(self) -> None:
        blobs = self.layout / "blobs" / "sha256"
        for digest in self.sizes:
            if digest not in self.done and (blobs / digest[7:]).is_file():
                self.done.add(digest)
                self._bar(digest, self.sizes[digest])
                self._count()
        for temp in sorted(self.layout.glob("oci-put-blob*"), key=lambda p: p.name):
            if temp.name not in self.temps:
                free = [d for d in self.started if d not in self.done and d not in self.temps.values()]
                if not free:
                    continue
                self.temps[temp.name] = free[0]
            digest = self.temps[temp.name]
            if digest not in self.done:
                with contextlib.suppress(OSError):  # renamed into place meanwhile: the next tick sees it
                    self._bar(digest, temp.stat().st_size)

    def _bar(self, digest: str, written: int) -> None:
        kib, total = written >> 10, max(self.sizes[digest] >> 10, 1)
        if self.shown.get(digest) != kib:
            self.shown[digest] = kib
            self.say(Step(f"{self.label} {digest[7:19]}", min(kib, total), total,
                          f"{self.label}: layer {digest[7:19]} {min(kib, total)}/{total} KiB"))
