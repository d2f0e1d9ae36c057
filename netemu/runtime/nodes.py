"""Starting hosts: cgroup, writable layer, injected /etc files, then netemu-init.

All hosts of a lab are launched at once and their outcomes collected afterwards, so the cost
of `up` is not the sum of every host's start-up."""

from __future__ import annotations

import errno
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from netemu import images
from netemu.errors import InputError, LabError, MachineError
from netemu.linux import cgroups, devices, initargs, mounts, procs, rootfs
from netemu.linux.cgroups import Cgroup
from netemu.runtime import confinement, paths, state, userns
from netemu.runtime.records import LimitsRecord, NodeExtra, NodeRecord
from netemu.topology.model import Node, Topology, is_directory_image, is_stored_image

START_TIMEOUT = 30.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHIM_DIR = "/usr/local/sbin"  # where `systemctl: true` puts netemu's systemctl, first in the host's PATH
SYSTEMCTL_SHIM = SHIM_DIR + "/systemctl"


def base_env(node: Node) -> dict[str, str]:
    """The environment of the node's programs: defaults, then the image's Env, then the node's `env`."""
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "HOSTNAME": node.hostname or node.name, "TERM": "xterm"}
    env.update(node_env(node))
    if node.systemctl:
        env["PATH"] = _shim_first(env["PATH"])
    return env


def node_env(node: Node) -> dict[str, str]:
    """The node's `env` over its image's Env (Docker's rule); what `netemu exec` adds too."""
    info = image_of(node)
    env = dict(item.split("=", 1) for item in (info.env if info else []) if "=" in item)
    env.update(node.env)
    if node.systemctl and "PATH" in env:  # the record's env is what `netemu exec` runs with
        env["PATH"] = _shim_first(env["PATH"])
    return env


def _shim_first(path: str) -> str:
    """PATH with SHIM_DIR first: an image with systemd's own systemctl in /usr/bin or /bin
    (kathara/frr) must run netemu's, since systemd is not the host's PID 1."""
    return ":".join([SHIM_DIR, *(part for part in path.split(":") if part and part != SHIM_DIR)])


def image_of(node: Node) -> images.ImageInfo | None:
    """The imported image a node runs on; None for `host` and for directories. A value that starts
    with `.` or `/` is always a path; any other is looked up in the store first."""
    if not is_stored_image(node.image):
        return None
    return images.find_image(node.image)


def command(node: Node) -> list[str] | None:
    """The host's main program, Docker's way: the image's Entrypoint, then the node's `cmd` or else
    the image's Cmd. A node's `entrypoint` replaces the image's and, as `docker run
    --entrypoint` does, drops the image's Cmd too ([] leaves the node's `cmd` alone)."""
    info = image_of(node)
    if node.entrypoint is not None:
        return [*node.entrypoint, *(node.cmd or [])] or None
    if info is None:
        return node.cmd
    return [*(info.entrypoint or []), *(node.cmd or info.cmd or [])] or None


# The whole overlay option string must fit the page that mount(2) copies.
MOUNT_DATA_MAX = 3500


def lower_layers(node: Node, topo: Topology) -> list[str]:
    """Overlay lower directories, top first: the machine's `/`, a directory, or an image's layers."""
    if node.image == "host":
        return ["/"]
    info = image_of(node)
    if info is not None:
        layers = [str(d) for d in images.layer_dirs(info)]
        if len(":".join(layers)) > MOUNT_DATA_MAX:
            raise InputError(f"node {node.name}: image '{info.name}' has too many layers ({len(layers)}) "
                             "for one overlay mount")
        return layers
    path = Path(node.image).expanduser()
    if not path.is_absolute() and topo.path is not None:
        path = topo.path.parent / path
    if path.is_dir():
        return [str(path.resolve())]
    if is_directory_image(node.image):
        raise InputError(f"node {node.name}: image '{node.image}': no such directory ({path})")
    images.get_image(node.image)  # raises, naming the images there are
    raise InputError(f"node {node.name}: image '{node.image}' not found")


def labs_using_image(name: str) -> list[str]:
    """Labs with a node on image `name`, whatever their state: a stopped node restarts on it."""
    users = []
    for lab in state.lab_names():
        record = state.read(lab)
        refs = {info.extra.image for info in record.nodes.values()} if record else set()
        if any((found := images.find_image(ref)) is not None and found.name == name for ref in refs):
            users.append(lab)
    return users


def lab_hosts_entries(topo: Topology) -> list[tuple[str, str]]:
    """(name, first address) of every node that has one: the lab's part of each /etc/hosts.
    Computed once per lab: per node it would make `up` cubic in the number of hosts."""
    first: dict[str, str] = {}
    for link in topo.links:
        for ep, addrs in link.host_endpoints():
            if addrs and ep.node not in first:
                first[ep.node] = str(addrs[0].ip)
    return [(name, first[name]) for name in topo.nodes if name in first]


def prepare_lab(topo: Topology) -> None:
    """The lab's hosts keep their writable layers in memory, in one tmpfs for the lab: creating
    a host then writes nothing to disk (a dozen journaled file operations per host on the
    machine's disk cost more than everything else `up` does), and `down` just unmounts it.
    A host writing inside itself is charged to its own memory limit."""
    mounts.mount_tmpfs(paths.layers_dir(topo.name))


@dataclass
class Prepared:
    """What a host gets before its netemu-init starts: decided once, used by the launch."""

    group: Cgroup
    layers: rootfs.LayerDirs
    confinement: confinement.Confinement


def check_sources(topo: Topology, targets: list[Node]) -> None:
    """The machine's files the nodes take (`files:` directories, bind sources) exist: checked
    for every node before `up` (or `node start`) makes anything."""
    for node in targets:
        where = f"{topo.where(node.line)}: nodes.{node.name}"
        for directory in node.files:
            if not Path(directory).is_dir():
                missing = "is not a directory" if Path(directory).exists() else "does not exist"
                raise InputError(f"{where}.files: {directory} {missing}")
        for bind in node.binds:
            if not Path(bind.source).exists():
                raise InputError(f"{where}.binds: bind source {bind.source} does not exist")


def prepare(topo: Topology, node: Node, lab_hosts: list[tuple[str, str]]) -> Prepared:
    """The host's cgroup (with its limits), its writable layer with /etc files injected, and
    its confinement (computed once: it may read another lab's record, which can change)."""
    conf = confinement.of(topo, node)
    for bind in node.binds:
        confinement.check_bind_source(node, bind.source, f"{topo.where(node.line)}: ")
    group = Cgroup(paths.cgroup_path(topo.name, node.name))
    group.create()
    group.set_limits(node.limits.cpus, node.limits.memory, node.limits.pids)
    if conf.device_rules is not None:
        restrict_devices(group, list(conf.device_rules))
    layers = rootfs.LayerDirs(paths.layers_dir(topo.name, node.name))
    layers.create()
    copy_files(layers, node)
    if node.systemctl:
        inject(layers, {SYSTEMCTL_SHIM: (SYSTEMCTL_SCRIPT, 0o755)})
    hostname = node.hostname or node.name
    peers = lab_hosts + list(node.extra_hosts.items())
    etc = {"hostname": hostname + "\n", "hosts": rootfs.hosts_file(hostname, peers),
           "resolv.conf": rootfs.resolv_conf(node.dns, node.dns_search)}
    # A file the lab's own `files:` directories bring (Kathara's r1/etc/hosts) is the user's
    # word for it, as in Kathara: netemu's generated one does not replace it.
    given = {name for name in etc for directory in node.files if Path(directory, "etc", name).is_file()}
    inject_etc(layers, {name: text for name, text in etc.items() if name not in given})
    return Prepared(group, layers, conf)


def inject_etc(layers: rootfs.LayerDirs, files: dict[str, str]) -> None:
    """The host's /etc files, in its writable layer. A host that replaced its /etc with a
    symbolic link (seen at `node start|restart`) keeps what it made: netemu writes nothing
    through the link, and says so in the node's console.log."""
    inject(layers, {f"/etc/{name}": (content, 0o644) for name, content in files.items()})


def inject(layers: rootfs.LayerDirs, files: dict[str, tuple[str, int]]) -> None:
    """Files (absolute paths inside the host: content and mode) written into the writable layer,
    never through a link the host made (see inject_etc)."""
    for path, (content, mode) in files.items():
        try:
            layers.inject(path.lstrip("/"), content, mode)
        except rootfs.UnsafeLayerPath as exc:
            _console_note(layers, f"{path} left as the host made it: {exc.strerror}")


def copy_files(layers: rootfs.LayerDirs, node: Node) -> None:
    """The node's `files:` directories copied over its root, in order (a later one wins), at
    every start: what the host changed in them is put back as the file has it. What could not
    be copied (a device in the source, a link the host put where a directory goes) is named in
    the node's console.log."""
    for directory in node.files:
        _check_files_source(node, directory)
        try:
            notes = layers.copy_in(Path(directory), keep_setid=node.privileged)
        except FileNotFoundError as exc:  # checked before up; gone since
            raise InputError(f"node {node.name}: files: {exc.filename or directory} does not exist") from None
        for note in notes:
            _console_note(layers, f"files {directory}: {note}")


def _check_files_source(node: Node, directory: str) -> None:
    """A `files:` directory that is (or is a link to) the machine's `/`, or lies in its /proc,
    /sys or /dev, would copy the machine into the host: its secrets, and /proc/kcore's 128 TiB.
    A downloaded lab's `common -> /` must not do that, privileged node or not."""
    real = Path(directory).resolve()
    for machine in confinement.MACHINE_PATHS:
        if real == Path(machine) or (machine != "/" and Path(machine) in real.parents):
            raise InputError(f"node {node.name}: files: {directory} is the machine's {machine} ({real}): netemu "
                             "copies only a directory of the lab's")


def _console_note(layers: rootfs.LayerDirs, text: str) -> None:
    with open(layers.open_console(), "a") as log:
        log.write(f"netemu: {text}\n")


def restrict_devices(group: Cgroup, rules: list[devices.Rule]) -> None:
    """The devices allow-list in every hierarchy that enforces one: the v2 tree (a BPF program)
    and the v1 `devices` controller; a hybrid machine has both, and both must allow."""
    enforced = False
    for hierarchy in cgroups.layout().used:
        path = hierarchy.mountpoint / group.relpath
        if hierarchy.version == 2:
            devices.attach_v2(path, rules)
            enforced = True
        elif "devices" in hierarchy.controllers:
            devices.apply_v1(path, rules)
            enforced = True
    if not enforced:
        raise MachineError("confining a host's devices needs the cgroup v1 `devices` controller or a cgroup v2 "
                           "tree; neither is mounted (or make the node `privileged: true`)")


class Launch:
    """One netemu-init being started; `result()` waits for its report."""

    def __init__(self, init: Path, topo: Topology, node: Node, prepared: Prepared, net: str, *,
                 ipc: str | None = None, pid_ns: str | None = None) -> None:
        """`net`, `ipc` and `pid_ns` are netemu-init's --net, --ipc and --pid (None: its own)."""
        self.node = node
        self.group = group = prepared.group
        self.layers = layers = prepared.layers
        self.console = layers.base / "console.log"
        lowers = lower_layers(node, topo)  # first: a missing image claims nothing
        self.confinement = prepared.confinement
        image = image_of(node)
        self.userns = userns.claim(topo.name, node.name) if node.userns else None
        if self.userns is not None:  # root inside is this range's first id outside
            userns.own_layer(layers.upper, self.userns)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        argv = initargs.Run(
            status_fd=write_fd, net=net, ipc=ipc, pid_ns=pid_ns, upper=str(layers.upper), work=str(layers.work),
            merged=str(layers.merged), hostname=node.hostname or node.name, hides=[str(paths.LIB_DIR)],
            cgroups=[str(f) for f in group.procs_files()], lowers=lowers,
            binds=[initargs.bind(b.source, b.target, b.readonly) for b in node.binds], env=base_env(node),
            cwd=image.working_dir if image is not None and image.working_dir else None,
            userns=self.userns.arg() if self.userns is not None else None,
            # an image's /run stays (Docker's way); never the machine's or a directory's (its sockets)
            keep_run=image is not None and not node.read_only,
            command=[] if node.idle else command(node) or [],
            **confinement.run_options(node, self.confinement),
        ).argv(init)
        with open(layers.open_console(), "ab") as log:
            # env={}: PID 1's own environment is visible inside the host (/proc/1/environ); the
            # caller's (CI secrets among it) is not the host's. The host's is in --env.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={},
                                         pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        self.status_fd = read_fd

    def result(self) -> int:
        """The host's PID 1 on the machine, or LabError with the reason netemu-init gave."""
        try:
            report = _read_all(self.status_fd, START_TIMEOUT).decode(errors="replace").strip()
        finally:
            self._close()
        self.proc.wait()
        status = initargs.parse_status(report)
        if status.ok and status.pid is not None:
            return status.pid
        if status.stage == "overlay" and status.errno == errno.ENODEV:
            raise MachineError("the kernel has no overlay filesystem (module overlay)")
        reason = status.message or f"netemu-init exited with {self.proc.returncode}"
        if status.stage == "confine" and status.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            raise MachineError(f"node {self.node.name} did not start: {reason}")  # no Landlock: the machine's lack
        raise LabError(f"node {self.node.name} did not start: {reason}")


    def _close(self) -> None:
        if self.status_fd >= 0:
            os.close(self.status_fd)
            self.status_fd = -1

    def abandon(self) -> None:
        """Kill a launch whose report was not read: netemu-init and the host's PID 1 it forked
        share its process group (it started a session)."""
        if self.status_fd < 0:
            return
        procs.kill_group(self.proc.pid)
        self.proc.wait()
        self._close()


def _read_all(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise LabError(f"netemu-init did not report within {timeout:.0f} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def running(launch: Launch, pid: int, netns_pid: int | None) -> NodeRecord:
    node = launch.node
    limits = LimitsRecord(cpus=node.limits.cpus, memory=node.limits.memory, pids=node.limits.pids)
    extra = NodeExtra(env=node_env(node), image=node.image, network=node.network, hostname=node.hostname or node.name,
                      limits=limits, confinement=launch.confinement.record(),
                      userns=launch.userns.arg() if launch.userns else None, ipc=node.ipc, pid=node.pid,
                      labels=dict(node.labels))
    return NodeRecord(name=node.name, pid=pid, start_time=procs.start_time(pid), netns_pid=netns_pid,
                      cgroup=launch.group.relpath, layers=str(launch.layers.base), console=str(launch.console),
                      extra=extra)


# `systemctl: true`: services started, stopped and asked about without systemd, which is never
# the host's PID 1 (netemu-init is). Kathara startup files and images such as kathara/frr call
# `systemctl start frr`; this maps each unit to its init script, as systemd's own LSB support
# would: FRR's /usr/lib/frr/frrinit.sh, else /etc/init.d/UNIT, else `service UNIT ACTION`.
# Exit codes are systemctl's: 0 done or active, 1 failed, 3 inactive (status, is-active), 4 no
# such unit (status), 5 no such unit (start and the others).
SYSTEMCTL_SCRIPT = r"""#!/bin/sh
# netemu's systemctl (the node has `systemctl: true`): systemd is not PID 1 here, so units are
# run through their init scripts. The machine's systemctl, if the image has one, is untouched.
set -f
action="" now="" quiet="" units=""
for arg in "$@"; do
    case "$arg" in
        --now) now=1 ;;
        -q|--quiet) quiet=1 ;;
        -*) ;;  # --no-pager, --no-block, --system...: nothing to page, queue or choose
        *) if [ -z "$action" ]; then action=$arg; else units="$units ${arg%.service}"; fi ;;
    esac
done

script_of() {
    if [ "$1" = frr ] && [ -x /usr/lib/frr/frrinit.sh ]; then echo /usr/lib/frr/frrinit.sh; return 0; fi
    if [ -x "/etc/init.d/$1" ]; then echo "/etc/init.d/$1"; return 0; fi
    return 1
}

# run UNIT ACTION: the init script's exit code; 127 when the unit has none
run() {
    if script=$(script_of "$1"); then "$script" "$2"; return $?; fi
    # `service` of an image may call systemctl again: once only
    [ -z "${NETEMU_SYSTEMCTL:-}" ] && command -v service >/dev/null 2>&1 || return 127
    out=$(NETEMU_SYSTEMCTL=1 service "$1" "$2" 2>&1)
    code=$?
    if [ "$code" -ne 0 ]; then
        case "$out" in *"unrecognized service"*|*"does not exist"*|*"not found"*) return 127 ;; esac
    fi
    [ -n "$out" ] && printf '%s\n' "$out"
    return "$code"
}

quietly() { if [ -n "$quiet" ]; then "$@" >/dev/null 2>&1; else "$@"; fi; }

act() {  # UNIT ACTION, for start, stop, restart and reload
    quietly run "$1" "$2"
    code=$?
    [ "$code" -eq 0 ] && return 0
    if [ "$code" -eq 127 ]; then echo "Failed to $2 $1.service: Unit $1.service not found." >&2; return 5; fi
    echo "Job for $1.service failed: its init script exited with $code." >&2
    return 1
}

status() {  # UNIT [show]: 0 running, 3 not running, 4 no such unit
    run "$1" status >/dev/null 2>&1
    code=$?
    case "$code" in
        0) state=active ;;
        127) state=unknown ;;
        *) state=inactive ;;
    esac
    if [ "$2" = show ] && [ -z "$quiet" ]; then
        echo "* $1.service (netemu: /etc/init.d style, no systemd)"
        echo "     Active: $state"
    elif [ -z "$quiet" ]; then
        echo "$state"
    fi
    case "$state" in active) return 0 ;; unknown) return 4 ;; *) return 3 ;; esac
}

[ -n "$action" ] || { echo "systemctl: netemu's systemctl needs a command (start, stop, status...)" >&2; exit 1; }
case "$action" in daemon-reload|daemon-reexec) exit 0 ;; esac
[ -n "$units" ] || { echo "systemctl: $action needs a unit" >&2; exit 1; }

result=0
for unit in $units; do
    case "$unit" in  # systemd's rule: a unit name is no path (/etc/init.d/../../x would run /x)
        */*|.*) echo "systemctl: Unit name $unit is not valid." >&2; result=1; continue ;;
    esac
    case "$action" in
        start|stop|restart|reload) act "$unit" "$action"; code=$? ;;
        try-restart|condrestart)
            code=0
            if status "$unit" quiet >/dev/null; then act "$unit" restart; code=$?; fi ;;
        reload-or-restart) act "$unit" restart; code=$? ;;
        status) status "$unit" show; code=$? ;;
        is-active) status "$unit" state; code=$? ;;
        enable|disable)  # nothing starts at boot here: only --now does something
            code=0
            if [ -n "$now" ] && [ "$action" = enable ]; then act "$unit" start; code=$?; fi
            if [ -n "$now" ] && [ "$action" = disable ]; then act "$unit" stop; code=$?; fi ;;
        is-enabled) if script_of "$unit" >/dev/null; then echo enabled; code=0; else echo disabled; code=1; fi ;;
        mask|unmask) code=0 ;;
        *) echo "systemctl: '$action' is not supported by netemu's systemctl" >&2; exit 1 ;;
    esac
    [ "$code" -ne 0 ] && result=$code
done
exit $result
"""
