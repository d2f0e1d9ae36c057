"""Hostile topology files for property-based tests (hypothesis): wrong types, huge numbers,
unicode and control characters in names, path traversal in binds and images, names that
collide once cut to 15 characters, YAML alias bombs and other parser attacks, and valid files
bent one value at a time. Shared by tests/unit/test_hostile_input.py (the pure loader, many
examples) and tests/integration/test_hostile_cli.py (`netemu up`, fewer).

And the other half of the property: what a valid topology must look like, so a file the loader
accepts can never carry a name or a number the kernel would choke on."""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

import yaml
from hypothesis import strategies as st

from netemu.runtime import paths
from netemu.topology import NAME_RE, Topology
from netemu.topology.loader import NODE_KEYS

# --- values -----------------------------------------------------------------------------------

ADVERSARIAL_STRINGS = [
    "", " ", "-", "-a", "a-", "..", ".", "/", "../../etc", "../../../../etc/passwd", "/etc/shadow", "~root",
    "a" * 12, "a" * 13, "a" * 15, "a" * 16, "a" * 64, "a" * 300, "x" * 10_000,
    "A", "É", "é" * 8, "r1\n", "r1\r", "r1\t", "r1 ", "r 1", "a\x00b", "\x1b[2J", "a\u2028b", "\ufeffa",
    "a:b", "a.b", "a/b", "a\\b", "a,b", "a;rm -rf /", "$(reboot)", "`id`", "%s%n", "{{x}}", "*a", "&a", "!tag",
    "eth0\x00", "lo", "eth0:1", "ééééééééé", "💥", "null", "~", "yes", "no", "0x1f", "1e400", "-0", "NaN",
    "10.0.0.1", "10.0.0.1/33", "10.0.0.0/8", "::1", "fe80::1%eth0", "300.1.1.1/24", "10.0.0.255/24",
    "1:2:3", "/tmp:/mnt", "/srv/../etc:/data:ro", "/:/", "/tmp:/:ro", "/tmp:/mnt:rw:x", "/tmp,upperdir=/etc",
    "./a:b", "../" * 40, "99999999999999999999999999999T", "0.0001", "-1", "1e-300", "64M", "9" * 5000,
]
HUGE_INTS = [2**31, 2**63, 2**64 + 1, -(2**63), 10**30, 10**4000]


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ADVERSARIAL_STRINGS),
        st.text(max_size=40),  # every unicode category, control characters included
        st.text(alphabet=st.characters(codec="ascii"), max_size=20),
        st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True),
    )


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), hostile_text(), st.sampled_from(HUGE_INTS),
        st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
    )


def any_value() -> st.SearchStrategy[Any]:
    return st.recursive(scalars(), lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(hostile_text(), inner, max_size=4)), max_leaves=12)


def names() -> st.SearchStrategy[str]:
    valid = st.from_regex(r"[a-z0-9][a-z0-9-]{0,11}", fullmatch=True)
    return st.one_of(valid, hostile_text())


# --- whole files ------------------------------------------------------------------------------

def base_topology(name: str) -> dict[str, Any]:
    """A small valid lab using most of the format: a NAT LAN, a routed link, checks."""
    return {
        "name": name,
        "defaults": {"limits": {"memory": "64M"}},
        "nodes": {"r1": {"sysctls": {"net.ipv4.ip_forward": 1}}, "h1": {"routes": [{"dst": "default",
                                                                                    "via": "10.90.0.1"}]},
                  "h2": {"env": {"MODE": "x"}, "extra_hosts": {"www.example": "192.0.2.80"}}},
        "networks": {"lan": {"subnet": "10.90.0.0/24", "gateway": "10.90.0.254", "nat": True}},
        "links": [
            {"endpoints": ["r1:eth0", "lan"], "addresses": ["10.90.0.1/24"]},
            {"endpoints": ["h1:eth0", "lan"], "addresses": ["auto"]},
            {"endpoints": ["r1:eth1", "h2:eth0"], "addresses": ["10.91.0.1/30", "10.91.0.2/30"], "mtu": 1400},
        ],
        "checks": [{"from": "h1", "to": "r1", "expect": "reachable"}],
    }


def _paths_in(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a nested dict/list, the root included."""
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths_in(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += _paths_in(value, (*prefix, index))
    return found


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return tree


def _rename_key(tree: dict[str, Any], section: str, new: str) -> None:
    entries = tree.get(section)
    if isinstance(entries, dict) and entries:
        old = next(iter(entries))
        tree[section] = {(new if key == old else key): value for key, value in entries.items()}


@st.composite
def bent_topology(draw: st.DrawFn, name: str = "hostile", sizes: tuple[int, ...] = (2, 50, 500)) -> dict[str, Any]:
    """The base lab with one to three of its values, keys or sections made hostile (or replaced by
    one of the MANY labs, with one of `sizes` for its count)."""
    tree = base_topology(name)
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(tree, dict):
            break  # the whole file became a scalar or a list: nothing left to bend
        kind = draw(st.sampled_from(["value", "value", "rename", "node-key", "bind", "image", "many"]))
        if kind == "value":
            path = draw(st.sampled_from(_paths_in(tree)))
            tree = _set(tree, path, draw(any_value()))
        elif kind == "rename":
            _rename_key(tree, draw(st.sampled_from(["nodes", "networks"])), draw(hostile_text()))
        elif kind == "node-key" and isinstance(tree.get("nodes"), dict) and tree["nodes"]:
            node = draw(st.sampled_from(sorted(tree["nodes"], key=str)))
            key = draw(st.one_of(st.sampled_from(NODE_KEYS), hostile_text()))
            if isinstance(tree["nodes"][node], dict):
                tree["nodes"][node][key] = draw(any_value())
        elif kind == "bind" and isinstance(tree.get("nodes"), dict) and isinstance(tree["nodes"].get("h2"), dict):
            tree["nodes"]["h2"]["binds"] = [draw(st.sampled_from(BINDS))]
        elif kind == "image" and isinstance(tree.get("nodes"), dict) and isinstance(tree["nodes"].get("h2"), dict):
            tree["nodes"]["h2"]["image"] = draw(st.sampled_from(IMAGES))
        elif kind == "many":
            tree = draw(st.sampled_from(MANY))(name, draw(st.sampled_from(sizes)))
    return tree


BINDS = ["/etc/../etc:/x", "/etc:/../../x", "../etc:/x", "/etc:x", "/:/", "/etc:/", "/etc:/x:rw:ro",
         "/etc:/x:exec", "/nonexistent-netemu-path:/x", "/etc\x00:/x", "/etc:/x\n", "/proc/self/root:/x:ro",
         "/etc:" + "/a" * 3000]
IMAGES = ["../../../../", "/", "/nonexistent-netemu-dir", "./", "~", "~nobody", "/tmp,upperdir=/etc", "/tmp:/etc",
          "../" * 100, "busybox:latest", "UPPER", "a" * 300, "docker.io/../x", "host\n", "/etc/passwd"]


def _prefix_collisions(name: str) -> dict[str, Any]:
    """Node, network and interface names that are the same in their first 15 characters."""
    long = "n" * 14
    return {
        "name": name,
        "nodes": {f"{long}a1": {}, f"{long}a2": {}, f"{long}b": {}},
        "networks": {"abcdefghijklmn": {"subnet": "10.92.0.0/24"}, "abcdefghijklmo": {"subnet": "10.93.0.0/24"}},
        "links": [{"endpoints": [f"{long}a1:{'e' * 15}", "abcdefghijklmn"], "addresses": ["auto"]},
                  {"endpoints": [f"{long}a2:{'e' * 15}", "abcdefghijklmo"], "addresses": ["auto"]},
                  {"endpoints": [f"{long}a1:{'e' * 14}f", f"{long}b:{'e' * 14}g"]}],
    }


def many_nodes(name: str, count: int) -> dict[str, Any]:
    return {"name": name, "nodes": {f"n{i}": {} for i in range(count)}}


def many_links(name: str, count: int) -> dict[str, Any]:
    """`count` links all on the same two interfaces: the second is already an error."""
    return {"name": name, "nodes": {"a": {}, "b": {}},
            "links": [{"endpoints": ["a:e0", "b:e0"]} for _ in range(count)]}


def container_chain(name: str, count: int) -> dict[str, Any]:
    nodes: dict[str, Any] = {"n0": {}}
    nodes.update({f"n{i}": {"network": f"container:n{i - 1}"} for i in range(1, count)})
    return {"name": name, "nodes": nodes}


def many_networks(name: str, count: int) -> dict[str, Any]:
    nets = {f"w{i}": {"subnet": f"10.{i // 256}.{i % 256}.0/24", "gateway": f"10.{i // 256}.{i % 256}.1"}
            for i in range(count)}
    return {"name": name, "nodes": {"a": {}}, "networks": nets}


MANY = [many_nodes, many_links, container_chain, many_networks, lambda name, _count: _prefix_collisions(name)]


ALIAS_BOMB = "\n".join(["a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]"]
                       + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
                       + ["name: bomb", "nodes: {r1: {hostname: *i}}"])
RAW_ATTACKS = [
    ALIAS_BOMB,
    "name: x\nnodes: &n {r1: {}}\nnetworks: *n\n",
    "name: !!python/object/apply:os.system [id]\nnodes: {r1: {}}\n",
    "name: !custom x\nnodes: {r1: {}}\n",
    "name: x\nnodes: " + "[" * 5000 + "]" * 5000 + "\n",
    "name: x\nnodes: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "name: x\nname: y\nnodes: {r1: {}}\n",
    "name: x\nnodes: {r1: {}, r1: {}}\n",
    "--- \nname: x\nnodes: {r1: {}}\n---\nname: y\n",
    "name: x\nnodes:\n\t r1: {}\n",
    "name: x\nnodes: {? [a, b] : {}}\n",
    "name: x\nnodes: {null: {}}\n",
    "name: x\nnodes: {1: {}}\n",
    "name: x\nnodes: {r1: {limits: {pids: !!int 'abc'}}}\n",
    "name: x\nnodes: {r1: {limits: {cpus: !!float '1e99999'}}}\n",
    "name: x\nnodes: {r1: {cmd: !!binary aGVsbG8=}}\n",
    "name: x\nnodes: {r1: {cmd: 2001-01-01}}\n",
    "name: x\nnodes: {r1: {limits: {memory: 0x7fffffffffffffffffff}}}\n",
    "%YAML 1.1\n%TAG ! tag:evil.example,2000:\n---\nname: x\nnodes: {r1: !foo {}}\n",
    "name: \"\\x00\"\nnodes: {r1: {}}\n",
    "name: \"\\uD800\"\nnodes: {r1: {}}\n",
    "\ufeffname: x\nnodes: {r1: {}}\n",
    "name: x\r\nnodes: {r1: {}}\r\n",
    "name: x\nnodes: {r1: {}}\n" + "#" * 100_000 + "\n",
    "'" * 1000,
    "{" * 10,
    "",
    "   \n\n",
    "[]",
    "42",
    "name",
]


@st.composite
def mangled_text(draw: st.DrawFn, name: str = "hostile") -> str:
    """A valid file's text cut short, or with characters inserted, deleted or swapped."""
    text = yaml.safe_dump(base_topology(name), sort_keys=False)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "truncate"]))
        if action == "insert":
            text = text[:at] + draw(st.one_of(st.sampled_from(list("{}[]:,&*!|>'\"#%@`-? \t\n\\")),
                                              st.text(max_size=3))) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)):]
        else:
            text = text[:at]
    return text


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # an object used twice is written twice, never as an alias the loader refuses


def dump(tree: Any) -> str:
    """YAML for any tree the strategies build (keys of any type, any unicode)."""
    return yaml.dump(tree, Dumper=_NoAliases, sort_keys=False, allow_unicode=True)


@st.composite
def hostile_files(draw: st.DrawFn, name: str = "hostile", sizes: tuple[int, ...] = (2, 50, 500)) -> str:
    """The text of one hostile topology file."""
    kind = draw(st.sampled_from(["bent", "bent", "bent", "free", "mangled", "raw"]))
    if kind == "bent":
        return dump(draw(bent_topology(name, sizes)))
    if kind == "free":
        tree = draw(st.dictionaries(st.sampled_from(["name", "nodes", "networks", "links", "checks", "defaults",
                                                      "extra"]), any_value(), max_size=6))
        return dump(tree)
    if kind == "mangled":
        return draw(mangled_text(name))
    return draw(st.sampled_from(RAW_ATTACKS))


# --- what a valid topology holds --------------------------------------------------------------

def assert_valid(topo: Topology) -> None:
    """Everything the loader accepted is safe to hand to the kernel."""
    assert paths.is_lab_name(topo.name), topo.name
    for name, node in topo.nodes.items():
        _assert_name(name, 63)
        assert _clean(node.hostname) and len(node.hostname) <= 64
        assert all(_clean(s) for s in [*node.env, *node.env.values(), *node.sysctls, *node.sysctls.values(),
                                       *node.dns_search, *node.extra_hosts, *(node.cmd or []),
                                       *(arg for argv in node.exec for arg in argv)])
        _assert_limits(node)
        for bind in node.binds:
            assert bind.source.startswith("/") and bind.target.startswith("/")
            assert ".." not in bind.source.split("/") + bind.target.split("/")
        if node.image.startswith((".", "/", "~")):
            assert not any(c in node.image for c in ",:\0")
    for name in topo.networks:
        _assert_name(name, 15)
    _assert_kernel_names(topo)


def _clean(text: str) -> bool:
    return "\0" not in text


def _assert_name(name: str, longest: int) -> None:
    assert NAME_RE.fullmatch(name) and len(name) <= longest, repr(name)


def _assert_limits(node: Any) -> None:
    limits = node.limits
    if limits.memory is not None:
        assert 4 << 20 <= limits.memory <= 1 << 62
    if limits.cpus is not None:
        assert math.isfinite(limits.cpus) and 0 < limits.cpus <= 65536
    if limits.pids is not None:
        assert 1 <= limits.pids <= 4_194_304


def machine_names(topo: Topology) -> set[str]:
    """The lab's name and the names of the links it would make on the machine (a link made by an
    `up` that failed before tagging it carries only its name)."""
    found = {topo.name, paths.bridge_name(topo.name, "bridge")}
    found |= {paths.bridge_name(topo.name, net) for net in topo.networks}
    for node in topo.nodes:
        found.add(paths.host_veth_name(topo.name, node, "eth0"))
    for link in topo.links:
        found |= {paths.host_veth_name(topo.name, ep.node, ep.iface) for ep, _ in link.host_endpoints()}
    return found


def _assert_kernel_names(topo: Topology) -> None:
    """Interface names fit IFNAMSIZ, and the names made on the machine are distinct."""
    machine: set[str] = {paths.bridge_name(topo.name, net) for net in topo.networks}
    assert len(machine) == len(topo.networks)
    for link in topo.links:
        for ep in link.endpoints:
            if ep.iface is not None:
                assert 1 <= len(ep.iface.encode()) <= 15 and not any(c.isspace() or c in "/:\0" for c in ep.iface)
        for ep, _ in link.host_endpoints():
            if any(e.is_network for e in link.endpoints):
                veth = paths.host_veth_name(topo.name, ep.node, ep.iface)
                assert len(veth) <= 15 and veth not in machine
                machine.add(veth)


# --- a guard against hangs ----------------------------------------------------------------------

@contextlib.contextmanager
def no_hang(seconds: int) -> Iterator[None]:
    """Fail (instead of waiting forever) when the body runs longer than `seconds`: a hang guard,
    far above any honest run, not a speed requirement."""
    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise AssertionError(f"still running after {seconds}s: the loader hangs on this input")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
