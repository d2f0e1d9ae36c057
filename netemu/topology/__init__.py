"""The topology file and its validated model (pure: no kernel access)."""

from netemu.topology.loader import load_topology, load_topology_text
from netemu.topology.model import Topology

__all__ = ["Topology", "load_topology", "load_topology_text"]
