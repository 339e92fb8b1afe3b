"""The ``nlhf-zoo`` console script's entry point: a Ctrl-C during start-up exits quietly.

Importing :mod:`agents` (numpy, scipy, PettingZoo, ...) takes a moment; a Ctrl-C in that moment would
otherwise print a traceback of the import machinery. This module imports nothing heavy itself and
turns such an interrupt into the same one line as :func:`agents.zoo.cli.main` does (exit status 130).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run :func:`agents.zoo.cli.main`; a Ctrl-C before it takes over prints one line, status 130."""
    try:
        from agents.zoo.cli import main as cli_main

        return cli_main(argv)
    except KeyboardInterrupt:
        print("nlhf-zoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
