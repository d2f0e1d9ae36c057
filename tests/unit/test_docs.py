"""The documentation stays whole and self-contained (docs/contract.md §7): every relative link
of README.md and docs/*.md reaches a file of the repository (and, with #anchor, one of its
headings), no link points outside the repository, the README stays short, and every
"docs/contract.md §N" cited in code and tests names a section the contract has."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

FENCE_RE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE_RE = re.compile(r"(`+).*?\1")
INLINE_LINK_RE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_RE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HEADING_RE = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
CITATION_RE = re.compile(r"docs/contract\.md\s+§(\d+(?:\.\d+)?)")
CONTRACT_SECTION_RE = re.compile(r"^#{2,3}\s+(\d+(?:\.\d+)?)\.?\s")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE_RE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, INLINE_CODE_RE.sub("", line)))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        found += [(number, target) for target in INLINE_LINK_RE.findall(line)]
        found += [(number, target) for target in REFERENCE_RE.findall(line)]
    return found


def slug(heading: str) -> str:
    """The anchor a heading gets: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = path.read_text(encoding="utf-8")
    fenced = False
    for line in text.splitlines():
        if FENCE_RE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING_RE.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def all_links() -> list[tuple[Path, int, str]]:
    return [(page, number, target) for page in PAGES for number, target in links(page)]


def where(page: Path, number: int) -> str:
    return f"{page.relative_to(ROOT)}:{number}"


def test_there_are_pages_and_links() -> None:
    names = {page.name for page in PAGES}
    for required in ("README.md", "contract.md", "file-format.md", "checks.md", "images.md", "security.md",
                     "cli.md", "python-api.md", "internals.md", "troubleshooting.md"):
        assert required in names, f"docs/{required} is missing"
    assert len(all_links()) > 20


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_readme_links_every_docs_page() -> None:
    linked = {(ROOT / unquote(target.split("#")[0])).resolve() for _, target in links(ROOT / "README.md")}
    for page in PAGES[1:]:
        assert page.resolve() in linked, f"README.md does not link {page.relative_to(ROOT)}"


@pytest.mark.parametrize(("page", "number", "target"), all_links(),
                         ids=[f"{where(p, n)}:{t}" for p, n, t in all_links()])
def test_link_stays_inside_the_repository_and_resolves(page: Path, number: int, target: str) -> None:
    assert target, f"{where(page, number)}: empty link"
    assert not SCHEME_RE.match(target) and not target.startswith("//"), (
        f"{where(page, number)}: {target} points outside the repository")
    file_part, _, anchor = target.partition("#")
    assert not file_part.startswith("/"), f"{where(page, number)}: {target} is absolute; use a relative link"
    destination = (page.parent / unquote(file_part)).resolve() if file_part else page.resolve()
    assert destination.is_relative_to(ROOT), f"{where(page, number)}: {target} leaves the repository"
    assert destination.exists(), f"{where(page, number)}: {target} does not exist"
    if anchor:
        assert destination.suffix == ".md", f"{where(page, number)}: {target}: an anchor into a non-markdown file"
        assert unquote(anchor) in anchors(destination), (
            f"{where(page, number)}: {target}: no heading #{anchor} in {destination.relative_to(ROOT)}")


def test_no_text_points_outside_the_repository() -> None:
    """Not in links only: no URL and no path out of the repository anywhere in the prose."""
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            assert not re.search(r"https?://", line), f"{where(page, number)}: a URL"
            assert "shared/SPEC" not in line and "SPEC.md" not in line, (
                f"{where(page, number)}: cites a file outside the repository")


def contract_sections() -> set[str]:
    text = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    return {match.group(1) for _, line in prose_lines(text) if (match := CONTRACT_SECTION_RE.match(line))}


def cited_files() -> list[Path]:
    files = [path for top in ("netemu", "tests", "bench") for path in sorted((ROOT / top).rglob("*.py"))
             if path != Path(__file__).resolve()]
    return [*files, *PAGES]


def test_contract_citations_name_existing_sections() -> None:
    sections = contract_sections()
    assert {"1", "2", "3", "4", "5", "6", "6.3"} <= sections
    cited = 0
    for path in cited_files():
        text = path.read_text(encoding="utf-8")
        for match in CITATION_RE.finditer(text):
            cited += 1
            line = text.count("\n", 0, match.start()) + 1
            assert match.group(1) in sections, (
                f"{where(path, line)}: docs/contract.md has no section {match.group(1)}")
        assert not re.search(r"spec section|SPEC\.md", text), (
            f"{path.relative_to(ROOT)}: cites the old spec; cite docs/contract.md §N")
    assert cited > 0


def test_slug_matches_the_renderers_rule() -> None:
    assert slug("Guarantees, and how they are kept") == "guarantees-and-how-they-are-kept"
    assert slug("User namespaces (`userns: true`)") == "user-namespaces-userns-true"
    assert slug("1.4 Checks") == "14-checks"
    assert slug("Speed: all pairs of 100 hosts") == "speed-all-pairs-of-100-hosts"
