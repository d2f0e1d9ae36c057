"""Labs next to the machine's own firewall: an iptables and ip6tables FORWARD policy of DROP (as
Docker and Ubuntu leave them) with bridge netfilter on, a native nftables forward chain of policy
drop, and a real dockerd. The bundled labs' checks must pass through all of them, netemu's
accept rules must go with the lab, and whatever the test changed on the machine is put back
exactly. Every test here holds one lock: two of them changing the machine's policy at once
could not each put back what they found."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from netemu.runtime import cleanup, firewall
from netemu.topology import load_topology
from tests import kernel_snapshot
from tests.conftest import ROOT, run_cli, unique_name
from tests.integration.test_bundled import check_bundled

# The bundled labs whose hosts share a lab bridge on the machine (the others link hosts directly).
LABS = ("star", "nat-gateway", "dual-stack", "tree")
BRIDGE_NF = [Path(f"/proc/sys/net/bridge/bridge-nf-call-{tool}") for tool in ("iptables", "ip6tables")]
LOCK = Path("/tmp/netemu-test-firewall.lock")
SAVE = {4: "iptables-save", 6: "ip6tables-save"}
NFT_FAMILY = {4: "ip", 6: "ip6"}

needs_iptables = pytest.mark.skipif(shutil.which("iptables") is None,
                                    reason="iptables is not installed (apt-get install iptables; `make deps`)")


# --- the machine's firewall, saved and put back ------------------------------------------------------
def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _saved(family: int, text: str | None = None) -> str:
    """iptables-save (or `text` it printed) without its dated comments and counters. On a shared
    machine, rules other developers' labs add meanwhile (comment netemu:) are left out."""
    text = _run(SAVE[family]) if text is None else text
    lines = [re.sub(r" \[\d+:\d+\]$", "", line) for line in text.splitlines() if not line.startswith("#")]
    if kernel_snapshot.shared_machine():
        lines = [line for line in lines if '--comment "netemu:' not in line]
    return "\n".join(lines)


def _nft_tables() -> set[str]:
    return {line.strip() for line in _run("nft", "list", "tables").splitlines()}


def _tagged_rules(name: str) -> set[str]:
    return {rule for rule in kernel_snapshot.forward_rules() if f'"netemu:{name}"' in rule}


@contextmanager
def _firewall_lock() -> Iterator[None]:
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextmanager
def _machine_put_back() -> Iterator[None]:
    """Whatever happens inside, iptables, ip6tables (iptables-restore of what was saved; a table
    that did not exist is deleted again), bridge netfilter and IPv4 forwarding are put back."""
    saved = {family: _run(SAVE[family]) for family in SAVE}
    tables = _nft_tables()
    bridge_nf = {path: path.read_text() for path in BRIDGE_NF}
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    try:
        yield
    finally:
        for family in SAVE:
            _put_back(family, saved[family], tables)
        for path, value in bridge_nf.items():
            path.write_text(value)
        if not _forwarding_claimed():  # else netemu's ledger puts it back with its last such lab
            Path("/proc/sys/net/ipv4/ip_forward").write_text(forwarding)


def _forwarding_claimed() -> bool:
    try:
        ledger = json.loads((kernel_snapshot.RUN_DIR / "host-sysctls.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return any(need.get("forward") for need in ledger.get("labs", {}).values())


def _put_back(family: int, saved: str, tables_before: set[str]) -> None:
    restore = "iptables-restore" if family == 4 else "ip6tables-restore"
    if saved.strip() and _saved(family) != _saved(family, saved):
        subprocess.run([restore], input=saved, text=True, check=True)  # the saved tables, exactly
    for line in _nft_tables() - tables_before:  # tables Docker or `-P` made, e.g. "table ip filter"
        if line.split()[1] == NFT_FAMILY[family] and line.split()[2] in ("filter", "nat"):
            _run("nft", "delete", "table", *line.split()[1:])


@contextmanager
def _forward_drop(bridge_nf: str = "1") -> Iterator[None]:
    """FORWARD policy DROP for IPv4 and IPv6, bridge netfilter on (or off), for the block's time."""
    for path in BRIDGE_NF:
        path.write_text(bridge_nf)
    for tool in ("iptables", "ip6tables"):
        _run(tool, "-w", "-P", "FORWARD", "DROP")
    yield


# --- the labs -----------------------------------------------------------------------------------
def _bundled(stem: str) -> Path:
    return ROOT / "topologies" / f"{stem}.yaml"


def _run_labs(tmp_path: Path, while_up: Callable[[str], None]) -> list[str]:
    """Every lab of LABS through check_bundled; the names used, none of which may keep a rule."""
    names: list[str] = []

    def seen(name: str) -> None:
        names.append(name)
        while_up(name)

    for stem in LABS:
        check_bundled(_bundled(stem), tmp_path, seen)
    assert len(names) == len(LABS)
    for name in names:
        assert not _tagged_rules(name), f"lab {name} left rules behind"
    return names


def _accepts_in_iptables(families: tuple[int, ...]) -> Callable[[str], None]:
    """A check that the lab's accepts sit in DOCKER-USER where Docker made it, else in FORWARD."""
    def check(name: str) -> None:
        for family in families:
            saved = _run(SAVE[family], "-t", "filter")
            chain = "DOCKER-USER" if "\n:DOCKER-USER " in saved else "FORWARD"
            rules = [line for line in saved.splitlines() if f'"netemu:{name}"' in line]
            assert rules and all(line.startswith(f"-A {chain} ") for line in rules), rules
    return check


# --- the tests ----------------------------------------------------------------------------------
@needs_iptables
@pytest.mark.parametrize("bridge_nf", ["1", "0"], ids=["bridge-netfilter-on", "bridge-netfilter-off"])
def test_bundled_labs_pass_a_forward_policy_of_drop(tmp_path: Path, bridge_nf: str) -> None:
    with _firewall_lock():
        before = {family: _saved(family) for family in SAVE}
        with _machine_put_back(), _forward_drop(bridge_nf):
            _run_labs(tmp_path, _accepts_in_iptables((4, 6)))
        assert {family: _saved(family) for family in SAVE} == before


@needs_iptables
def test_nat_network_and_published_port_through_a_policy_of_drop(tmp_path: Path) -> None:
    """Routed through the machine: the lab's NAT network goes out (masqueraded), a neighbour of
    the machine reaches the published port, and nothing else of the lab from outside. The
    neighbour is a namespace of this test's own, wired to the machine by a veth pair."""
    name, port = unique_name(), _free_port()
    lab = tmp_path / f"{name}.yaml"
    lab.write_text(f"""name: {name}
networks:
  front: {{subnet: 10.213.1.0/24, gateway: 10.213.1.1, nat: true}}
nodes:
  web:
    ports: ["{port}:80/tcp"]
    routes: [{{dst: default, via: 10.213.1.1}}]
    cmd: exec python3 -m http.server 80
links:
  - {{endpoints: [web:eth0, front], addresses: [10.213.1.10/24]}}
""")
    with _firewall_lock(), _machine_put_back(), _forward_drop(), _neighbour(name) as (netns, machine_ip):
        try:
            up = run_cli("up", "-q", str(lab))
            assert up.returncode == 0, up.stderr
            _until(lambda: _connects(None, "10.213.1.10", 80), "web's server starts")
            assert _connects(netns, machine_ip, port), "the published port, DNAT-ed into the lab"
            assert not _connects(netns, "10.213.1.10", 80), "the NAT network reached from outside"
            ping = run_cli("exec", name, "web", "--", "ping", "-c1", "-W2", "10.213.9.2")
            assert ping.returncode == 0, "out of the NAT network, routed by the machine: " + ping.stdout
        finally:
            down = run_cli("down", name)
        assert down.returncode == 0, down.stderr
        assert not _tagged_rules(name)


def test_native_nftables_forward_chains_that_drop(tmp_path: Path) -> None:
    """A table of the machine's own (not iptables'), whose forward chain drops: netemu adds its
    accepts at the top of that chain and takes them away again; the table is as it was."""
    table = f"ntfw{os.getpid()}"
    script = f"""table inet {table} {{
  chain forward {{
    type filter hook forward priority filter + 5; policy drop;
    ct state invalid drop
  }}
  chain other {{
    type filter hook forward priority filter + 6; policy accept;
    meta l4proto udp reject
  }}
}}
"""
    with _firewall_lock():
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)
        try:
            before = _run("nft", "list", "table", "inet", table)
            for stem in ("star", "dual-stack"):
                check_bundled(_bundled(stem), tmp_path, _nft_accepts_in(table))
            assert _run("nft", "list", "table", "inet", table) == before
        finally:
            _run("nft", "delete", "table", "inet", table)


def _nft_accepts_in(table: str) -> Callable[[str], None]:
    def check(name: str) -> None:
        text = _run("nft", "list", "table", "inet", table)
        for chain in ("forward", "other"):
            body = text.split(f"chain {chain} {{", 1)[1].split("}", 1)[0]
            assert f'comment "netemu:{name}"' in body.splitlines()[2], body  # the top rule, after the hook line
    return check


@needs_iptables
def test_rules_left_by_a_crash_are_found_by_their_tag(tmp_path: Path) -> None:
    """An `up` killed right after its accepts went in leaves nothing else that names the lab:
    `clean` still finds the lab from the rules' comment, and removes them."""
    name = unique_name()
    path = tmp_path / f"{name}.yaml"
    path.write_text((_bundled("star")).read_text().replace("name: star", f"name: {name}"))
    with _firewall_lock(), _machine_put_back(), _forward_drop():
        firewall.apply(load_topology(path))
        try:
            assert len(_tagged_rules(name)) == 2  # one per family: the lab's bridge to itself
            assert name in cleanup.owned_lab_names()
        finally:
            cleanup.remove_lab(name)
        assert not _tagged_rules(name)


@needs_iptables
def test_bundled_labs_pass_next_to_a_running_dockerd(tmp_path: Path) -> None:
    with _firewall_lock(), _machine_put_back(), _dockerd():
        if "FORWARD DROP" not in _saved(4):
            # Docker sets DROP only when it turns forwarding on itself; a lab running NAT on this
            # machine may have done so already. A CI runner's Docker has DROP.
            _run("iptables", "-w", "-P", "FORWARD", "DROP")
        docker = {family: _saved(family) for family in SAVE}
        assert "\n:DOCKER-USER -\n" in docker[4]
        _run_labs(tmp_path, _accepts_in_iptables((4,)))
        assert {family: _saved(family) for family in SAVE} == docker, "Docker's chains changed"


@needs_iptables
def test_an_image_the_docker_daemon_holds_is_pulled_from_it(tmp_path: Path) -> None:
    """`docker load` (or `docker pull`) puts an image in the daemon; `netemu image pull
    docker-daemon:NAME:TAG` takes it from there, through the daemon's API (DOCKER_HOST)."""
    if shutil.which("docker") is None or shutil.which("skopeo") is None:
        pytest.skip("needs the docker client and skopeo (apt-get install docker.io skopeo; `make deps`)")
    from tests.integration.test_images import base_layer, write_archive

    if not Path("/bin/busybox").exists():
        pytest.skip("needs busybox-static (apt-get install busybox-static)")
    tag = f"netemu-daemon-test/{unique_name('d')}:1"
    archive = write_archive("docker-25", tmp_path, [base_layer(Path("/bin/busybox").read_bytes())], tag)
    with _firewall_lock(), _machine_put_back(), _dockerd() as host:
        env = {**os.environ, **({"DOCKER_HOST": host} if host else {})}
        loaded = subprocess.run(["docker", "load", "-i", str(archive)], capture_output=True, text=True, env=env)
        assert loaded.returncode == 0, loaded.stderr
        try:
            pulled = subprocess.run([sys.executable, "-m", "netemu.cli", "image", "pull", f"docker-daemon:{tag}"],
                                    capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
            assert pulled.returncode == 0, pulled.stderr
            assert f"docker.io/{tag}" in run_cli("image", "ls").stdout
            absent = subprocess.run([sys.executable, "-m", "netemu.cli", "image", "pull",
                                     "docker-daemon:netemu-daemon-test/none:1"], capture_output=True, text=True,
                                    env=env, cwd=ROOT, timeout=300)
            assert absent.returncode == 2 and len(absent.stderr.splitlines()) == 1, absent.stderr
        finally:
            run_cli("image", "rm", f"docker.io/{tag}")
            subprocess.run(["docker", "rmi", tag], capture_output=True, env=env)


@needs_iptables
def test_both_iptables_backends_at_once() -> None:
    """Legacy iptables and iptables-nft each with a FORWARD policy of DROP: a packet must pass
    both, so each gets its accept. In namespaces of the test's own (a legacy table, once made,
    stays until reboot): a bridge named as a lab's, two ports, a ping across it."""
    tag = f"{os.getpid()}"
    machine, a, b = (f"ntfw{tag}{n}" for n in "mab")
    topo = Path(tempfile.mkdtemp(prefix="ntfw")) / "fwl.yaml"
    topo.write_text("name: fwl\nnetworks: {s: {subnet: 10.9.0.0/24}}\nnodes: {a: {}, b: {}}\nlinks:\n"
                    + "".join(f"  - {{endpoints: [{n}:eth0, s], addresses: [auto]}}\n" for n in "ab"))
    in_machine = ["ip", "netns", "exec", machine]
    try:
        for ns in (machine, a, b):
            _run("ip", "netns", "add", ns)
        _run(*in_machine, "ip", "link", "add", "ne-fwl.s", "type", "bridge")
        _run(*in_machine, "ip", "link", "set", "ne-fwl.s", "up")
        for n, ns in enumerate((a, b), start=1):
            _run(*in_machine, "ip", "link", "add", f"p{n}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run(*in_machine, "ip", "link", "set", f"p{n}", "master", "ne-fwl.s", "up")
            _run("ip", "-n", ns, "addr", "add", f"10.9.0.{n}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run(*in_machine, "sh", "-c", "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables")
        for tool in ("iptables-legacy", "iptables-nft"):
            _run(*in_machine, tool, "-w", "-P", "FORWARD", "DROP")

        def ping() -> bool:
            return subprocess.run(["ip", "netns", "exec", a, "ping", "-c1", "-W1", "10.9.0.2"],
                                  capture_output=True).returncode == 0

        def firewall_call(code: str) -> str:
            script = f"from netemu.runtime import firewall; from netemu.topology import load_topology; print({code})"
            return _run(*in_machine, sys.executable, "-c", script)

        assert not ping(), "the policies drop what crosses the bridge"
        firewall_call(f"firewall.apply(load_topology({str(topo)!r}))")
        for tool in ("iptables-legacy-save", "iptables-nft-save"):
            assert '--comment "netemu:fwl"' in _run(*in_machine, tool, "-t", "filter")
        assert ping()
        assert "fwl" in firewall_call("firewall.owned_labs()")
        firewall_call("firewall.remove('fwl')")
        for tool in ("iptables-legacy-save", "iptables-nft-save"):
            assert "netemu:" not in _run(*in_machine, tool, "-t", "filter")
        assert not ping()
    finally:
        for ns in (machine, a, b):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        shutil.rmtree(topo.parent)


# --- helpers ------------------------------------------------------------------------------------
@contextmanager
def _dockerd() -> Iterator[str | None]:
    """A dockerd of this test's own (its data root, exec root, socket and pidfile in a directory
    of /tmp: containerd's socket path under it must fit a unix socket's 108 bytes),
    stopped at the end, then what it leaves on the machine removed: docker0, /etc/docker/key.json
    and /run/docker when they were not there before (its firewall rules: _machine_put_back). Where
    the machine runs a dockerd of its own, that one is used and left alone."""
    binary = shutil.which("dockerd")
    if binary is None:
        pytest.skip("dockerd is not installed (apt-get install docker.io; `make deps`)")
    if _machine_dockerd():
        yield None  # the machine's own Docker (a CI runner's) runs already: the labs go next to it
        return
    left = [Path("/etc/docker/key.json"), Path("/run/docker")]
    existed = {path: path.exists() for path in left}
    had_docker0 = Path("/sys/class/net/docker0").exists()
    root = Path(tempfile.mkdtemp(prefix="ntd", dir="/tmp"))
    (root / "daemon.json").write_text("{}")
    sock = root / "docker.sock"
    log = (root / "log").open("w")
    proc = subprocess.Popen([binary, "--config-file", str(root / "daemon.json"), "--data-root", str(root / "data"),
                             "--exec-root", str(root / "exec"), "--pidfile", str(root / "docker.pid"),
                             "-H", f"unix://{sock}", "--iptables=true", "--storage-driver", "vfs"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not _docker_ready(proc, sock):
            tail = (root / "log").read_text().strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"dockerd cannot start in this sandbox: {tail[0][:300]}")
        yield f"unix://{sock}"
    finally:
        _stop(proc)
        log.close()
        if not had_docker0 and Path("/sys/class/net/docker0").exists():
            _run("ip", "link", "delete", "docker0")
        for path in (p for p in left if not existed[p]):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for mount in reversed(Path("/proc/mounts").read_text().splitlines()):
            if str(root) in mount.split()[1]:
                _run("umount", "-l", mount.split()[1])
        shutil.rmtree(root, ignore_errors=True)


def _machine_dockerd() -> bool:
    """Whether a dockerd runs on the machine already: a second one would fight it over docker0
    and its chains."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with suppress(OSError):
            if comm.read_text().strip() == "dockerd":
                return True
    return False


def _docker_ready(proc: subprocess.Popen[bytes], sock: Path, timeout: float = 30) -> bool:
    """Whether dockerd answers its API's /_ping on `sock` before it exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(2)
                client.connect(str(sock))
                client.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                if client.recv(200).startswith(b"HTTP/1.0 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to dockerd (it stops its own containerd), SIGKILL to its process group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # a containerd of this dockerd still running


@contextmanager
def _neighbour(name: str) -> Iterator[tuple[str, str]]:
    """A namespace routed through the machine by a veth pair: (its name, the machine's address
    on the pair). Its default route goes through the machine."""
    netns, veth = f"nt-{name}", f"nt{name}"[:15]
    _run("ip", "netns", "add", netns)
    try:
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _run("ip", "addr", "add", "10.213.9.1/30", "dev", veth)
        _run("ip", "link", "set", veth, "up")
        for argv in (["addr", "add", "10.213.9.2/30", "dev", "eth0"], ["link", "set", "eth0", "up"],
                     ["link", "set", "lo", "up"], ["route", "add", "default", "via", "10.213.9.1"]):
            _run("ip", "-n", netns, *argv)
        yield netns, "10.213.9.1"
    finally:
        subprocess.run(["ip", "link", "delete", veth], capture_output=True)
        _run("ip", "netns", "delete", netns)


def _connects(netns: str | None, address: str, port: int) -> bool:
    """Whether a TCP connection to address:port opens within 2 s (from `netns`, or the machine)."""
    code = f"import socket; socket.create_connection(({address!r}, {port}), timeout=2).close()"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, "python3", "-c", code], capture_output=True).returncode == 0


def _until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
