"""Network links, addresses and routes through netlink (pyroute2), one socket per namespace:
what a running lab changes (links up and down, uplinks, macvlans) and what `inspect` reads.
Building and removing a lab goes through the batched netemu.linux.rtnl instead.

Links are changed by name (a lookup by name, never a dump). The whole-namespace reads (links,
addresses, routes) are for a host's namespace, which only netemu and the host change: the
machine's namespace, where other tools add and remove links at any time, is read through
rtnl's lookups by name and its settling dumps.

Every object netemu creates in the machine's namespace carries an interface alias starting
with ALIAS_PREFIX: that tag, not the name alone, is what `clean` trusts."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netemu.linux import namespaces

if TYPE_CHECKING:
    from pyroute2 import IPRoute

ALIAS_PREFIX = "netemu:"
IFA_F_NODAD = 0x02
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


def _state(flags: int) -> str:
    """"up" when the link is up and has carrier, else "down". From the flags, which change at
    once, not the operational state, which the kernel settles up to a second later: a link shown
    just after `up` must not read "down"."""
    return "up" if flags & IFF_UP and flags & IFF_LOWER_UP else "down"


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    alias: str
    kind: str
    state: str
    mtu: int
    master: int | None
    admin_up: bool = False  # set up, carrier or not (`ip link set ... up`)


class Netlink:
    """A netlink socket bound to one network namespace (the machine's, or a host's)."""

    def __init__(self, pid: int | None = None) -> None:
        # pyroute2 takes a tenth of a second to import: only the commands that need it pay.
        from pyroute2 import IPRoute

        self.ipr: IPRoute
        if pid is None:
            self.ipr = IPRoute()
        else:
            with namespaces.entered(pid, ("net",)):
                self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # links -------------------------------------------------------------------------------
    def index(self, name: str) -> int:
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            raise LookupError(f"no interface {name}")
        return int(found[0])

    def add_macvlan(self, name: str, parent: str, ns_pid: int, mtu: int | None = None) -> None:
        """A macvlan (bridge mode) on `parent`, created straight inside the namespace of ns_pid."""
        fd = os.open(f"/proc/{ns_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            spec: dict[str, object] = {"ifname": name, "kind": "macvlan", "link": self.index(parent),
                                       "macvlan_mode": "bridge", "net_ns_fd": fd}
            if mtu:
                spec["mtu"] = mtu
            self.ipr.link("add", **spec)
        finally:
            os.close(fd)

    def set_link(self, name: str, **attrs: object) -> None:
        self.ipr.link("set", index=self.index(name), **attrs)

    def up(self, name: str) -> None:
        self.set_link(name, state="up")

    def enslave(self, name: str, bridge: str) -> None:
        self.set_link(name, master=self.index(bridge))

    def links(self) -> list[LinkInfo]:
        result = []
        for msg in self.ipr.get_links():
            info = msg.get("IFLA_LINKINFO")
            result.append(LinkInfo(
                index=msg["index"],
                name=msg.get("IFLA_IFNAME"),
                alias=msg.get("IFLA_IFALIAS") or "",
                kind=(info.get("IFLA_INFO_KIND") if info else "") or "",
                state=_state(msg["flags"]),
                mtu=msg.get("IFLA_MTU") or 0,
                master=msg.get("IFLA_MASTER"),
                admin_up=bool(msg["flags"] & IFF_UP),
            ))
        return result

    # addresses and routes ----------------------------------------------------------------
    def add_address(self, name: str, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        extra: dict[str, object] = {}
        if iface.version == 6:
            # No duplicate address detection: the first probe after `up` must not wait for it.
            extra["flags"] = IFA_F_NODAD
        self.ipr.addr("add", index=self.index(name), address=str(iface.ip),
                      prefixlen=iface.network.prefixlen, **extra)

    def addresses(self) -> dict[str, list[str]]:
        names = {link.index: link.name for link in self.links()}
        found: dict[str, list[str]] = {}
        for msg in self.ipr.get_addr():
            name = names.get(msg["index"], str(msg["index"]))
            found.setdefault(name, []).append(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
        return found

    def add_route(self, dst: str, via: str | None, dev: str | None, exist_ok: bool = False) -> None:
        spec: dict[str, object] = {}
        if dst == "default":
            family = 6 if via and ":" in via else 4
            spec["dst"] = "::/0" if family == 6 else "0.0.0.0/0"
        else:
            spec["dst"] = dst
        if via:
            spec["gateway"] = via
        if dev:
            spec["oif"] = self.index(dev)
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            self.ipr.route("add", **spec)
        except NetlinkError as e:
            if not (exist_ok and e.code == 17):  # EEXIST
                raise

    def routes(self) -> list[dict[str, object]]:
        names = {link.index: link.name for link in self.links()}
        result = []
        for family in (2, 10):
            for msg in self.ipr.get_routes(family=family, table=254):
                dst = msg.get("RTA_DST")
                result.append({
                    "dst": f"{dst}/{msg['dst_len']}" if dst else "default",
                    "via": msg.get("RTA_GATEWAY"),
                    "dev": names.get(msg.get("RTA_OIF")),
                })
        return result
