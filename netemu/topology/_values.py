"""Pure scalar parsers for the topology file.

Each parser takes the value as written and returns the model's value, or raises ValueError whose
message is the user-facing reason; the loader attaches the file, line and key path.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from typing import Any

from netemu import capability_names
from netemu.topology.model import IPAddress, IPInterface, IPNetwork, is_directory_image

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
# Node names take Docker's container-name alphabet, as containerlab and Kathara labs write them
# (PC1, r1.site, srl_1). runtime/paths.py turns them into kernel and file names.
NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
_SYSCTL_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+")
# only sysctls that live in a per-host namespace (net, ipc): anything else would change the machine
_NAMESPACED_SYSCTLS = ("net.", "kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:ib?|b)?|b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_MEMORY = 4 << 20  # below this a host cannot even start its init and a shell
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_PORT_RE = re.compile(r"(\d+):(\d+)(?:/(tcp|udp))?")
_PORT_FORMAT = "expected HOST:CONTAINER[/tcp|udp], e.g. 8080:80/tcp"
_HOST_IP_PORT_RE = re.compile(r"\[?([0-9a-fA-F:.]+?)\]?:\d*:\d+(?:/(?:tcp|udp))?")  # Docker's IP:HOST:CONTAINER
# Patterns are used with fullmatch: `$` would accept a trailing newline.
# tc(8) syntax, validated here only for format; the kernel judges the values at `up`
_TC_TIME_RE = re.compile(r"\d+(\.\d+)?(us|usec|ms|msec|s|sec|secs)", re.IGNORECASE)
_TC_PERCENT_RE = re.compile(r"(\d+(\.\d+)?)%")
_TC_RATE_RE = re.compile(r"\d+(\.\d+)?([kmgt]i?)?(bit|bps)", re.IGNORECASE)
IMPAIR_KEYS = ("delay", "jitter", "loss", "rate", "corrupt", "duplicate")
# Upper bounds the kernel can take: a larger memory limit wraps around in the cgroup's parser,
# and a CFS quota stops at about 2^44 us per 100 ms period.
MAX_MEMORY = 1 << 62
MAX_CPUS = 65536


def name(text: str, what: str, max_len: int) -> str:
    """Lab, node and network names end up inside kernel object names, hence the tight alphabet."""
    if not NAME_RE.fullmatch(text):
        raise ValueError(f"invalid {what} name '{text}': use a-z, 0-9 and '-', not '-' first")
    if len(text) > max_len:
        raise ValueError(f"{what} name '{text}' is too long ({len(text)} chars, at most {max_len})")
    return text


def node_name(text: str, max_len: int) -> str:
    """A node name: Docker's alphabet, but never an IP address (a check's `to:` takes both)."""
    if not NODE_NAME_RE.fullmatch(text):
        raise ValueError(f"invalid node name '{text}': use A-Z, a-z, 0-9, '-', '_' and '.', a letter or digit first")
    if len(text) > max_len:
        raise ValueError(f"node name '{text}' is too long ({len(text)} chars, at most {max_len})")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return text
    raise ValueError(f"invalid node name '{text}': it reads as an IP address")


def name_fold(text: str) -> str:
    """What two node names must not share: host names are case-insensitive, and a name's
    default host name writes '_' as '-', so PC1 and pc1 (or srl_1 and srl-1) would be one."""
    return text.lower().replace("_", "-")


def default_hostname(node: str) -> str:
    """A node's host name when the file sets none: its name as it is (upper case kept, as
    Docker and containerlab do), with '_' as '-'; ValueError when that is no host name."""
    return hostname(node.replace("_", "-"))


def iface(text: str) -> str:
    """A Linux interface name (IFNAMSIZ is 16 including the NUL; dev_valid_name() rules)."""
    size = len(text.encode("utf-8", "surrogatepass"))  # IFNAMSIZ counts bytes, not characters
    if not 1 <= size <= 15:
        raise ValueError(f"interface name '{text}' must be 1 to 15 characters long (has {size} bytes)")
    if text in (".", "..") or any(c == "/" or c == ":" or c.isspace() for c in text):
        raise ValueError(f"invalid interface name '{text}': no '/', ':' or whitespace, not '.' or '..'")
    if text == "lo":
        raise ValueError("interface name 'lo' is reserved for the loopback interface")
    return text


def hostname(text: str, max_len: int = 64) -> str:
    """Dot-separated RFC 1123 labels; 64 is the kernel's UTS nodename limit."""
    if not text or len(text) > max_len:
        raise ValueError(f"hostname '{text}' must be 1 to {max_len} characters long")
    for label in text.split("."):
        if len(label) > 63 or not _LABEL_RE.fullmatch(label):
            raise ValueError(f"invalid hostname '{text}': labels use a-z, 0-9 and '-', not at either end")
    return text


def env_name(text: str) -> str:
    if not _ENV_RE.fullmatch(text):
        raise ValueError(f"invalid environment variable name '{text}'")
    return text


def sysctl_name(text: str) -> str:
    # dots only (no '/'), so the name cannot walk out of /proc/sys when turned into a path
    if not _SYSCTL_RE.fullmatch(text):
        raise ValueError(f"invalid sysctl name '{text}'")
    if not text.startswith(_NAMESPACED_SYSCTLS):
        raise ValueError(f"sysctl '{text}' is not namespaced: would change the machine")
    return text


def ip_address(text: str) -> IPAddress:
    _no_scope(text)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"invalid IP address '{text}'") from None


def _no_scope(text: str) -> None:
    """fe80::1%eth0: ipaddress accepts a scope, which names an interface of no host in particular."""
    if "%" in text:
        raise ValueError(f"invalid address '{text}': no %scope")


def ip_network(text: str) -> IPNetwork:
    """A CIDR prefix whose host bits are zero; a host route may omit the length."""
    _no_scope(text)
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"invalid CIDR '{text}'") from None
    raise ValueError(f"CIDR '{text}' has host bits set; did you mean '{loose}'?")


def ip_interface(text: str, default_prefix: int | None = None) -> IPInterface:
    """An address with its prefix length; `default_prefix` fills a missing one."""
    _no_scope(text)
    if "/" not in text:
        ip_address(text)
        if default_prefix is None:
            raise ValueError(f"address '{text}' needs a prefix length (e.g. '{text}/24')")
        text = f"{text}/{default_prefix}"
    try:
        addr = ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"invalid address '{text}': expected ADDRESS/PREFIX") from None
    return host_address(addr)


def host_address(addr: IPInterface) -> IPInterface:
    ip = addr.ip
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified:
        raise ValueError(f"{ip} is not usable as a host address")
    net = addr.network
    if ip.version == 4 and net.prefixlen < 31 and ip in (net.network_address, net.broadcast_address):
        kind = "network" if ip == net.network_address else "broadcast"
        raise ValueError(f"{addr} is the {kind} address of {net}, not a host address")
    return addr


def memory(value: Any) -> int:
    """Bytes, or a size with a binary unit (K=1024): 64M, 1G, 512k."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"invalid memory size '{value}': use bytes or a size like 64M")
    match = _SIZE_RE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"invalid memory size '{value}': use bytes or a size like 64M, 1G, 512k")
    size = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    if size < MIN_MEMORY:
        raise ValueError(f"memory limit '{value}' is too small (at least 4M)")
    if size > MAX_MEMORY:  # also catches a number too long for a float (infinity)
        raise ValueError(f"memory limit '{value}' is too large (at most 4E)")
    return int(size)


def cpus(value: Any) -> float:
    """A fraction of CPUs, as a number or a numeric string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid cpus '{value}': expected a positive number like 0.5")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"invalid cpus '{value}': expected a positive number like 0.5") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"invalid cpus '{value}': expected a positive number like 0.5")
    if number > MAX_CPUS:
        raise ValueError(f"invalid cpus '{value}': at most {MAX_CPUS}")
    return number


def duration(value: Any) -> float:
    """Seconds: 30s, 500ms, 2m, 1h, or a plain number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid duration '{value}': use e.g. 30s, 500ms, 2m")
    match = _DURATION_RE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"invalid duration '{value}': use e.g. 30s, 500ms, 2m")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration '{value}' must be positive")
    if not math.isfinite(seconds):
        raise ValueError(f"duration '{value}' is too long")
    return seconds


def port_number(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is out of range 1..65535")
    return value


def published_port(text: str) -> str:
    """HOST:CONTAINER[/tcp|udp], normalised with its protocol (tcp when omitted)."""
    match = _PORT_RE.fullmatch(text)
    if not match:
        raise ValueError(f"invalid port '{text}': {_host_ip_refusal(text) or _PORT_FORMAT}")
    host, inner = port_number(int(match.group(1))), port_number(int(match.group(2)))
    return f"{host}:{inner}/{match.group(3) or 'tcp'}"


def _host_ip_refusal(text: str) -> str | None:
    """Why Docker's IP:HOST:CONTAINER is refused, when `text` has that form: a published port is
    on every address of the machine but loopback, and loopback would need the machine-wide
    route_localnet sysctl, which opens every 127.0.0.1 service of the machine to its neighbours."""
    match = _HOST_IP_PORT_RE.fullmatch(text)
    if not match:
        return None
    try:
        address = ipaddress.ip_address(match.group(1))
    except ValueError:
        return None
    if address.is_loopback:
        return (f"publishing on loopback ({address}) is not supported: it would need the machine-wide "
                f"sysctl net.ipv4.conf.all.route_localnet=1; {_PORT_FORMAT}")
    return (f"a host address ({address}) is not supported: a port is published on every address of the "
            f"machine but loopback; {_PORT_FORMAT}")


PATH_LEN_MAX = 1024  # a bind target is joined to the host's root directory below PATH_MAX (4096)


def _printable_path(path: str, what: str) -> None:
    if any(not c.isprintable() for c in path):
        raise ValueError(f"{what} '{path}' holds a control character")
    if len(path.encode("utf-8", "surrogatepass")) > PATH_LEN_MAX:
        raise ValueError(f"{what} is too long ({len(path)} characters, at most {PATH_LEN_MAX} bytes)")


def bind(text: str, base: str | None = None) -> tuple[str, str, bool]:
    """host_path:container_path[:ro|:rw] -> (source, target, readonly). A relative source is
    relative to directory `base` (the topology file's) and may climb out of it with '..': it
    becomes that directory's absolute, normalised path. Without `base` it must be absolute."""
    parts = text.split(":")
    mode = parts.pop() if len(parts) == 3 else "rw"
    if len(parts) != 2 or mode not in ("ro", "rw"):
        raise ValueError(f"invalid bind '{text}': expected HOST_PATH:CONTAINER_PATH[:ro|:rw]")
    source, target = parts
    for path in parts:
        _printable_path(path, "bind path")
    if not source.startswith("/") and base is not None and source:
        source = relative_path(source, base, "bind path")
    for path in (source, target):
        if not path.startswith("/"):
            raise ValueError(f"bind path '{path}' must be absolute")
        if ".." in path.split("/"):
            raise ValueError(f"bind path '{path}' must not contain '..'")
    if target.rstrip("/") == "":
        raise ValueError("cannot bind over the host's root directory '/'")
    return source, target, mode == "ro"


def relative_path(text: str, base: str, what: str) -> str:
    """`text` (relative) below directory `base`, as an absolute path with no '.' or '..' left."""
    _printable_path(text, what)
    if text.startswith("~"):
        raise ValueError(f"{what} '{text}': '~' is not expanded; write the path absolute or relative to the file")
    joined = os.path.normpath(os.path.join(base, text))
    _printable_path(joined, what)
    return joined


def files_dir(text: str, base: str | None) -> str:
    """A `files:` directory: absolute, or relative to the topology file's directory."""
    if not text:
        raise ValueError("must not be empty")
    _printable_path(text, "files directory")
    if text.startswith("/"):
        if ".." in text.split("/"):
            raise ValueError(f"files directory '{text}' must not contain '..'")
        found = os.path.normpath(text)
    elif base is None:
        raise ValueError(f"files directory '{text}' must be absolute")
    else:
        found = relative_path(text, base, "files directory")
    if machine_path_reason(found) is not None:  # copying the machine's / or /proc is never meant
        raise ValueError(f"files directory '{text}' is the machine's {found}: give a directory of your own")
    return found


MACHINE_PATHS = ("/proc", "/sys", "/dev")  # and "/" itself


def machine_path_reason(source: str) -> str | None:
    """Why bind source `source` is the machine itself, or None."""
    clean = "/" + "/".join(part for part in source.split("/") if part not in ("", "."))
    for top in MACHINE_PATHS:
        if clean == top or clean.startswith(top + "/"):
            hint = " (use `devices:` for a device node)" if top == "/dev" else ""
            return f"bind source {source} is the machine's {top}: only a `privileged: true` node may bind it{hint}"
    if clean == "/":
        return "bind source / is the machine's whole filesystem: only a `privileged: true` node may bind it"
    return None


def capability(text: str) -> str:
    """A capability name as cap_add and cap_drop take it: NET_ADMIN, net_admin, CAP_NET_ADMIN, ALL."""
    return capability_names.canonical(text)


def device_path(text: str) -> str:
    """A device node of the machine, by its absolute path under /dev (`devices:`)."""
    _printable_path(text, "device path")
    if not text.startswith("/dev/") or ".." in text.split("/"):
        raise ValueError(f"invalid device '{text}': expected a path under /dev, e.g. /dev/net/tun")
    return text


def image(text: str) -> str:
    """`host`, an imported image's name, or a directory (a value starting with '.', '/' or '~').
    A directory becomes an overlay lowerdir, where ',' ends the option and ':' splits layers."""
    if not text:
        raise ValueError("must not be empty")
    _printable_path(text, "image")
    if not is_directory_image(text) and any(c.isspace() for c in text):
        raise ValueError(f"invalid image name '{text}': no whitespace")
    if is_directory_image(text) and any(c in text for c in ",:\\"):
        raise ValueError(f"image directory '{text}' cannot hold ',', ':' or '\\' (overlay option separators)")
    return text


def impair(key: str, text: str) -> str:
    """Format-only check of a netem/tbf parameter."""
    if key in ("delay", "jitter"):
        if not _TC_TIME_RE.fullmatch(text):
            raise ValueError(f"invalid {key} '{text}': expected a time like 20ms or 1.5s")
    elif key == "rate":
        if not _TC_RATE_RE.fullmatch(text):
            raise ValueError(f"invalid rate '{text}': expected a rate like 10mbit or 512kbit")
    else:
        match = _TC_PERCENT_RE.fullmatch(text)
        if not match or float(match.group(1)) > 100:
            raise ValueError(f"invalid {key} '{text}': expected a percentage like 1% or 0.5%")
    return text


# --- check values: route protocols and tables, JSON paths -------------------------------------
# rtm_protocol numbers: the kernel's and iproute2's names, and those FRR's daemons install with.
PROTOCOLS = {"redirect": 1, "kernel": 2, "boot": 3, "static": 4, "ra": 9, "zebra": 11, "bird": 12, "dhcp": 16,
             "keepalived": 17, "babel": 42, "openr": 99, "bgp": 186, "isis": 187, "ospf": 188, "rip": 189,
             "ripng": 190, "nhrp": 191, "eigrp": 192, "ldp": 193, "sharp": 194, "pbr": 195, "zstatic": 196,
             "openfabric": 197}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
TABLES = {"main": 254, "local": 255, "default": 253}


def protocol_number(text: str) -> int:
    """A protocol by name (ospf) or number (188); ValueError names the known names."""
    if text.isdigit() and int(text) < 256:
        return int(text)
    if text not in PROTOCOLS:
        raise ValueError(f"unknown route protocol '{text}': use a number or one of {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[text]


def table_number(text: str) -> int:
    if text.isdigit() and 0 < int(text) < 2**32:
        return int(text)
    if text not in TABLES:
        raise ValueError(f"unknown routing table '{text}': use main, local, default or a number")
    return TABLES[text]


_STEP = re.compile(r"""\.?(?:([A-Za-z_][\w-]*)|\[(-?\d+)\]|\["([^"]*)"\]|\['([^']*)'\])""")


def parse_path(path: str) -> list[str | int]:
    """`neighbors["10.0.0.2"][0].nbrState` -> ["neighbors", "10.0.0.2", 0, "nbrState"]; keys
    with dots (router IDs, prefixes) are written in brackets and quotes."""
    steps: list[str | int] = []
    position = 0
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None or match.end() == position:
            raise ValueError(f"invalid JSON path '{path}' at character {position + 1}: write a.b[0] or a[\"x.y\"]")
        name, index, double, single = match.groups()
        if index is not None:
            steps.append(int(index))
        else:
            steps.append(next(text for text in (double, single, name) if text is not None))
        position = match.end()
    if not steps:
        raise ValueError("empty JSON path")
    return steps


