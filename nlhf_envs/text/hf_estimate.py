"""Estimated Nash metrics of any policy in ``nlhf/HFTokenDuel-v0`` (real models, real judges).

The estimator of :mod:`nlhf_envs.text.estimate` (Munos et al. 2024: the regularised game's fixed
point ``pi*_beta(y | x) = pi_ref(y | x) exp((g_{pi*}(y) - c) / beta)``), with the env's own parts:
its prompts (encoded as the env encodes them), its reference causal LM ``pi_ref``, its EOS, and its
text judge on decoded answers. Per prompt:

1. ``n`` answers of ``pi_ref`` are a support on which the regularised game (uniform ``pi_ref``
   mass ``1/n``) is solved by :func:`~nlhf_envs.solvers.regularized_nash`, giving ``q`` and the
   density ratio ``r(y_i) ~= n q_i``;
2. ``KL(pi* || pi) ~= sum_i q_i [log pi_ref(y_i) + log(n q_i) - log pi(y_i)]``;
3. exploitability ``beta log E_{y ~ pi_ref} exp(g_pi(y) / beta) + beta KL(pi || pi_ref) - 1/2``
   with ``g_pi(y) = E_{y' ~ pi} P(y > y')`` on fresh samples (``m`` of each side).

A judge is not required to be antisymmetric here: the preference used is the seat-averaged
``(P(a > b) + 1 - P(b > a)) / 2`` (the env's game averaged over who sits first), which equals the
judge's own probability for an antisymmetric judge. Means over prompts carry 95% t-intervals.

**Cost.** A judge with the scores interface (:meth:`~nlhf_envs.text.hf_judges.ValidatedJudge.scores`:
a Bradley-Terry reward model, :class:`~nlhf_envs.text.hf_judges.RewardModelJudge`) scores each of
a prompt's ``n + 2m`` answers once, and every pair's probability is ``sigmoid(s_a - s_b)`` (which is
its own seat average): ``n + 2m`` judge calls per prompt. Any other judge is asked for every pair
it needs, ``n (n - 1)`` support pairs and ``m^2`` fresh pairs in both orders, in one call per prompt
(in chunks of :data:`JUDGE_CHUNK` pairs, each holding both orders of its pairs). Log-probabilities
are computed only where the estimate reads them (``pi`` and ``pi_ref`` on the support and on
``pi``'s fresh answers; ``pi_ref``'s fresh answers are only judged).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nlhf_envs.errors import GameError
from nlhf_envs.progress import Progress, reporter
from nlhf_envs.text.engine import Generation, generate
from nlhf_envs.text.estimate import NashEstimate, _nash_estimate, forced_log_probs

__all__ = ["estimate_hf_nash_metrics"]


#: pairs per call of a pairwise judge (both orders of each pair in the same call)
JUDGE_CHUNK = 4096


def _texts(env: Any, gen: Generation) -> list[str]:
    rows = [gen.tokens[i][gen.mask[i]].tolist() for i in range(gen.tokens.shape[0])]
    return env.tokenizer.batch_decode(rows, skip_special_tokens=True)


def _judge_pairs(env: Any, prompt: str, pairs: list[tuple[str, str]]) -> np.ndarray:
    """``P(a > b)`` of each pair by the env's judge, float64, in calls of :data:`JUDGE_CHUNK`."""
    out = [
        env._judge([prompt] * len(pairs[i : i + JUDGE_CHUNK]), pairs[i : i + JUDGE_CHUNK])
        .double()
        .numpy()
        for i in range(0, len(pairs), JUDGE_CHUNK)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def _pairwise_preferences(
    env: Any, prompt: str, sup: list[str], ref: list[str], pol: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(P_sup, g)`` of one prompt from a pairwise judge: the seat-averaged preferences among
    the support answers ``sup`` (``[n, n]``, diagonal ``1/2``) and ``g[i]``, the mean seat-averaged
    preference of ``ref[i]`` over the answers ``pol`` (``[m]``). Every pair is asked in both
    orders, next to each other, in the same call."""
    n, m = len(sup), len(ref)
    iu, ju = np.triu_indices(n, k=1)
    pairs: list[tuple[str, str]] = []
    for i, j in zip(iu.tolist(), ju.tolist(), strict=True):
        pairs += [(sup[i], sup[j]), (sup[j], sup[i])]
    for a in ref:
        for b in pol:
            pairs += [(a, b), (b, a)]
    p = _judge_pairs(env, prompt, pairs)
    k = 2 * len(iu)
    raw = np.full((n, n), 0.5)
    raw[iu, ju], raw[ju, iu] = p[0:k:2], p[1:k:2]
    P = (raw + 1.0 - raw.T) / 2.0
    P[np.arange(n), np.arange(n)] = 0.5
    ab, ba = p[k::2].reshape(m, m), p[k + 1 :: 2].reshape(m, m)
    return P, ((ab + 1.0 - ba) / 2.0).mean(axis=1)


def _scored_preferences(
    env: Any, prompt: str, sup: list[str], ref: list[str], pol: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(P_sup, g)`` as :func:`_pairwise_preferences`, from the judge's scores: each distinct
    answer scored once, ``P(a > b) = sigmoid(s_a - s_b)`` (its own seat average)."""
    texts = sup + ref + pol
    distinct = list(dict.fromkeys(texts))
    where = {t: k for k, t in enumerate(distinct)}
    s = env._judge.scores([prompt] * len(distinct), distinct).numpy()
    r = s[[where[t] for t in texts]]
    n, m = len(sup), len(ref)
    r_sup, r_ref, r_pol = r[:n], r[n : n + m], r[n + m :]
    P = _sigmoid(r_sup[:, None] - r_sup[None, :])
    P[np.arange(n), np.arange(n)] = 0.5
    return P, _sigmoid(r_ref[:, None] - r_pol[None, :]).mean(axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


@torch.no_grad()
def estimate_hf_nash_metrics(
    policy: Any,
    env: Any,
    *,
    split: str = "heldout",
    num_prompts: int = 16,
    n: int = 32,
    m: int = 32,
    seed: int = 0,
    beta: float | None = None,
    device: torch.device | str = "cpu",
    progress: Progress = None,
) -> NashEstimate:
    """Estimate exploitability and ``KL(pi* || pi)`` of ``policy`` in a
    :class:`~nlhf_envs.text.hf_env.HFTokenDuelEnv` (see the module docstring).

    Args:
        policy: a policy of the engine's signature over the env's tokenizer (e.g. an
            :class:`~nlhf_envs.text.hf.HFPolicy`; ``env.reference`` is ``pi_ref``).
        env: the env (its prompts, reference, EOS and judge).
        split: ``"heldout"``, ``"train"``, ``"all"`` or ``"validation"`` prompts of the env.
        num_prompts: prompts drawn without replacement (all of them when fewer).
        n: ``pi_ref`` samples per prompt on which the game is solved.
        m: fresh samples per prompt of ``pi_ref`` and of ``policy``.
        seed: seed of the prompt choice and of every sample.
        beta: KL strength (default: the env's).
        device: where generation runs (the models must be there).
        progress: ``None`` (silent), ``True`` (a bar on stderr) or a callable receiving
            :class:`~nlhf_envs.progress.ProgressEvent` objects (task ``"nash estimate"``, in
            steps: three samplings, two log-probability passes, then one step per prompt judged);
            an exception it raises (e.g. ``KeyboardInterrupt``) stops the estimate there.

    Returns:
        A :class:`~nlhf_envs.text.estimate.NashEstimate`; ``per_prompt["prompt_index"]`` indexes
        ``env.prompts[split]``.

    Raises:
        GameError: for non-positive sample sizes or a split without prompts.
    """
    from nlhf_envs.text.hf_prompts import prompt_text

    for name, v in (("num_prompts", num_prompts), ("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise GameError(f"{name} must be a positive integer, got {v!r}")
    pool = env.prompts.get(split) if split in ("train", "heldout", "all", "validation") else None
    if not pool:
        raise GameError(f"split {split!r} of the env has no prompts")
    beta = env.beta if beta is None else float(beta)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(pool), size=min(num_prompts, len(pool)), replace=False))
    prompts = [pool[int(i)] for i in chosen]
    rows = [env.encode_prompt(p, int(i)) for p, i in zip(prompts, chosen, strict=True)]
    width = env.max_prompt_tokens
    p_ids = torch.full((len(rows), width), env.pad_id, dtype=torch.long)
    p_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, ids in enumerate(rows):
        p_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        p_mask[r, width - len(ids) :] = True
    device = torch.device(device)
    p_ids, p_mask = p_ids.to(device), p_mask.to(device)
    ref = env.reference
    C, L = len(rows), env.max_new_tokens
    gen = torch.Generator(device).manual_seed(int(seed))
    scored = bool(getattr(env._judge, "has_scores", False))
    with reporter(progress, "nash estimate", 5 + C, "steps") as bar:

        def sample(model: Any, k: int) -> tuple[Generation, torch.Tensor, torch.Tensor]:
            ids, mask = p_ids.repeat_interleave(k, 0), p_mask.repeat_interleave(k, 0)
            g = generate(model, ids, mask, L, generator=gen, eos_id=env.eos_id)
            bar.advance()
            return g, ids, mask

        def log_probs(sampled: tuple[Generation, torch.Tensor, torch.Tensor], k: int) -> Any:
            g, ids, mask = sampled
            lp_pol = forced_log_probs(policy, ids, mask, g.tokens, g.mask)
            lp_ref = forced_log_probs(ref, ids, mask, g.tokens, g.mask)
            bar.advance()
            return lp_pol.reshape(C, k).cpu(), lp_ref.reshape(C, k).cpu()

        sup = sample(ref, n)
        fresh_ref = sample(ref, m)
        fresh_pol = sample(policy, m)
        sup_pol, sup_ref = log_probs(sup, n)
        fp_pol, fp_ref = log_probs(fresh_pol, m)
        sup_t, fr_t, fp_t = (
            _texts(env, sup[0]),
            _texts(env, fresh_ref[0]),
            _texts(env, fresh_pol[0]),
        )
        P_sup = np.empty((C, n, n))
        g_pi = np.empty((C, m))
        preferences = _scored_preferences if scored else _pairwise_preferences
        for c in range(C):
            P_sup[c], g_pi[c] = preferences(
                env,
                prompt_text(prompts[c]),
                sup_t[c * n : (c + 1) * n],
                fr_t[c * m : (c + 1) * m],
                fp_t[c * m : (c + 1) * m],
            )
            bar.advance()
    return _nash_estimate(P_sup, sup_ref, sup_pol, fp_pol, fp_ref, g_pi, beta, chosen)
