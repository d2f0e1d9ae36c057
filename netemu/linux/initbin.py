"""Build, check and locate netemu-init, the static helper that is every host's PID 1.

The C source ships inside the package and is compiled with options.h, which initargs makes from
its table of netemu-init's options (`cc -include`). The binary is compiled once per version of
the two into /var/lib/netemu/bin, named by their hash (so an upgrade, or a change of the table,
rebuilds it), next to a sidecar
file `NAME.sha256` holding the binary's own sha256. netemu runs it as root, so it is trusted
only when the binary and its sidecar are root's and writable by root alone, so is every
directory above them, and the binary's bytes hash to what the sidecar says. Anything else is
removed and built again, under a lock, so that concurrent processes build it once."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from netemu.errors import MachineError
from netemu.linux import files, initargs

LIB_DIR = Path(os.environ.get("NETEMU_LIB_DIR", "/var/lib/netemu"))
BIN_DIR = LIB_DIR / "bin"
BINARY_MODE = 0o755
SIDECAR_MODE = 0o644
SIDECAR_SUFFIX = ".sha256"
# Bits that would let someone other than root change a file, or run it with its owner's rights.
_UNSAFE_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH
_HEX = re.compile(rb"[0-9a-f]{64}\n?")
_TMP_PID = re.compile(r"\.tmp(\d+)")


def sources() -> tuple[bytes, bytes]:
    """What netemu-init is built from: options.h (from initargs' table) and netemu-init.c."""
    source = resources.files("netemu.linux").joinpath("init/netemu-init.c").read_bytes()
    return initargs.c_header().encode(), source


def source_digest(header: bytes, source: bytes) -> str:
    """The sha256 of both texts, each after its length: which text ends where is part of it."""
    digest = hashlib.sha256()
    for text in (header, source):
        digest.update(b"%d\n" % len(text))
        digest.update(text)
    return digest.hexdigest()


def init_binary() -> Path:
    """The path of a trusted netemu-init built from this package's source, building it if needed."""
    header, source = sources()
    target = BIN_DIR / f"netemu-init-{source_digest(header, source)[:16]}"
    if _dirs_private() and _trusted(target):
        return target
    cc = compiler()  # first: a machine without one gets nothing written
    _make_dirs()
    with _build_lock():
        if _trusted(target):  # built by another process while we waited, or only a directory was loose
            return target
        _remove_leftovers(target)
        try:
            return _compile(cc, header, source, target)  # replaces an untrusted binary in one rename
        except BaseException:
            for path in (target, sidecar(target)):  # never left for anyone to run
                path.unlink(missing_ok=True)
            raise


def sidecar(target: Path) -> Path:
    return target.with_name(target.name + SIDECAR_SUFFIX)


# checking ---------------------------------------------------------------------------------------
def _dirs_private() -> bool:
    """LIB_DIR and BIN_DIR are root's and 0700, as `_make_dirs` leaves them."""
    try:
        return all(_is_private(os.stat(d)) for d in (LIB_DIR, BIN_DIR))
    except FileNotFoundError:
        return False


def _is_private(st: os.stat_result) -> bool:
    return st.st_uid == 0 and stat.S_IMODE(st.st_mode) == files.PRIVATE_DIR


def _trusted(target: Path) -> bool:
    if unsafe_directory(target.parent) is not None:
        return False
    expected = _read_sidecar(sidecar(target))
    return expected is not None and _digest(target) == expected


def unsafe_directory(directory: Path) -> str | None:
    """Why someone other than root could replace a file in `directory`, or None. Each directory
    from / down (of the path as written and of the path it resolves to) must be root's and
    writable by root alone; a sticky one (/tmp) may be writable by all, as nobody else can
    rename or remove root's entries there."""
    literal = Path(os.path.abspath(directory))
    real = Path(os.path.realpath(directory))
    for path in dict.fromkeys([*reversed(literal.parents), literal, *reversed(real.parents), real]):
        try:
            st = os.stat(path)
        except OSError as e:
            return f"{path}: {e.strerror}"
        if st.st_uid != 0:
            return f"{path} belongs to uid {st.st_uid}"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            return f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _open_root_file(path: Path) -> tuple[int, os.stat_result] | None:
    """A regular file of root's that nobody else may write, opened without following a symlink;
    its descriptor and status (read from that descriptor: the file checked is the one read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & _UNSAFE_BITS:
        os.close(fd)
        return None
    return fd, st


def _read_sidecar(path: Path) -> str | None:
    opened = _open_root_file(path)
    if opened is None:
        return None
    with os.fdopen(opened[0], "rb") as f:
        text = f.read(100)
    return text[:64].decode() if _HEX.fullmatch(text) else None


def _digest(path: Path) -> str | None:
    """The sha256 of an executable netemu may trust."""
    opened = _open_root_file(path)
    if opened is None:
        return None
    fd, st = opened
    with os.fdopen(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest() if st.st_mode & stat.S_IXUSR else None


# building ---------------------------------------------------------------------------------------
def compiler() -> str:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise MachineError("building netemu-init needs a C compiler: install gcc and libc6-dev")
    return compiler


def _make_dirs() -> None:
    for directory in (LIB_DIR, BIN_DIR):
        files.private_dir(directory)
    reason = unsafe_directory(BIN_DIR)
    if reason is not None:  # above netemu's own directories: not for netemu to change
        raise MachineError(f"netemu-init cannot be trusted in {BIN_DIR}: {reason} "
                           "(every directory above it must be root's and writable by root alone)")


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    fd = os.open(BIN_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_leftovers(target: Path) -> None:
    """What builds that were killed left: the files of processes that no longer exist."""
    for path in target.parent.glob(f"{target.name}.tmp*"):
        match = _TMP_PID.match(path.name[len(target.name):])
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            path.unlink(missing_ok=True)


def compile_to(cc: str, output: Path, header: bytes, source: bytes) -> None:
    """Compile netemu-init into `output`, its two texts written beside it (OUTPUT.h, OUTPUT.c)
    and removed after. No trust is involved: tests build one of their own with it."""
    src, hdr = output.with_name(output.name + ".c"), output.with_name(output.name + ".h")
    try:
        files.write_file(hdr, header)
        files.write_file(src, source)
        # Static, so that a host whose image has no libc still gets a working PID 1.
        result = subprocess.run([cc, "-static", "-O2", "-include", str(hdr), "-o", str(output), str(src)],
                                capture_output=True, text=True)
    finally:
        src.unlink(missing_ok=True)
        hdr.unlink(missing_ok=True)
    if result.returncode != 0:
        output.unlink(missing_ok=True)
        last_line = (result.stderr.strip().splitlines() or ["compiler failed"])[-1]
        raise MachineError(f"cannot build netemu-init (is libc6-dev installed?): {last_line}")


def _compile(cc: str, header: bytes, source: bytes, target: Path) -> Path:
    # Per-process names: an older netemu, which takes no lock, may be compiling here too, and one
    # rewriting a shared source file under another's compiler makes it fail.
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    compile_to(cc, tmp, header, source)
    os.chmod(tmp, BINARY_MODE)  # the compiler's mode went through the umask: 0777 under umask 000
    with open(tmp, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    # The sidecar first, then the binary: a reader in between finds a sidecar that the old binary
    # does not match, distrusts it and waits for this lock, by when both are in place.
    files.write_file(sidecar(target), f"{digest}\n".encode(), mode=SIDECAR_MODE,
                     tmp=sidecar(tmp))
    os.replace(tmp, target)  # atomic: nobody ever sees half a binary
    return target


if __name__ == "__main__":
    print(init_binary())
