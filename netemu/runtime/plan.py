"""Settling what the file leaves to `up`: the lab's default NAT bridge (`network: bridge`) and
`auto` addresses on point-to-point links, both taken from machine-wide pools."""

from __future__ import annotations

import copy
import ipaddress
import math

from netemu.errors import InputError
from netemu.runtime import pools
from netemu.topology.model import Endpoint, Link, Network, Node, Route, Topology

DEFAULT_BRIDGE = "bridge"  # the network `network: bridge` nodes join, as docker0 is Docker's "bridge"
P2P_PREFIX = 30


def expand(topo: Topology) -> Topology:
    """A copy of `topo` with every pool-dependent choice made; claims are recorded for the lab."""
    topo = copy.deepcopy(topo)
    avoid = _explicit_networks(topo)
    _add_default_bridge(topo, avoid)
    _address_p2p_links(topo, avoid)
    return topo


def _explicit_networks(topo: Topology) -> list[pools.Net]:
    nets: list[pools.Net] = [s for net in topo.networks.values() for s in net.subnets]
    nets += [a.network for link in topo.links for addrs in link.addresses for a in addrs]
    return nets


def _add_default_bridge(topo: Topology, avoid: list[pools.Net]) -> None:
    members = [n for n in topo.nodes.values() if n.network == "bridge"]
    if not members:
        return
    if DEFAULT_BRIDGE in topo.networks:
        raise InputError(f"{topo.where(None)}: networks.{DEFAULT_BRIDGE}: the name is reserved for the default bridge "
                         "of `network: bridge` nodes")
    subnet = pools.claim(topo.name, pools.BRIDGE_POOL, 24, 1, avoid)[0]
    hosts = subnet.hosts()
    gateway = ipaddress.ip_interface(f"{next(hosts)}/{subnet.prefixlen}")
    topo.networks[DEFAULT_BRIDGE] = Network(name=DEFAULT_BRIDGE, subnets=[subnet], gateways=[gateway], nat=True)
    for node in members:
        address = ipaddress.ip_interface(f"{next(hosts)}/{subnet.prefixlen}")
        iface = _free_iface(topo, node)
        topo.links.append(Link(endpoints=(Endpoint(node=node.name, iface=iface), Endpoint(network=DEFAULT_BRIDGE)),
                               addresses=([address], []), line=node.line))
        if not any(r.dst == "default" and not r.is_ipv6 for r in node.routes):
            node.routes.append(Route(dst="default", via=gateway.ip))


def _free_iface(topo: Topology, node: Node) -> str:
    """eth0, as Docker names the bridge's interface, unless the file already uses it."""
    used = {ep.iface for link in topo.links for ep in link.endpoints if ep.node == node.name}
    return next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)


def _address_p2p_links(topo: Topology, avoid: list[pools.Net]) -> None:
    links = [link for link in topo.links if link.auto_p2p]
    if not links:
        return
    per_link = 2 ** (32 - P2P_PREFIX)
    block_prefix = min(24, 32 - math.ceil(math.log2(per_link * len(links))))
    block = pools.claim(topo.name, pools.P2P_POOL, block_prefix, 1, avoid)[0]
    for link, subnet in zip(links, block.subnets(new_prefix=P2P_PREFIX), strict=False):
        a, b = (ipaddress.ip_interface(f"{ip}/{P2P_PREFIX}") for ip in subnet.hosts())
        link.addresses = ([a], [b])
