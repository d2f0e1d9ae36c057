"""Bridging an interface of the machine into a lab network (Docker's "bridge the physical
NIC"), and giving it back, with its addresses and state, when the lab goes.

What the interface looked like is written to the lab's state *before* it is enslaved, so a
`down` after a crash gives it back too."""

from __future__ import annotations

import ipaddress

from netemu.errors import InputError
from netemu.linux import netlink
from netemu.runtime.records import UplinkRecord
from netemu.topology.model import Network, Topology


def check_machine_networks(topo: Topology) -> None:
    """What the file asks of the machine's interfaces, checked before `up` creates anything:
    the bridges `bridge:` joins exist and are bridges, and no `uplink:` names a bridge. Looked
    up by name, so links that other software adds and removes meanwhile do not matter."""
    with netlink.Socket() as sock:
        for net in topo.networks.values():
            if net.bridge is not None:
                machine_bridge(topo, net, sock)
            uplink = sock.link(net.uplink) if net.uplink is not None else None
            if uplink is not None and uplink.kind == "bridge":
                raise InputError(f"{topo.where(net.line)}: networks.{net.name}.uplink: {net.uplink} is a bridge, "
                                 "which cannot be a port of another bridge; to put the network's hosts on it, "
                                 f"use `bridge: {net.uplink}` instead of `uplink:`")


def machine_bridge(topo: Topology, net: Network, sock: netlink.Socket) -> str:
    """The machine's bridge a `bridge:` network joins; InputError when it has none of that name."""
    name = net.bridge or ""
    where = f"{topo.where(net.line)}: networks.{net.name}.bridge"
    link = sock.link(name)
    if link is None:
        raise InputError(f"{where}: the machine has no interface '{name}' "
                         f"(make the bridge first: ip link add {name} type bridge)")
    if link.kind != "bridge":
        raise InputError(f"{where}: {name} is not a bridge")
    return name


def describe(iface: str, network: str) -> UplinkRecord:
    """What to restore later; refuses an interface that is missing, already enslaved, or that
    carries the machine's default route (taking it would cut the machine off). Read by name and
    by the link's index: the machine may have many links, changing all the time."""
    with netlink.Socket() as sock:
        link = sock.link(iface)
        if link is None:
            raise InputError(f"networks.{network}.uplink: the machine has no interface '{iface}'")
        if link.master:
            raise InputError(f"networks.{network}.uplink: {iface} is already enslaved to another bridge")
        if any(route.dst.prefixlen == 0 and route.oif == link.index for route in sock.routes()):
            raise InputError(f"networks.{network}.uplink: {iface} carries the machine's default route; "
                             "netemu will not take it")
        addresses = [str(address.interface) for address in sock.addresses(link.index)]
    return UplinkRecord(iface=iface, addresses=addresses, up=link.up, mtu=link.mtu)


def attach(sock: netlink.Socket, saved: UplinkRecord, bridge: str) -> None:
    """Enslave the interface to the lab's bridge and set it up (`sock`: the machine's)."""
    iface = saved.iface
    with sock.batch() as batch:
        batch.set_link(sock.index(iface), iface, master=sock.index(bridge), up=True)


def give_back(sock: netlink.Socket, saved: UplinkRecord) -> None:
    """Release the interface from any bridge and put back its addresses, MTU and state."""
    iface = saved.iface
    link = sock.link(iface)
    if link is None:
        return  # gone from the machine meanwhile: nothing to give back
    with sock.batch() as batch:
        batch.set_link(link.index, iface, master=0, mtu=saved.mtu)
    present = {str(address.interface) for address in sock.addresses(link.index)}
    with sock.batch() as batch:
        for address in saved.addresses:
            if address not in present and not address.startswith("fe80"):
                batch.add_address(link.index, ipaddress.ip_interface(address), iface)
        batch.set_link(link.index, iface, up=saved.up)
