"""netemu's own directories and files get exactly the mode asked for whatever the umask, and an
older netemu's looser directory is tightened: made here in a temporary directory and stat-ed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from netemu.errors import MachineError
from netemu.linux import files


@pytest.fixture
def umask_000() -> Iterator[None]:
    """The loosest umask a caller can have."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_private_dir_is_0700_under_umask_000_and_its_missing_ancestors_0755(tmp_path, umask_000):
    made = files.private_dir(tmp_path / "a" / "b" / "lib")
    assert made == tmp_path / "a/b/lib"
    assert (mode(tmp_path / "a"), mode(tmp_path / "a/b"), mode(made)) == (0o755, 0o755, 0o700)
    assert mode(files.private_dir(tmp_path / "other", 0o710)) == 0o710


def test_an_existing_looser_dir_is_tightened_and_exist_ok_false_refuses_it(tmp_path, umask_000):
    old = tmp_path / "old"
    old.mkdir(0o777)
    files.private_dir(old)
    assert mode(old) == 0o700
    with pytest.raises(FileExistsError):
        files.private_dir(old, exist_ok=False)


def test_a_dir_of_someone_else_or_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MachineError, match="not a directory"):
        files.private_dir(tmp_path / "file")
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory away")
    theirs = tmp_path / "theirs"
    theirs.mkdir(0o755)
    os.chown(theirs, 4321, 4321)
    with pytest.raises(MachineError, match="belongs to uid 4321"):
        files.private_dir(theirs)
    assert mode(theirs) == 0o755  # left as it was: not ours to change


def test_write_file_gives_the_mode_asked_for_even_over_a_stale_tmp(tmp_path, umask_000):
    target, tmp = tmp_path / "state.json", tmp_path / ".state.json.123"
    tmp.write_text("left by a killed writer")
    tmp.chmod(0o666)
    files.write_file(target, b"{}", tmp=tmp, sync=True)
    assert target.read_bytes() == b"{}" and mode(target) == 0o600 and not tmp.exists()
    files.write_file(tmp_path / "sidecar", b"x", mode=0o644)
    assert mode(tmp_path / "sidecar") == 0o644


def test_write_file_does_not_follow_a_symlink_at_its_tmp_name(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "tmp").symlink_to(victim)
    with pytest.raises(OSError):
        files.write_file(tmp_path / "target", b"x", tmp=tmp_path / "tmp")
    assert victim.read_text() == "keep" and not (tmp_path / "target").exists()
