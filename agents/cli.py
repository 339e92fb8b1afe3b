"""The ``nlhf-zoo`` command-line tool.

Subcommands: ``list`` (registered env ids and agents) and ``demo`` (the README's main job). A user's
mistake (an unknown id, a bad argument) prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["main", "build_parser"]


class UserError(Exception):
    """A mistake in the command line: reported as one line, without a traceback."""


def _cmd_list(args: argparse.Namespace) -> int:
    import nlhf_envs

    print("Environment ids (pettingzoo.make('parallel' | 'aec', ID)):")
    for env_id in nlhf_envs.registered_ids():
        print(f"  {env_id}")
    print("Game families (nlhf_envs.make_game):")
    print("  " + ", ".join(nlhf_envs.FAMILIES))
    try:
        import agents

        names = agents.available()
    except (ImportError, AttributeError):
        names = []
    if names:
        print("Agents (agents.make):")
        print("  " + ", ".join(names))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from nlhf_envs.catalog import format_table, solve_table

    print("Built-in preference games, solved exactly (beta = 0.1, pi_ref uniform):\n")
    print(format_table(solve_table()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nlhf-zoo`` (one subparser per subcommand)."""
    parser = argparse.ArgumentParser(
        prog="nlhf-zoo",
        description="Nash learning from human feedback: games, agents, tournaments.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
        "list": ("list registered environment ids, game families and agents", _cmd_list),
        "demo": (
            "the main job: solve the built-in games (later: train and run a tournament)",
            _cmd_demo,
        ),
    }
    for name, (help_text, fn) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nlhf-zoo`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"nlhf-zoo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
