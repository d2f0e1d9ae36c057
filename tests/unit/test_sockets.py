"""The /proc/net socket reader (netemu/linux/sockets.py) on sample tables, on a made-up /proc,
and on this process's own sockets (127.0.0.1 only); and the `up` check built on it."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from netemu.errors import InputError
from netemu.linux import sockets
from netemu.runtime import firewall
from netemu.topology import load_topology, load_topology_text

# /proc/net prints addresses as 32-bit words in the machine's byte order: these are little-endian.
pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="the samples are little-endian tables")

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 0 3 0000000000000000 20 4 30 10 -1
   3: garbage line
"""  # noqa: E501 (real /proc/net lines)
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52 1 0000000000000000 100 0 0 10 0
   2: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 53 1 0000000000000000 100 0 0 10 0
"""  # noqa: E501
UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   102        0 9001 2 0000000000000000 0
  101: 0A00000A:E1A3 08080808:0035 01 00000000:00000000 00:00000000 00000000  1000        0 9002 2 0000000000000000 0
"""


def test_tcp_table_addresses_ports_states_and_inodes() -> None:
    found = sockets.parse(TCP, "tcp")
    assert [(str(s.address), s.port, s.state, s.inode) for s in found] == [
        ("0.0.0.0", 8080, 0x0A, 4242), ("127.0.0.1", 53, 0x0A, 77), ("127.0.0.1", 8080, 0x01, 0)]
    assert [s.listening for s in found] == [True, True, False]
    assert found[0].endpoint() == "0.0.0.0:8080"


def test_tcp6_words_are_in_the_machines_byte_order() -> None:
    found = sockets.parse(TCP6, "tcp")
    assert [s.address for s in found] == [ipaddress.ip_address(a) for a in ("::", "::1", "2001:db8::1")]
    assert [s.port for s in found] == [8080, 22, 443]
    assert found[0].endpoint() == "[::]:8080"


def test_udp_bound_counts_as_listening_connected_does_not() -> None:
    bound, connected = sockets.parse(UDP, "udp")
    assert (str(bound.address), bound.port, bound.listening) == ("127.0.0.53", 53, True)
    assert (str(connected.address), str(connected.port), connected.listening) == ("10.0.0.10", "57763", False)


def test_lines_that_do_not_parse_are_skipped() -> None:
    text = "header\n 0: 0100007F:1F90\n 1: 0100:1F90 00000000:0000 0A x x x 0 0 1\n 2: ZZ:1F90 0 0A 0 0 0 0 0 1\n"
    assert sockets.parse(text, "tcp") == []
    assert sockets.parse("", "udp") == []
    with pytest.raises(ValueError, match="unknown protocol"):
        sockets.parse(TCP, "sctp")


def _fake_proc(root: Path, tables: dict[str, str]) -> Path:
    (root / "net").mkdir(parents=True)
    for name, text in tables.items():
        (root / "net" / name).write_text(text)
    return root


def test_listening_reads_both_families_and_tolerates_a_missing_table(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, {"tcp": TCP, "tcp6": TCP6, "udp": UDP})  # no udp6: IPv6 disabled
    assert [s.endpoint() for s in sockets.listening("tcp", 8080, proc)] == ["0.0.0.0:8080", "[::]:8080"]
    assert [s.endpoint() for s in sockets.listening("udp", 53, proc)] == ["127.0.0.53:53"]
    assert sockets.listening("udp", 57763, proc) == []  # connected: takes only its peer's replies


def test_holder_is_found_by_the_socket_inode(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, {})
    holders = {7: ("sshd", ["socket:[1]", "/dev/null"]), 42: ("python3", ["pipe:[4242]", "socket:[4242]"]),
               99: ("late", ["socket:[4242]"])}
    for pid, (comm, links) in holders.items():
        (proc / str(pid) / "fd").mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(comm + "\n")
        for fd, target in enumerate(links):
            (proc / str(pid) / "fd" / str(fd)).symlink_to(target)
    (proc / "self").mkdir()
    assert sockets.holder(4242, proc) == sockets.Holder(42, "python3")  # the lowest pid
    assert sockets.holder(5, proc) is None


def test_this_process_listening_on_loopback_is_seen_with_its_pid() -> None:
    with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        udp.bind(("127.0.0.1", 0))
        assert not any(s.port == tcp.getsockname()[1] for s in sockets.listening("tcp", tcp.getsockname()[1]))
        tcp.listen(1)
        (seen,) = sockets.listening("tcp", tcp.getsockname()[1])
        assert seen.endpoint() == f"127.0.0.1:{tcp.getsockname()[1]}"
        assert sockets.holder(seen.inode).pid == os.getpid()
        (bound,) = sockets.listening("udp", udp.getsockname()[1])
        assert sockets.holder(bound.inode).pid == os.getpid()


def _lab(ports: str) -> str:
    return textwrap.dedent(f"""\
        name: lab
        nodes:
          r1: {{}}
          web:
            ports: [{ports}]
        networks:
          lan: {{subnet: 10.9.0.0/24, gateway: 10.9.0.1}}
        links:
          - endpoints: [web:eth0, lan]
            addresses: [10.9.0.2/24]
        """)


def test_up_check_names_file_line_port_protocol_and_process(tmp_path: Path) -> None:
    with socket.socket(type=socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        (tmp_path / "lab.yaml").write_text(_lab(f'"{port}:53/udp"'))
        topo = load_topology(tmp_path / "lab.yaml")
        with pytest.raises(InputError) as info:
            firewall.check_ports_free(topo)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}/lab.yaml:4: nodes.web.ports: port {port}/udp is already in use on "
                              "the machine: ")
    assert message.endswith(f"(pid {os.getpid()}) is bound to 127.0.0.1:{port}")
    firewall.check_ports_free(topo)  # closed: free again


def test_ruleset_never_translates_loopback() -> None:
    script = firewall.ruleset(load_topology_text(_lab('"8080:80"'), "lab.yaml"))
    assert script is not None
    chains = {name: body for name, body in (c.split(" {", 1) for c in script.split("  chain ")[1:])}
    dnat = "fib daddr type local tcp dport 8080 dnat ip to 10.9.0.2:80"
    for name, loopback in (("prerouting", 'iifname "lo" return'), ("output", None)):
        rules = [line.strip() for line in chains[name].splitlines()[2:] if line.strip() not in ("}", "")]
        expected = ["ip daddr 127.0.0.0/8 return", "ip6 daddr ::1 return", dnat]
        assert rules == ([loopback] if loopback else []) + expected, name
    assert "oifname" not in script  # in output every local address goes out lo: it must still be forwarded


def test_a_process_name_cannot_break_the_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # /proc/PID/comm is whatever the process set (prctl PR_SET_NAME): terminal escapes included.
    monkeypatch.setattr(sockets, "holder", lambda inode: sockets.Holder(1, "x\x1b[2J\ny"))
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(1)
        (tmp_path / "lab.yaml").write_text(_lab(f'"{tcp.getsockname()[1]}:80"'))
        with pytest.raises(InputError) as info:
            firewall.check_ports_free(load_topology(tmp_path / "lab.yaml"))
    assert "x\\x1b[2J\\ny (pid 1) listens on 127.0.0.1:" in str(info.value)
    assert str(info.value).isprintable()
