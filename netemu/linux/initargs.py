"""netemu-init's contract, defined once: its command line and the status line it reports.

Python writes netemu-init's argv and reads its report; netemu-init.c parses the one and writes
the other. Both sides come from here:

* COMMANDS and OPTIONS are the table of the command line: every option's name, whether it takes
  a value (and what kind), whether it may be repeated, which subcommands take it and what it
  means. `Run` and `Exec` hold a subcommand's values and write its argv from that table.
* STATUS_OK, STATUS_ERROR and STAGES define the one line netemu-init writes on --status-fd;
  `parse_status` reads it.
* `c_header()` turns all of it into options.h, which netemu-init.c is compiled with: initbin
  writes it next to the source at build time, and its text is part of the hash that names the
  binary, so a change here builds a new netemu-init. `python -m netemu.linux.initargs` prints it.

`netemu-init check-args run|exec ARGS...` parses and checks ARGS as the subcommand would, prints
what it read as JSON and exits without touching the kernel (tests/unit/test_initargs.py)."""

from __future__ import annotations

import enum
import functools
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields

RUN, EXEC = "run", "exec"
CHECK_ARGS = "check-args"  # parse and print, for tests: never touches the kernel
MAX_REPEAT = 256  # values one repeatable option may have
PATH_MAX = 4095  # PATH_MAX less its NUL
ARG_MAX = 131071  # one argument of execve (MAX_ARG_STRLEN less its NUL): an --env K=V
HOST_NAME_MAX = 64
BPF_MAXINSNS = 4096  # instructions of a seccomp filter, 8 bytes each


class Value(enum.Enum):
    """What an option takes, and so what netemu-init checks before anything else."""

    FLAG = "flag"  # nothing
    TEXT = "text"  # any text, not empty
    NUMBER = "number"  # a decimal number from 0 to 2^31-1
    HEX = "hex"  # hexadecimal digits (a mask or bytes)


@dataclass(frozen=True)
class Command:
    name: str
    operand: str | None  # one positional argument before "--" (exec: the host's PID 1)
    needs_cmd: bool  # whether "-- CMD..." must follow
    help: str


@dataclass(frozen=True)
class Option:
    flag: str  # as written on the command line
    attr: str  # the field of `Run` or `Exec` that holds it
    value: Value
    commands: tuple[str, ...]
    help: str
    repeat: bool = False
    required: bool = False  # for every command that takes it
    max_len: int = PATH_MAX

    @property
    def c_name(self) -> str:
        return "NE_OPT_" + self.flag.removeprefix("--").replace("-", "_").upper()


COMMANDS = (
    Command(RUN, None, False, "start a host: new namespaces, overlay root, PID 1; CMD starts on SIGUSR1"),
    Command(EXEC, "PID", True, "run CMD inside host PID: its namespaces, cgroups and confinement"),
)

_BOTH = (RUN, EXEC)
# In the order Python writes them: --status-fd first, so that a mistake in any later option is
# reported there; --mask, --ro-path and --rw-path in this order, as each applies over the last.
OPTIONS = (
    Option("--status-fd", "status_fd", Value.NUMBER, (RUN,), "where the outcome is written: one status line",
           max_len=10),
    Option("--net", "net", Value.TEXT, (RUN,),
           "new: a network namespace of its own (the default); host: the machine's; a path: that one, joined"),
    Option("--ipc", "ipc", Value.TEXT, (RUN,),
           "new: an IPC namespace of its own (the default); host: the machine's; a path: that one, joined"),
    Option("--pid", "pid_ns", Value.TEXT, (RUN,),
           "new: a PID namespace of its own (the default); host: the machine's; a path: that one, joined "
           "(PID 1 is then a subreaper, not the namespace's init)"),
    Option("--upper", "upper", Value.TEXT, (RUN,), "the overlay's writable layer", required=True),
    Option("--work", "work", Value.TEXT, (RUN,), "the overlay's work directory", required=True),
    Option("--merged", "merged", Value.TEXT, (RUN,), "the overlay's mount point", required=True),
    Option("--hostname", "hostname", Value.TEXT, (RUN,), "the host's name", max_len=HOST_NAME_MAX),
    Option("--hide", "hides", Value.TEXT, (RUN,), "a machine directory covered with an empty tmpfs inside",
           repeat=True),
    Option("--cgroup", "cgroups", Value.TEXT, _BOTH, "a cgroup.procs file to join before anything is forked",
           repeat=True),
    Option("--lower", "lowers", Value.TEXT, (RUN,), "an overlay lower layer, top first; / is the machine's root",
           repeat=True),
    Option("--bind", "binds", Value.TEXT, (RUN,), "SRC:DST[:ro|rw], a bind mount made after pivot_root",
           repeat=True, max_len=2 * PATH_MAX + 4),
    Option("--env", "env", Value.TEXT, _BOTH, "K=V, the environment of CMD", repeat=True, max_len=ARG_MAX),
    Option("--cwd", "cwd", Value.TEXT, _BOTH, "CMD's working directory inside the host (default /)"),
    Option("--userns", "userns", Value.TEXT, (RUN,),
           "BASE:COUNT, a user namespace of its own: root inside is BASE outside", max_len=41),
    Option("--read-only", "read_only", Value.FLAG, (RUN,), "the overlay root is mounted read-only"),
    Option("--keep-run", "keep_run", Value.FLAG, (RUN,),
           "the image's own /run stays, as in Docker (FRR's images ship /run/frr); without it an empty tmpfs "
           "hides what is there (under image: host, the machine's live sockets)"),
    Option("--device", "devices", Value.TEXT, (RUN,), "SRC:DST, a device node of the machine bound into the host",
           repeat=True, max_len=2 * PATH_MAX + 1),
    Option("--privileged", "privileged", Value.FLAG, (RUN,),
           "the machine's /dev, writable /sys, nothing masked, nodev nowhere"),
    Option("--mask", "masks", Value.TEXT, (RUN,),
           "a path hidden: /dev/null over a file, an empty read-only tmpfs over a directory", repeat=True),
    Option("--ro-path", "ro_paths", Value.TEXT, (RUN,), "a path made read-only", repeat=True),
    Option("--rw-path", "rw_paths", Value.TEXT, (RUN,), "a path made writable again below a read-only one",
           repeat=True),
    Option("--caps", "caps", Value.HEX, _BOTH, "the capability mask every process keeps", max_len=16),
    Option("--seccomp", "seccomp", Value.HEX, _BOTH, "the seccomp filter, struct sock_filter[] bytes",
           max_len=2 * 8 * BPF_MAXINSNS),
    Option("--landlock", "landlock", Value.FLAG, _BOTH,
           "every process in a Landlock domain of its own: the kernel refuses ptrace-class access "
           "(/proc/PID/environ, root, mem) to processes outside it (hosts that see the machine's PIDs)"),
    Option("--tty", "tty", Value.FLAG, (EXEC,), "CMD gets a pseudo-terminal made inside the host"),
    Option("--start-time", "start_time", Value.TEXT, (EXEC,),
           "PID's start time (clock ticks after boot, field 22 of /proc/PID/stat): a process that took "
           "the PID of the host's PID 1 since is refused", max_len=20),
)  # fmt: skip

# The status line on --status-fd: "ok PID" (PID 1 of the host, as the machine numbers it), or
# "error STAGE ERRNO MESSAGE": what netemu-init was doing, the errno of the call that failed (0:
# none) and the message for the user, which names that call. One line, written in one write(2).
STATUS_OK = "ok"
STATUS_ERROR = "error"
STAGES = {
    "args": "reading the command line",
    "cgroups": "joining the host's cgroups",
    "binds": "cloning the sources of binds and devices",
    "userns": "making or entering the host's user namespace",
    "overlay": "making the host's overlay root",
    "namespaces": "joining or making the host's namespaces",
    "start": "forking PID 1 and waiting for its report",
    "rootfs": "mounting /proc, /sys, /dev, /run, pivot_root, then the binds and masks",
    "host": "setting the hostname and bringing up lo",
    "confine": "dropping capabilities and installing the seccomp filter",
    "join": "joining a running host (exec)",
    "stdio": "making the channels of CMD's stdin, stdout and stderr (exec)",
}


@dataclass(frozen=True)
class Status:
    ok: bool
    pid: int | None = None
    stage: str = ""
    errno: int = 0
    message: str = ""


def parse_status(text: str) -> Status:
    """What netemu-init reported; nothing (it died first) or a line of another form is an error
    with what there was as its message."""
    line = text.strip().split("\n", 1)[0]
    if ok := re.fullmatch(rf"{STATUS_OK} ([0-9]+)", line):
        return Status(True, pid=int(ok.group(1)))
    error = re.fullmatch(rf"{STATUS_ERROR} ([a-z]+) ([0-9]+) (.*)", line)
    if error and error.group(1) in STAGES:
        return Status(False, stage=error.group(1), errno=int(error.group(2)), message=error.group(3))
    return Status(False, message=line.removeprefix(f"{STATUS_ERROR} "))


# Python's side: a subcommand's values, and the argv they make -----------------------------------
def options_of(command: str) -> tuple[Option, ...]:
    return tuple(option for option in OPTIONS if command in option.commands)


def bind(source: str, target: str, readonly: bool) -> str:
    """A --bind value."""
    return f"{source}:{target}:{'ro' if readonly else 'rw'}"


def device(path: str) -> str:
    """A --device value: the machine's node at the same path inside."""
    return f"{path}:{path}"


class Invocation:
    """A subcommand's values (the fields of a dataclass, one per option of the table) and the
    argv they make: the options in the table's order, then the operand, then "-- CMD..."."""

    COMMAND = ""
    command: list[str]  # after "--"; a field of each subclass

    def pairs(self) -> Iterator[tuple[str, str | None]]:
        """(option, value) in the order of the argv; a flag's value is None."""
        for option in options_of(self.COMMAND):
            for text in _texts(option, getattr(self, option.attr)):
                yield option.flag, text

    def argv(self, binary: str | os.PathLike[str]) -> list[str]:
        args = [str(binary), self.COMMAND]
        for flag, value in self.pairs():
            args += [flag] if value is None else [flag, value]
        return [*args, *self._tail()]

    def operand(self) -> str | None:
        return None

    def _tail(self) -> list[str]:
        operand = self.operand()
        return [*([operand] if operand else []), *(["--", *self.command] if self.command else [])]


@dataclass(kw_only=True)
class Confined:
    """What confines a host's processes, for both subcommands (None: left as it is)."""

    caps: int | None = None
    seccomp: bytes | None = None
    landlock: bool = False


@dataclass(kw_only=True)
class Run(Invocation, Confined):
    """netemu-init run [OPTION...] [-- CMD...]."""

    COMMAND = RUN
    status_fd: int
    upper: str
    work: str
    merged: str
    net: str | None = None  # netemu-init's default: new
    ipc: str | None = None  # new
    pid_ns: str | None = None  # new (not `pid`: exec's operand is)
    hostname: str | None = None
    hides: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    lowers: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    userns: str | None = None
    read_only: bool = False
    keep_run: bool = False
    devices: list[str] = field(default_factory=list)
    privileged: bool = False
    masks: list[str] = field(default_factory=list)
    ro_paths: list[str] = field(default_factory=list)
    rw_paths: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Exec(Invocation, Confined):
    """netemu-init exec [OPTION...] PID -- CMD..."""

    COMMAND = EXEC
    pid: int
    command: list[str]
    cgroups: list[str] = field(default_factory=list)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    tty: bool = False
    start_time: str | None = None  # decimal; None: not checked

    def operand(self) -> str:
        return str(self.pid)


def _texts(option: Option, value: object) -> list[str | None]:
    """The values `option` is written with for field value `value` (none: not written)."""
    if value is None or value is False:
        return []
    if option.value is Value.FLAG:
        if value is not True:
            raise TypeError(f"{option.flag} is a flag, not {value!r}")
        return [None]
    if isinstance(value, Mapping):
        return [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, list | tuple):
        if not option.repeat:
            raise TypeError(f"{option.flag} takes one value, not {value!r}")
        return [_text(option, item) for item in value]
    return [_text(option, value)]


def _text(option: Option, value: object) -> str:
    if option.value is Value.HEX and isinstance(value, bytes):
        return value.hex()
    if option.value is Value.HEX and isinstance(value, int):
        return f"{value:x}"
    if option.value is Value.NUMBER and isinstance(value, int):
        return str(value)
    if option.value is Value.TEXT and isinstance(value, str):
        return value
    raise TypeError(f"{option.flag} takes {option.value.value}, not {value!r}")


def _check_fields() -> None:
    """Each subcommand's dataclass has a field for each of its options, and no option field more:
    a row of the table without a field (or the other way round) fails at import."""
    for cls in (Run, Exec):
        names = {f.name for f in fields(cls)} - {"command", "pid"}
        wanted = {option.attr for option in options_of(cls.COMMAND)}
        if names != wanted:
            raise RuntimeError(f"initargs.{cls.__name__} and OPTIONS disagree: {sorted(names ^ wanted)}")


_check_fields()


# C's side: options.h ----------------------------------------------------------------------------
_C_COMMAND = {RUN: "NE_CMD_RUN", EXEC: "NE_CMD_EXEC"}


def _comment(text: str) -> str:
    return text.replace("*/", "* /")


def _c_flags(commands: tuple[str, ...]) -> str:
    return " | ".join(_C_COMMAND[c] for c in commands) if commands else "0"


def _c_option(option: Option) -> str:
    required = option.commands if option.required else ()
    return (f'    [{option.c_name}] = {{"{option.flag}", NE_VALUE_{option.value.name}, {_c_flags(option.commands)}, '
            f"{_c_flags(required)}, {int(option.repeat)}, {0 if option.value is Value.FLAG else option.max_len}}},")


def _c_command(command: Command) -> str:
    operand = f'"{command.operand}"' if command.operand else "NULL"
    return f'    {{"{command.name}", {_C_COMMAND[command.name]}, {operand}, {int(command.needs_cmd)}}},'


@functools.cache
def c_header() -> str:
    """options.h: the table and the status line, for netemu-init.c."""
    lines = [
        "/* netemu-init's options and status line, generated from the table in netemu/linux/initargs.py",
        " * (python -m netemu.linux.initargs prints it): change them there, not here. */",
        "#ifndef NETEMU_INIT_OPTIONS_H",
        "#define NETEMU_INIT_OPTIONS_H",
        "#include <stddef.h> /* comes first, with cc -include */",
        "",
        f"#define NE_MAX_REPEAT {MAX_REPEAT}",
        *(f"#define {_C_COMMAND[c.name]} 0x{1 << i:x}" for i, c in enumerate(COMMANDS)),
        "",
        "enum ne_value { " + ", ".join(f"NE_VALUE_{v.name}" for v in Value) + " };",
        "",
        "enum ne_opt {",
        *(f"    {o.c_name}, /* {_comment(o.help)} */" for o in OPTIONS),
        "    NE_OPT_COUNT",
        "};",
        "",
        "struct ne_option {",
        "    const char *name;",
        "    enum ne_value value;",
        "    unsigned commands, required; /* NE_CMD_* that take it, and that need it */",
        "    int repeat;",
        "    size_t max_len;",
        "};",
        "",
        "static const struct ne_option ne_options[NE_OPT_COUNT] = {",
        *(_c_option(o) for o in OPTIONS),
        "};",
        "",
        "struct ne_command {",
        "    const char *name;",
        "    unsigned id;",
        "    const char *operand; /* one positional argument before \"--\", or NULL */",
        "    int needs_cmd;",
        "};",
        "",
        f"#define NE_COMMAND_COUNT {len(COMMANDS)}",
        "static const struct ne_command ne_commands[NE_COMMAND_COUNT] = {",
        *(_c_command(c) for c in COMMANDS),
        "};",
        f'#define NE_CHECK_ARGS "{CHECK_ARGS}"',
        "",
        '/* On --status-fd: "ok PID" or "error STAGE ERRNO MESSAGE", one line. */',
        f'#define NE_STATUS_OK "{STATUS_OK}"',
        f'#define NE_STATUS_ERROR "{STATUS_ERROR}"',
        *(f'#define NE_STAGE_{name.upper()} "{name}" /* {_comment(text)} */' for name, text in STAGES.items()),
        "",
        "#endif",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(c_header())
