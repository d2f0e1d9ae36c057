"""The settled topology as plain JSON values, and back (pure: no kernel, no files).

A running lab keeps its topology (pools applied) in this form, so that operations on it
(`node start`, `link up`) rebuild from exactly what `up` built. Versioned: a newer version is
refused, not guessed at; a renamed model field is a new version with its migration here."""

from __future__ import annotations

import ipaddress
from dataclasses import fields
from pathlib import Path
from typing import Any

from netemu.errors import LabError
from netemu.topology.model import (
    AnyCheck,
    Bind,
    Check,
    CommandCheck,
    Endpoint,
    Limits,
    Link,
    Network,
    Node,
    Route,
    RouteCheck,
    Topology,
)

VERSION = 1
Json = dict[str, Any]


class TopologyFormatError(LabError):
    """A saved topology this netemu cannot read."""


def topology_to_dict(topo: Topology) -> Json:
    return {
        "version": VERSION, "name": topo.name, "path": str(topo.path) if topo.path is not None else None,
        "nodes": {name: _node_to(node) for name, node in topo.nodes.items()},
        "networks": {name: _network_to(net) for name, net in topo.networks.items()},
        "links": [_link_to(link) for link in topo.links],
        "checks": [_check_to(check) for check in topo.checks], "origin": topo.origin,
    }


def topology_from_dict(data: Json, source: str = "saved topology") -> Topology:
    version = data.get("version") if isinstance(data, dict) else None
    if version != VERSION:
        raise TopologyFormatError(f"{source}: topology format version {version!r} is not one this netemu "
                                  f"reads ({VERSION})")
    return Topology(
        name=data["name"], path=Path(data["path"]) if data.get("path") is not None else None,
        nodes={name: _node_from(node) for name, node in data["nodes"].items()},
        networks={name: _network_from(net) for name, net in data["networks"].items()},
        links=[_link_from(link) for link in data["links"]],
        checks=[_check_from(check) for check in data["checks"]], origin=data.get("origin"),
    )


# nodes ---------------------------------------------------------------------------------------
_NODE_PLAIN = ("name", "image", "hostname", "dns", "dns_search", "extra_hosts", "env", "network", "userns",
               "sysctls", "cmd", "exec", "ports", "privileged", "cap_add", "cap_drop", "devices", "read_only",
               "line")
# Added after version 1 was first written: a topology saved before them has none, and the
# node then had the namespaces these defaults give.
_NODE_ADDED = ("ipc", "pid", "idle", "entrypoint", "files", "wait_for", "labels", "systemctl")


def _node_to(node: Node) -> Json:
    data: Json = {key: _copy(getattr(node, key)) for key in (*_NODE_PLAIN, *_NODE_ADDED)}
    data["limits"] = {"cpus": node.limits.cpus, "memory": node.limits.memory, "pids": node.limits.pids}
    data["routes"] = [{"dst": r.dst, "via": str(r.via) if r.via is not None else None, "dev": r.dev}
                      for r in node.routes]
    data["binds"] = [{"source": b.source, "target": b.target, "readonly": b.readonly} for b in node.binds]
    return data


def _node_from(data: Json) -> Node:
    defaults = Node(name="")  # fresh: its lists and maps are its own
    node = Node(**{key: _copy(data[key]) for key in _NODE_PLAIN},
                **{key: _copy(data[key]) if key in data else getattr(defaults, key) for key in _NODE_ADDED})
    node.limits = Limits(**data["limits"])
    node.routes = [Route(dst=r["dst"], via=ipaddress.ip_address(r["via"]) if r["via"] is not None else None,
                         dev=r["dev"]) for r in data["routes"]]
    node.binds = [Bind(**b) for b in data["binds"]]
    return node


# networks and links --------------------------------------------------------------------------
def _network_to(net: Network) -> Json:
    return {"name": net.name, "subnets": [str(s) for s in net.subnets], "gateways": [str(g) for g in net.gateways],
            "nat": net.nat, "uplink": net.uplink, "mtu": net.mtu, "line": net.line, "driver": net.driver,
            "bridge": net.bridge}


def _network_from(data: Json) -> Network:
    return Network(name=data["name"], subnets=[ipaddress.ip_network(s) for s in data["subnets"]],
                   gateways=[ipaddress.ip_interface(g) for g in data["gateways"]], nat=data["nat"],
                   uplink=data["uplink"], mtu=data["mtu"], line=data["line"], driver=data["driver"],
                   bridge=data["bridge"])


def _link_to(link: Link) -> Json:
    return {"endpoints": [{"node": e.node, "iface": e.iface, "network": e.network} for e in link.endpoints],
            "addresses": [[str(a) for a in addrs] for addrs in link.addresses], "mtu": link.mtu,
            "impair": dict(link.impair) if link.impair is not None else None, "line": link.line,
            "auto_p2p": link.auto_p2p}


def _link_from(data: Json) -> Link:
    a, b = (Endpoint(**e) for e in data["endpoints"])
    first, second = ([ipaddress.ip_interface(x) for x in addrs] for addrs in data["addresses"])
    return Link(endpoints=(a, b), addresses=(first, second), mtu=data["mtu"],
                impair=dict(data["impair"]) if data["impair"] is not None else None, line=data["line"],
                auto_p2p=data["auto_p2p"])


# checks --------------------------------------------------------------------------------------
# A check's kind is its class; a probe check (the first kind) is saved without one.
_CHECK_KINDS: dict[str, type[AnyCheck]] = {"probe": Check, "route": RouteCheck, "command": CommandCheck}


def _check_to(check: AnyCheck) -> Json:
    data: Json = {f.name: _copy(getattr(check, f.name)) for f in fields(check)}
    kind = next(name for name, cls in _CHECK_KINDS.items() if isinstance(check, cls))
    if kind != "probe":
        data["kind"] = kind
    return data


def _check_from(data: Json) -> AnyCheck:
    cls = _CHECK_KINDS[data.get("kind", "probe")]
    return cls(**{f.name: _copy(data[f.name]) for f in fields(cls) if f.name in data})


def _copy(value: Any) -> Any:
    """A JSON-able copy of a plain field (lists, dicts of strings, scalars): never shared."""
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value
