"""`netemu run`'s options as a one-host topology (pure: no kernel)."""

from __future__ import annotations

import pytest

from netemu.errors import InputError
from netemu.topology import runspec
from netemu.topology.runspec import RunSpec


def test_a_docker_run_line_becomes_one_host() -> None:
    # docker run -it --name b1 --network bridge -h test --dns 114.114.114.114 \
    #   --add-host www.baidu.com:192.168.0.148 --rm busybox
    spec = RunSpec(image="busybox", name="b1", network="bridge", hostname="test", dns=["114.114.114.114"],
                   add_hosts=["www.baidu.com:192.168.0.148"], interactive=True, tty=True, remove=True)
    topo = runspec.topology(spec, runspec.lab_name(spec), {})
    assert topo.name == "b1" and list(topo.nodes) == ["b1"]
    node = topo.nodes["b1"]
    assert (node.image, node.network, node.hostname) == ("busybox", "bridge", "test")
    assert [str(a) for a in node.dns] == ["114.114.114.114"]
    assert {k: str(v) for k, v in node.extra_hosts.items()} == {"www.baidu.com": "192.168.0.148"}
    assert node.cmd is None


def test_limits_env_volumes_ports_and_capabilities(tmp_path) -> None:
    spec = RunSpec(image="busybox", command=["sleep", "60"], memory="64m", cpus="0.5", pids_limit=20,
                   env=["A=1", "FROM_SHELL", "MISSING"], volumes=[f"{tmp_path}:/data:ro"], publish=["18080:80"],
                   cap_add=["net_raw"], cap_drop=["chown"], network="none")
    node = runspec.topology(spec, "x1", {"FROM_SHELL": "yes"}).nodes["x1"]
    assert (node.limits.memory, node.limits.cpus, node.limits.pids) == (64 << 20, 0.5, 20)
    assert node.env == {"A": "1", "FROM_SHELL": "yes"}  # -e KEY without a value in the shell is left out
    assert node.binds[0].target == "/data" and node.binds[0].readonly
    assert node.cmd == ["sleep", "60"] and node.network == "none"
    assert "NET_RAW" in node.cap_add and "CHOWN" in node.cap_drop


def test_a_generated_name_is_a_valid_lab_name() -> None:
    names = {runspec.lab_name(RunSpec(image="busybox")) for _ in range(20)}
    assert len(names) == 20 and all(runspec.NAME_RE.fullmatch(n) for n in names)


@pytest.mark.parametrize(("spec", "message"), [
    (RunSpec(image="busybox", memory="lots"), "--memory: invalid memory size 'lots'"),
    (RunSpec(image="busybox", cpus="-1"), "--cpus:"),
    (RunSpec(image="busybox", dns=["not-an-address"]), "--dns:"),
    (RunSpec(image="busybox", add_hosts=["nocolon"]), "--add-host 'nocolon': expected NAME:ADDRESS"),
    (RunSpec(image="busybox", add_hosts=["h:999.1.1.1"]), "--add-host:"),
    (RunSpec(image="busybox", volumes=["relative:/x"]), "--volume:"),
    (RunSpec(image="busybox", publish=["notaport"]), "--publish:"),
    (RunSpec(image="busybox", cap_add=["FLY"]), "--cap-add:"),
    (RunSpec(image="busybox", network="overlay"), "--network 'overlay'"),
    (RunSpec(image="busybox", detach=True, remove=True), "--rm with -d is not supported"),
    (RunSpec(image="busybox", detach=True, tty=True), "-t with -d is not supported"),
    (RunSpec(image="busybox", hostname="bad_host!"), "--hostname:"),
])
def test_a_bad_option_is_named_in_one_line(spec: RunSpec, message: str) -> None:
    with pytest.raises(InputError) as error:
        runspec.topology(spec, "x1", {})
    assert message in str(error.value) and "\n" not in str(error.value)
    assert error.value.exit_code == 2


@pytest.mark.parametrize("name", ["B1", "a" * 13, "-x", "with_underscore", ""])
def test_a_name_netemu_cannot_use_is_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InputError, match="1 to 12 of a-z, 0-9 and '-'"):
        runspec.lab_name(RunSpec(image="busybox", name=name))
