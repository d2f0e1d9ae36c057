"""pytest plugin (registered as the `netemu` pytest11 entry point): a lab per test.

    import pytest

    @pytest.mark.topology("web.yaml")            # relative to this test file
    def test_web(netemu_lab):
        assert netemu_lab.probe("client", "web", proto="tcp", port=80).reachable
        netemu_lab.assert_checks()               # every check of web.yaml

- `netemu_lab` brings up the marker's topology before the test and takes it down after it,
  also when the test fails or is interrupted. The marker may sit on the test, its class or its
  module (`pytestmark`). `name="..."` runs the lab under another name, so that two test
  sessions can use the same file side by side.
- When a test fails, its report gets a "netemu probes" section: every probe and check the test
  ran through the fixture, with the packets each one sent and saw. `assert result.reachable`
  itself shows the probe's one-line verdict; `assert_checks()` raises with every failed check.
- `pytest --junitxml` needs nothing more: these are ordinary tests.

This module is imported by every pytest run in an environment where netemu is installed, so it
imports nothing heavy until a test asks for a lab."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from netemu.api import Lab

LAB_KEY = pytest.StashKey["Lab"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "topology(path, name=None): the topology file the netemu_lab fixture brings up "
        "(relative to the test file); name= runs the lab under another name")


def _topology_path(request: pytest.FixtureRequest, marker: pytest.Mark) -> Path:
    if not marker.args:
        pytest.fail("@pytest.mark.topology needs the topology file: @pytest.mark.topology('lab.yaml')",
                    pytrace=False)
    path = Path(marker.args[0])
    return path if path.is_absolute() else Path(request.path).parent / path


@pytest.fixture
def netemu_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The running lab of the test's @pytest.mark.topology file, taken down after the test."""
    from netemu.api import Lab
    from netemu.errors import NetemuError
    from netemu.topology import LAB_NAME_MAX, check_name, load_topology

    marker = request.node.get_closest_marker("topology")
    if marker is None:
        pytest.fail("the netemu_lab fixture needs @pytest.mark.topology('file.yaml') on the test, its class "
                    "or its module", pytrace=False)
    try:
        topology = load_topology(_topology_path(request, marker))
        if marker.kwargs.get("name"):
            topology.name = check_name(str(marker.kwargs["name"]), "lab", LAB_NAME_MAX)
        lab = Lab.up(topology)
    except (NetemuError, ValueError) as exc:  # a bad file or a machine that cannot: one readable line
        pytest.fail(f"netemu could not bring up the lab: {exc}", pytrace=False)
    request.node.stash[LAB_KEY] = lab
    try:
        yield lab
    finally:
        lab.down()


def _evidence(lab: Lab) -> str:
    from netemu.probe.checks import CheckReport, CheckResult
    from netemu.probe.model import ProbeResult, ReachMatrix

    blocks: list[str] = []
    for item in lab.history:
        if isinstance(item, ProbeResult | CheckResult):
            blocks.append("\n".join([str(item), *(f"    {line}" for line in item.details())]))
        elif isinstance(item, CheckReport):
            blocks.append(str(item))
        elif isinstance(item, ReachMatrix):
            bad = item.unreachable_pairs()
            lines = [f"reach: {item.reachable}/{item.pairs} pairs reachable"]
            lines += [f"    {s} -> {d}: {c.reason}" for s, d, c in bad[:20]]
            blocks.append("\n".join(lines))
    return "\n".join(blocks)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[Any]:
    report = yield
    lab = item.stash.get(LAB_KEY, None)
    if report.failed and lab is not None and lab.history and call.when == "call":
        report.sections.append(("netemu probes", _evidence(lab)))
    return report
