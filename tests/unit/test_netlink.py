"""The hand-encoded rtnetlink of netemu/linux/netlink/: every request kind it makes, decoded by
pyroute2's own decoder; and, in a private network namespace of the kernel, what a batch reports
when some of its requests are refused, lookups by name, filtered dumps, and link discovery while
another process adds and removes links all the time."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netemu.linux import netlink
from netemu.linux.netlink import constants as c
from netemu.linux.netlink import messages
from netemu.linux.netlink.socket import SETTLE_ATTEMPTS

# A netlink socket with forced buffers (SO_RCVBUFFORCE) and another network namespace need root.
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def queued(build: Callable[[netlink.Batch], None]) -> list[bytes]:
    """The requests `build` queues on a batch, as sent to the kernel (never sent here)."""
    with netlink.Socket() as sock:
        batch = netlink.Batch(sock)
        try:
            build(batch)
            return list(batch.pending)
        finally:
            batch._close_fds()


def decoded(kind: type, data: bytes) -> dict:
    msg = kind(data)
    msg.decode()
    return msg


def attrs(msg: dict) -> dict:
    return dict(msg["attrs"])


# --- every request kind through pyroute2's decoder ----------------------------------------------

def test_veth_into_two_namespaces_in_a_bridge() -> None:
    [data] = queued(lambda b: b.add_veth("nvouter", "eth0", ns_pid=os.getpid(), peer_ns_pid=os.getpid(),
                                          master=7, mtu=1400))
    msg = decoded(ifinfmsg, data)
    assert msg["header"]["type"] == c.RTM_NEWLINK
    assert msg["header"]["flags"] == c.NLM_F_REQUEST | c.NLM_F_ACK | c.NLM_F_CREATE | c.NLM_F_EXCL
    assert msg["header"]["length"] == len(data)
    assert msg["flags"] & c.IFF_UP and msg["change"] & c.IFF_UP
    top = attrs(msg)
    assert (top["IFLA_IFNAME"], top["IFLA_MTU"], top["IFLA_MASTER"]) == ("nvouter", 1400, 7)
    assert "IFLA_NET_NS_FD" in top
    info = attrs(top["IFLA_LINKINFO"])
    assert info["IFLA_INFO_KIND"] == "veth"
    peer = dict(attrs(info["IFLA_INFO_DATA"])["VETH_INFO_PEER"]["attrs"])
    assert (peer["IFLA_IFNAME"], peer["IFLA_MTU"]) == ("eth0", 1400)
    assert "IFLA_NET_NS_FD" in peer
    assert dict(attrs(info["IFLA_INFO_DATA"])["VETH_INFO_PEER"])["flags"] == 0  # the peer starts down


def test_veth_between_hosts_starts_down_without_a_master() -> None:
    [data] = queued(lambda b: b.add_veth("p0", "p1", ns_pid=os.getpid(), peer_ns_pid=os.getpid(), up=False))
    msg = decoded(ifinfmsg, data)
    assert msg["flags"] == 0 and "IFLA_MASTER" not in attrs(msg) and "IFLA_MTU" not in attrs(msg)


def test_bridge() -> None:
    [data] = queued(lambda b: b.add_bridge("ne-lab.lan", 9000))
    msg = decoded(ifinfmsg, data)
    assert msg["header"]["flags"] & c.NLM_F_CREATE | c.NLM_F_EXCL
    top = attrs(msg)
    assert (top["IFLA_IFNAME"], top["IFLA_MTU"]) == ("ne-lab.lan", 9000)
    assert attrs(top["IFLA_LINKINFO"])["IFLA_INFO_KIND"] == "bridge"


def test_alias_by_name() -> None:
    [data] = queued(lambda b: b.set_alias("nv1234", "netemu:lab:link:3:h1:eth0"))
    msg = decoded(ifinfmsg, data)
    assert msg["header"]["type"] == c.RTM_NEWLINK and msg["index"] == 0
    assert not msg["header"]["flags"] & c.NLM_F_CREATE
    assert attrs(msg) == {"IFLA_IFNAME": "nv1234", "IFLA_IFALIAS": "netemu:lab:link:3:h1:eth0"}


def test_set_up_and_delete_by_index() -> None:
    up, delete = queued(lambda b: (b.set_up(41, "x"), b.delete_link(42, "y")))
    msg = decoded(ifinfmsg, up)
    assert (msg["index"], msg["flags"], msg["change"]) == (41, c.IFF_UP, c.IFF_UP)
    msg = decoded(ifinfmsg, delete)
    assert (msg["header"]["type"], msg["index"], msg["attrs"]) == (c.RTM_DELLINK, 42, [])


@pytest.mark.parametrize(("address", "expected"), [
    ("10.1.0.1/24", {"IFA_LOCAL": "10.1.0.1", "IFA_ADDRESS": "10.1.0.1", "IFA_BROADCAST": "10.1.0.255"}),
    ("10.9.0.1/31", {"IFA_LOCAL": "10.9.0.1", "IFA_ADDRESS": "10.9.0.1"}),
    ("fd00:9::1/64", {"IFA_ADDRESS": "fd00:9::1"}),
])
def test_address(address: str, expected: dict) -> None:
    iface = ipaddress.ip_interface(address)
    [data] = queued(lambda b: b.add_address(17, iface, "eth0"))
    msg = decoded(ifaddrmsg, data)
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    assert (msg["index"], msg["prefixlen"], msg["family"]) == (17, iface.network.prefixlen, family)
    assert msg["flags"] == (0 if iface.version == 4 else c.IFA_F_NODAD)  # no DAD for IPv6
    assert attrs(msg) == expected


@pytest.mark.parametrize(("dst", "via", "oif", "expected"), [
    ("default", "10.0.0.1", None, {"family": socket.AF_INET, "dst_len": 0, "RTA_GATEWAY": "10.0.0.1"}),
    ("default", "fd00::1", 3, {"family": socket.AF_INET6, "dst_len": 0, "RTA_GATEWAY": "fd00::1", "RTA_OIF": 3}),
    ("10.2.0.0/16", None, 5, {"family": socket.AF_INET, "dst_len": 16, "RTA_DST": "10.2.0.0", "RTA_OIF": 5}),
    ("10.3.0.7/16", "10.0.0.9", None, {"family": socket.AF_INET, "dst_len": 16, "RTA_DST": "10.3.0.0",
                                       "RTA_GATEWAY": "10.0.0.9"}),
])
def test_route(dst: str, via: str | None, oif: int | None, expected: dict) -> None:
    [data] = queued(lambda b: b.add_route(dst, via, oif))
    msg = decoded(rtmsg, data)
    assert (msg["table"], msg["proto"], msg["type"]) == (c.RT_TABLE_MAIN, c.RTPROT_BOOT, c.RTN_UNICAST)
    assert msg["scope"] == (c.RT_SCOPE_UNIVERSE if via else c.RT_SCOPE_LINK)
    found = {"family": msg["family"], "dst_len": msg["dst_len"], **attrs(msg)}
    assert found == expected


def test_getlink_by_name_and_filtered_dumps() -> None:
    msg = decoded(ifinfmsg, messages.message(c.RTM_GETLINK, 0, 9, messages.getlink_body("nv1234")))
    assert (msg["header"]["type"], msg["header"]["flags"], msg["index"]) == (c.RTM_GETLINK, c.NLM_F_REQUEST, 0)
    assert attrs(msg) == {"IFLA_IFNAME": "nv1234", "IFLA_EXT_MASK": c.RTEXT_FILTER_SKIP_STATS}
    msg = decoded(ifinfmsg, messages.message(c.RTM_GETLINK, c.NLM_F_DUMP, 10,
                                         messages.link_dump_body(kind="veth", master=12)))
    assert msg["header"]["flags"] == c.NLM_F_REQUEST | c.NLM_F_DUMP
    assert attrs(msg)["IFLA_MASTER"] == 12
    assert attrs(attrs(msg)["IFLA_LINKINFO"])["IFLA_INFO_KIND"] == "veth"


def test_sequence_numbers_are_distinct() -> None:
    sent = queued(lambda b: [b.add_bridge(f"b{i}") for i in range(5)])
    assert len({decoded(ifinfmsg, m)["header"]["sequence_number"] for m in sent}) == 5


def test_macvlan_in_bridge_mode_into_a_namespace() -> None:
    [data] = queued(lambda b: b.add_macvlan("eth1", 5, "enp1s0", ns_pid=os.getpid(), mtu=1500))
    msg = decoded(ifinfmsg, data)
    assert msg["header"]["flags"] == c.NLM_F_REQUEST | c.NLM_F_ACK | c.NLM_F_CREATE | c.NLM_F_EXCL
    assert msg["flags"] == msg["change"] == 0  # made down: set up with the host's other links
    top = attrs(msg)
    assert (top["IFLA_IFNAME"], top["IFLA_LINK"], top["IFLA_MTU"]) == ("eth1", 5, 1500)
    assert "IFLA_NET_NS_FD" in top
    info = attrs(top["IFLA_LINKINFO"])
    assert info["IFLA_INFO_KIND"] == "macvlan"
    assert attrs(info["IFLA_INFO_DATA"])["IFLA_MACVLAN_MODE"] == "bridge"  # pyroute2 names MACVLAN_MODE_BRIDGE


@pytest.mark.parametrize(("changes", "flags", "change", "expected"), [
    ({"up": False}, 0, c.IFF_UP, {}),
    ({"up": True, "master": 9}, c.IFF_UP, c.IFF_UP, {"IFLA_MASTER": 9}),
    ({"master": 0, "mtu": 1400}, 0, 0, {"IFLA_MASTER": 0, "IFLA_MTU": 1400}),  # out of its bridge
])
def test_set_link(changes: dict, flags: int, change: int, expected: dict) -> None:
    [data] = queued(lambda b: b.set_link(33, "eth0", **changes))
    msg = decoded(ifinfmsg, data)
    assert (msg["header"]["type"], msg["index"], msg["flags"], msg["change"]) == (c.RTM_NEWLINK, 33, flags, change)
    assert not msg["header"]["flags"] & c.NLM_F_CREATE
    assert attrs(msg) == expected


def test_getlink_by_index_and_route_get() -> None:
    msg = decoded(ifinfmsg, messages.message(c.RTM_GETLINK, 0, 3, messages.getlink_body(index=7)))
    assert msg["index"] == 7 and attrs(msg) == {"IFLA_EXT_MASK": c.RTEXT_FILTER_SKIP_STATS}
    for address, family, length in (("10.1.2.3", socket.AF_INET, 32), ("fd00::3", socket.AF_INET6, 128)):
        ip = ipaddress.ip_address(address)
        msg = decoded(rtmsg, messages.message(c.RTM_GETROUTE, 0, 4, messages.route_get_body(ip)))
        assert (msg["header"]["type"], msg["header"]["flags"]) == (c.RTM_GETROUTE, c.NLM_F_REQUEST)
        # Strict checking refuses a route lookup with anything else set in the rtmsg.
        assert (msg["family"], msg["dst_len"], msg["table"], msg["scope"], msg["type"]) == (family, length, 0, 0, 0)
        assert attrs(msg) == {"RTA_DST": address}


def test_address_and_route_dumps() -> None:
    msg = decoded(ifaddrmsg, messages.message(c.RTM_GETADDR, c.NLM_F_DUMP, 5, messages.addr_dump_body(12)))
    assert (msg["family"], msg["index"], msg["header"]["flags"]) == (0, 12, c.NLM_F_REQUEST | c.NLM_F_DUMP)
    msg = decoded(rtmsg, messages.message(c.RTM_GETROUTE, c.NLM_F_DUMP, 6,
                                          messages.route_dump_body(socket.AF_INET6)))
    assert (msg["family"], msg["table"]) == (socket.AF_INET6, c.RT_TABLE_MAIN)


def test_decoders_read_what_pyroute2_encodes() -> None:
    """The other direction: answers built by pyroute2's encoder, read by netemu's decoders."""
    link = ifinfmsg()
    link["index"], link["flags"] = 8, c.IFF_UP | c.IFF_LOWER_UP
    link["attrs"] = [["IFLA_IFNAME", "nv1"], ["IFLA_IFALIAS", "netemu:x:link:0:h1:eth0"], ["IFLA_MTU", 1400],
                     ["IFLA_MASTER", 3], ["IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", "veth"]]}]]
    link.encode()
    assert messages.parse_link(bytes(link.data[16:])) == messages.Link(
        index=8, name="nv1", alias="netemu:x:link:0:h1:eth0", kind="veth", master=3, up=True,
        flags=c.IFF_UP | c.IFF_LOWER_UP, mtu=1400)
    addr = ifaddrmsg()
    addr["family"], addr["prefixlen"], addr["index"] = socket.AF_INET6, 64, 8
    addr["attrs"] = [["IFA_ADDRESS", "fd00::1"]]
    addr.encode()
    assert messages.parse_address(bytes(addr.data[16:])) == messages.Address(8, ipaddress.ip_interface("fd00::1/64"))
    route = rtmsg()
    route["family"], route["dst_len"], route["table"] = socket.AF_INET, 0, c.RT_TABLE_MAIN
    route["attrs"] = [["RTA_GATEWAY", "10.0.0.1"], ["RTA_OIF", 8], ["RTA_PREFSRC", "10.0.0.2"]]
    route.encode()
    assert messages.parse_route(bytes(route.data[16:])) == messages.Route(
        dst=ipaddress.ip_network("0.0.0.0/0"), oif=8, gateway="10.0.0.1", table=c.RT_TABLE_MAIN, source="10.0.0.2")


def test_multipath_routes_keep_every_next_hop() -> None:
    route = rtmsg()
    route["family"], route["dst_len"], route["table"], route["proto"] = socket.AF_INET, 24, c.RT_TABLE_MAIN, 188
    route["attrs"] = [["RTA_DST", "10.9.0.0"], ["RTA_MULTIPATH", [
        {"oif": 8, "hops": 0, "attrs": [["RTA_GATEWAY", "10.7.0.2"]]},
        {"oif": 9, "hops": 2, "attrs": [["RTA_GATEWAY", "10.7.1.2"]]}]]]
    route.encode()
    parsed = messages.parse_route(bytes(route.data[16:]))
    assert parsed is not None and parsed.protocol == 188 and parsed.oif is None and parsed.gateway is None
    assert parsed.hops() == (messages.NextHop(8, "10.7.0.2", 1), messages.NextHop(9, "10.7.1.2", 3))


# --- against the kernel, in a private network namespace --------------------------------------

@pytest.fixture
def netns() -> Iterator[int]:
    """The pid of a process alone in a fresh network namespace; its links go with it."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "600"])
    try:
        while os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            pass  # unshare has not run yet
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_refusal_is_reported_as_the_refused_request(netns: int) -> None:
    with netlink.Socket(netns) as sock:
        batch = netlink.Batch(sock)
        batch.add_bridge("br-a")
        batch.add_bridge("br-b")
        batch.add_bridge("br-a")  # refused: exists
        batch.add_bridge("br-c")
        with pytest.raises(netlink.RtnlError) as refused:
            batch.commit()
        assert refused.value.errno == errno.EEXIST
        assert refused.value.strerror.startswith("add bridge br-a: File exists")
        # The kernel went on with the requests after the refused one.
        assert set(sock.links_by_name(["br-a", "br-b", "br-c"])) == {"br-a", "br-b", "br-c"}


def test_only_the_first_refusal_is_raised_and_tolerated_ones_never(netns: int) -> None:
    with netlink.Socket(netns) as sock:
        with netlink.Batch(sock) as batch:
            batch.add_bridge("br-a")
        index = sock.index("br-a")
        batch = netlink.Batch(sock)
        batch.delete_link(99999, "gone already")  # ENODEV, tolerated for deletes
        batch.add_address(index, ipaddress.ip_interface("10.5.0.1/24"), "br-a")
        batch.add_address(99998, ipaddress.ip_interface("10.6.0.1/24"), "no such link")
        batch.add_bridge("br-a")  # refused too, but after the first refusal
        with pytest.raises(netlink.RtnlError) as refused:
            batch.commit()
        assert refused.value.errno == errno.ENODEV
        assert refused.value.strerror.startswith("add address 10.6.0.1/24 to no such link:")
        assert [a.interface for a in sock.addresses(index)] == [ipaddress.ip_interface("10.5.0.1/24")]
        # Nothing of that batch is left for the next one on the same socket to read as its own.
        with netlink.Batch(sock) as batch:
            batch.delete_link(99997, "also gone")
            batch.add_bridge("br-d")
        assert sock.link("br-d") is not None


def test_a_refusal_in_an_early_chunk_names_its_request(netns: int) -> None:
    """More than SEND_CHUNK bytes of requests go out in several sendmsg(2) calls; the acks are
    still matched to their requests."""
    with netlink.Socket(netns) as sock:
        with netlink.Batch(sock) as batch:
            batch.add_bridge("dup")
        batch = netlink.Batch(sock)
        batch.add_veth("v0", "w0", up=False)
        batch.add_bridge("dup")
        count = 0
        with pytest.raises(netlink.RtnlError) as refused:
            while count < 2000:  # the batch sends itself at SEND_CHUNK and raises what was refused
                count += 1
                batch.add_veth(f"v{count}", f"w{count}", up=False)
            batch.commit()
        assert refused.value.strerror.startswith("add bridge dup: File exists")
        assert count < 2000
        found = sock.links_by_name(["v0", "v1", f"v{count - 1}", "w0"])
        assert set(found) == {"v0", "v1", f"v{count - 1}", "w0"}


def test_lookups_by_name_and_filtered_dumps(netns: int) -> None:
    with netlink.Socket(netns) as sock:
        with netlink.Batch(sock) as batch:
            batch.add_bridge("br0")
            batch.add_bridge("br1", 1400)
        br0 = sock.index("br0")
        with netlink.Batch(sock) as batch:
            for i in range(3):
                batch.add_veth(f"port{i}", f"peer{i}", master=br0)
            for i in range(300):
                batch.add_veth(f"many{i}", f"other{i}", up=False)
            batch.set_alias("br1", "netemu:x:network:n")
        many = [f"many{i}" for i in range(300)] + [f"other{i}" for i in range(300)]
        absent = [f"nothing{i}" for i in range(100)]
        found = sock.links_by_name([*many, *absent, *many, "br1"])  # 701 lookups, LOOKUP_CHUNK in flight
        assert set(found) == {*many, "br1"}
        assert all(found[name].name == name for name in found)
        assert found["br1"].alias == "netemu:x:network:n" and found["br1"].kind == "bridge"
        assert found["br1"].mtu == 1400 and sock.link("nothing") is None
        with pytest.raises(netlink.RtnlError) as missing:
            sock.index("nothing")
        assert missing.value.errno == errno.ENODEV
        assert sock._dump(c.RTM_GETLINK, messages.link_dump_body(master=br0), "ports").filtered  # by the kernel
        ports, _ = sock.dump_links(master=br0)
        assert {link.name for link in ports} == {"port0", "port1", "port2"}
        assert all(link.master == br0 and link.kind == "veth" for link in ports)
        bridges, _ = sock.dump_links(kind="bridge")
        assert {link.name for link in bridges} == {"br0", "br1"}
        assert netlink.Indexes(sock, ["br0"])["br1"] == found["br1"].index


def test_addresses_and_routes(netns: int) -> None:
    with netlink.Socket(netns) as sock:
        with netlink.Batch(sock) as batch:
            batch.add_veth("a", "b")
        a = sock.index("a")
        with netlink.Batch(sock) as batch:
            batch.set_up(sock.index("b"), "b")
            batch.add_address(a, ipaddress.ip_interface("10.7.0.1/24"), "a")
            batch.add_address(a, ipaddress.ip_interface("fd00:7::1/64"), "a")
        with netlink.Batch(sock) as batch:
            batch.add_route("10.8.0.0/16", "10.7.0.2", None)
        assert {x.interface for x in sock.addresses(a)} >= {ipaddress.ip_interface("10.7.0.1/24"),
                                                            ipaddress.ip_interface("fd00:7::1/64")}
        routes = {(str(r.dst), r.gateway, r.oif) for r in sock.routes()}
        assert ("10.8.0.0/16", "10.7.0.2", a) in routes
        assert ("10.7.0.0/24", None, a) in routes
        subprocess.run(["nsenter", "-t", str(netns), "-n", "ip", "route", "add", "10.9.0.0/24", "proto", "188",
                        "nexthop", "via", "10.7.0.2", "nexthop", "via", "10.7.0.3", "weight", "2"], check=True)
        ecmp = next(r for r in sock.routes() if str(r.dst) == "10.9.0.0/24")
        assert ecmp.protocol == 188
        assert ecmp.hops() == (netlink.NextHop(a, "10.7.0.2", 1), netlink.NextHop(a, "10.7.0.3", 2))


def test_link_changes_route_lookups_and_macvlans(netns: int) -> None:
    with netlink.Socket(netns) as sock:
        with sock.batch() as batch:
            batch.add_bridge("br0")
            batch.add_veth("a", "b")
        a, br0 = sock.index("a"), sock.index("br0")
        with sock.batch() as batch:
            batch.set_link(a, "a", master=br0, mtu=1400, up=True)
            batch.set_up(sock.index("b"), "b")
        link = sock.link("a")
        assert link is not None and (link.master, link.mtu, link.up) == (br0, 1400, True)
        with sock.batch() as batch:
            batch.set_link(a, "a", master=0, up=False)
            batch.add_address(sock.index("b"), ipaddress.ip_interface("10.9.0.1/24"), "b")
        link = sock.link("a")
        assert link is not None and (link.master, link.up) == (None, False)
        route = sock.route_to(ipaddress.ip_address("10.9.0.7"))
        assert (sock.link_by_index(route.oif or 0).name, route.gateway, route.source) == ("b", None, "10.9.0.1")
        with pytest.raises(netlink.RtnlError) as unreachable:
            sock.route_to(ipaddress.ip_address("192.0.2.1"))
        assert unreachable.value.errno == errno.ENETUNREACH
        with sock.batch() as batch:  # made in the same namespace here: ns_pid is the namespace's
            batch.add_macvlan("mv0", sock.index("b"), "b", ns_pid=netns)
        found = sock.link("mv0")
        assert found is not None and found.kind == "macvlan"


def test_discovery_settles_while_links_come_and_go(netns: int) -> None:
    """Another process adds and removes veth pairs all the time (every dump of the namespace may
    be interrupted); the tagged links found are exactly the ones that stay, each time."""
    with netlink.Socket(netns) as sock:
        with netlink.Batch(sock) as batch:
            for i in range(20):
                batch.add_bridge(f"keep{i}")
        with netlink.Batch(sock) as batch:
            for i in range(20):
                batch.set_alias(f"keep{i}", f"netemu:keep:{i}")
        expected = {f"keep{i}" for i in range(20)}
        with _churning(netns, pairs=200):
            interrupted = 0
            for _ in range(30):
                found = sock.settled_links(lambda link: link.alias.startswith("netemu:keep:"),
                                           kinds=("bridge", "veth"))
                assert {link.name for link in found} == expected
                interrupted += sock.dump_links()[1]
            assert set(sock.links_by_name(expected)) == expected
        print(f"\n{interrupted} of 30 whole dumps were interrupted by the churn")


def test_settling_is_bounded_and_says_why() -> None:
    """Dumps that are always interrupted and never agree: a clear error after SETTLE_ATTEMPTS;
    two interrupted dumps that agree, or one whole dump, are answers."""
    with netlink.Socket() as sock:
        calls = iter(range(10_000))
        with pytest.raises(netlink.RtnlError) as never:
            sock._settled(lambda: ([next(calls)], True), frozenset, "list links")
        assert never.value.errno == errno.EAGAIN
        assert f"{SETTLE_ATTEMPTS} dumps in a row were interrupted" in never.value.strerror
        answers = iter([([1, 2], True), ([1, 3], True), ([3, 1], True), ([9], True)])
        assert sock._settled(lambda: next(answers), frozenset, "list links") == [3, 1]
        answers = iter([([1], True), ([2], False)])
        assert sock._settled(lambda: next(answers), frozenset, "list links") == [2]


class _churning:
    """Veth pairs added and removed in the namespace of `pid` by `ip -batch`, until the end."""

    def __init__(self, pid: int, pairs: int) -> None:
        self.pid, self.pairs = pid, pairs
        self.stop = threading.Event()

    def __enter__(self) -> _churning:
        self.ip = subprocess.Popen(["nsenter", "-t", str(self.pid), "-n", "ip", "-force", "-batch", "-"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        assert self.ip.stdin is not None
        group = 0
        try:
            while not self.stop.is_set():
                group += 1
                self.ip.stdin.write("".join(f"link add c{group}x{i} group {group} type veth peer name "
                                            f"c{group}y{i} group {group}\n" for i in range(self.pairs // 4)))
                if group > 4:
                    self.ip.stdin.write(f"link delete group {group - 4}\n")
                self.ip.stdin.flush()
        except OSError:
            pass

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        if self.ip.stdin is not None:
            self.ip.stdin.close()
        self.ip.wait(timeout=30)
