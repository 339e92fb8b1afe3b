"""Stable-Baselines3 PPO in self-play, trained through the single-seat Gymnasium view.

The learner is an SB3 ``PPO`` (``MlpPolicy``) playing ``player_0`` of
:class:`~nlhf_envs.gym_views.SingleSeatEnv` over the agent's game; the other seat is a
:class:`~nlhf_envs.players.SelfPlayPool` of snapshots of the learner's own policy (probability
tables, one per iteration). One iteration is one PPO rollout of ``batch_size`` environment steps
(``n_envs`` copies of the view, ``batch_size / n_envs`` steps each) followed by PPO's update; every
environment step is one preference query (one Bernoulli outcome of the judge), so
``learn(num_queries=N)`` runs ``N // batch_size`` iterations (never more than ``N`` env steps).

Objective. With ``ent_coef=None`` (default) PPO maximises, against the opponent ``pi_opp``,

    E_x E_{y ~ pi, y' ~ pi_opp}[o] + beta H(pi(.|x)) + beta E_{y ~ pi} log(K pi_ref(y|x))
        = P(pi > pi_opp) - beta KL(pi || pi_ref) + const,

i.e. the game's beta-regularised payoff (equations.md §1): the entropy bonus ``ent_coef = beta``
plus a reward term ``beta log(K pi_ref(y|x))`` (zero for a uniform ``pi_ref``). With
``normalize_advantage=False`` and ``gamma=0`` (default; rounds are independent duels) the PPO
gradient is exactly the gradient of that objective; PPO's clipping keeps each iteration close to
the previous policy, so plain self-play (``opponent_sampling="latest"``, ``pool_size=1``) is a
proximal, mirror-descent-like step on the regularised game. ``ent_coef=<number>`` gives plain SB3
behaviour: entropy bonus with that coefficient and no ``pi_ref`` term (``0.0``: unregularised).

What self-play does on biased rock-paper-scissors is measured in
``tests/agents/sb3/test_sb3_agent.py``: regularised self-play (``beta = 0.1``) reaches
``game/exploitability < 0.02``, while unregularised self-play (``ent_coef=0``) keeps cycling around
the Nash equilibrium.

``policy(context)`` is the PPO's action distribution (softmax of the policy network's logits on the
one-hot context), kept in ``log_pi`` after every iteration, so the shared metrics, ``act`` and
``predict`` of :class:`~agents.base.Agent` describe exactly the network. Acting needs no torch.

Reproducibility and checkpoints. Every iteration reseeds torch, NumPy's and Python's global
generators (SB3 samples actions and minibatches from them) with a seed derived from ``(seed,
iteration)`` inside a fork that restores the caller's global state afterwards, and reseeds the
views. An iteration is therefore a pure function of the network, the Adam state and the snapshot
pool, which the checkpoint stores as arrays (``state/ppo_parameters``, ``state/ppo_optimizer``,
``state/pool_tables``); ``agents.load`` continues learning bit for bit like an uninterrupted run.
The checkpoint stays pickle-free: SB3's own zip format (cloudpickle) is not used.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from agents.base import Agent
from agents.config import AgentConfig, ConfigError
from agents.registry import register_agent
from agents.updates import log_normalize, softmax

__all__ = ["SB3PPOConfig", "SB3PPOSelfPlay"]


@dataclass
class SB3PPOConfig(AgentConfig):
    """Hyper-parameters of :class:`SB3PPOSelfPlay` (plus :class:`~agents.config.AgentConfig`'s).

    Attributes:
        mode: only ``"sampled"`` (each env step draws one Bernoulli outcome).
        batch_size: preference queries (env steps) per PPO rollout, i.e. SB3's ``n_steps * n_envs``;
            a multiple of ``n_envs`` and of ``num_minibatches``.
        stratified: inherited; unused (PPO samples its own responses).
        init: initial policy: ``"ref"`` (the action head's bias is ``log pi_ref``), ``"uniform"``
            (bias 0) or ``"random"`` (standard-normal bias from the seed); SB3's small orthogonal
            weights make the initial policy within about 1e-2 of that bias's softmax.
        n_envs: copies of the view stepped together (SB3 ``DummyVecEnv``).
        n_epochs: PPO epochs per rollout.
        num_minibatches: minibatches per epoch (SB3 ``batch_size = batch_size / num_minibatches``).
        lr: Adam step size of the PPO (SB3's ``learning_rate``; that name is still read, see
            ``RENAMED``).
        clip_range: PPO's ratio clipping.
        ent_coef: ``None``: regularise like the game (entropy bonus ``beta`` plus the
            ``beta log(K pi_ref)`` reward term, see the module docstring); a number: SB3's entropy
            coefficient, no ``pi_ref`` term.
        vf_coef: value-loss coefficient.
        max_grad_norm: gradient clipping.
        gamma: discount; ``0`` treats every round as its own bandit (rounds are independent).
        gae_lambda: GAE lambda.
        normalize_advantage: SB3's per-minibatch advantage normalisation (off: exact gradient of
            the regularised objective).
        net_width: hidden units per layer of the policy and value MLPs.
        net_depth: hidden layers.
        opponent_sampling: ``"latest"``: play the newest snapshot (plain self-play);
            ``"uniform"``: a uniformly drawn snapshot of the pool per episode.
        pool_size: snapshots kept (one is added after every iteration).
        reward_mode: the env's reward mode (``"outcome"``, ``"centered"``, ``"probability"``).
    """

    MODES: ClassVar[tuple[str, ...]] = ("sampled",)

    #: old key -> key: ``learning_rate`` (SB3's name) is read as ``lr``, the zoo's one step-size key
    RENAMED: ClassVar[dict[str, str]] = {"learning_rate": "lr"}

    mode: str = "sampled"
    batch_size: int = 256
    n_envs: int = 8
    n_epochs: int = 4
    num_minibatches: int = 4
    lr: float = 3.0e-3
    clip_range: float = 0.2
    ent_coef: float | None = None
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    gamma: float = 0.0
    gae_lambda: float = 0.95
    normalize_advantage: bool = False
    net_width: int = 32
    net_depth: int = 1
    opponent_sampling: Literal["latest", "uniform"] = "latest"
    pool_size: int = 1
    reward_mode: Literal["outcome", "centered", "probability"] = "outcome"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ppo_fields(self, ("max_grad_norm",))


def check_ppo_fields(cfg: Any, positive: tuple[str, ...] = ()) -> None:
    """Range checks of the PPO fields both SB3 configs share (and ``positive``: more fields > 0).

    Raises:
        ConfigError: naming the field.
    """
    counts = ("n_envs", "n_epochs", "num_minibatches", "net_width", "pool_size", "embed_dim")
    for key in counts:
        if hasattr(cfg, key) and getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: must be an integer >= 1; got {getattr(cfg, key)}")
    if cfg.net_depth < 0:
        raise ConfigError(f"net_depth: must be >= 0; got {cfg.net_depth}")
    if cfg.batch_size % cfg.n_envs:
        raise ConfigError(
            f"batch_size: must be a multiple of n_envs ({cfg.n_envs}); got {cfg.batch_size}"
        )
    if cfg.batch_size % cfg.num_minibatches or cfg.batch_size < 2:
        raise ConfigError(
            f"batch_size: must be >= 2 and a multiple of num_minibatches "
            f"({cfg.num_minibatches}); got {cfg.batch_size}"
        )
    for key in ("lr", "clip_range", *positive):
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"{key}: must be > 0; got {getattr(cfg, key)}")
    if cfg.ent_coef is not None and cfg.ent_coef < 0:
        raise ConfigError(
            f"ent_coef: must be >= 0 (or None for the game's beta); got {cfg.ent_coef}"
        )
    for key in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ConfigError(f"{key}: must lie in [0, 1]; got {getattr(cfg, key)}")
    if cfg.vf_coef < 0:
        raise ConfigError(f"vf_coef: must be >= 0; got {cfg.vf_coef}")


@contextmanager
def _sb3_globals(seed: int | None = None) -> Iterator[None]:
    """Run SB3 code with one torch thread and (if ``seed`` is given) seeded global generators.

    Restores the caller's torch thread count and torch/NumPy/Python generator states afterwards.
    The networks are tiny: extra torch threads only add synchronisation (on a busy 2-core machine a
    softmax of 8 x 3 logits took 10 ms with 2 threads and 2 us with one).
    """
    import torch

    threads = torch.get_num_threads()
    np_state = np.random.get_state()  # noqa: NPY002  (SB3 draws minibatches from it)
    py_state = random.getstate()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
                np.random.seed(seed % 2**32)  # noqa: NPY002
                random.seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


def _reward_term_wrapper(env: Any, bonus: np.ndarray) -> Any:
    """A Gymnasium wrapper adding ``bonus[context, action]`` to every reward."""
    import gymnasium

    class RefRewardTerm(gymnasium.Wrapper):
        def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
            obs, reward, terminated, truncated, info = self.env.step(action)
            return (
                obs,
                reward + float(bonus[info["context"], int(action)]),
                terminated,
                truncated,
                info,
            )

    return RefRewardTerm(env)


def ppo_kwargs(cfg: Any, ent_coef: float) -> dict[str, Any]:
    """The ``stable_baselines3.PPO`` arguments both SB3 zoo agents take from their config.

    One rollout is ``cfg.batch_size`` env steps over ``cfg.n_envs`` copies, split into
    ``cfg.num_minibatches`` minibatches; CPU, silent.
    """
    return {
        "learning_rate": cfg.lr,
        "n_steps": cfg.batch_size // cfg.n_envs,
        "batch_size": cfg.batch_size // cfg.num_minibatches,
        "n_epochs": cfg.n_epochs,
        "gamma": cfg.gamma,
        "gae_lambda": cfg.gae_lambda,
        "clip_range": cfg.clip_range,
        "normalize_advantage": cfg.normalize_advantage,
        "ent_coef": ent_coef,
        "vf_coef": cfg.vf_coef,
        "device": "cpu",
        "verbose": 0,
    }


@register_agent("sb3_ppo_selfplay", kind="matrix")
class SB3PPOSelfPlay(Agent):
    """SB3 PPO trained in self-play through the single-seat view (see the module docstring).

    Attributes:
        model: the ``stable_baselines3.PPO`` learner.
        pool: the :class:`~nlhf_envs.players.SelfPlayPool` the opponent seat plays from.
    """

    config_cls = SB3PPOConfig
    config: SB3PPOConfig
    state_attrs: ClassVar[tuple[str, ...]] = (
        "log_pi",
        "ppo_parameters",
        "ppo_optimizer",
        "pool_tables",
    )

    # ------------------------------------------------------------------ construction
    @property
    def ent_coef(self) -> float:
        """The entropy coefficient in use (the game's ``beta`` unless configured)."""
        return self.beta if self.config.ent_coef is None else float(self.config.ent_coef)

    def _setup(self) -> None:
        from stable_baselines3 import PPO
        from stable_baselines3.common.vec_env import DummyVecEnv

        from nlhf_envs.gym_views import SingleSeatEnv
        from nlhf_envs.matrix_game import PreferenceGameEnv
        from nlhf_envs.players import SelfPlayPool

        cfg = self.config
        self.pool = SelfPlayPool(max_size=cfg.pool_size, sampling=cfg.opponent_sampling)
        C, K = self.game.shape
        bonus = np.zeros((C, K))
        if cfg.ent_coef is None:
            bonus = self.beta * (self.l_ref + np.log(K))

        def make_env() -> Any:
            view = SingleSeatEnv(
                PreferenceGameEnv(self.game, reward_mode=cfg.reward_mode), opponent=self.pool
            )
            return _reward_term_wrapper(view, bonus) if np.any(bonus) else view

        self.vec_env = DummyVecEnv([make_env for _ in range(cfg.n_envs)])
        with _sb3_globals(self._stream_seed(0)):
            self.ppo = PPO(
                "MlpPolicy",
                self.vec_env,
                **ppo_kwargs(cfg, self.ent_coef),
                max_grad_norm=cfg.max_grad_norm,
                policy_kwargs={"net_arch": [cfg.net_width] * cfg.net_depth},
            )
            self._init_action_bias()
        self._sync_log_pi()
        self.pool.add(softmax(self.log_pi))

    def _stream_seed(self, stream: int) -> int:
        """A 63-bit seed of the agent's ``stream``-th random stream (0: init, 1 + i: iteration i)."""
        state = np.random.SeedSequence([self.seed, 7, stream]).generate_state(2, dtype=np.uint32)
        return int(state[0]) << 31 | int(state[1]) >> 1

    def _init_action_bias(self) -> None:
        import torch

        C, K = self.game.shape
        if self.config.init == "ref":
            bias = self.l_ref.mean(axis=0)  # one bias for all contexts: the rho-free mean
        elif self.config.init == "uniform":
            bias = np.zeros(K)
        else:
            bias = self.rng.standard_normal(K)
        with torch.no_grad():
            self.ppo.policy.action_net.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def _sync_log_pi(self) -> None:
        """``log_pi`` <- the PPO's log-probabilities on each one-hot context."""
        import torch

        C = self.game.num_contexts
        obs = torch.eye(C, dtype=torch.float32)
        with _sb3_globals(), torch.no_grad():
            dist = self.ppo.policy.get_distribution(obs)
            logits = dist.distribution.logits.cpu().numpy().astype(np.float64)
        self.log_pi = log_normalize(logits)

    # ------------------------------------------------------------------ learning
    def _iteration(self) -> dict[str, float]:
        cfg = self.config
        seed = self._stream_seed(1 + self.num_iterations)
        self.vec_env.seed(seed % 2**31)
        with _sb3_globals(seed):
            self.ppo.learn(total_timesteps=cfg.batch_size, reset_num_timesteps=True)
        self._sync_log_pi()
        self.pool.add(softmax(self.log_pi))
        logged = self.ppo.logger.name_to_value
        names = {
            "train/policy_gradient_loss": "loss/ppo_policy_gradient",
            "train/value_loss": "loss/ppo_value",
            "train/entropy_loss": "loss/ppo_entropy",
            "train/approx_kl": "policy/ppo_approx_kl",
            "train/clip_fraction": "policy/ppo_clip_fraction",
        }
        return {new: float(logged[old]) for old, new in names.items() if old in logged}

    # ------------------------------------------------------------------ checkpoint state
    @property
    def ppo_parameters(self) -> np.ndarray:
        """All policy and value network parameters, flattened (float32)."""
        params = [p.detach().cpu().numpy().ravel() for p in self.ppo.policy.parameters()]
        return np.concatenate(params).astype(np.float32)

    @ppo_parameters.setter
    def ppo_parameters(self, flat: np.ndarray) -> None:
        import torch

        flat = np.asarray(flat, dtype=np.float32)
        params = list(self.ppo.policy.parameters())
        total = sum(p.numel() for p in params)
        if flat.shape != (total,):
            raise ValueError(
                f"ppo_parameters: expected {total} values for this config's network; got "
                f"shape {flat.shape}"
            )
        offset = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                p.copy_(torch.as_tensor(flat[offset : offset + n]).view_as(p))
                offset += n
        self._sync_log_pi()

    @property
    def ppo_optimizer(self) -> np.ndarray:
        """Adam's state flattened as ``[steps, exp_avg, exp_avg_sq]`` (float64); empty before the
        first update."""
        opt = self.ppo.policy.optimizer
        params = list(self.ppo.policy.parameters())
        if not all(p in opt.state and opt.state[p] for p in params):
            return np.zeros(0)
        steps = [float(opt.state[p]["step"]) for p in params]
        avg = [opt.state[p]["exp_avg"].cpu().numpy().ravel() for p in params]
        sq = [opt.state[p]["exp_avg_sq"].cpu().numpy().ravel() for p in params]
        return np.concatenate([np.array(steps), *avg, *sq]).astype(np.float64)

    @ppo_optimizer.setter
    def ppo_optimizer(self, flat: np.ndarray) -> None:
        import torch

        flat = np.asarray(flat, dtype=np.float64)
        opt = self.ppo.policy.optimizer
        params = list(self.ppo.policy.parameters())
        opt.state.clear()
        if flat.size == 0:
            return
        total = sum(p.numel() for p in params)
        if flat.shape != (len(params) + 2 * total,):
            raise ValueError(
                f"ppo_optimizer: expected {len(params) + 2 * total} values; got shape {flat.shape}"
            )
        offset = len(params)
        avgs, sqs = [], []
        for p in params:
            avgs.append(flat[offset : offset + p.numel()])
            offset += p.numel()
        for p in params:
            sqs.append(flat[offset : offset + p.numel()])
            offset += p.numel()
        for i, p in enumerate(params):
            opt.state[p] = {
                "step": torch.tensor(flat[i], dtype=torch.float32),
                "exp_avg": torch.as_tensor(avgs[i], dtype=torch.float32).view_as(p).clone(),
                "exp_avg_sq": torch.as_tensor(sqs[i], dtype=torch.float32).view_as(p).clone(),
            }

    @property
    def pool_tables(self) -> np.ndarray:
        """The snapshot pool as probability tables, shape ``(N, C, K)``, oldest first."""
        C, K = self.game.shape
        return np.stack([np.reshape(t, (C, K)) for t in self.pool.snapshots])

    @pool_tables.setter
    def pool_tables(self, tables: np.ndarray) -> None:
        self.pool.clear()
        for table in np.asarray(tables, dtype=np.float64):
            self.pool.add(table)
