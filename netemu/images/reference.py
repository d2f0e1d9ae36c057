"""Image references, parsed the way Docker parses them, and short names resolved the way the
containers configuration (registries.conf) says, or else as Docker does.

Pure code: no network, no store. `parse_reference("busybox")` is docker.io/library/busybox:latest;
`resolve(ref)` lists the fully qualified references a short name may mean, in the order a pull
tries them: an alias from `[aliases]`, else each of `unqualified-search-registries`, else
docker.io (Docker's only registry).

What a registry does for a name (its real location, mirrors, `insecure`, `blocked`) is left to
skopeo, which reads the same registries.conf: netemu points it at the file this module reads."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netemu.errors import InputError, one_line

DOCKER_DOMAIN = "docker.io"
REGISTRIES_CONF_ENV = "CONTAINERS_REGISTRIES_CONF"
REGISTRIES_CONF = Path("/etc/containers/registries.conf")
NAME_MAX = 255  # Docker's limit on domain/path
# Transports a reference may start with, as Podman writes them; the others are refused by name.
TRANSPORTS = ("docker", "docker-daemon")
OTHER_TRANSPORTS = ("oci", "oci-archive", "docker-archive", "dir", "containers-storage", "ostree", "sif", "tarball")

# Docker's grammar (distribution/reference): lowercase components joined by . _ __ or dashes.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
                     r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?"
                     r"|\[[0-9a-fA-F:]+\](?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)  # Docker's \w is ASCII: no other letters in a tag
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    """One image in one repository: `domain/path[:tag][@digest]`, Docker-normalized."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None
    transport: str = "docker"  # or docker-daemon: the local Docker daemon's image of that name
    qualified: bool = True  # whether the text named its registry (else a short name, resolved)
    short: str = ""  # the path as written, for a short name: the key of `[aliases]`

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def canonical(self) -> str:
        """docker.io/library/busybox:latest; a digest alone pins without a tag, as in Docker."""
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def familiar(self) -> str:
        """What `docker images` shows: busybox:latest, kathara/frr:latest, quay.io/x/y:1."""
        name = self.repository.removeprefix(f"{DOCKER_DOMAIN}/").removeprefix("library/")
        return name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def with_repository(self, repository: str) -> Reference:
        """This tag/digest in another repository (an alias's or a search registry's)."""
        ref = parse_reference(repository)
        return Reference(ref.domain, ref.path, self.tag, self.digest, self.transport)

    def __str__(self) -> str:
        return self.canonical if self.transport == "docker" else f"{self.transport}:{self.canonical}"


def _bad(text: str, reason: str) -> InputError:
    return InputError(one_line(f"invalid image reference '{text}': {reason}"))


def _split_transport(text: str) -> tuple[str, str]:
    head, sep, rest = text.partition(":")
    if sep and head in OTHER_TRANSPORTS:
        raise _bad(text, f"the {head}: transport is not pulled: `netemu image import PATH` reads "
                         "OCI layouts and docker save archives")
    if sep and head in TRANSPORTS:
        return head, rest.removeprefix("//") if head == "docker" else rest
    return "docker", text


def _split_domain(name: str) -> tuple[str, str, bool]:
    """Docker's rule: the first component is a registry if it has a dot or a port, or is
    localhost; otherwise the name is on docker.io (a single component under library/)."""
    first, sep, rest = name.partition("/")
    if sep and (any(c in first for c in ".:[") or first == "localhost" or first != first.lower()):
        domain, path, qualified = first, rest, True
    else:
        domain, path, qualified = DOCKER_DOMAIN, name, False
    if domain == "index.docker.io":
        domain = DOCKER_DOMAIN
    if domain == DOCKER_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return domain, path, qualified


def parse_reference(text: str) -> Reference:
    """A reference as Docker reads it; InputError (exit 2) with a one-line reason otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "empty")
    if text != text.strip() or any(c.isspace() or not c.isprintable() for c in text):
        raise _bad(text, "spaces or control characters")
    transport, rest = _split_transport(text)
    name, _, digest = rest.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise _bad(text, f"'{digest}' is not a digest (sha256: and 64 lowercase hex digits)")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:  # a colon after the last slash is a tag, before it a registry's port
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise _bad(text, f"'{tag}' is not a tag (letters, digits, _ . -, at most 128, not starting with . or -)")
    if not name:
        raise _bad(text, "no repository name")
    domain, path, qualified = _split_domain(name)
    if qualified and not _DOMAIN.fullmatch(domain):
        raise _bad(text, f"'{domain}' is not a registry host[:port]")
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            reason = ("repository names are lowercase" if component.lower() != component
                      and _COMPONENT.fullmatch(component.lower()) else
                      "each part of the name is lowercase letters and digits, joined by . _ __ or -")
            raise _bad(text, f"'{component}': {reason}")
    if len(f"{domain}/{path}") > NAME_MAX:
        raise _bad(text, f"the name is longer than {NAME_MAX} characters")
    if tag is None and not digest:
        tag = "latest"
    return Reference(domain, path, tag, digest or None, transport, qualified,
                     "" if qualified else name)


# registries.conf ---------------------------------------------------------------------------
@dataclass
class RegistriesConf:
    """What netemu reads of the containers configuration: short-name search and aliases. The
    [[registry]] tables are kept for messages; skopeo applies them itself."""

    path: Path | None  # the main file read (None: there was none)
    search: list[str] | None = None  # unqualified-search-registries; None: not set (Docker's rule)
    aliases: dict[str, str] = field(default_factory=dict)
    registries: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # every file read, main file first

    @property
    def skopeo_path(self) -> Path | None:
        """The file skopeo must read, so that both see the same registries."""
        return self.path


def registries_conf_path() -> tuple[Path, bool]:
    """$CONTAINERS_REGISTRIES_CONF, or /etc/containers/registries.conf; and whether it was chosen
    explicitly (then it must exist)."""
    chosen = os.environ.get(REGISTRIES_CONF_ENV, "").strip()
    return (Path(chosen), True) if chosen else (REGISTRIES_CONF, False)


def drop_in_dirs(path: Path, explicit: bool) -> list[Path]:
    """registries.conf.d next to the file; for the default file also the user's
    ~/.config/containers/registries.conf.d, which containers tools read after it."""
    dirs = [path.with_name(path.name + ".d")]
    if not explicit:
        dirs.append(Path.home() / ".config" / "containers" / "registries.conf.d")
    return dirs


def load_registries_conf(path: Path | None = None) -> RegistriesConf:
    """The main file, then each drop-in (*.conf, sorted by name) over it, as containers tools
    merge them: a later file's search list replaces the earlier one, its aliases and registry
    prefixes override those of the same name (an alias set to "" is removed)."""
    explicit = path is not None
    if path is None:
        path, explicit = registries_conf_path()
    if explicit and not path.is_file():
        raise InputError(f"registries.conf {path} (from {REGISTRIES_CONF_ENV} or the caller): no such file")
    conf = RegistriesConf(path if path.is_file() else None)
    sources = [path] if path.is_file() else []
    for directory in drop_in_dirs(path, explicit):
        if directory.is_dir():
            sources += sorted(p for p in directory.glob("*.conf") if p.is_file())
    for source in sources:
        _merge(conf, source, _read_toml(source))
    return conf


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(one_line(f"{path}: not valid TOML: {e}")) from None


def _merge(conf: RegistriesConf, path: Path, data: dict[str, Any]) -> None:
    conf.files.append(path)
    search = data.get("unqualified-search-registries")
    legacy = (data.get("registries") or {}).get("search") if isinstance(data.get("registries"), dict) else None
    if legacy is not None:  # the version 1 format: [registries.search] registries = [...]
        search = legacy.get("registries") if isinstance(legacy, dict) else None
        if search is None:
            raise InputError(f"{path}: [registries.search] without a registries list")
    if search is not None:
        if not (isinstance(search, list) and all(isinstance(s, str) and s for s in search)):
            raise InputError(f"{path}: unqualified-search-registries: expected a list of registry names")
        conf.search = list(search)
    aliases = data.get("aliases", {})
    if not isinstance(aliases, dict):
        raise InputError(f"{path}: [aliases]: expected a table of short name = repository")
    for key, value in aliases.items():
        if value == "":
            conf.aliases.pop(key, None)
            continue
        conf.aliases[_check_alias(path, key, value)] = value
    tables = data.get("registry", [])
    if isinstance(tables, list):
        prefixes = {str(t.get("prefix") or t.get("location")) for t in tables if isinstance(t, dict)}
        conf.registries = [r for r in conf.registries if str(r.get("prefix") or r.get("location")) not in prefixes]
        conf.registries += [t for t in tables if isinstance(t, dict)]


def _check_alias(path: Path, key: object, value: object) -> str:
    """Keys are short names without tag; values are fully qualified repositories without tag or
    digest (the containers tools' rule: an alias names a repository, the user names the tag)."""
    where = f"{path}: [aliases] '{key}'"
    if not isinstance(key, str) or not isinstance(value, str):
        raise InputError(one_line(f"{where}: expected a string value"))
    try:
        short, target = parse_reference(key), parse_reference(value)
    except InputError as e:
        raise InputError(one_line(f"{where}: {e}")) from None
    if short.qualified or ":" in key or "@" in key:
        raise InputError(one_line(f"{where}: the key must be a short name without registry, tag or digest"))
    if not target.qualified or "@" in value or ":" in value.rsplit("/", 1)[-1]:
        raise InputError(one_line(f"{where}: '{value}' must name a registry and carry no tag or digest"))
    return key


def resolve(ref: Reference | str, conf: RegistriesConf | None = None) -> list[Reference]:
    """The fully qualified references a pull tries, in order. A qualified reference is itself; a
    short name is its alias, else each search registry, else docker.io."""
    ref = parse_reference(ref) if isinstance(ref, str) else ref
    if ref.qualified or ref.transport != "docker":
        return [ref]
    conf = load_registries_conf() if conf is None else conf
    if ref.short in conf.aliases:
        return [ref.with_repository(conf.aliases[ref.short])]
    if conf.search is None:
        return [ref]  # Docker's rule, already applied by the parser
    if not conf.search:
        raise InputError(f"image '{ref.short}': a short name, and {conf.path}'s unqualified-search-registries "
                         "is empty with no alias for it: write the registry (for example docker.io/...)")
    return [_in_registry(conf, registry, ref) for registry in conf.search]


def _in_registry(conf: RegistriesConf, registry: str, ref: Reference) -> Reference:
    """A short name on a search registry: a registry without a dot (`myregistry`) is still one."""
    if not _DOMAIN.fullmatch(registry):
        raise InputError(one_line(f"{conf.path}: unqualified-search-registries: '{registry}' is not a host[:port]"))
    domain = DOCKER_DOMAIN if registry == "index.docker.io" else registry
    path = f"library/{ref.short}" if domain == DOCKER_DOMAIN and "/" not in ref.short else ref.short
    return Reference(domain, path, ref.tag, ref.digest, ref.transport)
