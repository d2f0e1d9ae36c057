"""Errors that map to the CLI's exit codes (docs/contract.md §3.2)."""

from __future__ import annotations


class NetemuError(Exception):
    """Base class: every error netemu raises on purpose carries an exit code."""

    exit_code = 4


class CheckFailed(NetemuError):
    """A check or probe did not see what was expected."""

    exit_code = 1


class InputError(NetemuError):
    """Bad input: the topology file or the command-line arguments."""

    exit_code = 2


class TopologyError(InputError):
    """A topology file is invalid; the message names file, line and key path."""

    def __init__(self, file: str, line: int | None, key: str, reason: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.reason = reason
        where = f"{file}:{line}" if line else file
        super().__init__(one_line(f"{where}: {key}: {reason}" if key else f"{where}: {reason}"))


def one_line(text: str) -> str:
    """Control characters from the file (a name ending in "\\n") are shown escaped, so the
    message stays one line and cannot rewrite the user's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class MachineError(NetemuError):
    """The machine cannot do it: not root, a missing kernel feature or tool."""

    exit_code = 3


class LabError(NetemuError):
    """A lab operation failed at run time (for example a node's exec command)."""

    exit_code = 4


class LabExists(InputError):
    """A lab of that name is already running."""


class LabNotFound(InputError):
    """No lab of that name exists."""
