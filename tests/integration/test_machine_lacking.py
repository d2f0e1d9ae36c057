"""A machine that lacks something netemu needs (docs/contract.md §3.2, exit 3): not root, a missing tool
(`nft`, `tc`, a C compiler), a missing kernel feature (sch_netem). Each ends in exit 3 with a
message that names what is missing, and the machine exactly as before."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import kernel_snapshot
from tests.conftest import ROOT, run_cli, unique_name

SYSTEM_BIN = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
PAIR_LINK = {"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.62.0.1/30", "10.62.0.2/30"]}


def _path_without(directory: Path, *missing: str) -> str:
    """A PATH holding every program of the machine but `missing` (symlinks in `directory`)."""
    directory.mkdir(exist_ok=True)
    for bindir in SYSTEM_BIN:
        if not os.path.isdir(bindir):
            continue
        for entry in os.scandir(bindir):
            link = directory / entry.name
            if entry.name not in missing and not link.exists() and os.access(entry.path, os.X_OK):
                link.symlink_to(entry.path)
    for name in missing:
        assert shutil.which(name, path=str(directory)) is None
    return str(directory)


def _up_lacking(tmp_path: Path, topo: dict, *missing: str, env: dict[str, str] | None = None
                ) -> tuple[str, subprocess.CompletedProcess[str], dict[str, dict[str, set[str]]]]:
    """`netemu up` of `topo` with `missing` programs off the PATH; returns the lab's name, the
    result and what changed on the machine (after a `down` in case `up` wrongly succeeded)."""
    name = unique_name("l")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**topo, "name": name}, sort_keys=False))
    full_env = {**os.environ, "PATH": _path_without(tmp_path / "bin", *missing), **(env or {})}
    before = kernel_snapshot.snapshot()
    try:
        result = subprocess.run([sys.executable, "-m", "netemu.cli", "up", str(path)], capture_output=True,
                                text=True, env=full_env, cwd=ROOT, timeout=300)
        changed = kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), [name])
    finally:
        run_cli("down", "-q", name)
    return name, result, changed


def _assert_refused(result: subprocess.CompletedProcess[str], changed: dict, *words: str) -> None:
    assert result.returncode == 3, (result.returncode, result.stderr)
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert all(word in message for word in words), message
    assert changed == {}, f"the machine changed: {changed}"


def test_nat_network_without_nft_exits_3_naming_it(tmp_path):
    topo = {"nodes": {"a": {}, "b": {}},
            "networks": {"lan": {"subnet": "10.63.0.0/24", "gateway": "10.63.0.1", "nat": True}},
            "links": [{"endpoints": ["a:eth0", "lan"], "addresses": ["auto"]},
                      {"endpoints": ["b:eth0", "lan"], "addresses": ["auto"]}]}
    _name, result, changed = _up_lacking(tmp_path, topo, "nft")
    _assert_refused(result, changed, "nft")


def test_default_bridge_without_nft_exits_3_naming_it(tmp_path):
    _name, result, changed = _up_lacking(tmp_path, {"nodes": {"a": {"network": "bridge"}}}, "nft")
    _assert_refused(result, changed, "nft")


def test_loss_without_nft_exits_3_naming_it(tmp_path):
    topo = {"nodes": {"a": {}, "b": {}}, "links": [{**PAIR_LINK, "impair": {"loss": "5%"}}]}
    _name, result, changed = _up_lacking(tmp_path, topo, "nft")
    _assert_refused(result, changed, "nft")


def test_rate_without_tc_exits_3_naming_it(tmp_path):
    topo = {"nodes": {"a": {}, "b": {}}, "links": [{**PAIR_LINK, "impair": {"rate": "10mbit"}}]}
    _name, result, changed = _up_lacking(tmp_path, topo, "tc")
    _assert_refused(result, changed, "tc")


def test_a_lab_without_nat_needs_no_nft(tmp_path):
    name = unique_name("l")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "nodes": {"a": {}, "b": {}}, "links": [PAIR_LINK]}))
    env = {**os.environ, "PATH": _path_without(tmp_path / "bin", "nft")}
    before = kernel_snapshot.snapshot()
    try:
        for args in (["up", str(path)], ["exec", name, "a", "--", "ping", "-c1", "-W2", "10.62.0.2"],
                     ["down", name]):
            result = subprocess.run([sys.executable, "-m", "netemu.cli", *args], capture_output=True, text=True,
                                    env=env, cwd=ROOT, timeout=300)
            assert result.returncode == 0, (args, result.stderr)
    finally:
        run_cli("down", "-q", name)
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), [name]) == {}


def test_missing_kernel_module_sch_netem_exits_3_and_leaves_nothing(tmp_path):
    if Path("/sys/module/sch_netem").exists():
        pytest.skip("this kernel has sch_netem: the refusal cannot be shown here")
    topo = {"nodes": {"a": {}, "b": {}}, "links": [{**PAIR_LINK, "impair": {"delay": "20ms"}}]}
    _name, result, changed = _up_lacking(tmp_path, topo)
    _assert_refused(result, changed, "sch_netem")


def test_no_c_compiler_to_build_init_exits_3_naming_it(tmp_path):
    # An empty netemu library directory: netemu-init must be built, and there is no compiler.
    lib = tmp_path / "lib"
    _name, result, changed = _up_lacking(tmp_path, {"nodes": {"a": {}}}, "cc", "gcc",
                                         env={"NETEMU_LIB_DIR": str(lib)})
    _assert_refused(result, changed, "C compiler")
    assert not lib.exists() or not any(lib.rglob("*")), "nothing is written when the build cannot start"


# `down --all` is left out: with no lab on the machine it has nothing to do and exits 0 before
# it checks for root.
@pytest.mark.parametrize("args", [["down", "somelab"], ["clean"]])
def test_not_root_exits_3_naming_it_for_every_command_that_changes_the_machine(tmp_path, args):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop root")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = kernel_snapshot.snapshot()
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-m", "netemu.cli", *args],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    _assert_refused(result, kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), ["somelab"]), "root")
