"""Importing scapy without paying for what netemu does not use.

When scapy is imported it lists the interfaces of the network namespace it is loaded in (over
netlink, one object per interface) and reads that namespace's IPv4 and IPv6 routing tables.
On a machine running labs, whose namespace holds hundreds of veth ends and bridges, that takes
about a second, longer than a whole 100-host reachability sweep. netemu never uses scapy's
routing or interface list (the hosts' kernels route what we send, see hostnet.py), so route
loading is turned off and the layers are imported from inside one lab host's namespace, which
has a handful of interfaces.

A consequence for code that also uses scapy in the same process: conf.route and conf.route6
start empty and conf.ifaces lists that host's interfaces. Call conf.ifaces.reload(),
conf.route.resync() and conf.route6.resync() before using scapy's own sending."""

from __future__ import annotations

import contextlib
import sys

from netemu.linux import namespaces
from netemu.runtime.records import LabRecord

LAYERS = ("scapy.layers.inet", "scapy.layers.inet6", "scapy.layers.l2")


def load(record: LabRecord | None = None) -> None:
    """Import scapy's layers once; from a lab host's namespace when `record` offers one."""
    if all(name in sys.modules for name in LAYERS):
        return
    import importlib

    import scapy.config

    scapy.config.conf.route_autoload = False
    scapy.config.conf.route6_autoload = False
    pid = _small_namespace(record)
    where = namespaces.entered(pid, ("net",)) if pid else contextlib.nullcontext()
    try:
        with where:
            for name in LAYERS:
                importlib.import_module(name)
    finally:
        scapy.config.conf.route_autoload = True
        scapy.config.conf.route6_autoload = True


def _small_namespace(record: LabRecord | None) -> int | None:
    for info in record.nodes.values() if record else []:
        if info.netns_pid and info.alive:
            return info.netns_pid
    return None
