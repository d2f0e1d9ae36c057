"""Objects the user made survive `netemu clean` and `netemu down --all` (docs/contract.md §6.5: "`clean`
never touches a user's objects"), also those that look like netemu's: a namespace named like a
lab's host, an nftables table named like a lab's, a link whose alias starts with netemu: but names
no possible lab ('..' or ''), which once meant "every process of the machine" to `clean`.

On a machine shared with other developers' labs, `clean` and `down --all` would take theirs too:
there the test checks what `clean` would consider netemu's (its discovery) and runs `down` of the
lab name the look-alikes point at; the whole-machine commands run only on a machine of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from netemu.runtime import cleanup
from tests import kernel_snapshot
from tests.conftest import run_cli, unique_name
from tests.integration.test_lifecycle import PAIR

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _hierarchies() -> list[Path]:
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]  # pure v2
    return [p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink()]


class UserObjects:
    """A user's namespaces, links, nftables tables, cgroups and a process, some named like
    netemu's; `state()` is what must not change."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.links = [f"{user}-br", f"{user}-v0", f"ne-{user[:8]}", f"{user}-ta", f"{user}-tb"]
        self.netns = [f"{user}-ns", f"netemu-{user}.x"]
        self.tables = [("inet", user), ("inet", f"netemu-{user}"), ("ip", "netemu-")]
        self.cgroups = [h / user for h in _hierarchies()]
        self.process: subprocess.Popen[bytes] | None = None

    def create(self) -> None:
        for name in self.netns:
            _run("ip", "netns", "add", name)
        _run("ip", "link", "add", self.links[0], "type", "bridge")
        _run("ip", "link", "add", self.links[1], "type", "veth", "peer", "name", f"{self.user}-v1")
        _run("ip", "link", "add", self.links[2], "type", "bridge")  # netemu's name prefix, no tag
        for link, alias in ((self.links[3], "netemu:..:evil"), (self.links[4], "netemu::evil")):
            _run("ip", "link", "add", link, "type", "bridge")
            _run("ip", "link", "set", link, "alias", alias)
        for family, table in self.tables:
            _run("nft", "add", "table", family, table)
        for group in self.cgroups:
            group.mkdir()
        self.process = subprocess.Popen(["sleep", "600"])
        (self.cgroups[0] / "cgroup.procs").write_text(str(self.process.pid))

    def state(self) -> dict[str, object]:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        return {
            "links": {link for link in self.links if Path("/sys/class/net", link).exists()},
            "netns": {name for name in self.netns if Path("/run/netns", name).exists()},
            "tables": {t for t in self.tables if f"table {t[0]} {t[1]}\n" in tables + "\n"},
            "cgroups": {str(g) for g in self.cgroups if g.is_dir()},
            "process": self.process is not None and self.process.poll() is None,
        }

    def remove(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        for name in self.netns:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for family, table in self.tables:
            subprocess.run(["nft", "delete", "table", family, table], capture_output=True)
        for group in self.cgroups:
            if group.is_dir():
                group.rmdir()


@pytest.fixture
def user_objects() -> Iterator[UserObjects]:
    objects = UserObjects(unique_name("u"))
    try:
        objects.create()
        yield objects
    finally:
        objects.remove()


def test_clean_does_not_count_look_alikes_as_netemus(user_objects):
    owned = cleanup.owned_lab_names()
    look_alikes = {user_objects.user, "..", "", "."}
    assert not owned & look_alikes, f"clean would remove labs {owned & look_alikes}"


def test_down_of_the_name_look_alikes_point_at_leaves_them(user_objects):
    before = user_objects.state()
    assert before["process"] and len(before["links"]) == len(user_objects.links)
    result = run_cli("down", user_objects.user)
    assert result.returncode == 0, result.stderr
    assert user_objects.state() == before


@pytest.mark.parametrize("args", [["clean"], ["down", "--all"]])
def test_clean_and_down_all_leave_the_users_objects(user_objects, tmp_path, args):
    if kernel_snapshot.shared_machine():
        pytest.skip("clean and down --all act on every lab of the machine: not on a machine shared with others")
    # The discovery first: if it counted a look-alike, `clean` below would act on it.
    test_clean_does_not_count_look_alikes_as_netemus(user_objects)
    from netemu import Lab

    before = user_objects.state()
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump({**PAIR, "name": unique_name("o")}))
    lab = Lab.up(path)
    try:
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        assert user_objects.state() == before
        if args == ["clean"]:
            assert lab.exec("a", ["true"]).returncode == 0, "clean leaves a live lab alone"
    finally:
        lab.down()
