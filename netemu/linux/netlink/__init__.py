"""Netlink (rtnetlink) for all of netemu: one socket type, `Socket`, bound to one network
namespace (the machine's, or a host's), and `Batch`, the requests queued on it and sent
together. Building and removing a lab, changing a running one (links up and down, uplinks,
macvlans), `inspect` and the probes' route lookups all go through them.

- constants.py: the kernel's numbers, each once;
- messages.py: hand encoders and decoders of every message kind netemu sends or reads
  (pyroute2 would cost about a millisecond of Python per request; tests/unit/test_netlink.py
  checks each kind against pyroute2's decoder, which netemu itself never imports);
- socket.py: the socket, its batches, lookups by name and the dumps that settle.

Every object netemu creates in the machine's namespace carries an interface alias starting
with ALIAS_PREFIX: that tag, not the name alone, is what `clean` trusts."""

from netemu.linux.netlink.messages import Address, IPInterface, Link, NextHop, Route
from netemu.linux.netlink.socket import Batch, Indexes, RtnlError, Socket

ALIAS_PREFIX = "netemu:"

__all__ = ["ALIAS_PREFIX", "Address", "Batch", "IPInterface", "Indexes", "Link", "NextHop", "Route", "RtnlError",
           "Socket"]
