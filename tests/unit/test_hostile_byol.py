"""Hostile bring-your-own-lab input, at the parser and copier level: alias bombs that must fail
fast and on one located line, containerlab files whose ${VAR}s, env-files and binds try to
reach the machine, Kathara labs whose directories and files are links, FIFOs or devices, and a
`files:` source that changes while it is copied. Each refusal is one line naming file, line
and key (TopologyError, exit code 2)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netemu.errors import TopologyError
from netemu.linux import rootfs
from netemu.runtime import paths
from netemu.topology._tree import ALIAS_EXPANSION_MAX, NESTING_MAX
from netemu.topology.containerlab import load_containerlab
from netemu.topology.kathara import IMAGE_ENV, load_kathara
from netemu.topology.loader import load_topology_text
from tests.conftest import run_cli

# --- anchors and aliases --------------------------------------------------------------------


def _refused_text(text: str, seconds: float = 1.0) -> TopologyError:
    started = time.monotonic()
    with pytest.raises(TopologyError) as caught:
        load_topology_text(text, "bomb.yaml")
    assert time.monotonic() - started < seconds, f"took {time.monotonic() - started:.1f}s"
    error = caught.value
    assert error.exit_code == 2 and "\n" not in str(error) and error.line is not None, str(error)
    return error


@pytest.mark.parametrize("body", ["*x", "{<<: *m}", "*e"])
def test_a_4_mib_file_of_aliases_fails_in_well_under_a_second(body: str) -> None:
    head = "name: lab\nx: &x 1\nm: &m {a: 1}\ne: &e {}\nnodes: {r1: {}}\nl: ["
    text = head + ",".join([body] * ((4 << 20) // (len(body) + 1) - 50)) + "]\n"
    error = _refused_text(text)
    assert str(ALIAS_EXPANSION_MAX) in str(error)


def test_a_chain_of_merge_keys_is_refused_at_a_line_not_as_a_bare_recursion_error() -> None:
    lines = ["name: lab", "nodes: {r1: {}}", "m0: &m0 {k0: 1}"]
    lines += [f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: 1}}" for i in range(1, 3000)]
    error = _refused_text("\n".join(lines))
    assert "expands too far" in str(error) and error.key.startswith("m")


@pytest.mark.parametrize("text", [
    "name: lab\nnodes: {r1: {}}\nx: " + "[" * 5000 + "]" * 5000 + "\n",
    "name: lab\nnodes: {r1: {}}\nx: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    # each anchor shallow enough, nested through aliases
    "name: lab\nnodes: {r1: {}}\na0: &a0 " + "[" * 60 + "1" + "]" * 60 + "\n"
    + "".join(f"a{i}: &a{i} " + "[" * 60 + f"*a{i - 1}" + "]" * 60 + "\n" for i in range(1, 30)),
])
def test_deep_nesting_is_refused_at_its_line(text: str) -> None:
    error = _refused_text(text)
    assert f"at most {NESTING_MAX} levels" in str(error)


def test_the_merge_bomb_and_recursive_merges_stay_refused_fast() -> None:
    merge = ["name: lab", "nodes: {r1: {}}", "m0: &m0 {k0: 1}"]
    merge += [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 10)}], k{i}: 1}}" for i in range(1, 12)]
    assert "expands too far" in str(_refused_text("\n".join(merge)))
    assert "inside its own anchor" in str(_refused_text("name: lab\nnodes: {r1: {}}\na: &a {b: {<<: *a}}\n"))


# --- containerlab ---------------------------------------------------------------------------


def _clab(tmp_path: Path, node: str, extra: str = "") -> Path:
    path = tmp_path / "lab.clab.yml"
    path.write_text(f"name: hb\n{extra}topology:\n  nodes:\n    r1:\n      kind: linux\n      image: host\n{node}")
    return path


def _clab_refused(path: Path) -> TopologyError:
    with pytest.raises(TopologyError) as caught:
        load_containerlab(path)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    return caught.value


def test_a_variable_holding_a_line_break_cannot_add_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lab.clab.yml"
    path.write_text("name: hb\ntopology:\n  nodes:\n    r1:\n      kind: linux\n      image: ${HB_IMAGE}\n")
    for value in ("host\n      privileged: true", "host\r      privileged: true", "host\u2028      privileged: true"):
        monkeypatch.setenv("HB_IMAGE", value)
        error = _clab_refused(path)
        assert error.line == 6 and "${HB_IMAGE}" in str(error) and "line break" in str(error)
    monkeypatch.setenv("HB_IMAGE", "host")
    assert load_containerlab(path).nodes["r1"].privileged is False


@pytest.mark.parametrize("make", ["fifo", "zero", "directory", "huge"])
def test_an_env_file_that_is_no_small_regular_file_is_refused_without_reading_it(tmp_path: Path, make: str) -> None:
    target = tmp_path / "env"
    if make == "fifo":
        os.mkfifo(target)  # reading it would block netemu forever
    elif make == "zero":
        target.symlink_to("/dev/zero")  # reading it would fill netemu's memory
    elif make == "directory":
        target.mkdir()
    else:
        target.write_text("A=" + "x" * (2 << 20) + "\n")
    path = _clab(tmp_path, "      env-files: [./env]\n")
    # in a child with a timeout: before the fix a FIFO hangs and /dev/zero eats the memory
    result = run_cli("validate", str(path), timeout=20)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and f"{path}:" in result.stderr and "env-files" in result.stderr


def test_a_topology_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "lab.clab.yml"
    os.mkfifo(path)
    result = run_cli("validate", str(path), timeout=20)
    assert result.returncode == 2 and "not a regular file (a FIFO)" in result.stderr


# --- Kathara --------------------------------------------------------------------------------


@pytest.fixture
def kathara_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_ENV, "host")


def _kathara(tmp_path: Path, conf: str = "r1[0]=A\nr2[0]=A\n") -> Path:
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "lab.conf").write_text(conf)
    return lab


@pytest.mark.parametrize("name", ["r1", "shared"])
@pytest.mark.parametrize("target", ["/", "/etc", "outside"])
def test_a_kathara_directory_that_is_a_link_out_of_the_lab_is_refused(tmp_path: Path, kathara_host: None,
                                                                      name: str, target: str) -> None:
    """r1 -> / would copy the machine's files into r1; shared -> /etc would bind the machine's
    /etc read-write into every machine."""
    lab = _kathara(tmp_path)
    if target == "outside":
        (tmp_path / "outside").mkdir()
        target = str(tmp_path / "outside")
    (lab / name).symlink_to(target)
    with pytest.raises(TopologyError) as caught:
        load_kathara(lab)
    error = caught.value
    assert error.exit_code == 2 and error.key == f"{name}/" and "symbolic link" in str(error)
    assert error.line == (1 if name == "r1" else None)


@pytest.mark.parametrize("file", ["lab.conf", "lab.dep", "lab.ext"])
def test_kathara_files_that_are_fifos_or_devices_never_block(tmp_path: Path, kathara_host: None, file: str) -> None:
    lab = _kathara(tmp_path)
    (lab / file).unlink(missing_ok=True)
    os.mkfifo(lab / file)
    result = run_cli("validate", str(lab), timeout=20)
    if file == "lab.dep":  # not a file: no start order (Kathara's rule), nothing read
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    (lab / file).unlink()
    (lab / file).symlink_to("/dev/zero")
    result = run_cli("validate", str(lab), timeout=20)
    assert result.returncode == (0 if file == "lab.dep" else 2), result.stderr


def test_a_lab_dep_bomb_is_refused_fast(tmp_path: Path, kathara_host: None) -> None:
    names = [f"m{i}" for i in range(1000)]
    lab = _kathara(tmp_path, "".join(f"{n}[0]=A\n" for n in names))
    (lab / "lab.dep").write_text("".join(f"{a}: {' '.join(names[i + 1:])}\n" for i, a in enumerate(names[:-1]))
                                 + f"{names[-1]}: {names[0]}\n")
    started = time.monotonic()
    with pytest.raises(TopologyError) as caught:
        load_kathara(lab)
    assert time.monotonic() - started < 10 and "start-order loop" in str(caught.value)


@pytest.mark.parametrize("name", ["../x", "r1/../../x", ".", "..", "R1", "r1\u0430"])
def test_kathara_machine_names_cannot_hold_paths_or_look_alikes(tmp_path: Path, kathara_host: None,
                                                                name: str) -> None:
    lab = _kathara(tmp_path, f"{name}[0]=A\n")
    with pytest.raises(TopologyError) as caught:
        load_kathara(lab)
    assert caught.value.line == 1


# --- node names -----------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [("PC1", "pc1"), ("srl_1", "srl-1"), ("r1.A", "r1.a")])
def test_node_names_that_fold_together_are_refused(a: str, b: str) -> None:
    with pytest.raises(TopologyError) as caught:
        load_topology_text(f"name: lab\nnodes:\n  {a}: {{hostname: a}}\n  {b}: {{hostname: b}}\n", "n.yaml")
    assert caught.value.line == 4


@pytest.mark.parametrize("name", ["..", ".", "a/b", "-a", "_a", ".a", "r1\u0430", "\uff52\uff11", "a" * 64, "10.0.0.1"])
def test_node_names_that_are_paths_or_look_alikes_are_refused(name: str) -> None:
    with pytest.raises(TopologyError):
        load_topology_text(f"name: lab\nnodes:\n  '{name}': {{}}\n", "n.yaml")


@pytest.mark.parametrize("name", ["cgroup.procs", "tasks", "cgroup.subtree_control", "memory.max", "release_agent"])
def test_a_node_named_like_a_cgroup_control_file_gets_a_group_of_its_own(name: str) -> None:
    assert paths.cgroup_component(name).startswith("_")
    assert paths.cgroup_path("lab", name).split("/")[-1] != name


# --- files: copying -------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="copying owns files to root")
def test_a_source_directory_swapped_for_a_link_while_copied_copies_nothing_from_where_it_points(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The source may be a directory a running host writes to (a bind of another node). The
    host swaps src/d for a link to a machine directory between netemu's listing of src and its
    walk into d: netemu must copy d as it was, never the directory the link names."""
    source, machine = tmp_path / "src", tmp_path / "machine"
    (source / "d").mkdir(parents=True)
    (source / "d" / "mine").write_text("the lab's\n")
    machine.mkdir()
    (machine / "secret").write_text("the machine's\n")
    layers = rootfs.LayerDirs(tmp_path / "layer")
    layers.create()
    real_scandir: Callable = os.scandir
    calls = []

    def swapping_scandir(where):  # the host's move, timed between two steps of netemu's walk
        calls.append(where)
        if len(calls) == 2:
            (source / "d").rename(source / "d.moved")
            (source / "d").symlink_to(machine)
        return real_scandir(where)

    monkeypatch.setattr(rootfs.os, "scandir", swapping_scandir)
    layers.copy_in(source)
    assert not (layers.upper / "d" / "secret").exists()
    assert (layers.upper / "d" / "mine").read_text() == "the lab's\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="copying owns files to root")
def test_a_source_file_swapped_for_a_fifo_or_device_is_never_opened(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the listing and the copy, the host replaces src/f by a FIFO (open would block
    netemu) and src/g by a device node of the machine's null (a disk, for real)."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("file\n")
    (source / "g").write_text("file\n")
    layers = rootfs.LayerDirs(tmp_path / "layer")
    layers.create()
    real_stat = os.stat

    def swapping_stat(name, *args, **kwargs):
        result = real_stat(name, *args, **kwargs)
        if name == "f" and stat.S_ISREG(result.st_mode):
            (source / "f").unlink()
            os.mkfifo(source / "f")
        if name == "g" and stat.S_ISREG(result.st_mode):
            (source / "g").unlink()
            os.mknod(source / "g", stat.S_IFCHR | 0o644, os.makedev(1, 3))
        return result

    monkeypatch.setattr(rootfs.os, "stat", swapping_stat)
    started = time.monotonic()
    notes = layers.copy_in(source)
    assert time.monotonic() - started < 5
    assert not (layers.upper / "f").exists() and not (layers.upper / "g").exists()
    assert any(note.startswith("/f: not copied: it became a FIFO") for note in notes), notes
    assert any(note.startswith("/g: not copied: it became a character device") for note in notes), notes
