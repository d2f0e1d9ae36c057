"""The pytest plugin, exercised the way a user meets it: a separate pytest run (in a directory
of its own, no conftest) that finds the plugin through its pytest11 entry point."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from netemu import api
from netemu.errors import LabNotFound
from tests.conftest import unique_name

LAB = {
    "nodes": {"a": {}, "b": {}},
    "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["10.75.11.1/24", "10.75.11.2/24"]}],
    "checks": [{"from": "a", "to": "b", "expect": "reachable"}],
}
BROKEN_CHECKS = [{"from": "a", "to": "b", "expect": "reachable"},
                 {"from": "a", "to": "b", "proto": "tcp", "port": 22, "expect": "reachable", "timeout": "500ms"}]

TESTS = '''
import pytest

@pytest.mark.topology("labs/lab.yaml", name="{good}")
def test_passes(netemu_lab):
    result = netemu_lab.probe("a", "b")
    assert result.reachable
    netemu_lab.assert_checks()

@pytest.mark.topology("labs/lab.yaml", name="{failing}")
def test_probe_fails(netemu_lab):
    assert netemu_lab.probe("a", "b", proto="tcp", port=22).reachable

@pytest.mark.topology("labs/broken.yaml", name="{checks}")
def test_checks_fail(netemu_lab):
    netemu_lab.assert_checks()

def test_without_marker(netemu_lab):
    pass
'''


@pytest.fixture
def user_project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    names = {"good": unique_name("pg"), "failing": unique_name("pf"), "checks": unique_name("pc")}
    (tmp_path / "labs").mkdir()
    (tmp_path / "labs" / "lab.yaml").write_text(yaml.safe_dump({"name": "plugin", **LAB}, sort_keys=False))
    broken = {"name": "plugin", **LAB, "checks": BROKEN_CHECKS}
    (tmp_path / "labs" / "broken.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
    (tmp_path / "test_user.py").write_text(TESTS.format(**names))
    return tmp_path, names


def test_plugin_fixture_marker_messages_junit_and_teardown(user_project: tuple[Path, dict[str, str]]) -> None:
    project, names = user_project
    junit = project / "junit.xml"
    try:
        run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", f"--junitxml={junit}",
                              "test_user.py"], cwd=project, capture_output=True, text=True, timeout=300)
    finally:
        for name in names.values():  # whatever happened, leave nothing behind
            api.down(name)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "2 failed, 1 passed, 1 error" in out, out

    # a failed probe assertion reads as the verdict, and the report carries the packets
    assert "<probe a -> b (10.75.11.2) tcp/22: refused in" in out and "RST from 10.75.11.2:22>" in out
    assert "netemu probes" in out and "got: IP / TCP 10.75.11.2:ssh > 10.75.11.1:" in out
    # assert_checks lists the failed checks with what was expected and what was seen
    assert "AssertionError: 1 of 2 checks failed" in out
    assert "a -> b tcp/22 expect reachable: FAILED: expected reachable, saw refused" in out
    # a test that forgets the marker gets told what to add
    assert "needs @pytest.mark.topology('file.yaml')" in out

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "4"
    assert suite.get("failures") == "2" and suite.get("errors") == "1"

    # every lab was taken down, the failing tests' ones too
    for name in names.values():
        with pytest.raises(LabNotFound):
            api.record(name)
