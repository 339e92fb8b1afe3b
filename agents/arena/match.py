"""One match between two participants: a pure function of a picklable :class:`MatchSpec`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.arena.participants import Participant, matrix_game_of

#: the most duels per pair: a vectorised match holds about a dozen 8-byte arrays of this length
#: (~1 GB at the limit), and the 95% interval of a win rate is already +-0.0003 there
MAX_DUELS = 10_000_000


# ---------------------------------------------------------------------------------- matches
@dataclass
class MatchSpec:
    """Everything one match needs; picklable, so it can run in another process or on Ray.

    Attributes:
        i: index of the first participant.
        j: index of the second participant.
        first: the first participant (``player_0`` in even duels); a tournament seats first the
            participant whose name sorts first (:func:`agents.arena.tournament.canonical_pair`).
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
    """The outcome of one match, from the first participant's point of view.

    ``mean_prob`` is the mean of the paid preference probability (the game's ``P``, or the token
    duel's judge); ``mean_true_prob`` the mean ground-truth probability where the env reports one
    (the token duel's ``true_prob``), else NaN.
    """

    i: int
    j: int
    wins: float
    duels: int
    mean_prob: float
    seed: int
    mean_true_prob: float = float("nan")

    @property
    def win_rate(self) -> float:
        """Fraction of duels won by the first participant."""
        return self.wins / self.duels


def _sample_rows(pi: np.ndarray, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per context from the rows of ``pi`` (inverse CDF, vectorised)."""
    cdf = np.cumsum(pi, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random(contexts.shape[0])
    return (u[:, None] > cdf[contexts]).sum(axis=1)


def play_match(spec: MatchSpec, env: Any = None) -> MatchResult:
    """Play ``spec.num_duels`` duels between two participants; seats alternate every duel.

    When both participants have known policies on a one-round matrix game the duels are drawn in
    one vectorised pass (contexts, actions and Bernoulli outcomes, exactly as the environment draws
    them); on ``nlhf/HFTokenDuel-v0``, when both sample from a known next-token distribution (causal
    LMs, ``pi_ref``, ``uniform``, token agents), the duels are played in batches
    (:func:`agents.arena.batched.play_batched`); otherwise every duel is one episode of the
    PettingZoo environment. Participants are deep-copied for the episode loop, so a match never
    changes the caller's objects and its result depends only on the spec.

    Args:
        spec: the match.
        env: the environment ``spec.env_id`` with ``spec.env_kwargs`` already built (a
            tournament builds it once and plays every match in it: every duel resets it with its
            own seed); ``None`` builds it here.
    """
    import pettingzoo

    import nlhf_envs  # noqa: F401  (registers the ids)

    rng = np.random.default_rng(spec.seed)
    _seed_torch(spec.seed)
    if env is None:
        env = pettingzoo.make("parallel", spec.env_id, **spec.env_kwargs)
    base = getattr(env, "unwrapped", env)
    if getattr(base, "metadata", {}).get("name") == "nlhf/HFTokenDuel-v0":
        from agents.arena.batched import play_batched

        batched = play_batched(spec, base, spec.first, spec.second)  # read-only: no copies
        if batched is not None:
            rewards, probs = batched
            wins, prob_sum = 0.0, 0.0
            for reward, p in zip(rewards, probs, strict=True):  # summed in duel order
                wins += _win_value(reward, base.reward_mode)
                prob_sum += p
            return MatchResult(spec.i, spec.j, wins, spec.num_duels, prob_sum / spec.num_duels,
                               spec.seed)  # fmt: skip
    first, second = copy.deepcopy(spec.first), copy.deepcopy(spec.second)
    game = matrix_game_of(env)
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
    prob_sum = true_sum = 0.0
    prob_count = true_count = 0
    for d in range(n):
        seats = (first, second) if d % 2 == 0 else (second, first)
        me = "player_0" if d % 2 == 0 else "player_1"
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        score = 0.0
        rounds = 0
        last_prob = last_true = None
        mode = getattr(env, "reward_mode", "outcome")
        while env.agents:
            actions = {
                agent: seats[k].act(obs[agent], rng)
                for k, agent in enumerate(("player_0", "player_1"))
                if agent in env.agents
            }
            obs, rewards, _, _, infos = env.step(actions)
            last = _win_value(float(rewards.get(me, 0.0)), mode)
            score += last
            rounds += 1
            last_prob = infos.get(me, {}).get("prob", last_prob)
            last_true = infos.get(me, {}).get("true_prob", last_true)
        # a multi-round matrix episode scores the fraction of rounds won; a text duel pays once,
        # at its last step (its earlier steps pay nothing, which is not a draw in "centered" mode)
        wins += score / rounds if game is not None else last
        if last_prob is not None:
            prob_sum += float(last_prob)
            prob_count += 1
        if last_true is not None:
            true_sum += float(last_true)
            true_count += 1
    mean_prob = prob_sum / prob_count if prob_count else float("nan")
    mean_true = true_sum / true_count if true_count else float("nan")
    return MatchResult(spec.i, spec.j, wins, n, mean_prob, spec.seed, mean_true)


def _win_value(reward: float, mode: str) -> float:
    """Map a reward back to the outcome scale [0, 1] (wins)."""
    return reward + 0.5 if mode == "centered" else reward


def _seed_torch(seed: int) -> None:
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed % (2**63))
