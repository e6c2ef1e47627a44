"""The documentation stays navigable: every relative link in README.md and docs/*.md
resolves (the file, and the heading when the link names one), every test a page names as
`tests/<file>.py::<test>` exists, and the README stays one short page."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import ROOT

README_MAX_LINES = 150
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) and ![alt](target); the target ends at the first space or ')'.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
# `tests/test_x.py::test_y`, then any `::test_z` right after it naming the same file.
_TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`((?:,?\s*(?:and\s+)?`::\w+`)*)")
_MORE_TESTS = re.compile(r"`::(\w+)`")


def _prose(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (their brackets are not links)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " _-")
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in _prose(page.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def broken_links(page: Path) -> list[str]:
    problems = []
    for line in _prose(page.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, fragment = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.exists():
                problems.append(f"{_name(page)}: {target} (no such file)")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                problems.append(f"{_name(page)}: {target} (no such heading)")
    return problems


def named_tests(page: Path) -> list[tuple[str, str]]:
    refs = []
    for match in _TEST_REF.finditer(page.read_text(encoding="utf-8")):
        path = match.group(1)
        refs.append((path, match.group(2)))
        refs.extend((path, name) for name in _MORE_TESTS.findall(match.group(3)))
    return refs


def test_every_relative_link_resolves() -> None:
    problems = [problem for page in PAGES for problem in broken_links(page)]
    assert problems == []


def test_every_named_test_exists() -> None:
    missing = []
    for page in PAGES:
        for path, name in named_tests(page):
            source = ROOT / path
            defined = source.exists() and re.search(
                rf"^(?:async )?def {name}\(", source.read_text(encoding="utf-8"), re.M
            )
            if not defined:
                missing.append(f"{_name(page)}: {path}::{name}")
    assert missing == []


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES


def test_the_checks_see_a_broken_link_and_a_missing_test(tmp_path: Path) -> None:
    # The checks above pass on an empty list: prove they would see a fault.
    (tmp_path / "other.md").write_text("# The Redis key model: `keys.py`\n", encoding="utf-8")
    page = tmp_path / "probe.md"
    page.write_text(
        "# Probe\n\n[gone](no-such-page.md) [bad heading](other.md#no-such-heading)\n"
        "[ok](other.md#the-redis-key-model-keyspy) [self](#probe) [web](https://example.org/x)\n"
        "```\n[not a link](inside-a-fence.md)\n```\n"
        "`tests/test_docs_links.py::test_the_readme_stays_short`, `::no_such_test`\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "probe.md: no-such-page.md (no such file)",
        "probe.md: other.md#no-such-heading (no such heading)",
    ]
    assert named_tests(page) == [
        ("tests/test_docs_links.py", "test_the_readme_stays_short"),
        ("tests/test_docs_links.py", "no_such_test"),
    ]
