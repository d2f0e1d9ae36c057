"""The topology file and its validated model (pure: no kernel access).

Besides loading, this is what the rest of netemu reuses of the file format, so that nothing
outside the package reaches into its private modules: the value parsers the CLI applies to its
options (flags and file keys accept the same text), the name rule that kernel object names rely
on, and the located YAML tree and check parser that read a checks file (checks without a
topology, validated against a running lab)."""

from netemu.topology._tree import Invalid, Item
from netemu.topology._tree import parse as parse_tree
from netemu.topology._values import NAME_RE
from netemu.topology._values import duration as parse_duration
from netemu.topology._values import impair as check_impairment
from netemu.topology._values import name as check_name
from netemu.topology.loader import LAB_NAME_MAX, load_topology, load_topology_text, parse_checks
from netemu.topology.model import Topology

__all__ = [
    "LAB_NAME_MAX",
    "NAME_RE",
    "Invalid",
    "Item",
    "Topology",
    "check_impairment",
    "check_name",
    "load_topology",
    "load_topology_text",
    "parse_checks",
    "parse_duration",
    "parse_tree",
]
