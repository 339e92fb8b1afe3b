"""``nlhf/MultiTokenDuel-v0``: n players write answers to one prompt, token by token; every pair is judged.

Description:
    The n-player form of the token duel (:mod:`nlhf_envs.text.env`), the game of Multiplayer Nash
    Preference Optimization (Wu et al. 2025) played with words. ``reset`` draws one prompt ``x``; at
    every step each of the ``n >= 2`` players emits one token of its own answer, seeing neither
    answer of the others. When every answer has ended, each pair of seats ``i < j`` (in the fixed
    lexicographic order ``(0, 1), (0, 2), ..., (n - 2, n - 1)``) is judged once: the paying judge
    gives ``p_ij = P(y_i > y_j | x)`` and one preference query ``o_ij = 1[u_ij < p_ij]`` decides it,
    ``n (n - 1) / 2`` queries per episode. The rules and the payment are those of the two-player
    duel, applied by the same functions (:func:`~nlhf_envs.text.engine.apply_tokens`,
    :func:`~nlhf_envs.text.engine.settle`, all pairs in one batched judge pass); the world, judge,
    spaces, argument checks and action checks are :class:`~nlhf_envs.text.env.TokenDuelEnv`'s, which
    this env extends to ``n`` seats. With ``n = 2`` it *is* the two-player duel: the same seeded
    prompts, observations, rewards and judge probabilities.

Agents:
    ``player_0``, ..., ``player_{n-1}``; all stay in ``agents`` until every answer has ended.

Action Space:
    ``Discrete(V)`` for every player: a token id, as in the two-player duel (``<eos>`` ends the
    answer; a finished player's actions are ignored and may be omitted; an unfinished player must
    act). Every action is checked before any is applied.

Observation Space:
    ``Box(0, high, (2, L), int64)``, the two-player duel's: the prompt as the models read it followed
    by the player's own answer so far (row 0), and its mask (row 1). The others' answers are not
    observed.

Rewards:
    Zero until every answer has ended. Then pair ``i < j`` has its two-player rewards
    ``(r_ij, r_ji)`` of :mod:`nlhf_envs.rewards` from ``p_ij`` and ``o_ij`` (``o_ij, 1 - o_ij`` for
    ``reward_mode="outcome"``, ``o_ij - 1/2, 1/2 - o_ij`` for ``"centered"``, ``p_ij, 1 - p_ij`` for
    ``"probability"``), with ``u_ij`` drawn from the env's ``np_random`` in pair order, and player
    ``i`` receives its mean over the others,

        r_i = 1/(n - 1) sum_{j != i} r_ij,

    so that ``E[r_i] = 1/(n - 1) sum_{j != i} P(y_i > y_j | x)`` in the outcome mode (the game is
    constant-sum: total ``n/2``, or 0 centred). At the end ``infos[agent]`` holds, from that agent's
    side and averaged over the others as its reward: ``prob`` (the paying judge's), ``judge_prob``
    (the learned judge's), ``true_prob`` (the ground truth's) and ``outcome`` (the share of its
    queries it won); and, for every agent, ``prompt`` and ``answers`` (the decoded answers in seat
    order). With ``n = 2`` also ``answer_0`` and ``answer_1``, the two-player duel's keys.

Episode End:
    Termination (for every player at once) when every answer has ended, by ``<eos>`` or by reaching
    ``max_new_tokens`` tokens. There is no truncation.

Environment arguments:
    ``num_players`` (3): ``n >= 2``. Every other argument is the two-player duel's
    (:class:`~nlhf_envs.text.env.TokenDuelEnv`): ``judge``, ``world``, ``judge_version``, ``beta``,
    ``max_new_tokens``, ``max_cycles``, ``reward_mode``, ``payer``, ``prompt_split``,
    ``render_mode`` (``"ansi"``, ``"human"``, ``"rgb_array"``); ``reset(options={"prompt": text})``
    fixes the prompt.

Exact Solution:
    On an enumerable world (:mod:`nlhf_envs.text.exact`) the game is the n-player preference game of
    :mod:`nlhf_envs.multiplayer` over the enumerated answers: every seat playing ``pi*_beta`` of
    :func:`~nlhf_envs.text.exact.exact_game` is its regularised equilibrium, and
    :func:`nlhf_envs.text.population.population_duality_gap` measures a population's distance from it.

References:
    Wu et al., "Multiplayer Nash Preference Optimization", arXiv 2509.23102, 2025; Munos et al.,
    "Nash Learning from Human Feedback", ICML 2024 (arXiv 2312.00886).

Registered ids:
    ``nlhf/MultiTokenDuel-v0`` (default world, the latest judge, as ``nlhf/TokenDuel-v1``),
    ``nlhf/MultiTinyTokenDuel-v0`` (world ``tiny``, as ``nlhf/TinyTokenDuel-v0``); both take
    ``num_players`` (default 3) at ``make``.

Version History:
    v0: initial release.
"""

from __future__ import annotations

from typing import Any

import torch
from pettingzoo import AECEnv
from pettingzoo.utils.conversions import parallel_to_aec

from nlhf_envs.game import check_int
from nlhf_envs.multiplayer import seat_names
from nlhf_envs.text.engine import AnswerState, apply_tokens, settle
from nlhf_envs.text.env import TokenDuelEnv
from nlhf_envs.text.judging import PairwiseJudge

__all__ = [
    "MultiTokenDuelEnv",
    "parallel_env",
    "raw_env",
    "env",
    "multi_env_id_of",
    "resolve_multi_id",
]


def multi_env_id_of(world: str, judge_version: str = "latest") -> str | None:
    """The registered id of the n-player token duel on ``world`` with ``judge_version`` (or ``None``)."""
    from nlhf_envs.env_ids import MULTIPLAYER_TEXT_ENV_IDS

    for env_id, kwargs in MULTIPLAYER_TEXT_ENV_IDS.items():
        if kwargs.get("world") == world and kwargs.get("judge_version", "latest") == judge_version:
            return env_id
    return None


def resolve_multi_id(env_or_id: Any) -> Any:
    """The env of a registered n-player token-duel id (built with its default arguments), else
    ``env_or_id`` unchanged: what the exact and estimated metrics read a game from."""
    from nlhf_envs.env_ids import MULTIPLAYER_TEXT_ENV_IDS

    if isinstance(env_or_id, str) and env_or_id in MULTIPLAYER_TEXT_ENV_IDS:
        return MultiTokenDuelEnv(**MULTIPLAYER_TEXT_ENV_IDS[env_or_id])
    return env_or_id


def _stack(states: list[AnswerState]) -> AnswerState:
    """One batch of the given (single-row) answer states, in order."""
    return AnswerState(
        torch.cat([s.tokens for s in states]),
        torch.cat([s.lengths for s in states]),
        torch.cat([s.finished for s in states]),
    )


class MultiTokenDuelEnv(TokenDuelEnv):
    """The n-player token duel as a PettingZoo ``ParallelEnv`` (see the module docstring).

    Args:
        num_players: number of seats ``n >= 2``.
        judge: the paying judge (default: the world's shipped judge).
        **kwargs: the keyword arguments of :class:`~nlhf_envs.text.env.TokenDuelEnv`.

    Raises:
        GameValidationError: for a number of players that is not an integer at least 2.
        ValueError: for any argument the two-player duel refuses.
    """

    metadata = {
        "name": "nlhf/MultiTokenDuel-v0",
        "render_modes": ["ansi", "human", "rgb_array"],
        "is_parallelizable": True,
    }

    def __init__(
        self, num_players: int = 3, judge: PairwiseJudge | None = None, **kwargs: Any
    ) -> None:
        n = check_int("num_players", num_players, 2)
        super().__init__(judge, **kwargs)
        self.num_players = n
        self.env_id = multi_env_id_of(self.world.name, self.judge_version)
        self.metadata = {
            **type(self).metadata,
            "name": self.env_id or f"nlhf/MultiTokenDuel[{self.world.name}]",
        }
        self.possible_agents = seat_names(n)
        # the two-player duel's spaces, one object per kind shared by every seat
        obs_space, act_space = self._observation_spaces["player_0"], self._action_spaces["player_0"]
        self._observation_spaces = {a: obs_space for a in self.possible_agents}
        self._action_spaces = {a: act_space for a in self.possible_agents}
        #: the judged pairs ``(i, j)``, ``i < j``, in the order their queries are drawn
        self.pairs: tuple[tuple[int, int], ...] = tuple(
            (i, j) for i in range(n) for j in range(i + 1, n)
        )

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Every unfinished player emits one token; pays everyone when every answer has ended.

        Raises:
            RuntimeError: if the episode has ended (call ``reset``).
            ValueError: on a missing action of an unfinished player, an action that is not a token
                id, or an unknown agent (nothing is applied then).
        """
        if not self.agents:
            raise RuntimeError("step() called after the duel ended; call reset() first")
        names = self.possible_agents
        unknown = set(actions) - set(names)
        if unknown:
            raise ValueError(
                f"actions for unknown agents {sorted(unknown)}; agents are player_0 .. "
                f"player_{self.num_players - 1}"
            )
        tokens: dict[str, int] = {}
        for agent in names:
            if bool(self._answers[agent].finished[0]):
                continue  # a finished player's actions are ignored
            if actions.get(agent) is None:
                raise ValueError(f"{agent} has not finished its answer and must act")
            tokens[agent] = self._token(agent, actions[agent])
        for agent, token in tokens.items():
            apply_tokens(self._answers[agent], torch.tensor([token]), self.tokenizer.eos_id)
        done = all(bool(self._answers[a].finished[0]) for a in names)
        rewards = dict.fromkeys(names, 0.0)
        infos: dict[str, dict[str, Any]] = {a: {} for a in names}
        if done:
            rewards, infos = self._settle()
        return self._step_result(names, done, rewards, infos)

    def _settle(self) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
        """Judge every pair once (one batched pass) and pay each seat its mean over the others."""
        n, names, pairs = self.num_players, self.possible_agents, self.pairs
        firsts = _stack([self._answers[names[i]] for i, _ in pairs])
        seconds = _stack([self._answers[names[j]] for _, j in pairs])
        # float32 draws, as the two-player duel's torch.tensor([u]): the same outcomes at n = 2
        uniforms = torch.as_tensor(self.np_random.random(len(pairs)), dtype=torch.float32)
        payoff = settle(
            self._prompt_ids.repeat(len(pairs), 1),
            self._prompt_mask.repeat(len(pairs), 1),
            firsts,
            seconds,
            uniforms,
            judge=self.judge,
            truth=self.truth,
            payer=self.payer,
            reward_mode=self.reward_mode,
        )
        keys = ("reward", "prob", "judge_prob", "true_prob", "outcome")
        sums = {k: [0.0] * n for k in keys}
        for k, (i, j) in enumerate(pairs):
            values = {
                "reward": (float(payoff.reward_0[k]), float(payoff.reward_1[k])),
                "prob": float(payoff.prob[k]),
                "judge_prob": float(payoff.judge_prob[k]),
                "true_prob": float(payoff.true_prob[k]),
                "outcome": float(payoff.outcome[k]),
            }
            for key, v in values.items():
                first, second = v if key == "reward" else (v, 1.0 - v)
                sums[key][i] += first
                sums[key][j] += second
        answers = tuple(self._text(a) for a in names)
        self._result = {"prompt": self._prompt, "answers": answers, "pair_prob": {}}
        for k, pair in enumerate(pairs):
            self._result["pair_prob"][pair] = (float(payoff.prob[k]), float(payoff.outcome[k]))
        scale = float(n - 1)
        rewards = {a: sums["reward"][i] / scale for i, a in enumerate(names)}
        infos: dict[str, dict[str, Any]] = {}
        for i, a in enumerate(names):
            info: dict[str, Any] = {"prompt": self._prompt}
            if n == 2:
                info["answer_0"], info["answer_1"] = answers
            for key in keys[1:]:
                info[key] = sums[key][i] / scale
            info["answers"] = answers
            infos[a] = info
        return rewards, infos

    def _render_text(self) -> str:
        if not self._answers:
            return "MultiTokenDuel: call reset() first"
        seen = self.tokenizer.decode(self._prompt_ids[0][self._prompt_mask[0]].tolist())
        lines = [f"prompt   : {seen}"]
        lines.extend(self._answer_line(agent) for agent in self.possible_agents)
        if self._result is not None:
            for (i, j), (p, o) in self._result["pair_prob"].items():
                winner = i if o == 1.0 else j
                lines.append(
                    f"P(player_{i} > player_{j}) = {p:.3f} ({self.payer}): player_{winner} wins"
                )
        return "\n".join(lines)


raw_env = MultiTokenDuelEnv


def parallel_env(**kwargs: Any) -> MultiTokenDuelEnv:
    """The parallel env (keyword arguments as in :class:`MultiTokenDuelEnv`)."""
    return MultiTokenDuelEnv(**kwargs)


def env(**kwargs: Any) -> AECEnv:
    """The AEC view (``parallel_to_aec``), keyword arguments as in :class:`MultiTokenDuelEnv`."""
    return parallel_to_aec(parallel_env(**kwargs))
