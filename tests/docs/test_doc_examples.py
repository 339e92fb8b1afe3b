"""Every example in the documentation site (``docs/``) and the README runs.

The collector reads the fenced code blocks of each page:

* ```` ```python ```` blocks run in order in one fresh namespace per page;
* ```` ```pycon ```` blocks run as doctests in that namespace;
* ```` ```bash ```` blocks: every command that starts with ``nlhf-zoo`` (continuation lines joined,
  comments dropped) runs through :func:`agents.zoo.cli.main` and must exit with status 0; other
  commands (``make``, ``python benchmarks/...``, ``tensorboard``) are not run here.

All blocks of a page run in one temporary folder, so a run folder a ``train`` line writes is there
for the ``eval`` line after it. Markers (an HTML comment on the line right before the block):

* ``<!-- no-test: reason -->``: not run here (a GPU, a downloaded model, a Ray cluster, a study of
  several minutes); the reason is required and shown as the skip reason;
* ``<!-- slow: reason -->``: run in the slow suite only (``make test-slow``);
* ``<!-- test-budget: N -->``: ``nlhf-zoo train`` lines without ``-n``/``--num-queries`` or
  ``--resume`` get ``--num-queries N`` (the commands are shown as a user runs them).

A block holding only a snippet include (``--8<-- "examples/x.py"``) shows a file that its own test
runs; the collector checks that such a test exists instead of running the file twice.

A page whose examples read files the reader brings (their own model, judge and prompts) has an
entry in :data:`PAGE_PARTS`: before its first block, the test writes small stand-ins under the
names the page uses into the page's folder, and replaces the sizes a user would run with small
ones (each replaced text must occur in the page, so the page and the test cannot drift apart).
"""

from __future__ import annotations

import doctest
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(ROOT.glob("docs/**/*.md")) + [ROOT / "README.md"]

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```\s*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(no-test|slow|test-budget):\s*(.*?)\s*-->\s*$")
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$')
RUN_LANGS = {"python", "pycon", "bash"}


def _hf_parts(folder: Path) -> None:
    pytest.importorskip("peft")
    from hf_doc_parts import build  # tests/docs/hf_doc_parts.py

    build(folder)


@dataclass(frozen=True)
class PageParts:
    """What a page's examples need from the reader: ``build(folder)`` writes stand-ins for the
    reader's files; ``replace`` lists ``(text, replacement)`` pairs applied to every block."""

    build: Callable[[Path], None]
    replace: tuple[tuple[str, str], ...] = ()


#: docs/games/hf.md: a tiny Llama, a reward model, a LoRA adapter and a prompt file
#: (tests/docs/hf_doc_parts.py). Replaced: the GPU by the CPU, the budget by one iteration of
#: Nash-MP (2 x 4 inner steps x 32 pairs = 256 queries), answers of 64 tokens by 4, the final
#: evaluation's 256 prompts and Nash estimate (16 prompts x 32 samples) by 8 prompts and 2 x 4, and
#: 500 duels per pair (tournament, eval) by 8, so that the page runs in seconds.
PAGE_PARTS: dict[str, PageParts] = {
    "docs/games/hf.md": PageParts(
        _hf_parts,
        (
            ("--device cuda", "--device cpu"),
            ("-n 20000", "-n 256"),
            (
                "--params batch_size:32",
                "--params batch_size:32 eval_prompts:8 nash_eval_prompts:2 nash_eval_samples:4",
            ),
            ("max_new_tokens:64", "max_new_tokens:4"),
            ("--n-duels 500", "--n-duels 8"),
        ),
    ),
}


@dataclass
class Block:
    """One fenced code block of a page and the markers right before it."""

    page: Path
    line: int
    lang: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def include(self) -> str | None:
        """The included file when the block is one snippet include line."""
        match = SNIPPET.match(self.code.strip())
        return match.group(1) if match else None


def read_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order, with their markers."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        markers = {}
        before = text[: match.start()].splitlines()
        while before and MARKER.search(before[-1]):
            kind, value = MARKER.search(before[-1]).groups()
            markers[kind] = value
            before.pop()
        blocks.append(Block(page, line, match.group(1), match.group(2), markers))
    return blocks


def zoo_commands(code: str, budget: str | None) -> list[list[str]]:
    """The ``nlhf-zoo`` command lines of a bash block, as argument lists."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for raw in joined.splitlines():
        words = shlex.split(raw, comments=True)
        if not words or words[0] != "nlhf-zoo":
            continue
        args = words[1:]
        has_budget = {"-n", "--num-queries", "--resume", "--trained-agent"} & set(args)
        if budget and args[:1] == ["train"] and not has_budget:
            args += ["--num-queries", budget]
        commands.append(args)
    return commands


def run_block(block: Block, namespace: dict) -> None:
    """Run one block (see the module docstring); fail with the page and line."""
    if block.lang == "python":
        exec(compile(block.code, block.where, "exec"), namespace)
    elif block.lang == "pycon":
        test = doctest.DocTestParser().get_doctest(block.code, namespace, block.where, None, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        runner.run(test)
        assert runner.failures == 0, f"{block.where}: {runner.failures} doctest failure(s)"
    elif block.lang == "bash":
        from agents.zoo.cli import main

        for args in zoo_commands(block.code, block.markers.get("test-budget")):
            assert main(args) == 0, f"{block.where}: nlhf-zoo {shlex.join(args)} failed"


def runnable(page: Path) -> list[Block]:
    return [b for b in read_blocks(page) if b.lang in RUN_LANGS and b.include is None]


def _params(slow: bool) -> list:
    params = []
    for page in PAGES:
        blocks = runnable(page)
        rel = str(page.relative_to(ROOT))
        if not blocks:
            continue
        has_slow = any("slow" in b.markers for b in blocks)
        if slow and not has_slow:
            continue
        params.append(pytest.param(page, id=rel))
    return params


def _run_page(page: Path, slow: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    namespace: dict = {"__name__": "__main__"}
    parts = PAGE_PARTS.get(str(page.relative_to(ROOT)))
    if parts is not None:
        monkeypatch.syspath_prepend(str(Path(__file__).parent))
        parts.build(tmp_path)
    ran = 0
    for block in runnable(page):
        if "no-test" in block.markers or ("slow" in block.markers and not slow):
            continue
        if parts is not None:
            code = block.code
            for old, new in parts.replace:
                code = code.replace(old, new)
            block = Block(block.page, block.line, block.lang, code, block.markers)
        run_block(block, namespace)
        ran += 1
    return ran


@pytest.mark.parametrize("page", _params(slow=False))
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if all(b.markers.keys() & {"no-test", "slow"} for b in runnable(page)):
        pytest.skip(
            "every block of this page is marked no-test (reasons below) or slow (make test-slow)"
        )
    assert _run_page(page, False, tmp_path, monkeypatch) > 0


@pytest.mark.slow
@pytest.mark.parametrize("page", _params(slow=True))
def test_page_examples_run_with_slow_blocks(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert _run_page(page, True, tmp_path, monkeypatch) > 0


def _not_run() -> list:
    return [
        pytest.param(b, id=b.where)
        for page in PAGES
        for b in runnable(page)
        if "no-test" in b.markers
    ]


@pytest.mark.parametrize("block", _not_run())
def test_blocks_not_run_here_say_why(block: Block):
    reason = block.markers["no-test"]
    assert len(reason) >= 10, f"{block.where}: a no-test marker needs a reason"
    pytest.skip(f"{block.where}: {reason}")


def test_included_examples_exist_and_are_run_by_a_test():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    included = [b for page in PAGES for b in read_blocks(page) if b.include]
    assert included, "the docs include the examples/ files"
    for block in included:
        path = ROOT / block.include
        assert path.is_file(), f"{block.where}: {block.include} does not exist"
        if block.include.startswith("examples/"):
            assert path.name in tests, f"{block.where}: no test runs {block.include}"


def test_collector_reads_markers_and_zoo_commands(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- no-test: needs a GPU to finish -->\n```python\nraise SystemExit\n```\n\n"
        "<!-- test-budget: 64 -->\n```bash\n"
        "nlhf-zoo train --agent nash_mp \\\n    --env nlhf/RPS-v0   # comment\n"
        "nlhf-zoo train --resume logs/x\npython other.py\n```\n"
    )
    first, second = read_blocks(page)
    assert (first.line, first.lang, first.markers) == (
        4,
        "python",
        {"no-test": "needs a GPU to finish"},
    )
    assert zoo_commands(second.code, second.markers["test-budget"]) == [
        ["train", "--agent", "nash_mp", "--env", "nlhf/RPS-v0", "--num-queries", "64"],
        ["train", "--resume", "logs/x"],
    ]


@pytest.mark.parametrize("page", sorted(PAGE_PARTS))
def test_replaced_sizes_occur_in_their_page(page: str):
    text = (ROOT / page).read_text()
    missing = [old for old, _ in PAGE_PARTS[page].replace if old not in text]
    assert missing == [], f"{page} no longer holds {missing}: update PAGE_PARTS"


def test_readme_links_point_to_files_that_exist():
    # the site's links are checked by `mkdocs build --strict`; the README is not part of the site
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10
    missing = [link for link in local if not (ROOT / link).exists()]
    assert missing == [], f"README links to missing files: {missing}"
