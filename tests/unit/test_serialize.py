"""The settled topology's JSON form (topology.serialize) and the lab records (runtime.records)."""

import ipaddress
import json
from pathlib import Path

import pytest

from netemu.errors import MachineError
from netemu.runtime import records
from netemu.topology import load_topology
from netemu.topology.model import Bind, Check, Endpoint, Limits, Link, Network, Node, Route, Topology
from netemu.topology.serialize import TopologyFormatError, topology_from_dict, topology_to_dict

ROOT = Path(__file__).resolve().parents[2]


def _round_trip(topo: Topology) -> Topology:
    return topology_from_dict(json.loads(json.dumps(topology_to_dict(topo))))


@pytest.mark.parametrize("path", sorted((ROOT / "topologies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_topology_round_trips(path):
    topo = load_topology(path)
    assert _round_trip(topo) == topo


def _full() -> Topology:
    node = Node(name="a", image="alpine", hostname="ah", dns=["1.1.1.1"], dns_search=["lab"],
                extra_hosts={"x": "10.0.0.9"}, env={"K": "v"}, network="bridge",
                limits=Limits(cpus=0.5, memory=1 << 20, pids=64), userns=True, sysctls={"net.ipv4.ip_forward": "1"},
                routes=[Route("default", ipaddress.ip_address("10.0.0.1")), Route("fd00::/64", dev="eth0")],
                binds=[Bind("/tmp", "/mnt", readonly=True)], cmd=["sleep", "1"], exec=[["true"], ["echo", "x"]],
                ports=["8080:80"], privileged=True, cap_add=["NET_ADMIN"], cap_drop=["ALL"],
                devices=["/dev/net/tun"], read_only=True, line=3)
    net = Network(name="lan", subnets=[ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00::/64")],
                  gateways=[ipaddress.ip_interface("10.0.0.1/24")], nat=True, uplink="eth9", mtu=1400, line=7,
                  driver="macvlan", bridge="br0")
    link = Link(endpoints=(Endpoint(node="a", iface="eth0"), Endpoint(network="lan")),
                addresses=([ipaddress.ip_interface("10.0.0.2/24"), ipaddress.ip_interface("fd00::2/64")], []),
                mtu=1400, impair={"delay": "10ms"}, line=9, auto_p2p=True)
    check = Check(src="a", dst="b", expect="refused", proto="tcp", port=80, via=["r1"], seen_as="a",
                  within=2.0, timeout=1.5, line=12)
    return Topology(name="full", path=Path("/x/full.yaml"), nodes={"a": node, "b": Node(name="b")},
                    networks={"lan": net}, links=[link], checks=[check])


def test_a_model_with_every_field_set_round_trips():
    topo = _full()
    back = _round_trip(topo)
    assert back == topo
    assert isinstance(back.path, Path) and isinstance(back.nodes["a"].routes[0].via, ipaddress.IPv4Address)


def test_an_unknown_topology_version_is_refused():
    data = topology_to_dict(_full()) | {"version": 99}
    with pytest.raises(TopologyFormatError, match=r"topology\.json: topology format version 99"):
        topology_from_dict(data, source="topology.json")


# lab records -----------------------------------------------------------------------------------
V1 = {
    "name": "lab", "status": "running", "file": "/x/lab.yaml", "created": 1.5, "owner_pid": 7,
    "planned_links": ["nm-lab-lan"], "nftables": "netemu-lab",
    "nodes": {"a": {"name": "a", "pid": 10, "start_time": 99, "netns_pid": 10, "cgroup": "netemu/lab/a",
                    "layers": "/l/a", "console": "/l/a/console.log",
                    "extra": {"env": {"K": "v"}, "image": "alpine", "network": "none", "hostname": "a",
                              "limits": {"cpus": None, "memory": 1024, "pids": None},
                              "confinement": {"privileged": False, "caps": "a80425fb", "seccomp": "00ff"},
                              "userns": "100000:65536"}},
              "b": {"name": "b", "pid": None, "start_time": None, "netns_pid": None, "cgroup": "netemu/lab/b",
                    "layers": "/l/b", "console": "/l/b/console.log", "stopped": True,
                    "extra": {"env": {}, "image": "host", "network": "host", "hostname": "b",
                              "limits": {"cpus": 0.5, "memory": None, "pids": 10}}}},
    "networks": {"lan": {"bridge": "nm-lab-lan", "gateways": ["10.0.0.1/24"], "subnets": ["10.0.0.0/24"]},
                 "up": {"bridge": "br0", "machine_bridge": True, "gateways": [], "subnets": []},
                 "mv": {"driver": "macvlan", "parent": "eth0"}},
    "links": [{"endpoints": ["a:eth0", "lan"], "addresses": [["10.0.0.2/24"], []], "mtu": None,
               "impair": {"delay": "5ms"}, "machine_side": "nv-lab-a-eth0"}],
    "uplinks": [{"iface": "eth1", "addresses": ["192.0.2.1/24"], "up": True, "mtu": 1500}],
}


def test_a_version_1_record_is_migrated_and_written_back_with_the_same_keys():
    record = records.LabRecord.from_json(json.loads(json.dumps(V1)))
    assert record.nodes["a"].extra.confinement == records.ConfinementRecord(False, "a80425fb", "00ff")
    assert record.nodes["b"].stopped and record.nodes["b"].extra.limits.pids == 10
    assert record.networks["mv"].driver == "macvlan" and record.uplinks[0].iface == "eth1"
    assert record.to_json() == {**V1, "version": records.VERSION}


def test_a_version_2_record_round_trips():
    record = records.LabRecord.from_json(V1)
    assert records.LabRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_a_newer_record_is_refused_naming_the_file_and_version():
    with pytest.raises(MachineError, match=r"/run/netemu/lab/state\.json: lab record version 3"):
        records.LabRecord.from_json({**V1, "version": 3}, source="/run/netemu/lab/state.json")


def test_a_file_that_is_no_record_is_refused():
    with pytest.raises(records.RecordError, match="not a netemu lab record"):
        records.LabRecord.from_json({"nodes": {}}, source="state.json")
