"""containerlab topology files (`*.clab.yml`) -> netemu's validated `Topology`. Pure: no kernel,
no network; it reads the file and the files it names (env-files, bind sources), as containerlab
does when it parses a lab.

The file is read the way containerlab reads it (docs/containerlab.md has the whole mapping):
`${VAR}` expansion in the text first, then `topology.nodes` with their settings resolved
node > group > kind > defaults, magic variables (`__clabNodeName__`, `__clabNodeDir__`,
`__clabDir__`) in binds, exec and startup-config, relative bind paths taken from the file's
directory, the management network (172.20.20.0/24 by default, the gateway .1, nodes .2, .3, ...
in file order) and `kind: bridge` nodes as bridges of the machine.

The result is a tree of netemu's own keys whose every value keeps the line and the key path it
was written at in the containerlab file, handed to netemu's loader: its validators judge the
values, and every error, theirs or this module's, names the containerlab file, its line and its
containerlab key path. A key containerlab has and netemu cannot honour is refused with the
reason, never ignored; the few that are harmless here (credentials, runtime, ...) are accepted
and have no effect (listed in HARMLESS_KEYS).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from netemu.errors import TopologyError
from netemu.topology import loader
from netemu.topology._order import find_loop
from netemu.topology._tree import Invalid, Item, child_path, parse, read_lab_file
from netemu.topology.model import Node, Topology

# --- the containerlab schema, as far as netemu reads it ---------------------------------------

TOP_KEYS = ("name", "prefix", "mgmt", "topology", "settings", "debug")
TOPOLOGY_KEYS = ("nodes", "kinds", "groups", "defaults", "links")
MGMT_KEYS = ("network", "bridge", "ipv4-subnet", "ipv6-subnet", "ipv4-gw", "ipv6-gw", "ipv4-range",
             "ipv6-range", "mtu", "external-access", "skip-when-unused", "driver-opts",
             "ipv4_subnet", "ipv6_subnet")  # the last two: the names before 0.x, still read by containerlab
NODE_KEYS = (
    "kind", "group", "type", "image", "image-pull-policy", "restart-policy", "license", "startup-config",
    "startup-delay", "enforce-startup-config", "suppress-startup-config", "auto-remove", "exec", "binds",
    "volumes", "ports", "env", "credentials", "env-files", "user", "hostname", "entrypoint", "cmd", "labels",
    "runtime", "mgmt-ipv4", "mgmt-ipv6", "network-mode", "link-apply-mode", "cpu", "memory", "cpu-set",
    "extras", "config", "stages", "dns", "certificate", "healthcheck", "components", "aliases", "shm-size",
    "cap-add", "privileged", "cgroupns-mode", "cgroup-parent", "pid-mode", "tmpfs", "security-opts", "sysctls",
    "devices", "position", "wait-for",
)  # fmt: skip
# Accepted and without effect: they steer containerlab's own tooling (SSH inventories, its
# `apply` command, its graph layout, which container engine it drives), not what runs.
HARMLESS_KEYS = ("credentials", "runtime", "link-apply-mode", "position", "enforce-startup-config",
                 "suppress-startup-config", "type")
# Keys netemu has no counterpart for, with the reason given when a node has one.
REFUSED_KEYS = {
    "license": "licenses are for network-OS kinds, which netemu does not run",
    "startup-delay": "netemu starts hosts in dependency order, not after a delay; use stages.create.wait-for",
    "volumes": "netemu has no named or anonymous volumes; bind a directory of the machine with binds",
    "user": "netemu runs the host's programs as its root; switch users inside (su, setpriv) if needed",
    "cpu-set": "netemu limits CPU time (cpu) but does not pin hosts to cores",
    "config": "containerlab's configuration engine (vars for templates) is not part of netemu",
    "certificate": "netemu issues no TLS certificates to hosts",
    "healthcheck": "netemu has no health checks; use the file's checks in netemu's own format",
    "components": "components are for multi-container network-OS chassis, which netemu does not run",
    "aliases": "netemu has no network aliases; every node is in the other hosts' /etc/hosts by its name",
    "shm-size": "each host's /dev/shm is a tmpfs of its own whose size netemu does not set",
    "cgroupns-mode": "netemu gives every host a cgroup namespace of its own",
    "cgroup-parent": "netemu places every host's cgroup under its own tree",
    "tmpfs": "netemu has no tmpfs mounts per host beyond its own /run and /dev/shm",
    "security-opts": "netemu's confinement is set with privileged, cap-add and devices only",
}
KINDS = ("linux", "bridge")
KIND_REFUSALS = {
    "host": "kind host stands for the machine itself (its exec runs there): netemu never runs a file's "
            "commands on the machine",
    "ext-container": "kind ext-container is a container netemu did not make; netemu links only its own hosts",
    "ovs-bridge": "netemu does not drive Open vSwitch; use kind bridge (a Linux bridge of the machine)",
    "k8s-kind": "netemu does not run kind (Kubernetes in Docker) clusters",
}
NETWORK_MODES = ("none", "host", "bridge")  # or container:NAME; bridge (the default) = the mgmt network
LINK_BRIEF_KEYS = ("endpoints", "mtu", "ipv4", "ipv6", "vars", "labels")
LINK_TYPES = {
    "veth": ("type", "endpoints", "mtu", "ipv4", "ipv6", "vars", "labels"),
    "mgmt-net": ("type", "endpoint", "host-interface", "mtu", "vars", "labels"),
    "macvlan": ("type", "endpoint", "host-interface", "mode", "mtu", "vars", "labels"),
}
LINK_TYPE_REFUSALS = {
    "host": "a veth end in the machine's own network namespace: netemu keeps every lab interface inside its "
            "hosts and bridges (join a machine bridge with a kind: bridge node, or use type: macvlan)",
    "vxlan": "netemu makes no VXLAN tunnels to other machines",
    "vxlan-stitched": "netemu makes no VXLAN tunnels to other machines",
    "veth-stitched": "netemu makes no VXLAN tunnels to other machines",
    "dummy": "netemu makes no dummy interfaces; add one in exec (ip link add NAME type dummy)",
}
ENDPOINT_KEYS = ("node", "interface", "mac", "ipv4", "ipv6", "vars")
DEFAULT_MGMT_NETWORK = "clab"
DEFAULT_MGMT_V4 = "172.20.20.0/24"
DEFAULT_VETH_MTU = 9500  # containerlab's veth links are jumbo-sized unless `mtu` says otherwise
NODE_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*")  # containerlab's own rule, `|` aside
PULL_POLICIES = ("ifnotpresent",)  # netemu's `up --pull missing`: the one policy a file may ask for
FRR_DIR = "/etc/frr/"
ENV_FILE_MAX = 1 << 20  # a dotenv file of a lab: far more than any environment needs
# Files containerlab writes into its lab directory on deploy; netemu writes none of them.
CLAB_GENERATED = ("ansible-inventory.yml", "topology-data.json", "nornir-simple-inventory.yml", ".tls")


# --- environment variables in the text ----------------------------------------------------------

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-=+])((?:[^{}]|\$\{[^{}]*\})*))?\}"
                      r"|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """containerlab's expansion of the file text, done before YAML parsing: `${VAR}` and `$VAR`
    take the variable's value and stay as written when it is unset; `${VAR:=default}`,
    `${VAR:-default}` (also when empty), `${VAR=default}`, `${VAR-default}` (when unset) take the
    default; `${VAR:+other}`/`${VAR+other}` take `other` when set; `$$` is a literal `$`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, default = match.group(2), match.group(3) or ""
        value = env.get(name)
        if operator is None:
            return value if value is not None else match.group(0)
        is_set = value is not None and (value != "" or not operator.startswith(":"))
        if operator[-1] == "+":
            return expand_env(default, env) if is_set else ""
        return value if is_set and value is not None else expand_env(default, env)

    return _ENV_REF.sub(substitute, text)


_YAML_BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")  # what PyYAML takes for a line break


def _breaks(text: str) -> int:
    return sum(text.count(mark) for mark in _YAML_BREAKS)


def _expand_lines(text: str, env: Mapping[str, str]) -> str:
    """expand_env, line by line: a value that holds a line break would add lines to the file,
    and with them keys (`IMG="alpine\n    privileged: true"`), so it is refused at the line that
    uses it. An environment is not a place for YAML structure."""
    lines = text.split("\n")
    for number, line in enumerate(lines):
        expanded = expand_env(line, env)
        if _breaks(expanded) > _breaks(line):
            ref = next((m.group(0) for m in _ENV_REF.finditer(line) if _breaks(expand_env(m.group(0), env))),
                       "a variable")
            raise Invalid(number + 1, "", f"{ref}: its value holds a line break, which would add lines (and keys) "
                                          "to the file: a variable here takes a one-line value")
        lines[number] = expanded
    return "\n".join(lines)


def _refuse_templates(text: str) -> None:
    """containerlab renders the file as a Go template before anything else; netemu does not."""
    for number, line in enumerate(text.splitlines(), 1):
        if "{{" in line and not line.lstrip().startswith("#"):
            raise Invalid(number, "", "Go template syntax ({{ ... }}) is not supported: netemu reads the file as "
                                      "plain YAML (render the template first)")


# --- small helpers on located values ---------------------------------------------------------------


def _text_item(text: str, like: Item, path: str | None = None) -> Item:
    """A string value of netemu's tree that keeps the line and key path of `like`."""
    return Item(text, like.line, path or like.path, raw=text, key_line=like.key_line)


def _list_item(items: list[Item], like: Item, path: str | None = None) -> Item:
    return Item(items, like.line, path or like.path, key_line=like.key_line)


def _map_item(values: dict[str, Item], like: Item, path: str | None = None) -> Item:
    return Item(values, like.line, path or like.path, key_line=like.key_line)


def _string(item: Item) -> str:
    """A scalar as containerlab's Go types take it: a number or boolean written where a string
    is expected becomes its text."""
    if isinstance(item.value, bool):
        return "true" if item.value else "false"
    text = item.text()
    if not text:
        item.fail("must not be empty")
    return text


def _strings(item: Item) -> list[Item]:
    for entry in item.items():
        _string(entry)
    return item.items()


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_keys(item: Item, allowed: Iterable[str], what: str) -> dict[str, Item]:
    """A mapping of containerlab keys; null values mean "not set", as in containerlab's Go structs."""
    allowed = list(allowed)
    fields = item.mapping() if item.value is not None else {}
    for key, child in fields.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            child.fail(f"unknown {what} key '{key}'{hint}", at_key=True)
    return {key: child for key, child in fields.items() if child.value is not None}


def _argv(item: Item) -> Item:
    """containerlab splits exec, cmd and entrypoint into words as a shell would, then runs them
    without a shell (`bash -c '...'` is how a file asks for one)."""
    text = _string(item)
    try:
        words = shlex.split(text)
    except ValueError as exc:
        item.fail(f"cannot split '{text}' into words: {exc}")
    if not words:
        item.fail("the command must not be empty")
    return _list_item([_text_item(word, item, f"{item.path}") for word in words], item)


def _env_key(text: str) -> str:
    """containerlab's label -> environment variable name (CLAB_LABEL_<this>)."""
    return re.sub(r"[^a-zA-Z0-9_]+", "", re.sub(r"[-+./]", "_", text)).upper()


# --- the layers of a node's settings ------------------------------------------------------------


@dataclass
class _Layers:
    """A node's settings as containerlab resolves them: one value from the most specific layer
    (node > group > kind > defaults), lists joined from all of them, maps merged key by key."""

    name: str
    item: Item  # the node's own entry
    kind: str
    group: str | None
    own: dict[str, Item]
    levels: list[dict[str, Item]]  # most specific first: node, group, kind, defaults
    targets: list[str] = field(default_factory=list)  # where its binds go inside

    def first(self, key: str) -> Item | None:
        return next((level[key] for level in self.levels if key in level), None)

    def joined(self, key: str) -> list[Item]:
        """Entries of a list key from defaults to node, duplicates (by text) removed."""
        seen: set[str] = set()
        result: list[Item] = []
        for level in reversed(self.levels):
            for entry in _strings(level[key]) if key in level else []:
                text = _string(entry)
                if text not in seen:
                    seen.add(text)
                    result.append(entry)
        return result

    def merged(self, key: str) -> dict[str, Item]:
        result: dict[str, Item] = {}
        for level in reversed(self.levels):
            if key in level:
                result.update(level[key].mapping())
        return result

    def keys(self) -> dict[str, Item]:
        """Every key set for the node, at the most specific layer that sets it."""
        found: dict[str, Item] = {}
        for level in self.levels:
            for key, value in level.items():
                found.setdefault(key, value)
        return found


@dataclass
class _Mgmt:
    """The management network: a bridge with NAT and an address per node on its eth0."""

    name: str
    item: Item
    subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    gateways: dict[int, str]  # version -> address text
    ranges: dict[int, ipaddress.IPv4Network | ipaddress.IPv6Network]
    nat: bool
    mtu: Item | None
    fields: dict[str, Item]
    members: list[str] = field(default_factory=list)


# --- the converter ---------------------------------------------------------------------------------


class _Converter:
    """One containerlab file -> the located tree of netemu's keys, plus what netemu's loader does
    not take (yet): entrypoint, labels and wait_for, set on the nodes after loading."""

    def __init__(self, root: Item, path: Path) -> None:
        self.root = root
        self.path = path
        self.base = path.parent.resolve()
        self.layers: dict[str, _Layers] = {}
        self.bridges: dict[str, str] = {}  # bridge node -> netemu network name
        self.networks: dict[str, Item] = {}
        self.links: list[Item] = []
        self.interfaces: dict[str, int] = {}  # node -> number of its link endpoints (CLAB_INTFS)
        self.after: dict[str, dict[str, object]] = {}  # node -> Node fields set after loading
        self.macvlans: dict[str, str] = {}  # machine interface -> network name
        self.bridge_ifaces: dict[str, dict[str, int]] = {}  # bridge node -> its port names -> line
        self.wait_items: dict[str, dict[str, Item]] = {}  # node -> node it waits for -> where written
        self.reserved: set[str] = set()  # netemu network names given out

    # top level ----------------------------------------------------------------------------------
    def convert(self) -> Item:
        top = _check_keys(self.root, TOP_KEYS, "top-level")
        for key in ("name", "topology"):
            if key not in top:
                raise Invalid(self.root.line, key, f"required key '{key}' is missing")
        if "settings" in top:
            top["settings"].fail("settings (a certificate authority for the lab) is not supported: netemu issues "
                                 "no TLS certificates", at_key=True)
        self.name = _string(top["name"])
        self.prefix = self._prefix(top.get("prefix"))
        self.lab_dir = self._lab_dir()
        topology = _check_keys(top["topology"], TOPOLOGY_KEYS, "topology")
        if "nodes" not in topology:
            raise Invalid(top["topology"].line, "topology.nodes", "required key 'nodes' is missing")
        self._read_nodes(topology)
        self.mgmt = self._mgmt(top.get("mgmt"), top["topology"])
        self._read_links(topology.get("links"))
        nodes = {name: self._node(layers) for name, layers in self.layers.items()}
        self._add_mgmt_network()
        tree = {"name": top["name"], "nodes": _map_item(nodes, topology["nodes"])}
        if self.networks:
            tree["networks"] = _map_item(self.networks, top["topology"], "topology")
        if self.links:
            tree["links"] = _list_item(self.links, topology.get("links") or top["topology"], "topology.links")
        return _map_item(tree, self.root)

    def _prefix(self, item: Item | None) -> str:
        """Only in the nodes' long names (a label here): netemu names kernel objects its own way."""
        if item is None:
            return "clab"
        text = item.text()
        if text and text != "__lab-name" and not NODE_NAME_RE.fullmatch(text):
            item.fail(f"invalid prefix '{text}': letters, digits, '-', '_' and '.', a letter or digit first")
        return text

    def _lab_dir(self) -> Path:
        """containerlab's lab directory, clab-<name> next to the file (or under $CLAB_LABDIR_BASE):
        what __clabDir__ names. netemu does not create it."""
        base = os.environ.get("CLAB_LABDIR_BASE")
        return (Path(base).resolve() if base else self.base) / f"clab-{self.name}"

    # nodes -------------------------------------------------------------------------------------------
    def _read_nodes(self, topology: dict[str, Item]) -> None:
        defaults = _check_keys(topology["defaults"], NODE_KEYS, "node") if "defaults" in topology else {}
        kinds = self._sections(topology.get("kinds"), "kind")
        groups = self._sections(topology.get("groups"), "group")
        entries = topology["nodes"].mapping()
        if not entries:
            topology["nodes"].fail("at least one node is required")
        for name, entry in entries.items():
            if "|" in name:
                entry.fail(f"node '{name}': bridges inside a node's namespace (NAME|NODE) are not supported",
                           at_key=True)
            if not NODE_NAME_RE.fullmatch(name):
                entry.fail(f"invalid node name '{name}': containerlab names use letters, digits, '-', '_' and '.', "
                           "a letter or digit first", at_key=True)
            own = _check_keys(entry, NODE_KEYS, "node")
            self.layers[name] = self._layers(name, entry, own, defaults, kinds, groups)

    def _sections(self, item: Item | None, what: str) -> dict[str, dict[str, Item]]:
        if item is None or item.value is None:
            return {}
        return {name: _check_keys(entry, NODE_KEYS, "node") for name, entry in item.mapping().items()}

    def _layers(self, name: str, entry: Item, own: dict[str, Item], defaults: dict[str, Item],
                kinds: dict[str, dict[str, Item]], groups: dict[str, dict[str, Item]]) -> _Layers:
        """Which group and kind apply, as containerlab decides: the node's group, else its kind's,
        else the default one; its kind, else its group's, else the default one."""
        group_item = own.get("group") or defaults.get("group")
        group = _string(group_item) if group_item else None
        if group is not None and group not in groups:
            assert group_item is not None
            group_item.fail(f"unknown group '{group}'{_suggest(group, groups)}")
        group_fields = groups.get(group, {}) if group else {}
        kind_item = own.get("kind") or group_fields.get("kind") or defaults.get("kind")
        if kind_item is None:
            entry.fail(f"node '{name}' has no kind (set kind on the node, its group or in defaults)", at_key=True)
        kind = _string(kind_item).lower()
        if group is None and "group" in kinds.get(kind, {}):  # a kind may name the group of its nodes
            group = _string(kinds[kind]["group"])
            group_fields = groups.get(group, {})
        self._check_kind(kind, kind_item)
        levels = [own, group_fields, kinds.get(kind, {}), defaults]
        return _Layers(name, entry, kind, group, own, levels)

    def _check_kind(self, kind: str, item: Item) -> None:
        if kind in KINDS:
            return
        if kind in KIND_REFUSALS:
            item.fail(KIND_REFUSALS[kind])
        item.fail(f"kind '{kind}' is not supported: netemu runs containers of kind linux and joins machine bridges "
                  "of kind bridge (network-OS kinds need their vendor images and containerlab's set-up for them)")

    def _node(self, layers: _Layers) -> Item:
        """netemu's keys for one node of kind linux (bridges became networks in _read_links)."""
        fields: dict[str, Item] = {}
        keys = layers.keys()
        for key, item in keys.items():
            if key in REFUSED_KEYS:
                item.fail(f"'{key}' is not supported: {REFUSED_KEYS[key]}", at_key=True)
        steps: list[Callable[[_Layers, dict[str, Item]], None]] = [
            self._image, self._policies, self._network_mode, self._binds, self._startup_config, self._environment,
            self._commands, self._confinement, self._limits, self._dns, self._simple, self._wait_for,
            self._extras, self._mgmt_routes,
        ]
        for step in steps:
            step(layers, fields)
        self._labels(layers)
        self._frr(layers, fields)
        return _map_item(fields, layers.item)

    def _image(self, layers: _Layers, fields: dict[str, Item]) -> None:
        image = layers.first("image")
        if image is None:
            layers.item.fail(f"node '{layers.name}' has no image (kind linux needs one)", at_key=True)
        fields["image"] = _text_item(_string(image), image)

    def _policies(self, layers: _Layers, fields: dict[str, Item]) -> None:
        """Pull, restart and removal policies: netemu has one of each, fixed."""
        pull = layers.first("image-pull-policy")
        if pull is not None and _string(pull).lower() not in PULL_POLICIES:
            pull.fail(f"image-pull-policy {_string(pull)} is not supported in the file: netemu pulls an image that "
                      "is missing (IfNotPresent); use `netemu up --pull always|never`")
        restart = layers.first("restart-policy")
        if restart is not None and _string(restart).lower() != "no":
            restart.fail(f"restart-policy {_string(restart)} is not supported: netemu does not restart a host whose "
                         "program exits (use `netemu node LAB NODE restart`)")
        auto_remove = layers.first("auto-remove")
        if auto_remove is not None and auto_remove.boolean():
            auto_remove.fail("auto-remove: true is not supported: a netemu host that stops is kept until `down`")

    def _network_mode(self, layers: _Layers, fields: dict[str, Item]) -> None:
        mode_item = layers.first("network-mode")
        mode = _string(mode_item) if mode_item else "bridge"
        if mode not in NETWORK_MODES and not (mode.startswith("container:") and len(mode) > len("container:")):
            assert mode_item is not None
            mode_item.fail(f"invalid network-mode '{mode}': expected none, host or container:NODE")
        if mode != "bridge":
            assert mode_item is not None
            fields["network"] = _text_item(mode, mode_item)
        for key in ("mgmt-ipv4", "mgmt-ipv6"):
            if mode != "bridge" and key in layers.own:
                layers.own[key].fail(f"{key} needs the management network, which network-mode {mode} leaves out",
                                     at_key=True)
        pid = layers.first("pid-mode")
        if pid is not None:
            text = _string(pid)
            if text != "host" and not text.startswith("container:"):
                pid.fail(f"pid-mode '{text}' is not supported: expected host or container:NODE")
            fields["pid"] = _text_item(text, pid)

    def _binds(self, layers: _Layers, fields: dict[str, Item]) -> None:
        """Joined from every layer; for one target the most specific layer wins (containerlab
        keys them by destination)."""
        by_target: dict[str, Item] = {}
        for entry in layers.joined("binds"):
            bind = self._bind(layers.name, entry)
            target = bind.value.split(":")[1] if bind.value.count(":") >= 1 else bind.value
            by_target[target] = bind
        if by_target:
            fields["binds"] = _list_item(list(by_target.values()), layers.first("binds") or layers.item)
        layers.targets = list(by_target)

    def _bind(self, node: str, entry: Item) -> Item:
        parts = _string(entry).split(":")
        if len(parts) not in (2, 3):
            entry.fail(f"invalid bind '{entry.text()}': expected HOST_PATH:CONTAINER_PATH[:ro|:rw]")
        if len(parts) == 3 and parts[2] not in ("ro", "rw"):
            entry.fail(f"bind option '{parts[2]}' is not supported: netemu binds are ro or rw")
        source = self._host_path(self._magic(parts[0], node), entry, "bind source")
        return _text_item(":".join([str(source), *parts[1:]]), entry)

    def _host_path(self, text: str, entry: Item, what: str) -> Path:
        """containerlab's path rules: `~` is the home directory, a relative path is relative to
        the file's directory, and the path must exist (nothing creates it)."""
        path = Path(os.path.normpath(self.base / Path(text).expanduser()))
        if (path.name in CLAB_GENERATED and path.parent == self.lab_dir) or path == self.lab_dir / ".tls":
            entry.fail(f"{what} {path} is a file containerlab writes on deploy; netemu does not write it")
        if not path.exists():
            entry.fail(f"{what} {path} does not exist")
        return path

    def _magic(self, text: str, node: str) -> str:
        """containerlab's magic variables, replaced in bind sources, exec and startup-config."""
        return (text.replace("__clabNodeDir__", str(self.lab_dir / node))
                .replace("__clabNodeName__", node)
                .replace("__clabDir__", str(self.lab_dir))
                .replace("__clabLabName__", self.lab_dir.name))

    def _startup_config(self, layers: _Layers, fields: dict[str, Item]) -> None:
        """Kind linux has no startup-config of its own in containerlab; an FRR node's becomes
        its /etc/frr/frr.conf, the file FRR boots from (what containerlab's FRR labs bind)."""
        item = layers.first("startup-config")
        if item is None:
            return
        text = _string(item)
        if "\n" in text:
            item.fail("an embedded startup-config is not supported: write it to a file and name the file")
        if re.match(r"[a-z0-9+]+://", text):
            item.fail("a startup-config URL is not supported: netemu reads no files from the network")
        if not self._is_frr(layers, fields):
            item.fail("startup-config on kind linux is ignored by containerlab and refused by netemu, except for "
                      "FRR images (bound to /etc/frr/frr.conf): bind the file with binds instead")
        source = self._host_path(self._magic(text, layers.name), item, "startup-config")
        bind = _text_item(f"{source}:{FRR_DIR}frr.conf", item)
        binds = fields.get("binds")
        kept = [b for b in binds.items() if b.value.split(":")[1] != f"{FRR_DIR}frr.conf"] if binds else []
        fields["binds"] = _list_item([*kept, bind], binds or item)

    def _environment(self, layers: _Layers, fields: dict[str, Item]) -> None:
        """env-files under env, env over them; CLAB_INTFS and CLAB_LABEL_* as containerlab sets them."""
        env: dict[str, Item] = {}
        for entry in layers.joined("env-files"):
            env.update(self._env_file(entry))
        for key, item in layers.merged("env").items():
            if item.value is not None:
                env[key] = _text_item("" if item.value == "" else _string(item), item)
        if env.get("__IMPORT_ENVS") is not None and env["__IMPORT_ENVS"].value == "true":
            # A lab file from elsewhere must not hand the caller's whole environment (a CI
            # job's secrets) to hosts running images nobody here wrote.
            env["__IMPORT_ENVS"].fail("__IMPORT_ENVS would give the hosts the whole environment of whoever "
                                      "runs netemu (secrets included): name each variable, KEY: ${KEY}")
        like = layers.item
        env["CLAB_INTFS"] = _text_item(str(self.interfaces.get(layers.name, 0)), like)
        for key, value in self._all_labels(layers).items():
            env[f"CLAB_LABEL_{_env_key(key)}"] = _text_item(value, like)
        fields["env"] = _map_item(env, layers.first("env") or like)

    def _env_file(self, entry: Item) -> dict[str, Item]:
        """A dotenv file: KEY=VALUE lines, `export ` allowed, `#` comments, quotes removed."""
        path = self._host_path(_string(entry), entry, "env-file")
        try:
            data = read_lab_file(path, ENV_FILE_MAX)
            lines = data.decode("utf-8").splitlines()
        except OSError as exc:
            entry.fail(f"cannot read env-file {path}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            entry.fail(f"cannot read env-file {path}: not valid UTF-8")
        if len(data) > ENV_FILE_MAX:
            entry.fail(f"env-file {path} is larger than {ENV_FILE_MAX >> 20} MiB")
        env: dict[str, Item] = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.removeprefix("export ").partition("=")
            if not sep:
                entry.fail(f"env-file {path}:{number}: expected KEY=VALUE")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            elif " #" in value:
                value = value.split(" #", 1)[0].rstrip()
            env[key.strip()] = _text_item(value, entry)
        return env

    def _commands(self, layers: _Layers, fields: dict[str, Item]) -> None:
        execs = [_argv(_text_item(self._magic(_string(e), layers.name), e)) for e in layers.joined("exec")]
        if execs:
            fields["exec"] = _list_item(execs, layers.first("exec") or layers.item)
        cmd = layers.first("cmd")
        if cmd is not None:
            fields["cmd"] = _argv(cmd)
        entrypoint = layers.first("entrypoint")
        if entrypoint is not None:
            self.after.setdefault(layers.name, {})["entrypoint"] = [w.value for w in _argv(entrypoint).items()]

    def _confinement(self, layers: _Layers, fields: dict[str, Item]) -> None:
        """containerlab runs every node privileged unless told otherwise; netemu keeps its default
        confinement and widens it only where the file says so (or for FRR, see _frr)."""
        privileged = layers.first("privileged")
        if privileged is not None and privileged.boolean():
            fields["privileged"] = privileged
        for key, netemu_key in (("cap-add", "cap_add"), ("devices", "devices")):
            entries = layers.joined(key)
            if entries:
                fields[netemu_key] = _list_item(entries, layers.first(key) or layers.item)
        sysctls = {key: item for key, item in layers.merged("sysctls").items() if item.value is not None}
        if sysctls:
            fields["sysctls"] = _map_item(sysctls, layers.first("sysctls") or layers.item)

    def _limits(self, layers: _Layers, fields: dict[str, Item]) -> None:
        limits: dict[str, Item] = {}
        cpu = layers.first("cpu")
        if cpu is not None:
            limits["cpus"] = cpu
        memory = layers.first("memory")
        if memory is not None:
            limits["memory"] = memory
        if limits:
            fields["limits"] = _map_item(limits, cpu or memory or layers.item)

    def _dns(self, layers: _Layers, fields: dict[str, Item]) -> None:
        item = layers.first("dns")
        if item is None:
            return
        dns = _check_keys(item, ("servers", "search", "options"), "dns")
        if "options" in dns:
            dns["options"].fail("dns options are not supported: netemu writes nameserver and search lines only",
                                at_key=True)
        if "servers" in dns:
            fields["dns"] = dns["servers"]
        if "search" in dns:
            fields["dns_search"] = dns["search"]

    def _simple(self, layers: _Layers, fields: dict[str, Item]) -> None:
        """Keys that carry over unchanged: hostname and ports (one layer, not joined)."""
        hostname = layers.first("hostname")
        if hostname is not None:
            fields["hostname"] = _text_item(_string(hostname), hostname)
        ports = layers.first("ports")
        if ports is not None and ports.items():
            fields["ports"] = _list_item([_text_item(_string(p), p) for p in ports.items()], ports)

    def _wait_for(self, layers: _Layers, fields: dict[str, Item]) -> None:
        """stages.create.wait-for (and the older node-level wait-for list): start after those
        nodes. netemu waits for a node to run, which is containerlab's `create` stage."""
        waits: list[Item] = []
        legacy = layers.first("wait-for")
        if legacy is not None:
            waits.extend(_strings(legacy))
        stages = layers.first("stages")
        for stage, item in (_check_keys(stages, ("create", "create-links", "configure", "healthy", "exit"),
                                        "stages") if stages else {}).items():
            settings = _check_keys(item, ("wait-for", "exec"), f"stages.{stage}")
            if "exec" in settings:
                settings["exec"].fail("stage exec commands are not supported: use the node's exec, run once "
                                      "all links are up", at_key=True)
            for entry in settings["wait-for"].items() if "wait-for" in settings else []:
                waits.append(self._wait_entry(stage, entry))
        if waits:
            names = [_string(w) for w in waits]
            for name, item in zip(names, waits, strict=True):
                if name not in self.layers or self.layers[name].kind != "linux":
                    item.fail(f"wait-for names an unknown node '{name}'{_suggest(name, self.layers)}")
                if name == layers.name:
                    item.fail("a node cannot wait for itself")
            self.after.setdefault(layers.name, {})["wait_for"] = list(dict.fromkeys(names))
            self.wait_items[layers.name] = dict(zip(names, waits, strict=True))

    def _wait_entry(self, stage: str, entry: Item) -> Item:
        fields = _check_keys(entry, ("node", "stage"), "wait-for")
        if "node" not in fields:
            entry.fail("a wait-for entry needs 'node'")
        target = _string(fields["stage"]) if "stage" in fields else "create"
        if stage != "create" or target != "create":
            entry.fail(f"waiting in stage {stage} for stage {target} is not supported: netemu starts a node after "
                       "the nodes it waits for run (stage create, for stage create)")
        return fields["node"]

    def _extras(self, layers: _Layers, fields: dict[str, Item]) -> None:
        extras = layers.first("extras")
        for key, item in (extras.mapping() if extras is not None else {}).items():
            item.fail(f"extras.{key} is not supported: it is for a network-OS kind netemu does not run", at_key=True)

    def _all_labels(self, layers: _Layers) -> dict[str, str]:
        """The user's labels and the ones containerlab adds to every node."""
        group = layers.group or ""
        kind_type = layers.first("type")
        long_name = {"": layers.name, "__lab-name": f"{self.name}-{layers.name}"}.get(
            self.prefix, f"{self.prefix}-{self.name}-{layers.name}")
        labels = {"containerlab": self.name, "clab-node-name": layers.name, "clab-node-longname": long_name,
                  "clab-node-kind": layers.kind, "clab-node-type": _string(kind_type) if kind_type else "",
                  "clab-node-group": group, "clab-node-lab-dir": str(self.lab_dir / layers.name),
                  "clab-topo-file": str(self.path.resolve())}
        for key, item in layers.merged("labels").items():
            if item.value is not None:
                labels[key] = _string(item)
        return labels

    def _labels(self, layers: _Layers) -> None:
        self.after.setdefault(layers.name, {})["labels"] = self._all_labels(layers)

    def _is_frr(self, layers: _Layers, fields: dict[str, Item]) -> bool:
        """An FRR node: an FRRouting image (its repository's last part `frr`), or FRR's files
        bound in, as containerlab's FRR labs do."""
        image = fields["image"].value.split("@")[0]
        repository = image.rsplit("/", 1)[-1].split(":")[0]
        targets = getattr(layers, "targets", [])
        return repository == "frr" or "frrouting" in image or any(t.startswith(FRR_DIR) for t in targets)

    def _frr(self, layers: _Layers, fields: dict[str, Item]) -> None:
        """FRR's daemons refuse to start without SYS_ADMIN, which containerlab's privileged
        default gives them. netemu gives it the narrow way its own ospf lab does: in a user
        namespace of the node's own, where it reaches only the node's namespaces."""
        if "privileged" in fields or not self._is_frr(layers, fields):
            return
        like = layers.first("image") or layers.item
        caps = fields.get("cap_add")
        entries = caps.items() if caps else []
        if not any(e.text().upper().removeprefix("CAP_") in ("SYS_ADMIN", "ALL") for e in entries):
            fields["cap_add"] = _list_item([*entries, _text_item("SYS_ADMIN", like)], caps or like)
        fields["userns"] = Item(True, like.line, like.path, raw="true", key_line=like.key_line)

    # management network ------------------------------------------------------------------------------
    def _mgmt(self, item: Item | None, where: Item) -> _Mgmt:
        fields = _check_keys(item, MGMT_KEYS, "mgmt") if item is not None else {}
        anchor = item or where
        for key, reason in (("bridge", "netemu joins a machine bridge as it is and sets no gateway on it; link "
                                       "nodes to a kind: bridge node instead"),
                            ("driver-opts", "netemu's management bridge has no Docker driver options"),
                            ("ipv6-range", "netemu hands out IPv6 management addresses from the whole subnet")):
            if key in fields:
                fields[key].fail(f"mgmt.{key} is not supported: {reason}", at_key=True)
        name_item = fields.get("network")
        name = _string(name_item) if name_item else DEFAULT_MGMT_NETWORK
        mgmt = _Mgmt(self._network_name(name), anchor, [], {}, {}, True, fields.get("mtu"), fields)
        self.reserved.add(mgmt.name)
        for version, key, old in ((4, "ipv4-subnet", "ipv4_subnet"), (6, "ipv6-subnet", "ipv6_subnet")):
            subnet_item = fields.get(key) or fields.get(old)
            if subnet_item is None and version == 6:
                continue
            text = _string(subnet_item) if subnet_item else DEFAULT_MGMT_V4
            if text == "auto":
                assert subnet_item is not None
                subnet_item.fail(f"mgmt.{key}: auto is not supported: write the subnet")
            subnet = self._network_value(text, subnet_item or anchor)
            mgmt.subnets.append(subnet)
            gateway = fields.get(f"ipv{version}-gw")
            mgmt.gateways[version] = _string(gateway) if gateway else str(next(subnet.hosts()))
        if "ipv4-range" in fields:
            mgmt.ranges[4] = self._network_value(_string(fields["ipv4-range"]), fields["ipv4-range"])
        if "external-access" in fields:
            mgmt.nat = fields["external-access"].boolean()
        return mgmt

    def _network_value(self, text: str, item: Item) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        try:
            return ipaddress.ip_network(text)
        except ValueError:
            item.fail(f"invalid subnet '{text}'")

    def _network_name(self, name: str) -> str:
        """A netemu network name (a-z, 0-9, '-', at most 15) standing for a containerlab one; the
        name itself is netemu's alone (a machine bridge keeps its own in `bridge`)."""
        clean = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:15].strip("-") or "net"
        candidate, number = clean, 1
        while candidate in self.reserved or self._is_host(candidate):
            number += 1
            candidate = f"{clean[:12]}-{number}"
        self.reserved.add(candidate)
        return candidate

    def _is_host(self, name: str) -> bool:
        """A network may not share a host's name; bridge nodes are no hosts."""
        return name in self.layers and self.layers[name].kind == "linux"

    def _mgmt_routes(self, layers: _Layers, fields: dict[str, Item]) -> None:
        """A default route through the management gateway, as Docker gives a container on a
        bridge network (and so containerlab's nodes)."""
        if layers.name not in self.mgmt.members:
            return
        routes = []
        for version in sorted(self.mgmt.gateways):
            gateway = self._gateway_item(version)
            routes.append(_map_item({"dst": _text_item("default", gateway), "via": gateway}, gateway))
        fields["routes"] = _list_item(routes, layers.item)

    def _add_mgmt_network(self) -> None:
        """The management network and each member's eth0 on it, with its address and a default
        route through the gateway, as Docker gives a container on a bridge network."""
        mgmt = self.mgmt
        if not mgmt.members:
            return
        anchor = mgmt.item
        path = "mgmt"
        net: dict[str, Item] = {
            "subnet": _list_item([_text_item(str(s), anchor, path) for s in mgmt.subnets], anchor, path),
            "gateway": _list_item([self._gateway_item(s.version) for s in mgmt.subnets], anchor, path),
            "nat": Item(mgmt.nat, anchor.line, path, raw=str(mgmt.nat).lower()),
        }
        if mgmt.mtu is not None:
            net["mtu"] = mgmt.mtu
        self.networks[mgmt.name] = _map_item(net, anchor, path)
        free = {s.version: self._free_addresses(s) for s in mgmt.subnets}
        for name in mgmt.members:
            addresses = [self._mgmt_address(name, version, free[version]) for version in sorted(free)]
            link = {"endpoints": _list_item([_text_item(f"{name}:eth0", self.layers[name].item),
                                             _text_item(mgmt.name, anchor, path)], self.layers[name].item),
                    "addresses": _list_item([_list_item(addresses, self.layers[name].item)], self.layers[name].item)}
            self.links.insert(mgmt.members.index(name), _map_item(link, self.layers[name].item))

    def _gateway_item(self, version: int) -> Item:
        key = f"ipv{version}-gw"
        like = self.mgmt.fields.get(key, self.mgmt.item)
        return _text_item(self.mgmt.gateways[version], like, f"mgmt.{key}" if key in self.mgmt.fields else "mgmt")

    def _free_addresses(self, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Iterable[str]:
        """Addresses for nodes without mgmt-ipv4/6: in file order from .2 on (the gateway, and the
        addresses the file gives nodes, skipped)."""
        pool = self.mgmt.ranges.get(subnet.version, subnet)
        taken = {self.mgmt.gateways[subnet.version]}
        key = f"mgmt-ipv{subnet.version}"
        for name in self.mgmt.members:
            fixed = self.layers[name].own.get(key)
            if fixed is not None:
                taken.add(str(fixed.value))
        return (str(ip) for ip in pool.hosts() if str(ip) not in taken and ip in subnet)

    def _mgmt_address(self, name: str, version: int, free: Iterable[str]) -> Item:
        layers = self.layers[name]
        fixed = layers.own.get(f"mgmt-ipv{version}")
        if fixed is not None:
            return _text_item(_string(fixed), fixed)
        address = next(iter(free), None)
        if address is None:
            layers.item.fail(f"no free management address left for node '{name}' in {self.mgmt.subnets}",
                             at_key=True)
        return _text_item(address, layers.item, f"{layers.item.path}.mgmt-ipv{version}")

    # links ---------------------------------------------------------------------------------------------
    def _read_links(self, item: Item | None) -> None:
        """Bridges first (they are networks, not hosts), then each link."""
        for name, layers in self.layers.items():
            if layers.kind == "bridge":
                self._bridge(name, layers)
        for name, layers in self.layers.items():
            if layers.kind == "linux" and self._mode_of(layers) == "bridge":
                self.mgmt_member(name)
        for entry in item.items() if item is not None and item.value is not None else []:
            self._link(entry)
        self.layers = {name: layers for name, layers in self.layers.items() if layers.kind == "linux"}

    def mgmt_member(self, name: str) -> None:
        self.mgmt.members.append(name)

    def _mode_of(self, layers: _Layers) -> str:
        mode = layers.first("network-mode")
        return _string(mode) if mode is not None else "bridge"

    def _bridge(self, name: str, layers: _Layers) -> None:
        """A bridge node is a bridge the machine already has (containerlab never creates it):
        netemu's `bridge:` network, joined as it is."""
        for key, item in layers.own.items():
            if key not in ("kind", "group", "labels", "type", "position"):
                item.fail(f"'{key}' has no meaning on a kind: bridge node (a bridge of the machine, joined as it is)",
                          at_key=True)
        network = self._network_name(name)
        self.bridges[name] = network
        self.networks[network] = _map_item({"bridge": _text_item(name, layers.item, layers.item.path)},
                                           layers.item)

    def _link(self, entry: Item) -> None:
        fields = entry.mapping()
        kind = _string(fields["type"]) if fields.get("type") is not None else None
        if kind in LINK_TYPE_REFUSALS:
            fields["type"].fail(f"links of type {kind} are not supported: {LINK_TYPE_REFUSALS[kind]}")
        if kind is not None and kind not in LINK_TYPES:
            fields["type"].fail(f"unknown link type '{kind}'{_suggest(kind, [*LINK_TYPES, *LINK_TYPE_REFUSALS])}")
        if kind in ("mgmt-net", "macvlan"):
            self._single_link(entry, kind)
            return
        keys = _check_keys(entry, LINK_TYPES["veth"] if kind else LINK_BRIEF_KEYS, "link")
        if "endpoints" not in keys:
            raise Invalid(entry.line, child_path(entry.path, "endpoints"), "required key 'endpoints' is missing")
        listed = keys["endpoints"].items()
        if len(listed) != 2:
            keys["endpoints"].fail(f"a link has exactly 2 endpoints, got {len(listed)}")
        ends = [self._endpoint(e, kind is not None) for e in listed]
        special = [e for e in ends if isinstance(e, tuple)]
        if special:
            self._special_brief(entry, keys, ends)
            return
        addresses = self._addresses(keys, [e for e in ends if isinstance(e, _End)])
        self._append_link(entry, keys, [e for e in ends if isinstance(e, _End)], addresses)

    def _endpoint(self, item: Item, extended: bool) -> _End | tuple[str, str, Item]:
        """`node:iface` (or {node, interface, ...} in the extended form) -> an end of a link.
        A special end of the brief form (host:, macvlan:, mgmt-net:) is returned as a tuple."""
        if extended:
            fields = _check_keys(item, ENDPOINT_KEYS, "endpoint")
            for key in ("node", "interface"):
                if key not in fields:
                    item.fail(f"an endpoint needs '{key}'")
            if "mac" in fields:
                fields["mac"].fail("endpoint mac is not supported: netemu lets the kernel choose MAC addresses",
                                   at_key=True)
            node, iface = _string(fields["node"]), _string(fields["interface"])
            end = _End(node, iface, item, fields.get("ipv4"), fields.get("ipv6"))
        else:
            text = _string(item)
            node, sep, iface = text.partition(":")
            if not sep or not node or not iface:
                item.fail(f"invalid endpoint '{text}': expected NODE:INTERFACE")
            if node in ("host", "macvlan", "mgmt-net") and node not in self.layers:
                return node, iface, item
            end = _End(node, iface, item, None, None)
        self._check_end(end)
        return end

    def _check_end(self, end: _End) -> None:
        layers = self.layers.get(end.node)
        if layers is None:
            end.item.fail(f"unknown node '{end.node}'{_suggest(end.node, self.layers)}")
        if layers.kind == "linux" and end.iface == "eth0" and self._mode_of(layers) != "none":
            end.item.fail(f"eth0 interface name is not allowed for {end.node} node when network mode is not set to "
                          "none (eth0 is its management interface)")
        if layers.kind == "bridge":
            used = self.bridge_ifaces.setdefault(end.node, {})
            if end.iface in used:
                end.item.fail(f"interface {end.node}:{end.iface} already used at line {used[end.iface]}")
            used[end.iface] = end.item.line
        else:
            self.interfaces[end.node] = self.interfaces.get(end.node, 0) + 1

    def _special_brief(self, entry: Item, keys: dict[str, Item], ends: list[_End | tuple[str, str, Item]]) -> None:
        """host:IFACE, macvlan:IFACE and mgmt-net:IFACE ends of the brief form."""
        nodes = [e for e in ends if isinstance(e, _End)]
        special = [e for e in ends if isinstance(e, tuple)]
        if len(nodes) != 1:
            special[-1][2].fail("a link needs a node at one end at least")
        kind, iface, item = special[0]
        if kind == "host":
            item.fail(f"host:{iface} is not supported: {LINK_TYPE_REFUSALS['host']}")
        self._attach(entry, keys, nodes[0], kind, iface, item, None)

    def _single_link(self, entry: Item, kind: str) -> None:
        """The extended mgmt-net and macvlan forms: one node end and an interface of the machine."""
        keys = _check_keys(entry, LINK_TYPES[kind], "link")
        for key in ("endpoint", "host-interface"):
            if key not in keys:
                raise Invalid(entry.line, child_path(entry.path, key), f"required key '{key}' is missing")
        end = self._endpoint(keys["endpoint"], True)
        assert isinstance(end, _End)
        self._attach(entry, keys, end, kind, _string(keys["host-interface"]), keys["host-interface"],
                     keys.get("mode"))

    def _attach(self, entry: Item, keys: dict[str, Item], end: _End, kind: str, iface: str, item: Item,
                mode: Item | None) -> None:
        """mgmt-net: a veth from the node to the management bridge; macvlan: a macvlan interface
        of the node on the machine's IFACE (netemu's `driver: macvlan` network)."""
        if kind == "mgmt-net":
            if not self.mgmt.members:
                item.fail("a mgmt-net link needs the management network, which no node is on (every node has "
                          "network-mode none, host or container)")
            # the machine-side name (IFACE) is netemu's to choose, as for a bridge's ports
            self._append_link(entry, keys, [end, _End(self.mgmt.name, "", item, None, None, network=True)],
                              [None, None])
            return
        if mode is not None and _string(mode) != "bridge":
            mode.fail(f"macvlan mode {_string(mode)} is not supported: netemu's macvlan interfaces are in bridge mode")
        network = self.macvlans.get(iface)
        if network is None:
            network = self.macvlans[iface] = self._network_name(f"mv-{iface}")
            self.networks[network] = _map_item({"driver": _text_item("macvlan", item),
                                                "uplink": _text_item(iface, item)}, item)
        self._append_link(entry, keys, [end, _End(network, "", item, None, None, network=True)], [None, None],
                          default_mtu=False)

    def _addresses(self, keys: dict[str, Item], ends: list[_End]) -> list[Item | None]:
        """The link's ipv4/ipv6 lists (one entry per end, "" for none) and the extended form's
        per-endpoint ipv4/ipv6 -> netemu's addresses, one list per end."""
        per_end: list[list[Item]] = [[], []]
        for key in ("ipv4", "ipv6"):
            if key in keys:
                listed = keys[key].items()
                if len(listed) > 2:
                    listed[2].fail(f"expected at most one {key} address per endpoint, got {len(listed)}")
                for index, address in enumerate(listed):
                    if address.value not in (None, ""):
                        per_end[index].append(_text_item(_string(address), address))
            for index, end in enumerate(ends):
                own = end.ipv4 if key == "ipv4" else end.ipv6
                if own is not None and own.value not in (None, ""):
                    per_end[index].append(_text_item(_string(own), own))
        return [_list_item(found, found[0]) if found else None for found in per_end]

    def _append_link(self, entry: Item, keys: dict[str, Item], ends: list[_End], addresses: list[Item | None],
                     default_mtu: bool = True) -> None:
        texts = [_text_item(self._endpoint_text(end), end.item) for end in ends]
        link: dict[str, Item] = {"endpoints": _list_item(texts, keys.get("endpoints") or entry)}
        if any(a is not None for a in addresses):
            link["addresses"] = _list_item([a if a is not None else Item(None, entry.line, entry.path)
                                            for a in addresses], entry)
        if "mtu" in keys:
            link["mtu"] = keys["mtu"]
        elif default_mtu and not any(end.network and end.node == self.mgmt.name for end in ends):
            link["mtu"] = Item(DEFAULT_VETH_MTU, entry.line, child_path(entry.path, "mtu"), raw=str(DEFAULT_VETH_MTU))
        self.links.append(_map_item(link, entry))

    def _endpoint_text(self, end: _End) -> str:
        if end.network:
            return end.node
        if end.node in self.bridges:
            return self.bridges[end.node]  # the bridge's own port name is netemu's to choose
        return f"{end.node}:{end.iface}"


@dataclass
class _End:
    node: str
    iface: str
    item: Item
    ipv4: Item | None
    ipv6: Item | None
    network: bool = False  # `node` is a netemu network's name


# --- entry points -------------------------------------------------------------------------------------


def load_containerlab(path: str | Path) -> Topology:
    """Read and validate a containerlab topology file; errors name its own lines and keys."""
    path = Path(path)
    filename = str(path)
    try:
        data = read_lab_file(path, loader.MAX_FILE_BYTES)
    except OSError as exc:
        raise TopologyError(filename, None, "", f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > loader.MAX_FILE_BYTES:
        raise TopologyError(filename, None, "", f"file is larger than {loader.MAX_FILE_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TopologyError(filename, line, "", f"not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None
    try:
        return _load(text, path)
    except Invalid as exc:
        raise TopologyError(filename, exc.line, exc.path, exc.reason) from None


def _load(text: str, path: Path) -> Topology:
    text = _expand_lines(text, os.environ)
    _refuse_templates(text)
    root = parse(text)
    if root is None:
        raise Invalid(1, "", "the file is empty: expected a mapping with 'name' and 'topology'")
    converter = _Converter(root, path)
    tree = converter.convert()
    topology = loader._topology(tree, path)  # the package's own loader, reused whole
    for name, extra in converter.after.items():
        _apply_after(topology.nodes[name], extra)
    _check_wait_loops(topology, converter)
    return topology


def _apply_after(node: Node, extra: dict[str, object]) -> None:
    """Fields netemu's file loader does not read (yet), set on the loaded node."""
    for key in ("entrypoint", "labels", "wait_for"):
        if key in extra:
            setattr(node, key, extra[key])


def _check_wait_loops(topology: Topology, converter: _Converter) -> None:
    """wait-for must not loop: nodes that wait for each other would never start."""
    loop = find_loop(topology.nodes, lambda name: [("wait-for", t) for t in topology.nodes[name].wait_for])
    if loop is not None:
        name, _, target = loop[-1]
        text = " -> ".join([*(node for node, _, _ in loop), target])
        converter.wait_items[name][target].fail(f"wait-for makes a loop ({text})")


def is_containerlab_file(path: str | Path) -> bool:
    """The names containerlab gives its topology files."""
    return str(path).endswith((".clab.yml", ".clab.yaml"))


__all__ = ["expand_env", "is_containerlab_file", "load_containerlab"]
