"""``nlhf/TokenDuel-v0``: two players write answers to one prompt, token by token, and a judge decides.

Description:
    A token-level NLHF game. ``reset`` draws a prompt ``x`` of the language world
    (:mod:`nlhf_envs.text.world`). At every step both players emit one token of their own answer; neither
    sees the other's answer until the end. When both answers are finished the paying judge gives
    ``p = P(y_0 > y_1 | x)`` and the duel is decided by one preference query ``o ~ Bernoulli(p)``. The
    game is symmetric and constant-sum; the judge (learned, shipped with the package) approximates an
    intransitive population of annotators, the ground truth, which can pay instead.

    The rules and rewards are those of :mod:`nlhf_envs.text.engine` (``apply_tokens`` and ``settle``),
    which the batched :class:`~nlhf_envs.text.engine.DuelEngine` uses too.

Agents:
    ``player_0`` and ``player_1``; both stay in ``agents`` until the duel ends.

Action Space:
    ``Discrete(V)`` with ``V`` the vocabulary size (317): a token id. ``<eos>`` (id 2) ends the player's
    answer (it counts as the answer's last token). Other special tokens are accepted and kept in the
    answer, but judges ignore them. After a player's answer has ended, its actions are ignored (it may
    also omit its action or pass ``None``); an unfinished player must act.

Observation Space:
    ``Box(0, high, (2, L), int64)`` with ``L = PROMPT_LEN + max_new_tokens = 12 + max_new_tokens``.
    Row 0 holds token ids: the prompt as the models read it, ``<pad>* <bos> words <sep>`` left-padded to
    12, followed by the player's own answer so far, right-padded with ``<pad>`` (``high = V - 1``).
    Row 1 is the mask, 1 on real tokens (``high = 1``). ``obs[0]`` with ``attention_mask=obs[1]`` is
    exactly the input of a causal LM policy such as the reference policy. The opponent's answer is not
    observed.

Rewards:
    Zero until the duel ends. Then, with ``p = P(y_0 > y_1 | x)`` from the paying judge and
    ``o = 1[u < p]``, ``u ~ U[0, 1)`` from the env's ``np_random``: ``reward_mode="outcome"`` (default)
    pays ``player_0`` ``o`` and ``player_1`` ``1 - o``; ``"centered"`` pays ``o - 1/2`` and ``1/2 - o``;
    ``"probability"`` pays ``p`` and ``1 - p`` (see :mod:`nlhf_envs.rewards`). At the end ``infos[agent]``
    holds, from that agent's side (as in the matrix envs): ``prob`` (the paying judge's probability that
    its answer is preferred), ``judge_prob`` (the learned judge's), ``true_prob`` (the ground truth's)
    and ``outcome`` (1 if it won the query); and, for both, ``prompt``, ``answer_0`` and ``answer_1``
    (decoded texts).

Episode End:
    Termination (for both players at once) when both answers have ended, by ``<eos>`` or by reaching
    ``max_new_tokens`` tokens, so a duel lasts at most ``max_new_tokens`` steps. There is no truncation.

Environment arguments:
    ``world`` ("default"): the language world (:func:`nlhf_envs.text.world.get_world`): its prompts,
    vocabulary, reference policy, ground truth and shipped judge.
    ``judge``: a :class:`~nlhf_envs.text.judging.PairwiseJudge` (default: the world's shipped judge of
    ``judge_version``).
    ``judge_version`` (None): ``"latest"`` or, for the default world, ``"v0"`` (the first judge,
    trained on a narrower pair distribution; ``nlhf/TokenDuel-v0``). ``None``: ``"v0"`` for the
    default world (so code written for v0 keeps its numbers), ``"latest"`` elsewhere.
    ``beta`` (the world's, 0.1): KL strength of the regularised game this env stands for. It does not
    change rewards (the duel pays preferences only); learners read it (``agents`` use it unless their
    config overrides it) and the Nash metrics of :mod:`nlhf_envs.text.nash` use it.
    ``max_new_tokens`` (the world's: 24, or 3 in the tiny worlds): the longest answer, ``<eos>``
    included.
    ``max_cycles`` (None): PettingZoo's episode cap; it caps ``max_new_tokens`` at ``max_cycles``, so a
    duel never outlasts it.
    ``reward_mode`` ("outcome"): ``"outcome"``, ``"centered"`` or ``"probability"``.
    ``payer`` ("judge"): ``"judge"`` or ``"ground_truth"``: who pays (paying with the ground truth shows
    how far a policy over-optimised the judge).
    ``prompt_split`` ("train"): ``"train"``, ``"heldout"`` or ``"all"`` prompts of the world.
    ``render_mode`` (None): ``None``, ``"ansi"`` (``render()`` returns the duel as text) or
    ``"human"`` (``render()`` prints it).
    ``reset(options={"prompt": text})`` fixes the prompt of one duel (other option keys are ignored).

References:
    Munos et al., "Nash Learning from Human Feedback", ICML 2024 (arXiv 2312.00886);
    Tiapkin et al., "Accelerating Nash Learning from Human Feedback via Mirror Prox" (arXiv 2505.19731).

Registered ids:
    ``nlhf/TokenDuel-v0`` (default world, judge v0), ``nlhf/TokenDuel-v1`` (default world, the judge
    trained on a wider pair distribution), ``nlhf/TokenDuel-Cyclic-v0`` (world ``default-cyclic``),
    ``nlhf/TinyTokenDuel-v0`` (world ``tiny``, answers enumerable: see :mod:`nlhf_envs.text.exact`),
    ``nlhf/TinyTokenDuel-Cyclic-v0`` (world ``tiny-cyclic``).

Version History:
    v0: initial release.
    v1 (``nlhf/TokenDuel-v1``): the same world, a judge trained on a wider pair distribution (random,
    tempered, drifted and judge-optimised answers), which holds off pi_ref's distribution.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from nlhf_envs.rendering import render_text
from nlhf_envs.rewards import check_reward_mode
from nlhf_envs.text.engine import PAYERS, AnswerState, apply_tokens, new_answers, settle
from nlhf_envs.text.judging import PairwiseJudge
from nlhf_envs.text.world import World, get_world

AGENTS: tuple[str, str] = ("player_0", "player_1")
_DEFAULT_JUDGES: dict[tuple[str, str], PairwiseJudge] = {}


def _is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool or a float."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def default_judge(world: str | World | None = None, version: str | None = None) -> PairwiseJudge:
    """The shipped judge of ``world`` and ``version`` (default
    :func:`~nlhf_envs.text.models.default_judge_version`), loaded once and shared (judges are
    stateless)."""
    from nlhf_envs.text.models import default_judge_version, load_judge

    w = get_world(world)
    version = default_judge_version(w) if version is None else version
    key = (w.name, version)
    if key not in _DEFAULT_JUDGES:
        _DEFAULT_JUDGES[key] = load_judge(world=w, version=version)
    return _DEFAULT_JUDGES[key]


def env_id_of(world: str, judge_version: str = "latest") -> str | None:
    """The registered id of the token duel on ``world`` with ``judge_version`` (``None`` if none)."""
    from nlhf_envs.registration import TEXT_ENV_IDS

    for env_id, kwargs in TEXT_ENV_IDS.items():
        if kwargs.get("world") == world and kwargs.get("judge_version", "latest") == judge_version:
            return env_id
    return None


class AnswerDuelBase(ParallelEnv):
    """What the token duels share (:class:`TokenDuelEnv`, its n-player form
    :class:`~nlhf_envs.text.multiplayer.MultiTokenDuelEnv` and
    :class:`~nlhf_envs.text.hf_env.HFTokenDuelEnv`): every seat writes an answer to the same
    prompt, one token per step, and observes ``int64 [2, L]`` (the token ids and the mask of the
    prompt and its answer so far). A subclass sets the prompt, the answers and the spaces
    (:meth:`_init_spaces`) and says how a finished two-seat duel is paid (:meth:`_pay`)."""

    max_new_tokens: int
    _answers: dict[str, AnswerState]
    _prompt_ids: torch.Tensor
    _prompt_mask: torch.Tensor

    def _init_spaces(self, agents: list[str], vocab_size: int, length: int) -> None:
        """``Discrete(vocab_size)`` actions and ``[2, length]`` observations for every seat."""
        high = np.ones((2, length), dtype=np.int64)
        high[0] = vocab_size - 1
        self._action_spaces = {a: spaces.Discrete(vocab_size) for a in agents}
        self._observation_spaces = {
            a: spaces.Box(np.zeros_like(high), high, dtype=np.int64) for a in agents
        }

    def observation_space(self, agent: str) -> spaces.Space:
        """The observation space of ``agent`` (the same object on every call)."""
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        """The action space of ``agent`` (the same object on every call)."""
        return self._action_spaces[agent]

    def _observe(self, agent: str) -> np.ndarray:
        ans = self._answers[agent]
        tokens = torch.cat([self._prompt_ids[0], ans.tokens[0]])
        mask = torch.cat([self._prompt_mask[0], ans.mask[0]])
        return torch.stack([tokens, mask.long()]).numpy().astype(np.int64)

    def _token(self, agent: str, action: Any) -> int:
        raise NotImplementedError

    def _text(self, agent: str) -> str:
        raise NotImplementedError

    def _eos_token_id(self) -> int:
        """The token that ends an answer."""
        raise NotImplementedError

    def _pay(self) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
        """The rewards and infos of a finished two-seat duel (and ``self._result``)."""
        raise NotImplementedError

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        """Both players emit one token; pays both players when both answers have ended.

        Raises:
            RuntimeError: if the duel has ended (call ``reset``).
            ValueError: on a missing action of an unfinished player, an action that is not a
                token id, an unknown agent, or (a Hugging Face duel) an invalid judge output.
        """
        if not self.agents:
            raise RuntimeError("step() called after the duel ended; call reset() first")
        unknown = set(actions) - set(AGENTS)
        if unknown:
            raise ValueError(f"actions for unknown agents {sorted(unknown)}; agents are {AGENTS}")
        for agent in AGENTS:
            state = self._answers[agent]
            if bool(state.finished[0]):
                continue  # a finished player's actions are ignored
            if actions.get(agent) is None:
                raise ValueError(f"{agent} has not finished its answer and must act")
            token = self._token(agent, actions[agent])
            apply_tokens(state, torch.tensor([token]), self._eos_token_id())
        done = all(bool(self._answers[a].finished[0]) for a in AGENTS)
        rewards = dict.fromkeys(AGENTS, 0.0)
        infos: dict[str, dict[str, Any]] = {a: {} for a in AGENTS}
        if done:
            rewards, infos = self._pay()
        return self._step_result(list(AGENTS), done, rewards, infos)

    def _step_result(
        self,
        names: list[str],
        done: bool,
        rewards: dict[str, float],
        infos: dict[str, dict[str, Any]],
    ) -> tuple[dict, dict, dict, dict, dict]:
        """The step's five dicts over the seats ``names``; ends the episode when ``done``."""
        observations = {a: self._observe(a) for a in names}
        terminations = dict.fromkeys(names, done)
        truncations = dict.fromkeys(names, False)
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    @staticmethod
    def _mirrored_infos(result: dict[str, Any], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Both seats' infos of a two-seat result: ``player_1`` sees ``1 - v`` for ``keys``."""
        infos = {"player_0": dict(result), "player_1": dict(result)}
        for key in keys:
            infos["player_1"][key] = 1.0 - result[key]
        return infos

    def _answer_line(self, agent: str) -> str:
        """One line of the text render: ``agent``'s answer so far, its length and status."""
        state = self._answers[agent]
        status = "done" if bool(state.finished[0]) else "writing"
        n = int(state.lengths[0])
        return f"{agent} : {self._text(agent)}  [{n}/{self.max_new_tokens} {status}]"

    def _render_text(self) -> str:
        raise NotImplementedError

    def render(self) -> str | np.ndarray | None:
        """The prompt as the policies read it, the answers so far and, at the end, the verdict
        (``"ansi"``: returned, ``"human"``: printed, ``"rgb_array"`` where the env offers it: a
        ``(360, 480, 3)`` frame of that text, :func:`nlhf_envs.rendering.text_frame`)."""
        if self.render_mode == "rgb_array":
            from nlhf_envs.rendering import text_frame

            return text_frame(self._render_text().splitlines())
        return render_text(self.render_mode, self._render_text)

    def close(self) -> None:
        """Nothing to release."""


class TokenDuelEnv(AnswerDuelBase):
    """The token duel as a PettingZoo ``ParallelEnv`` (see the module docstring)."""

    metadata = {
        "name": "nlhf/TokenDuel-v0",
        "render_modes": ["ansi", "human", "rgb_array"],
        "is_parallelizable": True,
    }

    def __init__(
        self,
        judge: PairwiseJudge | None = None,
        *,
        world: str | World = "default",
        judge_version: str | None = None,
        beta: float | None = None,
        max_new_tokens: int | None = None,
        max_cycles: int | None = None,
        reward_mode: str = "outcome",
        payer: str = "judge",
        prompt_split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        from nlhf_envs.text.ground_truth import ground_truth

        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(
                f"unknown render_mode {render_mode!r}; expected None, 'ansi', 'human' or 'rgb_array'"
            )
        if payer not in PAYERS:
            raise ValueError(f"unknown payer {payer!r}; expected one of {', '.join(PAYERS)}")
        self.world = get_world(world)
        if max_new_tokens is None:
            max_new_tokens = self.world.max_new_tokens
        if beta is None:
            beta = self.world.beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ValueError(f"beta must be a positive number, got {beta!r}")
        if not _is_int(max_new_tokens) or max_new_tokens < 1:
            raise ValueError(
                f"max_new_tokens must be an integer at least 1, got {max_new_tokens!r}"
            )
        if max_cycles is not None:
            if not _is_int(max_cycles) or max_cycles < 1:
                raise ValueError(f"max_cycles must be an integer at least 1, got {max_cycles!r}")
            max_new_tokens = min(max_new_tokens, max_cycles)
        from nlhf_envs.text.models import default_judge_version

        if judge_version is None:
            judge_version = default_judge_version(self.world)
        self.judge_version = judge_version
        self.judge = judge if judge is not None else default_judge(self.world, judge_version)
        if self.judge.tokenizer.vocab != self.world.tokenizer.vocab:
            raise ValueError(
                f"the judge's vocabulary ({self.judge.tokenizer.vocab_size} tokens) is not that of "
                f"world {self.world.name!r} ({self.world.vocab_size} tokens)"
            )
        self.beta = float(beta)
        self._fingerprint: str | None = None
        self.env_id = env_id_of(self.world.name, judge_version)
        self.metadata = {
            **type(self).metadata,
            "name": self.env_id or f"nlhf/TokenDuel[{self.world.name}]",
        }
        self.truth = ground_truth(self.world)
        self.tokenizer = self.judge.tokenizer
        self.reward_mode = check_reward_mode(reward_mode)
        self.payer = payer
        self.max_new_tokens = int(max_new_tokens)
        self.max_cycles = max_cycles
        self.prompt_split = prompt_split
        self.prompt_pool = self.world.prompts.indices(prompt_split)
        self.render_mode = render_mode
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self.prompt_len = self.world.prompt_len
        length = self.prompt_len + self.max_new_tokens
        self._init_spaces(list(AGENTS), self.tokenizer.vocab_size, length)
        self.np_random, self.np_random_seed = seeding.np_random(None)
        self._prompt = ""
        self._prompt_ids = torch.zeros(1, self.prompt_len, dtype=torch.long)
        self._prompt_mask = torch.zeros(1, self.prompt_len, dtype=torch.bool)
        self._answers: dict[str, AnswerState] = {}
        self._result: dict[str, Any] | None = None

    def fingerprint(self) -> str:
        """A short hash of the game this env plays: the world's config, the judge's weights (or its
        class for a judge without a content hash), ``beta`` and ``max_new_tokens``. Two envs with the
        same fingerprint pay the same duels; tournaments refuse participants whose envs differ."""
        if self._fingerprint is None:
            import hashlib

            from nlhf_envs.text.models import judge_digest

            judge = judge_digest(self.judge) or f"custom:{type(self.judge).__qualname__}"
            text = f"{self.world.fingerprint}|{judge}|{self.beta!r}|{self.max_new_tokens}"
            self._fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._fingerprint

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        """Start a duel: draw a prompt (or take ``options["prompt"]``)."""
        if seed is not None:
            self.np_random, self.np_random_seed = seeding.np_random(seed)
        options = options or {}  # only "prompt" is read; other keys are ignored
        if "prompt" in options:
            self.tokenizer.check_prompt(options["prompt"])  # unknown words, empty, not a string
            self._prompt = options["prompt"]
        else:
            self._prompt = self.world.prompts.texts[int(self.np_random.choice(self.prompt_pool))]
        self._prompt_ids, self._prompt_mask = self.tokenizer.encode_prompts(
            [self._prompt], self.prompt_len
        )
        self._answers = {a: new_answers(1, self.max_new_tokens) for a in self.possible_agents}
        self._result = None
        self.agents = list(self.possible_agents)
        observations = {a: self._observe(a) for a in self.agents}
        infos = {a: {"prompt": self._prompt} for a in self.agents}
        return observations, infos

    def _token(self, agent: str, action: Any) -> int:
        arr = np.asarray(action)
        if arr.shape not in ((), (1,)) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"action {action!r} of {agent} must be an integer token id")
        try:
            token = int(arr.reshape(()))
        except (TypeError, ValueError):
            raise ValueError(f"action of {agent} must be a token id, got {action!r}") from None
        if token != action or not 0 <= token < self.tokenizer.vocab_size:
            raise ValueError(
                f"action {action!r} of {agent} is not a token id in [0, {self.tokenizer.vocab_size})"
            )
        return token

    def _eos_token_id(self) -> int:
        return self.tokenizer.eos_id

    def _pay(self) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
        payoff = settle(
            self._prompt_ids,
            self._prompt_mask,
            self._answers["player_0"],
            self._answers["player_1"],
            torch.tensor([self.np_random.random()]),
            judge=self.judge,
            truth=self.truth,
            payer=self.payer,
            reward_mode=self.reward_mode,
        )
        rewards = {"player_0": float(payoff.reward_0[0]), "player_1": float(payoff.reward_1[0])}
        self._result = {
            "prompt": self._prompt,
            "answer_0": self._text("player_0"),
            "answer_1": self._text("player_1"),
            "judge_prob": float(payoff.judge_prob[0]),
            "true_prob": float(payoff.true_prob[0]),
            "prob": float(payoff.prob[0]),
            "outcome": float(payoff.outcome[0]),
        }
        keys = ("judge_prob", "true_prob", "prob", "outcome")
        return rewards, self._mirrored_infos(self._result, keys)

    def _text(self, agent: str) -> str:
        state = self._answers[agent]
        return self.tokenizer.decode(state.tokens[0][state.mask[0]].tolist())

    def _render_text(self) -> str:
        if not self._answers:
            return "TokenDuel: call reset() first"
        seen = self.tokenizer.decode(self._prompt_ids[0][self._prompt_mask[0]].tolist())
        lines = [
            f"prompt   : {seen}"
        ]  # what the policies read (lower-cased, special tokens dropped)
        lines.extend(self._answer_line(agent) for agent in AGENTS)
        if self._result is not None:
            r = self._result
            winner = "player_0" if r["outcome"] == 1.0 else "player_1"
            lines.append(
                f"judge P(player_0 > player_1) = {r['judge_prob']:.3f}, ground truth "
                f"{r['true_prob']:.3f}, paid by {self.payer}: {winner} wins"
            )
        return "\n".join(lines)


raw_env = TokenDuelEnv


def parallel_env(**kwargs: Any) -> TokenDuelEnv:
    """The parallel env (keyword arguments as in :class:`TokenDuelEnv`)."""
    return TokenDuelEnv(**kwargs)


def env(**kwargs: Any) -> AECEnv:
    """The AEC view (``parallel_to_aec``, order-enforced), keyword arguments as in :class:`TokenDuelEnv`."""
    return parallel_to_aec(parallel_env(**kwargs))
