"""Kathara labs as topologies (netemu/topology/kathara.py, docs/kathara.md): pure parsing and
mapping of the fixtures under tests/data/kathara, and every refusal with its file and line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from netemu.errors import TopologyError
from netemu.topology import load_topology
from netemu.topology.kathara import DEFAULT_IMAGE, IMAGE_ENV, lab_name, load_kathara, start_order, startup_script

DATA = Path(__file__).resolve().parent.parent / "data" / "kathara"
RIP = DATA / "rip"
OPTIONS = DATA / "options"


@pytest.fixture(autouse=True)
def _no_image_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IMAGE_ENV, raising=False)


def _lab(tmp_path: Path, conf: str, name: str = "lab", **files: str) -> Path:
    """A lab directory under tmp_path: lab.conf and the other files named (`lab_dep` is lab.dep)."""
    directory = tmp_path / name
    directory.mkdir()
    (directory / "lab.conf").write_text(conf)
    for file, text in files.items():
        (directory / file.replace("_", ".", 1) if file.startswith("lab_") else directory / file).write_text(text)
    return directory


def _refused(directory: Path) -> TopologyError:
    with pytest.raises(TopologyError) as caught:
        load_kathara(directory)
    return caught.value


# --- the RIP lab ------------------------------------------------------------------------------


def test_rip_lab_nodes_networks_links() -> None:
    topo = load_kathara(RIP / "lab.conf")
    assert topo.name == "rip" and topo.path == RIP / "lab.conf"
    assert list(topo.nodes) == ["r1", "pc1", "r3", "pc2", "r2"]  # lab.dep's start order
    assert set(topo.networks) == {"a", "b", "c", "d"}
    wired = {(str(link.endpoints[0]), str(link.endpoints[1]), link.line) for link in topo.links}
    assert wired == {("pc1:eth0", "a", 15), ("pc2:eth0", "d", 17), ("r1:eth0", "a", 19), ("r1:eth1", "b", 20),
                     ("r2:eth0", "b", 22), ("r2:eth1", "c", 23), ("r3:eth0", "c", 25), ("r3:eth1", "d", 26)}
    assert all(not link.addresses[0] for link in topo.links)  # the .startup files set the addresses
    assert topo.nodes["r2"].line == 22 and topo.networks["c"].line == 23


def test_rip_lab_node_fields() -> None:
    r2 = load_kathara(RIP).nodes["r2"]
    assert r2.files == [str(RIP / "r2")]
    assert r2.wait_for == ["r1", "r3"] and load_kathara(RIP).nodes["pc1"].wait_for == ["r1"]
    assert r2.systemctl and r2.userns and set(r2.cap_add) == {"SYS_ADMIN", "NET_BROADCAST"} and not r2.privileged
    assert [(b.source, b.target, b.readonly) for b in r2.binds] == [
        (str(RIP), "/hostlab", True), (str(RIP / "shared"), "/shared", False)]
    assert r2.sysctls["net.ipv4.ip_forward"] == "1" and r2.sysctls["net.ipv6.conf.all.disable_ipv6"] == "1"
    assert r2.labels == {"kathara.lab": "RIP", "kathara.eth0": "B", "kathara.eth1": "C"}
    assert load_kathara(RIP).nodes["pc1"].files == []  # pc1 has no directory


def test_rip_lab_startup_step() -> None:
    (step,) = load_kathara(RIP).nodes["r1"].exec
    assert step[:2] == ["/bin/sh", "-c"]
    script = step[2]
    assert script.index("/hostlab/shared.startup") < script.index("/hostlab/r1.startup")
    assert ">/var/log/startup.log" in script and "touch /tmp/EOS" in script and script.endswith("exit 0")


def test_directory_and_file_are_the_same_lab() -> None:
    assert load_kathara(RIP).name == load_kathara(RIP / "lab.conf").name == load_topology(RIP / "lab.conf").name


def test_images_default_env_and_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_kathara(RIP).nodes["r1"].image == DEFAULT_IMAGE
    monkeypatch.setenv(IMAGE_ENV, "host")
    assert {node.image for node in load_kathara(RIP).nodes.values()} == {"host"}
    assert load_kathara(RIP, default_image="/srv/rootfs").nodes["r1"].image == "/srv/rootfs"
    options = load_kathara(OPTIONS).nodes
    assert (options["r1"].image, options["web"].image, options["admin"].image) == ("kathara/frr", "host", "host")


def test_kathara_conf_settings(tmp_path: Path) -> None:
    directory = _lab(tmp_path, "pc1[0]=A\n", **{"kathara.conf": '{"image": "host", "device_shell": "/bin/sh", '
                                                                 '"enable_ipv6": true, "terminal": "xterm"}'})
    node = load_kathara(directory).nodes["pc1"]
    assert node.image == "host" and node.sysctls["net.ipv6.conf.all.disable_ipv6"] == "0"
    assert "/bin/sh -x /hostlab/pc1.startup" in node.exec[-1][2]


# --- every option -----------------------------------------------------------------------------


def test_options_map() -> None:
    nodes = load_kathara(OPTIONS).nodes
    r1, web, admin = nodes["r1"], nodes["web"], nodes["admin"]
    assert (r1.limits.memory, r1.limits.cpus, web.limits.memory) == (256 << 20, 1.5, 64 << 20)
    assert r1.env == {"ROLE": "edge"}
    assert r1.sysctls["net.ipv4.tcp_syncookies"] == "0" and r1.sysctls["net.ipv6.conf.all.forwarding"] == "1"
    assert "net.ipv4.conf.eth1.rp_filter" not in r1.sysctls  # an interface's own: written once it exists
    assert r1.exec[0] == ["ip", "link", "set", "dev", "eth0", "address", "02:42:ac:11:00:02"]
    assert r1.exec[1] == ["/bin/sh", "-c", "echo 2 > /proc/sys/net/ipv4/conf/eth1/rp_filter"]
    assert "/bin/bash -x /hostlab/r1.startup" in r1.exec[2][2] and "'++ echo ready'" in r1.exec[2][2]
    assert web.network == "bridge" and web.ports == ["8080:80/tcp", "3000:53/udp"]
    assert [(b.source, b.target, b.readonly) for b in web.binds][1] == (str(OPTIONS / "data"), "/srv/data", False)
    assert web.entrypoint == ["/usr/sbin/nginx", "-g", "daemon-off"] and web.cmd == ["-c", "/etc/nginx/nginx.conf"]
    assert "/hostlab/web/var/www" in web.exec[-1][2]
    assert admin.privileged and not admin.userns and not admin.cap_add
    assert set(load_kathara(OPTIONS).networks) == {"lan-1", "wan"}


def test_startup_script_is_valid_shell() -> None:
    script = startup_script(RIP, "r1", ["echo $HOME; ls > /tmp/x"], None)
    assert subprocess.run(["/bin/sh", "-n", "-c", script]).returncode == 0


def test_start_order_is_stable() -> None:
    assert start_order(["a", "b", "c", "d"], {"a": ["d"], "b": ["a"]}) == ["c", "d", "a", "b"]
    assert start_order(["a", "b"], {}) == ["a", "b"]


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("directory", "expected"), [
    ("rip", "rip"), ("OSPF_lab", "ospf-lab"), ("lab 3", "lab-3"), ("exactly12chr", "exactly12chr"),
])  # fmt: skip
def test_lab_names_from_directory(directory: str, expected: str) -> None:
    assert lab_name(Path("/labs") / directory) == expected


def test_long_lab_names_are_hashed_and_stable() -> None:
    name = lab_name(Path("/x/Very Long Kathara Lab"))
    assert len(name) <= 12 and name.startswith("very-lo-") and name == lab_name(Path("/y/Very Long Kathara Lab"))
    assert lab_name(Path("/x/Very Long Kathara Lab2")) != name
    assert lab_name(Path("/x/___")).startswith("lab-")


def test_collision_domain_names(tmp_path: Path) -> None:
    conf = "pc1[0]=A\npc1[1]=a\npc1[2]=LAN_1\npc1[3]=bridge\npc1[4]=pc2\npc1[5]=AVeryLongCollisionDomain\npc2[0]=A\n"
    networks = load_kathara(_lab(tmp_path, conf)).networks
    names = list(networks)
    assert len(set(names)) == 6 and "lan-1" in names
    assert not {"a", "bridge", "pc2"} & set(names)  # merged by case, the NAT network's name, a node's name
    assert all(len(name) <= 15 for name in names)


# --- refusals, each at its line ---------------------------------------------------------------


@pytest.mark.parametrize(("conf", "line", "words"), [
    ("pc1[0]=A\nthis is not an assignment\n", 2, "not a `device[arg]=value`"),
    ("pc1[0]='A\n", 1, "never closes"),
    ("pc1[0]=\"A'\n", 1, "never closes"),
    ("pc1[0]='A' trailing\n", 1, "unexpected text"),
    ("pc1[0]=\n", 1, "empty"),
    ("LAB_TITLE=x\npc1[0]=A\n", 1, "unknown lab information"),
    ("pc1[0]=A\npc1[cpu]=2\n", 2, "did you mean 'cpus'"),
    ("pc1[0]=A\npc1[ulimit]=memlock=-1:-1\n", 2, "ulimit is not supported"),
    ("shared[0]=A\n", 1, "reserved"),
    ("pc_1[0]=A\n", 1, "has '_'"),
    ("PC1[0]=A\n", 1, "invalid device name"),
    ("pc1[0]=A$\n", 1, "invalid collision domain"),
    ("pc1[0]=A/00:00:00:00:00\n", 1, "invalid MAC address"),
    ("pc1[0]=A\npc1[0]=B\n", 2, "eth0 of 'pc1' is already set"),
    ("pc1[0]=A\npc1[1]=A\n", 2, "already on collision domain 'A'"),
    ("pc1[0]=A\npc1[2]=B\n", 2, "eth1 is missing"),
    ("pc1[0]=A\npc1[mem]=64m\npc1[mem]=128m\n", 3, "already has mem at line 2"),
    ("pc1[0]=A\npc1[bridged]=maybe\n", 2, "invalid boolean"),
    ("pc1[0]=A\npc1[mem]=lots\n", 2, "invalid memory"),
    ("pc1[0]=A\npc1[mem]=1m\n", 2, "too small"),
    ("pc1[0]=A\npc1[cpus]=-1\n", 2, "invalid cpus"),
    ("pc1[0]=A\npc1[port]=8080:80\n", 2, "needs pc1[bridged]=true"),
    ("pc1[0]=A\npc1[bridged]=1\npc1[port]=8080:80/sctp\n", 3, "protocol 'sctp'"),
    ("pc1[0]=A\npc1[bridged]=1\npc1[port]=x:80\n", 3, "invalid port"),
    ("pc1[0]=A\npc1[bridged]=1\npc1[port]=8080:80\npc2[bridged]=1\npc2[port]=8080:81\n", 5, "already published"),
    ("pc1[0]=A\npc1[sysctl]=kernel.pid_max=10\n", 2, "net.* only"),
    ("pc1[0]=A\npc1[env]=1X=2\n", 2, "invalid env"),
    ("pc1[0]=A\npc1[volume]=/srv|/data|rx\n", 2, "volume mode 'rx'"),
    ("pc1[0]=A\npc1[volume]=/srv\n", 2, "HOST|GUEST"),
    ("pc1[0]=A\npc1[num_terms]=-1\n", 2, "invalid num_terms"),
    ("pc1[0]=A\npc1[shell]=/bin/sh -e\n", 2, "invalid shell"),
    ("pc1[0]=A\npc1[entrypoint]=a\\\n", 2, "cannot split"),
    ("# nothing but a comment\n", None, "no machine"),
])  # fmt: skip
def test_lab_conf_refusals(tmp_path: Path, conf: str, line: int | None, words: str) -> None:
    error = _refused(_lab(tmp_path, conf))
    assert error.line == line and error.file == str(tmp_path / "lab" / "lab.conf"), str(error)
    assert words in str(error), str(error)


@pytest.mark.parametrize(("dep", "line", "words"), [
    ("# order\npc1: pc2\npc2: pc3\npc3: pc1\n", 4, "start-order loop: pc1 -> pc2 -> pc3 -> pc1"),
    ("pc1: pc1\n", 1, "loop: pc1 -> pc1"),
    ("pc1: r9\n", 1, "unknown device 'r9'"),
    ("pc1 pc2\n", 1, "not a `device: device1"),
    ("pc1:\n", 1, "not a `device: device1"),
    ("pc1: pc2\npc1: pc3\n", 2, "already has a rule at line 1"),
])  # fmt: skip
def test_lab_dep_refusals(tmp_path: Path, dep: str, line: int, words: str) -> None:
    error = _refused(_lab(tmp_path, "pc1[0]=A\npc2[0]=A\npc3[0]=A\n", lab_dep=dep))
    assert error.line == line and error.file.endswith("lab.dep") and words in str(error), str(error)


def test_lab_ext_is_refused(tmp_path: Path) -> None:
    error = _refused(_lab(tmp_path, "pc1[0]=A\n", lab_ext="# outside\nA enp9s0.20\n"))
    assert error.line == 2 and error.file.endswith("lab.ext") and "off this machine" in str(error)


def test_shutdown_files_are_refused(tmp_path: Path) -> None:
    error = _refused(_lab(tmp_path, "pc1[0]=A\n", **{"pc1.shutdown": "echo bye\n"}))
    assert error.file.endswith("pc1.shutdown") and "shutdown files are not supported" in str(error)


def test_missing_lab_conf(tmp_path: Path) -> None:
    error = _refused(tmp_path)
    assert "cannot read" in str(error)


def test_bad_image_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_ENV, "two words")
    error = _refused(_lab(tmp_path, "pc1[0]=A\n"))
    assert error.key == IMAGE_ENV and "whitespace" in str(error)


def test_bad_kathara_conf(tmp_path: Path) -> None:
    error = _refused(_lab(tmp_path, "pc1[0]=A\n", **{"kathara.conf": "{\n  nope\n}"}))
    assert error.line == 2 and error.file.endswith("kathara.conf")


def test_lab_directory_with_a_colon(tmp_path: Path) -> None:
    directory = tmp_path / "a:b"
    shutil.copytree(RIP, directory)
    assert "cannot name" in str(_refused(directory))


def test_windows_line_ends_and_bom(tmp_path: Path) -> None:
    topo = load_kathara(_lab(tmp_path, "\ufeffpc1[0]=\"A\"\r\npc2[0]=A\r\n"))
    assert set(topo.nodes) == {"pc1", "pc2"} and set(topo.networks) == {"a"}
