"""Every topology bundled under topologies/ works as documented: it validates, comes up (under a
unique name, so labs side by side never collide), passes its own `checks:` through `netemu check`
and goes down. Where the kernel can say more than the checks, it is asked too."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netemu import Lab
from netemu.topology import load_topology
from tests.conftest import ROOT, run_cli, unique_name

TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))
FRR_ZEBRA = Path("/usr/lib/frr/zebra")
CONVERGENCE = 60.0  # seconds a routing protocol gets to converge (as the ospf lab's checks allow)


def _needs_frr(path: Path) -> bool:
    return "/usr/lib/frr/" in path.read_text()


def _routes(lab: str, node: str, family: str = "-4") -> list[dict]:
    out = subprocess.run(["ip", "-n", f"netemu-{lab}.{node}", "-j", family, "route"], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def _addresses(lab: str, node: str, iface: str) -> set[str]:
    out = subprocess.run(["ip", "-n", f"netemu-{lab}.{node}", "-j", "address", "show", "dev", iface],
                         capture_output=True, text=True, check=True).stdout
    return {f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link["addr_info"]}


def _bridge_ports(lab: str, node: str, bridge: str) -> set[str]:
    out = subprocess.run(["ip", "-n", f"netemu-{lab}.{node}", "-j", "link", "show", "master", bridge],
                         capture_output=True, text=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


# --- what the kernel shows, per topology ----------------------------------------------------------
def _star(lab: str) -> None:
    # auto: the next free address of the switch's subnet, in file order
    for n in range(1, 5):
        assert f"10.10.0.{n}/24" in _addresses(lab, f"h{n}", "eth0")


def _linear(lab: str) -> None:
    assert _bridge_ports(lab, "s1", "br0") == {"eth0", "eth1"}
    assert _bridge_ports(lab, "s2", "br0") == {"eth0", "eth1", "eth2", "eth3"}
    assert _bridge_ports(lab, "s3", "br0") == {"eth0", "eth1"}


def _tree(lab: str) -> None:
    assert _bridge_ports(lab, "core", "br0") == {"eth1", "eth2"}


def _dual_stack(lab: str) -> None:
    assert {"10.40.1.2/24", "fd00:40:1::2/64"} <= _addresses(lab, "h1", "eth0")
    assert {"10.40.1.3/24", "fd00:40:1::3/64"} <= _addresses(lab, "h2", "eth0")
    assert any(r["dst"] == "default" and r.get("gateway") == "fd00:40:2::1" for r in _routes(lab, "srv", "-6"))


def _routed(lab: str) -> None:
    r2 = {r["dst"]: r.get("gateway") for r in _routes(lab, "r2")}
    assert r2["10.1.0.0/24"] == "10.0.12.1" and r2["10.3.0.0/24"] == "10.0.23.2"


def _nat_gateway(lab: str) -> None:
    ruleset = Lab.attach(lab).exec("gw", ["nft", "list", "ruleset"], check=True).stdout
    assert 'oifname "eth1" masquerade' in ruleset


def _ospf(lab: str) -> None:
    """Every route a router has beyond its own subnets was learned by OSPF (the routers have no
    static route), and when a ring link fails the traffic goes the other way round."""
    for n in (1, 2, 3):
        routes = [r for r in _routes(lab, f"r{n}") if r.get("protocol") != "kernel"]
        assert routes and all(r.get("protocol") == "ospf" for r in routes), routes
        learned = {r["dst"] for r in routes}
        assert {f"10.{m}.0.0/24" for m in (1, 2, 3) if m != n} <= learned, learned
        assert {f"10.255.0.{m}" for m in (1, 2, 3) if m != n} <= learned, learned

    running = Lab.attach(lab)
    assert _path_until(running, "h1", "h3", ["r1", "r3"]) == ["r1", "r3"]  # the direct link
    down = run_cli("link", lab, "r1:eth2", "down")  # the r1 -- r3 link
    assert down.returncode == 0, down.stderr
    assert _path_until(running, "h1", "h3", ["r1", "r2", "r3"]) == ["r1", "r2", "r3"]
    up = run_cli("link", lab, "r1:eth2", "up")
    assert up.returncode == 0, up.stderr
    assert _path_until(running, "h1", "h3", ["r1", "r3"]) == ["r1", "r3"]


def _path_until(lab: Lab, src: str, dst: str, wanted: list[str]) -> list[str] | str:
    """Trace src -> dst until the path is `wanted` (OSPF reconverging), for at most CONVERGENCE
    seconds; the last path seen, or why there was none. (A check's `via:` cannot say this: it
    accepts other routers between the named ones.)"""
    deadline = time.monotonic() + CONVERGENCE
    while True:
        result = lab.probe(src, dst, trace=True)
        path = [hop.node for hop in result.path or []] if result.reachable else result.describe()
        if path == wanted or time.monotonic() > deadline:
            return path
        time.sleep(0.2)


KERNEL_CHECKS: dict[str, Callable[[str], None]] = {
    "star": _star, "linear": _linear, "tree": _tree, "dual-stack": _dual_stack, "routed": _routed,
    "nat-gateway": _nat_gateway, "ospf": _ospf,
}
REQUIRED = ("seed", "star", "linear", "tree", "nat-gateway", "dual-stack", "routed", "ospf")


# --- the tests ------------------------------------------------------------------------------------
def test_every_required_topology_is_bundled() -> None:
    assert set(REQUIRED) <= {path.stem for path in TOPOLOGIES}


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda path: path.stem)
def test_bundled_topology(path: Path, tmp_path: Path) -> None:
    check_bundled(path, tmp_path)


def check_bundled(path: Path, tmp_path: Path, while_up: Callable[[str], None] | None = None) -> None:
    """Validate, bring up under a unique name, pass every check of the file, ask the kernel, take
    it down; `while_up(name)` runs before it goes down (tests/integration/test_firewall.py)."""
    validated = run_cli("validate", str(path))
    assert validated.returncode == 0, validated.stderr
    if _needs_frr(path) and not FRR_ZEBRA.exists():
        pytest.skip(f"FRRouting is not installed ({FRR_ZEBRA} is missing: apt-get install frr)")

    text = path.read_text()
    match = re.search(r"^name:[ \t]*([a-z0-9-]+)", text, flags=re.MULTILINE)
    assert match, f"{path}: no top-level name"
    assert match.group(1) == path.stem, "a bundled lab is named after its file"
    name = unique_name()
    copy = tmp_path / path.name  # same text but the name, so check locations keep their line numbers
    copy.write_text(text[: match.start(1)] + name + text[match.end(1):])

    try:
        up = run_cli("up", "-q", str(copy))
        assert up.returncode == 0, up.stdout + up.stderr
        checked = run_cli("check", str(copy), "--format", "json")
        assert checked.stdout, checked.stderr
        report = json.loads(checked.stdout)
        failed = [f"{c['location']} {c['title']}: {c['message']}" for c in report["checks"] if not c["passed"]]
        assert checked.returncode == 0 and report["passed"], "\n".join(failed) or checked.stderr
        assert report["total"] == len(load_topology(copy).checks) > 0, "every check of the file ran"
        if path.stem in KERNEL_CHECKS:
            KERNEL_CHECKS[path.stem](name)
        if while_up is not None:
            while_up(name)
    finally:
        down = run_cli("down", name)
        if down.returncode != 0:
            from netemu.runtime import cleanup

            cleanup.remove_lab(name)
    assert down.returncode == 0, down.stderr


def test_readme_lists_every_bundled_topology() -> None:
    readme = (ROOT / "README.md").read_text()
    for path in TOPOLOGIES:
        command = f"netemu up topologies/{path.name} && netemu check topologies/{path.name}"
        assert command in readme, f"README.md does not show how to run {path.name}"
