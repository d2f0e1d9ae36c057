"""A Kathara lab (lab.conf, lab.dep, the machines' directories and start-up files, shared/) as a
netemu `Topology`. Pure: it reads the lab's files and never touches the kernel.

What maps to what, and every refusal, is in docs/kathara.md. In short: each machine is a node,
each collision domain a bridge network, `mN[K]=CD` a link from ethK to that network, `mN/` the
node's `files:`, `shared/` a bind at /shared, the lab directory a read-only bind at /hostlab
(netkit's and Kathara's name for it), and the start-up files one `exec:` step that runs them the
way Kathara does. Every problem raises `TopologyError(file, line, key, reason)`, the key being the
Kathara text it is about (`r1[mem]`, `lab.dep`), and the first problem found wins.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any, NoReturn

import yaml

from netemu.errors import TopologyError
from netemu.topology import _values as values
from netemu.topology._order import find_loop
from netemu.topology._tree import read_lab_file
from netemu.topology.loader import LAB_NAME_MAX, NETWORK_NAME_MAX, load_topology_text
from netemu.topology.model import Topology

CONF = "lab.conf"
DEFAULT_IMAGE = "kathara/base"  # Kathara's own default (its setting `image`)
IMAGE_ENV = "NETEMU_KATHARA_IMAGE"  # this machine's default for machines that name no image
META_KEYS = ("LAB_NAME", "LAB_DESCRIPTION", "LAB_VERSION", "LAB_AUTHOR", "LAB_EMAIL", "LAB_WEB")
RESERVED = ("shared", "_test")  # Kathara's reserved machine names: the shared folder, its test dir
OPTIONS = ("image", "mem", "cpus", "port", "bridged", "ipv6", "exec", "sysctl", "env", "shell",
           "num_terms", "ulimit", "privileged", "entrypoint", "args", "volume")  # fmt: skip
# The capabilities Kathara gives every machine (NET_ADMIN, NET_RAW, NET_BROADCAST,
# NET_BIND_SERVICE, SYS_ADMIN) beyond netemu's default set, which already holds the other three.
EXTRA_CAPS = ["SYS_ADMIN", "NET_BROADCAST"]
# Kathara's sysctls for every machine; the lab's own `mN[sysctl]` win.
BASE_SYSCTLS = {
    "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0",
    "net.ipv4.conf.lo.rp_filter": "0", "net.ipv4.ip_forward": "1", "net.ipv4.icmp_ratelimit": "0",
}  # fmt: skip
IPV6_ON = {
    "net.ipv6.conf.all.forwarding": "1", "net.ipv6.conf.all.accept_ra": "0", "net.ipv6.icmp.ratelimit": "0",
    "net.ipv6.conf.default.disable_ipv6": "0", "net.ipv6.conf.all.disable_ipv6": "0",
}  # fmt: skip
IPV6_OFF = {
    "net.ipv6.conf.default.disable_ipv6": "1", "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.forwarding": "0", "net.ipv6.conf.all.forwarding": "0",
}  # fmt: skip
# An interface's own sysctls: netemu writes sysctls before the links exist, so these are
# written by an exec step once they do.
IFACE_SYSCTL_RE = re.compile(r"net\.ipv[46]\.(conf|neigh)\.eth\d+\..+")
STARTUP_WAIT = 60  # seconds `up` waits for a machine's start-up files before it leaves them running
MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
CD_RE = re.compile(r"\w+", re.ASCII)  # Kathara's rule for collision domain names
MACHINE_RE = re.compile(r"[a-z0-9_]{1,30}")  # Kathara's rule for machine names
TRUE_WORDS = ("y", "yes", "t", "true", "on", "1")
FALSE_WORDS = ("n", "no", "f", "false", "off", "0")
MEM_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

_ASSIGN_RE = re.compile(r"(?P<key>[^\s\[\]=]+)\[(?P<arg>[^\]]*)\]\s*=\s*(?P<rest>.*)")
_META_RE = re.compile(r"(?P<key>LAB_\w*)\s*=\s*(?P<rest>.*)")
_DEP_RE = re.compile(r"(?P<key>[^\s:]+)\s*:(?P<deps>.*)")


@dataclass
class _Iface:
    cd: str
    mac: str | None
    line: int


@dataclass
class _Machine:
    name: str
    line: int  # its first line in lab.conf
    ifaces: dict[int, _Iface] = field(default_factory=dict)
    options: dict[str, tuple[str, int]] = field(default_factory=dict)  # single-valued options
    execs: list[str] = field(default_factory=list)
    sysctls: dict[str, tuple[str, int]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    ports: list[tuple[str, int]] = field(default_factory=list)
    volumes: list[tuple[str, int]] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # first line of each option, for errors


@dataclass
class _Lab:
    conf: Path
    meta: dict[str, str] = field(default_factory=dict)
    machines: dict[str, _Machine] = field(default_factory=dict)
    cd_lines: dict[str, int] = field(default_factory=dict)  # collision domain -> its first line

    @property
    def directory(self) -> Path:
        return self.conf.parent

    def fail(self, line: int | None, key: str, reason: str, file: Path | None = None) -> NoReturn:
        raise TopologyError(str(file or self.conf), line, key, reason)


def load_kathara(path: str | Path, *, default_image: str | None = None) -> Topology:
    """A Kathara lab as a validated topology. `path` is the lab.conf file or the lab directory.
    `default_image` is the image of machines that name none; without it, $NETEMU_KATHARA_IMAGE,
    then the lab's own kathara.conf, then Kathara's kathara/base."""
    conf = _conf_path(Path(path))
    lab = _Lab(conf=conf)
    _parse_conf(lab, _read_text(conf))
    if not lab.machines:
        lab.fail(None, "", "the lab has no machine: expected lines like pc1[0]=A")
    settings = _lab_settings(lab)
    order = _parse_dep(lab)
    _refuse_unsupported_files(lab)
    image = _default_image(lab, default_image, settings)
    return _topology(lab, order, image, settings)


# --- files ------------------------------------------------------------------------------------


def _conf_path(path: Path) -> Path:
    """The lab.conf of a lab directory, or the file itself, made absolute: the lab's name comes
    from its directory, so `netemu down DIR/lab.conf` from anywhere finds the same lab."""
    path = path.expanduser()
    if path.is_dir():
        path = path / CONF
    try:
        return path.resolve(strict=True)
    except OSError as exc:
        raise TopologyError(str(path), None, "", f"cannot read the file: {exc.strerror or exc}") from None


def _read_text(path: Path) -> str:
    try:
        data = read_lab_file(path, 4 << 20)
    except OSError as exc:
        raise TopologyError(str(path), None, "", f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > 4 << 20:
        raise TopologyError(str(path), None, "", "file is larger than 4 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TopologyError(str(path), line, "", f"not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None
    return text.removeprefix("\ufeff")  # Kathara strips a Windows editor's BOM too


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) of the lines that are neither blank nor comments. Kathara reads
    Windows line ends as Unix ones, and has no line continuation."""
    found = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").strip()
        if line and not line.startswith("#"):
            found.append((number, line))
    return found


# --- lab.conf ---------------------------------------------------------------------------------


def _parse_conf(lab: _Lab, text: str) -> None:
    for number, line in _lines(text):
        meta = _META_RE.fullmatch(line)
        if meta and "[" not in meta.group("key"):
            _meta(lab, meta.group("key"), _value(lab, number, meta.group("key"), meta.group("rest")), number)
            continue
        match = _ASSIGN_RE.fullmatch(line)
        if not match:
            lab.fail(number, "", f"not a `device[arg]=value` assignment: {line[:80]!r}")
        name, arg = match.group("key"), match.group("arg").strip()
        key = f"{name}[{arg}]"
        machine = _machine(lab, name, number, key)
        value = _value(lab, number, key, match.group("rest"))
        if arg.isascii() and arg.isdigit():
            _interface(lab, machine, int(arg), value, number, key)
        else:
            _option(lab, machine, arg, value, number, key)


def _value(lab: _Lab, line: int, key: str, rest: str) -> str:
    """A value as Kathara reads it: quoted with ' or ", or bare; a comment may follow after
    whitespace; quotes never appear inside a value."""
    rest = rest.strip()
    if rest[:1] in ("'", '"'):
        quote = rest[0]
        end = rest.find(quote, 1)
        if end < 0:
            lab.fail(line, key, f"the value opens a {quote} quote that never closes")
        value, after = rest[1:end], rest[end + 1:]
        if after and not re.fullmatch(r"\s+#.*", after):
            lab.fail(line, key, f"unexpected text after the quoted value: {after.strip()[:40]!r}")
    else:
        value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
    if not value:
        lab.fail(line, key, "the value is empty")
    if "'" in value or '"' in value:
        lab.fail(line, key, "quotes cannot appear inside a value (Kathara drops them)")
    return value


def _meta(lab: _Lab, key: str, value: str, line: int) -> None:
    if key not in META_KEYS:
        lab.fail(line, key, f"unknown lab information{_suggest(key, META_KEYS)}; expected one of "
                            f"{', '.join(META_KEYS)}")
    lab.meta[key] = value


def _machine(lab: _Lab, name: str, line: int, key: str) -> _Machine:
    if name in lab.machines:
        return lab.machines[name]
    if name in RESERVED:
        lab.fail(line, key, f"'{name}' is a reserved name in Kathara, not a device")
    if not MACHINE_RE.fullmatch(name):
        lab.fail(line, key, f"invalid device name '{name}': Kathara takes a-z, 0-9 and '_', at most 30")
    if "_" in name:
        lab.fail(line, key, f"device name '{name}' has '_': netemu names hosts with a-z, 0-9 and '-' only "
                            "(it is their hostname); rename the device and its directory and .startup file")
    lab.machines[name] = machine = _Machine(name=name, line=line)
    return machine


def _interface(lab: _Lab, machine: _Machine, number: int, value: str, line: int, key: str) -> None:
    """`mN[K]=CD` or `mN[K]=CD/MAC`: ethK of mN on collision domain CD."""
    cd, _, mac = value.partition("/")
    if not CD_RE.fullmatch(cd):
        lab.fail(line, key, f"invalid collision domain '{cd}': use letters, digits and '_' only")
    if mac and not MAC_RE.fullmatch(mac):
        lab.fail(line, key, f"invalid MAC address '{mac}': expected XX:XX:XX:XX:XX:XX")
    if number in machine.ifaces:
        lab.fail(line, key, f"interface eth{number} of '{machine.name}' is already set (line "
                            f"{machine.ifaces[number].line})")
    for other in machine.ifaces.values():
        if other.cd == cd:
            lab.fail(line, key, f"'{machine.name}' is already on collision domain '{cd}' (line {other.line})")
    machine.ifaces[number] = _Iface(cd=cd, mac=mac or None, line=line)
    lab.cd_lines.setdefault(cd, line)


def _option(lab: _Lab, machine: _Machine, arg: str, value: str, line: int, key: str) -> None:
    handler = _OPTION_HANDLERS.get(arg)
    if handler is None:
        lab.fail(line, key, f"unknown option '{arg}'{_suggest(arg, OPTIONS)} (options: {', '.join(OPTIONS)}; "
                            "a number is an interface)")
    machine.lines.setdefault(arg, line)
    handler(lab, machine, value, line, key)


def _single(arg: str) -> Callable[[_Lab, _Machine, str, int, str], None]:
    """Options that take one value: Kathara lets a later line overwrite an earlier one with only
    a warning; netemu has no warnings here, so the second line is refused."""

    def handle(lab: _Lab, machine: _Machine, value: str, line: int, key: str) -> None:
        if arg in machine.options:
            lab.fail(line, key, f"'{machine.name}' already has {arg} at line {machine.options[arg][1]}")
        machine.options[arg] = (value, line)

    return handle


def _refused(reason: str) -> Callable[[_Lab, _Machine, str, int, str], None]:
    def handle(lab: _Lab, machine: _Machine, value: str, line: int, key: str) -> None:
        lab.fail(line, key, reason)

    return handle


def _add_exec(lab: _Lab, machine: _Machine, value: str, line: int, key: str) -> None:
    machine.execs.append(value)


def _add_sysctl(lab: _Lab, machine: _Machine, value: str, line: int, key: str) -> None:
    """Kathara takes `net.` sysctls only (`net.KEY=VALUE`); a repeated key replaces the value."""
    name, sep, setting = value.partition("=")
    name, setting = name.strip(), setting.strip()
    if not sep or not re.fullmatch(r"net\.([\w-]+\.)+[\w-]+", name) or "=" in setting:
        lab.fail(line, key, f"invalid sysctl '{value}': expected net.KEY=VALUE (Kathara allows net.* only)")
    machine.sysctls[name] = (setting, line)


def _add_env(lab: _Lab, machine: _Machine, value: str, line: int, key: str) -> None:
    name, sep, setting = value.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
        lab.fail(line, key, f"invalid env '{value}': expected NAME=VALUE")
    machine.env[name.strip()] = setting.strip()


def _add_port(lab: _Lab, machine: _Machine, value: str, line: int, key: str) -> None:
    machine.ports.append((value, line))


def _add_volume(lab: _Lab, machine: _Machine, value: str, line: int, key: str) -> None:
    machine.volumes.append((value, line))


_OPTION_HANDLERS: dict[str, Callable[[_Lab, _Machine, str, int, str], None]] = {
    **{arg: _single(arg) for arg in ("image", "mem", "cpus", "bridged", "ipv6", "shell", "num_terms",
                                     "privileged", "entrypoint", "args")},
    "exec": _add_exec,
    "sysctl": _add_sysctl,
    "env": _add_env,
    "port": _add_port,
    "volume": _add_volume,
    "ulimit": _refused("ulimit is not supported: netemu sets no resource limits (setrlimit) on hosts; "
                       "limits are mem, cpus and the cgroup's pids"),
}


# --- lab.dep, lab.ext, kathara.conf, .shutdown ------------------------------------------------


def _parse_dep(lab: _Lab) -> dict[str, list[str]]:
    """`m: a b` = m starts after a and b. Unknown machines, a machine with two rules and loops
    are refused at their line."""
    path = lab.directory / "lab.dep"
    if not path.is_file():
        return {}
    rules: dict[str, tuple[list[str], int]] = {}
    for number, line in _lines(_read_text(path)):
        rule = _DEP_RE.fullmatch(line)
        deps = rule.group("deps").split() if rule else []
        if not rule or not deps:
            lab.fail(number, "lab.dep", f"not a `device: device1 device2 ...` rule: {line[:80]!r}", path)
        name = rule.group("key")
        for machine in (name, *deps):
            if machine not in lab.machines:
                lab.fail(number, "lab.dep", f"unknown device '{machine}'{_suggest(machine, lab.machines)} "
                                            "(not in lab.conf)", path)
        if name in rules:
            lab.fail(number, "lab.dep", f"'{name}' already has a rule at line {rules[name][1]}", path)
        rules[name] = (list(dict.fromkeys(deps)), number)
    _check_dep_loops(lab, rules, path)
    return {name: deps for name, (deps, _) in rules.items()}


def _check_dep_loops(lab: _Lab, rules: dict[str, tuple[list[str], int]], path: Path) -> None:
    """In file order: the error names the rule that closes the loop."""
    loop = find_loop(rules, lambda name: [("lab.dep", dep) for dep in rules[name][0]] if name in rules else [])
    if loop is not None:
        name, _, dep = loop[-1]
        text = " -> ".join([*(node for node, _, _ in loop), dep])
        lab.fail(rules[name][1], "lab.dep", f"start-order loop: {text}", path)


def _refuse_unsupported_files(lab: _Lab) -> None:
    ext = lab.directory / "lab.ext"
    if ext.exists():
        lab.fail(_first_rule_line(ext), "lab.ext",
                 "lab.ext is not supported: it puts collision domains on the machine's physical interfaces "
                 "(VLAN sub-interfaces included), which would send the lab's traffic off this machine; use a "
                 "netemu topology file with `uplink:` for that", ext)
    for name in ("shared", *lab.machines):
        shutdown = lab.directory / f"{name}.shutdown"
        if shutdown.exists():
            lab.fail(None, f"{name}.shutdown", "shutdown files are not supported: netemu runs nothing when a "
                                               "host stops; remove the file or move its work elsewhere", shutdown)


def _first_rule_line(path: Path) -> int | None:
    try:
        rules = _lines(read_lab_file(path, 4 << 20).decode(errors="replace"))
    except OSError:
        return None
    return rules[0][0] if rules else None


def _lab_settings(lab: _Lab) -> dict[str, Any]:
    """The lab's own kathara.conf (JSON, Kathara's settings for this lab only): netemu honours
    `image`, `device_shell` and `enable_ipv6`; the rest (terminals, manager, ...) is about
    Kathara's tool itself."""
    path = lab.directory / "kathara.conf"
    if not path.is_file():
        return {}
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        lab.fail(exc.lineno, "kathara.conf", f"not valid JSON: {exc.msg}", path)
    if not isinstance(data, dict):
        lab.fail(None, "kathara.conf", "expected a JSON object of settings", path)
    for key, kind in (("image", str), ("device_shell", str), ("enable_ipv6", bool)):
        if key in data and not isinstance(data[key], kind):
            lab.fail(None, f"kathara.conf: {key}", f"expected a {kind.__name__}", path)
    return {key: data[key] for key in ("image", "device_shell", "enable_ipv6") if key in data}


def _default_image(lab: _Lab, given: str | None, settings: dict[str, Any]) -> str:
    """The image of machines without `mN[image]`: the caller's, this machine's
    $NETEMU_KATHARA_IMAGE (`host` runs Kathara labs on the machine's own programs, FRR
    included), the lab's kathara.conf, or Kathara's default."""
    image = given or os.environ.get(IMAGE_ENV) or settings.get("image") or DEFAULT_IMAGE
    try:
        return values.image(image)
    except ValueError as exc:
        lab.fail(None, IMAGE_ENV if not given and os.environ.get(IMAGE_ENV) else "image", str(exc))


# --- names ------------------------------------------------------------------------------------


def lab_name(directory: Path) -> str:
    """The netemu lab name of a Kathara lab, from its directory's name: Kathara tells labs apart
    by their directory too (LAB_NAME is only shown), and two copies of a lab with the same
    LAB_NAME must be able to run side by side. Lower case, every run of other characters made
    one '-'; a name that is then longer than 12 characters or empty keeps its first 7 and gets
    a hash of the whole directory name, so it stays unique and the same on every call."""
    return _fit(directory.name, LAB_NAME_MAX, "lab")


def _fit(text: str, limit: int, fallback: str) -> str:
    readable = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if readable and len(readable) <= limit:
        return readable
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:4]
    head = readable[: limit - 5].rstrip("-") or fallback
    return f"{head}-{digest}"


def _network_names(lab: _Lab) -> dict[str, str]:
    """Collision domain -> netemu network name. Kathara's names are case-sensitive and take '_';
    netemu's are lower case, '-' and at most 15 characters, never a node's name nor `bridge`
    (the lab's NAT network). A name that lower-casing would merge with another, or that does not
    fit, gets a hash of the original."""
    lowered: dict[str, int] = {}
    for cd in lab.cd_lines:
        lowered[cd.lower()] = lowered.get(cd.lower(), 0) + 1
    names: dict[str, str] = {}
    taken = {*lab.machines, "bridge"}
    for cd in lab.cd_lines:
        name = _fit(cd, NETWORK_NAME_MAX, "cd")
        if lowered[cd.lower()] > 1 or name in taken:
            digest = hashlib.sha1(cd.encode()).hexdigest()[:4]
            name = f"{name[: NETWORK_NAME_MAX - 5].rstrip('-')}-{digest}"
        if name in taken:
            lab.fail(lab.cd_lines[cd], "", f"collision domain '{cd}' cannot be given a netemu name of its own")
        taken.add(name)
        names[cd] = name
    return names


# --- the topology -----------------------------------------------------------------------------


def _topology(lab: _Lab, order: dict[str, list[str]], image: str, settings: dict[str, Any]) -> Topology:
    """The lab as a netemu topology file's data, validated by the topology loader itself (so a
    Kathara lab obeys every rule a file does), then the fields the file format has no key for."""
    networks = _network_names(lab)
    lines: dict[str, int] = {}  # key path in `data` -> lab.conf line, to locate the loader's errors
    machines = [lab.machines[name] for name in start_order(list(lab.machines), order)]
    nodes = {machine.name: _node(lab, machine, image, settings, lines) for machine in machines}
    data = {
        "name": lab_name(lab.directory),
        "nodes": nodes,
        "networks": {name: {} for name in networks.values()},
        "links": _links(lab, networks, lines),
    }
    topo = _validated(lab, data, lines)
    topo.path = lab.conf
    for name, machine in lab.machines.items():
        _finish_node(lab, topo, machine, order.get(name, []))
    for cd, net in networks.items():
        topo.networks[net].line = lab.cd_lines[cd]
    return topo


def start_order(names: list[str], deps: dict[str, list[str]]) -> list[str]:
    """The machines in the order Kathara starts them: each after what lab.dep says it needs,
    otherwise in lab.conf order. The nodes keep that order, so even what netemu does node by
    node (the exec steps) follows lab.dep. Kahn's algorithm, taking the earliest ready name
    (deps are known to have no loop)."""
    position = {name: i for i, name in enumerate(names)}
    waiting = {name: set(deps.get(name, [])) for name in names}
    users: dict[str, list[str]] = {}
    for name, needs in waiting.items():
        for need in needs:
            users.setdefault(need, []).append(name)
    ready = [position[name] for name, needs in waiting.items() if not needs]
    heapq.heapify(ready)
    result: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        result.append(name)
        for user in users.get(name, []):
            waiting[user].discard(name)
            if not waiting[user]:
                heapq.heappush(ready, position[user])
    return result


def _links(lab: _Lab, networks: dict[str, str], lines: dict[str, int]) -> list[dict[str, Any]]:
    links = []
    for machine in lab.machines.values():
        _check_sequential(lab, machine)
        for number, iface in sorted(machine.ifaces.items()):
            lines[f"links[{len(links)}]"] = iface.line
            links.append({"endpoints": [f"{machine.name}:eth{number}", networks[iface.cd]]})
    return links


def _check_sequential(lab: _Lab, machine: _Machine) -> None:
    """Kathara refuses a gap in a machine's interface numbers (eth0 and eth2 without eth1)."""
    for expected, number in enumerate(sorted(machine.ifaces)):
        if number != expected:
            line = machine.ifaces[number].line
            lab.fail(line, f"{machine.name}[{number}]", f"interface numbers of '{machine.name}' must have no "
                                                        f"gap, as in Kathara: eth{expected} is missing")


def _node(lab: _Lab, machine: _Machine, image: str, settings: dict[str, Any], lines: dict[str, int]) -> dict:
    at = f"nodes.{machine.name}"
    lines[at] = machine.line
    node: dict[str, Any] = {"image": _image(lab, machine, image)}
    node.update(_confinement(lab, machine))
    node["sysctls"] = _sysctls(lab, machine, settings)
    lines[f"{at}.sysctls"] = min((line for _, line in machine.sysctls.values()), default=machine.line)
    if machine.env:
        node["env"] = machine.env
        lines[f"{at}.env"] = machine.lines["env"]
    limits = _limits(lab, machine)
    if limits:
        node["limits"] = limits
    if _flag(lab, machine, "bridged", False):
        node["network"] = "bridge"
    node.update(_ports(lab, machine, node.get("network") == "bridge", lines))
    node["binds"] = _binds(lab, machine, lines)
    node["exec"] = _exec_steps(lab, machine, settings)
    if "num_terms" in machine.options:  # netemu opens no terminals; the value is still checked
        _integer(lab, machine, "num_terms", 0)
    if "args" in machine.options:
        node["cmd"] = _split(lab, machine, "args")
    return node


def _image(lab: _Lab, machine: _Machine, default: str) -> str:
    if "image" not in machine.options:
        return default
    value, line = machine.options["image"]
    try:
        return values.image(value)
    except ValueError as exc:
        lab.fail(line, f"{machine.name}[image]", str(exc))


def _confinement(lab: _Lab, machine: _Machine) -> dict[str, Any]:
    """Kathara starts machines with NET_ADMIN, NET_RAW, NET_BROADCAST, NET_BIND_SERVICE and
    SYS_ADMIN (FRR's daemons refuse to start without SYS_ADMIN). netemu gives the missing two in
    a user namespace of the host's own, where SYS_ADMIN reaches only the host's namespaces:
    what Kathara's labs need, without the machine's root. `mN[privileged]=true` is netemu's
    `privileged: true`, as Kathara's is Docker's --privileged."""
    if _flag(lab, machine, "privileged", False):
        return {"privileged": True}
    return {"userns": True, "cap_add": list(EXTRA_CAPS)}


def _sysctls(lab: _Lab, machine: _Machine, settings: dict[str, Any]) -> dict[str, str]:
    ipv6 = _flag(lab, machine, "ipv6", bool(settings.get("enable_ipv6", False)))
    own = {key: value for key, (value, _) in machine.sysctls.items() if not IFACE_SYSCTL_RE.fullmatch(key)}
    return {**BASE_SYSCTLS, **(IPV6_ON if ipv6 else IPV6_OFF), **own}


def _flag(lab: _Lab, machine: _Machine, arg: str, default: bool) -> bool:
    if arg not in machine.options:
        return default
    value, line = machine.options[arg]
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    lab.fail(line, f"{machine.name}[{arg}]", f"invalid boolean '{value}': expected true or false")


def _integer(lab: _Lab, machine: _Machine, arg: str, minimum: int) -> int:
    value, line = machine.options[arg]
    if not re.fullmatch(r"\d+", value) or int(value) < minimum:
        lab.fail(line, f"{machine.name}[{arg}]", f"invalid {arg} '{value}': expected a whole number, "
                                                 f"at least {minimum}")
    return int(value)


def _limits(lab: _Lab, machine: _Machine) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if "mem" in machine.options:
        limits["memory"] = _memory(lab, machine)
    if "cpus" in machine.options:
        value, line = machine.options["cpus"]
        try:
            limits["cpus"] = values.cpus(value)
        except ValueError as exc:
            lab.fail(line, f"{machine.name}[cpus]", str(exc))
    return limits


def _memory(lab: _Lab, machine: _Machine) -> int:
    """Kathara's sizes: a whole number with b, k, m or g (binary units, as Docker's); a bare
    number is megabytes. At least 4m, as Kathara and netemu both require."""
    value, line = machine.options["mem"]
    match = re.fullmatch(r"(\d+)([bkmgBKMG]?)", value)
    if not match:
        lab.fail(line, f"{machine.name}[mem]", f"invalid memory '{value}': expected a whole number and b, k, m "
                                               "or g, e.g. 128m")
    size = int(match.group(1)) * MEM_UNITS[(match.group(2) or "m").lower()]
    try:
        return values.memory(size)
    except ValueError as exc:
        lab.fail(line, f"{machine.name}[mem]", str(exc))


def _ports(lab: _Lab, machine: _Machine, bridged: bool, lines: dict[str, int]) -> dict[str, Any]:
    """Kathara's `[HOST:]GUEST[/PROTOCOL]`, HOST 3000 when left out. A published port reaches a
    machine through its `bridged` interface, as in Kathara (which only warns without one)."""
    ports = []
    for value, line in machine.ports:
        key = f"{machine.name}[port]"
        if not bridged:
            lab.fail(line, key, f"a published port needs {machine.name}[bridged]=true: the machine is reached "
                                "through its bridged interface")
        mapping, _, proto = value.partition("/")
        proto = proto.lower() or "tcp"
        if proto not in ("tcp", "udp"):
            lab.fail(line, key, f"protocol '{proto}' is not supported: netemu publishes tcp and udp ports")
        host, sep, guest = mapping.rpartition(":")
        spec = f"{host if sep else '3000'}:{guest}/{proto}"
        try:
            ports.append(values.published_port(spec))
        except ValueError as exc:
            lab.fail(line, key, str(exc))
        lines[f"nodes.{machine.name}.ports[{len(ports) - 1}]"] = line
    return {"ports": ports} if ports else {}


def _binds(lab: _Lab, machine: _Machine, lines: dict[str, int]) -> list[str]:
    """/hostlab: the lab directory, read-only (where netkit and Kathara put the lab's files; the
    start-up files are read there at `up`). /shared: the lab's shared/ folder, read-write, when
    it exists. Then `mN[volume]=HOST|GUEST|MODE`, HOST relative to the lab directory."""
    directory = str(lab.directory)
    if ":" in directory or "," in directory:
        lab.fail(None, "", f"the lab directory '{directory}' holds ':' or ',', which a netemu bind cannot name")
    binds = [f"{directory}:/hostlab:ro"]
    if _own_dir(lab, "shared", None):
        binds.append(f"{directory}/shared:/shared:rw")
    for value, line in machine.volumes:
        lines[f"nodes.{machine.name}.binds[{len(binds)}]"] = line
        binds.append(_volume(lab, machine, value, line))
    return binds


def _volume(lab: _Lab, machine: _Machine, value: str, line: int) -> str:
    key = f"{machine.name}[volume]"
    parts = [part for part in value.split("|") if part]
    if len(parts) not in (2, 3):
        lab.fail(line, key, f"invalid volume '{value}': expected HOST|GUEST|[MODE]")
    host, guest, mode = (*parts, "ro") if len(parts) == 2 else parts
    if mode not in ("ro", "rw"):
        lab.fail(line, key, f"volume mode '{mode}' is not supported: netemu binds are ro or rw")
    source = os.path.normpath(lab.directory / Path(host).expanduser())
    try:
        return "{}:{}:{}".format(*values.bind(f"{source}:{guest}:{mode}")[:2], mode)
    except ValueError as exc:
        lab.fail(line, key, str(exc))


def _own_dir(lab: _Lab, name: str, line: int | None) -> bool:
    """Whether the lab has directory `name` (a machine's, copied over its root, or shared/,
    bound read-write into every machine). It must be the lab's own: a downloaded lab's
    `r1 -> /` would copy the machine's files into a host, `shared -> /etc` would give every host
    the machine's /etc to write. Kathara copies and binds them as the lab has them, and its
    machines are containers of a Docker daemon, not this machine's files."""
    path = lab.directory / name
    if path.is_symlink():
        target = os.readlink(path)
        lab.fail(line, f"{name}/", f"{path} is a symbolic link (to {target}): the machines' and the shared "
                                   "directories must be directories of the lab itself")
    return path.is_dir()


def _split(lab: _Lab, machine: _Machine, arg: str) -> list[str]:
    value, line = machine.options[arg]
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        lab.fail(line, f"{machine.name}[{arg}]", f"cannot split '{value}' into words: {exc}")
    if not argv:
        lab.fail(line, f"{machine.name}[{arg}]", "the command is empty")
    return argv


# --- start-up ---------------------------------------------------------------------------------


def _exec_steps(lab: _Lab, machine: _Machine, settings: dict[str, Any]) -> list[list[str]]:
    """What Kathara does once a machine's interfaces exist, as exec steps: MAC addresses and the
    interfaces' own sysctls (a failure fails `up`), then the start-up chain (which never does)."""
    steps = [["ip", "link", "set", "dev", f"eth{number}", "address", iface.mac]
             for number, iface in sorted(machine.ifaces.items()) if iface.mac]
    for key, (value, _line) in machine.sysctls.items():
        if IFACE_SYSCTL_RE.fullmatch(key):
            target = "/proc/sys/" + key.replace(".", "/")
            steps.append(["/bin/sh", "-c", f"echo {shlex.quote(value)} > {shlex.quote(target)}"])
    steps.append(["/bin/sh", "-c", startup_script(lab.directory, machine.name, machine.execs,
                                                  _shell(lab, machine, settings))])
    return steps


def _shell(lab: _Lab, machine: _Machine, settings: dict[str, Any]) -> str | None:
    """The interpreter of the start-up files: `mN[shell]`, else the lab's kathara.conf
    `device_shell`, else None (bash when the host has it, as Kathara's default, else sh)."""
    if "shell" in machine.options:
        value, line = machine.options["shell"]
        if not re.fullmatch(r"[\w./+-]+", value):
            lab.fail(line, f"{machine.name}[shell]", f"invalid shell '{value}': expected a program, e.g. /bin/bash")
        return value
    shell = settings.get("device_shell")
    if shell is not None and not re.fullmatch(r"[\w./+-]+", shell):
        lab.fail(None, "kathara.conf: device_shell", f"invalid shell '{shell}'", lab.directory / "kathara.conf")
    return shell


def startup_script(directory: Path, name: str, execs: list[str], shell: str | None) -> str:
    """Kathara's start-up of one machine, as one shell script run by an exec step: the fix-ups
    Kathara makes (FRR's and Quagga's files to their users, /var/www open), then shared.startup,
    then NAME.startup, read from /hostlab when the host starts, then each `NAME[exec]` line. Their
    output goes to /var/log/shared.log and /var/log/startup.log, traced (`-x`) as Kathara does.
    As in Kathara, a failing start-up file does not fail the lab. The chain runs in the
    background: `up` waits for it (Kathara's /tmp/EOS marker) at most STARTUP_WAIT seconds, so a
    start-up file that never ends (a server in the foreground) leaves the lab up, not hung."""
    run = f"{shlex.quote(shell)}" if shell else '"$sh"'
    chain = [
        f'if [ -f /hostlab/shared.startup ]; then {run} -x /hostlab/shared.startup >/var/log/shared.log 2>&1; '
        'echo "exit status $?" >>/var/log/shared.log; fi',
        f"if [ -f /hostlab/{name}.startup ]; then {run} -x /hostlab/{name}.startup >/var/log/startup.log 2>&1; "
        'echo "exit status $?" >>/var/log/startup.log; fi',
        *(f"echo {shlex.quote('++ ' + command)} >>/var/log/startup.log; "
          f"{run} -c {shlex.quote(command)} >>/var/log/startup.log 2>&1" for command in execs),
        "touch /tmp/EOS",
    ]
    return "\n".join([
        f"# Kathara start-up of {name}",  # a name is [a-z0-9-]: no newline can end the comment
        "rm -f /tmp/EOS; mkdir -p /var/log",
        "if [ -d /etc/frr ]; then chown -R frr:frr /etc/frr; chmod 640 /etc/frr/*; fi 2>/dev/null",
        "if [ -d /etc/quagga ]; then chown -R quagga:quagga /etc/quagga; chmod 640 /etc/quagga/*; fi 2>/dev/null",
        f"if [ -d /hostlab/{name}/var/www ]; then chmod -R 777 /var/www/*; fi 2>/dev/null",
        "sh=/bin/sh; if [ -x /bin/bash ]; then sh=/bin/bash; fi",
        "(",
        *(f"  {step}" for step in chain),
        ") </dev/null >/dev/null 2>&1 &",
        f"i=0; while [ ! -e /tmp/EOS ] && [ $i -lt {STARTUP_WAIT * 10} ]; do sleep 0.1; i=$((i + 1)); done",
        "exit 0",
    ])


# --- after validation -------------------------------------------------------------------------


def _validated(lab: _Lab, data: dict[str, Any], lines: dict[str, int]) -> Topology:
    """The data through the topology loader; its errors are moved to the lab.conf line of the
    key they name (the most specific key recorded)."""
    try:
        return load_topology_text(yaml.safe_dump(data, sort_keys=False), str(lab.conf))
    except TopologyError as exc:
        line = _line_of(exc.key, lines)
        raise TopologyError(str(lab.conf), line, exc.key, exc.reason) from None


def _line_of(key: str, lines: dict[str, int]) -> int | None:
    matching = [prefix for prefix in lines if key == prefix or key.startswith((f"{prefix}.", f"{prefix}["))]
    return lines[max(matching, key=len)] if matching else None


def _finish_node(lab: _Lab, topo: Topology, machine: _Machine, deps: list[str]) -> None:
    """The fields a topology file has no key for: the machine's directory copied over its root,
    the start order of lab.dep, the systemctl shim (Kathara's images are started without
    systemd, and their labs run `systemctl start frr`), the entrypoint, and labels naming the
    Kathara originals."""
    node = topo.nodes[machine.name]
    node.line = machine.line
    own = lab.directory / machine.name
    node.files = [str(own)] if _own_dir(lab, machine.name, machine.line) else []
    node.wait_for = list(deps)
    node.systemctl = True
    if "entrypoint" in machine.options:
        node.entrypoint = _split(lab, machine, "entrypoint")
    node.labels = {"kathara.lab": lab.meta.get("LAB_NAME", lab.directory.name)}
    for number, iface in sorted(machine.ifaces.items()):
        node.labels[f"kathara.eth{number}"] = iface.cd
    for link in topo.links:  # each link's line: the lab.conf line of its interface
        end = link.endpoints[0]
        if end.node == machine.name and end.iface is not None:
            link.line = machine.ifaces[int(end.iface.removeprefix("eth"))].line


def _suggest(name: str, choices: Any) -> str:
    close = get_close_matches(name, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


__all__ = ["DEFAULT_IMAGE", "IMAGE_ENV", "lab_name", "load_kathara", "start_order", "startup_script"]
