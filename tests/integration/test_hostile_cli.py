"""Hostile topology files through the real `netemu up` (a sample of tests/hostile.py's files; the
pure loader gets thousands in tests/unit/test_hostile_input.py): each ends in exit 2 with one line
and the machine unchanged, or in a running lab that `down` removes whole. Never a traceback,
another exit code, or a hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, seed, settings
from hypothesis import strategies as st

from netemu.errors import TopologyError
from netemu.topology import load_topology_text
from tests import hostile, kernel_snapshot
from tests.conftest import run_cli, unique_name
from tests.faultlab import leaks, machine_state

# NETEMU_HOSTILE_CLI_EXAMPLES=500 (and NETEMU_HOSTILE_SEED) for a longer hunt than CI's.
SETTINGS = settings(max_examples=int(os.environ.get("NETEMU_HOSTILE_CLI_EXAMPLES", "50")), deadline=None,
                    derandomize="NETEMU_HOSTILE_SEED" not in os.environ, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])
CLI_TIMEOUT = 300  # a hang guard, not a speed requirement


@st.composite
def lab_files(draw: st.DrawFn) -> tuple[str, str]:
    """(lab name, file text): small labs only (the CLI brings valid ones up for real)."""
    name = unique_name("h")
    return name, draw(hostile.hostile_files(name, sizes=(2, 20)))


def _names_on_the_machine(name: str, text: str) -> set[str]:
    try:
        topo = load_topology_text(text)
    except TopologyError:
        return {name}
    # A valid file under another lab name would make (and then remove) a lab someone else may
    # be using on a shared machine: those are only loaded, in the unit test.
    assume(topo.name == name)
    return hostile.machine_names(topo)


@SETTINGS
@seed(int(os.environ.get("NETEMU_HOSTILE_SEED", "0")))
@given(lab_files())
def test_hostile_files_through_netemu_up(tmp_path_factory, case: tuple[str, str]) -> None:
    name, text = case
    names = _names_on_the_machine(name, text)
    path = Path(tmp_path_factory.mktemp("hostile")) / "lab.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    before = machine_state({name})
    try:
        result = run_cli("up", "-q", str(path), timeout=CLI_TIMEOUT)
        message = result.stderr.strip()
        assert "Traceback" not in message and result.returncode in (0, 2), (result.returncode, message)
        event(f"exit {result.returncode}")  # shown by --hypothesis-show-statistics
        if result.returncode == 2:
            assert len(message.splitlines()) == 1, message
        else:
            assert run_cli("inspect", name).returncode == 0
            assert run_cli("down", name).returncode == 0
    finally:
        run_cli("down", "-q", name)
    assert leaks(before, machine_state({name}), names) == {}


@pytest.mark.parametrize("args", [["inspect", ".."], ["inspect", "."], ["inspect", "a\nb"], ["inspect", "x" * 5000],
                                  ["exec", "..", "a", "--", "true"], ["link", "..", "a:eth0", "down"],
                                  ["node", "..", "a", "stop"], ["down", ""], ["down", "../x.yaml"],
                                  ["check", "/nonexistent/x.yaml"], ["probe", "..", "a", "b"]])
def test_hostile_lab_names_on_the_command_line(args: list[str]) -> None:
    """Read-only commands and file arguments (`down ..` itself is covered by the unit test of
    the paths guard: run for real, a regression there would kill every process of the machine)."""
    before = kernel_snapshot.snapshot()
    result = run_cli(*args, timeout=CLI_TIMEOUT)
    assert result.returncode == 2, (result.returncode, result.stderr)
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), [".."]) == {}


def test_names_that_collide_once_cut_to_15_characters_come_up_side_by_side(tmp_path) -> None:
    name = unique_name("c")
    topo = hostile._prefix_collisions(name)
    path = tmp_path / "cut.yaml"
    path.write_text(hostile.dump(topo))
    names = hostile.machine_names(load_topology_text(path.read_text()))
    before = machine_state({name})
    try:
        result = run_cli("up", "-q", str(path), timeout=CLI_TIMEOUT)
        assert result.returncode == 0, result.stderr
        info = json.loads(run_cli("inspect", name, "--format", "json").stdout)
        bridges = {net["bridge"] for net in info["networks"].values()}
        assert len(bridges) == 2 and all(len(b) <= 15 for b in bridges)
        for node in info["nodes"].values():
            assert node["alive"] and len(node["interfaces"]) >= 2, node
    finally:
        run_cli("down", "-q", name)
    assert leaks(before, machine_state({name}), names) == {}
