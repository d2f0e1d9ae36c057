"""Shared fixtures: unique lab names, labs torn down even when a test fails, and the suite's
final check that nothing netemu made is left on the machine."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests import kernel_snapshot

ROOT = Path(__file__).resolve().parent.parent
NETEMU = [sys.executable, "-m", "netemu.cli"]


SESSION_LABS: set[str] = set()

# No test may reach a registry off this machine: an image name that is not in the store makes
# `up` pull it, and `busybox` means docker.io. For the whole suite, and every netemu it starts,
# the registries a name can mean point at a closed loopback port (port 9, discard: nothing
# listens). Tests with a registry of their own write their own file (test_registry.py).
REGISTRIES_GUARD = Path(tempfile.mkdtemp(prefix="netemu-tests-registries-")) / "registries.conf"
REGISTRIES_GUARD.write_text("".join(
    f'[[registry]]\nprefix = "{name}"\nlocation = "127.0.0.1:9"\ninsecure = true\n'
    for name in ("docker.io", "quay.io", "ghcr.io", "gcr.io", "registry.k8s.io", "registry.gitlab.com")))
os.environ["CONTAINERS_REGISTRIES_CONF"] = str(REGISTRIES_GUARD)
atexit.register(shutil.rmtree, REGISTRIES_GUARD.parent, True)


def unique_name(prefix: str = "t") -> str:
    name = f"{prefix}{uuid.uuid4().hex[:8]}"[:12]
    SESSION_LABS.add(name)
    return name


def run_cli(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NETEMU, *args], capture_output=True, text=True, input=input, timeout=timeout,
                          cwd=ROOT)


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """make_lab(topology_dict) -> netemu.Lab; the name is made unique, and every lab is taken
    down at the end of the test whatever happened."""
    from netemu import Lab
    from netemu.runtime import cleanup

    names: list[str] = []

    def _make(topology: dict, up: bool = True) -> object:
        topology = dict(topology)
        topology["name"] = unique_name()
        path = tmp_path / f"{topology['name']}.yaml"
        path.write_text(yaml.safe_dump(topology, sort_keys=False))
        names.append(topology["name"])
        return Lab.up(path) if up else path

    yield _make
    for name in names:
        cleanup.remove_lab(name)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Runs after the whole suite: no netemu netns, link, cgroup, mount, process or state."""
    before = kernel_snapshot.leftovers() if kernel_snapshot.is_root() else {}
    yield
    if not kernel_snapshot.is_root():
        return
    # What was there before the suite (a crashed earlier run) is not this suite's leak.
    left = {k: v - before.get(k, set()) for k, v in kernel_snapshot.leftovers().items()}
    if os.environ.get("NETEMU_TEST_SHARED_MACHINE"):
        # Developers running parts of the suite side by side: judge only this session's labs.
        left = {k: {o for o in v if any(name in o for name in SESSION_LABS)} for k, v in left.items()}
    left = {k: sorted(v) for k, v in left.items() if v}
    summary = {k: f"{len(v)}: {', '.join(x[:100] for x in v[:5])}" for k, v in left.items()}
    assert not left, f"netemu objects left on the machine after the suite: {summary}"
