"""containerlab's frr01 lab end to end, through the command line, on real FRRouting: three FRR
routers in a triangle and two PCs, as tests/data/containerlab/frr01/frr01.clab.yml writes it.

The images: FRR from Debian packages (tests/frrimage.py: mmdebstrap bookworm, cached per
machine), served by the test's own registry on 127.0.0.1 as quay.io/frrouting/frr:test, the
way frr01's default image is named; the PCs run a second image on the same layer whose command
only sleeps (docker.io/netemu/pc:test). registries.conf maps docker.io and quay.io to that
registry (test_registry.py), so nothing leaves the machine. The lab's images are chosen the way
frr01 offers, through FRR_IMAGE and PC_IMAGE.

The routers run under netemu's FRR defaults (a user namespace and SYS_ADMIN), with frr01's
root-owned `daemons` and `frr.conf` bound into /etc/frr. Their image is made as FRR's own
images are, and its command is FRR's docker-start, which relies on the image's /var/run/frr:
netemu keeps an image's own /run, as Docker does, so frr01 runs as written."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from netemu.runtime import paths
from tests import kernel_snapshot
from tests.conftest import run_cli, unique_name
from tests.frrimage import frr_layout, variant  # noqa: F401
from tests.integration.test_registry import Registry, conf, local, start_registry, tools  # noqa: F401

FIXTURE = Path(__file__).resolve().parent.parent / "data/containerlab/frr01"
FRR_IMAGE = "quay.io/frrouting/frr:test"
PC_IMAGE = "docker.io/netemu/pc:test"
ROUTERS = {"router1": "10.10.10.1", "router2": "10.10.10.2", "router3": "10.10.10.3"}
CONVERGE_SECONDS = 90


@dataclass
class Images:
    frr: str
    pc: str
    registry: Registry


@pytest.fixture
def frr_images(tmp_path: Path, start_registry: Callable[..., Registry], conf: Callable[[str], Path],  # noqa: F811
               frr_layout: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Images]:  # noqa: F811
    """FRR_IMAGE and PC_IMAGE set to images on the test's registry; the images netemu pulled
    into the machine's store are removed afterwards (unless the store had them already)."""
    had = run_cli("image", "ls", "--format", "json").stdout
    registry = start_registry()
    registry.push(frr_layout, "frrouting/frr", "test")
    registry.push(variant(frr_layout, tmp_path / "pc-layout", Cmd=["sleep", "infinity"]), "netemu/pc", "test")
    conf(local(registry) + f'\n[[registry]]\nprefix = "quay.io"\nlocation = "{registry.host}"\ninsecure = true\n')
    monkeypatch.setenv("FRR_IMAGE", FRR_IMAGE)
    monkeypatch.setenv("PC_IMAGE", PC_IMAGE)
    try:
        yield Images(FRR_IMAGE, PC_IMAGE, registry)
    finally:
        for name in (FRR_IMAGE, PC_IMAGE):
            if f'"{name}"' not in had:
                run_cli("image", "rm", name)


ROUTER_IMAGE_LINE = "      image: ${FRR_IMAGE:=quay.io/frrouting/frr:10.5.1}\n"
def lab_copy(where: Path) -> tuple[Path, str]:
    """frr01 copied to `where`, under a unique lab name and a management subnet of its own
    (containerlab's default 172.20.20.0/24 would clash with any other lab that keeps it), the
    routers' images those of FRR_IMAGE and PC_IMAGE."""
    shutil.copytree(FIXTURE, where)
    name = unique_name("frr")
    path = where / "frr01.clab.yml"
    text = path.read_text()
    assert "\nname: frr01\n" in text and ROUTER_IMAGE_LINE in text
    subnet = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24"
    text = text.replace("\nname: frr01\n", f"\nname: {name}\nmgmt:\n  ipv4-subnet: {subnet}\n", 1)
    path.write_text(text)
    return path, name


@contextmanager
def lab_up(path: Path, name: str) -> Iterator[float]:
    """`netemu validate` and `netemu up` of the file (the seconds `up` took); `netemu down` in
    a finally, which must leave nothing of the lab on the machine."""
    validated = run_cli("validate", str(path))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    before = kernel_snapshot.snapshot()
    try:
        started = time.monotonic()
        up = run_cli("up", str(path), timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        yield time.monotonic() - started
    finally:
        down = run_cli("down", name, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert name not in run_cli("ps").stdout
    assert kernel_snapshot.diff_mine(before, kernel_snapshot.snapshot(), [name]) == {}


def console(lab: str, node: str) -> str:
    log = paths.layers_dir(lab, node) / "console.log"
    return log.read_text(errors="replace")[-3000:] if log.is_file() else "(no console.log)"


def exec_(lab: str, node: str, *argv: str, timeout: float = 60) -> tuple[int, str]:
    done = run_cli("exec", lab, node, "--", *argv, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def eventually(attempt: Callable[[], tuple[int, str]], seconds: float) -> tuple[int, str]:
    """attempt() again, a second apart, until its code is 0 or `seconds` have passed; the last result."""
    deadline = time.monotonic() + seconds
    code, out = attempt()
    while code != 0 and time.monotonic() < deadline:
        time.sleep(1)
        code, out = attempt()
    return code, out


def ospfd_started(lab: str, router: str, give_up_on: str = "netemu-init: command exited", seconds: float = 20) -> bool:
    """Whether ospfd runs in the router within `seconds` of `up` (the command starts last);
    False at once when its console.log shows `give_up_on`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if exec_(lab, router, "pgrep", "-x", "ospfd")[0] == 0:
            return True
        if give_up_on in console(lab, router):
            return False
        time.sleep(0.5)
    return False


def ospf_neighbours(lab: str, router: str) -> dict[str, str]:
    """router-id -> state of each OSPF neighbour, from `show ip ospf neighbor json`."""
    code, out = exec_(lab, router, "vtysh", "-c", "show ip ospf neighbor json")
    if code != 0:
        return {"error": out.strip()[-300:]}
    try:
        data = json.loads(out)
    except ValueError:
        return {"error": out.strip()[-300:]}
    found = {}
    for rid, entries in data.get("neighbors", {}).items():
        for entry in entries if isinstance(entries, list) else [entries]:
            found[rid] = str(entry.get("nbrState") or entry.get("state") or "")
    return found


def converged(lab: str) -> tuple[bool, dict[str, dict[str, str]]]:
    seen = {router: ospf_neighbours(lab, router) for router in ROUTERS}
    ok = all(set(seen[r]) == set(ROUTERS.values()) - {rid} and all(s.startswith("Full") for s in seen[r].values())
             for r, rid in ROUTERS.items())
    return ok, seen


def test_frr01_converges_pcs_ping_across_the_routers_and_down_leaves_nothing(tmp_path: Path,
                                                                             frr_images: Images) -> None:
    path, name = lab_copy(tmp_path / "frr01")
    with lab_up(path, name) as up_seconds:
        up_done = time.monotonic()
        for router in ROUTERS:  # FRR runs in each router, on the bound daemons file
            assert ospfd_started(name, router), f"no ospfd in {router}; console.log:\n{console(name, router)}"

        # The bound files are the machine's root's, and binds are not idmapped: inside the
        # router's user namespace they are nobody's, read by their mode bits, and root inside
        # cannot chown them (FRR's images before 7.5 did, under `set -e`, in their start script;
        # images from 8.1 on make /etc/frr frr's when they are built, and never chown at start).
        code, out = exec_(name, "router1", "stat", "-c", "%U:%G %a", "/etc/frr/frr.conf", "/etc/frr/daemons")
        assert code == 0 and [line.split()[0] for line in out.split("\n")[:2]] == ["nobody:nogroup"] * 2, out
        code, out = exec_(name, "router1", "chown", "frr:frr", "/etc/frr/frr.conf")
        assert code != 0 and "Operation not permitted" in out, out

        # OSPF: every router sees the two others as Full neighbours, within a bounded wait.
        deadline = time.monotonic() + CONVERGE_SECONDS
        ok, seen = converged(name)
        while not ok and time.monotonic() < deadline:
            time.sleep(1)
            ok, seen = converged(name)
        converge_seconds = time.monotonic() - up_done
        assert ok, f"OSPF did not converge in {CONVERGE_SECONDS}s: {seen}\n" + "\n".join(
            f"--- {r} console.log:\n{console(name, r)}" for r in ROUTERS)

        # PC1 reaches PC2 across the routers, on routes OSPF learned (none is static): once the
        # neighbours are Full, the LSAs and SPF still take a moment.
        def learned() -> tuple[int, str]:
            code, routes = exec_(name, "router1", "ip", "-4", "route", "show", "proto", "ospf")
            return (0 if code == 0 and "192.168.12.0/24" in routes else 1), routes
        code, routes = eventually(learned, 30)
        assert code == 0, f"router1 has no OSPF route to PC2's LAN: {routes}"
        code, out = eventually(lambda: exec_(name, "PC1", "ping", "-c1", "-W2", "192.168.12.2"), 30)
        assert code == 0 and " 0% packet loss" in out, out
        code, out = eventually(lambda: exec_(name, "PC2", "ping", "-c1", "-W2", "10.10.10.3"), 30)  # router3's lo
        assert code == 0, out
        code, out = exec_(name, "PC1", "ping", "-c5", "-i0.2", "-W2", "192.168.12.2")  # and it stays so
        assert code == 0 and " 0% packet loss" in out, out
        print(f"\nfrr01 {name}: up {up_seconds:.1f}s, OSPF Full {converge_seconds:.1f}s after up")
