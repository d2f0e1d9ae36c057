"""Generated labs shared by the benchmark scripts (imported by name: bench/ is on sys.path when
a script here runs)."""

from __future__ import annotations

import ipaddress


def host_address(subnet: ipaddress.IPv4Network, i: int) -> str:
    """Host i (1-based): .1 is the gateway, so host 1 is .2, host 2 is .3, ..."""
    return f"{subnet.network_address + i + 1}/{subnet.prefixlen}"


def bridge_lab_yaml(name: str, n: int, subnet: ipaddress.IPv4Network) -> str:
    """N hosts h1..hN on one bridge `lan` whose gateway is the subnet's first address."""
    lines = [f"name: {name}", "nodes:"]
    lines += [f"  h{i}: {{}}" for i in range(1, n + 1)]
    lines += ["networks:", f"  lan: {{subnet: {subnet}, gateway: {subnet.network_address + 1}}}", "links:"]
    for i in range(1, n + 1):
        lines += [f"  - endpoints: [h{i}:eth0, lan]", f"    addresses: [{host_address(subnet, i)}]"]
    return "\n".join(lines) + "\n"


def tree_lab_yaml(name: str, hosts: int, branches: int = 10) -> str:
    """About `hosts` nodes as a two-level tree: a core router c0, `branches` distribution routers
    d1..dB on point-to-point links to it, each with a bridge LAN of end hosts behind it. Static
    routes: hosts default via their router, routers default via the core, the core one route per
    LAN."""
    per_lan = max(1, -(-(hosts - 1 - branches) // branches))
    lines = [f"name: {name}", "nodes:", "  c0:", "    sysctls: {net.ipv4.ip_forward: 1}", "    routes:"]
    lines += [f"      - {{dst: 10.100.{b}.0/24, via: 10.201.{b}.2}}" for b in range(1, branches + 1)]
    for b in range(1, branches + 1):
        lines += [f"  d{b}:", "    sysctls: {net.ipv4.ip_forward: 1}",
                  f"    routes: [{{dst: default, via: 10.201.{b}.1}}]"]
        lines += [f"  h{b}-{i}: {{routes: [{{dst: default, via: 10.100.{b}.1}}]}}" for i in range(1, per_lan + 1)]
    lines.append("networks:")
    lines += [f"  lan{b}: {{subnet: 10.100.{b}.0/24}}" for b in range(1, branches + 1)]
    lines.append("links:")
    for b in range(1, branches + 1):
        lines += [f"  - endpoints: [c0:eth{b}, d{b}:eth0]",
                  f"    addresses: [10.201.{b}.1/30, 10.201.{b}.2/30]",
                  f"  - endpoints: [d{b}:eth1, lan{b}]", f"    addresses: [10.100.{b}.1/24]"]
        lines += [f"  - endpoints: [h{b}-{i}:eth0, lan{b}]\n    addresses: [10.100.{b}.{i + 1}/24]"
                  for i in range(1, per_lan + 1)]
    return "\n".join(lines) + "\n"


def chain_lab_yaml(name: str, routers: int) -> str:
    """r1 - r2 - ... - rN on point-to-point /30 links (10.150.0.0/16); each router routes the first
    link's subnet to its left neighbour and the last link's subnet to its right one, so r1 and rN
    reach each other end to end."""
    def subnet(i: int) -> ipaddress.IPv4Network:  # link i joins r(i+1) and r(i+2), 0-based
        return ipaddress.ip_network((int(ipaddress.ip_address("10.150.0.0")) + 4 * i, 30))

    last = routers - 2
    lines = [f"name: {name}", "nodes:"]
    for r in range(1, routers + 1):
        routes = []
        if r >= 3:  # the first link is not its own: back through the left neighbour
            routes.append(f"{{dst: {subnet(0)}, via: {subnet(r - 2).network_address + 1}}}")
        if r <= routers - 2:  # the last link is not its own: on through the right neighbour
            routes.append(f"{{dst: {subnet(last)}, via: {subnet(r - 1).network_address + 2}}}")
        # A path of 99 routers is longer than the default TTL of 64.
        sysctls = "{net.ipv4.ip_forward: 1, net.ipv4.ip_default_ttl: 255}"
        lines.append(f"  r{r}: {{sysctls: {sysctls}, routes: [{', '.join(routes)}]}}")
    lines.append("links:")
    for i in range(routers - 1):
        net = subnet(i)
        lines += [f"  - endpoints: [r{i + 1}:eth1, r{i + 2}:eth0]",
                  f"    addresses: [{net.network_address + 1}/30, {net.network_address + 2}/30]"]
    return "\n".join(lines) + "\n"
