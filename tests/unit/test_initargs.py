"""netemu-init's contract (netemu/linux/initargs.py): the argv Python writes for every option of
the table reads back the same through the C parser, what the table refuses is refused with its
message, the status line parses, and options.h, the C source and the table agree.

The binary is compiled here into a directory of the test's own (no trusted directory, no root)
and run as `netemu-init check-args`, which reads and checks a command line without touching the
kernel."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from netemu.errors import LabError, MachineError
from netemu.linux import initargs, initbin
from netemu.linux.initargs import EXEC, OPTIONS, RUN, Exec, Option, Run, Status, Value
from netemu.runtime import nodes

SOURCE = Path(initbin.__file__).parent / "init" / "netemu-init.c"

# A value for every field of the table: text that JSON and C strings must carry whole (spaces,
# quotes, a backslash, a tab, UTF-8), numbers and bytes as Python has them.
SAMPLES: dict[str, object] = {
    "status_fd": 7,
    "net": "/run/netns/lab x",
    "upper": "/layers/h1/upper",
    "work": "/layers/h1/work",
    "merged": "/layers/h1/merged",
    "hostname": "h-1",
    "hides": ["/var/lib/netemu", "/a dir"],
    "cgroups": ["/sys/fs/cgroup/netemu/l/h1/cgroup.procs", "/sys/fs/cgroup/cpu/netemu/cgroup.procs"],
    "lowers": ["/", "/layers/sha256/ab cd"],
    "binds": [initargs.bind("/src", "/dst", True), initargs.bind("/s p", "/d p", False)],
    "env": {"A": "1", "QUOTED": 'say "hi" \\ \there', "UTF8": "h\u00e9"},
    "cwd": "/srv/work dir",
    "userns": "100000:65536",
    "read_only": True,
    "keep_run": True,
    "devices": [initargs.device("/dev/net/tun"), initargs.device("/dev/fuse")],
    "privileged": True,
    "masks": ["/proc/kcore", "/sys/firmware"],
    "ro_paths": ["/proc/sys", "/proc/bus"],
    "rw_paths": ["/proc/sys/net"],
    "caps": 0xA80425FB,
    "seccomp": bytes(range(24)),
    "tty": True,
    "landlock": True,
}
REQUIRED = {RUN: {"status_fd": 3, "upper": "/u", "work": "/w", "merged": "/m"}, EXEC: {"pid": 4242, "command": ["sh"]}}
CLASSES: dict[str, type[Run] | type[Exec]] = {RUN: Run, EXEC: Exec}


@pytest.fixture(scope="module")
def init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler (gcc and libc6-dev) to build netemu-init")
    output = tmp_path_factory.mktemp("init") / "netemu-init"
    try:
        initbin.compile_to(cc, output, *initbin.sources())
    except MachineError as exc:
        pytest.skip(str(exc))
    return output


def check_args(init: Path, args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(init), initargs.CHECK_ARGS, *args], capture_output=True, text=True, timeout=30,
                          **kwargs)


def read_back(init: Path, invocation: Run | Exec) -> dict[str, object]:
    result = check_args(init, invocation.argv("netemu-init")[1:])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def expected(invocation: Run | Exec) -> dict[str, object]:
    operand = invocation.operand()
    return {"command": invocation.COMMAND, "options": [list(pair) for pair in invocation.pairs()],
            "operand": operand, "cmd": invocation.command or None}


def invocation(subcommand: str, **values: object) -> Run | Exec:
    return CLASSES[subcommand](**{**REQUIRED[subcommand], **values})


# round trips -----------------------------------------------------------------------------------
def test_every_field_of_the_table_has_a_sample():
    assert {option.attr for option in OPTIONS} == set(SAMPLES)


@pytest.mark.parametrize(("command", "option"), [(c, o) for o in OPTIONS for c in o.commands],
                         ids=lambda v: v if isinstance(v, str) else v.flag)
def test_each_option_reads_back_as_python_wrote_it(init, command: str, option: Option):
    written = invocation(command, **{option.attr: SAMPLES[option.attr]})
    assert option.flag in written.argv("x")
    assert read_back(init, written) == expected(written)


@pytest.mark.parametrize("command", [RUN, EXEC])
def test_every_option_at_once_reads_back_in_order(init, command: str):
    values = {o.attr: SAMPLES[o.attr] for o in initargs.options_of(command)}
    written = invocation(command, **values, command=["sh", "-c", 'echo "$1"', "--", "-x"])
    found = read_back(init, written)
    assert found == expected(written)
    assert [name for name, _ in found["options"]] == [
        o.flag for o in initargs.options_of(command) for _ in initargs._texts(o, values[o.attr])]


def test_run_writes_no_command_separator_without_a_command(init):
    written = invocation(RUN)
    assert "--" not in written.argv("x")
    assert read_back(init, written)["cmd"] is None


def test_python_values_become_the_texts_c_reads():
    written = invocation(EXEC, caps=0x3FF, seccomp=b"\x06\x00", env={"K": "V"}, tty=True, cwd="/")
    assert written.argv("/bin/netemu-init") == [
        "/bin/netemu-init", "exec", "--env", "K=V", "--cwd", "/", "--caps", "3ff", "--seccomp", "0600", "--tty",
        "4242", "--", "sh"]


@pytest.mark.parametrize(("field", "value"), [("status_fd", "3"), ("caps", "3ff"), ("read_only", 1),
                                             ("hostname", ["a", "b"]), ("upper", Path("/u"))])
def test_a_value_of_the_wrong_type_is_a_programming_error(field: str, value: object):
    with pytest.raises(TypeError):
        invocation(RUN, **{field: value}).argv("x")


def test_nothing_of_the_machine_is_touched(init):
    """Paths that do not exist are read and printed: check-args opens, stats and mounts nothing."""
    written = invocation(RUN, cgroups=["/nonexistent/cgroup.procs"], binds=[initargs.bind("/nonexistent", "/x", True)],
                         net="/nonexistent/netns", lowers=["/nonexistent"], userns="100000:65536")
    assert read_back(init, written) == expected(written)


# refusals --------------------------------------------------------------------------------------
def run_argv(*extra: str) -> list[str]:
    return ["run", "--upper", "/u", "--work", "/w", "--merged", "/m", *extra]


def exec_argv(*extra: str, pid: str = "4242") -> list[str]:
    return ["exec", *extra, pid, "--", "sh"]


REFUSED = {
    "unknown": (run_argv("--bogus", "x"), "unknown option --bogus"),
    "unknown-exec": (exec_argv("--uper", "/u"), "unknown option --uper"),
    "single-dash": (run_argv("-e", "x"), "unknown option -e"),
    "other-command": (run_argv("--tty"), "option --tty is not one of run's"),
    "other-command-exec": (exec_argv("--hostname", "h"), "option --hostname is not one of exec's"),
    "missing-value": (run_argv("--hostname"), "option --hostname needs a value"),
    "missing-value-exec": (["exec", "--cwd"], "option --cwd needs a value"),
    "empty-value": (run_argv("--cwd", ""), "option --cwd needs a value, not an empty one"),
    "twice": (run_argv("--hostname", "a", "--hostname", "b"), "option --hostname given twice"),
    "flag-twice": (run_argv("--read-only", "--read-only"), "option --read-only given twice"),
    "too-many": (run_argv(*["--hide", "/x"] * (initargs.MAX_REPEAT + 1)), "too many --hide options (max 256)"),
    "required": (["run", "--upper", "/u", "--work", "/w"], "option --merged is required"),
    "operand-run": (run_argv("4242"), "unexpected argument 4242"),
    "two-operands": (["exec", "1", "2", "--", "sh"], "unexpected argument 2"),
    "no-pid": (["exec", "--", "sh"], "exec needs PID: netemu-init exec [OPTION...] PID -- CMD..."),
    "no-command": (["exec", "4242", "--"], "exec needs a command after --"),
    "no-separator": (["exec", "4242"], "exec needs a command after --"),
    "fd-word": (run_argv("--status-fd", "x"), "bad --status-fd x: a decimal number"),
    "fd-sign": (run_argv("--status-fd", "+3"), "bad --status-fd +3: a decimal number"),
    "fd-negative": (run_argv("--status-fd", "-1"), "bad --status-fd -1: a decimal number"),
    "fd-space": (run_argv("--status-fd", " 3"), "bad --status-fd  3: a decimal number"),
    "fd-trailing": (run_argv("--status-fd", "3x"), "bad --status-fd 3x: a decimal number"),
    "fd-too-big": (run_argv("--status-fd", "2147483648"), "bad --status-fd 2147483648: a decimal number"),
    "pid-word": (exec_argv(pid="abc"), "bad PID abc: the host's PID 1 on the machine, a number"),
    "pid-zero": (exec_argv(pid="0"), "bad PID 0: the host's PID 1 on the machine, a number"),
    "pid-too-big": (exec_argv(pid="99999999999"), "bad PID 99999999999: the host's PID 1 on the machine, a number"),
    "caps-prefix": (run_argv("--caps", "0x3f"), "bad --caps 0x3f: hexadecimal digits"),
    "caps-negative": (run_argv("--caps", "-1"), "bad --caps -1: hexadecimal digits"),
    "caps-space": (exec_argv("--caps", " 3f"), "bad --caps  3f: hexadecimal digits"),
    "seccomp-odd": (run_argv("--seccomp", "abc"), "bad --seccomp: an odd number of hexadecimal digits (3)"),
    "seccomp-partial": (run_argv("--seccomp", "00" * 12), "bad --seccomp: not a whole BPF program (12 bytes)"),
    "seccomp-digit": (exec_argv("--seccomp", "0g" * 8), "bad --seccomp " + "0g" * 8 + ": hexadecimal digits"),
    "bind-relative": (run_argv("--bind", "src:/dst"), "bad --bind src:/dst: SRC:DST[:ro|rw], absolute paths"),
    "bind-target": (run_argv("--bind", "/src:dst"), "bad --bind /src:dst: SRC:DST[:ro|rw], absolute paths"),
    "bind-mode": (run_argv("--bind", "/src:/dst:rx"), "bad --bind /src:/dst:rx: SRC:DST[:ro|rw], absolute paths"),
    "bind-dev": (run_argv("--bind", "/dev/sda:/dev/sda:dev"),
                 "bad --bind /dev/sda:/dev/sda:dev: SRC:DST[:ro|rw], absolute paths"),
    "bind-one": (run_argv("--bind", "/src"), "bad --bind /src: SRC:DST[:ro|rw], absolute paths"),
    "bind-four": (run_argv("--bind", "/a:/b:ro:x"), "bad --bind /a:/b:ro:x: SRC:DST[:ro|rw], absolute paths"),
    "device-mode": (run_argv("--device", "/dev/a:/dev/a:ro"), "bad --device /dev/a:/dev/a:ro: SRC:DST, absolute paths"),
}
USERNS = ["0:65536", "100000:0", "4294967295:2", "1:x", "100000", "1:2:3", " 1:2", "1: 2", "+1:2", "1:-2",
          "99999999999:1"]


def assert_refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 126 and result.stdout == "", (result.stdout, result.stderr)
    assert result.stderr == f"netemu-init: {message}\n"


@pytest.mark.parametrize("case", REFUSED)
def test_a_bad_command_line_is_refused_with_its_reason(init, case: str):
    argv, message = REFUSED[case]
    assert_refused(check_args(init, argv), message)


@pytest.mark.parametrize("value", USERNS)
def test_a_bad_id_range_is_refused(init, value: str):
    message = f"bad --userns {value}: BASE:COUNT, a range of ids on the machine other than root's"
    assert_refused(check_args(init, run_argv("--userns", value)), message)


@pytest.mark.parametrize(("command", "option"),
                         [(c, o) for o in OPTIONS if o.value is not Value.FLAG for c in o.commands],
                         ids=lambda v: v if isinstance(v, str) else v.flag)
def test_a_value_longer_than_the_table_allows_is_refused(init, command: str, option: Option):
    too_long = "1" * (option.max_len + 1)
    if command == RUN:
        required = {"--upper": "/u", "--work": "/w", "--merged": "/m", option.flag: too_long}
        argv = ["run", *(arg for pair in required.items() for arg in pair)]
    else:
        argv = exec_argv(option.flag, too_long)
    if option.max_len >= initargs.ARG_MAX:  # the kernel's own limit: execve refuses it first
        with pytest.raises(OSError) as refused:
            check_args(init, argv)
        assert refused.value.errno == errno.E2BIG
        return
    assert_refused(check_args(init, argv), f"value of {option.flag} longer than {option.max_len} bytes "
                                           f"({option.max_len + 1})")


def test_the_longest_values_the_table_allows_are_read(init):
    longest = {"hostname": "h" * initargs.HOST_NAME_MAX, "cwd": "/" + "d" * (initargs.PATH_MAX - 1),
               "caps": (1 << 64) - 1, "seccomp": bytes(8 * initargs.BPF_MAXINSNS),
               "env": {"K": "v" * (initargs.ARG_MAX - 2)}}
    written = invocation(RUN, **longest)
    assert read_back(init, written) == expected(written)


def test_a_refusal_goes_to_the_status_descriptor_as_a_status_line(init):
    read_fd, write_fd = os.pipe()
    try:
        result = check_args(init, ["run", "--status-fd", str(write_fd), "--bogus"], pass_fds=(write_fd,))
        os.close(write_fd)
        line = os.read(read_fd, 4096).decode()
    finally:
        os.close(read_fd)
    assert result.returncode == 126 and result.stderr == ""
    assert line == "error args 0 unknown option --bogus\n"
    assert initargs.parse_status(line) == Status(False, stage="args", errno=0, message="unknown option --bogus")


def test_without_a_known_subcommand_it_says_how_to_call_it(init):
    for args in ([], ["bogus"], [initargs.CHECK_ARGS], [initargs.CHECK_ARGS, "bogus"]):
        result = subprocess.run([str(init), *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and result.stderr == "usage: netemu-init run|exec|check-args ...\n"


# the status line --------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "status"), [
    ("ok 4242\n", Status(True, pid=4242)),
    ("error overlay 19 mount overlay on /m (overlay): No such device\n",
     Status(False, stage="overlay", errno=errno.ENODEV, message="mount overlay on /m (overlay): No such device")),
    ("error start 0 host init exited during set-up",
     Status(False, stage="start", message="host init exited during set-up")),
    ("", Status(False)),
    ("ok\n", Status(False, message="ok")),
    ("error something else\n", Status(False, message="something else")),
    ("error rootfs x mkdir /x: Permission denied", Status(False, message="rootfs x mkdir /x: Permission denied")),
    ("Segmentation fault\n", Status(False, message="Segmentation fault")),
])  # fmt: skip
def test_status_lines_parse(text: str, status: Status):
    assert initargs.parse_status(text) == status


def launch_reporting(text: str) -> nodes.Launch:
    """A Launch whose netemu-init wrote `text` on its status descriptor and exited with 126."""
    launch = object.__new__(nodes.Launch)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, text.encode())
    os.close(write_fd)
    launch.status_fd, launch.node = read_fd, SimpleNamespace(name="h1")
    launch.proc = SimpleNamespace(wait=lambda: 126, returncode=126)
    return launch


def test_a_launch_reads_pid_1_from_the_status_line():
    assert launch_reporting("ok 4242\n").result() == 4242


@pytest.mark.parametrize(("text", "error", "message"), [
    ("error overlay 19 mount overlay on /m (overlay): No such device\n", MachineError,
     "the kernel has no overlay filesystem (module overlay)"),
    ("error overlay 19 mount overlay (fsopen): No such device\n", MachineError,
     "the kernel has no overlay filesystem (module overlay)"),
    ("error overlay 2 mount overlay on /m (overlay): No such file or directory\n", LabError,
     "node h1 did not start: mount overlay on /m (overlay): No such file or directory"),
    ("error rootfs 19 mount /x on /y (bind): No such device\n", LabError,
     "node h1 did not start: mount /x on /y (bind): No such device"),
    ("error start 0 host init exited during set-up\n", LabError,
     "node h1 did not start: host init exited during set-up"),
    ("", LabError, "node h1 did not start: netemu-init exited with 126"),
])  # fmt: skip
def test_a_launch_that_failed_says_why(text: str, error: type[Exception], message: str):
    with pytest.raises(error) as raised:
        launch_reporting(text).result()
    assert str(raised.value) == message


# the table, the header and the C source agree ---------------------------------------------------
def test_the_header_is_the_table():
    header = initargs.c_header()
    enum = re.search(r"enum ne_opt \{(.*?)NE_OPT_COUNT", header, re.S)
    assert enum is not None
    assert re.findall(r"(NE_OPT_\w+),", enum.group(1)) == [o.c_name for o in OPTIONS]
    rows = dict(re.findall(r'\[(NE_OPT_\w+)\] = \{("--[^"]+", [^}]*)\}', header))
    command_bits = {RUN: 1, EXEC: 2}
    for option in OPTIONS:
        name, kind, commands, required, repeat, max_len = (part.strip() for part in rows[option.c_name].split(","))
        bits = sum(command_bits[c] for c in option.commands)
        assert name == f'"{option.flag}"' and kind == f"NE_VALUE_{option.value.name}"
        assert sum(command_bits[c.strip()[7:].lower()] for c in commands.split("|")) == bits
        assert required == ("0" if not option.required else commands)
        assert (int(repeat), int(max_len)) == (option.repeat, 0 if option.value is Value.FLAG else option.max_len)
    for name in initargs.STAGES:
        assert f'#define NE_STAGE_{name.upper()} "{name}"' in header


def test_the_c_source_reads_every_option_and_reports_every_stage():
    """An option C never looks at would be accepted and ignored; a stage never set, never seen."""
    source = SOURCE.read_text()
    for option in OPTIONS:
        assert re.search(rf"\b{option.c_name}\b", source), f"netemu-init.c never reads {option.flag}"
    for name in initargs.STAGES:
        assert f"NE_STAGE_{name.upper()}" in source, f"netemu-init.c never reports stage {name}"
    # the options are read through the table only: no option name is spelled out in the C
    assert not re.findall(r'"--[a-z-]+"', source)


def test_the_binary_is_named_by_the_header_and_the_source():
    header, source = initbin.sources()
    assert header == initargs.c_header().encode() and source == SOURCE.read_bytes()
    digest = initbin.source_digest(header, source)
    assert initbin.source_digest(header + b"\n", source) != digest  # a change of the table: a new binary
    assert initbin.source_digest(b"ab", b"c") != initbin.source_digest(b"a", b"bc")


def test_the_dataclasses_have_a_field_for_each_option():
    initargs._check_fields()  # also run at import
    for command in (RUN, EXEC):
        assert {o.attr for o in initargs.options_of(command)} <= set(CLASSES[command].__dataclass_fields__)


def test_the_source_compiles_without_warnings(tmp_path: Path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler (gcc and libc6-dev)")
    header = tmp_path / "options.h"
    header.write_text(initargs.c_header())
    result = subprocess.run([cc, "-fsyntax-only", "-Wall", "-Wextra", "-include", str(header), str(SOURCE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr


# --ipc, --pid and --start-time ------------------------------------------------------------------
# The table's newer options, with the samples every round trip above takes its values from.
SAMPLES.update({"ipc": "/proc/4242/ns/ipc", "pid_ns": "/proc/4242/ns/pid", "start_time": "18446744073709551615"})


@pytest.mark.parametrize("value", ["new", "host", "/proc/1/ns/ipc"])
def test_ipc_and_pid_take_new_host_or_a_namespace_path(init, value: str):
    written = invocation(RUN, ipc=value, pid_ns=value)
    assert read_back(init, written) == expected(written)


@pytest.mark.parametrize(("flag", "value"), [("--ipc", "shared"), ("--pid", "proc/1/ns/pid"), ("--pid", "New")])
def test_a_namespace_mode_that_is_no_path_is_refused(init, flag: str, value: str):
    message = f"bad {flag} {value}: new, host or the absolute path of a namespace"
    assert_refused(check_args(init, run_argv(flag, value)), message)


@pytest.mark.parametrize("value", ["x", "-1", "1 ", "18446744073709551616"])
def test_a_bad_start_time_is_refused(init, value: str):
    assert_refused(check_args(init, exec_argv("--start-time", value)),
                   f"bad --start-time {value}: a decimal number of clock ticks")
