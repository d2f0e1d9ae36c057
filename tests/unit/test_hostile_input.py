"""Hostile input to the pure loader (docs/contract.md §6.6: "bad input never produces a traceback"):
thousands of generated files end either in a TopologyError (exit 2 for the CLI) or in a
topology that is safe to build, never in another exception and never in a hang."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, seed, settings

from netemu.errors import TopologyError
from netemu.topology import load_topology, load_topology_text
from tests import hostile

HANG_GUARD = 60  # seconds: a hang detector far above any honest load, not a speed requirement
# NETEMU_HOSTILE_EXAMPLES=20000 NETEMU_HOSTILE_SEED=N for a longer hunt than CI's.
SETTINGS = settings(max_examples=int(os.environ.get("NETEMU_HOSTILE_EXAMPLES", "1200")), deadline=None,
                    derandomize="NETEMU_HOSTILE_SEED" not in os.environ, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])

RESULTS: dict[str, int] = {"valid": 0, "refused": 0}


def _load(text: str) -> None:
    with hostile.no_hang(HANG_GUARD):
        try:
            topo = load_topology_text(text, "hostile.yaml")
        except TopologyError as e:
            message = str(e)
            assert message.startswith("hostile.yaml") and "\n" not in message, message
            RESULTS["refused"] += 1
            return
    hostile.assert_valid(topo)
    RESULTS["valid"] += 1


@SETTINGS
@seed(int(os.environ.get("NETEMU_HOSTILE_SEED", "0")))
@given(hostile.hostile_files())
@example(hostile.ALIAS_BOMB)
@example(hostile.dump(hostile.base_topology("hostile")))
def test_generated_files_are_refused_or_safe(text: str) -> None:
    _load(text)


def test_many_generated_files_were_tried() -> None:
    """The property above ran on at least 1,000 files (runs after it, in file order)."""
    if sum(RESULTS.values()) == 0:
        pytest.skip("run with the property test above")
    print(f"hostile files: {RESULTS['refused']} refused, {RESULTS['valid']} valid and safe")
    assert sum(RESULTS.values()) >= 1000, RESULTS
    assert RESULTS["valid"] and RESULTS["refused"], RESULTS


@pytest.mark.parametrize("text", hostile.RAW_ATTACKS, ids=range(len(hostile.RAW_ATTACKS)))
def test_parser_attacks(text: str) -> None:
    _load(text)


@pytest.mark.parametrize("make", [hostile.many_nodes, hostile.many_links, hostile.container_chain,
                                  hostile.many_networks], ids=lambda f: f.__name__)
def test_ten_thousand_of_anything(make) -> None:
    """10,000 nodes, links, chained network namespaces or networks: answered, not stuck in a
    quadratic (or worse) check."""
    _load(hostile.dump(make("big", 10_000)))


def test_names_that_collide_once_cut_to_15_characters_make_distinct_kernel_names() -> None:
    topo = load_topology_text(hostile.dump(hostile._prefix_collisions("cut")))
    hostile.assert_valid(topo)
    assert len(topo.nodes) == 3 and len(topo.links) == 3


def test_alias_bomb_is_refused_before_expansion() -> None:
    with hostile.no_hang(HANG_GUARD), pytest.raises(TopologyError, match="not allowed"):
        load_topology_text(hostile.ALIAS_BOMB)


@pytest.mark.parametrize("data", [b"name: x\nnodes: {r1: {}}\n\xff\xfe", b"\x00" * 10, b"name: \xc3\x28\n",
                                  b"\xef\xbb\xbfname: x\nnodes: {r1: {}}\n", b"name: x\n" + b"#" * (5 << 20)])
def test_bytes_that_are_not_a_text_file(tmp_path, data: bytes) -> None:
    path = tmp_path / "bytes.yaml"
    path.write_bytes(data)
    with hostile.no_hang(HANG_GUARD):
        try:
            hostile.assert_valid(load_topology(path))
        except TopologyError as e:
            assert "\n" not in str(e)


# --- lab names from the command line and from the machine ---------------------------------------

@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\0b", "a\nb", "x" * 300])
def test_a_name_that_is_no_path_component_never_becomes_a_path(name: str) -> None:
    """`netemu down ..` must not reach the root cgroup (every process of the machine) or the
    parents of netemu's directories: every path made from a lab name refuses it (exit 2)."""
    from netemu.errors import InputError
    from netemu.runtime import paths

    for make in (paths.state_dir, paths.layers_dir, paths.cgroup_path, paths.netns_prefix,
                 lambda n: paths.cgroup_path("lab", n), lambda n: paths.layers_dir("lab", n)):
        with pytest.raises(InputError):
            make(name)


@pytest.mark.parametrize("found", ["netemu-..x", "netemu-.x", "netemu-A.x", "netemu-" + "a" * 13 + ".x"])
def test_a_netns_that_names_no_possible_lab_is_nobodys(found: str) -> None:
    from netemu.runtime import paths

    assert paths.lab_of_netns(found) is None


@pytest.mark.parametrize("alias", ["netemu:..:x", "netemu::x", "netemu:.:x", "netemu:a/b:x", "netemu:A:x"])
def test_a_link_alias_that_names_no_possible_lab_is_nobodys(alias: str) -> None:
    from netemu.runtime import paths

    assert paths.lab_of_alias(alias) is None
    assert paths.lab_of_alias("netemu:lab1:link:0") == "lab1"
