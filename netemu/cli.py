"""The `netemu` command: parse arguments, call the facade (netemu.api), render (netemu.render,
and the report and picture renderers of probe/ and topology/). Nothing else lives here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.shell_completion import CompletionItem

from netemu import __version__, api, progress, render
from netemu.errors import CheckFailed, InputError, MachineError, NetemuError
from netemu.progress import Step

if TYPE_CHECKING:
    from netemu.runtime.records import LabRecord

FORMATS = click.Choice(["table", "json"])
PROG = "netemu"  # fixed, so completion's variable is _NETEMU_COMPLETE however netemu is started
QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")
VERBOSE = click.option("-v", "--verbose", is_flag=True,
                       help="A line per step on a terminal; JSON lines on stderr when it is not one.")
PULL = click.option("--pull", type=click.Choice(api.PULL_POLICIES), default="missing", show_default=True,
                    help="Registry images: fetch always, only when missing from the store, or never.")


def _say(quiet: bool, verbose: bool, title: str) -> Any:
    """The one progress display (netemu.progress): live bars on a terminal, JSON lines with
    --verbose when stderr is not one, else nothing."""
    return progress.reporter(progress.mode_for(quiet, verbose), title)


def _echo(text: str) -> None:
    click.echo(text)


def _emit(value: Any, fmt: str, as_table: Any) -> None:
    """One result, as JSON or through its table renderer."""
    click.echo(render.as_json(value) if fmt == "json" else as_table(value))


# --- shell completion: read the state files only, never the kernel ------------------------------
def _complete_labs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(name) for name in api.lab_names_quietly() if name.startswith(incomplete)]


def _complete_lab_or_file(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    # A `file` item first: bash falls back to file names only when no lab name matched.
    return [CompletionItem(incomplete, type="file"), *_complete_labs(ctx, param, incomplete)]


def _record_for_completion(ctx: click.Context) -> LabRecord:
    return api.record_quietly(ctx.params.get("name") or ctx.params.get("target") or "")


def _complete_nodes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(n) for n in _record_for_completion(ctx).nodes if n.startswith(incomplete)]


def _complete_endpoints(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """NODE:IF of every link end that is a host's interface."""
    ends = [ep for entry in _record_for_completion(ctx).links for ep in entry.endpoints if ":" in ep]
    return [CompletionItem(ep) for ep in ends if ep.startswith(incomplete)]


def _complete_targets(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _complete_nodes(ctx, param, incomplete) + _complete_endpoints(ctx, param, incomplete)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netemu")
def cli() -> None:
    """Virtual network topologies of real Linux containers on one machine."""


@cli.command()
@click.argument("file", type=click.Path())
def validate(file: str) -> None:
    """Check FILE (netemu's, a containerlab .clab.yml, a Kathara lab.conf or its directory)
    without touching the kernel."""
    topo = api.load(file)
    click.echo(f"{file}: ok: lab '{topo.name}', {len(topo.nodes)} nodes, {len(topo.networks)} networks, "
               f"{len(topo.links)} links, {len(topo.checks)} checks")


# --- pictures ---------------------------------------------------------------------------------
PICTURE_TYPES = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mmd"}


@cli.command()
@click.argument("target", metavar="FILE|NAME", shell_complete=_complete_lab_or_file)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write here; the suffix picks the type: .svg, .png (Graphviz), .dot, .mmd (Mermaid).")
@click.option("--format", "fmt", type=click.Choice(["svg", "png", "dot", "mmd"]),
              help="The type when there is no -o, or to override its suffix (default: dot).")
@click.option("--layout", type=click.Choice(["auto", "dot", "sfdp"]), default="auto", show_default=True,
              help="Graphviz layout: ranked left to right (dot), or clustered (sfdp); auto picks by size.")
def graph(target: str, output: str | None, fmt: str | None, layout: str) -> None:
    """A picture of the topology FILE, or of running lab NAME (with the addresses `up` chose)."""
    from netemu.topology import drawing

    topo = api.topology_of(target)
    fmt = fmt or _picture_type(output)
    text = drawing.to_mermaid(topo) if fmt == "mmd" else drawing.to_dot(topo, layout)
    data = _graphviz(text, fmt) if fmt in ("svg", "png") else text.encode()
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        Path(output).write_bytes(data)
    except OSError as e:
        raise InputError(f"{output}: cannot write: {e.strerror or e}") from None
    click.echo(f"{output}: {fmt}, {len(topo.nodes)} nodes, {len(topo.networks)} networks, {len(topo.links)} links")


def _picture_type(output: str | None) -> str:
    if output is None:
        return "dot"
    suffix = Path(output).suffix.lower()
    if suffix not in PICTURE_TYPES:
        raise InputError(f"{output}: unknown picture type '{suffix or '(none)'}': use .svg, .png, .dot or .mmd "
                         "(or --format)")
    return PICTURE_TYPES[suffix]


def _graphviz(source: str, fmt: str) -> bytes:
    """SVG or PNG from DOT through Graphviz's `dot` program (its `layout` attribute picks the engine)."""
    exe = shutil.which("dot")
    if exe is None:
        raise MachineError("graphviz is not installed (its `dot` program draws SVG and PNG): "
                           "apt-get install graphviz, or use -o FILE.dot or FILE.mmd")
    try:
        result = subprocess.run([exe, f"-T{fmt}"], input=source.encode(), capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise MachineError(f"graphviz's dot -T{fmt} took over 300 s: use -o FILE.dot, draw it yourself") from None
    if result.returncode != 0:
        raise MachineError(f"graphviz's dot -T{fmt} failed: {result.stderr.decode(errors='replace').strip()[-500:]}")
    return result.stdout


# --- shell completion -------------------------------------------------------------------------
@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]), default="bash")
def completion(shell: str) -> None:
    """The completion script for SHELL: commands, options, lab names and node names.

    \b
    bash, for this shell:   eval "$(netemu completion bash)"
    bash, for every shell:  netemu completion bash > /etc/bash_completion.d/netemu"""
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)
    assert complete is not None, "click knows bash, zsh and fish"
    click.echo(complete(cli, {}, PROG, "_NETEMU_COMPLETE").source())


@cli.command()
@click.argument("file", type=click.Path())
@PULL
@QUIET
@VERBOSE
def up(file: str, pull: str, quiet: bool, verbose: bool) -> None:
    """Create the lab described by FILE; on failure nothing is left behind.

    On a terminal a live count of hosts and links shows on stderr."""
    topo = api.load(file)
    started = time.monotonic()
    with _say(quiet, verbose, f"up {topo.name}") as say:
        record = api.up(topo, progress=say, pull=pull)
    if not quiet:
        click.echo(f"lab '{record.name}' is up: {len(record.nodes)} nodes, {len(record.links)} links "
                   f"in {time.monotonic() - started:.2f}s")


@cli.command()
@click.argument("target", required=False, shell_complete=_complete_lab_or_file)
@click.option("--all", "all_labs", is_flag=True, help="Take down every lab.")
@QUIET
@VERBOSE
def down(target: str | None, all_labs: bool, quiet: bool, verbose: bool) -> None:
    """Remove everything lab TARGET (a name or its file) created. Idempotent with --all."""
    if all_labs == bool(target):
        raise InputError("give a lab name (or its file), or --all")
    api.require_root()  # also with --all and no lab: the answer must not depend on what exists
    names = [entry.name for entry in api.labs()] if all_labs else [api.lab_name(target or "")]
    lines: list[str] = []
    try:  # the lines wait for the live display to end, which they would garble
        with _say(quiet, verbose, "down") as say:
            for done, name in enumerate(names, 1):
                removed = api.down(name, progress=say)
                if say and len(names) > 1:
                    say(Step("labs", done, len(names)))
                lines.append(f"lab '{name}' is down" if not removed.empty() else f"no lab '{name}': nothing to remove")
    finally:
        for line in [] if quiet else lines:
            click.echo(line)


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="table")
@click.option("-n", "--nodes", "by_node", is_flag=True, help="One row per node: its lab, pid, state and netns.")
def ps(fmt: str, by_node: bool) -> None:
    """List the labs on this machine (with --nodes, their nodes)."""
    if by_node:
        _emit(api.lab_nodes(), fmt, render.nodes_table)
    else:
        _emit(api.labs(), fmt, render.labs_table)


@cli.command()
@click.argument("name", shell_complete=_complete_labs)
@click.option("--format", "fmt", type=FORMATS, default="table")
def inspect(name: str, fmt: str) -> None:
    """Nodes, pids, limits, interfaces, addresses, routes and link state of lab NAME.

    The table leaves out loopback and IPv6 link-local addresses and routes; JSON has them all."""
    _emit(api.inspect(api.lab_name(name)), fmt, render.inspect_text)


@cli.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open (it always passes through).")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal.")
@click.option("-e", "--env", "envs", multiple=True, help="KEY=VALUE added to the environment.")
@click.argument("name", shell_complete=_complete_labs)
@click.argument("node", shell_complete=_complete_nodes)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def exec_(interactive: bool, tty: bool, envs: tuple[str, ...], name: str, node: str,
          command: tuple[str, ...]) -> None:
    """Run COMMAND in NODE of lab NAME (all its namespaces and its cgroup); its exit code is ours."""
    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        argv = ["/bin/sh"] if tty or interactive else []
    if not argv:
        raise InputError("give a command after --, or -it for a shell")
    env = {}
    for item in envs:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--env {item}: expected KEY=VALUE")
        env[key] = value
    api.attach(name, node, argv, env=env, tty=tty)


@cli.command(context_settings={"help_option_names": ["--help"], "allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin attached.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a pseudo-terminal.")
@click.option("-d", "--detach", is_flag=True, help="Leave the command running in the background; print the name.")
@click.option("--name", help="The lab's name, also its one node's (default: run-XXXXXX).")
@click.option("--network", default="bridge", show_default=True, metavar="MODE",
              help="none, bridge (the NAT bridge), host, or container:NAME (another run's network).")
@click.option("-h", "--hostname", help="The host's hostname (default: its name).")
@click.option("--dns", multiple=True, help="A nameserver for /etc/resolv.conf (repeatable).")
@click.option("--dns-search", multiple=True, help="A search domain (repeatable).")
@click.option("--add-host", multiple=True, metavar="NAME:ADDRESS", help="An /etc/hosts entry (repeatable).")
@click.option("-e", "--env", "envs", multiple=True, metavar="KEY[=VALUE]",
              help="A variable; KEY alone passes this shell's value (repeatable).")
@click.option("-v", "--volume", multiple=True, metavar="HOST:CONTAINER[:ro]", help="A bind mount (repeatable).")
@click.option("-p", "--publish", multiple=True, metavar="HOST:CONTAINER[/PROTO]",
              help="Publish a port on the machine (repeatable).")
@click.option("-m", "--memory", help="Memory limit (64M, 1G).")
@click.option("--cpus", help="CPU limit (0.5, 2).")
@click.option("--pids-limit", type=int, help="At most this many processes.")
@click.option("--cap-add", multiple=True, help="A capability to add (repeatable).")
@click.option("--cap-drop", multiple=True, help="A capability to drop (repeatable).")
@click.option("--privileged", is_flag=True, help="The machine's root in all but its namespaces.")
@click.option("--rm", "remove", is_flag=True, help="Remove the lab when the command exits.")
@PULL
@QUIET
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(image: str, command: tuple[str, ...], quiet: bool, pull: str, **options: Any) -> None:
    """Run COMMAND in a new one-host lab from IMAGE, as `docker run` does; our exit code is the
    command's. `netemu ps`, `exec` and `down` work on the lab like on any other."""
    spec = api.RunSpec(image=image, command=list(command), name=options["name"], network=options["network"],
                   hostname=options["hostname"], dns=list(options["dns"]), dns_search=list(options["dns_search"]),
                   add_hosts=list(options["add_host"]), env=list(options["envs"]), volumes=list(options["volume"]),
                   publish=list(options["publish"]), memory=options["memory"], cpus=options["cpus"],
                   pids_limit=options["pids_limit"], cap_add=list(options["cap_add"]),
                   cap_drop=list(options["cap_drop"]), privileged=options["privileged"], detach=options["detach"],
                   interactive=options["interactive"], tty=options["tty"], remove=options["remove"])
    if spec.tty and not sys.stdin.isatty():
        raise InputError("-t: the input device is not a terminal (drop -t, or run from a terminal)")
    sys.exit(api.run(spec, pull=pull, display=lambda: _say(quiet, False, f"run {image}"), announce=click.echo))


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="table")
def clean(fmt: str) -> None:
    """Remove every netemu object on the machine that no live lab accounts for."""
    removed = api.clean()
    _emit(removed, fmt, lambda found: "\n".join(render.removed_line(n, r) for n, r in found.items())
          or "nothing to clean")


@cli.command()
@click.argument("name", shell_complete=_complete_labs)
@click.argument("endpoint", metavar="NODE:IF", shell_complete=_complete_endpoints)
@click.argument("action", type=click.Choice(["up", "down", "set", "flap"]))
@click.option("--delay", help="e.g. 20ms (needs sch_netem)")
@click.option("--jitter", help="e.g. 5ms, with --delay (needs sch_netem)")
@click.option("--loss", help="e.g. 20% (works without sch_netem)")
@click.option("--rate", help="e.g. 10mbit")
@click.option("--corrupt", help="e.g. 1% (needs sch_netem)")
@click.option("--duplicate", help="e.g. 1% (needs sch_netem)")
@click.option("--clear", is_flag=True, help="With set: remove every impairment first.")
@click.option("--period", default="1s", show_default=True, help="With flap: one down+up cycle.")
@click.option("--count", default=3, show_default=True, help="With flap: how many cycles.")
def link(name: str, endpoint: str, action: str, clear: bool, period: str, count: int, **impair: str | None) -> None:
    """Failure injection on a running link: take it down or up, flap it, or change its impairment."""
    changes = {key: value for key, value in impair.items() if value is not None}
    now = api.link_action(api.lab_name(name), endpoint, action, period=period, count=count, clear=clear,
                          say=_echo, **changes)
    if action in ("up", "down"):
        click.echo(f"{endpoint} {action}")
    elif action == "set":
        click.echo(f"{endpoint}: " + (", ".join(f"{k} {v}" for k, v in now.items()) or "no impairment"))


@cli.command()
@click.argument("name", shell_complete=_complete_labs)
@click.argument("node", shell_complete=_complete_nodes)
@click.argument("action", type=click.Choice(["stop", "start", "restart"]))
def node(name: str, node: str, action: str) -> None:
    """Node failure: stop a host (its writable layer kept), start it with its links, or both."""
    api.node_action(api.lab_name(name), node, action)
    click.echo(f"{node}: {action} done")


@cli.group()
def image() -> None:
    """The image store: registry images, `docker save` archives and OCI image layouts."""


@image.command(name="import")
@click.argument("file", type=click.Path())
@click.option("--name", help="Name of the image (default: its tag in the archive, else the file's name).")
@click.option("--max-size", metavar="SIZE",
              help="Refuse an image that unpacks to more than SIZE (bytes, or 512M, 4G; default: "
                   "$NETEMU_MAX_IMAGE_BYTES, else 4G). Every file also counts 4K.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def image_import(file: str, name: str | None, max_size: str | None, quiet: bool) -> None:
    """Import FILE: a docker save archive, or an OCI image layout (tar or directory)."""
    with _say(quiet, False, f"import {Path(file).name}") as say:
        infos = api.import_image(file, name, progress=say, max_size=max_size)
    for info in infos:
        click.echo(f"imported {info.name} ({info.short_id}, {len(info.layers)} layers, {render.size(info.size)})")


@image.command(name="pull")
@click.argument("ref")
@click.option("--pull", "policy", type=click.Choice(api.PULL_POLICIES), default="always", show_default=True,
              help="missing: keep an image of that name the store has; never: only check that it has one.")
@QUIET
def image_pull(ref: str, policy: str, quiet: bool) -> None:
    """Fetch REF from its registry (busybox, quay.io/frrouting/frr:10.5.1, name@sha256:...), or
    from the local Docker daemon (docker-daemon:NAME:TAG), into the store."""
    with _say(quiet, False, f"pull {ref}") as say:
        info = api.pull_image(ref, policy=policy, progress=say)
    if not quiet:
        click.echo(f"pulled {info.name} ({info.short_id}, {len(info.layers)} layers, {render.size(info.size)})")


@image.command(name="ls")
@click.option("--format", "fmt", type=FORMATS, default="table")
def image_ls(fmt: str) -> None:
    """List the imported images."""
    _emit(api.list_images(), fmt, render.images_table)


@image.command(name="rm")
@click.argument("names", nargs=-1, required=True)
def image_rm(names: tuple[str, ...]) -> None:
    """Remove images, and every layer no other image uses; refused while a lab uses one."""
    api.require_root()
    for name in names:
        freed = api.remove_image(name)
        click.echo(f"removed {name} ({len(freed)} layers freed)")


# --- checks and probes ------------------------------------------------------------------------
PROBE_PROTOS = click.Choice(["icmp", "tcp", "udp", "arp"])
SECONDS = click.FloatRange(min=0.01, max=3600)


@cli.command()
@click.argument("file", type=click.Path())
@click.option("--lab", "lab_name", help="Check this running lab (default: the lab the file names).",
              shell_complete=_complete_labs)
@click.option("--format", "fmt", type=FORMATS, default="table")
@click.option("--junit", type=click.Path(dir_okay=False), help="Also write JUnit XML here (one testcase per check).")
@click.option("--timeout", type=SECONDS, help="Seconds per probe for checks without their own timeout (2).")
@click.option("--repeat", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Run the checks N times; then min, median and max of each one's passed_after.")
@click.option("-q", "--quiet", is_flag=True, help="No progress (the report still shows).")
@VERBOSE
def check(file: str, lab_name: str | None, fmt: str, junit: str | None, timeout: float | None, repeat: int,
          quiet: bool, verbose: bool) -> None:
    """Run the checks of FILE (a topology file, or a checks file) against the running lab.

    Exit status: 0 when every check passes (in every run), 1 when one fails, 2 for a bad file."""
    from netemu.probe import report

    checkset = api.load_checks(file, lab_name)
    if not checkset.checks:
        click.echo(f"{file}: no checks", err=True)
    with _say(quiet, verbose, f"check {checkset.lab}") as say:
        runs = [api.check(checkset, timeout=timeout, progress=say) for _ in range(repeat)]
    result = runs[-1]
    if junit:
        try:
            Path(junit).write_text(report.junit(result), encoding="utf-8")
        except OSError as e:
            raise InputError(f"{junit}: cannot write the JUnit file: {e.strerror or e}") from None
    if repeat == 1:
        _emit(result, fmt, report.checks_table)
    else:
        stats = api.convergence(runs)
        _emit({"runs": runs, "convergence": stats}, fmt,
              lambda _: "\n\n".join([report.checks_table(result), report.convergence_table(stats)]))
    failed = next((run for run in runs if not run.passed), None)
    if failed is not None:
        raise CheckFailed(failed.failure_message().splitlines()[0].rstrip(":"))


@cli.command(name="probe")
@click.argument("name", shell_complete=_complete_labs)
@click.argument("src", metavar="FROM", shell_complete=_complete_nodes)
@click.argument("dst", metavar="TO", shell_complete=_complete_targets)
@click.option("--proto", type=PROBE_PROTOS, default="icmp", show_default=True,
              help="arp: ARP for an IPv4 neighbour, NDP for an IPv6 one.")
@click.option("--port", type=click.IntRange(1, 65535), help="Needed with tcp and udp.")
@click.option("--timeout", type=SECONDS, default=2.0, show_default=True, help="Seconds to wait for an answer.")
@click.option("--trace", is_flag=True, help="Also trace the path (TTL 1..16) and name each router.")
@click.option("--expect", type=click.Choice(["reachable", "unreachable", "refused"]), default="reachable",
              show_default=True, help="Exit 1 unless the outcome is this.")
@click.option("--format", "fmt", type=FORMATS, default="table")
def probe_(name: str, src: str, dst: str, proto: str, port: int | None, timeout: float, trace: bool, expect: str,
           fmt: str) -> None:
    """One probe from node FROM to TO (a node, NODE:IF or an address) in lab NAME."""
    from netemu.probe import report

    result = api.probe(api.lab_name(name), src, dst, proto=proto, port=port, timeout=timeout, trace=trace)
    _emit(result, fmt, report.probe_text)
    if result.outcome != expect:
        raise CheckFailed(f"expected {expect}, saw {result.outcome}")


@cli.command()
@click.argument("name", shell_complete=_complete_labs)
@click.option("--format", "fmt", type=FORMATS, default="table")
@click.option("--timeout", type=SECONDS, default=2.0, show_default=True, help="Seconds to wait for answers.")
def reach(name: str, fmt: str, timeout: float) -> None:
    """The all-pairs reachability matrix of lab NAME: an ICMP echo from every node to every other."""
    from netemu.probe import report

    _emit(api.reach(api.lab_name(name), timeout=timeout), fmt, report.reach_table)


def main() -> None:
    """Entry point: every error becomes one line and the contract's exit code."""
    try:
        cli.main(prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except NetemuError as e:
        click.echo(f"netemu: {e}", err=True)
        _notes(e)
        sys.exit(e.exit_code)
    except PermissionError as e:
        if os.geteuid() == 0:
            _internal_error(e)
        # netemu's state and store are root's alone (0700): reading them takes root too.
        click.echo(f"netemu: {e.filename or 'that'}: permission denied: netemu needs root (run it with sudo)",
                   err=True)
        sys.exit(MachineError.exit_code)
    except KeyboardInterrupt as e:
        click.echo("netemu: interrupted", err=True)
        _notes(e)
        sys.exit(130)
    except Exception as e:
        _internal_error(e)


def _notes(e: BaseException) -> None:
    """What happened afterwards (a rollback that did not finish), one line each."""
    for note in getattr(e, "__notes__", ()):
        click.echo(f"netemu: {note}", err=True)


def _internal_error(e: Exception) -> NoReturn:
    """A bug: one line, the traceback only when asked for."""
    if os.environ.get("NETEMU_DEBUG"):
        traceback.print_exc()
    click.echo(f"netemu: internal error: {type(e).__name__}: {e} (NETEMU_DEBUG=1 shows the traceback)", err=True)
    _notes(e)
    sys.exit(4)


if __name__ == "__main__":
    main()

