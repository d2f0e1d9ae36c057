"""A local user of the machine reaches nothing of netemu's: a real user made with useradd lists,
reads, writes and runs every file and directory of a running lab (one host in a user
namespace, both on an imported image that holds a setuid-root binary), the image store and
netemu-init, and every attempt fails with EACCES."""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from netemu import images
from netemu.linux import initbin
from netemu.runtime import paths
from tests.conftest import ROOT, unique_name
from tests.integration.test_images import base_layer, config
from tests.unit.test_images import directory, file, layer_tar, write_oci

PYTHON = "/usr/bin/python3"  # the machine's: the test's own interpreter may sit in root's home
CONTROL = "/usr/bin/true"  # a program every user may read and run, and none write

# Run as the local user: every attempt on every path, and the errno it met ("ok" if none).
PROBE = r"""
import errno, json, os, subprocess, sys

def attempt(action):
    try:
        action()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "ok"

def run(path):
    subprocess.run([path, "--help"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10)

def actions(path, kind):
    if kind == "dir":
        return {"list": lambda: os.listdir(path), "enter": lambda: os.chdir(path),
                "write": lambda: open(os.path.join(path, "local-user-was-here"), "x").close()}
    found = {"read": lambda: open(path, "rb").close(), "write": lambda: open(path, "ab").close()}
    if kind == "program":
        found["run"] = lambda: run(path)
    return found

result = {path: {name: attempt(action) for name, action in actions(path, kind).items()}
          for path, kind in json.loads(sys.argv[1]).items()}
print(json.dumps(result))
"""


@pytest.fixture
def local_user() -> Iterator[pwd.struct_passwd]:
    """A fresh user of the machine, removed (with its home) whatever happens."""
    if not all(shutil.which(tool) for tool in ("useradd", "userdel", "setpriv")) or not Path(PYTHON).exists():
        pytest.skip("needs useradd, userdel, setpriv and /usr/bin/python3")
    name = f"netemu{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture
def setuid_image(tmp_path: Path) -> Iterator[str]:
    """An image whose top layer holds a setuid-root copy of busybox, /bin/su."""
    if not Path("/bin/busybox").exists():
        pytest.skip("needs busybox-static (apt-get install busybox-static)")
    busybox = Path("/bin/busybox").read_bytes()
    layers = [base_layer(busybox), layer_tar([directory("bin"), file("bin/su", busybox, 0o4755)])]
    name = unique_name("img")
    images.import_image(write_oci(tmp_path / "suid.tar", layers, config(layers), ref=f"{name}:latest"), name)
    yield name
    if images.find_image(name):
        images.remove_image(name, in_use=lambda _name: [])


def as_user(user: pwd.struct_passwd, targets: dict[str, str]) -> dict[str, dict[str, str]]:
    result = subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
                             PYTHON, "-c", PROBE, json.dumps(targets)],
                            capture_output=True, text=True, cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def lab_targets(lab, image: str) -> dict[str, str]:
    """Every kind of thing netemu keeps for a running lab, with what it is (dir, file, program)."""
    info = images.get_image(image)
    store = images.store()
    top = store.layer_dir(info.layers[-1])
    init = initbin.init_binary()
    state = paths.state_dir(lab.name)
    targets = {
        str(paths.LIB_DIR): "dir", str(paths.RUN_DIR): "dir", str(paths.LABS_LIB_DIR): "dir",
        str(state): "dir", str(state / "state.json"): "file", str(state / "topology.json"): "file",
        str(state / "userns.json"): "file",
        str(paths.layers_dir(lab.name)): "dir", str(paths.layers_dir(lab.name, "u") / "upper"): "dir",
        str(paths.layers_dir(lab.name, "i") / "upper/etc/hosts"): "file",
        str(store.root): "dir", str(store.layers_root): "dir", str(top / "diff"): "dir",
        str(top / "meta.json"): "file", str(top / "diff/bin/su"): "program",
        str(store.images_root): "dir", str(initbin.BIN_DIR): "dir", str(init): "program",
        str(initbin.sidecar(init)): "file",
    }
    for node in ("u", "i"):  # a host's root, as /proc shows it to the machine
        targets[f"/proc/{lab.pid(node)}/root"] = "dir"
        targets[f"/proc/{lab.pid(node)}/root/bin/su"] = "program"
    return targets


def test_a_local_user_reaches_nothing_of_a_running_lab_nor_of_the_store(make_lab, local_user, setuid_image):
    lab = make_lab({"nodes": {"u": {"image": setuid_image, "userns": True}, "i": {"image": setuid_image}}})
    assert lab.exec("i", ["ls", "/bin/su"]).returncode == 0  # the host itself has it
    targets = lab_targets(lab, setuid_image)
    for path in targets:
        assert Path(path).exists(), path  # each is there: refused, not missing
    seen = as_user(local_user, {**targets, CONTROL: "program"})
    assert seen.pop(CONTROL) == {"read": "ok", "write": "EACCES", "run": "ok"}  # the probe can tell
    allowed = {path: attempts for path, attempts in seen.items() if set(attempts.values()) != {"EACCES"}}
    assert allowed == {}, f"a local user got further than EACCES: {allowed}"
    assert not list(paths.RUN_DIR.glob("local-user-was-here"))


@pytest.mark.parametrize("command", [["ps"], ["image", "ls"], ["inspect", "somelab"]])
def test_commands_that_only_read_tell_a_local_user_they_need_root(local_user, command):
    result = subprocess.run(["setpriv", f"--reuid={local_user.pw_uid}", f"--regid={local_user.pw_gid}",
                             "--init-groups", sys.executable, "-m", "netemu.cli", *command],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    message = result.stderr.strip()
    assert result.returncode == 3 and len(message.splitlines()) == 1, message
    assert "permission denied: netemu needs root" in message
