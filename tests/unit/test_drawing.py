"""Pictures as text: every host, network and link, with its interfaces and addresses, is in the
DOT and the Mermaid output, for the seed lab, a 50-node lab and every feature that draws."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from netemu.topology import Topology, load_topology, load_topology_text
from netemu.topology.drawing import AUTO_DOT_MAX, to_dot, to_mermaid
from tests.campus import campus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def big() -> Topology:
    return load_topology_text(yaml.safe_dump(campus("campus")), "campus.yaml")


def host_label(dot: str, node: str) -> str:
    """The HTML-like label of one host's box."""
    match = re.search(rf'^  "h:{re.escape(node)}" \[shape=plain, label=<(.*)>\];$', dot, re.M)
    assert match, f"no box for host {node}"
    return match.group(1)


def edges(dot: str) -> list[str]:
    return [line.strip().rstrip(";") for line in dot.splitlines() if " -- " in line]


def expected_edge(topo: Topology, index: int, ports: bool = True) -> tuple[str, str]:
    """The two ends of link `index` as DOT writes them (order aside)."""
    ends = []
    for ep in topo.links[index].endpoints:
        if ep.is_network:
            ends.append(f'"n:{ep.network}"')
        else:
            ends.append(f'"h:{ep.node}":"{ep.iface}"' if ports else f'"h:{ep.node}"')
    return ends[0], ends[1]


def assert_dot_has_everything(topo: Topology, dot: str) -> None:
    for name in topo.nodes:
        label = host_label(dot, name)
        assert f"<B>{name}</B>" in label
    for name in topo.networks:
        assert re.search(rf'^  "n:{name}" \[.*label="{name}\\n', dot, re.M), name
    for link in topo.links:
        for ep, addrs in link.host_endpoints():
            label = host_label(dot, ep.node)
            assert f'PORT="{ep.iface}"' in label and f"<B>{ep.iface}</B>" in label
            assert all(str(a) in label for a in addrs), (ep, addrs)


def test_seed_dot() -> None:
    topo = load_topology(ROOT / "topologies" / "seed.yaml")
    dot = to_dot(topo)
    assert dot.startswith('graph "seed" {') and dot.rstrip().endswith("}")
    assert "layout=dot" in dot and "rankdir=LR" in dot
    assert '<B>eth0</B> 10.1.0.1/24' in host_label(dot, "r1")
    assert '<B>eth0</B> 10.1.0.2/24' in host_label(dot, "r2")
    assert edges(dot) == ['"h:r1":"eth0" -- "h:r2":"eth0"']


def test_seed_mermaid() -> None:
    mmd = to_mermaid(load_topology(ROOT / "topologies" / "seed.yaml"))
    lines = mmd.splitlines()
    assert lines[1] == "flowchart LR"
    assert '  h0["r1"]' in lines and '  h1["r2"]' in lines
    assert '  h0 ---|"eth0 10.1.0.1/24 — eth0 10.1.0.2/24"| h1' in lines


def test_fifty_node_lab_dot_has_every_node_network_and_link(big: Topology) -> None:
    assert len(big.nodes) == 50 and len(big.networks) == 5 and len(big.links) == 55
    for layout in ("dot", "sfdp"):
        dot = to_dot(big, layout)
        assert f"layout={layout}" in dot
        assert_dot_has_everything(big, dot)
        found = {frozenset(re.split(r" -- ", e)) for e in edges(dot)}
        assert len(edges(dot)) == len(big.links)
        for index, link in enumerate(big.links):
            # sfdp points a single-interface host's link at its box, a router's at its row
            leaf = [ep for ep in link.endpoints if ep.node and sum(
                1 for other in big.links for e in other.endpoints if e.node == ep.node) == 1]
            ends = expected_edge(big, index, ports=True)
            if layout == "sfdp" and leaf:
                ends = tuple(f'"h:{leaf[0].node}"' if e.startswith(f'"h:{leaf[0].node}":') else e for e in ends)
            assert frozenset(ends) in found, (index, ends)


def test_auto_layout_picks_by_size(big: Topology) -> None:
    assert "layout=sfdp" in to_dot(big)
    assert len(big.nodes) + len(big.networks) > AUTO_DOT_MAX
    assert "layout=dot" in to_dot(load_topology(ROOT / "topologies" / "natweb.yaml"))
    with pytest.raises(ValueError, match="unknown layout"):
        to_dot(big, "circo")


def test_fifty_node_lab_mermaid_labels_every_link(big: Topology) -> None:
    mmd = to_mermaid(big)
    ids = dict(re.findall(r'^  ([hn]\d+)[\[{/"]+([^"<]+)', mmd, re.M))
    names = {name: ident for ident, name in ids.items()}
    assert set(names) == set(big.nodes) | set(big.networks)
    links = [line for line in mmd.splitlines() if " ---" in line]
    assert len(links) == len(big.links)
    for link, line in zip(big.links, links, strict=True):
        a, b = (names[ep.network or ep.node or ""] for ep in link.endpoints)
        assert line.startswith(f"  {a} ---|") and line.endswith(f"| {b}")
        for ep, addrs in link.host_endpoints():
            assert " ".join([ep.iface or "", *map(str, addrs)]) in line


def test_every_feature_draws() -> None:
    topo = load_topology_text(textwrap.dedent("""
        name: mixed
        nodes:
          r1: {}
          r2: {}
          web: {network: bridge, ports: ["8080:80/tcp"]}
          side: {network: "container:web"}
          tool: {network: host}
          h2: {}
        networks:
          lan: {subnet: 10.0.0.0/24, gateway: 10.0.0.1, nat: true}
          mv: {driver: macvlan, uplink: eth9, subnet: 192.168.50.0/24}
        links:
          - endpoints: [r1:eth0, lan]
            addresses: [auto]
          - endpoints: [r1:eth1, r2:eth0]
            addresses: [[10.9.0.1/30, fd00:9::1/64], [10.9.0.2/30, fd00:9::2/64]]
            mtu: 1400
            impair: {loss: 1%}
          - endpoints: [r2:eth1, h2:eth0]
            addresses: [auto, auto]
          - endpoints: [h2:eth1, mv]
            addresses: [192.168.50.7/24]
        """), "mixed.yaml")
    dot = to_dot(topo, "dot")
    assert "10.0.0.2/24" in host_label(dot, "r1")  # `auto` on a network: the loader's choice
    assert "10.9.0.1/30<BR/>fd00:9::1/64" in host_label(dot, "r1")
    assert "<B>eth1</B> auto" in host_label(dot, "r2")  # point-to-point auto: chosen at `up`
    assert "<B>eth0</B> auto" in host_label(dot, "web") and "port 8080:80/tcp" in host_label(dot, "web")
    assert "machine&#x27;s network" in host_label(dot, "tool")
    # a host with one link hangs right of its network: `dot` ranks an edge's tail first
    assert '"n:bridge" [shape=ellipse' in dot and '"n:bridge" -- "h:web":"eth0"' in dot
    assert '"n:mv" [shape=note' in dot and "uplink eth9" in dot
    assert 'label="lan\\n10.0.0.0/24\\ngw 10.0.0.1\\nNAT"' in dot
    assert '"h:side" -- "h:web" [style=dashed' in dot
    assert '"h:r1":"eth1" -- "h:r2":"eth0" [label="mtu 1400, loss 1%"]' in dot
    mmd = to_mermaid(topo)
    assert '[/"mv<br/>192.168.50.0/24<br/>macvlan, uplink eth9"/]' in mmd
    assert "-.-|\"shares netns\"|" in mmd
    assert "(mtu 1400, loss 1%)" in mmd


def test_an_expanded_topology_keeps_its_default_bridge(big: Topology) -> None:
    """A running lab's topology already has `bridge` as a network: it is not drawn twice."""
    topo = load_topology_text("name: x\nnodes:\n  a: {network: bridge}\n", "x.yaml")
    from netemu.topology.model import Endpoint, Link, Network

    topo.networks["bridge"] = Network(name="bridge")
    topo.links.append(Link(endpoints=(Endpoint(node="a", iface="eth0"), Endpoint(network="bridge")),
                           addresses=([], [])))
    dot = to_dot(topo)
    assert dot.count('"n:bridge" [') == 1 and len(edges(dot)) == 1
