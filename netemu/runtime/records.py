"""The typed, versioned records of a lab and its nodes: what /run/netemu/LAB/state.json holds.

Everything that reads or writes a lab's run-time state goes through these dataclasses;
`to_json()` gives the wire form (plain JSON values, a top-level "version"), small enough for
another machine or a Kubernetes object to carry, and `LabRecord.from_json()` reads it back.

Versions: 1 is the format before records existed (no "version" key), read and migrated; 2 is
this one. A newer version is refused, naming the file: an older netemu must not guess at it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netemu.errors import MachineError
from netemu.linux import procs

VERSION = 2
Json = dict[str, Any]


class RecordError(MachineError):
    """A state file that this netemu cannot read (a newer version, or not a lab record)."""


@dataclass
class LimitsRecord:
    cpus: float | None = None
    memory: int | None = None
    pids: int | None = None

    def to_json(self) -> Json:
        return {"cpus": self.cpus, "memory": self.memory, "pids": self.pids}

    @classmethod
    def from_json(cls, data: Json) -> LimitsRecord:
        return cls(cpus=data.get("cpus"), memory=data.get("memory"), pids=data.get("pids"))


@dataclass
class ConfinementRecord:
    """What `netemu exec` needs to confine a program as the host's own: caps and seccomp in hex."""

    privileged: bool = False
    caps: str = "0"
    seccomp: str | None = None
    landlock: bool = False  # a Landlock domain of the host's own (it sees the machine's PIDs)

    def to_json(self) -> Json:
        data: Json = {"privileged": self.privileged, "caps": self.caps, "seccomp": self.seccomp}
        if self.landlock:
            data["landlock"] = True
        return data

    @classmethod
    def from_json(cls, data: Json) -> ConfinementRecord:
        return cls(privileged=bool(data.get("privileged")), caps=str(data.get("caps", "0")),
                   seccomp=data.get("seccomp"), landlock=bool(data.get("landlock")))


@dataclass
class NodeExtra:
    """What a host was started with, kept for `exec`, `inspect` and the image store."""

    env: dict[str, str] = field(default_factory=dict)
    image: str = ""
    network: str = "none"
    hostname: str = ""
    limits: LimitsRecord = field(default_factory=LimitsRecord)
    confinement: ConfinementRecord | None = None  # None: a lab made before confinement
    userns: str | None = None  # "base:count", netemu-init's --userns
    ipc: str = "shareable"  # the node's `ipc:` (container:<node>: it depends on that node)
    pid: str = "private"  # the node's `pid:`
    labels: dict[str, str] = field(default_factory=dict)  # the node's `labels:`, free-form, shown by inspect

    def to_json(self) -> Json:
        data: Json = {"env": dict(self.env), "image": self.image, "network": self.network,
                      "hostname": self.hostname, "limits": self.limits.to_json()}
        if self.confinement is not None:
            data["confinement"] = self.confinement.to_json()
        if self.userns is not None:
            data["userns"] = self.userns
        # Written only when not the default, so a record of a node that shares nothing stays as it was.
        for key, default in (("ipc", "shareable"), ("pid", "private")):
            if getattr(self, key) != default:
                data[key] = getattr(self, key)
        if self.labels:
            data["labels"] = dict(self.labels)
        return data

    @classmethod
    def from_json(cls, data: Json) -> NodeExtra:
        conf = data.get("confinement")
        return cls(env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
                   image=str(data.get("image", "")), network=str(data.get("network", "none")),
                   hostname=str(data.get("hostname", "")), limits=LimitsRecord.from_json(data.get("limits") or {}),
                   confinement=ConfinementRecord.from_json(conf) if isinstance(conf, dict) else None,
                   userns=data.get("userns"), ipc=str(data.get("ipc", "shareable")),
                   pid=str(data.get("pid", "private")),
                   labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()})


@dataclass
class NodeRecord:
    name: str
    pid: int | None
    start_time: int | None
    netns_pid: int | None  # whose network namespace the host uses (None: the machine's)
    cgroup: str
    layers: str
    console: str
    extra: NodeExtra = field(default_factory=NodeExtra)
    stopped: bool = False  # by `netemu node ... stop`

    @property
    def alive(self) -> bool:
        return procs.is_running(self.pid, self.start_time)

    @property
    def own_netns(self) -> bool:
        """The host has a network namespace of its own (not the machine's, not another host's)."""
        return self.netns_pid is not None and self.netns_pid == self.pid

    def to_json(self) -> Json:
        data: Json = {"name": self.name, "pid": self.pid, "start_time": self.start_time,
                      "netns_pid": self.netns_pid, "cgroup": self.cgroup, "layers": self.layers,
                      "console": self.console, "extra": self.extra.to_json()}
        if self.stopped:
            data["stopped"] = True
        return data

    @classmethod
    def from_json(cls, name: str, data: Json) -> NodeRecord:
        return cls(name=str(data.get("name", name)), pid=data.get("pid"), start_time=data.get("start_time"),
                   netns_pid=data.get("netns_pid"), cgroup=str(data.get("cgroup", "")),
                   layers=str(data.get("layers", "")), console=str(data.get("console", "")),
                   extra=NodeExtra.from_json(data.get("extra") or {}), stopped=bool(data.get("stopped")))


@dataclass
class NetworkRecord:
    bridge: str | None = None  # None for macvlan
    gateways: list[str] = field(default_factory=list)
    subnets: list[str] = field(default_factory=list)
    machine_bridge: bool = False  # an existing bridge of the machine, joined and never changed
    driver: str = "bridge"
    parent: str | None = None  # macvlan's uplink
    nat: bool = False  # masqueraded to the outside: the default bridge, a management network

    def to_json(self) -> Json:
        if self.driver == "macvlan":
            return {"driver": self.driver, "parent": self.parent}
        data: Json = {"bridge": self.bridge, "gateways": list(self.gateways), "subnets": list(self.subnets)}
        if self.machine_bridge:
            data["machine_bridge"] = True
        if self.nat:
            data["nat"] = True
        return data

    @classmethod
    def from_json(cls, data: Json) -> NetworkRecord:
        return cls(bridge=data.get("bridge"), gateways=[str(g) for g in data.get("gateways", [])],
                   subnets=[str(s) for s in data.get("subnets", [])],
                   machine_bridge=bool(data.get("machine_bridge")), driver=str(data.get("driver", "bridge")),
                   parent=data.get("parent"), nat=bool(data.get("nat")))


@dataclass
class LinkRecord:
    endpoints: list[str]  # "node:iface" or a network's name, as the file writes them
    addresses: list[list[str]] = field(default_factory=list)  # one list per endpoint
    mtu: int | None = None
    impair: dict[str, str] | None = None
    machine_side: str | None = None  # the veth end in the machine's namespace (bridge links)

    def has_node(self, node: str) -> bool:
        return any(end.startswith(f"{node}:") for end in self.endpoints)

    def to_json(self) -> Json:
        data: Json = {"endpoints": list(self.endpoints), "addresses": [list(a) for a in self.addresses],
                      "mtu": self.mtu, "impair": dict(self.impair) if self.impair else None}
        if self.machine_side is not None:
            data["machine_side"] = self.machine_side
        return data

    @classmethod
    def from_json(cls, data: Json) -> LinkRecord:
        impair = data.get("impair")
        return cls(endpoints=[str(e) for e in data.get("endpoints", [])],
                   addresses=[[str(a) for a in addrs] for addrs in data.get("addresses", [])],
                   mtu=data.get("mtu"), impair={str(k): str(v) for k, v in impair.items()} if impair else None,
                   machine_side=data.get("machine_side"))


@dataclass
class UplinkRecord:
    """A machine interface enslaved to a lab's bridge, and what to give back at `down`."""

    iface: str
    addresses: list[str] = field(default_factory=list)
    up: bool = True
    mtu: int | None = None

    def to_json(self) -> Json:
        return {"iface": self.iface, "addresses": list(self.addresses), "up": self.up, "mtu": self.mtu}

    @classmethod
    def from_json(cls, data: Json) -> UplinkRecord:
        return cls(iface=str(data["iface"]), addresses=[str(a) for a in data.get("addresses", [])],
                   up=bool(data.get("up", True)), mtu=data.get("mtu"))


@dataclass
class LabRecord:
    name: str
    status: str = "creating"  # creating | running | removing | failed
    file: str | None = None
    created: float | None = None
    owner_pid: int | None = None
    planned_links: list[str] = field(default_factory=list)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    networks: dict[str, NetworkRecord] = field(default_factory=dict)
    links: list[LinkRecord] = field(default_factory=list)
    uplinks: list[UplinkRecord] = field(default_factory=list)
    nftables: str | None = None
    error: str | None = None
    rollback_error: str | None = None

    def to_json(self) -> Json:
        data: Json = {
            "version": VERSION, "name": self.name, "status": self.status, "file": self.file,
            "created": self.created, "owner_pid": self.owner_pid, "planned_links": list(self.planned_links),
            "nodes": {name: node.to_json() for name, node in self.nodes.items()},
            "networks": {name: net.to_json() for name, net in self.networks.items()},
            "links": [link.to_json() for link in self.links],
        }
        optional = {"uplinks": [u.to_json() for u in self.uplinks] or None, "nftables": self.nftables,
                    "error": self.error, "rollback_error": self.rollback_error}
        data.update({key: value for key, value in optional.items() if value is not None})
        return data

    @classmethod
    def from_json(cls, data: Json, source: str = "lab record") -> LabRecord:
        """Read any version this netemu knows (migrating older ones); refuse a newer one."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise RecordError(f"{source}: not a netemu lab record")
        version = data.get("version", 1)
        if not isinstance(version, int) or version > VERSION or version < 1:
            raise RecordError(f"{source}: lab record version {version!r} is not one this netemu reads "
                              f"(it reads 1 to {VERSION}): a newer netemu wrote it")
        return cls._from_v2(_MIGRATIONS[version](data))

    @classmethod
    def _from_v2(cls, data: Json) -> LabRecord:
        return cls(
            name=data["name"], status=str(data.get("status", "creating")), file=data.get("file"),
            created=data.get("created"), owner_pid=data.get("owner_pid"),
            planned_links=[str(n) for n in data.get("planned_links", [])],
            nodes={str(n): NodeRecord.from_json(str(n), info) for n, info in (data.get("nodes") or {}).items()},
            networks={str(n): NetworkRecord.from_json(info) for n, info in (data.get("networks") or {}).items()},
            links=[LinkRecord.from_json(entry) for entry in data.get("links") or []],
            uplinks=[UplinkRecord.from_json(u) for u in data.get("uplinks") or []],
            nftables=data.get("nftables"), error=data.get("error"), rollback_error=data.get("rollback_error"),
        )

    def node(self, name: str) -> NodeRecord | None:
        return self.nodes.get(name)

    def alive_count(self) -> int:
        return sum(node.alive for node in self.nodes.values())


def _migrate_v1(data: Json) -> Json:
    """Version 1 (no "version" key) has the same keys; only the version is new."""
    return {**data, "version": 2}


_MIGRATIONS = {1: _migrate_v1, 2: lambda data: data}
