"""Hostile registries, careless references and hosts that attack `netemu run` and the
namespace sharing of the Docker-parity features: each test is an attack that once worked.

The registry here is a small HTTP server on 127.0.0.1 that serves whatever it is given (a
real registry refuses to store most of these manifests); skopeo reaches it as an insecure
registry named in the test's own registries.conf, and every image goes to a private store
under tmp_path. Labs use `image: host` and are taken down whatever happens."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from netemu import images
from netemu.errors import InputError
from netemu.images import ImageStore
from netemu.runtime import cleanup, sharing
from tests.conftest import NETEMU, ROOT, run_cli, unique_name
from tests.unit.test_images import directory, file, layer_tar

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class CraftedRegistry:
    """Serves manifests by tag or digest and blobs by digest, as given, in chunks of 256 KiB a
    millisecond apart (so a download takes long enough to be watched); counts the bytes sent."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.sent: dict[str, int] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:
                path = self.path.split("?")[0]
                if path.rstrip("/") == "/v2":
                    return self._send(b"{}", "application/json", head)
                if "/manifests/" in path:
                    repo, ref = path[4:].split("/manifests/")
                    found = registry.manifests.get(f"{repo}:{ref}")
                    return self._send(*found, head) if found else self._missing("MANIFEST_UNKNOWN")
                if "/blobs/" in path and path.rsplit("/", 1)[1] in registry.blobs:
                    digest = path.rsplit("/", 1)[1]
                    return self._send(registry.blobs[digest], "application/octet-stream", head, digest)
                return self._missing("BLOB_UNKNOWN")

            def _missing(self, code: str) -> None:
                body = json.dumps({"errors": [{"code": code, "message": code.lower().replace("_", " ")}]}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send(self, body: bytes, kind: str, head: bool, blob: str | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Content-Digest", digest_of(body))
                self.end_headers()
                if head:
                    return
                for start in range(0, len(body), 256 << 10):
                    try:
                        self.wfile.write(body[start:start + (256 << 10)])
                    except OSError:
                        return  # the client hung up
                    if blob:
                        registry.sent[blob] = registry.sent.get(blob, 0) + min(256 << 10, len(body) - start)
                        time.sleep(0.001)

        return Handler

    def blob(self, data: bytes) -> str:
        self.blobs[digest_of(data)] = data
        return digest_of(data)

    def manifest(self, repo: str, tag: str, doc: dict[str, Any], kind: str = OCI_MANIFEST) -> str:
        body = json.dumps(doc).encode()
        for ref in (tag, digest_of(body)):
            self.manifests[f"{repo}:{ref}"] = (body, kind)
        return digest_of(body)

    def image(self, repo: str, layers: list[bytes], config: dict[str, Any] | None = None,
              edit: Callable[[dict[str, Any]], None] | None = None) -> str:
        """An image of uncompressed layers; `config` replaces its config, `edit` changes its manifest."""
        diff_ids = [digest_of(layer) for layer in layers]
        raw = json.dumps(config if config is not None else {
            "architecture": images.registry.machine_platform()[1], "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {"Cmd": ["/bin/sh"]}}).encode()
        doc: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.blob(raw),
                       "size": len(raw)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": self.blob(layer),
                        "size": len(layer)} for layer in layers]}
        if edit:
            edit(doc)
        return self.manifest(repo, "latest", doc)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def crafted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CraftedRegistry]:
    if shutil.which("skopeo") is None:
        pytest.skip("needs skopeo (apt-get install skopeo; `make deps`)")
    registry = CraftedRegistry()
    conf = tmp_path / "containers" / "registries.conf"
    conf.parent.mkdir()
    conf.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "no-auth.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    yield registry
    registry.stop()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


def consistent(store: ImageStore) -> None:
    """No pull directory or temporary entry left, and every record's layers there."""
    assert not list(store.root.glob(".pull-*"))
    for folder in (store.layers_root, store.images_root):
        assert not (list(folder.glob(".t*")) if folder.is_dir() else [])
    for info in store.list_images():
        assert all(store.layer_dir(d).is_dir() for d in info.layers)


SMALL = layer_tar([directory("etc"), file("etc/hostname", b"crafted\n")])


def _arch() -> str:
    return images.registry.machine_platform()[1]


# What a registry sent that netemu read itself: each once a traceback, or an accepted lie.
CRAFTED: dict[str, Callable[[CraftedRegistry, str], None]] = {
    "config rootfs not an object": lambda r, repo: r.image(repo, [SMALL], config={
        "architecture": _arch(), "os": "linux", "rootfs": "layers"}),
    "index manifests not a list": lambda r, repo: r.manifest(repo, "latest", {
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": 5}, OCI_INDEX),
    "index entry digest a path": lambda r, repo: r.manifest(repo, "latest", {
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"digest": "../../../etc", "platform": {"os": "linux", "architecture": _arch()}}]}, OCI_INDEX),
    "negative layer size": lambda r, repo: r.image(repo, [SMALL], edit=lambda d: d["layers"][0].update(size=-1)),
    "layer size a string": lambda r, repo: r.image(repo, [SMALL], edit=lambda d: d["layers"][0].update(size="9")),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_manifest_or_config_is_one_line_exit_2_and_the_store_stays_consistent(crafted, store, case):
    repo = "crafted/" + case.replace(" ", "-")
    CRAFTED[case](crafted, repo)
    with pytest.raises(InputError) as caught:  # exit 2: the registry's content, not the network
        images.pull(f"{crafted.host}/{repo}", store=store, policy="always")
    assert len(str(caught.value).splitlines()) == 1 and crafted.host in str(caught.value)
    assert store.list_images() == []
    consistent(store)


def test_a_blob_longer_than_its_manifest_declares_is_not_downloaded_to_the_end(crafted, store):
    """skopeo writes what the registry sends whatever the descriptor's size: a registry could
    fill the store's filesystem with one endless blob that the manifest calls 100 bytes."""
    big = layer_tar([directory("etc"), file("etc/big", os.urandom(64 << 20))])
    crafted.image("crafted/liar", [big], edit=lambda d: d["layers"][0].update(size=100))
    with pytest.raises(InputError, match="more than its manifest declares"):
        images.pull(f"{crafted.host}/crafted/liar", store=store, policy="always", max_bytes=1 << 30)
    assert crafted.sent.get(digest_of(big), 0) < len(big)  # stopped on the way (how soon depends on load)
    assert store.list_images() == []
    consistent(store)


def test_hostile_layers_from_a_registry_write_nothing_outside_the_store(crafted, store, tmp_path):
    """The same unpacker as `image import`: `../`, absolute and outward links are refused."""
    from tests.unit.test_images import hardlink, symlink

    outside = tmp_path / "outside"
    for number, members in enumerate([[file(f"../../../../{outside}/dotdot", b"x")],
                                      [file(f"{outside}/absolute", b"x")],
                                      [symlink("up", "../../../.."), file("up/through", b"x")],
                                      [hardlink("shadow", "../../../../etc/shadow")]]):
        crafted.image(f"crafted/layer{number}", [layer_tar(members)])
        with pytest.raises(InputError):
            images.pull(f"{crafted.host}/crafted/layer{number}", store=store, policy="always")
    assert not outside.exists()
    assert store.list_images() == []
    consistent(store)


def test_a_name_too_long_to_store_is_refused_before_anything_is_fetched(crafted, store):
    """Docker allows 255 characters; quoted for a file name ('/' is three bytes) they can be too
    many for a directory entry: the pull downloaded everything, then failed writing the record."""
    repo = "/".join(["a"] * 100)
    crafted.image(repo, [SMALL])
    store.images_root.mkdir(parents=True)
    with pytest.raises(InputError, match="not a valid image name"):
        images.pull(f"{crafted.host}/{repo}", store=store, policy="always")
    assert not crafted.sent
    assert store.find_image(f"{crafted.host}/{repo}") is None  # a lookup, not ENAMETOOLONG
    consistent(store)


@pytest.mark.parametrize("ref", ["oci:/tmp/x", "dir:/etc", "oci-archive:/x.tar", "docker-archive:/x",
                                 "containers-storage:x", "../../x", "docker-daemon:../x", "docker://../x",
                                 "a\nb", "a\x00b", "busybox:\u00e9t\u00e9", "x" * 300])
def test_a_reference_that_names_a_local_path_or_is_not_one_is_refused(ref):
    with pytest.raises(InputError) as caught:
        images.pull(ref, store=ImageStore(Path(tempfile.mkdtemp()) / "store"))
    assert len(str(caught.value).splitlines()) == 1


# --network container:NAME across labs ------------------------------------------------------
def _lab(tmp_path: Path, name: str, network: str = "bridge") -> None:
    del tmp_path
    done = run_cli("run", "-d", "--pull", "never", "--name", name, "--network", network, "host", "sleep", "300")
    assert done.returncode == 0, done.stderr


def test_a_lab_replaced_while_a_host_starts_never_hands_it_the_machines_network(tmp_path):
    """The host's confinement (NET_ADMIN or not) and its --net are read from the other lab's
    record at two moments: a lab taken down and run again on the machine's network between them
    gave a host judged to own its network NET_ADMIN over the machine's."""
    name = unique_name("x")
    network = f"lab:{name}/{name}"
    try:
        _lab(tmp_path, name)
        path, holder = sharing.other_lab_netns(network)  # the confinement's look: a namespace of its own
        assert holder is not None
        ours = os.readlink(f"/proc/{holder}/ns/net")
        assert run_cli("down", name).returncode == 0
        _lab(tmp_path, name, "host")  # replaced, on the machine's network
        with pytest.raises(InputError, match="replaced"):
            sharing.other_lab_netns(network)  # the launch's look
        assert os.readlink(path) == ours if os.path.exists(path) else True
    finally:
        sharing._release(network)
        run_cli("down", name)


def test_the_shared_namespace_is_the_one_whose_start_time_was_checked(tmp_path):
    name = unique_name("y")
    network = f"lab:{name}/{name}"
    try:
        _lab(tmp_path, name)
        path, holder = sharing.other_lab_netns(network)
        assert holder is not None and path.startswith(f"/proc/{os.getpid()}/fd/")  # held, not /proc/PID
        assert os.readlink(path) == os.readlink(f"/proc/{holder}/ns/net")
    finally:
        sharing._release(network)
        run_cli("down", name)


# netemu run --rm and signals -----------------------------------------------------------------
def test_a_second_sigterm_while_rm_removes_the_lab_leaves_nothing():
    name = unique_name("r")
    proc = subprocess.Popen([*NETEMU, "run", "--rm", "--pull", "never", "--name", name, "host", "sleep", "100"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while name not in run_cli("ps").stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)  # ends the command: --rm starts removing the lab
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # a second one (a terminal closing, systemd's stop)
        proc.wait(60)
        assert name not in run_cli("ps").stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        run_cli("down", name)


# pid: host --------------------------------------------------------------------------------------
def test_a_pid_host_host_cannot_read_another_hosts_environment_or_root(tmp_path):
    from netemu import Lab

    name = unique_name("p")
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump({"name": name, "nodes": {
        "spy": {"pid": "host"}, "victim": {"cmd": "sleep 4711", "env": {"SECRET": "s3cr3t"}}}}))
    lab = Lab.up(path)
    try:
        script = ("for f in /proc/[0-9]*/cmdline; do [ \"$(tr '\\0' ' ' < $f)\" = 'sleep 4711 ' ] || continue; "
                  "d=${f%/cmdline}; cat $d/environ; ls $d/root/tmp >/dev/null && echo ROOT; done 2>/dev/null")
        seen = lab.exec("spy", ["sh", "-c", script]).stdout
        assert "s3cr3t" not in seen and "ROOT" not in seen
    finally:
        cleanup.remove_lab(name)
