"""Sockets of this network namespace, read from /proc/net/{tcp,tcp6,udp,udp6}, and the process
that holds one, found by its inode among /proc/PID/fd.

/proc/net is the reader's own network namespace (it is /proc/self/net), the same namespace the
`nft` that netemu runs loads its tables into: what is listed here is what a DNAT there shadows."""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# The kernel's socket states as /proc/net prints them (include/net/tcp_states.h).
TCP_LISTEN = 0x0A
UDP_UNCONNECTED = 0x07  # TCP_CLOSE: a UDP socket that takes datagrams from any peer
PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class Socket:
    proto: str  # "tcp" or "udp"
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    state: int
    inode: int

    @property
    def listening(self) -> bool:
        """A TCP socket in LISTEN, or a UDP socket bound but not connected: either takes what
        any peer sends to its port."""
        return self.state == (TCP_LISTEN if self.proto == "tcp" else UDP_UNCONNECTED)

    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if self.address.version == 6 else f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Holder:
    pid: int
    name: str  # /proc/PID/comm: set by the process, so shown escaped (errors.one_line)


def parse(text: str, proto: str) -> list[Socket]:
    """The sockets of one /proc/net/{tcp,tcp6,udp,udp6} table (its header line included).
    Lines that do not parse are skipped: a reader of the machine must not fail on one."""
    if proto not in PROTOCOLS:
        raise ValueError(f"unknown protocol {proto!r}: expected one of {', '.join(PROTOCOLS)}")
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        try:
            address, port = _endpoint(fields[1])
            found.append(Socket(proto, address, port, int(fields[3], 16), int(fields[9])))
        except (IndexError, ValueError):
            continue
    return found


def _endpoint(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """ADDR:PORT as /proc/net prints it: the address as 32-bit words, each in the machine's byte
    order (little-endian: 127.0.0.1 is 0100007F), the port in hex."""
    hexaddr, hexport = text.split(":")
    if len(hexaddr) not in (8, 32):
        raise ValueError(f"bad address {hexaddr!r}")
    raw = b"".join(int(hexaddr[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(hexaddr), 8))
    return ipaddress.ip_address(raw), int(hexport, 16)


def table(proto: str, version: int, proc: Path = PROC) -> list[Socket]:
    """The sockets of one table; none when the kernel has no such table (IPv6 disabled)."""
    name = proto if version == 4 else f"{proto}6"
    try:
        return parse((proc / "net" / name).read_text(), proto)
    except FileNotFoundError:
        return []


def listening(proto: str, port: int, proc: Path = PROC) -> list[Socket]:
    """Sockets of this namespace listening on `port`, on any address, IPv4 and IPv6."""
    return [s for version in (4, 6) for s in table(proto, version, proc) if s.port == port and s.listening]


def holder(inode: int, proc: Path = PROC) -> Holder | None:
    """The first process (lowest pid) with the socket open, or None: the process may be gone,
    or the socket held by no descriptor (kernel sockets have none)."""
    target = f"socket:[{inode}]"
    for pid in sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit()):
        if _holds(proc / str(pid) / "fd", target):
            try:
                return Holder(pid, (proc / str(pid) / "comm").read_text().rstrip("\n"))
            except OSError:
                return Holder(pid, "?")
    return None


def _holds(fd_dir: Path, target: str) -> bool:
    try:
        entries = os.listdir(fd_dir)
    except OSError:  # gone meanwhile, or a process we may not look into
        return False
    for entry in entries:
        try:
            if os.readlink(fd_dir / entry) == target:
                return True
        except OSError:
            continue
    return False
