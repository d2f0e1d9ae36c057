"""Hostile bring-your-own-lab labs on the machine: `files:` directories and Kathara directories
that are links to the machine, a host that turns what netemu writes at its restart (its files,
the systemctl shim) into links to the machine, or races the source of another node's `files:`
through a bind. The machine is looked at afterwards; every refusal is exit code 2 on one line
with nothing created."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml

from netemu.topology.kathara import IMAGE_ENV
from tests import kernel_snapshot
from tests.conftest import run_cli, unique_name


def _refused_before_anything_is_made(target: str, lab: str, *fragments: str) -> None:
    before = kernel_snapshot.snapshot()
    result = run_cli("up", target, timeout=60)
    try:
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.count("\n") == 1 and all(f in result.stderr for f in fragments), result.stderr
        assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), [lab]) == {}
    finally:
        run_cli("down", lab)


def test_a_files_directory_that_is_a_link_to_the_machine_s_dev_is_refused(tmp_path: Path) -> None:
    """A downloaded lab's `common -> /dev` (or `-> /`, whose /proc/kcore alone is 128 TiB)."""
    lab = unique_name("hb")
    (tmp_path / "common").symlink_to("/dev")
    path = tmp_path / f"{lab}.yaml"
    path.write_text(yaml.safe_dump({"name": lab, "nodes": {"r1": {"image": "host", "files": ["./common"]}}}))
    _refused_before_anything_is_made(str(path), lab, "files", "is the machine's /dev")


def test_a_kathara_machine_directory_linked_out_of_the_lab_is_refused(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_ENV, "host")
    lab = unique_name("hb")
    directory = tmp_path / lab
    directory.mkdir()
    (directory / "lab.conf").write_text("r1[0]=A\nr2[0]=A\n")
    machine = tmp_path / "machine"
    machine.mkdir()
    canary = f"netemu-canary-{uuid.uuid4().hex[:8]}"
    (machine / canary).write_text("the machine's\n")
    (directory / "r1").symlink_to(machine)
    _refused_before_anything_is_made(str(directory), lab, "lab.conf:1", "r1/", "symbolic link")


def test_a_kathara_shared_directory_linked_to_etc_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_ENV, "host")
    lab = unique_name("hb")
    directory = tmp_path / lab
    directory.mkdir()
    (directory / "lab.conf").write_text("r1[0]=A\n")
    (directory / "shared").symlink_to("/etc")  # every machine would get the machine's /etc read-write
    _refused_before_anything_is_made(str(directory), lab, "shared/", "symbolic link")


def test_the_systemctl_shim_is_never_written_through_a_link_and_takes_no_paths(make_lab, tmp_path: Path) -> None:
    victim = tmp_path / "machine-sbin"
    victim.mkdir()
    lab = make_lab({"nodes": {"r1": {"systemctl": True}}})
    try:
        assert lab.exec("r1", ["sh", "-c", "test -x /usr/local/sbin/systemctl"]).returncode == 0
        # a unit name is no path: /etc/init.d/../../tmp/x would run the host's /tmp/x
        lab.exec("r1", ["sh", "-c", "printf '#!/bin/sh\\ntouch /tmp/ran\\n' >/tmp/x; chmod +x /tmp/x"], check=True)
        refused = lab.exec("r1", ["systemctl", "start", "../../tmp/x"])
        assert refused.returncode == 1 and "not valid" in refused.stderr
        assert lab.exec("r1", ["test", "-e", "/tmp/ran"]).returncode == 1
        # the host points /usr/local/sbin at a directory of the machine, then restarts
        lab.exec("r1", ["sh", "-c", f"rm -rf /usr/local/sbin && ln -s {victim} /usr/local/sbin"], check=True)
        lab.node("r1", "restart")
        assert list(victim.iterdir()) == []
        assert "/usr/local/sbin/systemctl left as the host made it" in Path(lab.record.nodes["r1"].console).read_text()
    finally:
        lab.down()


def test_a_host_racing_the_source_of_another_node_s_files_gets_nothing_of_the_machine(make_lab,
                                                                                     tmp_path: Path) -> None:
    """w binds src read-write and keeps swapping src/d between a directory and a link to a
    machine directory (and src/f between a file and a FIFO) while c, whose `files:` is src,
    restarts: c gets the lab's files or nothing, never the machine's, and never hangs."""
    source, machine = tmp_path / "src", tmp_path / "machine"
    (source / "d").mkdir(parents=True)
    (source / "d" / "mine").write_text("the lab's\n")
    (source / "f").write_text("file\n")
    machine.mkdir()
    canary = f"netemu-canary-{uuid.uuid4().hex[:8]}"
    (machine / canary).write_text("the machine's\n")
    lab = make_lab({"nodes": {"w": {"binds": [f"{source}:/src"]}, "c": {"files": [str(source)]}}})
    try:
        racer = (f"while :; do mv /src/d /src/d.x 2>/dev/null; ln -s {machine} /src/d 2>/dev/null; rm -f /src/d; "
                 "mv /src/d.x /src/d 2>/dev/null; rm -f /src/f; mkfifo /src/f; rm -f /src/f; echo x >/src/f; done")
        lab.exec("w", ["sh", "-c", f"nohup sh -c '{racer}' >/dev/null 2>&1 &"], check=True)
        for _ in range(15):
            lab.node("c", "restart")
            found = lab.exec("c", ["sh", "-c", f"ls -A /d 2>/dev/null; cat /d/{canary} 2>/dev/null"]).stdout
            assert canary not in found and "the machine's" not in found, found
        assert os.listdir(machine) == [canary]
    finally:
        lab.down()
