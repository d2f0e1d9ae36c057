"""Removing a lab's kernel objects, found from the kernel itself by the lab's name.

Nothing here reads the topology or trusts the state file to list what exists: `up` may have
been killed at any instant, so every kind of object is discovered (cgroups under netemu/LAB,
links tagged netemu:LAB:, netns names netemu-LAB.*, the lab's directories) and removed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from netemu.linux import mounts, namespaces, procs, rootfs, rtnl
from netemu.linux.cgroups import Cgroup
from netemu.linux.netlink import ALIAS_PREFIX, Netlink
from netemu.runtime import firewall, hostsettings, paths, pools, state, uplinks

log = logging.getLogger(__name__)


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


def remove_lab(lab: str) -> Removed:
    removed = Removed()
    _kill_processes(lab, removed)
    _remove_links(lab, removed)
    if firewall.remove(lab):
        removed.tables.append(firewall.table_name(lab))
    for name in namespaces.netns_names(paths.netns_prefix(lab)):
        namespaces.unname_netns(name)
        removed.netns.append(name)
    group = Cgroup(paths.cgroup_path(lab))
    if group.exists():
        group.remove()
        removed.cgroups.append(group.relpath)
    Cgroup(paths.CGROUP_ROOT).remove_if_empty()
    layers = paths.layers_dir(lab)
    if layers.exists():
        mounts.unmount(layers)
        rootfs.LayerDirs(layers).remove()
        removed.directories.append(str(layers))
    hostsettings.release(lab)
    pools.release(lab)
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
    record = state.read(lab) or {}
    planned = set(record.get("planned_links", []))
    if record.get("uplinks"):
        with Netlink() as nl:
            for saved in record["uplinks"]:
                uplinks.give_back(nl, saved)
    prefix = paths.alias(lab, "")
    with rtnl.Socket() as sock:
        # An untagged link named in the lab's plan was made by a `up` killed before tagging it.
        doomed = [link for link in sock.links()
                  if link.alias.startswith(prefix) or (link.name in planned and not link.alias)]
        # Ports before their bridges; a veth whose host already died may be gone (tolerated).
        doomed.sort(key=lambda link: link.kind == "bridge")
        with rtnl.Batch(sock) as batch:
            for link in doomed:
                batch.delete_link(link.index, link.name)
    removed.links.extend(link.name for link in doomed)


def owned_lab_names() -> set[str]:
    """Every lab name that some netemu-owned object on the machine belongs to."""
    names: set[str] = set(state.lab_names())
    names.update(Cgroup(paths.CGROUP_ROOT).leaf_names())
    for netns in namespaces.netns_names(paths.NETNS_PREFIX):
        lab = paths.lab_of_netns(netns)
        if lab:
            names.add(lab)
    with Netlink() as nl:
        for link in nl.tagged_links(ALIAS_PREFIX):
            lab = paths.lab_of_alias(link.alias)
            if lab:
                names.add(lab)
    names.update(firewall.owned_labs())
    if paths.LABS_LIB_DIR.is_dir():
        names.update(p.name for p in paths.LABS_LIB_DIR.iterdir() if p.is_dir())
    return {name for name in names if paths.is_lab_name(name)}  # netemu makes no other name
