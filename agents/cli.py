"""``python -m agents.cli``: the ``nlhf-zoo`` command (it lives in :mod:`agents.zoo.cli`)."""

from __future__ import annotations

import sys

from agents.zoo.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
