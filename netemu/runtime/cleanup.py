"""Removing a lab's kernel objects, found from the kernel itself by the lab's name.

Nothing here reads the topology or trusts the state file to list what exists: `up` may have
been killed at any instant, so every kind of object is discovered (cgroups under netemu/LAB,
links tagged netemu:LAB:, netns names netemu-LAB.*, the lab's directories) and removed.

Links are found without one dump of every link of the machine having to succeed: another tool
may be adding and removing links there all the time (see netlink.Socket.settled_links).

Every step runs even when an earlier one failed, and the lab's state goes last, only once every
step succeeded: a removal that meets an error (during `up`'s rollback too) leaves a `failed`
lab that the next `down` or `clean` finishes, never objects without a state that names them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from netemu.errors import LabError
from netemu.linux import mounts, namespaces, netlink, procs, rootfs
from netemu.linux.cgroups import Cgroup
from netemu.linux.netlink import ALIAS_PREFIX
from netemu.runtime import firewall, hostsettings, paths, pools, state, uplinks

log = logging.getLogger(__name__)
# Every kind of link netemu makes in the machine's namespace (builder.py): the kinds its dumps ask for.
MACHINE_KINDS = ("bridge", "veth")
LINK_ROUNDS = 3  # find and delete, until a search finds nothing of the lab


@dataclass
class Removed:
    """What a removal found and removed, for `clean`'s report and for tests."""

    processes: int = 0
    links: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.processes or self.links or self.tables or self.netns or self.cgroups
                    or self.directories)


class RemovalIncomplete(LabError):
    """Some objects of a lab could not be removed: the lab keeps its state (`failed` in `ps`),
    so that the next `down` or `clean` finds it and tries again."""

    def __init__(self, lab: str, failures: list[str], removed: Removed) -> None:
        super().__init__(f"lab '{lab}' was not removed completely ({'; '.join(failures)}): "
                         f"`netemu down {lab}` tries again")
        self.failures = failures
        self.removed = removed


class _Steps:
    """Runs each removal step to its end or its error, and keeps the errors for afterwards."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as e:  # an interrupt (BaseException) still stops the removal
            self.failures.append(f"{what}: {e}")


def remove_lab(lab: str) -> Removed:
    """Remove everything of `lab` that exists; RemovalIncomplete (after trying every step) when
    something could not be removed."""
    removed = Removed()
    steps = _Steps()
    with steps.step("processes"):
        _kill_processes(lab, removed)
    with steps.step("links"):
        _remove_links(lab, removed)
    with steps.step("firewall"):
        removed.tables.extend(firewall.remove(lab))  # the lab's nft table, its forward accept rules
    with steps.step("netns names"):
        for name in namespaces.netns_names(paths.netns_prefix(lab)):
            namespaces.unname_netns(name)
            removed.netns.append(name)
    with steps.step("cgroups"):
        group = Cgroup(paths.cgroup_path(lab))
        if group.exists():
            group.remove()
            removed.cgroups.append(group.relpath)
        Cgroup(paths.CGROUP_ROOT).remove_if_empty()
    with steps.step("layers"):
        layers = paths.layers_dir(lab)
        if layers.exists():
            mounts.unmount(layers)
            rootfs.LayerDirs(layers).remove()
            removed.directories.append(str(layers))
    if steps.failures:
        # The claims (sysctls, pools) and the state stay with what is left, for the next try.
        raise RemovalIncomplete(lab, steps.failures, removed)
    hostsettings.release(lab)
    pools.release(lab)
    state.remove_stale_reservations(lab)
    if paths.state_dir(lab).exists():
        state.remove(lab)
        removed.directories.append(str(paths.state_dir(lab)))
    return removed


def _kill_processes(lab: str, removed: Removed) -> None:
    group = Cgroup(paths.cgroup_path(lab))
    # Killing each host's PID 1 first lets the kernel take down its whole PID namespace.
    pids = group.pids()
    removed.processes = len(pids)
    if pids:
        procs.kill_and_wait(sorted(pids))
    group.kill_all()  # and any process the tracking hierarchy did not show (killed while joining)


def _remove_links(lab: str, removed: Removed) -> None:
    record = state.read(lab)
    planned = set(record.planned_links) if record else set()
    if record and record.uplinks:
        with netlink.Socket() as machine:
            for saved in record.uplinks:
                uplinks.give_back(machine, saved)
    with netlink.Socket() as sock:
        # Again until a search finds nothing: deleting is acknowledged, finding is the part that
        # a busy machine makes uncertain.
        for _ in range(LINK_ROUNDS):
            doomed = _lab_links(sock, lab, planned)
            if not doomed:
                return
            # Ports before their bridges; a veth whose host already died may be gone (tolerated).
            doomed.sort(key=lambda link: link.kind == "bridge")
            with netlink.Batch(sock) as batch:
                for link in doomed:
                    batch.delete_link(link.index, link.name)
            removed.links.extend(link.name for link in doomed if link.name not in removed.links)
    raise LabError(f"links of lab {lab} were still found after {LINK_ROUNDS} rounds of deleting them")


def _lab_links(sock: netlink.Socket, lab: str, planned: set[str]) -> list[netlink.Link]:
    """The lab's links on the machine, as they are now: those tagged with its alias (from dumps
    that settle, see netlink.Socket.settled_links) and those named in its plan, each looked up by
    name. An untagged link named in the plan was made by an `up` killed before tagging it."""
    prefix = paths.alias(lab, "")
    tagged = sock.settled_links(lambda link: link.alias.startswith(prefix), kinds=MACHINE_KINDS)
    current = sock.links_by_name(sorted({link.name for link in tagged} | planned))
    return [link for link in current.values()
            if link.alias.startswith(prefix) or (link.name in planned and not link.alias)]


def owned_lab_names() -> set[str]:
    """Every lab name that some netemu-owned object on the machine belongs to."""
    names: set[str] = set(state.lab_names())
    names.update(Cgroup(paths.CGROUP_ROOT).leaf_names())
    for netns in namespaces.netns_names(paths.NETNS_PREFIX):
        lab = paths.lab_of_netns(netns)
        if lab:
            names.add(lab)
    names.update(_labs_of_links())
    names.update(firewall.owned_labs())
    if paths.LABS_LIB_DIR.is_dir():
        names.update(p.name for p in paths.LABS_LIB_DIR.iterdir() if p.is_dir())
    return {name for name in names if paths.is_lab_name(name)}  # netemu makes no other name


def _labs_of_links() -> set[str]:
    """The labs that tagged links of the machine belong to. The dumps need only agree on the
    labs, not on every link: another lab coming up meanwhile adds links but rarely a lab."""
    def labs(links: list[netlink.Link]) -> frozenset[str | None]:
        return frozenset(paths.lab_of_alias(link.alias) for link in links)

    with netlink.Socket() as sock:
        tagged = sock.settled_links(lambda link: link.alias.startswith(ALIAS_PREFIX), kinds=MACHINE_KINDS, key=labs)
        current = sock.links_by_name(sorted({link.name for link in tagged}))
    return {lab for lab in labs(list(current.values())) if lab}
