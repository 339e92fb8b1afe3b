"""Stable-Baselines3 PPO on the token duel ``nlhf/TokenDuel-v0``, trained through the single-seat view.

The learner is an SB3 ``PPO`` whose policy reads the TokenDuel observation (``int64 (2, L)``: token
ids and mask) with a small features extractor (:func:`token_features_class`: the mean embedding of the
prompt, the embedding of the last token and an embedding of the answer length) followed by
``net_depth`` hidden layers of ``net_width`` units. It plays ``player_0`` of
:class:`~nlhf_envs.gym_views.SingleSeatEnv` over copies of the token duel; the other seat is played by

* ``opponent="self_play"`` (default): a :class:`~nlhf_envs.players.SelfPlayPool` of frozen
  snapshots of the learner's own network (one added after every iteration, ``pool_size`` kept,
  ``opponent_sampling`` picks one per duel);
* ``opponent="ref"``: the reference policy ``pi_ref`` (the shipped language model);
* ``opponent="eos"``: a fixed opponent that answers ``<eos>`` at once (the empty answer), a sanity
  sparring partner.

One iteration is one PPO rollout of ``batch_size`` environment steps (``n_envs`` views,
``batch_size / n_envs`` tokens each) followed by PPO's update. A preference query is one *judged*
duel: an episode that ended inside the rollout (SB3 resets the views at the start of every rollout,
so an answer cut by the rollout's end is never judged and not counted). ``learn(num_queries=N)``
counts ``batch_size`` (the most duels a rollout can judge, :meth:`iteration_queries`) against the
budget, so it never judges more than ``N`` duels; it may judge fewer.

The reward is the env's (``mode="sampled"``: the Bernoulli outcome, ``"probability"``: the judge's
probability), paid once at the end of the answer; ``gamma`` (default 1) carries it back to every
token. ``ent_coef=None`` uses ``beta`` as SB3's entropy coefficient; unlike the matrix agent there is
no ``beta log pi_ref`` reward term (the reference model is not queried per token), so the objective
is the win rate plus a per-token entropy bonus, not the KL-regularised game.

Metrics (``history``, step = ``queries_used``): those of :mod:`agents.text.common`
(``game/queries``, ``time/iterations``, ``eval/win_rate_ref_judge``, ``eval/win_rate_ref_true``,
``eval/kl_ref``, ``time/queries_per_s``, ``time/tokens_per_s``), plus ``train/win_rate`` (mean
outcome of the iteration's judged duels for the learner against its opponent),
``policy/answer_length`` (mean length of the learner's judged answers, ``<eos>`` included) and SB3's
``loss/ppo_policy_gradient``, ``loss/ppo_value``, ``loss/ppo_entropy``, ``policy/ppo_approx_kl``,
``policy/ppo_clip_fraction``.

Checkpoints and reproducibility. ``agent.model`` is a torch module wrapping the SB3 policy network
(its parameters) and the snapshot pool (buffers); ``agent.optimizer`` is SB3's Adam. The text-agent
checkpoint (:func:`agents.text.checkpoint.save_text_agent`, one pickle-free ``.npz``) therefore stores
everything an iteration depends on. Every iteration reseeds torch's, NumPy's and Python's global
generators (SB3 draws from them) and the views from ``(seed, iteration)`` inside a fork that restores
the caller's state, so ``agents.load`` continues learning exactly like an uninterrupted run.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from agents.config import ConfigError
from agents.registry import register_agent
from agents.sb3.matrix import _sb3_globals, check_ppo_fields, ppo_kwargs
from agents.text.common import TextAgent, TextAgentConfig
from nlhf_envs.players import BasePlayer
from nlhf_envs.progress import Progress
from nlhf_envs.text import world
from nlhf_envs.text.engine import EOS, PAD

__all__ = ["SB3PPOTextConfig", "SB3PPOSelfPlayText", "PPOLanguageModel", "token_features_class"]

_PPO_METRICS = {
    "train/policy_gradient_loss": "loss/ppo_policy_gradient",
    "train/value_loss": "loss/ppo_value",
    "train/entropy_loss": "loss/ppo_entropy",
    "train/approx_kl": "policy/ppo_approx_kl",
    "train/clip_fraction": "policy/ppo_clip_fraction",
}


@dataclass
class SB3PPOTextConfig(TextAgentConfig):
    """Hyper-parameters of :class:`SB3PPOSelfPlayText` (plus :class:`TextAgentConfig`'s).

    Attributes:
        batch_size: environment steps (tokens of the learner) per PPO rollout, SB3's
            ``n_steps * n_envs``; a multiple of ``n_envs`` and of ``num_minibatches``.
        lr: Adam step size of the PPO (SB3's ``learning_rate``; that name is still read).
        beta: the entropy coefficient when ``ent_coef`` is ``None``.
        grad_clip: PPO's ``max_grad_norm`` (``None``: no clipping).
        mode: ``"sampled"``: reward = the Bernoulli outcome; ``"probability"``: the judge's
            probability.
        n_envs: copies of the view stepped together (SB3 ``DummyVecEnv``).
        n_epochs: PPO epochs per rollout.
        num_minibatches: minibatches per epoch.
        clip_range: PPO's ratio clipping.
        ent_coef: SB3's entropy coefficient (``None``: ``beta``).
        vf_coef: value-loss coefficient.
        gamma: discount (1: the end-of-answer reward reaches every token undiminished).
        gae_lambda: GAE lambda.
        normalize_advantage: SB3's per-minibatch advantage normalisation.
        embed_dim: token embedding size of the features extractor (:func:`token_features_class`).
        net_width: hidden units per layer of the policy and value MLPs.
        net_depth: hidden layers.
        opponent: ``"self_play"``, ``"ref"`` or ``"eos"`` (see the module docstring).
        opponent_sampling: self-play: ``"latest"`` snapshot or a ``"uniform"``-ly drawn one per duel.
        pool_size: self-play snapshots kept.
    """

    #: old key -> key: ``learning_rate`` (SB3's name) is read as ``lr``, the zoo's one step-size key
    RENAMED: ClassVar[dict[str, str]] = {"learning_rate": "lr"}

    batch_size: int = 256
    lr: float = 3.0e-4
    n_envs: int = 8
    n_epochs: int = 4
    num_minibatches: int = 4
    clip_range: float = 0.2
    ent_coef: float | None = 0.0
    vf_coef: float = 0.5
    gamma: float = 1.0
    gae_lambda: float = 0.95
    normalize_advantage: bool = True
    embed_dim: int = 32
    net_width: int = 64
    net_depth: int = 1
    opponent: Literal["self_play", "ref", "eos"] = "self_play"
    opponent_sampling: Literal["latest", "uniform"] = "latest"
    pool_size: int = 1
    eval_every: int = 0
    eval_prompts: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ppo_fields(self)
        if self.optimizer != "adam":
            raise ConfigError(
                f"optimizer: the SB3 PPO agent trains with SB3's Adam; got {self.optimizer!r}"
            )
        if self.opponent not in ("self_play", "ref", "eos"):
            raise ConfigError(
                f"opponent: expected 'self_play', 'ref' or 'eos'; got {self.opponent!r}"
            )
        if self.opponent_sampling not in ("latest", "uniform"):
            raise ConfigError(
                f"opponent_sampling: expected 'latest' or 'uniform'; got {self.opponent_sampling!r}"
            )


@functools.cache
def token_features_class() -> type:
    """The SB3 features extractor of the token observation (a class built on first use, so SB3 is
    imported only then; the same class on every call)."""
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class _TokenFeatures(BaseFeaturesExtractor):
        """Features of a TokenDuel observation ``(B, 2, L)`` (floats, as SB3 passes Box inputs).

        ``[mean embedding of the prompt's real tokens, embedding of the last real token, embedding
        of the answer length]``, ``3 * embed_dim`` values.
        """

        def __init__(
            self, observation_space: Any, embed_dim: int = 32, prompt_len: int = world.PROMPT_LEN
        ) -> None:
            super().__init__(observation_space, features_dim=3 * embed_dim)
            self.vocab_size = int(observation_space.high[0, 0]) + 1
            self.prompt_len = int(prompt_len)
            self.max_answer = int(observation_space.shape[1]) - self.prompt_len
            self.embed = nn.Embedding(self.vocab_size, embed_dim)
            self.length = nn.Embedding(self.max_answer + 1, embed_dim)

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            ids = observations[:, 0].long().clamp(0, self.vocab_size - 1)
            mask = observations[:, 1] > 0.5
            emb = self.embed(ids)
            p = self.prompt_len
            pm = mask[:, :p].float()
            prompt = (emb[:, :p] * pm[..., None]).sum(1) / pm.sum(1, keepdim=True).clamp(min=1.0)
            positions = torch.arange(ids.shape[1], device=ids.device)
            last = torch.where(mask, positions, -1).max(1).values.clamp(min=0)
            last_emb = emb[torch.arange(ids.shape[0], device=ids.device), last]
            n_answer = mask[:, p:].sum(1).clamp(max=self.max_answer)
            return torch.cat([prompt, last_emb, self.length(n_answer)], dim=1)

    return _TokenFeatures


class PPOLanguageModel(nn.Module):
    """The PPO's policy as a causal-LM-like module (``agent.model``).

    Calling it with ``(ids [B, T], attention_mask=[B, T], past_key_values=...)`` returns
    ``(logits [B, 1, V], cache)`` for the next token, the interface of
    :func:`nlhf_envs.text.engine.generate`, so evaluation generates with the engine. The first call's
    ``ids`` are the left-padded prompts; prompts narrower than the env's ``prompt_len`` (the engine
    cuts a batch's prompts to its longest) are padded back to it, so the PPO sees the env's
    observation layout; the cache is ``(sequence, padding added)``. It also holds the
    self-play pool as buffers (``pool [pool_size, n_params]``, ``pool_count``) so the checkpoint's
    ``policy/*`` state dict carries it.
    """

    def __init__(
        self,
        sb3_policy: Any,
        obs_len: int,
        pool_size: int,
        alphabet: tuple[int, ...] | None = None,
        vocab_size: int | None = None,
        prompt_len: int = 0,
    ) -> None:
        super().__init__()
        self.sb3 = sb3_policy
        self.obs_len = int(obs_len)
        #: the env's prompt width: the observation's first ``prompt_len`` positions are the prompt
        self.prompt_len = int(prompt_len)
        #: token ids of the PPO's actions when the world restricts answers (``None``: action = token)
        self.alphabet = None if alphabet is None else torch.tensor(alphabet, dtype=torch.long)
        self.vocab_size = vocab_size
        n = sum(p.numel() for p in sb3_policy.parameters())
        self.register_buffer("pool", torch.zeros(pool_size, n))
        self.register_buffer("pool_count", torch.zeros((), dtype=torch.long))

    def observation(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The env's observation ``(B, 2, L)`` (float) for sequences ``ids`` / ``mask``."""
        pad = self.obs_len - ids.shape[1]
        if pad < 0:
            raise ValueError(
                f"sequence of {ids.shape[1]} tokens exceeds the {self.obs_len} observed"
            )
        ids = torch.nn.functional.pad(ids, (0, pad), value=PAD)
        mask = torch.nn.functional.pad(mask.long(), (0, pad), value=0)
        return torch.stack([ids, mask], dim=1).float()

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, V)`` for float observations ``(B, 2, L)`` (tokens outside the
        world's answer alphabet get -1e4 when the PPO acts on the alphabet)."""
        logits = self.sb3.get_distribution(obs).distribution.logits
        if self.alphabet is None:
            return logits
        full = logits.new_full((logits.shape[0], int(self.vocab_size)), -1.0e4)
        full[:, self.alphabet.to(logits.device)] = logits
        return full

    def forward(
        self,
        ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
    ) -> tuple[torch.Tensor, Any]:
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
            raise ValueError("PPOLanguageModel expects ids of shape [B, T]")
        if past_key_values is None:  # the prompts: restore the env's left padding
            extra = max(0, self.prompt_len - ids.shape[1])
            seq = torch.nn.functional.pad(ids, (extra, 0), value=PAD)
        else:
            prev, extra = past_key_values
            seq = torch.cat([prev, ids], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones(seq.shape[0], seq.shape[1] - extra, dtype=torch.bool)
        mask = torch.nn.functional.pad(attention_mask.bool(), (extra, 0), value=False)
        return self.logits(self.observation(seq, mask))[:, None], (seq, extra)

    def flat_parameters(self) -> torch.Tensor:
        """The SB3 policy's parameters as one vector."""
        return torch.nn.utils.parameters_to_vector(self.sb3.parameters()).detach().clone()

    def push_snapshot(self) -> None:
        """Append the current parameters to the pool (dropping the oldest when full)."""
        k = int(self.pool_count)
        if k == self.pool.shape[0]:
            self.pool[:-1] = self.pool[1:].clone()
            k -= 1
        self.pool[k] = self.flat_parameters()
        self.pool_count.fill_(k + 1)


class _Snapshot:
    """A frozen copy of the SB3 policy, an SB3-model-like opponent (``policy`` + ``predict``):
    the view samples its tokens with its own generator (reproducible)."""

    def __init__(self, policy: Any, alphabet: tuple[int, ...] | None = None) -> None:
        self.alphabet = alphabet
        self.policy = copy.deepcopy(policy).eval()
        self.policy.optimizer = None
        for p in self.policy.parameters():
            p.requires_grad_(False)

    def load(self, flat: torch.Tensor) -> _Snapshot:
        torch.nn.utils.vector_to_parameters(flat, self.policy.parameters())
        return self

    def predict(self, observation: Any, deterministic: bool = False) -> tuple[Any, None]:
        action, _ = self.policy.predict(observation, deterministic=deterministic)
        if self.alphabet is not None:
            action = np.asarray(self.alphabet)[np.asarray(action)]
        return action, None


class _RefOpponent(BasePlayer):
    """``pi_ref`` as a player: samples its next token with its own (reseeded) generator."""

    def __init__(self, reference: nn.Module) -> None:
        self.reference = reference
        self.generator = torch.Generator("cpu").manual_seed(0)

    @torch.no_grad()
    def act(self, observation: Any, rng: np.random.Generator) -> int:
        obs = np.asarray(observation)
        ids = torch.as_tensor(obs[0][obs[1].astype(bool)], dtype=torch.long)
        logits, _ = self.reference(ids[None])
        probs = torch.softmax(logits[0, -1].float().cpu(), -1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def _alphabet_actions(env: Any, alphabet: tuple[int, ...]) -> Any:
    """A Gymnasium wrapper whose action ``i`` is token ``alphabet[i]`` of the wrapped env."""
    import gymnasium

    class AlphabetActions(gymnasium.ActionWrapper):
        def __init__(self, inner: Any) -> None:
            super().__init__(inner)
            self.action_space = gymnasium.spaces.Discrete(len(alphabet))

        def action(self, action: Any) -> int:
            return int(alphabet[int(action)])

    return AlphabetActions(env)


def _counting_wrapper(env: Any, stats: dict[str, list[float]], prompt_len: int) -> Any:
    """A Gymnasium wrapper appending each judged duel's outcome and learner length to ``stats``."""
    import gymnasium

    class DuelStats(gymnasium.Wrapper):
        def step(self, action: Any) -> Any:
            obs, reward, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                stats["outcome"].append(float(info.get("outcome", 0.0)))
                stats["length"].append(float(np.sum(np.asarray(obs)[1, prompt_len:])))
            return obs, reward, terminated, truncated, info

    return DuelStats(env)


@register_agent("sb3_ppo_selfplay", kind="text")
class SB3PPOSelfPlayText(TextAgent):
    """SB3 PPO on the token duel through the single-seat view (see the module docstring).

    Attributes:
        ppo: the ``stable_baselines3.PPO`` learner.
        model: :class:`PPOLanguageModel` over ``ppo.policy`` (parameters and snapshot pool).
        optimizer: SB3's Adam (``ppo.policy.optimizer``).
        pool: the :class:`~nlhf_envs.players.SelfPlayPool` of the opponent seat (self-play).
    """

    config_cls: ClassVar[type[TextAgentConfig]] = SB3PPOTextConfig
    config: SB3PPOTextConfig

    @property
    def ent_coef(self) -> float:
        """The entropy coefficient in use (``beta`` unless ``ent_coef`` is configured)."""
        cfg = self.config
        return float(self.beta if cfg.ent_coef is None else cfg.ent_coef)

    def _build_model(self, reference: nn.Module) -> tuple[Any, Any]:
        """The network and optimiser are SB3's, built in :meth:`_setup`."""
        return None, None

    def _setup(self) -> None:
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv

        from nlhf_envs.gym_views import SingleSeatEnv
        from nlhf_envs.players import SelfPlayPool
        from nlhf_envs.text.env import TokenDuelEnv

        cfg = self.config
        if self.device.type != "cpu":
            raise ConfigError(f"device: sb3_ppo_selfplay runs on the CPU only; got {cfg.device!r}")
        max_new = self.engine.max_new_tokens
        reward_mode = "outcome" if cfg.mode == "sampled" else "probability"
        world = self.engine.world
        # Worlds with an answer alphabet (the tiny ones): the PPO acts on it, so its answers stay
        # in the enumerable answer set (exact Nash metrics).
        alphabet = world.answer_token_ids if world.suppressed_token_ids else None
        self._duels: dict[str, list[float]] = {"outcome": [], "length": []}
        if cfg.opponent == "self_play":
            self.pool = SelfPlayPool(max_size=cfg.pool_size, sampling=cfg.opponent_sampling)
            opponent: Any = self.pool
        elif cfg.opponent == "ref":
            self.pool = None
            opponent = self._ref_opponent = _RefOpponent(self.reference)
        else:
            self.pool = None
            opponent = lambda observation: EOS  # noqa: E731

        def make_env() -> Any:
            inner = TokenDuelEnv(
                judge=self.engine.judge,
                world=self.engine.world,
                beta=self.beta,
                max_new_tokens=max_new,
                reward_mode=reward_mode,
                payer=cfg.payer,
                prompt_split=getattr(self.env, "prompt_split", "train"),
            )
            seat = SingleSeatEnv(inner, opponent=opponent)
            if alphabet is not None:
                seat = _alphabet_actions(seat, alphabet)
            return _counting_wrapper(seat, self._duels, self.engine.prompt_len)

        self.vec_env = DummyVecEnv([make_env for _ in range(cfg.n_envs)])
        with _sb3_globals(self._stream_seed(0)):
            self.ppo = PPO(
                "MlpPolicy",
                self.vec_env,
                **ppo_kwargs(cfg, self.ent_coef),
                max_grad_norm=cfg.grad_clip if cfg.grad_clip is not None else float("inf"),
                policy_kwargs={
                    "features_extractor_class": token_features_class(),
                    "features_extractor_kwargs": {
                        "embed_dim": cfg.embed_dim,
                        "prompt_len": self.engine.prompt_len,
                    },
                    "net_arch": [cfg.net_width] * cfg.net_depth,
                },
            )
        obs_len = self.engine.prompt_len + max_new
        self.model = PPOLanguageModel(
            self.ppo.policy, obs_len, cfg.pool_size, alphabet, world.vocab_size,
            prompt_len=self.engine.prompt_len,
        )  # fmt: skip
        self.optimizer = self.ppo.policy.optimizer
        self.model.push_snapshot()
        self._snapshots = [_Snapshot(self.ppo.policy, alphabet) for _ in range(cfg.pool_size)]

    def _stream_seed(self, stream: int) -> int:
        """A 63-bit seed of the agent's ``stream``-th random stream (0: init, 1 + i: iteration i)."""
        state = np.random.SeedSequence([self.seed, 11, stream]).generate_state(2, dtype=np.uint32)
        return int(state[0]) << 31 | int(state[1]) >> 1

    def _sync_pool(self) -> None:
        """Rebuild the self-play pool from the snapshot buffers of ``policy``."""
        if self.pool is None:
            return
        self.pool.clear()
        for i in range(int(self.model.pool_count)):
            self.pool.add(self._snapshots[i].load(self.model.pool[i]))

    def _iteration(self) -> None:
        cfg = self.config
        seed = self._stream_seed(1 + self.num_iterations)
        self._sync_pool()
        if cfg.opponent == "ref":
            self._ref_opponent.generator.manual_seed(seed)
        self.vec_env.seed(seed % 2**31)
        self._duels["outcome"].clear()
        self._duels["length"].clear()
        self.model.train()
        with _sb3_globals(seed):
            self.ppo.learn(total_timesteps=cfg.batch_size, reset_num_timesteps=True)
        # SB3 keeps the last training distribution (attached to the graph): drop it so the agent can
        # be deep-copied (tournaments copy their participants)
        self.ppo.policy.action_dist.distribution = None
        n = len(self._duels["outcome"])
        self.queries_used += n
        self._tokens += 2 * cfg.batch_size  # both seats emit (at most) one token per env step
        self.model.push_snapshot()
        if n:
            self.note(
                {
                    "train/win_rate": float(np.mean(self._duels["outcome"])),
                    "policy/answer_length": float(np.mean(self._duels["length"])),
                }
            )
        logged = self.ppo.logger.name_to_value
        self.note({new: logged[old] for old, new in _PPO_METRICS.items() if old in logged})

    # ------------------------------------------------------------------ evaluation and acting
    @torch.no_grad()
    def evaluate(
        self, num_prompts: int | None = None, split: str = "heldout", progress: Progress = None
    ) -> dict[str, float]:
        """Win rates of the PPO policy against ``pi_ref`` (judge and ground truth) and its KL.

        Same metrics and seeding as :meth:`TextAgent.evaluate` (no queries counted, the learning
        streams untouched); answers are generated with :class:`PPOLanguageModel`.
        """
        with _sb3_globals():  # SB3's network must not touch the caller's global generators
            self.model.eval()
            try:
                return super().evaluate(num_prompts, split, progress)
            finally:
                self.model.train()

    @torch.no_grad()
    def act(self, observation: Any, deterministic: bool = False) -> int:
        """The next token for a ``nlhf/TokenDuel-v0`` observation (sampled with ``act_rng``).

        Args:
            observation: ``int64 (2, L)``: token ids (row 0) and mask (row 1), with
                ``L = 12 + max_new_tokens`` of the agent's env.
            deterministic: return the most likely token instead of sampling.

        Returns:
            A token id.

        Raises:
            ValueError: for an observation of another shape.
        """
        obs = np.asarray(observation)
        if obs.shape != (2, self.model.obs_len):
            raise ValueError(
                f"observation must be the TokenDuel array of shape (2, {self.model.obs_len}); "
                f"got shape {obs.shape}"
            )
        with _sb3_globals():
            logits = self.model.logits(torch.as_tensor(obs[None], dtype=torch.float32))[0]
        if deterministic:
            return int(logits.argmax())
        probs = torch.softmax(logits.double(), -1).float()
        return int(torch.multinomial(probs, 1, generator=self.act_rng))
