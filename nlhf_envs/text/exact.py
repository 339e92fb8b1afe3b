"""Exact token games: enumerate every answer, build the contextual matrix game, measure token policies.

When answers have at most ``L`` tokens over a small answer alphabet (the tiny worlds:
six answer words, ``L = 3``), the answers to a prompt form a finite set ``Y`` and the token duel *is* a
contextual matrix game (Tiapkin et al. 2025 and Munos et al. 2024 state NLHF on such sets):

- contexts are prompts (of a split), uniformly weighted;
- actions are the answers of :func:`enumerate_answers`;
- ``pi(y | x)`` of a token policy is the product of its token probabilities up to and including
  ``<eos>``; an answer that reaches ``L`` tokens without ``<eos>`` is truncated by the rules and has no
  ``<eos>`` factor. Over ``Y`` these probabilities sum to 1 for any policy that never emits a token
  outside the world's answer alphabet (the world's language models suppress the others; see
  :attr:`nlhf_envs.text.world.World.suppressed_token_ids`), which :func:`sequence_policy` checks;
- ``P_x[y, y']`` is the paying judge's (or the ground truth's) probability, made exactly
  antisymmetric in float64 after checking that ``P + P^T = 1`` holds to ``1e-5``.

:func:`exact_game` returns a :class:`~nlhf_envs.game.PreferenceGame`, so
:func:`~nlhf_envs.solvers.regularized_nash`, :func:`~nlhf_envs.solvers.exploitability` and
:func:`~nlhf_envs.solvers.kl_to_nash` apply unchanged; :func:`exact_metrics` measures a token policy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nlhf_envs.game import PreferenceGame
from nlhf_envs.text.ground_truth import GroundTruth, ground_truth
from nlhf_envs.text.judging import PairwiseJudge, content_mask
from nlhf_envs.text.models import (
    Judge,
    TinyCausalLM,
    judge_digest,
    load_reference_policy,
    module_digest,
)
from nlhf_envs.text.tokenizer import EOS
from nlhf_envs.text.world import World, get_world

__all__ = [
    "ExactSetting",
    "enumerate_answers",
    "answer_tensors",
    "exact_game",
    "exact_metrics",
    "preference_matrix",
    "resolve_setting",
    "sequence_log_probs_exact",
    "sequence_policy",
]

#: Worlds with more answers per prompt than this are refused (use :mod:`nlhf_envs.text.estimate`).
MAX_ANSWERS = 5000
#: Largest mass a policy may put outside the enumerated answers before :func:`sequence_policy` refuses.
MASS_TOLERANCE = 1e-6


@dataclass
class ExactSetting:
    """What an exact game is built from: the world, the paying judge and the KL strength."""

    world: World
    judge: PairwiseJudge
    beta: float
    max_new_tokens: int


def resolve_setting(env_or_id: Any) -> ExactSetting:
    """The :class:`ExactSetting` of a token-duel env, a registered token-duel id, or a world name.

    A world name (or :class:`~nlhf_envs.text.world.World`) takes the world's latest shipped judge
    and ``beta``.

    Raises:
        ValueError: for an id that is not a token duel.
    """
    if isinstance(env_or_id, World):
        from nlhf_envs.text.env import default_judge

        return ExactSetting(
            env_or_id, default_judge(env_or_id), env_or_id.beta, env_or_id.max_new_tokens
        )
    if isinstance(env_or_id, str):
        from nlhf_envs.registration import TEXT_ENV_IDS

        if env_or_id in TEXT_ENV_IDS:
            from nlhf_envs.text.env import TokenDuelEnv

            env_or_id = TokenDuelEnv(**TEXT_ENV_IDS[env_or_id])
        else:
            try:
                return resolve_setting(get_world(env_or_id))
            except ValueError:
                raise ValueError(
                    f"{env_or_id!r} is neither a token-duel id ({', '.join(TEXT_ENV_IDS)}) nor a "
                    "world name"
                ) from None
    world = getattr(env_or_id, "world", None)
    judge = getattr(env_or_id, "judge", None)
    if not isinstance(world, World) or judge is None:
        raise TypeError(f"expected a token-duel env, id or world; got {type(env_or_id).__name__}")
    return ExactSetting(world, judge, float(env_or_id.beta), int(env_or_id.max_new_tokens))


def enumerate_answers(env_or_id: Any) -> list[tuple[int, ...]]:
    """Every answer the rules allow, as token tuples.

    An answer is ``k < L`` answer words followed by ``<eos>`` (so ``(<eos>,)`` is the empty answer),
    or ``L`` answer words without ``<eos>`` (cut by the rules at ``max_new_tokens = L``). Order: by
    length, then by the order of the world's answer tokens. There are ``sum_{k<=L} V^k`` of them for
    ``V`` answer words (259 in the tiny worlds).

    Raises:
        ValueError: when there are more than :data:`MAX_ANSWERS`.
    """
    s = resolve_setting(env_or_id)
    return _answers(s.world, s.max_new_tokens)


def _answers(world: World, L: int) -> list[tuple[int, ...]]:
    words = world.answer_token_ids[1:]
    count = sum(len(words) ** k for k in range(L + 1))
    if count > MAX_ANSWERS:
        raise ValueError(
            f"world {world.name!r} has {count} answers per prompt (answers of up to {L} tokens "
            f"over {len(words)} words); exact games take at most {MAX_ANSWERS}: use "
            "nlhf_envs.text.estimate for estimated Nash metrics"
        )
    out: list[tuple[int, ...]] = []
    for k in range(L):
        out += [(*p, EOS) for p in itertools.product(words, repeat=k)]
    out += list(itertools.product(words, repeat=L))
    return out


def answer_tensors(
    answers: list[tuple[int, ...]], width: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(ids, mask)`` ``[N, width]`` of token tuples (the mask covers every token)."""
    ids = torch.zeros((len(answers), width), dtype=torch.long)
    mask = torch.zeros((len(answers), width), dtype=torch.bool)
    for i, a in enumerate(answers):
        ids[i, : len(a)] = torch.tensor(a, dtype=torch.long)
        mask[i, : len(a)] = True
    return ids.to(device), mask.to(device)


def _prompt_tensors(world: World, split: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    texts = [world.prompts.texts[i] for i in world.prompts.indices(split)]
    ids, mask = world.tokenizer.encode_prompts(texts, world.prompt_len)
    return texts, ids, mask


@torch.no_grad()
def sequence_log_probs_exact(
    policy: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answers: list[tuple[int, ...]],
    chunk: int = 4096,
) -> np.ndarray:
    """``log pi(y | x)`` in float64, ``[C, N]``, for every prompt and every answer.

    One forward pass per prefix length over all distinct prefixes (a prefix tree), so the cost is
    ``C x (number of distinct prefixes)`` sequences, not ``C x N``.

    Args:
        policy: a policy of the engine's signature (``policy(input_ids, attention_mask) -> (logits,
            cache)``), e.g. a :class:`~nlhf_envs.text.models.TinyCausalLM`.
        prompt_ids: ``[C, P]`` left-padded prompts; ``prompt_mask`` their mask.
        prompt_mask: ``[C, P]`` bool.
        answers: token tuples (see :func:`enumerate_answers`).
        chunk: rows per forward pass.
    """
    device = prompt_ids.device
    C = prompt_ids.shape[0]
    prefixes: dict[int, dict[tuple[int, ...], int]] = {}
    for a in answers:
        for t in range(len(a)):
            prefixes.setdefault(t, {}).setdefault(a[:t], len(prefixes.get(t, {})))
    step_lp: dict[int, torch.Tensor] = {}
    for t, index in prefixes.items():
        pref = torch.tensor(list(index), dtype=torch.long, device=device).reshape(len(index), t)
        n = len(index)
        rows_ids = torch.cat(
            [prompt_ids.repeat_interleave(n, 0), pref.repeat(C, 1)], dim=1
        )  # [C * n, P + t]
        rows_mask = torch.cat(
            [
                prompt_mask.bool().repeat_interleave(n, 0),
                torch.ones(C * n, t, dtype=torch.bool, device=device),
            ],
            dim=1,
        )
        out = []
        for lo in range(0, C * n, chunk):
            logits, _ = policy(rows_ids[lo : lo + chunk], attention_mask=rows_mask[lo : lo + chunk])
            out.append(F.log_softmax(logits[:, -1].double(), dim=-1))
        step_lp[t] = torch.cat(out).reshape(C, n, -1).cpu()
    total = torch.zeros(C, len(answers), dtype=torch.float64)
    for t in sorted(step_lp):
        cols = [i for i, a in enumerate(answers) if len(a) > t]
        pidx = torch.tensor([prefixes[t][answers[i][:t]] for i in cols], dtype=torch.long)
        tok = torch.tensor([answers[i][t] for i in cols], dtype=torch.long)
        total[:, cols] += step_lp[t][:, pidx, tok]
    return total.numpy()


def sequence_policy(
    model: Any, env_or_id: Any, split: str = "heldout", *, check: bool = True
) -> np.ndarray:
    """The exact ``(C, N)`` sequence distribution of a token policy over :func:`enumerate_answers`,
    for the prompts of ``split`` (rows in the order of ``world.prompts.indices(split)``).

    Args:
        model: a policy of the engine's signature (moved nowhere: prompts go to its device when it has
            parameters).
        env_or_id: a token-duel env, id or world name.
        split: ``"heldout"``, ``"train"`` or ``"all"``.
        check: refuse (``ValueError``) when a row's mass over the answers is below ``1 - 1e-6`` (the
            policy emits tokens outside the answer alphabet).
    """
    s = resolve_setting(env_or_id)
    answers = _answers(s.world, s.max_new_tokens)
    _, ids, mask = _prompt_tensors(s.world, split)
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    if params:
        ids, mask = ids.to(params[0].device), mask.to(params[0].device)
    lp = sequence_log_probs_exact(model, ids, mask, answers)
    pi = np.exp(lp)
    mass = pi.sum(axis=1)
    if check and np.any(np.abs(mass - 1.0) > MASS_TOLERANCE):
        r = int(np.argmax(np.abs(mass - 1.0)))
        raise ValueError(
            f"the policy puts mass {1.0 - mass[r]:.3g} outside the {len(answers)} answers of world "
            f"{s.world.name!r} on prompt {r} (it emits tokens outside the answer alphabet); exact "
            "metrics need a policy over the answer alphabet (suppress the other tokens)"
        )
    return pi / mass[:, None]


@torch.no_grad()
def preference_matrix(
    judge: PairwiseJudge,
    world: World,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answers_a: tuple[torch.Tensor, torch.Tensor],
    answers_b: tuple[torch.Tensor, torch.Tensor] | None = None,
    chunk: int = 65536,
) -> np.ndarray:
    """``P(a_i > b_j | x)`` for one prompt and all pairs, float64 ``[N_a, N_b]``.

    The learned judge encodes each answer once and scores all pairs with its pair network (the same
    numbers as :meth:`~nlhf_envs.text.judging.PairwiseJudge.prob`, computed in bulk); the ground truth
    computes each answer's features once; any other judge is called on all pairs in chunks.

    Args:
        judge: the paying judge.
        world: the world (its ground truth is used when ``judge`` is a ground truth).
        prompt_ids: ``[1, P]`` prompt ids; ``prompt_mask`` its mask.
        prompt_mask: ``[1, P]``.
        answers_a: ``(ids, mask)`` ``[N_a, L]`` (masks cover the tokens, ``<eos>`` included).
        answers_b: the same for the second answers (default: ``answers_a``).
        chunk: pairs per call of a generic judge.
    """
    answers_b = answers_a if answers_b is None else answers_b
    (a_ids, a_mask), (b_ids, b_mask) = answers_a, answers_b
    na, nb = a_ids.shape[0], b_ids.shape[0]
    if isinstance(judge, GroundTruth):
        spec = world.parse_prompt(prompt_ids[0][prompt_mask[0].bool()].tolist())
        fa = np.array(
            [world.answer_features(spec, r[m].tolist()) for r, m in zip(a_ids, a_mask, strict=True)]
        )
        fb = np.array(
            [world.answer_features(spec, r[m].tolist()) for r, m in zip(b_ids, b_mask, strict=True)]
        )
        return world.population_prob(fa[:, None], fb[None, :])
    if isinstance(judge, Judge):
        net, dev = judge.net, judge.device
        p_ids, p_mask = prompt_ids.to(dev), prompt_mask.to(dev)
        h_x = net.encode_prompt(p_ids, content_mask(p_ids, p_mask.bool(), cut_at_eos=False))
        cm_a = content_mask(a_ids.to(dev), a_mask.to(dev), cut_at_eos=True)
        cm_b = content_mask(b_ids.to(dev), b_mask.to(dev), cut_at_eos=True)
        u_a = net.encode_answer(h_x.expand(na, -1), a_ids.to(dev), cm_a)
        u_b = net.encode_answer(h_x.expand(nb, -1), b_ids.to(dev), cm_b)
        d = h_x.shape[1]
        if a_ids is b_ids and a_mask is b_mask:
            # one game matrix: f(a, b) once for every ordered pair, P = sigmoid(f - f^T) (half the
            # pair-network calls of the generic rows below, the same numbers up to float rounding)
            f = torch.empty(na, na, dtype=torch.float64, device=dev)
            step = max(1, chunk // max(1, na))
            for lo in range(0, na, step):
                ua = u_a[lo : lo + step]
                k = ua.shape[0]
                x = torch.cat(
                    [
                        ua[:, None].expand(k, na, d),
                        u_a[None].expand(k, na, d),
                        h_x.expand(k, na, d),
                    ],
                    -1,
                )
                f[lo : lo + k] = net.pair_mlp(x)[..., 0].double()
            return torch.sigmoid(f - f.T).cpu().numpy()
        rows = []
        step = max(1, chunk // max(1, nb))
        for lo in range(0, na, step):
            ua = u_a[lo : lo + step]
            k = ua.shape[0]
            x_ab = torch.cat(
                [ua[:, None].expand(k, nb, d), u_b[None].expand(k, nb, d), h_x.expand(k, nb, d)],
                -1,
            )
            x_ba = torch.cat(
                [u_b[None].expand(k, nb, d), ua[:, None].expand(k, nb, d), h_x.expand(k, nb, d)],
                -1,
            )
            f_ab = net.pair_mlp(x_ab)[..., 0].double()
            f_ba = net.pair_mlp(x_ba)[..., 0].double()
            rows.append(torch.sigmoid(f_ab - f_ba))
        return torch.cat(rows).cpu().numpy()
    out = np.empty((na, nb))
    ii, jj = np.meshgrid(np.arange(na), np.arange(nb), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    for lo in range(0, ii.size, chunk):
        i, j = torch.as_tensor(ii[lo : lo + chunk]), torch.as_tensor(jj[lo : lo + chunk])
        p = judge.prob(
            prompt_ids.expand(len(i), -1),
            a_ids[i],
            b_ids[j],
            prompt_mask=prompt_mask.expand(len(i), -1),
            mask_a=a_mask[i],
            mask_b=b_mask[j],
        )
        out[ii[lo : lo + chunk], jj[lo : lo + chunk]] = p.double().cpu().numpy()
    return out


def _antisymmetrise(P: np.ndarray, source: str) -> np.ndarray:
    dev = np.abs(P + np.swapaxes(P, -1, -2) - 1.0)
    if dev.max() > 1e-5:
        idx = np.unravel_index(int(np.argmax(dev)), dev.shape)
        raise ValueError(
            f"{source} is not antisymmetric: P(a > b) + P(b > a) deviates from 1 by "
            f"{dev.max():.3g} at {tuple(int(i) for i in idx)}"
        )
    P = 0.5 * (P + 1.0 - np.swapaxes(P, -1, -2))
    i = np.arange(P.shape[-1])
    P[..., i, i] = 0.5
    return P


_GAME_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray, list[str]]] = {}
_REFERENCES: dict[str, TinyCausalLM] = {}


def _reference(world: World) -> TinyCausalLM:
    key = world.language.name
    if key not in _REFERENCES:
        _REFERENCES[key] = load_reference_policy(world=world)
    return _REFERENCES[key]


def exact_game(
    env_or_id: Any,
    split: str = "heldout",
    payer: str = "judge",
    beta: float | None = None,
    *,
    reference: Any = None,
) -> PreferenceGame:
    """The token duel of an enumerable world as a contextual :class:`~nlhf_envs.game.PreferenceGame`.

    Contexts are the prompts of ``split`` (uniform ``rho``), actions the answers of
    :func:`enumerate_answers`, ``pi_ref`` the reference LM's exact sequence probabilities, ``P`` the
    payer's preferences. Built in a few seconds on one core (the tiny worlds) and cached in memory by
    the content of everything it depends on (world config, judge weights, reference weights, split);
    each call returns a fresh game object.

    Args:
        env_or_id: a token-duel env, id or world name.
        split: prompt split.
        payer: ``"judge"`` (the env's judge) or ``"ground_truth"`` (the annotator population).
        beta: KL strength (default: the env's).
        reference: ``pi_ref`` (default: the world's shipped reference policy).

    Raises:
        ValueError: for an unknown payer, a world too large to enumerate, or a judge that is not
            antisymmetric.
    """
    s = resolve_setting(env_or_id)
    if payer not in ("judge", "ground_truth"):
        raise ValueError(f"unknown payer {payer!r}; expected 'judge' or 'ground_truth'")
    judge = s.judge if payer == "judge" else ground_truth(s.world)
    ref = reference if reference is not None else _reference(s.world)
    jd = judge_digest(judge)
    key = (
        (s.world.fingerprint, s.max_new_tokens, split, jd, module_digest(ref))
        if jd is not None and isinstance(ref, torch.nn.Module)
        else None
    )
    if key is not None and key in _GAME_CACHE:
        P, pi_ref, names = _GAME_CACHE[key]
    else:
        answers = _answers(s.world, s.max_new_tokens)
        names, ids, mask = _prompt_tensors(s.world, split)
        a = answer_tensors(answers, s.max_new_tokens)
        P = np.stack(
            [
                preference_matrix(judge, s.world, ids[c : c + 1], mask[c : c + 1], a)
                for c in range(ids.shape[0])
            ]
        )
        P = _antisymmetrise(P, f"the {payer} of world {s.world.name!r}")
        pi_ref = np.exp(sequence_log_probs_exact(ref, ids, mask, answers))
        mass = pi_ref.sum(axis=1)
        if np.any(np.abs(mass - 1.0) > MASS_TOLERANCE):
            raise ValueError(
                f"the reference policy puts mass {1.0 - mass.min():.3g} outside the answers of "
                f"world {s.world.name!r}"
            )
        pi_ref = pi_ref / mass[:, None]
        if key is not None:
            _GAME_CACHE[key] = (P, pi_ref, names)
    return PreferenceGame(
        P,
        pi_ref,
        s.beta if beta is None else beta,
        name=f"{s.world.name}/{split}/{payer}",
        atol=1e-9,
    )


def exact_metrics(
    model: Any,
    game: PreferenceGame,
    env_or_id: Any,
    split: str = "heldout",
    nash: np.ndarray | None = None,
) -> dict[str, float]:
    """Exact Nash metrics of a token policy in ``game`` (from :func:`exact_game` with ``split``).

    Returns:
        ``exploitability`` (``max_pi' P_beta(pi' > pi) - 1/2``), ``kl_to_nash`` (``E_x KL(pi* ||
        pi)``) and ``kl_ref`` (``E_x KL(pi || pi_ref)``).
    """
    from nlhf_envs.solvers import exploitability, kl, kl_to_nash, regularized_nash

    pi = sequence_policy(model, env_or_id, split)
    star = regularized_nash(game) if nash is None else nash
    return {
        "exploitability": exploitability(game, pi),
        "kl_to_nash": kl_to_nash(game, pi, star),
        "kl_ref": float(game.rho @ kl(pi, game.pi_ref)),
    }
