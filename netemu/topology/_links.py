"""Links: endpoints, interface uniqueness and addresses.

Addresses are settled in two passes so that `auto` is deterministic and never collides: first every
explicit address in the file (and every network gateway) is validated and claimed, then each `auto`
takes, in file order, the next host address of its network's subnet that nobody claimed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import partial

from netemu.topology import _values as values
from netemu.topology._tree import Item
from netemu.topology.model import Endpoint, IPAddress, IPInterface, IPNetwork, Link, Network, Node

LINK_KEYS = ("endpoints", "addresses", "mtu", "impair")
P2P_AUTO = "auto on a point-to-point link must be on both ends (a fresh /30 from the lab pool)"
IPV6_MIN_MTU = 1280


@dataclass
class _Draft:
    """A link whose endpoints are known and whose addresses are being settled."""

    item: Item
    endpoints: tuple[Endpoint, Endpoint]
    entries: list[Item | None]  # the address entry of each endpoint, None when absent
    addresses: tuple[list[IPInterface], list[IPInterface]] = field(default_factory=lambda: ([], []))
    mtu: int | None = None
    impair: dict[str, str] | None = None

    def network_of(self, index: int, networks: dict[str, Network]) -> Network | None:
        """The network the endpoint at `index` is attached to (through the other end)."""
        other = self.endpoints[1 - index]
        return networks[other.network] if other.network is not None else None


def parse_links(item: Item | None, nodes: dict[str, Node], networks: dict[str, Network]) -> list[Link]:
    if item is None or item.value is None:
        return []
    used: dict[tuple[str, str], int] = {}
    drafts = [_draft(entry, nodes, networks, used) for entry in item.items()]
    claims = _Claims(networks)
    for draft in drafts:
        _explicit_addresses(draft, networks, claims)
    for draft in drafts:
        _auto_addresses(draft, networks, claims)
    return [_finish(draft) for draft in drafts]


def _suggest(name: str, choices: dict) -> str:
    close = get_close_matches(name, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _draft(item: Item, nodes: dict[str, Node], networks: dict[str, Network], used: dict) -> _Draft:
    fields = item.mapping(LINK_KEYS, required=("endpoints",))
    listed = fields["endpoints"].items()
    if len(listed) != 2:
        fields["endpoints"].fail(f"a link has exactly 2 endpoints, got {len(listed)}")
    first = _endpoint(listed[0], nodes, networks, used)
    if listed[1].text() == listed[0].text() and not first.is_network:
        listed[1].fail(f"a link cannot connect {first} to itself (use two interfaces)")
    second = _endpoint(listed[1], nodes, networks, used)
    if first.is_network and second.is_network:
        listed[1].fail(f"a link cannot join two networks ({first}, {second}); connect them through a node")
    draft = _Draft(item, (first, second), _entries(fields.get("addresses"), (first, second)))
    if fields.get("mtu") is not None:
        draft.mtu = fields["mtu"].integer(68, 65535)
    if fields.get("impair") is not None:
        draft.impair = _impair(fields["impair"])
    return draft


def _endpoint(item: Item, nodes: dict[str, Node], networks: dict[str, Network], used: dict) -> Endpoint:
    text = item.text()
    if ":" not in text:
        if text in networks:
            return Endpoint(network=text)
        if text in nodes:
            item.fail(f"'{text}' is a node: write '{text}:IFACE'")
        item.fail(f"unknown network '{text}'{_suggest(text, networks)}")
    node, _, iface = text.partition(":")
    if node not in nodes:
        item.fail(f"unknown node '{node}'{_suggest(node, nodes)}")
    item.convert(lambda _: values.iface(iface))
    mode = nodes[node].network
    if mode == "host" or mode.startswith("container:"):
        item.fail(f"node '{node}' has network: {mode}, so it cannot have links of its own")
    if (node, iface) in used:
        item.fail(f"interface {node}:{iface} already used at line {used[node, iface]}")
    used[node, iface] = item.line
    return Endpoint(node=node, iface=iface)


def _entries(item: Item | None, endpoints: tuple[Endpoint, Endpoint]) -> list[Item | None]:
    """One optional entry per endpoint, by position; null and [] mean no address."""
    if item is None or item.value is None:
        return [None, None]
    listed = item.items()
    if len(listed) > 2:
        listed[2].fail(f"expected at most one address entry per endpoint, got {len(listed)}")
    entries = [entry if entry.value is not None and entry.value != [] else None for entry in listed]
    entries += [None] * (2 - len(entries))
    for endpoint, entry in zip(endpoints, entries, strict=True):
        if endpoint.is_network and entry is not None:
            entry.fail(f"the network end '{endpoint}' takes no address (a bridge's own is its 'gateway')")
    return entries


def _impair(item: Item) -> dict[str, str] | None:
    listed = item.mapping(values.IMPAIR_KEYS)
    fields = {key: child for key, child in listed.items() if child.value is not None}
    impair = {key: child.convert(partial(values.impair, key)) for key, child in fields.items()}
    if "jitter" in impair and "delay" not in impair:
        fields["jitter"].fail("jitter needs a delay")
    return impair or None


def _is_auto(item: Item) -> bool:
    return isinstance(item.value, str) and item.value == "auto"


class _Claims:
    """Every address in use (explicit, gateway, then auto), with who uses it, for collision errors."""

    def __init__(self, networks: dict[str, Network]) -> None:
        self.owners: dict[IPAddress, str] = {}
        self.cursors: dict[IPNetwork, Iterator[IPAddress]] = {}
        for net in networks.values():
            for gateway in net.gateways:
                self.owners[gateway.ip] = f"the gateway of network '{net.name}' (line {net.line})"

    def claim(self, item: Item, address: IPInterface, owner: str) -> None:
        if address.ip in self.owners:
            item.fail(f"address {address.ip} is already used by {self.owners[address.ip]}")
        self.owners[address.ip] = f"{owner} (line {item.line})"

    def next_free(self, subnet: IPNetwork) -> IPAddress | None:
        # one cursor per subnet: auto addresses are handed out in order, never twice
        cursor = self.cursors.setdefault(subnet, iter(subnet.hosts()))
        return next((ip for ip in cursor if ip not in self.owners), None)


def _explicit_addresses(draft: _Draft, networks: dict[str, Network], claims: _Claims) -> None:
    for index, entry in enumerate(draft.entries):
        if entry is None:
            continue
        if _is_auto(entry):
            # Point-to-point auto: both ends, filled at `up` from a pool shared by all labs.
            other = draft.entries[1 - index]
            if draft.network_of(index, networks) is None and (other is None or not _is_auto(other)):
                entry.fail(P2P_AUTO)
            continue
        network = draft.network_of(index, networks)
        for sub in entry.items() if isinstance(entry.value, list) else [entry]:
            if _is_auto(sub):
                sub.fail("'auto' must be the whole entry, not part of a list")
            address = sub.convert(partial(_parse_address, network))
            _check_in_network(sub, address, network)
            claims.claim(sub, address, str(draft.endpoints[index]))
            draft.addresses[index].append(address)


def _subnet_for(network: Network | None, version: int) -> IPNetwork | None:
    if network is None:
        return None
    return next((subnet for subnet in network.subnets if subnet.version == version), None)


def _parse_address(network: Network | None, text: str) -> IPInterface:
    return values.ip_interface(text, _default_prefix(text, network))


def _default_prefix(text: str, network: Network | None) -> int | None:
    """On a network, an address without /PREFIX takes the prefix of the network's subnet."""
    try:
        subnet = _subnet_for(network, ipaddress.ip_address(text).version)
    except ValueError:
        return None
    return subnet.prefixlen if subnet is not None else None


def _check_in_network(item: Item, address: IPInterface, network: Network | None) -> None:
    # a network without a subnet of this family is plain layer 2: any address may ride on it
    subnet = _subnet_for(network, address.version)
    if network is None or subnet is None:
        return
    if address.ip not in subnet:
        item.fail(f"address {address} is outside subnet {subnet} of network '{network.name}'")
    if address.network != subnet:
        prefix = address.network.prefixlen
        item.fail(f"address {address} has prefix /{prefix} but network '{network.name}' is {subnet}")


def _auto_addresses(draft: _Draft, networks: dict[str, Network], claims: _Claims) -> None:
    for index, entry in enumerate(draft.entries):
        if entry is None or not _is_auto(entry):
            continue
        network = draft.network_of(index, networks)
        if network is None:
            continue  # point-to-point: settled at `up` (Link.auto_p2p)
        if not network.subnets:
            entry.fail(f"network '{network.name}' has no subnet to take an auto address from")
        for subnet in network.subnets:
            ip = claims.next_free(subnet)
            if ip is None:
                entry.fail(f"no free address left in subnet {subnet} of network '{network.name}'")
            address = ipaddress.ip_interface(f"{ip}/{subnet.prefixlen}")
            claims.claim(entry, address, str(draft.endpoints[index]))
            draft.addresses[index].append(address)


def _finish(draft: _Draft) -> Link:
    has_v6 = any(address.version == 6 for addresses in draft.addresses for address in addresses)
    if draft.mtu is not None and draft.mtu < IPV6_MIN_MTU and has_v6:
        draft.item.value["mtu"].fail(f"mtu {draft.mtu} is below {IPV6_MIN_MTU}, the IPv6 minimum")
    auto_p2p = not any(ep.is_network for ep in draft.endpoints) and all(
        entry is not None and _is_auto(entry) for entry in draft.entries)
    return Link(
        endpoints=draft.endpoints,
        addresses=draft.addresses,
        mtu=draft.mtu,
        impair=draft.impair,
        line=draft.item.line,
        auto_p2p=auto_p2p,
    )
