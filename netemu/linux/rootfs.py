"""A host's root filesystem on the machine's side: the directories of its overlay (the private
writable layer and the mount point) and the files injected into that writable layer.

The overlay itself is mounted by netemu-init inside the host's own mount namespace, so it
never appears in the machine's mount table."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from netemu.linux import files


@dataclass(frozen=True)
class LayerDirs:
    base: Path

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def merged(self) -> Path:
        return self.base / "merged"

    def create(self) -> None:
        """The node's directory (0700: local users keep out) and its layer's three, whatever the
        umask. The upper directory's mode is the mode of the host's `/`; an existing one is the
        host's own (restarted, or chowned to a userns host's range) and is left as it is."""
        files.private_dir(self.base)
        for d, mode in ((self.upper, 0o755), (self.work, 0o700), (self.merged, 0o755)):
            try:
                os.mkdir(d, mode)
            except FileExistsError:
                continue
            os.chmod(d, mode)

    def inject(self, relpath: str, content: str, mode: int = 0o644) -> None:
        """Write a file into the writable layer: it shadows the image's file of that name.

        The layer is the host's own: a host may have replaced /etc with a symbolic link to
        anywhere, so the path is walked one component at a time from the layer's directory with
        O_NOFOLLOW and written through descriptors (openat), never through a path the host
        could redirect. A symlink in place of the file itself (an image's /etc/resolv.conf ->
        ../run/...) is replaced; one in place of a directory is refused."""
        *dirs, name = relpath.strip("/").split("/")
        fd = os.open(self.upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for part in dirs:
                parent, fd = fd, -1
                fd = _enter(parent, part, relpath)  # closes `parent`, even when it fails
            _replace_file(fd, name, content.encode(), mode)
        finally:
            if fd >= 0:
                os.close(fd)

    def copy_in(self, source: Path, *, keep_setid: bool = False) -> list[str]:
        """Copy the tree `source` (a directory of the user's, on the machine) over the host's root:
        into the writable layer, where each file shadows the image's file of that name.

        The source is the user's: its regular files, directories and symbolic links are copied
        (a link as a link, never followed), with their permission bits, owned by the host's
        root; setuid and setgid bits only with `keep_setid` (a privileged node). Devices, FIFOs
        and sockets are skipped. The source may be writable by a running host too (a directory
        another node binds): below `source` it is walked through descriptors with O_NOFOLLOW, a
        file is opened only once it is known to be a regular file (never a device or a FIFO the
        host put there meanwhile) and copied up to the size it had then. The destination is the
        host's: on a restart it holds what the host wrote, symbolic links to anywhere included,
        so it is walked as `inject` walks it, through descriptors with O_NOFOLLOW, and a link (or
        a file) where a directory of the source goes is left as the host made it, with nothing
        copied below it. Returns one note per entry not copied, for the node's console.log."""
        notes: list[str] = []
        src = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the path as the user named it
        try:
            top = os.open(self.upper, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                _copy_dir(src, top, "", _CopyRules(keep_setid, notes))
            except RecursionError:
                raise OSError(errno.ELOOP, f"{source}: the tree is too deep to copy") from None
            finally:
                os.close(top)
        finally:
            os.close(src)
        return notes

    def open_console(self) -> int:
        """The node's console.log for appending (0600, whatever the umask), as a descriptor."""
        fd = os.open(self.base / "console.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


class UnsafeLayerPath(OSError):
    """A directory on the way to an injected file is not a plain directory of the layer."""


def _enter(parent: int, name: str, relpath: str) -> int:
    """The directory `name` below descriptor `parent` (made, 0755, when missing); `parent` is
    closed. Never follows a symbolic link."""
    try:
        os.mkdir(name, 0o755, dir_fd=parent)
        os.chmod(name, 0o755, dir_fd=parent, follow_symlinks=False)  # whatever the umask
    except FileExistsError:
        pass
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except (NotADirectoryError, OSError) as exc:
        if isinstance(exc, NotADirectoryError) or exc.errno == errno.ELOOP:
            raise UnsafeLayerPath(errno.ELOOP, f"/{relpath}: '{name}' in the host's root is not a directory "
                                  "(a symbolic link?): netemu writes nothing through it") from None
        raise
    finally:
        os.close(parent)


@dataclass
class _CopyRules:
    keep_setid: bool
    notes: list[str]


_SETID = stat.S_ISUID | stat.S_ISGID


class _SourceChanged(OSError):
    """An entry of the source is no longer what its listing said (a host changed it meanwhile)."""


def _copy_dir(source: int, dest: int, rel: str, rules: _CopyRules) -> None:
    """Copy the entries of the source directory descriptor `source` into the layer's directory
    descriptor `dest`."""
    with os.scandir(source) as listing:
        names = sorted(entry.name for entry in listing)
    for name in names:
        where = f"{rel}/{name}"
        try:
            _copy_entry(source, dest, name, where, rules)
        except FileNotFoundError:
            rules.notes.append(f"{where}: not copied: it was removed while netemu copied it")
        except _SourceChanged as exc:
            rules.notes.append(f"{where}: not copied: {exc.strerror}")
        except UnsafeLayerPath as exc:
            rules.notes.append(f"{where}: not copied: {exc.strerror}")
        except IsADirectoryError:  # the host has a directory where the source has a file or link
            rules.notes.append(f"{where}: not copied: the host has a directory there")


def _copy_entry(source: int, dest: int, name: str, where: str, rules: _CopyRules) -> None:
    st = os.stat(name, dir_fd=source, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        sub = _open_source(source, name, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _copy_subdir(sub, dest, name, where, stat.S_IMODE(os.fstat(sub).st_mode), rules)
        finally:
            os.close(sub)
    elif stat.S_ISREG(st.st_mode):
        _copy_file(source, name, dest, rules.keep_setid)
    elif stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(name, dir_fd=source)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            raise _SourceChanged(errno.EINVAL, "it stopped being a symbolic link while netemu copied it") from None
        _replace_symlink(dest, name, target)
    else:
        rules.notes.append(f"{where}: not copied: {_kind(st.st_mode)} (only files, directories and links are)")


def _open_source(directory: int, name: str, flags: int) -> int:
    """`name` below the source descriptor, never through a link (one put there since the listing)."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise _SourceChanged(exc.errno, "it changed kind while netemu copied it") from None


def _copy_subdir(source: int, parent: int, name: str, where: str, mode: int, rules: _CopyRules) -> None:
    fd = _open_subdir(parent, name, where)
    try:
        os.fchmod(fd, mode)  # the host's own directory, reached without following links
        os.fchown(fd, 0, 0)
        _copy_dir(source, fd, where, rules)
    finally:
        os.close(fd)


def _open_subdir(parent: int, name: str, where: str) -> int:
    """Directory `name` below `parent` (made when missing, or where an overlay whiteout says the
    host deleted it), never through a symbolic link; `parent` stays open."""
    for _ in range(2):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)  # its mode is set once it is open
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):  # a whiteout is a 0:0 device
                raise UnsafeLayerPath(errno.ELOOP, f"'{where}' in the host's root is not a directory "
                                      "(a symbolic link?): netemu writes nothing through it") from None
            os.unlink(name, dir_fd=parent)
    raise UnsafeLayerPath(errno.EBUSY, f"'{where}' in the host's root keeps changing")


def _copy_file(source: int, name: str, directory: int, keep_setid: bool) -> None:
    """Copy the regular file `name` of the source descriptor over `name` in `directory`,
    atomically, never following a link there (a link in its place is replaced).

    The source is opened as a path only (O_PATH opens no device and waits on no FIFO) and read
    through /proc/self/fd once fstat says it is a regular file: a device node a host made in
    a directory it shares with the source would otherwise be opened on the machine's side,
    where no `nodev` holds (the machine's disk). At most the size fstat gave is copied: a file
    a host keeps appending to ends."""
    handle = _open_source(source, name, os.O_PATH)
    try:
        st = os.fstat(handle)
        if not stat.S_ISREG(st.st_mode):
            raise _SourceChanged(errno.EINVAL, f"it became {_kind(st.st_mode)} while netemu copied it")
        src = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(handle)
    mode = stat.S_IMODE(st.st_mode) & (~0 if keep_setid else ~_SETID)
    tmp = f".{name}.netemu-tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=directory)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                      dir_fd=directory)
        try:
            _copy_bytes(src, out, st.st_size)
            os.fchown(out, 0, 0)
            os.fchmod(out, mode)  # after the chown, which clears setuid bits
        finally:
            os.close(out)
    finally:
        os.close(src)
    _rename_over(directory, tmp, name)


def _copy_bytes(src: int, out: int, size: int) -> None:
    left = size
    while left > 0:
        chunk = os.read(src, min(left, 1 << 20))
        if not chunk:  # the file shrank meanwhile: what there was
            return
        left -= len(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(out, view):]


def _replace_symlink(directory: int, name: str, target: str) -> None:
    tmp = f".{name}.netemu-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=directory)
    os.symlink(target, tmp, dir_fd=directory)
    _rename_over(directory, tmp, name)


def _rename_over(directory: int, tmp: str, name: str) -> None:
    try:
        os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=directory)
        raise


def _kind(mode: int) -> str:
    for test, label in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return label
    return "an unknown kind of file"


def _replace_file(directory: int, name: str, data: bytes, mode: int) -> None:
    """Atomically replace `name` in `directory` (a symlink there is replaced, not followed)."""
    tmp = f".{name}.netemu-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=directory)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=directory)
    with open(fd, "wb") as out:
        out.write(data)
        os.fchmod(out.fileno(), mode)  # whatever the umask
    os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)


def hosts_file(own_name: str, entries: list[tuple[str, str]]) -> str:
    lines = [
        "127.0.0.1\tlocalhost",
        f"127.0.1.1\t{own_name}",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    lines += [f"{address}\t{name}" for name, address in entries]
    return "\n".join(lines) + "\n"


def resolv_conf(nameservers: list[str] | None, search: list[str]) -> str:
    """The host's resolv.conf: the given servers, or a copy of the machine's (docker's default)."""
    if nameservers is None:
        try:
            base = Path("/etc/resolv.conf").read_text()
        except OSError:
            base = ""
        lines = [ln for ln in base.splitlines() if not (search and ln.startswith("search"))]
    else:
        lines = [f"nameserver {ns}" for ns in nameservers]
    if search:
        lines.append("search " + " ".join(search))
    return "\n".join(lines) + "\n"
