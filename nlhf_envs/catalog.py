"""The built-in games table: every family solved exactly (the first part of ``nlhf-zoo demo``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from nlhf_envs.families import make_game
from nlhf_envs.game import PreferenceGame
from nlhf_envs.solvers import entropy, exploitability, regularized_nash

__all__ = ["DEFAULT_GAMES", "GameRow", "solve_table", "format_table"]

#: (family, keyword arguments) of the games the demo solves.
DEFAULT_GAMES: list[tuple[str, dict]] = [
    ("rps", {}),
    ("biased_rps", {}),
    ("cyclic", {"num_actions": 7}),
    ("uniform", {"num_actions": 10, "seed": 0}),
    ("uniform", {"num_actions": 1000, "seed": 0}),
    ("skew_gaussian", {"num_actions": 100, "seed": 0}),
    ("bradley_terry", {"num_actions": 100, "seed": 0}),
    ("condorcet", {"num_actions": 50, "seed": 0}),
    ("disc", {"num_actions": 50, "seed": 0}),
    ("uniform", {"num_actions": 20, "num_contexts": 16, "seed": 0}),
]


@dataclass
class GameRow:
    """One line of the games table."""

    game: str
    contexts: int
    K: int
    beta: float
    expl_uniform: float
    expl_ref: float
    expl_nash: float
    entropy_nash: float
    solve_seconds: float


def solve_table(
    games: list[tuple[str, dict]] | None = None, betas: tuple[float, ...] = (0.1,)
) -> list[GameRow]:
    """Solve each game exactly and measure exploitabilities (uniform, ``pi_ref``, ``pi*_beta``)."""
    rows = []
    for family, kwargs in games or DEFAULT_GAMES:
        for beta in betas:
            game: PreferenceGame = make_game(family, beta=beta, **kwargs)
            t0 = time.perf_counter()
            nash = regularized_nash(game, use_cache=False)
            dt = time.perf_counter() - t0
            C, K = game.shape
            rows.append(
                GameRow(
                    game=game.name,
                    contexts=C,
                    K=K,
                    beta=beta,
                    expl_uniform=exploitability(game, np.full(K, 1.0 / K)),
                    expl_ref=exploitability(game, game.pi_ref),
                    expl_nash=exploitability(game, nash),
                    entropy_nash=entropy(game, nash),
                    solve_seconds=dt,
                )
            )
    return rows


def format_table(rows: list[GameRow]) -> str:
    """Markdown table of :func:`solve_table` rows."""
    lines = [
        "| game | C | K | beta | Expl(uniform) | Expl(pi_ref) | Expl(pi*_beta) | H(pi*_beta) | solve time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.game} | {r.contexts} | {r.K} | {r.beta:g} | {r.expl_uniform:.4g} | "
            f"{r.expl_ref:.4g} | {r.expl_nash:.1e} | {r.entropy_nash:.3f} | "
            f"{r.solve_seconds * 1e3:.1f} ms |"
        )
    return "\n".join(lines)
