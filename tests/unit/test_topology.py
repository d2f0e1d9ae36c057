"""The topology loader: valid files give the expected model, broken ones a located TopologyError."""

from __future__ import annotations

import ipaddress
import re
import textwrap
from pathlib import Path

import pytest

from netemu.errors import InputError, TopologyError
from netemu.topology import Topology, load_topology, load_topology_text
from netemu.topology.graph import build_graph
from netemu.topology.model import Bind, Endpoint, Limits, Route

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad"
EXPECT_RE = re.compile(r"^# expect: line (\d+): (.+)$")


def load(text: str) -> Topology:
    return load_topology_text(textwrap.dedent(text), "test.yaml")


def iface(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    return ipaddress.ip_interface(text)


# --- valid files --------------------------------------------------------------------------------


def test_seed_topology_loads() -> None:
    topo = load_topology(ROOT / "topologies" / "seed.yaml")
    assert topo.name == "seed"
    assert topo.path == ROOT / "topologies" / "seed.yaml"
    assert list(topo.nodes) == ["r1", "r2"]
    assert all(node.image == "host" and node.hostname == name for name, node in topo.nodes.items())
    (link,) = topo.links
    assert link.endpoints == (Endpoint(node="r1", iface="eth0"), Endpoint(node="r2", iface="eth0"))
    assert link.addresses == ([iface("10.1.0.1/24")], [iface("10.1.0.2/24")])
    assert link.line == 8
    (check,) = topo.checks
    assert (check.src, check.dst, check.expect, check.proto, check.port) == (
        "r1",
        "10.1.0.2",
        "reachable",
        "icmp",
        None,
    )
    assert topo.node_addresses("r2") == [iface("10.1.0.2/24")]


def test_node_defaults_and_builtin_defaults() -> None:
    topo = load("""
        name: lab
        nodes:
          r1:
        """)
    node = topo.nodes["r1"]
    assert node.image == "host" and node.hostname == "r1" and node.network == "none"
    assert node.dns is None and node.cmd is None and node.limits == Limits() and not node.userns
    assert node.line == 4


def test_defaults_merge() -> None:
    topo = load("""
        name: lab
        defaults:
          image: alpine
          dns: [1.1.1.1]
          limits: {memory: 64M, pids: 100}
          env: {A: "1", B: two}
          sysctls: {net.ipv4.ip_forward: 1}
          extra_hosts: {db: 10.0.0.9}
        nodes:
          r1: {}
          r2:
            image: host
            limits: {cpus: 0.5, pids: 50}
            env: {B: three, C: 4}
            sysctls: {net.ipv6.conf.all.forwarding: true}
            dns: null
          r3: ~
        """)
    r1, r2, r3 = topo.nodes["r1"], topo.nodes["r2"], topo.nodes["r3"]
    assert r1.image == "alpine" and r1.dns == ["1.1.1.1"] and r1.env == {"A": "1", "B": "two"}
    assert r1.limits == Limits(memory=64 << 20, pids=100)
    assert r2.image == "host"
    assert r2.dns == ["1.1.1.1"], "null means not set here: the default applies"
    assert r2.limits == Limits(cpus=0.5, memory=64 << 20, pids=50)
    assert r2.env == {"A": "1", "B": "three", "C": "4"}
    assert r2.sysctls == {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}
    assert r2.extra_hosts == {"db": "10.0.0.9"}
    assert r3 == r1.__class__(**{**r1.__dict__, "name": "r3", "hostname": "r3", "line": r3.line})


def test_auto_addresses_on_a_network_skip_gateway_and_explicit_ones() -> None:
    topo = load("""
        name: lab
        nodes: {h1: {}, h2: {}, h3: {}}
        networks:
          lan0: {subnet: 10.0.0.0/24, gateway: 10.0.0.1, nat: true, mtu: 1400}
        links:
          - endpoints: [h1:eth0, lan0]
            addresses: [auto]
          - endpoints: [h2:eth0, lan0]
            addresses: [10.0.0.2]
          - endpoints: [lan0, h3:eth0]
            addresses: [null, auto]
        """)
    lan0 = topo.networks["lan0"]
    assert lan0.subnets == [ipaddress.ip_network("10.0.0.0/24")]
    assert lan0.gateways == [iface("10.0.0.1/24")]
    assert lan0.nat and lan0.mtu == 1400
    assert [link.addresses for link in topo.links] == [
        ([iface("10.0.0.3/24")], []),
        ([iface("10.0.0.2/24")], []),  # no prefix written: the network's is used
        ([], [iface("10.0.0.4/24")]),
    ]


def test_dual_stack_network_and_point_to_point() -> None:
    topo = load("""
        name: lab
        nodes: {h1: {}, h2: {}}
        networks:
          lan0:
            subnet: [10.0.0.0/24, "fd00:0:0:1::/64"]
            gateway: [10.0.0.1, "fd00:0:0:1::1"]
        links:
          - endpoints: [h1:eth0, lan0]
            addresses: [auto]
          - endpoints: [h1:eth1, h2:eth1]
            addresses:
              - [10.1.0.1/30, "fd00::1/64"]
              - [10.1.0.2/30, "fd00::2/64"]
            mtu: 1500
            impair: {delay: 20ms, jitter: 5ms, loss: 1%, rate: 10mbit}
        """)
    assert topo.networks["lan0"].gateways == [iface("10.0.0.1/24"), iface("fd00:0:0:1::1/64")]
    assert topo.links[0].addresses == ([iface("10.0.0.2/24"), iface("fd00:0:0:1::2/64")], [])
    p2p = topo.links[1]
    assert p2p.addresses == (
        [iface("10.1.0.1/30"), iface("fd00::1/64")],
        [iface("10.1.0.2/30"), iface("fd00::2/64")],
    )
    assert p2p.mtu == 1500
    assert p2p.impair == {"delay": "20ms", "jitter": "5ms", "loss": "1%", "rate": "10mbit"}
    assert topo.node_addresses("h1")[0] == iface("10.0.0.2/24")


def test_commands_are_converted_to_argv() -> None:
    topo = load("""
        name: lab
        nodes:
          r1:
            cmd: sleep infinity
            exec:
              - ip link set eth0 up
              - [sysctl, -w, net.ipv4.ip_forward=1]
          r2:
            cmd: [/usr/sbin/nginx, -g, daemon off;]
        """)
    r1, r2 = topo.nodes["r1"], topo.nodes["r2"]
    assert r1.cmd == ["/bin/sh", "-c", "sleep infinity"]
    assert r1.exec == [["/bin/sh", "-c", "ip link set eth0 up"], ["sysctl", "-w", "net.ipv4.ip_forward=1"]]
    assert r2.cmd == ["/usr/sbin/nginx", "-g", "daemon off;"]


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("4096k", 4 << 20),
        ("8388608", 8 << 20),
        ("1.5g", 3 << 29),
        ("512Mi", 512 << 20),
    ],
)
def test_memory_units(written: str, size: int) -> None:
    topo = load(f"""
        name: lab
        nodes:
          r1: {{limits: {{memory: {written}, cpus: "0.25", pids: 64}}}}
        """)
    assert topo.nodes["r1"].limits == Limits(cpus=0.25, memory=size, pids=64)


def test_node_details() -> None:
    topo = load("""
        name: lab
        nodes:
          web-1:
            hostname: www.example.org
            dns: ["2606:4700:4700::1111"]
            dns_search: [example.org]
            network: bridge
            userns: true
            ports: ["8080:80", "22:22", 5353:53/udp]
            routes:
              - {dst: default, via: 10.1.0.254}
              - {dst: "2001:db8::/32", via: "fe80::1", dev: eth0}
              - {dst: 10.9.0.7, dev: eth1}
            binds: [/srv/www:/var/www:ro, /tmp/x:/x]
          side: {network: "container:web-1"}
        """)
    web, side = topo.nodes["web-1"], topo.nodes["side"]
    assert web.hostname == "www.example.org" and web.dns == ["2606:4700:4700::1111"]
    assert web.dns_search == ["example.org"] and web.network == "bridge" and web.userns
    assert web.ports == ["8080:80/tcp", "22:22/tcp", "5353:53/udp"]  # 22:22 is not YAML 1.1 base 60
    assert web.routes == [
        Route(dst="default", via=ipaddress.ip_address("10.1.0.254")),
        Route(dst="2001:db8::/32", via=ipaddress.ip_address("fe80::1"), dev="eth0"),
        Route(dst="10.9.0.7/32", dev="eth1"),
    ]
    assert web.binds == [Bind("/srv/www", "/var/www", True), Bind("/tmp/x", "/x", False)]
    assert side.network == "container:web-1"


def test_checks() -> None:
    topo = load("""
        name: lab
        nodes: {h1: {}, h2: {}, r1: {}}
        links:
          - endpoints: [h1:eth0, h2:eth0]
            addresses: [10.1.0.1/24, "fd00::2/64"]
        checks:
          - {from: h1, to: h2}
          - {from: h1, to: "h2:eth0", proto: tcp, port: 80, expect: refused, timeout: 500ms}
          - {from: h1, to: "fd00::2", proto: udp, port: 53, expect: unreachable}
          - {from: h1, to: h2, via: [r1], seen_as: 10.0.0.1, within: 2m}
          - {from: h1, to: h2, within: 30}
        """)
    c = topo.checks
    assert (c[0].src, c[0].dst, c[0].expect, c[0].proto) == ("h1", "h2", "reachable", "icmp")
    assert (c[1].dst, c[1].proto, c[1].port, c[1].expect, c[1].timeout) == (
        "h2:eth0",
        "tcp",
        80,
        "refused",
        0.5,
    )
    assert (c[2].dst, c[2].proto, c[2].port) == ("fd00::2", "udp", 53)
    assert (c[3].via, c[3].seen_as, c[3].within) == (["r1"], "10.0.0.1", 120.0)
    assert c[4].within == 30.0
    assert [check.line for check in c] == [8, 9, 10, 11, 12]


def test_graph() -> None:
    topo = load("""
        name: lab
        nodes: {h1: {}, h2: {}}
        networks: {lan0: {subnet: 10.0.0.0/24}}
        links:
          - endpoints: [h1:eth0, lan0]
            addresses: [auto]
          - endpoints: [h1:eth1, h2:eth0]
          - endpoints: [h1:eth2, h2:eth1]
        """)
    graph = build_graph(topo)
    assert dict(graph.nodes(data="kind")) == {"h1": "host", "h2": "host", "lan0": "network"}
    assert graph.number_of_edges("h1", "h2") == 2
    edge = graph.edges["h1", "lan0", 0]
    assert edge["ifaces"] == ("eth0", None)
    assert edge["addresses"] == ([iface("10.0.0.1/24")], [])


def test_text_errors_name_the_given_file() -> None:
    with pytest.raises(TopologyError) as info:
        load_topology_text("name: lab\nnodes: {r1: {image: [x]}}\n", "inline.yaml")
    assert str(info.value) == "inline.yaml:2: nodes.r1.image: expected a string or number, got a list"
    assert (info.value.file, info.value.line, info.value.key) == ("inline.yaml", 2, "nodes.r1.image")
    assert isinstance(info.value, InputError) and info.value.exit_code == 2


def test_missing_file_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read the file"):
        load_topology(tmp_path / "nope.yaml")


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 40)]
    with pytest.raises(TopologyError, match="aliases are not allowed"):
        load_topology_text("\n".join(lines))


# --- broken files -------------------------------------------------------------------------------


def bad_files() -> list[Path]:
    return sorted(BAD.glob("*.yaml"))


def test_there_are_enough_bad_files() -> None:
    assert len(bad_files()) >= 25


@pytest.mark.parametrize("path", bad_files(), ids=lambda path: path.stem)
def test_bad_file(path: Path) -> None:
    first_line = path.read_bytes().split(b"\n", 1)[0].decode()
    expect = EXPECT_RE.match(first_line)
    assert expect, f"{path.name}: first line must be '# expect: line N: fragment'"
    line, fragment = expect.groups()
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    message = str(info.value)
    assert path.name in message
    assert f":{line}:" in message
    assert fragment in message
    assert "\n" not in message


def test_a_network_joins_a_machine_bridge_as_it_is() -> None:
    topo = load_topology_text("name: x\nnodes: {a: {}}\nnetworks:\n  lan: {bridge: br-clab, subnet: 10.9.0.0/24}\n"
                              "links:\n  - endpoints: [a:eth0, lan]\n    addresses: [10.9.0.5/24]\n")
    assert topo.networks["lan"].bridge == "br-clab"
    for extra, key in (("gateway: 10.9.0.1", "gateway"), ("nat: true", "nat"), ("mtu: 1400", "mtu"),
                       ("uplink: eth9", "uplink")):
        with pytest.raises(InputError, match=rf"<string>:4: networks\.lan\.{key}: '{key}' cannot be used with bridge"):
            load_topology_text(f"name: x\nnodes: {{a: {{}}}}\nnetworks:\n  lan: {{bridge: br0, subnet: 10.9.0.0/24, "
                               f"{extra}}}\n")
    with pytest.raises(InputError, match="bridge br0 is already joined by network 'one'"):
        load_topology_text("name: x\nnodes: {a: {}}\nnetworks:\n  one: {bridge: br0}\n  two: {bridge: br0}\n")


# --- ipc: and pid: (shared IPC and PID namespaces) ------------------------------------------------


def test_ipc_and_pid_keys_load_with_their_defaults() -> None:
    topo = load("""
        name: lab
        nodes:
          b: {ipc: "container:a", pid: "container:a", network: "container:a"}
          a: {ipc: shareable}
          h: {ipc: host, pid: host}
          c: {ipc: private, pid: private}
          d: {}
        """)
    assert [(n.ipc, n.pid) for n in topo.nodes.values()] == [
        ("container:a", "container:a"), ("shareable", "private"), ("host", "host"), ("private", "private"),
        ("shareable", "private")]
    assert topo.nodes["b"].shares() == [("network", "a"), ("ipc", "a"), ("pid", "a")]
    assert topo.nodes["d"].shares() == []


def test_ipc_and_pid_survive_the_saved_topology() -> None:
    from netemu.topology.serialize import topology_from_dict, topology_to_dict

    topo = load("""
        name: lab
        nodes:
          a: {}
          b: {ipc: "container:a", pid: host}
        """)
    data = topology_to_dict(topo)
    assert topology_from_dict(data).nodes["b"].ipc == "container:a"
    for node in data["nodes"].values():  # saved before the keys existed: the defaults
        del node["ipc"], node["pid"]
    assert [(n.ipc, n.pid) for n in topology_from_dict(data).nodes.values()] == [("shareable", "private")] * 2


NAMESPACE_ERRORS = {
    "unknown": ("a: {}\n  alpha: {}\n  b: {pid: 'container:alpah'}",
                "test.yaml:5: nodes.b.pid: pid: container:alpah names an unknown node; did you mean 'alpha'?"),
    "unknown-ipc": ("router1: {}\n  b: {ipc: 'container:routr1'}",
                    "test.yaml:4: nodes.b.ipc: ipc: container:routr1 names an unknown node; did you mean 'router1'?"),
    "self": ("a: {ipc: 'container:a'}", "test.yaml:3: nodes.a.ipc: ipc: container:<node> must name another node"),
    "loop": ("a: {pid: 'container:b'}\n  b: {pid: 'container:c'}\n  c: {pid: 'container:a'}",
             "test.yaml:3: nodes.a.pid: pid: container:b makes a loop (a -> b -> c -> a)"),
    "across-kinds": ("a: {network: 'container:b'}\n  b: {pid: 'container:c'}\n  c: {ipc: 'container:a'}",
                     "test.yaml:3: nodes.a.network: network: container:b makes a start-order loop with the other "
                     "container: keys (a -> b (network), b -> c (pid), c -> a (ipc))"),
    "bad-ipc": ("a: {ipc: none}", "test.yaml:3: nodes.a.ipc: invalid ipc 'none': expected shareable, private, host "
                                  "or container:<node>"),
    "bad-pid": ("a: {pid: 'container:'}", "test.yaml:3: nodes.a.pid: invalid pid 'container:': expected private, "
                                          "host or container:<node>"),
    "private": ("a: {ipc: private}\n  b: {ipc: 'container:a'}",
                "test.yaml:4: nodes.b.ipc: ipc: container:a: node 'a' has ipc: private, which no other node may join"),
    "userns-lender": ("a: {userns: true}\n  b: {pid: 'container:a'}",
                      "test.yaml:4: nodes.b.pid: pid: container:a needs both nodes in one user namespace, but node "
                      "'a' has userns: true"),
    "userns-borrower": ("a: {}\n  b: {ipc: 'container:a', userns: true}",
                        "test.yaml:4: nodes.b.ipc: ipc: container:a needs both nodes in one user namespace, but node "
                        "'b' has userns: true"),
    "userns-both": ("a: {userns: true}\n  b: {ipc: 'container:a', userns: true}",
                    "test.yaml:4: nodes.b.ipc: ipc: container:a needs both nodes in one user namespace"),
    "userns-host": ("a: {pid: host, userns: true}",
                    "test.yaml:3: nodes.a.pid: pid: host cannot be used with userns: true: the machine's PID "
                    "namespace is outside the node's user namespace"),
    "ipc-sysctl-host": ("a:\n    ipc: host\n    sysctls: {kernel.shmmax: 4096}",
                        "test.yaml:5: nodes.a.sysctls.kernel.shmmax: sysctl 'kernel.shmmax' with ipc: host would "
                        "change the machine"),
    "ipc-sysctl-chain": ("a: {ipc: host}\n  b:\n    ipc: 'container:a'\n    sysctls: {fs.mqueue.msg_max: 20}",
                         "test.yaml:6: nodes.b.sysctls.fs.mqueue.msg_max: sysctl 'fs.mqueue.msg_max' with ipc: "
                         "container:a (through node 'a') would change the machine"),
}


@pytest.mark.parametrize("case", NAMESPACE_ERRORS)
def test_shared_ipc_and_pid_mistakes_are_one_located_line(case: str) -> None:
    nodes, message = NAMESPACE_ERRORS[case]
    with pytest.raises(TopologyError) as info:
        load_topology_text(f"name: lab\nnodes:\n  {nodes}\n", "test.yaml")
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value) and info.value.exit_code == 2


def test_ipc_sysctls_stay_allowed_in_a_shared_ipc_namespace_of_a_node() -> None:
    topo = load("""
        name: lab
        nodes:
          a: {}
          b: {ipc: "container:a", sysctls: {kernel.shmmax: 4096}, pid: host}
        """)
    assert topo.nodes["b"].sysctls == {"kernel.shmmax": "4096"}


def test_a_long_chain_of_shared_namespaces_is_checked_without_recursion() -> None:
    chain = "\n".join(f"  n{i}: {{pid: 'container:n{i + 1}', ipc: 'container:n{i + 1}'}}" for i in range(3000))
    topo = load_topology_text(f"name: lab\nnodes:\n{chain}\n  n3000: {{}}\n")
    assert topo.nodes["n0"].shares() == [("ipc", "n1"), ("pid", "n1")]


# --- bring your own lab: anchors, merge keys, relative paths, names, new node keys ---------------


def test_anchors_aliases_and_merge_keys_expand_with_the_node_own_keys_winning() -> None:
    topo = load("""
        name: lab
        x-router: &router
          image: host
          sysctls: {net.ipv4.ip_forward: 1}
          labels: {role: router}
        x-lan: &lan {dns: [192.0.2.53]}
        nodes:
          r1:
            <<: *router
            hostname: core
          r2: {<<: [*lan, *router], image: ./rootfs}
          h1: *lan
        """)
    r1, r2, h1 = topo.nodes["r1"], topo.nodes["r2"], topo.nodes["h1"]
    assert (r1.image, r1.hostname, r1.sysctls, r1.labels) == ("host", "core", {"net.ipv4.ip_forward": "1"},
                                                             {"role": "router"})
    assert (r2.image, r2.dns, r2.labels) == ("./rootfs", ["192.0.2.53"], {"role": "router"})
    assert h1.dns == ["192.0.2.53"] and h1.image == "host"


def test_an_error_inside_an_anchor_names_the_line_where_it_is_written_and_the_key_path_where_it_is_used() -> None:
    with pytest.raises(TopologyError) as info:
        load("""
            name: lab
            x-base: &base
              limits: {memory: 1k}
            nodes:
              r1: {<<: *base}
            """)
    assert str(info.value).startswith("test.yaml:4: nodes.r1.limits.memory: memory limit '1k' is too small")


@pytest.mark.parametrize(("text", "fragment"), [
    ("name: lab\nnodes:\n  r1: {image: host, image: x}\n", "test.yaml:3: nodes.r1.image: duplicate key 'image'"),
    ("name: lab\nnodes:\n  r1: {<<: {image: x}, <<: {image: y}}\n", "test.yaml:3: nodes.r1.<<: duplicate key '<<'"),
    ("name: lab\nnodes:\n  r1: {<<: [1]}\n", "test.yaml:3: nodes.r1.<<: a merge key takes a mapping"),
    ("name: lab\nx-a: &a [*a]\nnodes:\n  r1: {}\n", "test.yaml:2: x-a[0]: alias *a is inside its own anchor"),
    ("name: lab\nnodes:\n  r1: {image: *nowhere}\n", "test.yaml:3: invalid YAML: found undefined alias *nowhere"),
    ("name: lab\nextra: 1\nnodes:\n  r1: {}\n", "test.yaml:2: extra: unknown key 'extra'"),
])
def test_duplicate_keys_stay_refused_and_merge_mistakes_are_located(text: str, fragment: str) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology_text(text, "test.yaml")
    assert str(info.value).startswith(fragment) and "\n" not in str(info.value)


def test_a_billion_laughs_fails_fast_on_one_line_at_the_alias_that_uses_it() -> None:
    import time

    lines = ["name: lab", "x-0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x-{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    lines += ["nodes:", "  r1: {labels: {x: *l9}}"]
    started = time.monotonic()
    with pytest.raises(TopologyError) as info:
        load_topology_text("\n".join(lines), "bomb.yaml")
    assert time.monotonic() - started < 2
    message = str(info.value)
    assert message.startswith("bomb.yaml:") and "expands too far" in message and "\n" not in message
    from netemu.topology._tree import ALIAS_EXPANSION_MAX
    assert str(ALIAS_EXPANSION_MAX) in message


def test_relative_binds_and_files_resolve_against_the_file_directory(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    path = lab / "topo.yaml"
    path.write_text(textwrap.dedent("""
        name: lab
        nodes:
          r1:
            binds: [r1/daemons:/etc/frr/daemons, "../common:/common:ro", /srv/x:/x]
            files: [common, ./r1/root/, /opt/extra]
          r2: {files: r2}
        """))
    topo = load_topology(path)
    r1 = topo.nodes["r1"]
    assert r1.binds == [Bind(str(lab / "r1/daemons"), "/etc/frr/daemons"), Bind(str(tmp_path / "common"), "/common",
                                                                               True), Bind("/srv/x", "/x")]
    assert r1.files == [str(lab / "common"), str(lab / "r1/root"), "/opt/extra"]
    assert topo.nodes["r2"].files == [str(lab / "r2")]


@pytest.mark.parametrize(("node", "fragment"), [
    ("{binds: ['data:/data']}", "nodes.r1.binds[0]: bind path 'data' must be absolute"),  # no file, no directory
    ("{binds: ['/a/../b:/b']}", "nodes.r1.binds[0]: bind path '/a/../b' must not contain '..'"),
    ("{binds: ['/a:rel']}", "nodes.r1.binds[0]: bind path 'rel' must be absolute"),
    ("{files: [cfg]}", "nodes.r1.files[0]: files directory 'cfg' must be absolute"),
    ("{files: /proc}", "nodes.r1.files: files directory '/proc' is the machine's /proc"),
    ("{files: '/'}", "nodes.r1.files: files directory '/' is the machine's /"),
    ("{files: ''}", "nodes.r1.files: must not be empty"),
])
def test_path_mistakes_in_text_without_a_file(node: str, fragment: str) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology_text(f"name: lab\nnodes:\n  r1: {node}\n", "test.yaml")
    assert str(info.value).startswith(f"test.yaml:3: {fragment}")


def test_a_relative_bind_that_climbs_to_the_machine_proc_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    depth = len(tmp_path.parts)
    path.write_text(f"name: lab\nnodes:\n  r1: {{binds: ['{'../' * depth}proc/1:/x']}}\n")
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(info.value).endswith("t.yaml:3: nodes.r1.binds[0]: bind source /proc/1 is the machine's /proc: only a "
                                    "`privileged: true` node may bind it")


def test_node_names_take_upper_case_dots_and_underscores() -> None:
    topo = load("""
        name: lab
        nodes:
          PC1: {}
          r1.site: {}
          srl_1: {}
          Edge-Router.2: {hostname: edge}
        links:
          - endpoints: [PC1:eth0, r1.site:eth0]
            addresses: [10.0.0.1/24, 10.0.0.2/24]
        checks:
          - {from: PC1, to: r1.site}
          - {from: srl_1, to: "r1.site:eth0"}
        """)
    assert [n.hostname for n in topo.nodes.values()] == ["PC1", "r1.site", "srl-1", "edge"]
    assert topo.checks[0].dst == "r1.site" and topo.links[0].endpoints[1] == Endpoint(node="r1.site", iface="eth0")


@pytest.mark.parametrize(("nodes", "fragment"), [
    ("  PC1: {}\n  pc1: {}\n", "test.yaml:4: nodes.pc1: node name 'pc1' differs from node 'PC1' (line 3) only in case"),
    ("  srl_1: {}\n  srl-1: {}\n", "test.yaml:4: nodes.srl-1: node name 'srl-1' differs from node 'srl_1' (line 3)"),
    ("  10.0.0.1: {}\n", "test.yaml:3: nodes.10.0.0.1: invalid node name '10.0.0.1': it reads as an IP address"),
    ("  _x: {}\n", "test.yaml:3: nodes._x: invalid node name '_x'"),
    ("  .x: {}\n", "test.yaml:3: nodes..x: invalid node name '.x'"),
    ("  'a/b': {}\n", "test.yaml:3: nodes.a/b: invalid node name 'a/b'"),
    ("  'a:b': {}\n", "test.yaml:3: nodes.a:b: invalid node name 'a:b'"),
    ("  r1.: {}\n", "test.yaml:3: nodes.r1.: node name 'r1.' is not a valid hostname; set 'hostname'"),
    ("  " + "A" * 64 + ": {}\n", "is too long (64 chars, at most 63)"),
])
def test_node_name_mistakes(nodes: str, fragment: str) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology_text(f"name: lab\nnodes:\n{nodes}", "test.yaml")
    assert fragment in str(info.value)


def test_node_names_become_distinct_safe_kernel_and_file_names() -> None:
    from netemu.runtime import paths

    names = ["r1", "PC1", "r1.site", "srl_1", "cpu.max", "tasks", "cgroup.procs", "x" * 63]
    groups = [paths.cgroup_path("lab", name).rsplit("/", 1)[1] for name in names]
    assert groups[0] == "r1" and all(group.startswith("_") for group in groups[1:-1]) and groups[-1] == "x" * 63
    assert len(set(groups)) == len(groups)
    netns = [paths.netns_name("lab", name) for name in names]
    assert len(set(netns)) == len(netns) and all(paths.lab_of_netns(n) == "lab" for n in netns)
    veths = {paths.host_veth_name("lab", name, "eth0") for name in names}
    assert len(veths) == len(names) and all(len(v) <= 15 for v in veths)
    assert paths.lab_of_alias(paths.alias("lab", "link:0:r1.site:eth0")) == "lab"


def test_wait_for_entrypoint_labels_and_systemctl_load() -> None:
    topo = load("""
        name: lab
        defaults:
          labels: {lab: demo}
        nodes:
          db: {entrypoint: "exec sleep 100", systemctl: true}
          app:
            wait_for: [db]
            entrypoint: [/bin/echo, hi]
            cmd: [there]
            labels: {role: app, "com.example/tier": "2", enabled: true}
          web: {wait_for: [app, db], entrypoint: ""}
          idle: {entrypoint: []}
        """)
    db, app, web, idle = (topo.nodes[n] for n in ("db", "app", "web", "idle"))
    assert db.entrypoint == ["/bin/sh", "-c", "exec sleep 100"] and db.systemctl and not app.systemctl
    assert app.entrypoint == ["/bin/echo", "hi"] and app.cmd == ["there"] and app.wait_for == ["db"]
    assert app.labels == {"lab": "demo", "role": "app", "com.example/tier": "2", "enabled": "true"}
    assert web.entrypoint == [] and idle.entrypoint == [] and web.wait_for == ["app", "db"]
    assert db.wait_for == [] and db.labels == {"lab": "demo"}


@pytest.mark.parametrize(("nodes", "fragment"), [
    ("  a: {wait_for: [b]}\n", "test.yaml:3: nodes.a.wait_for[0]: wait_for: unknown node 'b'"),
    ("  a: {wait_for: [a]}\n", "test.yaml:3: nodes.a.wait_for[0]: wait_for: a node cannot wait for itself"),
    ("  a: {wait_for: [b, b]}\n  b: {}\n", "test.yaml:3: nodes.a.wait_for[1]: wait_for: node 'b' is listed twice"),
    ("  a: {wait_for: [rb]}\n  r-b: {}\n", "unknown node 'rb'; did you mean 'r-b'?"),
    ("  a: {wait_for: b}\n  b: {}\n", "test.yaml:3: nodes.a.wait_for: expected a list, got a string"),
    ("  a:\n    wait_for: [b]\n  b:\n    wait_for: [c]\n  c:\n    wait_for: [a]\n",
     "test.yaml:4: nodes.a.wait_for: wait_for: b makes a start-order loop with the other container: and wait_for keys "
     "(a -> b (wait_for), b -> c (wait_for), c -> a (wait_for))"),
    ("  a:\n    network: container:b\n  b:\n    wait_for: [a]\n",
     "test.yaml:4: nodes.a.network: network: container:b makes a start-order loop with the other container: and "
     "wait_for keys (a -> b (network), b -> a (wait_for))"),
    ("  a: {entrypoint: ['']}\n", "test.yaml:3: nodes.a.entrypoint[0]: must not be empty"),
    ("  a: {entrypoint: {x: 1}}\n", "test.yaml:3: nodes.a.entrypoint: expected a string or number, got a mapping"),
    ("  a: {labels: [x]}\n", "test.yaml:3: nodes.a.labels: expected a mapping, got a list"),
    ("  a: {labels: {x: null}}\n", "test.yaml:3: nodes.a.labels.x: expected a string or number, got null"),
    ("  a: {labels: {x: \"a\\tb\"}}\n", "test.yaml:3: nodes.a.labels.x: a label's value is at most 4096 printable"),
    ("  a: {systemctl: yes please}\n", "test.yaml:3: nodes.a.systemctl: expected true or false, got a string"),
])
def test_wait_for_and_new_key_mistakes_are_one_located_line(nodes: str, fragment: str) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology_text(f"name: lab\nnodes:\n{nodes}", "test.yaml")
    assert str(info.value).startswith(fragment) or fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_new_keys_survive_the_saved_topology(tmp_path: Path) -> None:
    from netemu.topology import serialize

    (tmp_path / "cfg").mkdir()
    path = tmp_path / "t.yaml"
    path.write_text("name: lab\nnodes:\n  PC1: {files: cfg, labels: {a: b}, systemctl: true, entrypoint: []}\n"
                    "  r1.x: {wait_for: [PC1]}\n")
    again = serialize.topology_from_dict(serialize.topology_to_dict(load_topology(path)))
    pc1 = again.nodes["PC1"]
    assert pc1.files == [str(tmp_path / "cfg")] and again.nodes["r1.x"].wait_for == ["PC1"]
    assert pc1.labels == {"a": "b"} and pc1.systemctl and pc1.entrypoint == []


def _format_dispatch_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text("")
    return path


def test_the_format_follows_the_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    seen: list[tuple[str, Path]] = []
    for module, function in (("containerlab", "load_containerlab"), ("kathara", "load_kathara")):
        fake = types.ModuleType(f"netemu.topology.{module}")
        setattr(fake, function, lambda path, module=module: seen.append((module, Path(path))) or "loaded")
        monkeypatch.setitem(sys.modules, f"netemu.topology.{module}", fake)
    (tmp_path / "kat").mkdir()
    (tmp_path / "kat" / "lab.conf").write_text("")
    for name in ("a.clab.yml", "b.clab.yaml", "lab.conf"):
        assert load_topology(_format_dispatch_file(tmp_path, name)) == "loaded"
    assert load_topology(tmp_path / "kat") == "loaded"
    assert [module for module, _ in seen] == ["containerlab", "containerlab", "kathara", "kathara"]
    assert seen[-1][1] == tmp_path / "kat"
    (tmp_path / "empty").mkdir()
    with pytest.raises(TopologyError, match=r"is a directory without a lab\.conf"):
        load_topology(tmp_path / "empty")


def test_a_format_whose_loader_is_missing_is_unsupported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "netemu.topology.kathara", None)  # import raises ModuleNotFoundError
    with pytest.raises(InputError, match=r"the Kathara format is not supported by this netemu") as info:
        load_topology(_format_dispatch_file(tmp_path, "lab.conf"))
    assert info.value.exit_code == 2


def test_lab_conf_and_kathara_directories_are_file_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netemu import api

    (tmp_path / "kat").mkdir()
    (tmp_path / "kat" / "lab.conf").write_text("")
    (tmp_path / "seed").mkdir()
    monkeypatch.chdir(tmp_path)
    assert api.is_file_argument("lab.conf") and api.is_file_argument("kat") and api.is_file_argument("x.clab.yml")
    assert not api.is_file_argument("seed") and not api.is_file_argument("mylab")
