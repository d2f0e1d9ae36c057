"""Another tool's links on the machine, changing all the time: the background for
tests/integration/test_churn.py.

`Churn` keeps about `links` links in the machine's namespace (veth pairs, both ends on the
machine, named with a prefix of their own) and, until it is stopped, adds `step` of them and
removes the oldest `step`, round after round. One long-lived `ip -batch` process reads the
commands from a pipe, so the churn runs at the kernel's pace, not at fork(2)'s. Each round is
one link group: the kernel removes a whole group in one request. Veth pairs, not bridges: the
kernel takes about 17 ms to delete each bridge (under its rtnl lock), about 0.4 ms per veth end
by group. The machine has no `dummy` link type.

Stopping it (also on failure: it is a context manager) removes every filler link, and checks
that none is left."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
import uuid
from collections import deque
from types import TracebackType

from tests import kernel_snapshot

GROUP_BASE = 0x4E450000  # link groups of the fillers: base + round, far from the small ones tools use
SETTLE_TIMEOUT = 60.0


class Churn:
    def __init__(self, links: int = 1000, step: int = 50) -> None:
        self.prefix = "zc" + uuid.uuid4().hex[:4]  # never ne- or nv: those are netemu's
        self.pairs_per_round = max(1, step // 2)
        self.rounds_kept = max(1, links // (2 * self.pairs_per_round))
        self.base = GROUP_BASE + random.randrange(0, 1 << 12) * 0x1000
        self.live: deque[int] = deque()  # the groups on the machine (or queued), oldest first
        self.used: list[int] = []
        self.rounds = 0  # rounds of adding and removing sent after the initial fill
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ip: subprocess.Popen[str] | None = None

    # the background ----------------------------------------------------------------------
    def __enter__(self) -> Churn:
        self._ip = subprocess.Popen(["ip", "-force", "-batch", "-"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(self.rounds_kept):
                self._send(self._add_round())
            self._wait_for_count(self.rounds_kept * self.pairs_per_round * 2)
            self._thread = threading.Thread(target=self._run, name="churn", daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._send(self._add_round() + f"link delete group {self.live.popleft()}\n")
                self.rounds += 1
        except (BrokenPipeError, OSError) as e:
            self.error = f"the churn's ip -batch went away: {e}"

    def _add_round(self) -> str:
        group = self.base + len(self.used)
        self.used.append(group)
        self.live.append(group)
        number = len(self.used)
        lines = [f"link add name {self.prefix}{number:05d}{i:02d}a group {group} type veth "
                 f"peer name {self.prefix}{number:05d}{i:02d}b group {group}\n"
                 for i in range(self.pairs_per_round)]
        return "".join(lines)

    def _send(self, commands: str) -> None:
        assert self._ip is not None and self._ip.stdin is not None
        self._ip.stdin.write(commands)
        self._ip.stdin.flush()

    # looking at it -----------------------------------------------------------------------
    def filler_names(self) -> set[str]:
        data = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                                         check=True).stdout)
        return {d["ifname"] for d in data if d["ifname"].startswith(self.prefix)}

    def _wait_for_count(self, count: int) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while len(self.filler_names()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the churn never reached {count} links")
            time.sleep(0.05)

    def snapshot(self) -> dict[str, set[str]]:
        """kernel_snapshot.snapshot() without the filler links, which come and go meanwhile."""
        snap = kernel_snapshot.snapshot()
        snap["links"] = {entry for entry in snap["links"] if not entry.startswith(self.prefix)}
        return snap

    # stopping ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the churn and remove every filler link; raises if one is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=SETTLE_TIMEOUT)
        if self._ip is not None:
            if self._ip.stdin is not None:
                with contextlib.suppress(OSError):
                    self._ip.stdin.close()  # ip finishes what is queued, then exits
            try:
                self._ip.wait(timeout=SETTLE_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._ip.kill()
                self._ip.wait()
        self._remove_fillers()

    def _remove_fillers(self) -> None:
        groups = "".join(f"link delete group {group}\n" for group in self.used)
        subprocess.run(["ip", "-force", "-batch", "-"], input=groups, capture_output=True, text=True)
        left = self.filler_names()
        if left:  # not in a group any more (a tool changed it): by name
            subprocess.run(["ip", "-force", "-batch", "-"], capture_output=True, text=True,
                           input="".join(f"link delete {name}\n" for name in sorted(left) if name.endswith("a")))
            left = self.filler_names()
        if left:
            raise AssertionError(f"filler links left on the machine: {sorted(left)[:5]} ({len(left)})")
