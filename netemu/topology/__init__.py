"""The topology file and its validated model (pure: no kernel access)."""

from netemu.topology.loader import load_topology, load_topology_text
from netemu.topology.model import Topology

__all__ = ["Topology", "load_topology", "load_topology_text"]

# Value parsers the CLI reuses for its options, so flags and file keys accept the same text.
from netemu.topology._values import duration as parse_duration
from netemu.topology._values import impair as check_impairment

__all__ += ["check_impairment", "parse_duration"]
