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
