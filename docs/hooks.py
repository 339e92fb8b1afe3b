"""MkDocs hook: publish the benchmark tables and plots from where the scripts write them.

``benchmarks/README.md`` and ``benchmarks/results/*.md|*.png`` live outside ``docs/``; this hook
adds them to the site under ``benchmarks/`` so the docs link them (``--strict`` checks those
links) without a copy that could drift from what ``make bench`` and the studies regenerate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ("benchmarks/README.md", "benchmarks/results/*.md", "benchmarks/results/*.png")


def on_files(files: Files, config: Any) -> Files:
    """Add the benchmark pages and plots to the site's files."""
    for pattern in PATTERNS:
        for path in sorted(ROOT.glob(pattern)):
            files.append(
                File(
                    path.relative_to(ROOT).as_posix(),
                    src_dir=str(ROOT),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files
