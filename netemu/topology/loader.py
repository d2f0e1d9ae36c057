"""Topology file -> validated `Topology` (docs/contract.md §1). Pure: it never touches the kernel.

`load_topology` picks the format by the file's name: a containerlab file (`*.clab.yml`), a
Kathara lab (`lab.conf`, or a directory holding one) or netemu's own YAML. Every problem raises
`TopologyError(file, line, key_path, reason)`; the first problem found wins.
"""

from __future__ import annotations

import bisect
import importlib
from collections.abc import Callable, Iterable
from difflib import get_close_matches
from pathlib import Path
from typing import NoReturn

from netemu.errors import InputError, TopologyError
from netemu.topology import _values as values
from netemu.topology._links import parse_links
from netemu.topology._order import Step, find_loop
from netemu.topology._tree import Invalid, Item, parse, read_lab_file
from netemu.topology.model import (
    CONTAINER,
    SHARED_KINDS,
    AnyCheck,
    Bind,
    Check,
    CommandCheck,
    IPInterface,
    IPNetwork,
    Limits,
    Link,
    Network,
    Node,
    Route,
    RouteCheck,
    Topology,
)

MAX_FILE_BYTES = 4 << 20  # a topology is a few KiB; refuse to feed a huge file to the YAML parser
TOP_KEYS = ("name", "defaults", "nodes", "networks", "links", "checks")
EXTENSION_PREFIX = "x-"  # top-level keys ignored but for their anchors
NODE_KEYS = (
    "image", "hostname", "dns", "dns_search", "extra_hosts", "env", "network", "ipc", "pid",
    "limits", "userns", "sysctls", "routes", "binds", "cmd", "exec", "ports",
    "privileged", "cap_add", "cap_drop", "devices", "read_only",
    "entrypoint", "files", "wait_for", "labels", "systemctl",
)  # fmt: skip
DEEP_MERGED = ("limits", "env", "sysctls", "extra_hosts", "labels")  # defaults merge into these key by key
BASE_DIR_KEYS = ("binds", "files")  # paths in them are relative to the topology file's directory
NETWORK_MODES = ("none", "bridge", "host")  # or container:<node>
# Docker's --ipc and --pid modes, or container:<node>. Absent, a node's IPC namespace is its own
# and other nodes may join it (Docker's `shareable`); `private` lets none join it.
IPC_MODES = ("shareable", "private", "host")
PID_MODES = ("private", "host")
IPC_SYSCTLS = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")  # they belong to the IPC namespace
NAMESPACE_WORDS = {"network": "network", "ipc": "IPC namespace", "pid": "PID namespace"}
NETWORK_KEYS = ("subnet", "gateway", "nat", "uplink", "mtu", "driver", "bridge")
EXPECTS = ("reachable", "unreachable", "refused")
PROTOS = ("icmp", "tcp", "udp", "arp")  # arp: ARP for an IPv4 neighbour, NDP for an IPv6 one
CHECK_KEYS = ("from", "to", "expect", "proto", "port", "via", "path", "seen_as", "within", "timeout")
PATH_MODES = ("ordered", "exact")
ROUTE_CHECK_KEYS = ("on", "route", "via", "dev", "proto", "table", "expect", "within")
ROUTE_EXPECTS = ("present", "absent")
COMMAND_CHECK_KEYS = ("on", "exec", "exit", "json", "regex", "within", "timeout")
LAB_NAME_MAX = 12  # it prefixes every kernel object name, and interface names stop at 15
NODE_NAME_MAX = 63
NETWORK_NAME_MAX = 15  # a bridge is an interface
ARG_STRING_MAX = 32 * 4096  # MAX_ARG_STRLEN, the terminating NUL included
ARGS_TOTAL_MAX = 1 << 20  # well inside the kernel's argument space (a quarter of an 8 MiB stack)
LABEL_KEY_MAX = 255
LABEL_VALUE_MAX = 4096
# The other formats, by the file's name: (format, module, loader function), imported only when
# used (their modules may be missing from a netemu that does not support them).
CONTAINERLAB = ("containerlab", "netemu.topology.containerlab", "load_containerlab")
KATHARA = ("Kathara", "netemu.topology.kathara", "load_kathara")
KATHARA_FILE = "lab.conf"


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file of any format netemu reads (see the module's doc)."""
    path = Path(path)
    foreign = _foreign_format(path)
    if foreign is not None:
        return _foreign_loader(path, *foreign)(path)
    return _load_netemu_file(path)


def is_foreign(path: str | Path) -> bool:
    """Whether `path` is a lab of another tool's (containerlab, Kathara), by its name."""
    return _foreign_format(Path(path)) is not None


def _foreign_format(path: Path) -> tuple[str, str, str] | None:
    """The other format `path` is written in, by its name; None for netemu's own."""
    if path.name.endswith((".clab.yml", ".clab.yaml")):
        return CONTAINERLAB
    if path.name == KATHARA_FILE:
        return KATHARA
    if path.is_dir():
        if (path / KATHARA_FILE).is_file():
            return KATHARA
        raise TopologyError(str(path), None, "", f"is a directory without a {KATHARA_FILE} (a Kathara lab); "
                            "a topology is a file")
    return None


def _foreign_loader(path: Path, fmt: str, module: str, function: str) -> Callable[[Path], Topology]:
    """The loader of another format. Only a missing module (or function) means the format is
    unsupported: an error inside it is that loader's own and goes on as it is."""
    try:
        return getattr(importlib.import_module(module), function)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
    except AttributeError:
        pass
    raise InputError(f"{path}: the {fmt} format is not supported by this netemu ({module}.{function} is missing)")


def _load_netemu_file(path: Path) -> Topology:
    """Read and validate a topology file in netemu's own format."""
    try:
        data = read_lab_file(path, MAX_FILE_BYTES)  # a regular file only: a FIFO would block
    except OSError as exc:
        raise TopologyError(str(path), None, "", f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise TopologyError(str(path), None, "", f"file is larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TopologyError(str(path), line, "", f"not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None
    return _load(text, str(path), path)


def load_topology_text(text: str, filename: str = "<string>") -> Topology:
    """Validate topology YAML given as a string; `filename` is only used in error messages."""
    return _load(text, filename, None)


def _load(text: str, filename: str, path: Path | None) -> Topology:
    try:
        topo = _topology(parse(text), path)
        topo.origin = filename
        return topo
    except Invalid as exc:
        raise TopologyError(filename, exc.line, exc.path, exc.reason) from None


def _topology(root: Item | None, path: Path | None) -> Topology:
    if root is None:
        raise Invalid(1, "", "the file is empty: expected a mapping with 'name' and 'nodes'")
    # `x-` keys hold what anchors name (Compose's extension fields); netemu reads nothing else of them
    extensions = {key for key in root.mapping() if key.startswith(EXTENSION_PREFIX)}
    top = root.mapping([*TOP_KEYS, *extensions], required=("name", "nodes"))
    name = top["name"].convert(lambda text: values.name(text, "lab", LAB_NAME_MAX))
    base = str(path.absolute().parent) if path is not None else None  # relative binds and files start there
    nodes = _nodes(top["nodes"], top.get("defaults"), base)
    networks = _networks(top.get("networks"), nodes)
    links = parse_links(top.get("links"), nodes, networks)
    checks = parse_checks(top.get("checks"), nodes, links)
    return Topology(name=name, path=path, nodes=nodes, networks=networks, links=links, checks=checks)


# --- nodes ------------------------------------------------------------------------------------


def _nodes(item: Item, defaults_item: Item | None, base: str | None) -> dict[str, Node]:
    defaults = _present(defaults_item.mapping(NODE_KEYS)) if _given(defaults_item) else {}
    entries = item.mapping()
    if not entries:
        item.fail("at least one node is required")
    nodes: dict[str, Node] = {}
    fields_of: dict[str, dict[str, Item]] = {}
    folded: dict[str, str] = {}
    for name, entry in entries.items():
        _check_node_name(entry, name, folded, entries)
        own = _present(entry.mapping(NODE_KEYS)) if _given(entry) else {}
        fields_of[name] = _merge(defaults, own)
        nodes[name] = _node(name, entry, fields_of[name], base)
    where = {name: {kind: fields.get(kind, entries[name]) for kind in (*SHARED_KINDS, "wait_for")}
             for name, fields in fields_of.items()}  # the item an error about a shared namespace names
    for name, fields in fields_of.items():
        if "wait_for" in fields:
            _check_wait_for(nodes, name, fields["wait_for"])
    for kind in SHARED_KINDS:
        settled: set[str] = set()
        for name in nodes:
            _check_shared_namespace(nodes, name, kind, where[name][kind], settled)
    _check_start_order(nodes, where)
    for name, fields in fields_of.items():
        _check_ipc_pid_sharing(nodes, nodes[name], where[name])
        _check_machine_ipc(nodes, nodes[name], fields)
    _check_published_ports(nodes, fields_of)
    return nodes


def _given(item: Item | None) -> bool:
    return item is not None and item.value is not None


def _present(fields: dict[str, Item]) -> dict[str, Item]:
    """A null value means "not set here", so the default (or the built-in one) applies."""
    return {key: item for key, item in fields.items() if item.value is not None}


def _merge(defaults: dict[str, Item], own: dict[str, Item]) -> dict[str, Item]:
    """Node keys win; the map-valued keys in DEEP_MERGED merge one level deeper."""
    merged = dict(defaults)
    for key, item in own.items():
        base = merged.get(key)
        if key in DEEP_MERGED and base and isinstance(base.value, dict) and isinstance(item.value, dict):
            inner = {**base.value, **_present(item.value)}
            item = Item(inner, item.line, item.path, key_line=item.key_line)
        merged[key] = item
    return merged


def _node(name: str, entry: Item, fields: dict[str, Item], base: str | None) -> Node:
    node = Node(name=name, line=entry.key_line or entry.line)
    for key, item in fields.items():
        value = _PATH_PARSERS[key](item, base) if key in BASE_DIR_KEYS else _NODE_PARSERS[key](item)
        setattr(node, key, value)
    if not node.hostname:
        try:
            node.hostname = values.default_hostname(name)
        except ValueError:
            entry.fail(f"node name '{name}' is not a valid hostname; set 'hostname'", at_key=True)
    _check_host_network(node, fields)
    _check_argument_sizes(node, fields)
    _check_machine_binds(node, fields)
    return node


def _check_node_name(entry: Item, name: str, folded: dict[str, str], entries: dict[str, Item]) -> None:
    """Docker's alphabet (containerlab's and Kathara's names), and no two names that only case
    or '_' against '-' tell apart: their host names and /etc/hosts entries would be one."""
    try:
        values.node_name(name, NODE_NAME_MAX)
    except ValueError as exc:
        entry.fail(str(exc), at_key=True)
    other = folded.setdefault(values.name_fold(name), name)
    if other != name:
        entry.fail(f"node name '{name}' differs from node '{other}' (line {entries[other].key_line}) only in case "
                   "or in '_' against '-': their host names would be the same", at_key=True)


def _check_wait_for(nodes: dict[str, Node], name: str, item: Item) -> None:
    """`wait_for:` names other nodes of the file, each once (loops: _check_start_order)."""
    seen: set[str] = set()
    for entry, target in zip(item.items(), nodes[name].wait_for, strict=True):
        if target not in nodes:
            entry.fail(f"wait_for: unknown node '{target}'{_suggest(target, nodes)}")
        if target == name:
            entry.fail("wait_for: a node cannot wait for itself")
        if target in seen:
            entry.fail(f"wait_for: node '{target}' is listed twice")
        seen.add(target)


def _check_name(entry: Item, name: str, what: str, max_len: int) -> None:
    """Names are mapping keys, so their errors point at the key's line."""
    try:
        values.name(name, what, max_len)
    except ValueError as exc:
        entry.fail(str(exc), at_key=True)


def _check_argument_sizes(node: Node, fields: dict[str, Item]) -> None:
    """Commands and the environment reach execve(2): one string of 128 KiB or more, or all of
    them past the argument space, fail there with E2BIG."""
    env = [f"{key}={value}" for key, value in node.env.items()]
    argvs_of = (("cmd", [node.cmd or []]), ("entrypoint", [node.entrypoint or []]), ("exec", node.exec),
                ("env", [env]))
    for key, argvs in argvs_of:
        for argv in argvs:
            sizes = [len(arg.encode("utf-8", "surrogatepass")) + 1 for arg in argv]
            if any(size > ARG_STRING_MAX for size in sizes):
                fields[key].fail(f"a string of more than {ARG_STRING_MAX - 1} bytes cannot be passed to a program")
            if sum(sizes) + sum(len(e) + 1 for e in env) > ARGS_TOTAL_MAX:
                fields[key].fail(f"command and environment hold more than {ARGS_TOTAL_MAX >> 10} KiB")


def _check_machine_binds(node: Node, fields: dict[str, Item]) -> None:
    """The machine's /, /proc, /sys and /dev (and what lies below the last three) bound into a
    host hand it the machine: only a privileged node may have them. Symlinks to them are
    resolved at `up`, which knows the machine's files."""
    if node.privileged:
        return
    for bind, item in zip(node.binds, fields["binds"].items() if node.binds else [], strict=True):
        reason = values.machine_path_reason(bind.source)
        if reason:
            item.fail(reason)


def _check_host_network(node: Node, fields: dict[str, Item]) -> None:
    """A `network: host` node runs in the machine's network namespace: nothing may change it."""
    if node.network != "host":
        return
    for key in ("routes", "ports"):
        if getattr(node, key):
            fields[key].fail(f"'{key}' cannot be used with network: host (it would change the machine)")
    for key in node.sysctls:
        if key.startswith("net."):
            fields["sysctls"].value[key].fail(f"sysctl '{key}' with network: host would change the machine")


def _check_shared_namespace(nodes: dict[str, Node], name: str, kind: str, where: Item, settled: set[str]) -> None:
    """KIND: container:<node> must name another node, and following the chain of KIND must not
    loop. `settled` holds the nodes whose chains of KIND are already known to end well, so a
    chain of n nodes costs O(n) in all rather than O(n^3)."""
    chain = [name]
    seen = {name}
    current = getattr(nodes[name], kind)
    while current.startswith(CONTAINER) and chain[-1] not in settled:
        target = current.removeprefix(CONTAINER)
        if target not in nodes:
            where.fail(f"{kind}: container:{target} names an unknown node{_suggest(target, nodes)}")
        if target == name and len(chain) == 1:
            where.fail(f"{kind}: container:<node> must name another node")
        if target in seen:
            where.fail(f"{kind}: {getattr(nodes[name], kind)} makes a loop ({' -> '.join([*chain, target])})")
        chain.append(target)
        seen.add(target)
        current = getattr(nodes[target], kind)
    settled.update(chain)


def _check_start_order(nodes: dict[str, Node], where: dict[str, dict[str, Item]]) -> None:
    """A node starts after every node it shares a namespace with and every node it waits for,
    so the `container:` keys of all three kinds and `wait_for:` together must not loop (a:
    network: container:b, b: pid: container:a)."""
    loop = find_loop(nodes, lambda name: _start_after(nodes[name]))
    if loop is not None:
        _start_order_loop(where, loop)


def _start_after(node: Node) -> list[tuple[str, str]]:
    """(key, node) for each node that must run before this one starts."""
    return [*node.shares(), *(("wait_for", target) for target in node.wait_for)]


def _start_order_loop(where: dict[str, dict[str, Item]], loop: list[Step]) -> NoReturn:
    """Report a loop of `container:` and `wait_for:` keys at the key that leaves its first node."""
    first_node, first_kind, first_target = loop[0]
    chain = ", ".join(f"{name} -> {target} ({kind})" for name, kind, target in loop)
    keys = "container: and wait_for" if any(kind == "wait_for" for _, kind, _ in loop) else "container:"
    written = f"wait_for: {first_target}" if first_kind == "wait_for" else f"{first_kind}: container:{first_target}"
    where[first_node][first_kind].fail(f"{written} makes a start-order loop with the other {keys} keys ({chain})")


def _check_ipc_pid_sharing(nodes: dict[str, Node], node: Node, where: dict[str, Item]) -> None:
    """What the kernel or netemu's safety rules refuse in `ipc:` and `pid:` (docs/file-format.md,
    "Shared IPC and PID namespaces"). Docker shares these namespaces only inside one user
    namespace; netemu gives every `userns: true` node a user namespace of its own, so only two
    nodes without one may share (and `host` is the machine's, outside every node's)."""
    for kind in ("ipc", "pid"):
        mode = getattr(node, kind)
        if mode == "host" and node.userns:
            where[kind].fail(f"{kind}: host cannot be used with userns: true: the machine's "
                             f"{NAMESPACE_WORDS[kind]} is outside the node's user namespace")
        if not mode.startswith(CONTAINER):
            continue
        target = nodes[mode.removeprefix(CONTAINER)]
        if node.userns or target.userns:
            who = f"node '{node.name}'" if node.userns else f"node '{target.name}'"
            where[kind].fail(f"{kind}: {mode} needs both nodes in one user namespace, but {who} has userns: true "
                             "(a user namespace of its own)")
        if kind == "ipc" and target.ipc == "private":
            where[kind].fail(f"ipc: {mode}: node '{target.name}' has ipc: private, which no other node may join "
                             "(leave ipc out there, or make it shareable)")


def _check_machine_ipc(nodes: dict[str, Node], node: Node, fields: dict[str, Item]) -> None:
    """IPC sysctls (kernel.shm*, kernel.msg*, kernel.sem*, fs.mqueue.*) set in the machine's IPC
    namespace would change the machine: refused on `ipc: host`, and on a chain of
    `ipc: container:` that ends at such a node."""
    keys = [key for key in node.sysctls if key.startswith(IPC_SYSCTLS)]
    if not keys:
        return
    owner = node
    while owner.ipc.startswith(CONTAINER):  # chains are known to end (_check_shared_namespace)
        owner = nodes[owner.ipc.removeprefix(CONTAINER)]
    if owner.ipc == "host":
        through = "" if owner is node else f" (through node '{owner.name}')"
        fields["sysctls"].value[keys[0]].fail(f"sysctl '{keys[0]}' with ipc: {node.ipc}{through} would change "
                                              "the machine")


def _check_published_ports(nodes: dict[str, Node], fields_of: dict[str, dict[str, Item]]) -> None:
    """A machine port (and protocol) can be published by one node only."""
    owners: dict[str, str] = {}
    for name, fields in fields_of.items():
        if "ports" not in fields:
            continue
        for port, item in zip(nodes[name].ports, fields["ports"].items(), strict=True):
            outside = port.split(":")[0] + "/" + port.split("/")[1]  # "8080:80/tcp" -> "8080/tcp"
            if outside in owners:
                item.fail(f"port {outside} of the machine is already published by {owners[outside]}")
            owners[outside] = f"node '{name}' (line {item.line})"


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = get_close_matches(name, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _string(item: Item) -> str:
    text = item.text()
    if not text:
        item.fail("must not be empty")
    return text


def _string_list(item: Item) -> list[str]:
    return [_string(entry) for entry in item.items()]


def _argv(item: Item) -> list[str]:
    """A string runs through /bin/sh -c; a list is the argv itself."""
    if isinstance(item.value, list):
        argv = _string_list(item)
        if not argv:
            item.fail("the command must not be empty")
        return argv
    return ["/bin/sh", "-c", _string(item)]


def _scalar_text(item: Item) -> str:
    """Env and sysctl values: the text as written, booleans as 1/0 (what /proc/sys expects)."""
    value = item.scalar()
    if isinstance(value, bool):
        return "1" if value else "0"
    assert item.raw is not None
    return item.raw


def _keyed(item: Item, check_key: Callable[[str], object], convert: Callable[[Item], str]) -> dict[str, str]:
    """A map whose keys are validated by `check_key` and whose values are converted to strings."""
    result: dict[str, str] = {}
    for key, child in item.mapping().items():
        try:
            check_key(key)
        except ValueError as exc:
            child.fail(str(exc), at_key=True)
        result[key] = convert(child)
    return result


def _network_mode(item: Item) -> str:
    mode = _string(item)
    if mode in NETWORK_MODES or (mode.startswith("container:") and mode != "container:"):
        return mode
    item.fail(f"invalid network '{mode}': expected none, bridge, host or container:<node>")


def _namespace_mode(kind: str, modes: tuple[str, ...]) -> Callable[[Item], str]:
    """The parser of `ipc:` or `pid:`: one of `modes`, or container:<node> (checked later, once
    every node is known)."""

    def parse(item: Item) -> str:
        mode = _string(item)
        if mode in modes or (mode.startswith(CONTAINER) and mode != CONTAINER):
            return mode
        item.fail(f"invalid {kind} '{mode}': expected {', '.join(modes)} or container:<node>")

    return parse


def _limits(item: Item) -> Limits:
    fields = _present(item.mapping(("cpus", "memory", "pids")))
    cpus = fields["cpus"].convert(values.cpus, typed=True) if "cpus" in fields else None
    memory = fields["memory"].convert(values.memory, typed=True) if "memory" in fields else None
    pids = fields["pids"].integer(1, 4_194_304) if "pids" in fields else None  # PID_MAX_LIMIT
    return Limits(cpus=cpus, memory=memory, pids=pids)


def _routes(item: Item) -> list[Route]:
    return [_route(entry) for entry in item.items()]


def _route(item: Item) -> Route:
    fields = _present(item.mapping(("dst", "via", "dev"), required=("dst",)))
    dst_text = _string(fields["dst"])
    dst = None if dst_text == "default" else fields["dst"].convert(values.ip_network)
    via = fields["via"].convert(values.ip_address) if "via" in fields else None
    dev = fields["dev"].convert(values.iface) if "dev" in fields else None
    if via is None and dev is None:
        item.fail("a route needs 'via', 'dev' or both")
    if dst is not None and via is not None and dst.version != via.version:
        fields["via"].fail(f"gateway {via} is IPv{via.version} but destination {dst} is IPv{dst.version}")
    return Route(dst=str(dst) if dst is not None else "default", via=via, dev=dev)


def _bind(item: Item, base: str | None) -> Bind:
    source, target, readonly = item.convert(lambda text: values.bind(text, base))
    return Bind(source=source, target=target, readonly=readonly)


def _files(item: Item, base: str | None) -> list[str]:
    """A directory, or a list of them, copied over the node's root in that order."""
    return [entry.convert(lambda text: values.files_dir(text, base)) for entry in _one_or_many(item)]


def _entrypoint(item: Item) -> list[str]:
    """As `cmd` (a string runs through /bin/sh -c, a list is the argv), but empty is allowed:
    `entrypoint: ""` or `[]` removes the image's Entrypoint."""
    if isinstance(item.value, list):
        return _string_list(item)
    return ["/bin/sh", "-c", item.text()] if item.text() else []


def _label_key(key: str) -> str:
    if not key or len(key) > LABEL_KEY_MAX or not key.isprintable():
        raise ValueError(f"invalid label '{key[:100]}': 1 to {LABEL_KEY_MAX} printable characters")
    return key


def _label_value(item: Item) -> str:
    text = item.text()
    if len(text) > LABEL_VALUE_MAX or not text.isprintable():
        item.fail(f"a label's value is at most {LABEL_VALUE_MAX} printable characters")
    return text


_PATH_PARSERS: dict[str, Callable[[Item, str | None], object]] = {
    "binds": lambda item, base: [_bind(entry, base) for entry in item.items()],
    "files": _files,
}


_NODE_PARSERS = {
    "image": lambda item: item.convert(values.image),
    "hostname": lambda item: item.convert(values.hostname),
    "dns": lambda item: [str(entry.convert(values.ip_address)) for entry in item.items()],
    "dns_search": lambda item: [entry.convert(lambda t: values.hostname(t, 253)) for entry in item.items()],
    "extra_hosts": lambda item: _keyed(
        item, lambda key: values.hostname(key, 253), lambda child: str(child.convert(values.ip_address))
    ),
    "env": lambda item: _keyed(item, values.env_name, _scalar_text),
    "network": _network_mode,
    "ipc": _namespace_mode("ipc", IPC_MODES),
    "pid": _namespace_mode("pid", PID_MODES),
    "limits": _limits,
    "userns": Item.boolean,
    "sysctls": lambda item: _keyed(item, values.sysctl_name, _scalar_text),
    "routes": _routes,
    "cmd": _argv,
    "exec": lambda item: [_argv(entry) for entry in item.items()],
    "ports": lambda item: [entry.convert(values.published_port) for entry in item.items()],
    "privileged": Item.boolean,
    "cap_add": lambda item: [entry.convert(values.capability) for entry in item.items()],
    "cap_drop": lambda item: [entry.convert(values.capability) for entry in item.items()],
    "devices": lambda item: [entry.convert(values.device_path) for entry in item.items()],
    "read_only": Item.boolean,
    "entrypoint": _entrypoint,
    "wait_for": lambda item: [entry.text() for entry in item.items()],
    "labels": lambda item: _keyed(item, _label_key, _label_value),
    "systemctl": Item.boolean,
}


# --- networks ---------------------------------------------------------------------------------


def _networks(item: Item | None, nodes: dict[str, Node]) -> dict[str, Network]:
    if not _given(item):
        return {}
    assert item is not None
    networks: dict[str, Network] = {}
    uplinks: dict[str, str] = {}
    joined: dict[str, str] = {}
    for name, entry in item.mapping().items():
        _check_name(entry, name, "network", NETWORK_NAME_MAX)
        if name in nodes:
            entry.fail(f"network '{name}' has the same name as a node", at_key=True)
        networks[name] = net = _network(name, entry)
        if net.uplink is not None:
            if net.uplink in uplinks:
                owner = uplinks[net.uplink]
                entry.value["uplink"].fail(f"uplink {net.uplink} already belongs to network '{owner}'")
            uplinks[net.uplink] = name
        if net.bridge is not None:
            if net.bridge in joined:
                entry.value["bridge"].fail(f"bridge {net.bridge} is already joined by network '{joined[net.bridge]}'")
            joined[net.bridge] = name
    _check_network_overlaps(item, networks)
    return networks


def _network(name: str, entry: Item) -> Network:
    fields = _present(entry.mapping(NETWORK_KEYS)) if _given(entry) else {}
    net = Network(name=name, line=entry.key_line or entry.line)
    if "subnet" in fields:
        net.subnets = _subnets(fields["subnet"])
    if "gateway" in fields:
        net.gateways = _gateways(fields["gateway"], net.subnets)
    if "nat" in fields:
        net.nat = fields["nat"].boolean()
        if net.nat and not any(subnet.version == 4 for subnet in net.subnets):
            fields["nat"].fail("nat needs an IPv4 subnet")
    if "uplink" in fields:
        net.uplink = fields["uplink"].convert(values.iface)
    if "mtu" in fields:
        net.mtu = fields["mtu"].integer(68, 65535)
        if net.mtu < 1280 and any(subnet.version == 6 for subnet in net.subnets):
            fields["mtu"].fail(f"mtu {net.mtu} is below 1280, the IPv6 minimum")
    if "driver" in fields:
        _driver(net, fields)
    if "bridge" in fields:
        _machine_bridge(net, fields)
    return net


def _machine_bridge(net: Network, fields: dict[str, Item]) -> None:
    """`bridge: NAME` joins a bridge the machine already has (containerlab's `kind: bridge`): the
    hosts' veths become its ports, and nothing else of it is netemu's to change, so what would
    change it (its addresses, its MTU, NAT through it, another interface in it) is refused."""
    net.bridge = fields["bridge"].convert(values.iface)
    for key in ("gateway", "nat", "mtu", "uplink"):
        if key in fields:
            fields[key].fail(f"'{key}' cannot be used with bridge: {net.bridge} (the machine's bridge is "
                             "joined as it is; set its addresses and firewall on the machine)")
    if net.driver != "bridge":
        fields["driver"].fail("a network joining a machine bridge has the bridge driver")


def _driver(net: Network, fields: dict[str, Item]) -> None:
    """bridge (a Linux bridge, the default) or macvlan (Docker's driver: each host gets a
    macvlan interface on the uplink, no bridge at all)."""
    net.driver = fields["driver"].text()
    if net.driver not in ("bridge", "macvlan"):
        fields["driver"].fail(f"unknown driver '{net.driver}': expected bridge or macvlan")
    if net.driver == "macvlan":
        if net.uplink is None:
            fields["driver"].fail("a macvlan network needs an uplink (its parent interface)")
        if net.nat or net.gateways:
            fields["driver"].fail("a macvlan network has no bridge: nat and gateway do not apply")


def _one_or_many(item: Item) -> list[Item]:
    return item.items() if isinstance(item.value, list) else [item]


def _subnets(item: Item) -> list[IPNetwork]:
    subnets: list[IPNetwork] = []
    for entry in _one_or_many(item):
        subnet = entry.convert(values.ip_network)
        if any(other.version == subnet.version for other in subnets):
            entry.fail(f"more than one IPv{subnet.version} subnet (at most one per IP family)")
        subnets.append(subnet)
    return subnets


def _gateways(item: Item, subnets: list[IPNetwork]) -> list[IPInterface]:
    if not subnets:
        item.fail("a gateway needs a subnet")
    gateways: list[IPInterface] = []
    for entry in _one_or_many(item):
        address = entry.convert(values.ip_address)
        subnet = next((net for net in subnets if net.version == address.version), None)
        if subnet is None or address not in subnet:
            inside = f"subnet {subnet}" if subnet else f"any IPv{address.version} subnet"
            entry.fail(f"gateway {address} is outside {inside}")
        if any(gw.version == address.version for gw in gateways):
            entry.fail(f"more than one IPv{address.version} gateway")
        gateways.append(entry.convert(lambda text, p=subnet.prefixlen: values.ip_interface(text, p)))
    return gateways


def _check_network_overlaps(item: Item, networks: dict[str, Network]) -> None:
    """Two bridges holding an address of overlapping subnets would make the machine's routing ambiguous."""
    seen = _SubnetIndex()
    for name, net in networks.items():
        for subnet in net.subnets if net.gateways else []:
            clash = seen.overlapping(subnet)
            if clash is not None:
                entry = item.value[name].value["subnet"]
                entry.fail(f"subnet {subnet} overlaps {clash[1]} of network '{clash[0]}'")
            seen.add(name, subnet)


class _SubnetIndex:
    """Subnets seen so far, found again in O(log n): CIDR blocks overlap only when one holds the
    other, so a new block overlaps an earlier one that is among its supernets (a dict look-up per
    prefix length) or that starts inside it (a bisection of the sorted start addresses)."""

    def __init__(self) -> None:
        self.by_net: dict[IPNetwork, str] = {}
        self.starts: dict[int, list[tuple[int, int]]] = {4: [], 6: []}  # (first address, order)
        self.order: list[tuple[str, IPNetwork]] = []

    def overlapping(self, subnet: IPNetwork) -> tuple[str, IPNetwork] | None:
        for prefix in range(subnet.prefixlen, -1, -1):
            outer = subnet.supernet(new_prefix=prefix)
            if outer in self.by_net:
                return self.by_net[outer], outer
        starts = self.starts[subnet.version]
        first, last = int(subnet.network_address), int(subnet.broadcast_address)
        index = bisect.bisect_left(starts, (first, -1))
        if index < len(starts) and starts[index][0] <= last:
            return self.order[starts[index][1]]
        return None

    def add(self, name: str, subnet: IPNetwork) -> None:
        self.by_net.setdefault(subnet, name)
        bisect.insort(self.starts[subnet.version], (int(subnet.network_address), len(self.order)))
        self.order.append((name, subnet))


# --- checks -----------------------------------------------------------------------------------


def parse_checks(item: Item | None, nodes: dict[str, Node], links: list[Link]) -> list[AnyCheck]:
    """Each entry is a probe check (`from`/`to`), a route check (`on` + `route`) or a command
    check (`on` + `exec`), told apart by those keys."""
    if not _given(item):
        return []
    assert item is not None
    ifaces = {(ep.node, ep.iface) for link in links for ep in link.endpoints if not ep.is_network}
    return [_any_check(entry, nodes, ifaces) for entry in item.items()]


def _any_check(item: Item, nodes: dict[str, Node], ifaces: set[tuple[str | None, str | None]]) -> AnyCheck:
    keys = set(item.mapping())
    if "route" in keys:
        return _route_check(item, nodes)
    if "exec" in keys:
        return _command_check(item, nodes)
    if "on" in keys and "from" not in keys:
        item.fail("a check with `on:` needs `route:` (a route check) or `exec:` (a command check)")
    return _check(item, nodes, ifaces)


def _route_check(item: Item, nodes: dict[str, Node]) -> RouteCheck:
    fields = _present(item.mapping(ROUTE_CHECK_KEYS, required=("on", "route")))
    check = RouteCheck(on=_node_ref(fields["on"], nodes), route=_route_destination(fields["route"]), line=item.line)
    if "via" in fields:
        entries = fields["via"].items() if isinstance(fields["via"].value, list) else [fields["via"]]
        check.via = [str(entry.convert(values.ip_address)) for entry in entries]
    if "dev" in fields:
        check.dev = fields["dev"].convert(values.iface)
    for key, check_value in (("proto", _route_protocol), ("table", _route_table)):
        if key in fields:
            setattr(check, key, fields[key].convert(check_value))
    if "expect" in fields:
        check.expect = _choice(fields["expect"], ROUTE_EXPECTS)
    if "within" in fields:
        check.within = fields["within"].convert(values.duration, typed=True)
    return check


def _route_destination(item: Item) -> str:
    text = _string(item)
    if text == "default":
        return text
    return str(item.convert(values.ip_network))


def _route_protocol(value: object) -> str:
    values.protocol_number(str(value))
    return str(value)


def _route_table(value: object) -> str:
    values.table_number(str(value))
    return str(value)


def _command_check(item: Item, nodes: dict[str, Node]) -> CommandCheck:
    fields = _present(item.mapping(COMMAND_CHECK_KEYS, required=("on", "exec")))
    check = CommandCheck(on=_node_ref(fields["on"], nodes), exec=_argv(fields["exec"]), line=item.line)
    if "exit" in fields:
        check.exit = None if fields["exit"].scalar() == "any" else fields["exit"].integer(0, 255)
    if "json" in fields:
        check.json = {path: _json_value(entry) for path, entry in fields["json"].mapping().items()}
        for path, entry in fields["json"].mapping().items():
            entry.convert(lambda _value, path=path: _json_path(path))
    if "regex" in fields:
        check.regex = fields["regex"].convert(_regex)
    for key in ("within", "timeout"):
        if key in fields:
            setattr(check, key, fields[key].convert(values.duration, typed=True))
    return check


def _json_value(item: Item) -> object:
    """The plain value a JSON path must equal: a scalar, a list or a map, as written."""
    if isinstance(item.value, list):
        return [_json_value(entry) for entry in item.items()]
    if isinstance(item.value, dict):
        return {key: _json_value(entry) for key, entry in item.mapping().items()}
    return item.scalar()


def _json_path(path: str) -> str:
    values.parse_path(path)
    return path


def _regex(value: object) -> str:
    import re

    try:
        re.compile(str(value))
    except re.error as e:
        raise ValueError(f"invalid regular expression: {e}") from None
    return str(value)


def _node_ref(item: Item, nodes: dict[str, Node]) -> str:
    name = _string(item)
    if name not in nodes:
        item.fail(f"unknown node '{name}'{_suggest(name, nodes)}")
    return name


def _check_target(item: Item, nodes: dict[str, Node], ifaces: set[tuple[str | None, str | None]]) -> str:
    """An address, a node name, or node:iface (tried in that order: IPv6 addresses contain ':')."""
    text = _string(item)
    try:
        return str(values.ip_address(text))
    except ValueError:
        pass
    node, sep, iface = text.partition(":")
    if node not in nodes:
        item.fail(f"unknown node '{node}'{_suggest(node, nodes)} (expected a node, node:iface or an address)")
    if sep and (node, iface) not in ifaces:
        item.fail(f"node '{node}' has no interface '{iface}' in links")
    return text


def _check(item: Item, nodes: dict[str, Node], ifaces: set[tuple[str | None, str | None]]) -> Check:
    fields = _present(item.mapping(CHECK_KEYS, required=("from", "to")))
    src, dst = _node_ref(fields["from"], nodes), _check_target(fields["to"], nodes, ifaces)
    check = Check(src=src, dst=dst, line=item.line)
    for key, allowed in (("expect", EXPECTS), ("proto", PROTOS)):
        if key in fields:
            setattr(check, key, _choice(fields[key], allowed))
    _check_port(check, fields, item)
    check.via = [_via_step(entry, nodes) for entry in fields["via"].items()] if "via" in fields else []
    if check.via and check.proto == "arp":
        fields["via"].fail("via is not used with proto arp: ARP and NDP reach neighbours only")
    if "path" in fields:
        check.path = _choice(fields["path"], PATH_MODES)
    if "seen_as" in fields:
        check.seen_as = str(fields["seen_as"].convert(values.ip_address))
    if "within" in fields:
        check.within = fields["within"].convert(values.duration, typed=True)
    if "timeout" in fields:
        check.timeout = fields["timeout"].convert(values.duration, typed=True)
    return check


def _via_step(item: Item, nodes: dict[str, Node]) -> str:
    """A step of `via:`: a node, or an address (a router whose address only its daemon set)."""
    text = _string(item)
    try:
        return str(values.ip_address(text))
    except ValueError:
        return _node_ref(item, nodes)


def _choice(item: Item, allowed: tuple[str, ...]) -> str:
    text = _string(item)
    if text not in allowed:
        item.fail(f"invalid value '{text}': expected one of {', '.join(allowed)}")
    return text


def _check_port(check: Check, fields: dict[str, Item], item: Item) -> None:
    if check.proto in ("icmp", "arp"):
        if "port" in fields:
            fields["port"].fail(f"port is not used with proto {check.proto} (set proto: tcp or udp)")
        if check.expect == "refused":
            fields["expect"].fail("expect: refused needs proto tcp or udp")
        return
    if "port" not in fields:
        item.fail(f"proto {check.proto} needs a port")
    check.port = fields["port"].integer(1, 65535)


__all__ = ["load_topology", "load_topology_text"]
