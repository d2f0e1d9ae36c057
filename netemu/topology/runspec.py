"""`netemu run`: Docker's `docker run` options as a one-host topology.

Pure translation, no kernel: the options become the topology file a user would have written
(one node named after the lab), loaded by the same loader, so every value gets the file's
checks and an error names the option it came from (`--memory: invalid memory size '1x'`)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import yaml

from netemu.errors import InputError, TopologyError
from netemu.topology.loader import load_topology_text
from netemu.topology.model import OTHER_LAB, Topology

SOURCE = "<netemu run>"
# Docker's container names are [a-zA-Z0-9][a-zA-Z0-9_.-]*; a lab name is stricter, since it
# prefixes every kernel object: lower case, digits and '-', at most 12 characters.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,11}")
NETWORK_RE = re.compile(r"none|bridge|host|container:.+")

# A key of the generated file, and the option (or argument) that gave it.
OPTION_OF_KEY = {
    "name": "--name", "image": "IMAGE", "hostname": "--hostname", "dns": "--dns", "dns_search": "--dns-search",
    "extra_hosts": "--add-host", "env": "--env", "network": "--network", "limits.memory": "--memory",
    "limits.cpus": "--cpus", "limits.pids": "--pids-limit", "binds": "--volume", "ports": "--publish",
    "cap_add": "--cap-add", "cap_drop": "--cap-drop", "privileged": "--privileged", "cmd": "COMMAND",
}


@dataclass
class RunSpec:
    """What `netemu run` was given, as Docker names it."""

    image: str
    command: list[str] = field(default_factory=list)
    name: str | None = None
    network: str = "bridge"  # Docker's default
    hostname: str | None = None
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    add_hosts: list[str] = field(default_factory=list)  # NAME:ADDRESS
    env: list[str] = field(default_factory=list)  # KEY=VALUE, or KEY to pass the caller's value
    volumes: list[str] = field(default_factory=list)  # HOST:CONTAINER[:ro|rw]
    publish: list[str] = field(default_factory=list)  # HOST:CONTAINER[/proto]
    memory: str | None = None
    cpus: str | None = None
    pids_limit: int | None = None
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    remove: bool = False


def lab_name(spec: RunSpec) -> str:
    """--name, checked; else a fresh `run-` name, as Docker makes one up."""
    if spec.name is None:
        return f"run-{secrets.token_hex(3)}"
    if not NAME_RE.fullmatch(spec.name):
        raise InputError(f"--name {spec.name!r}: a netemu name is 1 to 12 of a-z, 0-9 and '-' (not '-' first), "
                         "since it names the lab's kernel objects")
    return spec.name


def topology(spec: RunSpec, name: str, environ: dict[str, str]) -> Topology:
    """The one-host lab `name` that `spec` describes. `environ` gives `-e KEY` its value.
    Without -d the host runs no main program: `netemu run` attaches it to the terminal."""
    _check_combinations(spec)
    node = _node(spec, environ)
    shared = spec.network.removeprefix("container:") if spec.network.startswith("container:") else None
    if shared is not None:
        node["network"] = "none"  # the file format shares within a lab only; set below
    text = yaml.safe_dump({"name": name, "nodes": {name: node}}, sort_keys=False)
    try:
        topo = load_topology_text(text, SOURCE)
    except TopologyError as e:
        raise InputError(f"netemu run: {_option(e.key, name)}: {e.reason}") from None
    topo.nodes[name].idle = not spec.detach
    if shared is not None:
        topo.nodes[name].network = OTHER_LAB + _other_node(shared)
    return topo


def _other_node(target: str) -> str:
    """container:NAME is the host of another `netemu run` (lab NAME, node NAME); LAB/NODE names
    a node of any running lab."""
    lab, sep, node = target.partition("/")
    if not lab or (sep and not node) or not NAME_RE.fullmatch(lab):
        raise InputError(f"--network container:{target}: expected container:NAME (another run's name) "
                         "or container:LAB/NODE")
    return f"{lab}/{node or lab}"


def _check_combinations(spec: RunSpec) -> None:
    if spec.remove and spec.detach:
        raise InputError("--rm with -d is not supported: netemu cannot watch a detached command; "
                         "remove the lab with `netemu down NAME`")
    if spec.tty and spec.detach:
        raise InputError("-t with -d is not supported: attach later with `netemu exec -it NAME NAME sh`")
    if not NETWORK_RE.fullmatch(spec.network):
        raise InputError(f"--network {spec.network!r}: expected none, bridge, host or container:NAME")
    if spec.network.startswith("container:") and spec.publish:
        raise InputError("--publish with --network container:NAME: the ports belong to NAME's network; "
                         "publish them there")


def _node(spec: RunSpec, environ: dict[str, str]) -> dict[str, Any]:
    node: dict[str, Any] = {"image": spec.image, "network": spec.network}
    optional: dict[str, Any] = {
        "hostname": spec.hostname, "dns": spec.dns or None, "dns_search": spec.dns_search or None,
        "extra_hosts": _hosts(spec.add_hosts) or None, "env": _env(spec.env, environ) or None,
        "binds": spec.volumes or None, "ports": spec.publish or None, "limits": _limits(spec) or None,
        "cap_add": spec.cap_add or None, "cap_drop": spec.cap_drop or None,
        "privileged": spec.privileged or None, "cmd": spec.command or None,
    }
    node.update({key: value for key, value in optional.items() if value is not None})
    return node


def _hosts(entries: list[str]) -> dict[str, str]:
    """--add-host NAME:ADDRESS (Docker's form; an IPv6 address keeps its colons)."""
    hosts = {}
    for entry in entries:
        host, sep, address = entry.partition(":")
        if not sep or not host or not address:
            raise InputError(f"--add-host {entry!r}: expected NAME:ADDRESS")
        hosts[host] = address.strip("[]")
    return hosts


def _env(entries: list[str], environ: dict[str, str]) -> dict[str, str]:
    """-e KEY=VALUE; -e KEY passes the caller's KEY, and is left out when it has none (Docker's rule)."""
    env = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep:
            env[key] = value
        elif key in environ:
            env[key] = environ[key]
    return env


def _limits(spec: RunSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if spec.memory is not None:
        limits["memory"] = spec.memory
    if spec.cpus is not None:
        limits["cpus"] = _number(spec.cpus)
    if spec.pids_limit is not None:
        limits["pids"] = spec.pids_limit
    return limits


def _number(text: str) -> Any:
    """A number where the text is one, so that the loader's own message reports a bad one."""
    try:
        return float(text)
    except ValueError:
        return text


def _option(key: str, name: str) -> str:
    """The option behind a key path of the generated file (`nodes.b1.limits.memory` is --memory)."""
    rest = key.removeprefix(f"nodes.{name}").lstrip(".")
    for path, option in sorted(OPTION_OF_KEY.items(), key=lambda item: -len(item[0])):
        if rest == path or rest.startswith(path + ".") or rest.startswith(path + "["):
            return option
    return OPTION_OF_KEY.get(key, key or "netemu run")
