"""Progress of long operations (`up`, `down`, `check`): what the runtime reports and how the
command line shows it.

The runtime reports through a plain `say(message)` callback. A `Step` is such a message that
also counts ("hosts" 12 of 50), so callbacks that only want text keep working, and the command
line can draw live counters from the same calls. Three ways to show them:

- on a terminal, rich's live bars on stderr, redrawn at most 10 times a second by rich's own
  refresh thread (a host started costs one counter update, never a redraw);
- JSON lines on stderr (`--verbose` when stderr is not a terminal), for CI logs and tools;
- nothing (`--quiet`, or stderr is not a terminal): the default for scripts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

Say = Callable[[str], None]
JSON_INTERVAL = 0.1  # seconds between two count lines of one kind in JSON mode (the last always shows)


class Step(str):
    """A progress message that counts: `done` of `total` `kind` (hosts, links, checks, labs)."""

    kind: str
    done: int
    total: int

    def __new__(cls, kind: str, done: int, total: int, text: str | None = None) -> Step:
        self = super().__new__(cls, text if text is not None else f"{kind} {done}/{total}")
        self.kind, self.done, self.total = kind, done, total
        return self


def mode_for(quiet: bool, verbose: bool, stream: IO[str] | None = None) -> str:
    """quiet, json, live or log (live bars plus a line per phase) from the flags and the stream."""
    stream = stream or sys.stderr
    if quiet:
        return "quiet"
    if not stream.isatty():
        return "json" if verbose else "quiet"
    return "log" if verbose else "live"


@contextmanager
def reporter(mode: str, title: str, stream: IO[str] | None = None) -> Iterator[Say | None]:
    """A `say` callback for the duration of one operation, or None when nothing is shown."""
    stream = stream or sys.stderr
    if mode == "quiet":
        yield None
    elif mode == "json":
        yield JsonLines(stream, title)
    else:
        with _live(stream, title, verbose=mode == "log") as say:
            yield say


class JsonLines:
    """One JSON object per line: {"t": seconds, "op": ..., "message": ...} plus kind/done/total
    for counts. Counts are thinned to one line per JSON_INTERVAL per kind, so a 1000-host `up`
    does not write 1000 lines; the line that completes a count always appears."""

    def __init__(self, stream: IO[str], op: str) -> None:
        self.stream = stream
        self.op = op
        self.start = time.monotonic()
        self.last: dict[str, float] = {}

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        event: dict[str, Any] = {"t": round(now - self.start, 3), "op": self.op, "message": str(message)}
        if isinstance(message, Step):
            if message.done < message.total and now - self.last.get(message.kind, -1.0) < JSON_INTERVAL:
                return
            self.last[message.kind] = now
            event.update(kind=message.kind, done=message.done, total=message.total)
        self.stream.write(json.dumps(event) + "\n")
        self.stream.flush()


@contextmanager
def _live(stream: IO[str], title: str, verbose: bool) -> Iterator[Say]:
    # rich costs tens of milliseconds to import: only a terminal pays for it.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(file=stream, stderr=stream is sys.stderr)
    class Bar(BarColumn):
        def render(self, task: Any) -> Any:  # the phase line counts nothing: no pulsing bar
            return "" if task.total is None else super().render(task)

    class Count(MofNCompleteColumn):
        def render(self, task: Any) -> Any:
            return "" if task.total is None else super().render(task)

    # Redrawn by rich's own thread, 10 times a second at most: a host started is a counter update.
    bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), Bar(bar_width=30), Count(),
                    TimeElapsedColumn(), console=console, transient=True, refresh_per_second=10,
                    redirect_stdout=False, redirect_stderr=False)
    phase = bars.add_task(title, total=None)
    counters: dict[str, Any] = {}
    start = time.monotonic()

    def say(message: str) -> None:
        if isinstance(message, Step):
            if message.kind not in counters:
                counters[message.kind] = bars.add_task(message.kind, total=message.total)
            bars.update(counters[message.kind], completed=message.done, total=message.total)
            return
        bars.update(phase, description=f"{title}: {message}")
        if verbose:
            bars.console.print(f"[dim]{time.monotonic() - start:7.2f}s[/dim] {message}", highlight=False)

    with bars:
        yield say
