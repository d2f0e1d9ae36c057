"""Keep a host's kernel from answering our SYN/ACKs with its own RST.

A TCP probe is a SYN crafted by scapy and sent from a raw socket, so no socket of the source
host's kernel knows the connection. When the SYN/ACK comes back, that kernel answers it with a
RST of its own. Left alone this RST races our probe: it resets the server's half-open
connection before we have looked at it, it closes the conntrack entry of every NAT router and
stateful firewall on the way, and a following probe from the same port meets a target that
has just been reset. So, while a probe session uses a host, a small nftables table in that
host's namespace drops outgoing RSTs from the probe port range unless they carry our mark: the
only RST that leaves is the one the probe sends on purpose to close the connection it opened.

The table is named netemu_probe and lives in the host's own namespace (it goes away with the
host). It is created when a session first sends a TCP probe from a host and deleted when the
session ends. Hosts that share the machine's namespace (network: host) get no table: netemu
never changes the machine's firewall for a probe. If nft is missing, probes still work; the
kernel's RSTs then go out, and that is noted in the probe's evidence. Two sessions probing from
one host at the same time share the table, and the first to end removes it; the other's
verdicts do not depend on it (answers are matched strictly), only its politeness does."""

from __future__ import annotations

from netemu.errors import MachineError
from netemu.linux import namespaces, nftables
from netemu.probe.hostnet import PORT_RANGE, PROBE_MARK

TABLE = "netemu_probe"


def _script() -> str:
    low, high = PORT_RANGE
    return (
        f"add table inet {TABLE}\n"
        f"add chain inet {TABLE} out {{ type filter hook output priority -300; policy accept; }}\n"
        f"flush chain inet {TABLE} out\n"
        f"add rule inet {TABLE} out tcp sport {low}-{high} tcp flags & rst == rst "
        f"meta mark != {PROBE_MARK:#x} counter drop comment \"netemu probes: the kernel's RST for our SYN/ACKs\"\n"
    )


def _nft(pid: int, script: str) -> str | None:
    """Run an nft script in the network namespace of `pid`; returns an error text or None. nft
    is forked from this thread, so it runs in the namespace the thread has entered."""
    try:
        with namespaces.entered(pid, ("net",)):
            nftables.load(script)
    except (MachineError, OSError) as exc:  # a probe goes on without the guard: the reason is noted
        return str(exc)
    return None


class RstGuard:
    def __init__(self) -> None:
        self.installed: set[int] = set()
        self.problems: dict[int | None, str] = {}

    def ensure(self, pid: int | None) -> str | None:
        """Install the table in the namespace of `pid` once; returns why it could not be."""
        if pid is None:
            return "the source uses the machine's network namespace, whose firewall netemu leaves alone"
        if pid in self.installed or pid in self.problems:
            return self.problems.get(pid)
        problem = _nft(pid, _script())
        if problem:
            self.problems[pid] = problem
        else:
            self.installed.add(pid)
        return problem

    def remove_all(self) -> None:
        for pid in sorted(self.installed):
            _nft(pid, f"delete table inet {TABLE}\n")
        self.installed.clear()
