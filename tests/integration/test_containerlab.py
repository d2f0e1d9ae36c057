"""containerlab files end to end: a `kind: linux` lab loaded by load_containerlab and brought up
with real hosts, on a `busybox` image that the test's own registry on 127.0.0.1 serves as
docker.io/library/busybox (see test_registry.py; nothing leaves the machine). Every lab is taken
down in a finally, whatever happened."""

from __future__ import annotations

import textwrap
from pathlib import Path

from netemu import api
from netemu.topology.containerlab import load_containerlab
from tests.conftest import run_cli, unique_name
from tests.integration.test_registry import base, conf, layout, local, start_registry, tools  # noqa: F401
from tests.integration.test_run import busybox  # noqa: F401

LAB = """
name: {name}
mgmt:
  network: m
  ipv4-subnet: 10.213.47.0/24
topology:
  kinds:
    linux:
      image: busybox
      cmd: busybox sleep 3600
      env:
        FROM: kind
  nodes:
    a:
      kind: linux
      exec:
        - busybox ip addr add 10.77.0.1/30 dev eth1
    B.2:
      kind: linux
      env:
        FROM: node
      exec:
        - busybox ip addr add 10.77.0.2/30 dev eth1
        - busybox ip addr add 10.77.1.2/30 dev eth2
  links:
    - endpoints: ["a:eth1", "B.2:eth1"]
    - endpoints: ["a:eth2", "B.2:eth2"]
      ipv4: ["10.77.1.1/30", ""]
"""


def sh(lab: str, node: str, script: str) -> str:
    done = run_cli("exec", lab, node, "--", "busybox", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_linux_lab_runs_with_links_exec_addresses_env_and_the_mgmt_network(tmp_path: Path, busybox: str) -> None:  # noqa: F811
    name = unique_name("cl")
    path = tmp_path / "lab.clab.yml"
    path.write_text(textwrap.dedent(LAB).format(name=name))
    topology = load_containerlab(path)
    try:
        api.up(topology)
        assert "0% packet loss" in sh(name, "a", "busybox ping -c1 -W5 10.77.0.2")  # exec set the addresses
        assert "0% packet loss" in sh(name, "a", "busybox ping -c1 -W5 10.77.1.2")  # ipv4: set one end
        assert sh(name, "B.2", "echo $CLAB_INTFS $FROM $CLAB_LABEL_CLAB_NODE_NAME").split() == ["2", "node", "B.2"]
        assert sh(name, "a", "echo $FROM").strip() == "kind"
        assert "10.213.47.2/24" in sh(name, "a", "busybox ip -4 -o addr show eth0")
        assert "10.213.47.3/24" in sh(name, "B.2", "busybox ip -4 -o addr show eth0")
        assert "default via 10.213.47.1" in sh(name, "a", "busybox ip route")
        assert "0% packet loss" in sh(name, "a", "busybox ping -c1 -W5 10.213.47.3")  # across the mgmt bridge
        assert "0% packet loss" in sh(name, "a", "busybox ping -c1 -W5 10.213.47.1")  # its gateway, the machine
    finally:
        api.down(name)
