"""What one image's import may write. Everything is counted before it is written (regular
files' bytes plus ENTRY_COST per entry) against a cap per image (MAX_BYTES_DEFAULT,
NETEMU_MAX_IMAGE_BYTES or `--max-size`) and against the store's free space and inodes, so that a
small gzip bomb stops early."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from netemu.errors import InputError, MachineError

MAX_BYTES_ENV = "NETEMU_MAX_IMAGE_BYTES"
MAX_BYTES_DEFAULT = 4 << 30
# What an entry costs besides its data: an inode, a directory entry, a block. Counted so that a
# layer of millions of empty files reaches the cap too.
ENTRY_COST = 4096
# An uncompressed layer is its files plus a header and padding per entry (less than ENTRY_COST)
# and the end-of-archive blocks: a stream much larger than the cap is no honest layer.
STREAM_SLACK = 1 << 20
FREE_RESERVE = 256 << 20  # kept free on the store's filesystem (at most 5% of it)
SPACE_RECHECK = 64 << 20  # free space is asked again after this much: other writers share the disk
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes, or a size with a binary unit (K=1024): 512M, 4G, 4GiB."""
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"invalid size '{text}': use bytes or a size like 512M, 4G")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def max_image_bytes() -> int:
    """The cap on what one image's import may unpack: $NETEMU_MAX_IMAGE_BYTES, or 4 GiB."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return MAX_BYTES_DEFAULT
    try:
        return parse_size(text)
    except ValueError as e:
        raise InputError(f"{MAX_BYTES_ENV}: {e}") from None


def _amount(n: int) -> str:
    """1.5 GiB, 4 MiB, 100 bytes."""
    if n < 1 << 10:
        return f"{n} bytes"
    unit = max((u for u in ("k", "m", "g", "t") if n >= _SIZE_UNITS[u]), key=_SIZE_UNITS.__getitem__)
    return f"{n / _SIZE_UNITS[unit]:.1f}".removesuffix(".0") + f" {unit.upper()}iB"


class Budget:
    """What one image's import may still write, charged before each write: the cap (regular
    files' bytes plus ENTRY_COST per entry, and the uncompressed stream, which a bomb of zeros
    fills without making a file) and the free space and inodes of the store's filesystem."""

    def __init__(self, image: str = "", cap: int = sys.maxsize, store: Path | None = None) -> None:
        self.image = image
        self.cap = cap
        self.store = store  # None: no free-space checks
        self.layer = "a layer"  # what the messages name; set per layer by the import
        self.written = 0
        self.streamed = 0
        self.bytes_left = 0  # may be written before statvfs is asked again
        self.inodes_left = 0

    def charge(self, size: int, entries: int = 1) -> None:
        cost = size + entries * ENTRY_COST
        self.written += cost
        if self.written > self.cap:
            raise self._over_cap()
        self.bytes_left -= cost
        self.inodes_left -= entries
        if self.bytes_left < 0 or self.inodes_left < 0:
            self.check_space(cost, entries)

    def stream(self, n: int) -> None:
        self.streamed += n
        if self.streamed > self.cap + STREAM_SLACK:
            raise self._over_cap()

    def _over_cap(self) -> InputError:
        return InputError(f"image '{self.image}': {self.layer} unpacks to more than the cap of {_amount(self.cap)} "
                          f"({self.cap} bytes, set by --max-size or {MAX_BYTES_ENV}): nothing of it was kept")

    def check_space(self, size: int, entries: int = 0) -> None:
        """Room for `size` more bytes and `entries` more inodes, besides what is kept free."""
        if self.store is None:
            self.bytes_left = self.inodes_left = sys.maxsize
            return
        st = os.statvfs(self.store)
        free, reserve = st.f_bavail * st.f_frsize, min(FREE_RESERVE, st.f_blocks * st.f_frsize // 20)
        if free - reserve < size:
            raise MachineError(f"no room in {self.store} for image '{self.image}' ({self.layer}): "
                               f"{_amount(size + reserve)} needed ({_amount(reserve)} of it kept free), "
                               f"{_amount(free)} free")
        self.bytes_left = min(free - reserve - size, SPACE_RECHECK)
        self.inodes_left = sys.maxsize
        if st.f_files:  # 0: a filesystem with no fixed number of inodes (btrfs)
            spare = st.f_favail - st.f_files // 20
            if spare < entries:
                raise MachineError(f"no room in {self.store} for image '{self.image}' ({self.layer}): "
                                   f"{entries} more files needed, {st.f_favail} free inodes")
            self.inodes_left = spare - entries
