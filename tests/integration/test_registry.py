"""Registry pulls end to end, against a real registry server on 127.0.0.1 (Debian's
docker-registry), with images this test builds from the static busybox and pushes with skopeo.

Nothing leaves the machine: every registries.conf written here maps docker.io (and any other
name used) to 127.0.0.1, and the tests skip when the machine's own registries.conf drop-ins,
which skopeo 1.9 reads whatever file it is pointed at, remap registries themselves. Every image
is pulled into a private store under tmp_path, so the machine's store is never touched."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from netemu import images
from netemu.errors import InputError, MachineError
from netemu.images import ImageStore
from tests.unit.test_images import directory, file, image_config, layer_tar, sha, write_oci

REGISTRY = "/usr/bin/docker-registry"


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("needs skopeo (apt-get install skopeo; `make deps`)")
    if not Path(REGISTRY).exists():
        pytest.skip("needs docker-registry (apt-get install docker-registry; `make deps`)")
    if not Path("/bin/busybox").exists():
        pytest.skip("needs busybox-static (apt-get install busybox-static)")
    for folder in (Path("/etc/containers/registries.conf.d"), Path.home() / ".config/containers/registries.conf.d"):
        for conf in folder.glob("*.conf") if folder.is_dir() else []:
            if "registry" in tomllib.loads(conf.read_text()):
                pytest.skip(f"{conf} remaps registries, and skopeo reads it: a pull might leave the machine")


# the registry server ---------------------------------------------------------------------------
def free_port() -> int:
    """A loopback port nothing listens on (closed again at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    port: int
    storage: Path
    log: Path
    proc: subprocess.Popen[bytes]
    creds: str | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def push(self, layout: Path, repository: str, tag: str = "latest", all_: bool = False) -> None:
        argv = ["skopeo", "copy", "-q", "--dest-tls-verify=false", *(["--all"] if all_ else []),
                *(["--dest-creds", self.creds] if self.creds else []),
                f"oci:{layout}:latest", f"docker://{self.host}/{repository}:{tag}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    def blob(self, digest: str) -> Path:
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def blob_gets(self, digest: str) -> int:
        """How many times a blob was served (the registry's access log)."""
        lines = self.log.read_text().splitlines()
        return sum(1 for line in lines if '"GET /v2/' in line and f"/blobs/{digest} " in line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_registry(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """start_registry(user=None) -> Registry; every server is stopped at the end, whatever happened."""
    started: list[Registry] = []

    def _start(user: tuple[str, str] | None = None) -> Registry:
        base = tmp_path / f"registry{len(started)}"
        base.mkdir()
        port = free_port()
        config: dict[str, Any] = {"version": 0.1, "log": {"level": "info", "accesslog": {"disabled": False}},
                                  "storage": {"filesystem": {"rootdirectory": str(base / "storage")},
                                              "delete": {"enabled": True}},
                                  "http": {"addr": f"127.0.0.1:{port}"}}
        if user:
            (base / "htpasswd").write_text(f"{user[0]}:{bcrypt(user[1])}\n")
            config["auth"] = {"htpasswd": {"realm": "netemu-test", "path": str(base / "htpasswd")}}
        (base / "config.yml").write_text(yaml.safe_dump(config))
        log = base / "log"
        with log.open("wb") as out:
            # The registry reads REGISTRY_* variables as configuration: REGISTRY_AUTH_FILE, set
            # for skopeo, would become its `auth: file:` setting.
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            proc = subprocess.Popen([REGISTRY, "serve", str(base / "config.yml")], stdout=out, stderr=out, env=env)
        registry = Registry(port, base / "storage", log, proc, f"{user[0]}:{user[1]}" if user else None)
        started.append(registry)
        deadline = time.monotonic() + 10
        while not _listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        return registry

    yield _start
    for registry in started:
        registry.stop()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def bcrypt(password: str) -> str:
    """htpasswd's bcrypt hash, from the C library (libxcrypt) through Python's crypt module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


# configuration and store -----------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """conf(text) writes the registries.conf that netemu and skopeo read (CONTAINERS_REGISTRIES_CONF),
    and points the credential files at empty places so the machine's own are not used."""
    path = tmp_path / "containers" / "registries.conf"
    path.parent.mkdir()
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(path))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "no-auth.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))

    def _write(text: str) -> Path:
        path.write_text(text)
        return path
    return _write


def local(registry: Registry, prefix: str = "docker.io") -> str:
    """docker.io (or `prefix`) served by the test's registry; the registry itself insecure (HTTP)."""
    return (f'[[registry]]\nprefix = "{prefix}"\nlocation = "{registry.host}"\ninsecure = true\n\n'
            f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')


# images built here ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base() -> bytes:
    return layer_tar([directory("bin"), file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)])


def extra(text: str) -> bytes:
    return layer_tar([directory("etc"), file("etc/which", text.encode())])


def layout(where: Path, layers: list[bytes], **config: Any) -> Path:
    where.mkdir(parents=True)
    return write_oci(where, layers, {**image_config(layers, Cmd=["/bin/busybox", "sh"]), **config}, ref="latest",
                     gzipped=frozenset(range(len(layers))), as_dir=True)


def blob_digest(layout_dir: Path, number: int) -> str:
    index = json.loads((layout_dir / "index.json").read_text())
    manifest = json.loads((layout_dir / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    return str(manifest["layers"][number]["digest"])


def leftovers(store: ImageStore) -> list[str]:
    """Anything a pull may leave half done: a pull directory, a temporary layer or record."""
    found = [p.name for p in store.root.glob(".pull-*")]
    for folder in (store.layers_root, store.images_root):
        found += [p.name for p in folder.glob(".t*")] if folder.is_dir() else []
    return found


def diff_id(layer: bytes) -> str:
    return f"sha256:{sha(layer)}"


# tests ----------------------------------------------------------------------------------------
def test_a_short_name_pulls_from_the_mapped_registry_and_is_found_by_both_names(tmp_path, start_registry, conf,
                                                                                store, base):
    registry = start_registry()
    registry.push(layout(tmp_path / "bb", [base]), "library/busybox")
    conf(local(registry))
    seen: list[str] = []
    info = images.pull("busybox", store=store, progress=seen.append)
    assert info.name == "docker.io/library/busybox:latest" and info.layers == [diff_id(base)]
    assert info.digest.startswith("sha256:") and info.source == "docker://docker.io/library/busybox:latest"
    assert [i.name for i in store.list_images()] == ["docker.io/library/busybox:latest"]
    for name in ("busybox", "busybox:latest", "docker.io/library/busybox:latest"):
        found = store.find_image(name)
        assert found is not None and found.id == info.id, name
    # A bar per image and per layer: counted steps, the last one complete.
    steps = [s for s in seen if isinstance(s, images.registry.Step)]
    assert any(s.kind == "busybox:latest layers" and s.done == s.total == 1 for s in steps)
    assert any(s.kind.startswith("busybox:latest ") and s.done == s.total and s.kind != "busybox:latest layers"
               for s in steps)
    assert store.layer_dirs(info)[0].joinpath("bin/busybox").is_file()
    assert not leftovers(store)
    # ensure_image: the pulled image under policy missing, without asking the registry again.
    registry.stop()
    assert images.ensure_image("busybox", "missing", None, store=store).id == info.id


def test_a_second_image_shares_the_layer_which_is_stored_and_downloaded_once(tmp_path, start_registry, conf,
                                                                             store, base):
    registry = start_registry()
    first = layout(tmp_path / "a", [base])
    second = layout(tmp_path / "b", [base, extra("two")])
    registry.push(first, "library/busybox")
    registry.push(second, "netemu/two", "1.0")
    conf(local(registry))
    a = images.pull("busybox", store=store)
    shared = blob_digest(first, 0)
    served = registry.blob_gets(shared)
    start = time.monotonic()
    b = images.pull("netemu/two:1.0", store=store)
    elapsed = time.monotonic() - start
    assert b.name == "docker.io/netemu/two:1.0" and b.layers[0] == a.layers[0] == diff_id(base)
    stored = sorted(p.name for p in store.layers_root.iterdir() if not p.name.startswith("."))
    assert stored == sorted({d[7:] for d in a.layers + b.layers}) and len(stored) == 2  # the shared layer once
    assert registry.blob_gets(shared) == served  # not downloaded again
    assert registry.blob_gets(blob_digest(second, 1)) == 1
    # Pulling it again (policy always) downloads no layer at all: it is up to date.
    again = images.pull("netemu/two:1.0", policy="always", store=store)
    assert again.id == b.id and registry.blob_gets(blob_digest(second, 1)) == 1
    assert elapsed < 30 and not leftovers(store)
    # Removing one image keeps the layer the other uses.
    store.remove_image("busybox", in_use=lambda _name: [])
    assert store.layer_dir(a.layers[0]).is_dir() and store.find_image("busybox") is None


def test_a_missing_tag_or_repository_is_an_input_error_of_one_line(tmp_path, start_registry, conf, store, base):
    registry = start_registry()
    registry.push(layout(tmp_path / "bb", [base]), "library/busybox")
    conf(local(registry))
    for ref in ("busybox:nosuch", f"{registry.host}/library/nosuch:1"):
        with pytest.raises(InputError) as caught:
            images.pull(ref, store=store)
        message = str(caught.value)
        assert caught.value.exit_code == 2 and len(message.splitlines()) == 1 and message.startswith(f"pull {ref}")
        assert "manifest unknown" in message or "name unknown" in message
    for bad in ("Busybox", "busybox:", "busybox@sha256:12", "oci:/tmp/x"):
        with pytest.raises(InputError, match="invalid image reference"):
            images.pull(bad, store=store)
    assert not store.list_images() and not leftovers(store)


def test_a_blob_whose_digest_does_not_match_fails_and_leaves_nothing(tmp_path, start_registry, conf, store, base):
    registry = start_registry()
    image = layout(tmp_path / "t", [base, extra("tampered")])
    registry.push(image, "library/tampered")
    blob = registry.blob(blob_digest(image, 1))
    blob.write_bytes(blob.read_bytes()[:-8] + b"\0" * 8)  # the same size, other bytes
    conf(local(registry))
    with pytest.raises(InputError) as caught:
        images.pull("tampered", store=store)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith("pull tampered")
    assert "digest" in message.lower()
    assert store.find_image("tampered") is None and not store.list_images()
    assert not any(p for p in store.layers_root.glob("*")) if store.layers_root.is_dir() else True
    assert not leftovers(store)


def test_an_unreachable_registry_is_a_machine_error(conf, store):
    closed = free_port()
    conf(f'[[registry]]\nprefix = "docker.io"\nlocation = "127.0.0.1:{closed}"\ninsecure = true\n')
    for ref in ("busybox", f"127.0.0.1:{closed}/x/y:1"):
        with pytest.raises(MachineError) as caught:
            images.pull(ref, store=store)
        assert caught.value.exit_code == 3 and len(str(caught.value).splitlines()) == 1
        assert str(caught.value).startswith(f"pull {ref}") and "connection refused" in str(caught.value)
    assert not leftovers(store)


def test_missing_skopeo_is_a_machine_error_naming_the_package(conf, store, monkeypatch):
    conf("")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MachineError, match="apt-get install skopeo"):
        images.pull("busybox", store=store)


def test_pull_policies_never_missing_always(tmp_path, start_registry, conf, store, base):
    registry = start_registry()
    registry.push(layout(tmp_path / "bb", [base, extra("registry")]), "library/busybox")
    conf(local(registry))
    with pytest.raises(InputError, match="'busybox' is not in the store and the pull policy is never") as caught:
        images.ensure_image("busybox", "never", None, store=store)
    assert caught.value.exit_code == 2
    # An imported image of that name wins under missing (and never): no pull.
    imported_layer = extra("imported")
    archive = write_oci(tmp_path / "imported.tar", [base, imported_layer], image_config([base, imported_layer]),
                        ref="busybox:latest")
    imported = store.import_archive(archive)[0]
    assert imported.name == "busybox:latest"
    assert images.ensure_image("busybox", "missing", None, store=store).id == imported.id
    assert images.ensure_image("busybox", "never", None, store=store).id == imported.id
    # always: the registry's image, under its canonical name; the imported one is kept.
    pulled = images.ensure_image("busybox", "always", None, store=store)
    assert pulled.name == "docker.io/library/busybox:latest" and pulled.id != imported.id
    assert {i.name for i in store.list_images()} == {"busybox:latest", "docker.io/library/busybox:latest"}
    # The registry gone: missing and never use the store, always fails as unreachable.
    registry.stop()
    assert images.pull("docker.io/library/busybox", policy="never", store=store).id == pulled.id
    assert images.pull("docker.io/library/busybox:latest", policy="missing", store=store).id == pulled.id
    with pytest.raises(MachineError):
        images.pull("docker.io/library/busybox", policy="always", store=store)
    with pytest.raises(InputError, match="--pull: 'sometimes'"):
        images.pull("busybox", policy="sometimes", store=store)


def test_a_moved_tag_replaces_the_image_and_keeps_the_old_one_by_digest(tmp_path, start_registry, conf, store, base):
    registry = start_registry()
    registry.push(layout(tmp_path / "v1", [base, extra("v1")]), "library/moving")
    conf(local(registry))
    old = images.pull("moving", store=store)
    registry.push(layout(tmp_path / "v2", [base, extra("v2")]), "library/moving")
    new = images.pull("moving", policy="always", store=store)
    assert new.id != old.id and store.find_image("moving").id == new.id
    kept = store.find_image(f"docker.io/library/moving@{old.digest}")
    assert kept is not None and kept.id == old.id and store.layer_dir(old.layers[1]).is_dir()


def test_a_multi_arch_index_gives_this_machines_platform(tmp_path, start_registry, conf, store, base):
    registry = start_registry()
    root = tmp_path / "index"
    layers = {"amd64": extra("amd64"), "arm64": extra("arm64")}
    parts = {arch: layout(tmp_path / arch, [base, top], architecture=arch) for arch, top in layers.items()}
    _write_index(root, parts)
    registry.push(root, "library/multi", all_=True)
    conf(local(registry))
    _os, arch, _variant = images.machine_platform()
    if arch not in layers:
        pytest.skip(f"this machine is {arch}: the index offers amd64 and arm64")
    info = images.pull("multi", store=store)
    assert info.layers == [diff_id(base), diff_id(layers[arch])]
    assert store.layer_dirs(info)[0].joinpath("etc/which").read_text() == arch


def _write_index(root: Path, parts: dict[str, Path]) -> None:
    """One OCI layout holding each single-platform layout's blobs, and an index of their
    manifests with platforms, named `latest`."""
    blobs = root / "blobs/sha256"
    blobs.mkdir(parents=True)
    entries = []
    for arch, part in parts.items():
        for blob in (part / "blobs/sha256").iterdir():
            shutil.copy(blob, blobs / blob.name)
        entry = json.loads((part / "index.json").read_text())["manifests"][0]
        entry.pop("annotations", None)
        entries.append({**entry, "platform": {"os": "linux", "architecture": arch,
                                              **({"variant": "v8"} if arch == "arm64" else {})}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": entries}).encode()
    (blobs / sha(index)).write_bytes(index)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": f"sha256:{sha(index)}",
         "size": len(index), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))


def test_a_mirror_serves_a_registry_whose_location_is_down(tmp_path, start_registry, conf, store, base):
    registry = start_registry()
    registry.push(layout(tmp_path / "bb", [base]), "library/busybox")
    closed = free_port()
    conf(f'[[registry]]\nprefix = "registry.example.invalid"\nlocation = "127.0.0.1:{closed}"\ninsecure = true\n'
         f'[[registry.mirror]]\nlocation = "{registry.host}"\ninsecure = true\n\n'
         f'[[registry]]\nprefix = "docker.io"\nlocation = "127.0.0.1:{closed}"\ninsecure = true\n')
    info = images.pull("registry.example.invalid/library/busybox", store=store)
    assert info.name == "registry.example.invalid/library/busybox:latest" and info.layers == [diff_id(base)]


def test_search_registries_and_aliases_are_tried_in_order(tmp_path, start_registry, conf, store, base):
    registry = start_registry()
    registry.push(layout(tmp_path / "bb", [base, extra("aliased")]), "team/tools")
    registry.push(layout(tmp_path / "cc", [base, extra("searched")]), "searched")
    closed = free_port()
    path = conf(f'unqualified-search-registries = ["127.0.0.1:{closed}", "{registry.host}"]\n'
                f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
                f'[[registry]]\nprefix = "docker.io"\nlocation = "127.0.0.1:{closed}"\n')
    dropins = path.with_name("registries.conf.d")
    dropins.mkdir()
    (dropins / "10-tools.conf").write_text(f'[aliases]\n"tools" = "{registry.host}/team/tools"\n')
    aliased = images.pull("tools", store=store)
    assert aliased.name == f"{registry.host}/team/tools:latest" and store.find_image("tools").id == aliased.id
    # The first search registry is down, the second has it: found there (a closed port is not
    # an answer that the image is absent, but the next registry is still tried).
    searched = images.pull("searched", store=store)
    assert searched.name == f"{registry.host}/searched:latest"
    with pytest.raises(MachineError) as caught:  # down on one, absent on the other: exit 3
        images.pull("nowhere", store=store)
    assert f"127.0.0.1:{closed}/nowhere:latest" in str(caught.value) and "manifest unknown" in str(caught.value)


def test_credentials_come_from_the_auth_file_or_the_docker_config(tmp_path, start_registry, conf, store, base,
                                                                   monkeypatch):
    registry = start_registry(user=("netemu", "s3cret"))
    registry.push(layout(tmp_path / "bb", [base]), "private/busybox")
    conf(local(registry))
    ref = f"{registry.host}/private/busybox"
    with pytest.raises(InputError) as caught:
        images.pull(ref, store=store)
    assert "unauthorized" in str(caught.value).lower() or "authentication required" in str(caught.value)
    auth = {"auths": {registry.host: {"auth": base64.b64encode(b"netemu:s3cret").decode()}}}
    (tmp_path / "auth.json").write_text(json.dumps(auth))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    first = images.pull(ref, store=store)
    store.remove_image(first.name, in_use=lambda _name: [])
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps(auth))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "no-auth.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    assert images.pull(ref, store=store).id == first.id
