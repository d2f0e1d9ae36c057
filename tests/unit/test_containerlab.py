"""containerlab topology files -> netemu's model (netemu/topology/containerlab.py): the mapping
of every supported key, and every refusal with the line and the key path it names. Pure: files
under tmp_path and tests/data/containerlab only."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from netemu.errors import TopologyError
from netemu.topology.containerlab import expand_env, load_containerlab
from netemu.topology.model import Topology

DATA = Path(__file__).resolve().parent.parent / "data" / "containerlab"


def write(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> Path:
    for name, content in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    path = tmp_path / "lab.clab.yml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> Topology:
    return load_containerlab(write(tmp_path, text, files))


def refusal(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> TopologyError:
    with pytest.raises(TopologyError) as caught:
        load(tmp_path, text, files)
    assert caught.value.exit_code == 2 and str(caught.value).startswith(str(tmp_path / "lab.clab.yml"))
    return caught.value


TWO = """
name: two
topology:
  nodes:
    a: {kind: linux, image: alpine:3}
    b: {kind: linux, image: alpine:3}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
"""


# --- the example labs -------------------------------------------------------------------------
@pytest.mark.parametrize("lab", sorted(p.relative_to(DATA).as_posix() for p in DATA.rglob("*.clab.yml")))
def test_every_example_lab_loads(lab, monkeypatch):
    for name in ("FRR_IMAGE", "PC_IMAGE", "BR01_IMAGE", "LINUX2_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    topology = load_containerlab(DATA / lab)
    assert topology.nodes and topology.links


def test_frr01_groups_binds_startup_config_and_frr_confinement(monkeypatch):
    monkeypatch.delenv("FRR_IMAGE", raising=False)
    topo = load_containerlab(DATA / "frr01/frr01.clab.yml")
    assert list(topo.nodes) == ["router1", "router2", "router3", "PC1", "PC2"]  # names as written
    r1 = topo.nodes["router1"]
    assert r1.image == "quay.io/frrouting/frr:10.5.1"  # ${FRR_IMAGE:=...} took its default
    folder = DATA / "frr01/router1"
    assert [(b.source, b.target, b.readonly) for b in r1.binds] == [
        (str(folder / "daemons"), "/etc/frr/daemons", False), (str(folder / "frr.conf"), "/etc/frr/frr.conf", False)]
    assert r1.cap_add == ["SYS_ADMIN"] and r1.userns and not r1.privileged  # FRR, the narrow way
    assert r1.sysctls == {"net.ipv4.ip_forward": "1"}
    assert r1.env["CLAB_INTFS"] == "3" and topo.nodes["router3"].env["CLAB_INTFS"] == "2"
    assert r1.env["LAB"] == "frr01" and r1.env["CLAB_LABEL_CLAB_NODE_GROUP"] == "routers"
    pc1 = topo.nodes["PC1"]
    assert not pc1.userns and pc1.cap_add == [] and pc1.image == "wbitt/network-multitool:3.22.2"
    assert pc1.exec[0] == ["ip", "addr", "add", "192.168.11.2/24", "dev", "eth1"]  # words, no shell
    assert pc1.labels["clab-node-longname"] == "clab-frr01-PC1" and pc1.labels["clab-node-kind"] == "linux"


def test_the_management_network_gives_eth0_addresses_in_file_order_and_a_default_route(monkeypatch):
    monkeypatch.delenv("FRR_IMAGE", raising=False)
    topo = load_containerlab(DATA / "frr01/frr01.clab.yml")
    clab = topo.networks["clab"]
    assert [str(s) for s in clab.subnets] == ["172.20.20.0/24"] and [str(g) for g in clab.gateways] == [
        "172.20.20.1/24"] and clab.nat
    eth0 = {link.endpoints[0].node: str(link.addresses[0][0]) for link in topo.links
            if link.endpoints[1].network == "clab"}
    assert eth0 == {"router1": "172.20.20.2/24", "router2": "172.20.20.3/24", "router3": "172.20.20.4/24",
                    "PC1": "172.20.20.5/24", "PC2": "172.20.20.6/24"}
    assert all(link.endpoints[0].iface == "eth0" for link in topo.links if link.endpoints[1].network == "clab")
    assert topo.nodes["PC2"].routes[0].dst == "default"
    assert topo.nodes["PC2"].routes[0].via == ipaddress.ip_address("172.20.20.1")
    data = [link for link in topo.links if not link.endpoints[1].is_network]
    assert all(link.mtu == 9500 for link in data)  # containerlab's veth default


def test_linux2_custom_mgmt_fixed_address_links_env_files_and_wait_for():
    topo = load_containerlab(DATA / "linux2/linux2.clab.yml")
    assert list(topo.networks) == ["mgmt2"]
    server, client = topo.nodes["server"], topo.nodes["client"]
    eth0 = {link.endpoints[0].node: str(link.addresses[0][0]) for link in topo.links
            if link.endpoints[1].network == "mgmt2"}
    assert eth0 == {"server": "172.100.100.11/24", "client": "172.100.100.2/24"}  # .11 fixed, .2 the first free
    assert server.env["ROLE"] == "server"  # the group's env over the defaults'
    assert client.env["ROLE"] == "default"  # env (any layer) over env-files, as in containerlab
    assert client.env["GREETING"] == "hello there" and client.env["LAB"] == "linux2"
    assert server.binds[0].source == str(DATA / "linux2/configs/index.html") and server.binds[0].readonly
    assert server.ports == ["18080:80/tcp"] and server.limits.memory == 64 << 20 and server.limits.cpus == 0.5
    assert client.wait_for == ["server"] and client.exec == [["sh", "-c", "echo client of $LAB > /tmp/who"]]
    assert client.labels["owner"] == "netemu-tests" and client.labels["role"] == "client"
    assert client.labels["clab-node-longname"] == "lab-linux2-client"  # prefix: lab
    assert client.env["CLAB_LABEL_ROLE"] == "client"
    links = [link for link in topo.links if not link.endpoints[1].is_network]
    assert [[str(a) for a in addrs] for addrs in links[0].addresses] == [["10.0.0.1/30"], ["10.0.0.2/30"]]
    assert [[str(a) for a in addrs] for addrs in links[1].addresses] == [["10.0.1.1/30"], ["10.0.1.2/30"]]
    assert links[1].mtu == 1500 and client.cmd == ["sleep", "infinity"]


def test_br01_bridge_node_is_a_machine_bridge_joined_as_it_is():
    topo = load_containerlab(DATA / "br01/br01.clab.yml")
    assert "br-clab" not in topo.nodes and topo.networks["br-clab"].bridge == "br-clab"
    assert [str(link.endpoints[1]) for link in topo.links if link.endpoints[0].iface == "eth1"] == ["br-clab"] * 3
    assert topo.nodes["n1"].env["CLAB_INTFS"] == "1"


# --- precedence, expansion, magic variables ------------------------------------------------------
def test_precedence_is_node_then_group_then_kind_then_defaults(tmp_path):
    topo = load(tmp_path, """
        name: prec
        topology:
          defaults: {kind: linux, image: d, cmd: from-defaults, env: {A: d, B: d, C: d, D: d}, exec: [echo d]}
          kinds:
            linux: {image: k, cmd: from-kind, env: {B: k, C: k, D: k}, exec: [echo k]}
          groups:
            g: {image: g, env: {C: g, D: g}, exec: [echo g, echo d]}
          nodes:
            n: {group: g, env: {D: n}, exec: [echo n]}
            m: {}
    """)
    n, m = topo.nodes["n"], topo.nodes["m"]
    assert n.image == "g" and n.cmd == ["from-kind"] and m.image == "k"
    assert {k: n.env[k] for k in "ABCD"} == {"A": "d", "B": "k", "C": "g", "D": "n"}
    assert n.exec == [["echo", "d"], ["echo", "k"], ["echo", "g"], ["echo", "n"]]  # joined, duplicates once
    assert m.exec == [["echo", "d"], ["echo", "k"]]


def test_binds_of_one_target_take_the_most_specific_layer_and_magic_variables(tmp_path):
    files = {"a.txt": "a", "b.txt": "b", "clab-mag/n/conf": "c", "n.cfg": "x"}
    topo = load(tmp_path, """
        name: mag
        topology:
          defaults: {kind: linux, image: x, binds: ["a.txt:/etc/t"]}
          nodes:
            n:
              binds: ["b.txt:/etc/t:ro", "__clabNodeDir__/conf:/conf", "__clabNodeName__.cfg:/n.cfg"]
              exec: ["echo __clabNodeName__ __clabDir__"]
    """, files)
    binds = {b.target: (b.source, b.readonly) for b in topo.nodes["n"].binds}
    assert binds == {"/etc/t": (str(tmp_path / "b.txt"), True), "/conf": (str(tmp_path / "clab-mag/n/conf"), False),
                     "/n.cfg": (str(tmp_path / "n.cfg"), False)}
    assert topo.nodes["n"].exec == [["echo", "n", str(tmp_path / "clab-mag")]]


def test_environment_expansion_as_containerlab_does_it():
    env = {"SET": "v", "EMPTY": ""}
    cases = {"${SET}": "v", "$SET": "v", "${UNSET}": "${UNSET}", "$UNSET": "$UNSET", "${UNSET:=d}": "d",
             "${EMPTY:=d}": "d", "${EMPTY=d}": "", "${UNSET-d}": "d", "${EMPTY:-d}": "d", "${SET:=d}": "v",
             "${SET:+o}": "o", "${UNSET+o}": "", "$$SET": "$SET", "a${UNSET:=${SET}}b": "avb", "$1": "$1"}
    for text, expanded in cases.items():
        assert expand_env(text, env) == expanded, text


def test_the_environment_reaches_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IMG_TAG", "3.20")
    topo = load(tmp_path, TWO.replace("image: alpine:3}", "image: 'alpine:${IMG_TAG}'}", 1))
    assert topo.nodes["a"].image == "alpine:3.20" and topo.nodes["b"].image == "alpine:3"


def test_network_modes_pid_mode_entrypoint_dns_and_mgmt_options(tmp_path):
    topo = load(tmp_path, """
        name: modes
        mgmt: {network: Mgmt_Net, ipv4-subnet: 10.99.0.0/24, ipv4-gw: 10.99.0.254, ipv6-subnet: "fd00:99::/64",
               external-access: false, mtu: 1400}
        topology:
          defaults: {kind: linux, image: x}
          nodes:
            a: {entrypoint: "/bin/sh -c", cmd: "'sleep 1000'", dns: {servers: [192.0.2.53], search: [lab.example]}}
            b: {network-mode: "container:a", pid-mode: "container:a"}
            c: {network-mode: none}
            d: {network-mode: host}
          links:
            - endpoints: ["c:eth0", "a:eth1"]
    """)
    net = topo.networks["mgmt-net"]
    assert [str(g) for g in net.gateways] == ["10.99.0.254/24", "fd00:99::1/64"] and not net.nat and net.mtu == 1400
    a = topo.nodes["a"]
    assert a.entrypoint == ["/bin/sh", "-c"] and a.cmd == ["sleep 1000"]
    assert a.dns == ["192.0.2.53"] and a.dns_search == ["lab.example"]
    assert [str(x) for x in topo.node_addresses("a")] == ["10.99.0.1/24", "fd00:99::2/64"]
    assert {r.dst: str(r.via) for r in a.routes} == {"default": "fd00:99::1"} or len(a.routes) == 2
    assert topo.nodes["b"].network == "container:a" and topo.nodes["b"].pid == "container:a"
    assert topo.nodes["c"].network == "none" and topo.nodes["d"].network == "host"
    assert [n for n in ("a", "b", "c", "d") if topo.node_addresses(n)] == ["a"]


def test_macvlan_and_mgmt_net_endpoints(tmp_path):
    topo = load(tmp_path, """
        name: mv
        topology:
          nodes:
            a: {kind: linux, image: x}
          links:
            - endpoints: ["a:eth1", "macvlan:enp0s3"]
            - type: mgmt-net
              endpoint: {node: a, interface: eth2}
              host-interface: a-eth2
    """)
    assert topo.networks["mv-enp0s3"].driver == "macvlan" and topo.networks["mv-enp0s3"].uplink == "enp0s3"
    ends = [[str(e) for e in link.endpoints] for link in topo.links]
    assert ["a:eth1", "mv-enp0s3"] in ends and ["a:eth2", "clab"] in ends
    assert topo.nodes["a"].env["CLAB_INTFS"] == "2"


def test_harmless_keys_are_accepted(tmp_path):
    topo = load(tmp_path, """
        name: ok
        debug: true
        topology:
          defaults: {credentials: {username: admin, password: admin}, runtime: docker, type: x}
          nodes:
            a: {kind: linux, image: x, image-pull-policy: IfNotPresent, restart-policy: "no", auto-remove: false,
                link-apply-mode: live, privileged: false}
    """)
    assert not topo.nodes["a"].privileged and topo.nodes["a"].labels["clab-node-type"] == "x"


def test_upper_case_and_dotted_names_pass_through(tmp_path):
    topo = load(tmp_path, TWO.replace("a:", "Router.A:").replace('"a:eth1"', '"Router.A:eth1"'))
    assert "Router.A" in topo.nodes


# --- refusals: every one names its line and key path ---------------------------------------------
REFUSALS = [
    ("kind host", "topology:\n  nodes:\n    h: {kind: host}\n", 3, "topology.nodes.h.kind", "never runs a file's"),
    ("ext-container", "topology:\n  nodes:\n    e: {kind: ext-container}\n", 3, "topology.nodes.e.kind",
     "netemu did not make"),
    ("a NOS kind", "topology:\n  nodes:\n    s:\n      kind: nokia_srlinux\n", 4, "topology.nodes.s.kind",
     "kind 'nokia_srlinux' is not supported"),
    ("no kind", "topology:\n  nodes:\n    s: {image: x}\n", 3, "topology.nodes.s", "has no kind"),
    ("no image", "topology:\n  nodes:\n    s: {kind: linux}\n", 3, "topology.nodes.s", "has no image"),
    ("unknown key", "topology:\n  nodes:\n    s: {kind: linux, image: x, imgae: y}\n", 3, "topology.nodes.s.imgae",
     "did you mean 'image'"),
    ("user", "topology:\n  defaults:\n    user: alice\n  nodes:\n    s: {kind: linux, image: x}\n", 3,
     "topology.defaults.user", "'user' is not supported"),
    ("volumes", "topology:\n  nodes:\n    s:\n      kind: linux\n      image: x\n      volumes: [v:/v]\n", 6,
     "topology.nodes.s.volumes", "no named or anonymous volumes"),
    ("healthcheck", "topology:\n  nodes:\n    s:\n      kind: linux\n      image: x\n      healthcheck: {retries: 1}\n",
     6, "topology.nodes.s.healthcheck", "no health checks"),
    ("restart", "topology:\n  nodes:\n    s: {kind: linux, image: x, restart-policy: always}\n", 3,
     "topology.nodes.s.restart-policy", "does not restart"),
    ("pull policy", "topology:\n  nodes:\n    s: {kind: linux, image: x, image-pull-policy: Always}\n", 3,
     "topology.nodes.s.image-pull-policy", "--pull always"),
    ("startup-delay", "topology:\n  nodes:\n    s: {kind: linux, image: x, startup-delay: 5}\n", 3,
     "topology.nodes.s.startup-delay", "not after a delay"),
    ("license", "topology:\n  nodes:\n    s: {kind: linux, image: x, license: l.key}\n", 3,
     "topology.nodes.s.license", "network-OS kinds"),
    ("startup-config on linux", "topology:\n  nodes:\n    s: {kind: linux, image: alpine, startup-config: c}\n", 3,
     "topology.nodes.s.startup-config", "bind the file with binds"),
    ("missing bind", "topology:\n  nodes:\n    s:\n      kind: linux\n      image: x\n      binds:\n"
     "        - nothere:/x\n", 7, "topology.nodes.s.binds[0]", "does not exist"),
    ("bind option", "topology:\n  nodes:\n    s:\n      kind: linux\n      image: x\n"
     "      binds: ['lab.clab.yml:/x:z']\n",
     6, "topology.nodes.s.binds[0]", "bind option 'z'"),
    ("dns options", "topology:\n  nodes:\n    s:\n      kind: linux\n      image: x\n"
     "      dns:\n        options: [a]\n",
     7, "topology.nodes.s.dns.options", "dns options"),
    ("extras", "topology:\n  nodes:\n    s:\n      kind: linux\n      image: x\n      extras:\n"
     "        ceos-copy-to-flash: [a]\n", 7, "topology.nodes.s.extras.ceos-copy-to-flash", "network-OS kind"),
    ("stage exec", "topology:\n  nodes:\n    s:\n      kind: linux\n      image: x\n      stages:\n        create:\n"
     "          exec: [a]\n", 8, "topology.nodes.s.stages.create.exec", "stage exec"),
    ("wait for configure", "topology:\n  nodes:\n    a: {kind: linux, image: x}\n    s:\n      kind: linux\n"
     "      image: x\n      stages:\n        create:\n          wait-for:\n            - {node: a, stage: configure}\n",
     10, "topology.nodes.s.stages.create.wait-for[0]", "stage create"),
    ("wait for unknown", "topology:\n  nodes:\n    s: {kind: linux, image: x, wait-for: [t]}\n", 3,
     "topology.nodes.s.wait-for[0]", "unknown node 't'"),
    ("unknown group", "topology:\n  groups:\n    routers: {}\n  nodes:\n"
     "    s: {kind: linux, image: x, group: router}\n",
     5, "topology.nodes.s.group", "did you mean 'routers'"),
    ("host endpoint", "topology:\n  nodes:\n    s: {kind: linux, image: x}\n  links:\n"
     "    - endpoints: ['s:eth1', 'host:veth-s']\n", 5, "topology.links[0].endpoints[1]", "machine's own network"),
    ("host link", "topology:\n  nodes:\n    s: {kind: linux, image: x}\n  links:\n    - type: host\n"
     "      endpoint: {node: s, interface: eth1}\n      host-interface: veth-s\n", 5, "topology.links[0].type",
     "links of type host"),
    ("vxlan", "topology:\n  nodes:\n    s: {kind: linux, image: x}\n  links:\n    - type: vxlan\n", 5,
     "topology.links[0].type", "VXLAN"),
    ("mac", "topology:\n  nodes:\n    s: {kind: linux, image: x}\n    t: {kind: linux, image: x}\n  links:\n"
     "    - type: veth\n      endpoints:\n        - {node: s, interface: e1, mac: '02:00:00:00:00:01'}\n"
     "        - {node: t, interface: e1}\n", 8, "topology.links[0].endpoints[0].mac", "endpoint mac"),
    ("eth0 in use", "topology:\n  nodes:\n    s: {kind: linux, image: x}\n    t: {kind: linux, image: x}\n  links:\n"
     "    - endpoints: ['s:eth0', 't:eth1']\n", 6, "topology.links[0].endpoints[0]", "eth0 interface name"),
    ("unknown node", "topology:\n  nodes:\n    srv: {kind: linux, image: x}\n  links:\n"
     "    - endpoints: ['sr:eth1', 'srv:eth1']\n", 5, "topology.links[0].endpoints[0]", "did you mean 'srv'"),
    ("bridge keys", "topology:\n  nodes:\n    br0:\n      kind: bridge\n      image: x\n", 5,
     "topology.nodes.br0.image", "no meaning on a kind: bridge"),
    ("namespaced bridge", "topology:\n  nodes:\n    br|a: {kind: bridge}\n", 3, "topology.nodes.br|a",
     "inside a node's namespace"),
    ("mgmt bridge", "mgmt:\n  bridge: br0\ntopology:\n  nodes:\n    s: {kind: linux, image: x}\n", 2, "mgmt.bridge",
     "kind: bridge node instead"),
    ("mgmt-ipv4 without mgmt", "topology:\n  nodes:\n    s: {kind: linux, image: x, network-mode: none,"
     " mgmt-ipv4: 172.20.20.9}\n", 3, "topology.nodes.s.mgmt-ipv4", "leaves out"),
    ("mgmt address outside", "topology:\n  nodes:\n    s: {kind: linux, image: x, mgmt-ipv4: 10.0.0.9}\n", 3,
     "topology.nodes.s.mgmt-ipv4", "outside subnet 172.20.20.0/24"),
    ("settings", "settings:\n  certificate-authority: {}\ntopology:\n  nodes:\n    s: {kind: linux, image: x}\n", 1,
     "settings", "no TLS certificates"),
    ("memory", "topology:\n  nodes:\n    s: {kind: linux, image: x, memory: lots}\n", 3, "topology.nodes.s.memory",
     "invalid memory size 'lots'"),
    ("port with address", "topology:\n  nodes:\n    s: {kind: linux, image: x, ports: ['127.0.0.1:80:80']}\n", 3,
     "topology.nodes.s.ports[0]", "publishing on loopback"),
    ("template", "topology:\n  nodes:\n{{ range .nodes }}\n", 3, "", "Go template"),
    ("sysctl of the machine", "topology:\n  nodes:\n    s:\n      kind: linux\n      image: x\n      sysctls:\n"
     "        kernel.panic: 1\n", 7, "topology.nodes.s.sysctls.kernel.panic", "not namespaced"),
]


@pytest.mark.parametrize(("text", "line", "key", "reason"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_line_and_the_key(tmp_path, text, line, key, reason):
    error = refusal(tmp_path, "name: bad\n" + text)
    assert (error.line, error.key) == (line + 1, key), str(error)
    assert reason in error.reason, str(error)


def test_a_wait_for_loop_is_refused(tmp_path):
    error = refusal(tmp_path, """
        name: loop
        topology:
          defaults: {kind: linux, image: x}
          nodes:
            a: {wait-for: [b]}
            b: {wait-for: [a]}
    """)
    assert (error.line, error.key) == (6, "topology.nodes.b.wait-for[0]")  # where the loop closes
    assert "wait-for makes a loop (a -> b -> a)" in error.reason


def test_a_lab_name_netemu_cannot_use_is_refused_at_its_line(tmp_path):
    error = refusal(tmp_path, TWO.replace("name: two", "name: a-very-long-lab-name"))
    assert (error.line, error.key) == (1, "name") and "too long" in error.reason


def test_an_interface_twice_is_found_by_netemus_own_check(tmp_path):
    error = refusal(tmp_path, TWO + '    - endpoints: ["a:eth1", "b:eth2"]\n')
    assert (error.line, error.key) == (8, "topology.links[1].endpoints[0]") and "already used at line 7" in error.reason


def test_import_envs_is_refused_so_a_lab_file_cannot_take_the_callers_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CI_SECRET", "s3cr3t")
    path = tmp_path / "lab.clab.yml"
    path.write_text("name: leak\ntopology:\n  nodes:\n    n1:\n      kind: linux\n      image: alpine\n"
                    "      env:\n        __IMPORT_ENVS: true\n")
    with pytest.raises(TopologyError, match=r"lab\.clab\.yml:8: .*__IMPORT_ENVS would give the hosts"):
        load_containerlab(path)
