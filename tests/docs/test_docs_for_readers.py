"""What the site and the README show speaks to readers: every page, every file a page includes and
every docstring of the API reference (the ``agents`` and ``nlhf_envs`` packages) cites no file
outside the repository, no tracker number and no commit hash, and no line of a code block is wider
than a code block of the site.

The width: Material for MkDocs shows about 80 characters of a code block on a wide screen (61rem
of grid less two 12.1rem sidebars and 2 x 1.2rem of margins, at 0.8rem x 0.85 monospace with
0.6em per character and 1.18em of padding on each side: 80 at every desktop font size). Longer
lines scroll, and the site soft-wraps them (``docs/stylesheets/extra.css``); a page's own blocks
keep within the width.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = (
    sorted(ROOT.glob("docs/**/*.md"))
    + [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
    + sorted(ROOT.glob("benchmarks/results/*.md"))
)
INCLUDE = re.compile(r'^--8<-- "([^"]+)"$', re.M)
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```\s*$", re.M | re.S)
#: a tracker number, the private maths notes, or a commit hash (7-40 hex digits with letters and
#: digits, or any 7-40 hex digits in backticks)
NOT_FOR_READERS = re.compile(
    r"\bissues? #?\d+|\bissue-\d+|algorithms\.md"
    r"|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b"
    r"|`[0-9a-f]{7,40}`"
)
#: a table's provenance line quotes the command that made it verbatim (a revision it was given too)
VERBATIM = re.compile(r"Command: `[^`]*`")
CODE_WIDTH = 80


def _findings(path: Path, root: Path = ROOT) -> list[str]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for match in NOT_FOR_READERS.finditer(VERBATIM.sub("", line)):
            out.append(f"{path.relative_to(root)}:{number}: {match.group(0)!r}")
    return out


def _included() -> list[Path]:
    found = {m.group(1) for page in PAGES for m in INCLUDE.finditer(page.read_text())}
    return sorted(ROOT / name.split(":")[0] for name in found)


def test_pages_and_what_they_include_cite_nothing_readers_cannot_see():
    paths = PAGES + _included()
    assert len(paths) > 40
    findings = [f for path in paths for f in _findings(path)]
    assert findings == []


def test_api_reference_docstrings_cite_nothing_readers_cannot_see():
    sources = sorted(ROOT.glob("agents/**/*.py")) + sorted(ROOT.glob("nlhf_envs/**/*.py"))
    assert len(sources) > 50
    findings = [f for path in sources for f in _findings(path)]
    assert findings == []


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "fixed in issue 15 and issue-23\nsee algorithms.md\nsince 99fc138\n"
        "Command: `make bench --baseline-ref 99fc138`\n1,024 queries; sha cafe 2026\n"
        "made by commit `9819637`\n"
    )
    assert _findings(page, tmp_path) == [
        "page.md:1: 'issue 15'",
        "page.md:1: 'issue-23'",
        "page.md:2: 'algorithms.md'",
        "page.md:3: '99fc138'",
        "page.md:6: '`9819637`'",
    ]


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if p.parent.name != "results"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_code_blocks_fit_the_site_width(page: Path):
    wide = []
    text = page.read_text(encoding="utf-8")
    for match in FENCE.finditer(text):
        first = text.count("\n", 0, match.start()) + 2
        for offset, line in enumerate(match.group(2).splitlines()):
            if len(line) > CODE_WIDTH:
                wide.append(f"{page.relative_to(ROOT)}:{first + offset}: {len(line)} characters")
    assert wide == []
