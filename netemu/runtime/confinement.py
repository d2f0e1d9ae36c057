"""What a host may do, Docker's default model: its capabilities, seccomp filter, devices and the
kernel paths it sees masked or read-only, turned into netemu-init's options.

A default host keeps Docker's capabilities plus NET_ADMIN, and its seccomp filter refuses what
Docker's default profile refuses. `privileged: true` gives every capability, no filter, the
machine's /dev and writable /proc/sys and /sys: the machine's root in all but its namespaces.
`cap_add` and `cap_drop` move single capabilities (a capability also unlocks the system calls
the filter gates behind it, as in Docker), `devices` adds device nodes of the machine, and
`read_only` mounts the root filesystem read-only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netemu.errors import InputError
from netemu.linux import capabilities, devices, initargs, seccomp
from netemu.runtime.records import ConfinementRecord
from netemu.runtime.sharing import other_lab_netns
from netemu.topology.model import CONTAINER, OTHER_LAB, Node, Topology

# Docker's masked paths: kernel state a container has no business reading (memory, keys,
# timers, scheduler internals, firmware tables).
MASKED = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
# Docker's read-only paths: the machine's kernel settings and hardware.
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# Writable again below /proc/sys for a host with a network namespace of its own: those settings
# are that namespace's (forwarding, rp_filter, ...), and routing daemons set them themselves.
OWN_NET_WRITABLE = ("/proc/sys/net",)
# Bind sources that would hand a host the machine itself.
MACHINE_PATHS = ("/", "/proc", "/sys", "/dev")


@dataclass(frozen=True)
class Confinement:
    privileged: bool
    machine_net: bool  # the host is in the machine's network namespace (network: host, or a chain to one)
    caps: int  # the capability mask a host's processes hold
    seccomp: bytes | None  # the filter program; None: no filter
    device_rules: tuple[devices.Rule, ...] | None  # None: every device (privileged)
    landlock: bool = False  # the host sees the machine's PIDs: a Landlock domain keeps it from others

    def exec_options(self) -> dict[str, Any]:
        """The fields of initargs.Confined that confine a `netemu exec` process as the host's own
        are (none for a privileged host: it keeps what the machine's root has)."""
        if self.privileged:
            return {}
        return {"caps": self.caps, "seccomp": self.seccomp, "landlock": self.landlock}

    def record(self) -> ConfinementRecord:
        """What the lab's state keeps, for `netemu exec` later."""
        return ConfinementRecord(privileged=self.privileged, caps=f"{self.caps:x}",
                                 seccomp=self.seccomp.hex() if self.seccomp is not None else None,
                                 landlock=self.landlock)


def of(topo: Topology, node: Node) -> Confinement:
    machine_net = on_machine_network(topo, node)
    # NET_ADMIN is a default only over a network namespace of the host's own: in the machine's
    # it would let the host change the machine's links, routes and firewall (as Docker's
    # --network host gives no NET_ADMIN either). An explicit cap_add still gives it.
    base = [name for name in capabilities.HOST_DEFAULT if not (machine_net and name == "NET_ADMIN")]
    caps = capabilities.host_set(node.privileged, node.cap_add, node.cap_drop, base)
    if node.privileged:
        return Confinement(True, machine_net, caps, None, None)
    held = set(capabilities.names_of(caps))
    rules = (*devices.DEFAULT_RULES, *(device_rule(node, path) for path in node.devices))
    return Confinement(False, machine_net, caps, seccomp.program(held), rules, landlock=on_machine_pids(topo, node))


def on_machine_pids(topo: Topology, node: Node) -> bool:
    """`pid: host`, or `pid: container:X` where X (or the node X shares with, and so on) is."""
    seen: set[str] = set()
    while node.pid.startswith(CONTAINER) and node.name not in seen:
        seen.add(node.name)
        node = topo.nodes[node.pid.removeprefix(CONTAINER)]
    return node.pid == "host"


def on_machine_network(topo: Topology, node: Node) -> bool:
    """`network: host`, or `container:X` where X (or the node X shares with, and so on) is, or
    the node of another lab (`lab:LAB/NODE`) whose record says it has the machine's."""
    if node.network.startswith(OTHER_LAB):
        return other_lab_netns(node.network)[1] is None
    seen: set[str] = set()
    while node.network.startswith("container:") and node.name not in seen:
        seen.add(node.name)
        node = topo.nodes[node.network.removeprefix("container:")]
    return node.network == "host"


def device_rule(node: Node, path: str) -> devices.Rule:
    try:
        return devices.rule_for(path)
    except FileNotFoundError:
        raise InputError(f"node {node.name}: device {path} does not exist on this machine") from None
    except ValueError as exc:
        raise InputError(f"node {node.name}: {exc}") from None


def from_record(saved: ConfinementRecord | None) -> dict[str, Any]:
    """initargs.Exec's confinement fields from a lab's state (a lab made before confinement: none)."""
    if saved is None or saved.privileged:
        return {}
    return {"caps": int(saved.caps, 16), "seccomp": bytes.fromhex(saved.seccomp) if saved.seccomp else None,
            "landlock": saved.landlock}


def run_options(node: Node, conf: Confinement) -> dict[str, Any]:
    """initargs.Run's fields for the mounts of confinement and the confinement itself."""
    options: dict[str, Any] = {"read_only": node.read_only, "devices": [initargs.device(p) for p in node.devices]}
    if conf.privileged:
        return {**options, "privileged": True}
    return {**options, "masks": list(MASKED), "ro_paths": list(READ_ONLY),
            "rw_paths": [] if conf.machine_net else list(OWN_NET_WRITABLE), **conf.exec_options()}


def check_bind_source(node: Node, source: str, where: str) -> None:
    """`/`, `/proc`, `/sys` and `/dev` (or a symlink to one of them, or a path below the last
    three) as a bind source give the host the machine: only a privileged host may have them."""
    if node.privileged:
        return
    real = Path(source).resolve()
    for machine in MACHINE_PATHS:
        if real == Path(machine) or (machine != "/" and Path(machine) in real.parents):
            hint = " (use `devices:` for a device node)" if machine == "/dev" else ""
            raise InputError(f"{where}nodes.{node.name}.binds: bind source {source} is the machine's "
                             f"{machine}: only a `privileged: true` node may bind it{hint}")

