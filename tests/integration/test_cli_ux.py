"""The command line's user experience: pictures, progress, inspect, ps, completion, exec -it."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.campus import campus
from tests.conftest import NETEMU, ROOT, run_cli, unique_name

SEED = ROOT / "topologies" / "seed.yaml"
SVG_NS = "{http://www.w3.org/2000/svg}"
HANG_GUARD = 120  # seconds: only so that a broken terminal session cannot hang the suite

ROUTED = {
    "nodes": {
        "r1": {"sysctls": {"net.ipv4.ip_forward": 1}, "limits": {"memory": "64M", "pids": 200}},
        "r2": {"routes": [{"dst": "10.0.0.0/24", "via": "10.9.0.1"}]},
        "h1": {"routes": [{"dst": "default", "via": "10.0.0.1"}]},
    },
    "networks": {"lan": {"subnet": "10.0.0.0/24"}},
    "links": [
        {"endpoints": ["r1:eth0", "lan"], "addresses": ["10.0.0.1/24"]},
        {"endpoints": ["h1:eth0", "lan"], "addresses": ["auto"]},
        {"endpoints": ["r1:eth1", "r2:eth0"],
         "addresses": [["10.9.0.1/30", "fd00:9::1/64"], ["10.9.0.2/30", "fd00:9::2/64"]]},
    ],
    "checks": [{"from": "h1", "to": "r2", "expect": "reachable"}],
}


def netemu(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NETEMU, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})})


# --- graph ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def campus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("campus") / "campus.yaml"
    path.write_text(yaml.safe_dump(campus("campus")))
    return path


@pytest.mark.parametrize("which", ["seed", "campus"])
def test_graph_writes_valid_svg_png_dot_and_mermaid(which, campus_file, tmp_path):
    source = SEED if which == "seed" else campus_file
    names = ["r1", "r2"] if which == "seed" else ["r1", "r5", "lan3", "s5h9"]
    for suffix in ("svg", "png", "dot", "mmd"):
        out = tmp_path / f"{which}.{suffix}"
        result = run_cli("graph", str(source), "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert out.stat().st_size > 0 and f"{out}: {suffix}" in result.stdout
    assert (tmp_path / f"{which}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = ET.parse(tmp_path / f"{which}.svg").getroot()
    assert svg.tag == f"{SVG_NS}svg"
    texts = {t.text for t in svg.iter(f"{SVG_NS}text")}
    assert set(names) <= texts
    assert (tmp_path / f"{which}.dot").read_text().startswith(f'graph "{which}" {{')
    assert (tmp_path / f"{which}.mmd").read_text().splitlines()[:2] == [f"%% netemu graph: lab {which}",
                                                                        "flowchart LR"]


def test_graph_prints_dot_without_output_and_refuses_bad_suffixes(tmp_path):
    result = run_cli("graph", str(SEED))
    assert result.returncode == 0 and result.stdout.startswith('graph "seed" {')
    assert run_cli("graph", str(SEED), "--format", "mmd").stdout.startswith("%% netemu graph")
    bad = run_cli("graph", str(SEED), "-o", str(tmp_path / "seed.jpg"))
    assert bad.returncode == 2 and ".jpg" in bad.stderr and not (tmp_path / "seed.jpg").exists()
    assert run_cli("graph", "no-such-lab").returncode == 2


def test_graph_without_graphviz_exits_3_naming_it(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = netemu("graph", str(SEED), "-o", str(tmp_path / "seed.svg"), env={"PATH": str(empty)})
    assert result.returncode == 3 and "graphviz" in result.stderr
    # text formats need no Graphviz
    assert netemu("graph", str(SEED), "-o", str(tmp_path / "s.mmd"), env={"PATH": str(empty)}).returncode == 0


def test_graph_of_a_running_lab_shows_the_addresses_up_chose(make_lab):
    lab = make_lab({"nodes": {"a": {}, "b": {}},
                    "links": [{"endpoints": ["a:eth0", "b:eth0"], "addresses": ["auto", "auto"]}]})
    dot = run_cli("graph", lab.name).stdout
    chosen = lab.exec("a", "ip -4 -o addr show eth0").stdout.split()[3]
    assert chosen in dot and " auto" not in dot


# --- inspect and ps -----------------------------------------------------------------------------
def kernel_view(lab: str, node: str) -> tuple[dict[str, set[str]], set[tuple[str, str | None, str | None]]]:
    """Interfaces with addresses, and main-table routes, as `ip -j` reports them."""
    ns = f"netemu-{lab}.{node}"
    addrs = json.loads(subprocess.run(["ip", "-n", ns, "-j", "addr"], capture_output=True, text=True,
                                      check=True).stdout)
    interfaces = {a["ifname"]: {f"{i['local']}/{i['prefixlen']}" for i in a["addr_info"]} for a in addrs}
    routes = set()
    for family in ("-4", "-6"):
        out = subprocess.run(["ip", family, "-n", ns, "-j", "route"], capture_output=True, text=True, check=True)
        for r in json.loads(out.stdout):
            dst = r["dst"] if r["dst"] == "default" or "/" in r["dst"] else \
                f"{r['dst']}/{32 if family == '-4' else 128}"
            routes.add((dst, r.get("gateway"), r.get("dev")))
    return interfaces, routes


def test_inspect_json_matches_the_kernel(make_lab):
    lab = make_lab(ROUTED)
    result = run_cli("inspect", lab.name, "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "running" and set(data["nodes"]) == {"r1", "r2", "h1"}
    for node, info in data["nodes"].items():
        interfaces, routes = kernel_view(lab.name, node)
        assert info["pid"] == lab.pid(node) and info["alive"]
        assert {i["name"]: set(i["addresses"]) for i in info["interfaces"]} == interfaces
        assert {(r["dst"], r["via"], r["dev"]) for r in info["routes"]} == routes
        assert all(i["state"] in ("up", "unknown") for i in info["interfaces"])
    assert ("default", "10.0.0.1", "eth0") in {(r["dst"], r["via"], r["dev"]) for r in data["nodes"]["h1"]["routes"]}
    r1 = data["nodes"]["r1"]
    assert r1["extra"]["limits"] == {"cpus": None, "memory": 64 << 20, "pids": 200}
    assert r1["usage"]["pids"] >= 1 and r1["usage"]["memory_bytes"] > 0
    assert [link["state"] for link in data["links"]][2] == {"r1:eth1": "up", "r2:eth0": "up"}


def test_inspect_shows_a_link_taken_down(make_lab):
    lab = make_lab(ROUTED)
    assert run_cli("link", lab.name, "r2:eth0", "down").returncode == 0
    data = json.loads(run_cli("inspect", lab.name, "--format", "json").stdout)
    assert data["links"][2]["state"] == {"r1:eth1": "down", "r2:eth0": "down"}  # r1's end lost its carrier
    assert data["links"][0]["state"]["lan"] == "up"  # the bridge port of r1:eth0
    table = run_cli("inspect", lab.name).stdout
    assert "r1:eth1 -- r2:eth0" in table and "r1:eth1 down; r2:eth0 down" in table
    for header in ("NODE  PID", "NODE  IF", "NODE  ROUTE", "LINK"):
        assert header in table
    assert "memory 64MiB, pids 200" in table and "default      10.0.0.1  eth0" in table


def test_ps_lists_the_lab_and_its_nodes(make_lab):
    lab = make_lab(ROUTED)
    assert lab.name in run_cli("ps").stdout
    nodes = json.loads(run_cli("ps", "--nodes", "--format", "json").stdout)
    mine = {n["node"]: n for n in nodes if n["lab"] == lab.name}
    assert {name: n["pid"] for name, n in mine.items()} == {name: lab.pid(name) for name in ("r1", "r2", "h1")}
    assert all(n["state"] == "up" and n["netns"] == f"netemu-{lab.name}.{name}" for name, n in mine.items())


# --- progress ---------------------------------------------------------------------------------
def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_progress_is_quiet_when_piped_and_json_lines_with_verbose(make_lab):
    quiet_file = make_lab(ROUTED, up=False)
    result = run_cli("up", str(quiet_file))
    assert result.returncode == 0 and result.stderr == "" and "is up: 3 nodes" in result.stdout
    name = yaml.safe_load(quiet_file.read_text())["name"]
    assert run_cli("down", name).stderr == ""

    path = make_lab(ROUTED, up=False)
    name = yaml.safe_load(path.read_text())["name"]
    up = run_cli("up", str(path), "--verbose")
    assert up.returncode == 0, up.stderr
    events = json_lines(up.stderr)
    assert all(e["op"] == f"up {name}" and isinstance(e["t"], float) for e in events)
    last = {e["kind"]: e for e in events if "kind" in e}
    assert (last["hosts"]["done"], last["hosts"]["total"]) == (3, 3)
    assert (last["links"]["done"], last["links"]["total"]) == (3, 3)

    check = run_cli("check", str(path), "-v")
    assert check.returncode == 0, check.stderr
    counts = [(e["done"], e["total"]) for e in json_lines(check.stderr) if e.get("kind") == "checks"]
    assert counts[0] == (0, 1) and counts[-1] == (1, 1)

    down = run_cli("down", name, "-v", "--quiet")
    assert down.returncode == 0 and down.stdout == "" and down.stderr == ""


def run_on_terminal(argv: list[str], keys: bytes = b"") -> tuple[int, str]:
    """Run argv with stdin, stdout and stderr on a new pseudo-terminal; type `keys`; return
    the exit code and everything it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, start_new_session=True)
    os.close(slave)
    if keys:
        os.write(master, keys)
    output = b""
    try:
        while select.select([master], [], [], HANG_GUARD)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last user is gone
                break
            if not chunk:
                break
            output += chunk
        return proc.wait(timeout=HANG_GUARD), output.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_progress_on_a_terminal_counts_hosts_and_links(make_lab):
    path = make_lab(ROUTED, up=False)
    code, screen = run_on_terminal([*NETEMU, "up", str(path)])
    assert code == 0, screen
    assert "hosts" in screen and "3/3" in screen and "links" in screen
    assert "is up: 3 nodes, 3 links" in screen
    quiet = make_lab(ROUTED, up=False)
    code, screen = run_on_terminal([*NETEMU, "up", str(quiet), "-q"])
    assert code == 0 and screen.strip() == ""


# --- exec -it ---------------------------------------------------------------------------------
def test_exec_it_opens_a_shell_on_a_terminal(make_lab):
    lab = make_lab(ROUTED)
    code, screen = run_on_terminal([*NETEMU, "exec", "-it", lab.name, "r2"],
                                   keys=b"echo host=$(hostname) sum=$((6*7)); tty; exit 3\n")
    assert code == 3, screen
    assert "host=r2 sum=42" in screen and "/dev/pts/" in screen


# --- completion -------------------------------------------------------------------------------
def complete(*words: str) -> list[str]:
    """What bash would offer after `netemu WORDS...` (the last word is the one being typed)."""
    env = {"_NETEMU_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(["netemu", *words]),
           "COMP_CWORD": str(len(words))}
    result = netemu(env=env)
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line.startswith("plain,")]


def test_completion_offers_lab_and_node_names(make_lab):
    lab = make_lab(ROUTED)
    assert lab.name in complete("inspect", "")
    assert complete("inspect", lab.name[:-1]) == [lab.name]
    assert complete("down", lab.name[:-2]) == [lab.name]
    assert sorted(complete("exec", lab.name, "")) == ["h1", "r1", "r2"]
    assert complete("node", lab.name, "h") == ["h1"]
    assert sorted(complete("link", lab.name, "r1:")) == ["r1:eth0", "r1:eth1"]
    assert "r2:eth0" in complete("probe", lab.name, "h1", "r")
    assert "graph" in complete("gr")
    assert complete("exec", f"no-such-{unique_name()}", "") == []


def test_completion_script_for_bash():
    result = run_cli("completion", "bash")
    assert result.returncode == 0
    assert "_netemu_completion()" in result.stdout and "_NETEMU_COMPLETE=bash_complete" in result.stdout
    same = netemu(env={"_NETEMU_COMPLETE": "bash_source"})
    assert same.stdout.strip() == result.stdout.strip()
