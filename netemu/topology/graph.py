"""The topology as a graph, for pictures and path reasoning; no kernel knowledge."""

from __future__ import annotations

import networkx as nx

from netemu.topology.model import Topology


def build_graph(topo: Topology) -> nx.MultiGraph:
    """A vertex per host (kind="host") and per network (kind="network"), an edge per link.

    A MultiGraph because two hosts may be joined by several links; each edge is keyed by the
    link's index in the file and carries its interface names (None on a network side) and addresses.
    The loader refuses a network named like a node, so vertex names cannot collide.
    """
    graph = nx.MultiGraph(name=topo.name)
    for name, node in topo.nodes.items():
        graph.add_node(name, kind="host", node=node)
    for name, network in topo.networks.items():
        graph.add_node(name, kind="network", network=network)
    for index, link in enumerate(topo.links):
        a, b = (ep.network if ep.is_network else ep.node for ep in link.endpoints)
        graph.add_edge(
            a,
            b,
            key=index,
            ifaces=(link.endpoints[0].iface, link.endpoints[1].iface),
            addresses=link.addresses,
            link=link,
        )
    return graph
