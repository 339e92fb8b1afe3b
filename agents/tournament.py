"""Agent-vs-agent tournaments: round robin, win rates with confidence intervals, Nash averaging.

A tournament plays every pair of participants for ``num_duels`` duels in a PettingZoo preference
environment (seats alternate), and reports

* the win-rate matrix ``M[i, j]`` (fraction of duels ``i`` won against ``j``; ``M[i, i] = 1/2``) with
  95% Wilson confidence intervals;
* **Nash averaging** (Balduzzi et al., "Re-evaluating Evaluation", NeurIPS 2018): the
  maximum-entropy Nash equilibrium ``p`` of the antisymmetric meta-game ``A = M - 1/2`` and each
  participant's Nash-averaged score ``(A p)_i`` (0 for participants in the support, negative for
  the others). Unlike Elo, it is invariant to adding copies of a participant and is meaningful when
  strength is not transitive;
* Bradley-Terry / Elo ratings fitted to the duel counts, with a warning (and ``intransitive=True``)
  when the meta-game has a strict preference cycle, where any rating is misleading;
* the exact exploitability ``Expl_beta`` of every participant whose policy is known (matrix games).

Participants are zoo agents (anything with ``act(observation, deterministic=False)``), paths of saved
agents (:func:`agents.load`), the strings ``"pi_ref"`` and ``"uniform"`` (matrix games), a
probability vector, a Stable-Baselines3 model (anything with ``predict(obs, deterministic=...)``) or
a plain callable ``observation -> action``.

Every match is a pure function of a picklable :class:`MatchSpec` whose seed is derived from the
tournament seed and the pair, so results are identical whether matches run in this process, in any
order, resumed after an interruption, or on a Ray cluster (``use_ray=True``).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from agents.checkpoint import load_agent
from nlhf_envs.atomic import atomic_open, atomic_write_text
from nlhf_envs.errors import ConfigError, EnvironmentSetupError
from nlhf_envs.game import PreferenceGame
from nlhf_envs.players import TablePlayer, as_player

__all__ = [
    "MatchSpec",
    "MatchResult",
    "TournamentResult",
    "Participant",
    "IntransitivityWarning",
    "as_participant",
    "play_match",
    "run",
    "nash_averaging",
    "bradley_terry_ratings",
    "wilson_interval",
    "has_cycle",
    "participant_fingerprint",
    "game_identity",
    "check_same_game",
    "repair_match_log",
    "validate",
]


class IntransitivityWarning(UserWarning):
    """The meta-game has a preference cycle: Elo/Bradley-Terry ratings are misleading."""


# ---------------------------------------------------------------------------------- participants
@dataclass
class Participant:
    """A tournament entrant: a name and the :class:`~nlhf_envs.players.Player` that plays for it.

    Attributes:
        name: the label in tables.
        player: who plays the seat (made by :func:`as_participant` from whatever the user passed).
        source: the object the player was made from (agent, model, callable), or ``None`` for a fixed
            policy; its content identifies the participant (:func:`participant_fingerprint`) and the
            game it was trained on (:func:`check_same_game`).
    """

    name: str
    player: Any
    source: Any = None

    @property
    def fixed_policy(self) -> np.ndarray | None:
        """The ``(C, K)`` table of a fixed policy (``pi_ref``, ``uniform``, a vector), else ``None``."""
        return self.player.policy_table() if isinstance(self.player, TablePlayer) else None

    def exact_policy(self, game: PreferenceGame | None) -> np.ndarray | None:
        """The ``(C, K)`` policy if it is known exactly (fixed policies, tabular agents)."""
        if game is None:
            return None
        table = getattr(self.player, "policy_table", None)
        pi = table() if callable(table) else None
        if pi is None:
            return None
        pi = np.asarray(pi, dtype=np.float64)
        if pi.shape in ((game.num_actions,), (1, game.num_actions), game.shape):
            return np.array(game.as_policy(pi.reshape(game.shape)))
        return None

    def act(self, observation: Any, rng: np.random.Generator) -> Any:
        """One action for ``observation``; the match's generator drives every random choice."""
        return self.player.act(observation, rng)


def as_participant(name: str, spec: Any, game: PreferenceGame | None = None) -> Participant:
    """Normalise a participant spec (see the module docstring) through
    :func:`nlhf_envs.players.as_player`; ``"pi_ref"`` and ``"uniform"`` are the matrix game's fixed
    policies.

    Raises:
        ConfigError: (a ``ValueError``) for a string that is neither ``"pi_ref"``, ``"uniform"`` nor a
            saved agent, a fixed policy of the wrong shape, or an object that cannot act.
    """
    if isinstance(spec, Participant):
        return spec
    if isinstance(spec, str):
        if spec in ("pi_ref", "uniform"):
            if game is None:
                raise ConfigError(
                    f"participant {name!r}: {spec!r} needs a matrix game (for other games pass an "
                    "agent or a callable)"
                )
            C, K = game.shape
            pi = np.array(game.pi_ref) if spec == "pi_ref" else np.full((C, K), 1.0 / K)
            return Participant(name, TablePlayer(pi))
        if os.path.exists(spec):
            source = _detached(load_agent(spec))
            return Participant(name, as_player(source), source)
        raise ConfigError(
            f"participant {name!r}: {spec!r} is not 'pi_ref', 'uniform' or an existing checkpoint"
        )
    if isinstance(spec, (np.ndarray, list, tuple)):
        if game is None:
            raise ConfigError(f"participant {name!r}: a probability vector needs a matrix game")
        pi = np.asarray(spec, dtype=np.float64)
        try:
            pi = np.array(game.as_policy(pi))
        except ValueError as exc:
            raise ConfigError(f"participant {name!r}: {exc}") from None
        if pi.min() < 0 or np.abs(pi.sum(axis=1) - 1).max() > 1e-6:
            raise ConfigError(f"participant {name!r}: the policy must be a probability vector")
        return Participant(name, TablePlayer(pi))
    if hasattr(spec, "act") or hasattr(spec, "predict") or callable(spec):
        source = _detached(spec)
        try:
            player = as_player(source)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"participant {name!r}: {exc}") from None
        return Participant(name, player, source)
    raise ConfigError(
        f"participant {name!r}: cannot play a {type(spec).__name__} (expected an agent, a saved "
        "agent's path, 'pi_ref', 'uniform', a probability vector, an SB3 model or a callable)"
    )


def _detached(obj: Any) -> Any:
    """A shallow copy without a TensorBoard logger (which holds locks and cannot be pickled)."""
    if getattr(obj, "logger", None) is not None:
        obj = copy.copy(obj)
        obj.logger = None
    return obj


def _update_hash(h: Any, value: Any) -> bool:
    """Feed one attribute value into ``h``; ``False`` when its content cannot be hashed."""
    if isinstance(value, np.ndarray):
        h.update(repr((value.dtype.str, value.shape)).encode())
        h.update(np.ascontiguousarray(value).tobytes())
        return True
    if isinstance(value, (bool, int, float, str, type(None))):
        h.update(repr(value).encode())
        return True
    if isinstance(value, np.random.Generator):
        h.update(json.dumps(value.bit_generator.state, sort_keys=True, default=str).encode())
        return True
    if isinstance(value, PreferenceGame):
        h.update(value.fingerprint().encode())
        return True
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        h.update(json.dumps(asdict(value), sort_keys=True, default=repr).encode())
        return True
    torch = __import__("sys").modules.get("torch")
    if torch is not None:
        if isinstance(value, torch.nn.Module):
            for key, tensor in value.state_dict().items():
                h.update(key.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            return True
        if isinstance(value, torch.Generator):
            h.update(value.get_state().numpy().tobytes())
            return True
    return False


def participant_fingerprint(participant: Participant) -> str | None:
    """A content hash of what a participant plays, or ``None`` when it cannot be known.

    Fixed policies hash their probabilities; agents and models hash every array, number, string,
    config dataclass, generator state and torch module they hold (the learned policy, the acting
    generator, the counters); a plain function hashes its code and constants. A tournament reuses
    a logged match only when both participants' fingerprints are unchanged, so a participant that
    was retrained (or replaced by another run under the same name) is replayed. ``None`` (an object
    with no hashable content) means its matches are always replayed.
    """
    h = hashlib.sha256()
    if participant.fixed_policy is not None:
        h.update(b"fixed-policy")
        _update_hash(h, np.asarray(participant.fixed_policy, dtype=np.float64))
        return h.hexdigest()[:16]
    obj = participant.source
    h.update(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
    code = getattr(obj, "__code__", None)
    if code is not None:  # a plain function or lambda
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode())
        h.update(repr(getattr(obj, "__defaults__", None)).encode())
        return h.hexdigest()[:16]
    found = False
    for key, value in sorted(getattr(obj, "__dict__", {}).items()):
        if key in ("logger", "history"):
            continue  # not what the participant plays
        h.update(key.encode())
        found = _update_hash(h, value) or found
    return h.hexdigest()[:16] if found else None


def game_identity(obj: Any) -> tuple[str, str] | None:
    """``(fingerprint, description)`` of the game an agent or environment plays, if known.

    A matrix game is identified by :meth:`PreferenceGame.fingerprint` (shape, ``P``, ``pi_ref``,
    ``rho``, ``beta``); a text environment by its class, vocabulary, answer length and, when it
    provides one, its own ``fingerprint()``.
    """
    game = getattr(obj, "game", None)
    if game is None:
        game = _matrix_game_of(obj) if hasattr(obj, "possible_agents") else None
    if isinstance(game, PreferenceGame):
        return game.fingerprint(), game.describe()
    env = obj if hasattr(obj, "possible_agents") else getattr(obj, "env", None)
    env = getattr(env, "unwrapped", env)
    if env is None or not hasattr(env, "possible_agents"):
        return None
    own = getattr(env, "fingerprint", None)
    space = env.action_space(env.possible_agents[0])
    parts = (
        type(env).__qualname__,
        int(getattr(space, "n", 0)),
        getattr(env, "max_new_tokens", None),
        own() if callable(own) else None,
    )
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
    return (
        digest,
        f"{parts[0]} (vocabulary {parts[1]}, max_new_tokens={parts[2]}, fingerprint {digest})",
    )


def check_same_game(players: Sequence[Participant], env: Any, env_id: str) -> None:
    """Refuse participants trained on another game than the one ``env`` plays.

    Raises:
        EnvironmentSetupError: naming the participant, the game it was trained on and the game of
            ``env_id``.
    """
    played = game_identity(env)
    for p in players:
        own = game_identity(p.source) if p.source is not None else None
        if own is None or played is None:
            continue
        if own[0] != played[0]:
            raise EnvironmentSetupError(
                f"participant {p.name!r} was trained on {own[1]}, but {env_id} plays {played[1]}; "
                "every participant must share the tournament's game"
            )


# ---------------------------------------------------------------------------------- matches
@dataclass
class MatchSpec:
    """Everything one match needs; picklable, so it can run in another process or on Ray.

    Attributes:
        i: index of the first participant.
        j: index of the second participant.
        first: the first participant (``player_0`` in even duels).
        second: the second participant.
        env_id: the PettingZoo id of the environment.
        env_kwargs: its keyword arguments (a ``PreferenceGame`` may be passed as ``game``).
        num_duels: number of duels (one episode each).
        seed: the match's seed.
    """

    i: int
    j: int
    first: Participant
    second: Participant
    env_id: str
    env_kwargs: dict[str, Any]
    num_duels: int
    seed: int


@dataclass
class MatchResult:
    """The outcome of one match, from the first participant's point of view."""

    i: int
    j: int
    wins: float
    duels: int
    mean_prob: float
    seed: int

    @property
    def win_rate(self) -> float:
        """Fraction of duels won by the first participant."""
        return self.wins / self.duels


def _matrix_game_of(env: Any) -> PreferenceGame | None:
    game = getattr(getattr(env, "unwrapped", env), "game", None)
    return game if isinstance(game, PreferenceGame) else None


def _sample_rows(pi: np.ndarray, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per context from the rows of ``pi`` (inverse CDF, vectorised)."""
    cdf = np.cumsum(pi, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random(contexts.shape[0])
    return (u[:, None] > cdf[contexts]).sum(axis=1)


def play_match(spec: MatchSpec) -> MatchResult:
    """Play ``spec.num_duels`` duels between two participants; seats alternate every duel.

    When both participants have known policies on a one-round matrix game the duels are drawn in
    one vectorised pass (contexts, actions and Bernoulli outcomes, exactly as the environment draws
    them); otherwise every duel is one episode of the PettingZoo environment. Participants are
    deep-copied first, so a match never changes the caller's objects and its result depends only on
    the spec.
    """
    import pettingzoo

    import nlhf_envs  # noqa: F401  (registers the ids)

    rng = np.random.default_rng(spec.seed)
    first, second = copy.deepcopy(spec.first), copy.deepcopy(spec.second)
    _seed_torch(spec.seed)
    env = pettingzoo.make("parallel", spec.env_id, **spec.env_kwargs)
    game = _matrix_game_of(env)
    n = spec.num_duels
    for seat in (first, second):
        bind = getattr(seat.player, "bind", None)
        if bind is not None:
            bind(env.action_space(env.possible_agents[0]))
    pa, pb = first.exact_policy(game), second.exact_policy(game)
    if (
        game is not None
        and pa is not None
        and pb is not None
        and getattr(env, "num_rounds", 1) == 1
    ):
        x = game.sample_contexts(n, rng)
        a = _sample_rows(pa, x, rng)
        b = _sample_rows(pb, x, rng)
        swap = np.arange(n) % 2 == 1  # odd duels: the first participant sits as player_1
        y0, y1 = np.where(swap, b, a), np.where(swap, a, b)
        o = game.sample(y0, y1, rng, contexts=x if game.num_contexts > 1 else None)
        wins = np.where(swap, 1 - o.astype(np.int64), o).sum()
        p = game.P[x, y0, y1]
        prob = np.where(swap, 1 - p, p).mean()
        return MatchResult(spec.i, spec.j, float(wins), n, float(prob), spec.seed)

    wins = 0.0
    prob_sum = 0.0
    prob_count = 0
    for d in range(n):
        seats = (first, second) if d % 2 == 0 else (second, first)
        me = "player_0" if d % 2 == 0 else "player_1"
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        score = 0.0
        rounds = 0
        last_prob = None
        while env.agents:
            actions = {
                agent: seats[k].act(obs[agent], rng)
                for k, agent in enumerate(("player_0", "player_1"))
                if agent in env.agents
            }
            obs, rewards, _, _, infos = env.step(actions)
            score += _win_value(float(rewards.get(me, 0.0)), getattr(env, "reward_mode", "outcome"))
            rounds += 1
            last_prob = infos.get(me, {}).get("prob", last_prob)
        # a multi-round matrix episode scores the fraction of rounds won; a text duel pays once
        wins += score / rounds if game is not None else score
        if last_prob is not None:
            prob_sum += float(last_prob)
            prob_count += 1
    mean_prob = prob_sum / prob_count if prob_count else float("nan")
    return MatchResult(spec.i, spec.j, wins, n, mean_prob, spec.seed)


def _win_value(reward: float, mode: str) -> float:
    """Map a reward back to the outcome scale [0, 1] (wins)."""
    return reward + 0.5 if mode == "centered" else reward


def _seed_torch(seed: int) -> None:
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed % (2**63))


# ---------------------------------------------------------------------------------- statistics
def wilson_interval(wins: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion ``wins / n``."""
    if n <= 0:
        return (0.0, 1.0)
    p = wins / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def has_cycle(M: np.ndarray, margin: float = 0.0) -> bool:
    """Whether the majority relation ``M[i, j] > 1/2 + margin`` contains a directed cycle."""
    beats = np.asarray(M) > 0.5 + margin
    n = beats.shape[0]
    state = np.zeros(n, dtype=np.int8)  # 0 new, 1 on stack, 2 done

    def visit(u: int) -> bool:
        state[u] = 1
        for v in np.flatnonzero(beats[u]):
            if state[v] == 1 or (state[v] == 0 and visit(int(v))):
                return True
        state[u] = 2
        return False

    return any(state[u] == 0 and visit(u) for u in range(n))


def nash_averaging(M: np.ndarray, *, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-entropy Nash equilibrium of the symmetric meta-game and Nash-averaged scores.

    Balduzzi et al. (2018), §3: with the antisymmetric payoff ``A = M - 1/2`` (``M`` a win-rate
    matrix, ``M + M^T = 1``), a mixture ``p`` is a Nash equilibrium iff ``(A p)_i <= 0`` for every
    ``i``; among them the maximum-entropy one is unique. Its scores ``(A p)_i`` rate every
    participant against the Nash mixture of the population.

    Solved as the convex program ``max H(p)`` s.t. ``A p <= 0``, ``p`` in the simplex (SLSQP from a
    linear-programming solution), then support entries below ``tol`` are zeroed.

    Args:
        M: ``(n, n)`` win-rate matrix; it is antisymmetrised as ``(M - M^T) / 2``.
        tol: entries of ``p`` below this are set to zero.

    Returns:
        ``(p, scores)``, both of shape ``(n,)``.

    Raises:
        ValueError: if ``M`` is not a finite square matrix.
    """
    from scipy.optimize import linprog, minimize

    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise ValueError(f"M must be a non-empty square matrix; got shape {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError("M must be finite")
    A = 0.5 * (M - M.T)
    n = A.shape[0]
    if n == 1:
        return np.ones(1), np.zeros(1)
    # one Nash equilibrium by LP (min v s.t. A p <= v) to start from; its value is 0
    c = np.zeros(n + 1)
    c[-1] = 1.0
    res = linprog(
        c,
        A_ub=np.hstack([A, -np.ones((n, 1))]),
        b_ub=np.zeros(n),
        A_eq=np.hstack([np.ones((1, n)), np.zeros((1, 1))]),
        b_eq=[1.0],
        bounds=[(0, None)] * n + [(None, None)],
    )
    p0 = np.clip(res.x[:n], 0, None) if res.status == 0 else np.full(n, 1.0 / n)
    p0 = 0.999 * p0 / p0.sum() + 0.001 / n

    def neg_entropy(p: np.ndarray) -> float:
        q = np.clip(p, 1e-300, None)
        return float(np.sum(q * np.log(q)))

    def grad(p: np.ndarray) -> np.ndarray:
        return np.log(np.clip(p, 1e-300, None)) + 1.0

    out = minimize(
        neg_entropy,
        p0,
        jac=grad,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * n,
        constraints=[
            {"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones(n)},
            {"type": "ineq", "fun": lambda p: -(A @ p), "jac": lambda p: -A},
        ],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    p = np.clip(out.x, 0.0, None)
    p[p < tol] = 0.0
    p /= p.sum()
    return p, A @ p


def bradley_terry_ratings(
    wins: np.ndarray, games: np.ndarray, *, iters: int = 2000, prior: float = 0.5
) -> np.ndarray:
    """Elo-scale Bradley-Terry ratings (mean 1500) fitted by minorisation-maximisation.

    ``wins[i, j]`` duels won by ``i`` against ``j`` out of ``games[i, j]``. A small symmetric prior
    (``prior`` virtual wins each way per pair) keeps ratings finite when someone never loses.
    Elo scale: ``P(i beats j) = 1 / (1 + 10^((R_j - R_i) / 400))``.
    """
    W = np.asarray(wins, dtype=np.float64) + prior * (np.asarray(games) > 0)
    N = np.asarray(games, dtype=np.float64) + 2 * prior * (np.asarray(games) > 0)
    np.fill_diagonal(W, 0.0)
    np.fill_diagonal(N, 0.0)
    n = W.shape[0]
    s = np.ones(n)
    total_wins = W.sum(axis=1)
    for _ in range(iters):
        denom = (N / (s[:, None] + s[None, :])).sum(axis=1)
        new = total_wins / np.maximum(denom, 1e-300)
        new /= np.exp(np.mean(np.log(np.maximum(new, 1e-300))))
        if np.max(np.abs(np.log(np.maximum(new, 1e-300)) - np.log(s))) < 1e-12:
            s = new
            break
        s = new
    return 1500.0 + 400.0 * np.log10(np.maximum(s, 1e-300))


# ---------------------------------------------------------------------------------- tournament
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


def _match_seed(seed: int, i: int, j: int) -> int:
    return int(np.random.SeedSequence([seed, i, j]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _fingerprint(
    env_id: str, env_kwargs: Mapping[str, Any], names: Sequence[str], n: int, seed: int
) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, PreferenceGame):
            return o.fingerprint()
        return repr(o)

    blob = json.dumps(
        [env_id, dict(env_kwargs), list(names), n, seed], default=default, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _prepare(
    participants: Mapping[str, Any] | Sequence[tuple[str, Any]],
    env: str,
    env_kwargs: Mapping[str, Any] | None,
    num_duels: int,
) -> tuple[list[tuple[str, Any]], list[Participant], Any, PreferenceGame | None, dict[str, Any]]:
    """Validate a tournament's arguments and build its participants and a probe environment."""
    import pettingzoo

    import nlhf_envs

    items = list(participants.items()) if isinstance(participants, Mapping) else list(participants)
    names = [str(n) for n, _ in items]
    if len(items) < 2:
        raise ConfigError(f"a tournament needs at least two participants; got {len(items)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"participant names must be unique; got {names}")
    if isinstance(num_duels, bool) or not isinstance(num_duels, (int, np.integer)) or num_duels < 1:
        raise ConfigError(f"num_duels must be a positive integer; got {num_duels!r}")
    if env not in nlhf_envs.registered_ids():
        raise EnvironmentSetupError(
            f"unknown environment id {env!r}; registered: {', '.join(nlhf_envs.registered_ids())}"
        )
    env_kwargs = dict(env_kwargs or {})
    from agents.runs import user_env_kwargs

    with user_env_kwargs(env, env_kwargs):
        probe = pettingzoo.make("parallel", env, **env_kwargs)
    game = _matrix_game_of(probe)
    players = [as_participant(name, spec, game) for name, spec in items]
    check_same_game(players, probe, env)
    return items, players, probe, game, env_kwargs


def validate(
    participants: Mapping[str, Any] | Sequence[tuple[str, Any]],
    env: str = "nlhf/RPS-v0",
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    num_duels: int = 200,
) -> None:
    """Check a tournament's arguments as :func:`run` does, without playing or writing anything.

    Raises:
        ConfigError, EnvironmentSetupError, GameValidationError: as :func:`run`.
    """
    _prepare(participants, env, env_kwargs, num_duels)


def run(
    participants: Mapping[str, Any] | Sequence[tuple[str, Any]],
    env: str = "nlhf/RPS-v0",
    *,
    env_kwargs: Mapping[str, Any] | None = None,
    num_duels: int = 200,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    use_ray: bool = False,
    ray_address: str | None = None,
    on_match: Callable[[MatchResult], None] | None = None,
) -> TournamentResult:
    """Round-robin tournament among ``participants`` on environment ``env``.

    Args:
        participants: ``{name: spec}`` or ``[(name, spec), ...]`` (see :func:`as_participant`).
        env: a registered PettingZoo id (``"nlhf/RPS-v0"``, ``"nlhf/TokenDuel-v0"``, ...).
        env_kwargs: keyword arguments of the environment (e.g. ``game=PreferenceGame(...)``).
        num_duels: duels per pair (seats alternate).
        seed: tournament seed; each match's seed is derived from it and the pair.
        out_dir: if given, finished matches are appended to ``out_dir/matches.jsonl`` as they end
            (an interrupted tournament resumes from there without replaying them) and the
            markdown, CSV, JSON and heatmap outputs are written at the end.
        resume: reuse finished matches found in ``out_dir`` (only those of the same tournament:
            same env, kwargs, names, duels and seed, and only when both participants' content
            (:func:`participant_fingerprint`) is unchanged; a partial last line of the log is
            dropped first, see :func:`repair_match_log`).
        use_ray: distribute the matches over a Ray cluster (:func:`agents.distributed.ray_map`).
        ray_address: the cluster address (``None``: start or reuse a local cluster).
        on_match: called with each :class:`MatchResult` as it finishes (progress bars).

    Returns:
        The :class:`TournamentResult`. Warns :class:`IntransitivityWarning` when the meta-game is
        intransitive.

    Raises:
        ValueError: fewer than two participants, duplicate names, ``num_duels < 1`` or a bad spec.
        EnvironmentSetupError: a participant was trained on another game than ``env`` plays.
    """
    items, players, probe, game, env_kwargs = _prepare(participants, env, env_kwargs, num_duels)
    names = [str(n) for n, _ in items]
    n = len(players)

    fingerprint = _fingerprint(env, env_kwargs, names, int(num_duels), int(seed))
    contents = [participant_fingerprint(p) for p in players]
    done: dict[tuple[int, int], MatchResult] = {}
    log_path = None
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        log_path = os.path.join(os.fspath(out_dir), "matches.jsonl")
        if resume and os.path.exists(log_path):
            repair_match_log(log_path)
            done = _read_match_log(log_path, fingerprint, contents)
        elif os.path.exists(log_path):
            os.remove(log_path)

    specs = [
        MatchSpec(
            i, j, players[i], players[j], env, env_kwargs, int(num_duels), _match_seed(seed, i, j)
        )
        for i in range(n)
        for j in range(i + 1, n)
        if (i, j) not in done
    ]

    def finished(result: MatchResult) -> None:
        done[(result.i, result.j)] = result
        if log_path is not None:
            with open(log_path, "a") as f:
                row = {
                    "fingerprint": fingerprint,
                    "participants": [contents[result.i], contents[result.j]],
                    **asdict(result),
                }
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if on_match is not None:
            on_match(result)

    if use_ray:
        from agents.distributed import ray_map

        # results are logged as their tasks finish, so an interrupted Ray run resumes too
        ray_map(play_match, specs, address=ray_address, on_result=finished)
    else:
        for spec in specs:
            finished(play_match(spec))

    result = _summarise(names, done, n, env, int(seed), players, game)
    if result.intransitive:
        warnings.warn(
            "the tournament's meta-game is intransitive: Elo/Bradley-Terry ratings are "
            "misleading; rank by the Nash-averaged scores",
            IntransitivityWarning,
            stacklevel=2,
        )
    if out_dir is not None:
        result.write(out_dir)
    return result


def repair_match_log(path: str | os.PathLike[str]) -> int:
    """Drop the lines of a match log that are not complete JSON records; returns how many.

    An interrupted write can leave a partial last line (no newline); appending to it would glue
    the next record onto it. The log is rewritten atomically when something is dropped.
    """
    with open(path, "rb") as f:
        raw = f.read()
    keep: list[bytes] = []
    dropped = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
            ok = isinstance(row, dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            ok = False
        if ok:
            keep.append(line)
        else:
            dropped += 1
    if dropped or (raw and not raw.endswith(b"\n")):
        with atomic_open(path, "wb") as f:
            f.write(b"".join(line + b"\n" for line in keep))
    return dropped


def _read_match_log(
    path: str, fingerprint: str, contents: Sequence[str | None]
) -> dict[tuple[int, int], MatchResult]:
    """Finished matches of this tournament whose two participants are unchanged."""
    done = {}
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # cannot happen after repair_match_log; replay to be safe
            if not isinstance(row, dict) or row.pop("fingerprint", None) != fingerprint:
                continue
            used = row.pop("participants", None)
            try:
                res = MatchResult(**row)
            except TypeError:
                continue
            if not (0 <= res.i < res.j < len(contents)):
                continue
            now = [contents[res.i], contents[res.j]]
            if None in now or used != now:
                continue  # a participant changed (or cannot be fingerprinted): replay
            done[(res.i, res.j)] = res
    return done


def _summarise(
    names: list[str],
    done: Mapping[tuple[int, int], MatchResult],
    n: int,
    env_id: str,
    seed: int,
    players: list[Participant],
    game: PreferenceGame | None,
) -> TournamentResult:
    W = np.zeros((n, n))
    N = np.zeros((n, n), dtype=np.int64)
    for (i, j), r in done.items():
        W[i, j] += r.wins
        W[j, i] += r.duels - r.wins
        N[i, j] = N[j, i] = r.duels
    with np.errstate(invalid="ignore", divide="ignore"):
        M = np.where(N > 0, W / np.maximum(N, 1), 0.5)
    np.fill_diagonal(M, 0.5)
    lo = np.full((n, n), 0.5)
    hi = np.full((n, n), 0.5)
    for i in range(n):
        for j in range(n):
            if i != j and N[i, j] > 0:
                lo[i, j], hi[i, j] = wilson_interval(W[i, j], int(N[i, j]))
    policies = [p.exact_policy(game) for p in players]
    exact_M = None
    if game is not None and all(pi is not None for pi in policies):
        # every policy is known: the meta-game is computed exactly, free of duel noise
        stack = np.stack(policies)  # (n, C, K)
        exact_M = np.einsum("x,ixk,xkl,jxl->ij", game.rho, stack, game.P, stack)
    nash, score = nash_averaging(exact_M if exact_M is not None else M)
    if exact_M is not None:
        intransitive = has_cycle(exact_M, margin=1e-9)
    else:  # a cycle among pairs whose preference is significant at 95%
        intransitive = has_cycle(np.where(lo > 0.5, 1.0, 0.0), margin=0.0)
    elo = bradley_terry_ratings(W, N)
    expl: list[float | None] = []
    for pi in policies:
        if pi is None or game is None:
            expl.append(None)
        else:
            from nlhf_envs.solvers import exploitability

            expl.append(float(exploitability(game, pi)))
    matches = [done[k] for k in sorted(done)]
    return TournamentResult(
        names, M, lo, hi, N, nash, score, elo, intransitive, expl, env_id, seed, matches, exact_M
    )
