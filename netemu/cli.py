"""The `netemu` command: parse arguments, call the runtime, render. Nothing else lives here."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

import click

from netemu import __version__
from netemu.errors import InputError, NetemuError
from netemu.topology import load_topology

FORMATS = click.Choice(["table", "json"])


def _progress(quiet: bool) -> Any:
    """Progress lines on a terminal; silence when piped or asked to be quiet."""
    if quiet or not sys.stderr.isatty():
        return None
    start = time.monotonic()
    return lambda msg: click.echo(f"[{time.monotonic() - start:6.2f}s] {msg}", err=True)


def _lab_name(target: str) -> str:
    """`down` and friends take a lab name or the topology file that names it."""
    if target.endswith((".yaml", ".yml")) or os.path.sep in target:
        return load_topology(target).name
    return target


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netemu")
def cli() -> None:
    """Virtual network topologies of real Linux containers on one machine."""


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check FILE without touching the kernel."""
    topo = load_topology(file)
    click.echo(f"{file}: ok: lab '{topo.name}', {len(topo.nodes)} nodes, {len(topo.networks)} networks, "
               f"{len(topo.links)} links, {len(topo.checks)} checks")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def up(file: str, quiet: bool) -> None:
    """Create the lab described by FILE; on failure nothing is left behind."""
    from netemu.runtime import lab

    topo = load_topology(file)
    started = time.monotonic()
    record = lab.up(topo, progress=_progress(quiet))
    if not quiet:
        click.echo(f"lab '{record['name']}' is up: {len(record['nodes'])} nodes, {len(record['links'])} links "
                   f"in {time.monotonic() - started:.2f}s")


@cli.command()
@click.argument("target", required=False)
@click.option("--all", "all_labs", is_flag=True, help="Take down every lab.")
@click.option("-q", "--quiet", is_flag=True)
def down(target: str | None, all_labs: bool, quiet: bool) -> None:
    """Remove everything lab TARGET (a name or its file) created. Idempotent with --all."""
    from netemu.runtime import lab

    if all_labs == bool(target):
        raise InputError("give a lab name (or its file), or --all")
    names = [entry["name"] for entry in lab.list_labs()] if all_labs else [_lab_name(target or "")]
    for name in names:
        removed = lab.down(name)
        if not quiet:
            click.echo(f"lab '{name}' is down" if not removed.empty() else f"no lab '{name}': nothing to remove")


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="table")
def ps(fmt: str) -> None:
    """List the labs on this machine."""
    from netemu.runtime import lab

    labs = lab.list_labs()
    if fmt == "json":
        _emit_json(labs)
        return
    rows = [(e["name"], e["status"], f"{e['alive']}/{e['nodes']}", e.get("file") or "") for e in labs]
    _table(["LAB", "STATUS", "NODES", "FILE"], rows)


@cli.command()
@click.argument("name")
@click.option("--format", "fmt", type=FORMATS, default="table")
def inspect(name: str, fmt: str) -> None:
    """Nodes, pids, interfaces, addresses and routes of lab NAME."""
    from netemu.runtime import lab

    data = lab.inspect(_lab_name(name))
    if fmt == "json":
        _emit_json(data)
        return
    click.echo(f"lab {data['name']}: {data['status']} ({data.get('file') or 'no file'})")
    rows = []
    for node, info in data["nodes"].items():
        ifaces = [i for i in info.get("interfaces", []) if i["name"] != "lo"]
        summary = ", ".join(f"{i['name']} {' '.join(i['addresses'])}".strip() for i in ifaces) or "-"
        status = "up" if info["alive"] else ("stopped" if info.get("stopped") else "dead")
        rows.append((node, str(info["pid"] or "-"), status, info.get("netns") or "-", summary))
    _table(["NODE", "PID", "STATE", "NETNS", "INTERFACES"], rows)


@cli.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open (it always passes through).")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal.")
@click.option("-e", "--env", "envs", multiple=True, help="KEY=VALUE added to the environment.")
@click.argument("name")
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def exec_(interactive: bool, tty: bool, envs: tuple[str, ...], name: str, node: str,
          command: tuple[str, ...]) -> None:
    """Run COMMAND in NODE of lab NAME (all its namespaces and its cgroup); its exit code is ours."""
    from netemu.runtime import execution, lab

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
    execution.replace_process(lab.load_record(name), node, argv, env=env, tty=tty)


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="table")
def clean(fmt: str) -> None:
    """Remove every netemu object on the machine that no live lab accounts for."""
    from dataclasses import asdict

    from netemu.runtime import lab

    removed = lab.clean()
    if fmt == "json":
        _emit_json({name: asdict(r) for name, r in removed.items()})
        return
    if not removed:
        click.echo("nothing to clean")
    for name, r in removed.items():
        click.echo(f"removed lab '{name}': {r.processes} processes, {len(r.links)} links, "
                   f"{len(r.netns)} netns names, {len(r.cgroups)} cgroups, {len(r.directories)} directories")


IMPAIR_OPTIONS = ("delay", "jitter", "loss", "rate", "corrupt", "duplicate")


@cli.command()
@click.argument("name")
@click.argument("endpoint", metavar="NODE:IF")
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
    from netemu.runtime import links
    from netemu.topology import check_impairment, parse_duration

    lab_name = _lab_name(name)
    if action in ("up", "down"):
        links.set_state(lab_name, endpoint, up=action == "up")
        click.echo(f"{endpoint} {action}")
    elif action == "flap":
        seconds = _parse(parse_duration, period, "--period")
        links.flap(lab_name, endpoint, seconds, count, say=lambda msg: click.echo(msg))
    else:
        changes = {key: _parse(lambda text, key=key: check_impairment(key, text), value, f"--{key}")
                   for key, value in impair.items() if value is not None}
        if not changes and not clear:
            raise InputError("set: give at least one of --" + ", --".join(IMPAIR_OPTIONS) + " or --clear")
        now = links.set_impairment(lab_name, endpoint, changes, clear=clear)
        click.echo(f"{endpoint}: " + (", ".join(f"{k} {v}" for k, v in now.items()) or "no impairment"))


@cli.command()
@click.argument("name")
@click.argument("node")
@click.argument("action", type=click.Choice(["stop", "start", "restart"]))
def node(name: str, node: str, action: str) -> None:
    """Node failure: stop a host (its writable layer kept), start it with its links, or both."""
    from netemu.runtime import nodectl

    {"stop": nodectl.stop, "start": nodectl.start, "restart": nodectl.restart}[action](_lab_name(name), node)
    click.echo(f"{node}: {action} done")


def _parse(parser: Any, text: str, option: str) -> Any:
    try:
        return parser(text)
    except ValueError as e:
        raise InputError(f"{option}: {e}") from None


@cli.group()
def image() -> None:
    """The image store: `docker save` archives and OCI image layouts."""


@image.command(name="import")
@click.argument("file", type=click.Path())
@click.option("--name", help="Name of the image (default: its tag in the archive, else the file's name).")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def image_import(file: str, name: str | None, quiet: bool) -> None:
    """Import FILE: a docker save archive, or an OCI image layout (tar or directory)."""
    from netemu.linux import images
    from netemu.runtime.lab import require_root

    require_root()
    for info in images.import_archive(file, name, progress=_progress(quiet)):
        click.echo(f"imported {info.name} ({info.short_id}, {len(info.layers)} layers, {_size(info.size)})")


@image.command(name="ls")
@click.option("--format", "fmt", type=FORMATS, default="table")
def image_ls(fmt: str) -> None:
    """List the imported images."""
    from dataclasses import asdict

    from netemu.linux import images

    infos = images.list_images()
    if fmt == "json":
        _emit_json([asdict(i) for i in infos])
        return
    _table(["NAME", "IMAGE ID", "SIZE", "LAYERS"],
           [(i.name, i.short_id, _size(i.size), str(len(i.layers))) for i in infos])


@image.command(name="rm")
@click.argument("names", nargs=-1, required=True)
def image_rm(names: tuple[str, ...]) -> None:
    """Remove images, and every layer no other image uses; refused while a lab uses one."""
    from netemu.linux import images
    from netemu.runtime.lab import require_root
    from netemu.runtime.nodes import labs_using_image

    require_root()
    for name in names:
        freed = images.remove_image(name, in_use=labs_using_image)
        click.echo(f"removed {name} ({len(freed)} layers freed)")


def _size(n: float) -> str:
    """Sizes as `docker images` shows them (powers of 1000)."""
    if n < 1000:
        return f"{n:.0f}B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f}{unit}"
    return f"{n / 1000:.1f}GB"


# --- checks and probes ------------------------------------------------------------------------
PROBE_PROTOS = click.Choice(["icmp", "tcp", "udp", "arp"])
SECONDS = click.FloatRange(min=0.01, max=3600)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--lab", "lab_name", help="Check this running lab (default: the lab the file names).")
@click.option("--format", "fmt", type=FORMATS, default="table")
@click.option("--junit", type=click.Path(dir_okay=False), help="Also write JUnit XML here (one testcase per check).")
@click.option("--timeout", type=SECONDS, help="Seconds per probe for checks without their own timeout (2).")
def check(file: str, lab_name: str | None, fmt: str, junit: str | None, timeout: float | None) -> None:
    """Run the checks of FILE (a topology file, or a checks file) against the running lab.

    Exit status: 0 when every check passes, 1 when one fails, 2 for a bad file."""
    from netemu.errors import CheckFailed
    from netemu.probe import checks, report
    from netemu.runtime import lab

    checkset = checks.load_checks(file, lab_name)
    record = lab.load_record(checkset.lab)
    if not checkset.checks:
        click.echo(f"{file}: no checks", err=True)
    result = checks.run_checks(record, checkset.checks, file=file, timeout=timeout)
    if junit:
        with open(junit, "w", encoding="utf-8") as out:
            out.write(report.junit(result))
    if fmt == "json":
        _emit_json(result.to_dict())
    else:
        click.echo(report.checks_table(result))
    if not result.passed:
        raise CheckFailed(result.failure_message().splitlines()[0].rstrip(":"))


@cli.command(name="probe")
@click.argument("name")
@click.argument("src", metavar="FROM")
@click.argument("dst", metavar="TO")
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
    from netemu import probe as probing
    from netemu.errors import CheckFailed
    from netemu.probe import report
    from netemu.runtime import lab

    record = lab.load_record(_lab_name(name))
    request = probing.ProbeRequest(src, dst, proto=proto, port=port, timeout=timeout, trace=trace)
    result = probing.probe(record, request)
    if fmt == "json":
        _emit_json(result.to_dict())
    else:
        click.echo(report.probe_text(result))
    if result.outcome != expect:
        raise CheckFailed(f"expected {expect}, saw {result.outcome}")


@cli.command()
@click.argument("name")
@click.option("--format", "fmt", type=FORMATS, default="table")
@click.option("--timeout", type=SECONDS, default=2.0, show_default=True, help="Seconds to wait for answers.")
def reach(name: str, fmt: str, timeout: float) -> None:
    """The all-pairs reachability matrix of lab NAME: an ICMP echo from every node to every other."""
    from netemu import probe as probing
    from netemu.probe import report
    from netemu.runtime import lab

    matrix = probing.reach(lab.load_record(_lab_name(name)), timeout=timeout)
    if fmt == "json":
        _emit_json(matrix.to_dict())
    else:
        click.echo(report.reach_table(matrix))


def _table(headers: list[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [tuple(headers), *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())


def main() -> None:
    """Entry point: every error becomes one line and the contract's exit code."""
    try:
        cli.main(standalone_mode=False)
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
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("netemu: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug: one line, the traceback only when asked for
        if os.environ.get("NETEMU_DEBUG"):
            traceback.print_exc()
        click.echo(f"netemu: internal error: {type(e).__name__}: {e} (NETEMU_DEBUG=1 shows the traceback)",
                   err=True)
        sys.exit(4)


if __name__ == "__main__":
    main()

