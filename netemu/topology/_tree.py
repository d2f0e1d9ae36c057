"""YAML text -> a tree of located values, so that every later error can name its line and key path.

PyYAML's composer gives nodes with marks; this module turns them into `Item`s (value, line, key
path) while refusing what makes YAML dangerous or ambiguous in a configuration file: duplicate
keys (the last one silently wins) and custom tags. Anchors, aliases and merge keys (`<<: *x`)
are expanded here, not by PyYAML, so that the expansion is bounded: every value reached through
an alias counts, and past ALIAS_EXPANSION_MAX the file is refused (an alias bomb, the "billion
laughs", is a few lines that would expand to 10^9 values).
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

T = TypeVar("T")
_STD_TAG = "tag:yaml.org,2002:"
_NULL_TAG = _STD_TAG + "null"
_MERGE_TAG = _STD_TAG + "merge"  # a plain `<<` key
_ALIAS_TAG = "!netemu-alias"  # marker node standing for an alias, expanded (bounded) by to_item
# Values reached through aliases, in all: a file reusing a block of defaults in every node of a
# thousand-node lab stays far below it, an alias bomb reaches it in a few milliseconds.
ALIAS_EXPANSION_MAX = 100_000
# Collections inside collections, aliases' targets included: no configuration file comes near
# it, and past it PyYAML's composer and to_item would run out of Python's stack (a RecursionError
# names no line).
NESTING_MAX = 100
# An alias token as the scanner sees one: `*name` after a space, a line start or a flow indicator.
_ALIAS_TOKEN = re.compile(r"(?:^|(?<=[\s\[{,]))\*[^\s\[\]{},]+", re.MULTILINE)


class Invalid(Exception):
    """A located problem; the loader adds the file name and raises it as a TopologyError."""

    def __init__(self, line: int | None, path: str, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.path = path
        self.reason = reason


@dataclass
class Item:
    """One value of the file with where it was written."""

    value: Any  # dict[str, Item] for a mapping, list[Item] for a sequence, else the scalar
    line: int  # 1-based line of the value
    path: str  # dotted key path, e.g. nodes.r1.limits.memory or links[0].endpoints[1]
    raw: str | None = None  # a scalar's text as written; None for mappings and sequences
    key_line: int | None = None  # line of the key holding this value, inside a mapping

    def fail(self, reason: str, *, at_key: bool = False) -> NoReturn:
        line = self.key_line if at_key and self.key_line else self.line
        raise Invalid(line, self.path, reason)

    def type_name(self) -> str:
        value = self.value
        for kind, label in ((dict, "a mapping"), (list, "a list"), (bool, "a boolean"), (int, "an integer")):
            if isinstance(value, kind):
                return label
        if value is None:
            return "null"
        return "a number" if isinstance(value, float) else "a string" if isinstance(value, str) else "a date"

    def expected(self, what: str) -> NoReturn:
        self.fail(f"expected {what}, got {self.type_name()}")

    def mapping(self, allowed: Iterable[str] | None = None, required: Iterable[str] = ()) -> dict[str, Item]:
        if not isinstance(self.value, dict):
            self.expected("a mapping")
        if allowed is not None:
            check_keys(self, list(allowed))
        for key in required:
            if key not in self.value:
                raise Invalid(self.line, child_path(self.path, key), f"required key '{key}' is missing")
            if self.value[key].value is None:
                self.value[key].fail(f"required key '{key}' has no value", at_key=True)
        return self.value

    def items(self) -> list[Item]:
        if not isinstance(self.value, list):
            self.expected("a list")
        return self.value

    def scalar(self) -> Any:
        if self.value is None or isinstance(self.value, dict | list):
            self.expected("a string or number")
        return self.value

    def text(self) -> str:
        """A scalar as written: `22:22` stays a string instead of YAML 1.1's sexagesimal 1342."""
        self.scalar()
        assert self.raw is not None
        return self.raw

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            self.expected("true or false")
        return self.value

    def integer(self, low: int, high: int) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            self.expected("an integer")
        if not low <= self.value <= high:
            self.fail(f"{self.value} is out of range {low}..{high}")
        return self.value

    def convert(self, parse: Callable[[Any], T], *, typed: bool = False) -> T:
        """Apply a parser from _values to this scalar, turning its ValueError into a located error."""
        argument = self.scalar() if typed else self.text()
        try:
            return parse(argument)
        except ValueError as exc:
            self.fail(str(exc))


def check_keys(item: Item, allowed: list[str]) -> None:
    for key, child in item.value.items():
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(allowed)}"
        child.fail(f"unknown key '{key}'; {hint}", at_key=True)


def child_path(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


class _StrictLoader(yaml.SafeLoader):
    """Composes without expanding aliases (an alias becomes a marker node pointing at its
    anchor's node); to_item expands them, counting every value it reaches through one."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.expanded = 0  # values reached through aliases so far
        self.expanding = 0  # aliases being expanded, one inside the other
        self.open: set[int] = set()  # ids of the collections being converted: an alias to one recurses
        self.outermost: tuple[int, str, str] = (0, "", "")  # line, key path and anchor of the alias written
        # While composing: the values each node holds once its aliases are expanded (by id), the
        # sum over the aliases written so far, and (key path, is a merge key's list) of each node
        # being composed, outermost first, so that a bomb is refused where to_item would refuse
        # it, but before PyYAML has read the rest of a 4 MiB file.
        self.weights: dict[int, int] = {}
        self.reached = 0
        self.composing: list[tuple[str, bool]] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        path, merge_list = self._path_of(parent, index)
        if len(self.composing) >= NESTING_MAX:
            line = self.peek_event().start_mark.line + 1
            raise Invalid(line, path, f"nesting is too deep: at most {NESTING_MAX} levels of mappings and lists")
        if self.check_event(yaml.AliasEvent):
            return self._alias(self.get_event(), path)
        self.composing.append((path, merge_list))
        try:
            node = super().compose_node(parent, index)
        finally:
            self.composing.pop()
        self.weights[id(node)] = self._weight(node)
        return node

    def _path_of(self, parent: Any, index: Any) -> tuple[str, bool]:
        """The key path to_item gives the node being composed (a merge key's values, and the
        entries of its list, take the merging mapping's path), and whether it is a merge key's value."""
        if parent is None or not self.composing:
            return "", False
        parent_path, parent_is_merge_list = self.composing[-1]
        if isinstance(index, int):
            return (parent_path if parent_is_merge_list else f"{parent_path}[{index}]"), False
        if isinstance(index, yaml.ScalarNode):  # a mapping's value; None: one of its keys
            if index.tag == _MERGE_TAG:
                return parent_path, True
            return child_path(parent_path, index.value), False
        return parent_path, False

    def _alias(self, event: Any, path: str) -> Any:
        if event.anchor not in self.anchors:
            raise yaml.composer.ComposerError(None, None, f"found undefined alias *{event.anchor}", event.start_mark)
        marker = yaml.ScalarNode(_ALIAS_TAG, event.anchor, event.start_mark, event.end_mark)
        marker.netemu_target = target = self.anchors[event.anchor]
        # an anchor still being composed (`&a [*a]`) has no weight yet: to_item refuses it
        self.weights[id(marker)] = weight = self.weights.get(id(target), 1)
        self.reached += weight
        if self.reached > ALIAS_EXPANSION_MAX:
            raise _too_far(event.start_mark.line + 1, path, event.anchor)
        return marker

    def _weight(self, node: Any) -> int:
        """What to_item makes of `node`: itself and, for a collection, its values (not its keys)."""
        if isinstance(node, yaml.MappingNode):
            return 1 + sum(self.weights.get(id(value), 1) for _, value in node.value)
        if isinstance(node, yaml.SequenceNode):
            return 1 + sum(self.weights.get(id(child), 1) for child in node.value)
        return 1

    def to_item(self, node: Any, path: str, key_line: int | None = None) -> Item:
        if node.tag == _ALIAS_TAG:
            return self._expand(node, path, key_line)
        if self.expanding:
            self.expanded += 1
            if self.expanded > ALIAS_EXPANSION_MAX:
                raise _too_far(*self.outermost)
        return self._item(node, path, key_line)

    def _expand(self, marker: Any, path: str, key_line: int | None) -> Item:
        """The anchored node an alias names, as a fresh Item at the alias's key path (errors in
        it name the line where the anchor's value is written)."""
        target = marker.netemu_target
        if id(target) in self.open:  # `&a [*a]`: the composer lets an alias name its own parent
            raise Invalid(marker.start_mark.line + 1, path, f"alias *{marker.value} is inside its own anchor")
        if not self.expanding:  # an alias bomb is reported where the file uses it
            self.outermost = (marker.start_mark.line + 1, path, marker.value)
        self.expanding += 1
        try:
            return self.to_item(target, path, key_line)
        finally:
            self.expanding -= 1

    def _item(self, node: Any, path: str, key_line: int | None) -> Item:
        line = node.start_mark.line + 1
        if not node.tag.startswith(_STD_TAG):
            raise Invalid(line, path, f"YAML tag '{node.tag}' is not allowed")
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if len(self.open) >= NESTING_MAX:  # the composer bounds each anchor; aliases inside aliases add up
                raise Invalid(line, path, f"nesting is too deep: at most {NESTING_MAX} levels of mappings and "
                              "lists, aliases' values included")
            self.open.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return Item(self._mapping(node, path), line, path, key_line=key_line)
                children = [self.to_item(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
                return Item(children, line, path, key_line=key_line)
            finally:
                self.open.discard(id(node))
        if node.tag == _MERGE_TAG:
            raise Invalid(line, path, "'<<' (a merge key) is only allowed as a key")
        try:
            value = self.construct_object(node, deep=True)
        except (ValueError, TypeError, OverflowError):  # e.g. `!!int abc`: PyYAML lets these escape
            kind = node.tag.removeprefix(_STD_TAG)
            raise Invalid(line, path, f"'{node.value}' is not a valid {kind}") from None
        if "\0" in node.value:  # a "\0" escape: no name, path, argument or value may hold one
            raise Invalid(line, path, "the NUL character is not allowed")
        return Item(value, line, path, raw=node.value, key_line=key_line)

    def _mapping(self, node: Any, path: str) -> dict[str, Item]:
        """Keys in written order; a merge key (`<<: *defaults` or `<<: [*a, *b]`) adds the keys of
        the mappings it names that the mapping does not write itself (YAML's merge rule: the
        mapping's own keys win, then the first merged mapping that has the key)."""
        own = self._own_keys(node, path)
        result: dict[str, Item] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag != _MERGE_TAG:
                result[key_node.value] = self.to_item(value_node, child_path(path, key_node.value), key_line)
                continue
            for key, item in self._merged(value_node, path, key_line).items():
                if key not in own and key not in result:
                    result[key] = item
        return result

    def _own_keys(self, node: Any, path: str) -> set[str]:
        """The keys a mapping writes itself, refusing a key written twice (`<<` included)."""
        first: dict[str, int] = {}
        own: set[str] = set()
        for key_node, _ in node.value:
            key_line = key_node.start_mark.line + 1
            # the key as written: a node called 01 or yes must not become 1 or True
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag in (_NULL_TAG, _ALIAS_TAG):
                raise Invalid(key_line, path, "mapping keys must be plain strings")
            key = key_node.value
            if "\0" in key:
                raise Invalid(key_line, path, "the NUL character is not allowed in a key")
            if key in first:
                raise Invalid(key_line, child_path(path, key), f"duplicate key '{key}' (first at line {first[key]})")
            first[key] = key_line
            if key_node.tag != _MERGE_TAG:
                own.add(key)
        return own

    def _merged(self, value_node: Any, path: str, key_line: int) -> dict[str, Item]:
        """The keys a merge key brings, at the merging mapping's key paths."""
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        merged: dict[str, Item] = {}
        for source in sources:
            item = self.to_item(source, path, key_line)
            if not isinstance(item.value, dict):
                raise Invalid(key_line, child_path(path, "<<"), "a merge key takes a mapping or a list of mappings "
                              f"(an alias such as *defaults), got {item.type_name()}")
            for key, child in item.value.items():
                merged.setdefault(key, child)
        return merged


def read_lab_file(path: Path, limit: int) -> bytes:
    """A file a lab names (lab.conf, lab.dep, an env-file), at most `limit` + 1 bytes (the
    caller refuses a longer one). It must be a regular file: a FIFO would block netemu forever
    and /dev/zero would fill its memory, so the path is opened with O_PATH (which opens no
    device and waits on no FIFO) and read through /proc/self/fd only once fstat says what it is.
    Raises OSError whose strerror says why."""
    handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        mode = os.fstat(handle).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file"
            raise OSError(errno.EINVAL, f"not a regular file ({kind})")
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(handle)
    with open(fd, "rb") as reader:
        return reader.read(limit + 1)


def _too_far(line: int, path: str, anchor: str) -> Invalid:
    return Invalid(line, path, f"alias *{anchor} expands too far: aliases are not allowed to reach more "
                   f"than {ALIAS_EXPANSION_MAX} values in all (an alias bomb?)")


def _count_aliases(text: str) -> None:
    """Every alias reaches one value at least, so a file with more alias tokens than the bound
    is a bomb whatever they name: refused before PyYAML's scanner, which takes seconds per
    megabyte, reads it. (A `*x` inside a quoted string counts too: no file has 100,000.)"""
    for count, match in enumerate(_ALIAS_TOKEN.finditer(text), 1):
        if count > ALIAS_EXPANSION_MAX:
            line = text.count("\n", 0, match.start()) + 1
            raise Invalid(line, "", f"more than {ALIAS_EXPANSION_MAX} aliases: aliases are not allowed to reach "
                          f"more than {ALIAS_EXPANSION_MAX} values in all (an alias bomb?)")


def parse(text: str) -> Item | None:
    """The document as an Item tree, or None for an empty document."""
    loader: _StrictLoader | None = None
    _count_aliases(text)
    try:
        loader = _StrictLoader(text)  # its reader already rejects non-printable characters
        root = loader.get_single_node()
        return None if root is None else loader.to_item(root, "")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(str(part) for part in (exc.problem, exc.context and f"({exc.context})") if part)
        raise Invalid(mark.line + 1 if mark else None, "", f"invalid YAML: {reason}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise Invalid(line, "", f"invalid character #x{exc.character:04x}: {exc.reason}") from None
    except RecursionError:
        raise Invalid(None, "", "invalid YAML: nesting is too deep") from None
    finally:
        if loader is not None:
            loader.dispose()
