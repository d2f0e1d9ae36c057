"""A generated lab of realistic shape for pictures and completion tests: SITES routers in a ring
of point-to-point links, each router the gateway of its own LAN bridge with HOSTS hosts."""

from __future__ import annotations


def campus(name: str, sites: int = 5, hosts: int = 9) -> dict:
    """`sites * (hosts + 1)` nodes (50 by default), `sites` networks, `sites * (hosts + 2)` links."""
    nodes: dict[str, dict] = {}
    networks: dict[str, dict] = {}
    links: list[dict] = []
    for s in range(1, sites + 1):
        router, lan = f"r{s}", f"lan{s}"
        nodes[router] = {"sysctls": {"net.ipv4.ip_forward": 1}}
        networks[lan] = {"subnet": f"10.{s}.0.0/24"}
        links.append({"endpoints": [f"{router}:eth0", lan], "addresses": [f"10.{s}.0.1/24"]})
        for h in range(1, hosts + 1):
            host = f"s{s}h{h}"
            nodes[host] = {"routes": [{"dst": "default", "via": f"10.{s}.0.1"}]}
            links.append({"endpoints": [f"{host}:eth0", lan], "addresses": [f"10.{s}.0.{h + 10}/24"]})
    for s in range(1, sites + 1):
        peer = s % sites + 1
        links.append({"endpoints": [f"r{s}:eth1", f"r{peer}:eth2"],
                      "addresses": [f"10.255.{s}.1/30", f"10.255.{s}.2/30"]})
    return {"name": name, "nodes": nodes, "networks": networks, "links": links}
