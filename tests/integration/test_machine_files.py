"""The files netemu keeps on the machine: under `umask 000` every directory and file still gets
its own mode (made here from nothing, in a library directory of the test's own, and tightened
where an older netemu left them looser), and netemu-init is run only when it is root's, written
by nobody else, and hashes to what its sidecar says: tampered with, it is built again, not run."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from netemu.linux import initbin
from netemu.runtime import paths
from tests.conftest import ROOT, unique_name
from tests.integration.test_images import base_layer, config
from tests.unit.test_images import write_oci

ONE_NODE = {"nodes": {"a": {}}}


@dataclass
class Machine:
    """netemu's CLI with a library directory of the test's own (NETEMU_LIB_DIR, made from nothing
    by netemu); the labs it brings up are taken down by the fixture."""

    env: dict[str, str]
    labs: list[str] = field(default_factory=list)

    @property
    def lib(self) -> Path:
        return Path(self.env["NETEMU_LIB_DIR"])

    def netemu(self, *args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                              env={**os.environ, **self.env}, cwd=ROOT, timeout=300,
                              umask=-1 if umask is None else umask)

    def up(self, where: Path, topology: dict, umask: int | None = None) -> subprocess.CompletedProcess[str]:
        name = unique_name("m")
        self.labs.append(name)
        path = where / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**topology, "name": name}, sort_keys=False))
        return self.netemu("netemu.cli", "up", "-q", str(path), umask=umask)

    def build_init(self) -> Path:
        result = self.netemu("netemu.linux.initbin")
        assert result.returncode == 0, result.stderr
        return Path(result.stdout.strip())


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    found = Machine({"NETEMU_LIB_DIR": str(tmp_path / "lib")})
    yield found
    for name in found.labs:
        found.netemu("netemu.cli", "down", "-q", name)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# modes whatever the umask ------------------------------------------------------------------------
def test_under_umask_000_every_directory_and_file_gets_its_own_mode(machine, tmp_path):
    if not Path("/bin/busybox").exists():
        pytest.skip("needs busybox-static (apt-get install busybox-static)")
    libdir = machine.lib
    for old in (libdir, libdir / "labs", libdir / "images"):  # an older netemu's, under umask 000
        old.mkdir(0o777)
        old.chmod(0o777)
    layers = [base_layer(Path("/bin/busybox").read_bytes())]
    archive = write_oci(tmp_path / "img.tar", layers, config(layers), ref="umask:latest")
    imported = machine.netemu("netemu.cli", "image", "import", str(archive), umask=0)
    assert imported.returncode == 0, imported.stderr
    result = machine.up(tmp_path, {"nodes": {"u": {"userns": True, "image": "umask"}, "p": {}}}, umask=0)
    assert result.returncode == 0, result.stderr

    name = machine.labs[-1]
    state, store = paths.state_dir(name), libdir / "images"
    init = next(p for p in (libdir / "bin").iterdir() if not p.name.endswith(initbin.SIDECAR_SUFFIX))
    layer = next((store / "layers/sha256").iterdir())
    expected = {
        libdir: 0o700, libdir / "bin": 0o700, init: 0o755, initbin.sidecar(init): 0o644,
        libdir / "labs": 0o700, libdir / "labs" / name: 0o700,  # the lab's tmpfs
        store: 0o700, store / "layers": 0o700, store / "layers/sha256": 0o700, layer: 0o700,
        layer / "meta.json": 0o600, store / "images": 0o700, store / "images/umask%3Alatest.json": 0o600,
        store / ".lock": 0o600,
        paths.RUN_DIR: 0o700, state: 0o700, state / "state.json": 0o600, state / "topology.json": 0o600,
        state / "userns.json": 0o600,
    }
    assert {str(p): oct(mode(p)) for p in expected} == {str(p): oct(m) for p, m in expected.items()}
    assert os.lstat(init).st_uid == 0 and not mode(init) & (stat.S_IWGRP | stat.S_IWOTH)


def test_under_umask_000_the_run_directory_and_its_files_get_their_own_mode(tmp_path):
    """A run directory made from nothing: a lab's state and a machine-wide ledger in it."""
    script = ("from netemu.runtime import records, state\n"
              "from netemu.topology.model import Topology\n"
              "with state.reserve('x'):\n"
              "    state.write('x', records.LabRecord(name='x'))\n"
              "    state.save_topology('x', Topology(name='x', path=None, nodes={}))\n"
              "with state.ledger('ledger.json', dict) as data:\n"
              "    data['x'] = 1\n")
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "NETEMU_RUN_DIR": str(run)}, umask=0)
    assert result.returncode == 0, result.stderr
    found = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in (run, *run.rglob("*"))}
    assert found == {"run": "0o700", "run/x": "0o700", "run/x/state.json": "0o600",
                     "run/x/topology.json": "0o600", "run/ledger.json": "0o600"}


# netemu-init's trust -----------------------------------------------------------------------------
def is_trusted_build(init: Path) -> bool:
    st = os.lstat(init)
    digest = hashlib.sha256(init.read_bytes()).hexdigest()
    return (st.st_uid == 0 and mode(init) == 0o755 and initbin.sidecar(init).read_text() == f"{digest}\n"
            and os.lstat(initbin.sidecar(init)).st_uid == 0 and mode(initbin.sidecar(init)) == 0o644)


def _replace_with_spy(init: Path, marker: Path) -> None:
    """Content changed: a script that leaves a mark and runs a copy of the real netemu-init."""
    real = init.with_name("real-netemu-init")
    real.write_bytes(init.read_bytes())
    real.chmod(0o755)
    init.write_text(f'#!/bin/sh\ntouch {marker}\nexec {real} "$@"\n')


TAMPERING = {
    "owner": lambda init, marker: os.chown(init, 4321, 4321),
    "group-writable": lambda init, marker: init.chmod(0o775),
    "setuid": lambda init, marker: init.chmod(0o4755),
    "content": _replace_with_spy,
    "sidecar": lambda init, marker: initbin.sidecar(init).write_text("0" * 64 + "\n"),
    "sidecar-writable": lambda init, marker: initbin.sidecar(init).chmod(0o666),
    "no-sidecar": lambda init, marker: initbin.sidecar(init).unlink(),
}


@pytest.mark.parametrize("how", TAMPERING)
def test_a_tampered_netemu_init_is_not_run_but_built_again(machine, tmp_path, how):
    init = machine.build_init()
    assert is_trusted_build(init)
    marker = tmp_path / "the-tampered-binary-ran"
    TAMPERING[how](init, marker)
    before = os.lstat(init).st_ino
    result = machine.up(tmp_path, ONE_NODE)
    assert result.returncode == 0, result.stderr
    assert not marker.exists(), "netemu ran a netemu-init it could not trust"
    assert is_trusted_build(init) and os.lstat(init).st_ino != before  # a new file, replaced in one rename
    assert sorted(p.name for p in init.parent.iterdir() if p.name.startswith(init.name)) == [
        init.name, initbin.sidecar(init).name]  # no leftover of the build


def test_a_loose_netemu_directory_is_tightened_without_a_rebuild(machine):
    init = machine.build_init()
    before = os.lstat(init).st_ino
    for directory in (init.parent, init.parent.parent):
        directory.chmod(0o755)  # as an older netemu made them: nobody else could write there
    assert machine.build_init() == init and os.lstat(init).st_ino == before
    assert mode(init.parent) == mode(init.parent.parent) == 0o700


def test_netemu_init_under_a_directory_others_may_change_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 4321, 4321)
    result = Machine({"NETEMU_LIB_DIR": str(theirs / "lib")}).up(tmp_path, ONE_NODE)
    message = result.stderr.strip()
    assert result.returncode == 3 and len(message.splitlines()) == 1, message
    assert f"{theirs} belongs to uid 4321" in message
    assert not list((theirs / "lib").rglob("netemu-init-*"))


def test_processes_building_netemu_init_at_once_build_one_trusted_binary(machine):
    procs = [subprocess.Popen([sys.executable, "-m", "netemu.linux.initbin"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **machine.env}, cwd=ROOT) for _ in range(4)]
    outputs = {proc.communicate(timeout=300)[0].strip() for proc in procs}
    assert [proc.returncode for proc in procs] == [0] * 4
    assert len(outputs) == 1
    init = Path(outputs.pop())
    assert is_trusted_build(init)
    assert sorted(p.name for p in init.parent.iterdir()) == [init.name, initbin.sidecar(init).name]
