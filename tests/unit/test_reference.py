"""Image references parsed as Docker parses them, and short names resolved through
registries.conf (its drop-ins, aliases and search registries). Pure: no registry, no store."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.errors import InputError
from netemu.images import RegistriesConf, load_registries_conf, parse_reference, resolve
from netemu.images.imagestore import ImageInfo, ImageStore, Pulled

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "canonical", "familiar"), [
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("kathara/frr", "docker.io/kathara/frr:latest", "kathara/frr:latest"),
    ("quay.io/frrouting/frr:10.5.1", "quay.io/frrouting/frr:10.5.1", "quay.io/frrouting/frr:10.5.1"),
    ("127.0.0.1:5000/x/y:tag", "127.0.0.1:5000/x/y:tag", "127.0.0.1:5000/x/y:tag"),
    ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
    ("localhost:5000/a-b/c__d.e", "localhost:5000/a-b/c__d.e:latest", "localhost:5000/a-b/c__d.e:latest"),
    (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
    (f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}", f"busybox:1@{DIGEST}"),
    ("docker://alpine:3", "docker.io/library/alpine:3", "alpine:3"),
    ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
])
def test_references_are_normalized_as_docker_does(text, canonical, familiar):
    ref = parse_reference(text)
    assert ref.canonical == canonical and ref.familiar == familiar and str(ref) == canonical


def test_what_is_a_short_name():
    assert not parse_reference("busybox").qualified and parse_reference("busybox").short == "busybox"
    assert parse_reference("kathara/frr:1").short == "kathara/frr"
    assert parse_reference("docker.io/busybox").qualified
    assert parse_reference("localhost/busybox").qualified


def test_the_docker_daemon_transport():
    ref = parse_reference("docker-daemon:busybox:1.36")
    assert ref.transport == "docker-daemon" and ref.canonical == "docker.io/library/busybox:1.36"
    assert str(ref) == "docker-daemon:docker.io/library/busybox:1.36"
    assert resolve(ref, RegistriesConf(None, search=["quay.io"])) == [ref]  # Docker's names, not the search


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    ("Busybox", "lowercase"),
    ("busy box", "spaces"),
    ("busybox\n", "spaces or control"),
    ("busybox:", "not a tag"),
    ("busybox:-x", "not a tag"),
    ("busybox:" + "t" * 129, "not a tag"),
    ("busybox@sha256:12", "not a digest"),
    ("busybox@md5:" + "0" * 32, "not a digest"),
    ("a//b", "each part"),
    ("-a", "each part"),
    ("a_/b", "each part"),
    (":latest", "no repository"),
    ("bad_host.io/x", "not a registry"),
    ("oci:/srv/layout", "netemu image import"),
    ("docker-archive:/x.tar", "netemu image import"),
    ("x/" * 130 + "y", "longer than 255"),
])
def test_bad_references_are_input_errors_of_one_line(text, reason):
    with pytest.raises(InputError) as caught:
        parse_reference(text)
    assert caught.value.exit_code == 2 and reason in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1 and str(caught.value).startswith("invalid image reference")


# registries.conf ---------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_without_search_registries_a_short_name_is_on_docker_io(tmp_path):
    conf = load_registries_conf(write(tmp_path / "registries.conf", "# nothing\n"))
    assert conf.search is None
    assert [str(r) for r in resolve("kathara/frr", conf)] == ["docker.io/kathara/frr:latest"]


def test_search_registries_are_tried_in_order_and_aliases_win(tmp_path):
    main = write(tmp_path / "registries.conf", 'unqualified-search-registries = ["quay.io", "docker.io", "myreg"]\n'
                                               '[aliases]\n"frr" = "quay.io/frrouting/frr"\n')
    conf = load_registries_conf(main)
    assert [str(r) for r in resolve("busybox:1", conf)] == [
        "quay.io/busybox:1", "docker.io/library/busybox:1", "myreg/busybox:1"]
    assert [str(r) for r in resolve(f"frr@{DIGEST}", conf)] == [f"quay.io/frrouting/frr@{DIGEST}"]
    assert [str(r) for r in resolve("quay.io/x/frr", conf)] == ["quay.io/x/frr:latest"]  # qualified: itself


def test_drop_ins_override_in_name_order(tmp_path):
    main = write(tmp_path / "registries.conf", 'unqualified-search-registries = ["quay.io"]\n'
                                               '[aliases]\n"a" = "quay.io/x/a"\n"b" = "quay.io/x/b"\n'
                                               '[[registry]]\nprefix = "docker.io"\nlocation = "mirror.local"\n')
    write(tmp_path / "registries.conf.d" / "20-late.conf", 'unqualified-search-registries = ["late.io"]\n')
    write(tmp_path / "registries.conf.d" / "10-early.conf", '[aliases]\n"a" = "early.io/a"\n"b" = ""\n'
                                                            '[[registry]]\nprefix = "docker.io"\nlocation = "m2"\n')
    write(tmp_path / "registries.conf.d" / "ignored.txt", "not toml [")
    conf = load_registries_conf(main)
    assert conf.search == ["late.io"] and conf.aliases == {"a": "early.io/a"}
    assert [r["location"] for r in conf.registries] == ["m2"]
    assert [p.name for p in conf.files] == ["registries.conf", "10-early.conf", "20-late.conf"]
    assert [str(r) for r in resolve("b", conf)] == ["late.io/b:latest"]


def test_the_environment_chooses_the_file(tmp_path, monkeypatch):
    path = write(tmp_path / "elsewhere.conf", '[aliases]\n"tools" = "127.0.0.1:5000/team/tools"\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(path))
    conf = load_registries_conf()
    assert conf.path == path and conf.skopeo_path == path
    assert str(resolve("tools:2", conf)[0]) == "127.0.0.1:5000/team/tools:2"
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(tmp_path / "missing.conf"))
    with pytest.raises(InputError, match=r"missing\.conf.*no such file"):
        load_registries_conf()


def test_the_version_1_search_list_is_read(tmp_path):
    conf = load_registries_conf(write(tmp_path / "r.conf", "[registries.search]\nregistries = ['quay.io']\n"))
    assert conf.search == ["quay.io"]


@pytest.mark.parametrize(("text", "reason"), [
    ("unqualified-search-registries = [", "not valid TOML"),
    ("unqualified-search-registries = 'quay.io'", "expected a list"),
    ('[aliases]\n"busybox" = "busybox"', "must name a registry"),
    ('[aliases]\n"busybox" = "docker.io/library/busybox:1"', "no tag or digest"),
    ('[aliases]\n"quay.io/busybox" = "quay.io/busybox"', "key must be a short name"),
    ('[aliases]\n"busybox:1" = "quay.io/busybox"', "key must be a short name"),
])
def test_a_bad_registries_conf_is_an_input_error_naming_the_file(tmp_path, text, reason):
    path = write(tmp_path / "registries.conf", text)
    with pytest.raises(InputError, match=reason) as caught:
        load_registries_conf(path)
    assert str(path) in str(caught.value) and len(str(caught.value).splitlines()) == 1


def test_an_empty_search_list_leaves_short_names_unresolved(tmp_path):
    conf = load_registries_conf(write(tmp_path / "registries.conf", "unqualified-search-registries = []\n"))
    with pytest.raises(InputError, match="short name"):
        resolve("busybox", conf)


# the store's side: aliases and moved tags, without any layer ---------------------------------
def test_an_alias_finds_its_image_and_an_own_name_wins(tmp_path):
    store = ImageStore(tmp_path / "store")
    pulled = ImageInfo(name="docker.io/library/busybox:latest", id="sha256:" + "1" * 64, layers=[])
    store._write_record(pulled)
    assert store.find_image("busybox") is None
    store.add_alias("busybox:latest", pulled.name)
    assert store.find_image("busybox").name == pulled.name and store.aliases(pulled.name) == ["busybox:latest"]
    store._write_record(ImageInfo(name="busybox:latest", id="sha256:" + "2" * 64, layers=[]))  # imported
    assert store.find_image("busybox").name == "busybox:latest"
    store.remove_image(pulled.name, in_use=lambda _name: [])
    assert store.aliases(pulled.name) == [] and store.find_image("busybox").name == "busybox:latest"


def test_pull_directories_are_swept_only_once_abandoned(tmp_path):
    store = ImageStore(tmp_path / "store")
    store._write_record(ImageInfo(name="x", id="sha256:" + "3" * 64, layers=[]))
    with store.pull_dir() as work:
        (work / "layout").mkdir()
        store.remove_image("x", in_use=lambda _name: [])  # sweeps, but this pull is alive
        assert work.is_dir()
    assert not work.exists()
    abandoned = tmp_path / "store" / ".pull-dead"
    abandoned.mkdir()
    store._write_record(ImageInfo(name="y", id="sha256:" + "4" * 64, layers=[]))
    store.remove_image("y", in_use=lambda _name: [])
    assert not abandoned.exists()
    assert Pulled("docker://x").digest == ""


@pytest.mark.parametrize("text", ["busybox:\u00e9t\u00e9", "busybox:\u0661\u0662", "busybox:tag\u00b2"])
def test_a_tag_is_ascii_as_in_docker(text):
    """Python's \\w matches every alphabet's letters and digits; Docker's tag grammar is ASCII."""
    with pytest.raises(InputError, match="is not a tag"):
        parse_reference(text)
