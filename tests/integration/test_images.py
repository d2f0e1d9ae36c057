"""Imported images end to end: real two-layer images built here from Debian's static busybox
(a whiteout and an opaque directory in the second layer), written as a docker save archive
(legacy and Docker 25+) and as an OCI layout (tar and directory), imported, and run.

No registry is reachable: every image is built by the test itself."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from netemu import images
from tests import kernel_snapshot
from tests.conftest import NETEMU, ROOT, run_cli, unique_name
from tests.unit.test_images import (
    directory,
    file,
    hardlink,
    image_config,
    layer_tar,
    sha,
    symlink,
    write_docker25,
    write_docker_legacy,
    write_oci,
    zeros_layer,
)

APPLETS = ["sh", "ls", "cat", "env", "sleep", "pwd", "echo", "test", "rm", "touch"]
CMD = "pwd > /tmp/cwd.txt; echo $FOO > /tmp/cmd-env.txt; exec sleep 1000"


@pytest.fixture(scope="module")
def busybox() -> bytes:
    path = shutil.which("busybox") or "/bin/busybox"
    if not Path(path).exists():  # the Makefile installs it; this covers a bare pytest run
        subprocess.run(["apt-get", "install", "-y", "-qq", "busybox-static"], capture_output=True, check=False)
    if not Path("/bin/busybox").exists():
        pytest.skip("needs busybox-static (apt-get install busybox-static)")
    return Path("/bin/busybox").read_bytes()


def base_layer(busybox: bytes) -> bytes:
    """busybox and its applets, /etc/passwd, /etc/removeme, /data/old.txt, /srv/app, /tmp."""
    members = [directory("bin"), file("bin/busybox", busybox, 0o755), hardlink("bin/busybox-hard", "bin/busybox")]
    members += [symlink(f"bin/{name}", "busybox") for name in APPLETS]
    members += [directory("etc"), file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
                file("etc/removeme", b"gone soon\n"), directory("data"), file("data/old.txt", b"old\n"),
                directory("srv"), directory("srv/app"), directory("tmp", 0o1777), directory("root", 0o700)]
    return layer_tar(members)


def top_layer() -> bytes:
    """Deletes /etc/removeme (whiteout) and replaces /data's content (opaque directory)."""
    return layer_tar([directory("etc"), file("etc/.wh.removeme", b""), directory("data"),
                      file("data/.wh..wh..opq", b""), file("data/new.txt", b"new\n")])


def config(layers: list[bytes]) -> dict:
    return image_config(layers, Env=["PATH=/bin", "FOO=bar"], WorkingDir="/srv/app",
                        Entrypoint=["/bin/sh", "-c"], Cmd=[CMD])


def write_archive(fmt: str, where: Path, layers: list[bytes], tag: str) -> Path:
    cfg = config(layers)
    if fmt == "docker-legacy":
        return write_docker_legacy(where / "image.tar", layers, cfg, [tag])
    if fmt == "docker-25":
        return write_docker25(where / "image.tar", layers, cfg, [tag])
    if fmt == "oci-tar":
        return write_oci(where / "image.tar", layers, cfg, ref=tag, gzipped=frozenset({1}))
    return write_oci(where / "oci", layers, cfg, ref=tag, gzipped=frozenset({0, 1}), as_dir=True)


@pytest.fixture
def image_names() -> Iterator[list[str]]:
    """Images a test imports: removed at the end whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        if images.find_image(name):
            images.remove_image(name, in_use=lambda _name: [])


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("fmt", ["docker-legacy", "docker-25", "oci-tar", "oci-dir"])
def test_an_imported_image_runs_with_its_layers_whiteouts_and_config(make_lab, tmp_path, busybox, image_names, fmt):
    name = unique_name("img")
    layers = [base_layer(busybox), top_layer()]
    result = run_cli("image", "import", str(write_archive(fmt, tmp_path, layers, f"{name}:latest")))
    assert result.returncode == 0, result.stderr
    image_names.append(f"{name}:latest")
    info = images.get_image(name)
    assert f"imported {info.name} ({info.short_id}, 2 layers" in result.stdout

    lab = make_lab({"nodes": {"h1": {"image": name, "env": {"BAR": "baz"}, "exec": ["env > /tmp/env.txt"]}}})
    assert lab.exec("h1", ["test", "-e", "/etc/removeme"]).returncode == 1
    assert lab.exec("h1", ["cat", "/etc/passwd"]).stdout.startswith("root:x:0:0")
    assert lab.exec("h1", ["ls", "/data"]).stdout.split() == ["new.txt"]
    env = lab.exec("h1", ["cat", "/tmp/env.txt"]).stdout.splitlines()
    assert {"FOO=bar", "BAR=baz", "PATH=/bin"} <= set(env)
    assert {"FOO=bar", "BAR=baz"} <= set(lab.exec("h1", ["env"]).stdout.splitlines())  # exec's env too
    # The image's Entrypoint + Cmd is the host's program, run in its WorkingDir with its Env.
    assert wait_for(lambda: lab.exec("h1", ["cat", "/tmp/cwd.txt"]).stdout == "/srv/app\n")
    assert lab.exec("h1", ["cat", "/tmp/cmd-env.txt"]).stdout == "bar\n"
    # PID 1 is netemu's static init, brought in from outside the image.
    assert "netemu-init" in lab.exec("h1", ["cat", "/proc/1/cmdline"]).stdout

    # Writes land in the host's own layer, never in the store.
    top, base = images.layer_dirs(info)
    script = "echo changed > /data/new.txt; rm /bin/busybox-hard; touch /etc/x"
    assert lab.exec("h1", ["sh", "-c", script]).returncode == 0
    assert lab.exec("h1", ["cat", "/data/new.txt"]).stdout == "changed\n"
    assert (top / "data/new.txt").read_text() == "new\n"
    assert (base / "bin/busybox-hard").exists() and not (base / "etc/x").exists() and not (top / "etc/x").exists()

    refused = run_cli("image", "rm", info.name)
    assert refused.returncode == 2 and lab.name in refused.stderr
    lab.down()
    removed = run_cli("image", "rm", info.name)
    assert removed.returncode == 0, removed.stderr
    assert images.find_image(name) is None
    still_used = {d for other in images.list_images() for d in other.layers}
    for diff_id in info.layers:
        assert images.store().layer_dir(diff_id).exists() == (diff_id in still_used)


def test_rm_keeps_the_layers_another_image_uses(tmp_path, busybox, image_names):
    base = base_layer(busybox)
    other_top = layer_tar([directory("etc"), file("etc/other", b"other\n")])
    first, second = unique_name("img"), unique_name("img")
    a = images.import_image(write_oci(tmp_path / "a.tar", [base, top_layer()], config([base, top_layer()])), first)
    b = images.import_image(write_docker_legacy(tmp_path / "b.tar", [base, other_top],
                                                config([base, other_top]), [f"{second}:1"]))
    image_names.extend([first, b.name])
    assert a.layers[0] == b.layers[0]  # the same base layer, unpacked once
    assert run_cli("image", "rm", first).returncode == 0
    store = images.store()
    assert store.layer_dir(a.layers[0]).is_dir() and not store.layer_dir(a.layers[1]).exists()
    listing = run_cli("image", "ls", "--format", "json")
    assert b.name in listing.stdout and first not in listing.stdout
    assert run_cli("image", "rm", b.name).returncode == 0
    assert not any(store.layer_dir(d).exists() for d in {*a.layers, *b.layers})


def test_an_image_without_shell_or_libc_still_gets_a_working_pid1(make_lab, tmp_path, busybox, image_names):
    name = unique_name("img")
    only = layer_tar([file("busybox", busybox, 0o755)])
    images.import_image(write_oci(tmp_path / "bare.tar", [only], image_config([only])), name)
    image_names.append(name)
    lab = make_lab({"nodes": {"h1": {"image": name}}})
    assert lab.exec("h1", ["/busybox", "test", "-e", "/bin/sh"]).returncode == 1
    assert lab.exec("h1", ["/busybox", "cat", "/etc/hostname"]).stdout == "h1\n"
    assert lab.exec("h1", ["/busybox", "ps"]).stdout.count("netemu-init") == 1


def test_a_directory_image_is_the_single_lower_layer(make_lab, tmp_path, busybox):
    rootfs = tmp_path / "rootfs"
    images.unpack_layer(io.BytesIO(base_layer(busybox)), rootfs, "base")
    lab = make_lab({"nodes": {"h1": {"image": "./rootfs"}}})  # relative to the topology file
    assert lab.exec("h1", ["cat", "/data/old.txt"]).stdout == "old\n"
    assert lab.exec("h1", ["sh", "-c", "echo x > /data/old.txt"]).returncode == 0
    assert (rootfs / "data/old.txt").read_text() == "old\n"


def test_bad_archives_and_unknown_images_are_input_errors(make_lab, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\0junk" * 1000)
    result = run_cli("image", "import", str(junk))
    assert result.returncode == 2 and str(junk) in result.stderr and len(result.stderr.splitlines()) == 1
    assert run_cli("image", "rm", "no-such-image").returncode == 2
    result = run_cli("image", "rm", "no-such-image")
    assert "no-such-image" in result.stderr
    before = kernel_snapshot.snapshot()
    topo = tmp_path / "unknown.yaml"
    topo.write_text(yaml.safe_dump({"name": unique_name("img"), "nodes": {"h1": {"image": "no-such-image"}}}))
    never = run_cli("up", "--pull", "never", str(topo))
    assert never.returncode == 2 and "no-such-image" in never.stderr and "never" in never.stderr
    # With the default policy it is pulled: from docker.io, which the suite maps to a closed
    # loopback port (tests/conftest.py), so the answer is an unreachable registry, exit 3.
    missing = run_cli("up", str(topo))
    assert missing.returncode == 3 and "no-such-image" in missing.stderr, missing.stderr
    assert len(missing.stderr.splitlines()) == 1
    assert kernel_snapshot.diff(before, kernel_snapshot.snapshot()) == {}


@pytest.mark.parametrize(("args", "env"), [(["--max-size", "1M"], {}), ([], {images.MAX_BYTES_ENV: "1048576"}),
                                           (["--max-size", "1M"], {images.MAX_BYTES_ENV: "1G"})],
                         ids=["option", "environment", "option-over-environment"])
def test_import_of_a_gzip_bomb_stops_at_the_cap_and_leaves_nothing(tmp_path, args, env):
    name = unique_name("img")
    bomb = zeros_layer(64 << 20)
    archive = write_oci(tmp_path / "bomb.tar", [bomb], image_config([bomb]), ref=f"{name}:latest")
    result = subprocess.run([*NETEMU, "image", "import", *args, str(archive)], capture_output=True, text=True,
                            env={**os.environ, **env}, cwd=ROOT, timeout=120)
    message = result.stderr.strip()
    assert result.returncode == 2, message
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert f"image '{name}:latest': layer 1/1 {sha(bomb)[:12]}" in message and "cap of 1 MiB" in message
    store = images.store()
    assert images.find_image(name) is None and not store.layer_dir(f"sha256:{sha(bomb)}").exists()
    assert not list(store.layers_root.glob(f".tmp-{sha(bomb)[:12]}-*"))


def test_a_bad_max_size_is_an_input_error(tmp_path):
    result = run_cli("image", "import", "--max-size", "lots", str(tmp_path))
    assert result.returncode == 2 and "--max-size: invalid size 'lots'" in result.stderr
