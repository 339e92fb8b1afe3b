"""The result of a tournament: tables, JSON, CSV and the heatmap."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.arena.match import MatchResult
from nlhf_envs.atomic import atomic_open, atomic_write_text

#: what the ranking of :meth:`TournamentResult.to_markdown` measures (and what it does not)
NASH_AVERAGING_NOTE = (
    "Nash averaging ranks by the duels among these participants only: the Nash mass is the "
    "meta-game's maximum-entropy Nash equilibrium, a score is the expected win rate against that "
    "mixture minus 1/2 (0 in its support). It is not exploitability in the game: a participant that "
    "wins this pool's duels can lose to a policy outside it (the exploitability column, where known, "
    "measures that, against every policy of the beta-regularised game)."
)


@dataclass
class TournamentResult:
    """Everything a tournament measured.

    Attributes:
        names: participant names in order.
        win_rate: ``(n, n)`` fraction of duels ``i`` won against ``j`` (diagonal 1/2).
        ci_low: lower ends of the 95% Wilson intervals.
        ci_high: upper ends.
        duels: ``(n, n)`` number of duels played per pair.
        nash: maximum-entropy Nash mixture of the meta-game.
        nash_score: Nash-averaged score ``(A p)_i``.
        elo: Bradley-Terry ratings on the Elo scale.
        intransitive: whether the majority relation (beyond the CI) has a cycle.
        exploitability: exact ``Expl_beta`` per participant (``None`` when not a known policy).
        env_id: the environment id.
        seed: the tournament seed.
        matches: the match results.
        exact_win_rate: ``(n, n)`` exact ``P(pi_i > pi_j)`` when every participant's policy is
            known on a matrix game (then Nash averaging uses it instead of the duel estimates).
    """

    names: list[str]
    win_rate: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    duels: np.ndarray
    nash: np.ndarray
    nash_score: np.ndarray
    elo: np.ndarray
    intransitive: bool
    exploitability: list[float | None]
    env_id: str
    seed: int
    matches: list[MatchResult] = field(default_factory=list)
    exact_win_rate: np.ndarray | None = None

    def to_markdown(self) -> str:
        """A ranking table and the win-rate matrix, as markdown."""
        order = np.argsort(-self.nash_score - 1e-9 * self.elo)
        lines = [
            "| rank | participant | Nash mass | Nash-averaged score | Elo (BT) | exploitability |",
            "| ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        for r, i in enumerate(order, 1):
            ex = self.exploitability[i]
            if ex is not None and -1e-12 < ex < 0.0:  # Expl >= 0: rounding below zero reads as 0
                ex = 0.0
            lines.append(
                f"| {r} | {self.names[i]} | {self.nash[i]:.3f} | {self.nash_score[i]:+.4f} | "
                f"{self.elo[i]:.0f} | {'-' if ex is None else f'{ex:.2e}'} |"
            )
        lines.append("")
        lines.append(
            "Nash averaging on the "
            + (
                "exact meta-game (every policy is known)."
                if self.exact_win_rate is not None
                else "duel estimates."
            )
            + " "
            + NASH_AVERAGING_NOTE
        )
        if self.intransitive:
            lines.append("")
            lines.append(
                "Warning: the meta-game is intransitive (a preference cycle, exact or beyond the "
                "95% intervals); Elo ratings are misleading, use the Nash-averaged scores."
            )
        lines += ["", "Win rate of row vs column (95% CI):", ""]
        lines.append("| | " + " | ".join(self.names) + " |")
        lines.append("| --- |" + " ---: |" * len(self.names))
        for i, name in enumerate(self.names):
            cells = []
            for j in range(len(self.names)):
                if i == j:
                    cells.append("-")
                else:
                    cells.append(
                        f"{self.win_rate[i, j]:.3f} [{self.ci_low[i, j]:.3f}, {self.ci_high[i, j]:.3f}]"
                    )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the result."""
        return {
            "env_id": self.env_id,
            "seed": self.seed,
            "names": self.names,
            "win_rate": self.win_rate.tolist(),
            "ci_low": self.ci_low.tolist(),
            "ci_high": self.ci_high.tolist(),
            "duels": self.duels.tolist(),
            "nash": self.nash.tolist(),
            "nash_score": self.nash_score.tolist(),
            "elo": self.elo.tolist(),
            "intransitive": self.intransitive,
            "exploitability": self.exploitability,
            "exact_win_rate": None if self.exact_win_rate is None else self.exact_win_rate.tolist(),
        }

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, str]:
        """Write ``tournament.md``, ``win_rates.csv``, ``tournament.json`` and ``heatmap.png``."""
        out = os.fspath(out_dir)
        os.makedirs(out, exist_ok=True)
        paths = {
            "markdown": os.path.join(out, "tournament.md"),
            "csv": os.path.join(out, "win_rates.csv"),
            "json": os.path.join(out, "tournament.json"),
            "heatmap": os.path.join(out, "heatmap.png"),
        }
        atomic_write_text(paths["markdown"], self.to_markdown() + "\n")
        atomic_write_text(paths["json"], json.dumps(self.to_json(), indent=2) + "\n")
        rows = [["row", "column", "win_rate", "ci_low", "ci_high", "duels"]]
        n = len(self.names)
        for i in range(n):
            for j in range(n):
                if i != j:
                    rows.append(
                        [
                            self.names[i],
                            self.names[j],
                            f"{self.win_rate[i, j]:.6f}",
                            f"{self.ci_low[i, j]:.6f}",
                            f"{self.ci_high[i, j]:.6f}",
                            str(int(self.duels[i, j])),
                        ]
                    )
        with atomic_open(paths["csv"], "w", newline="") as f:
            csv.writer(f).writerows(rows)
        self.plot_heatmap(paths["heatmap"])
        return paths

    def plot_heatmap(self, path: str) -> None:
        """Save the win-rate matrix as an annotated heatmap PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(self.names)
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n, 1.0 + 0.8 * n))
        im = ax.imshow(self.win_rate, cmap="RdBu", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(n), self.names, rotation=45, ha="right")
        ax.set_yticks(range(n), self.names)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{self.win_rate[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.set_title(f"win rate of row vs column ({self.env_id})")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)
