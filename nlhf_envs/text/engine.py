"""Batched token duels on torch tensors: the rules, generation with KV caches, and payment.

The rules of a duel live here once and are used both by :class:`DuelEngine` (``B`` duels at once,
policies sampled inside) and by the PettingZoo env (one duel, actions from outside):

1. :func:`new_answers` starts ``B`` empty answers of at most ``max_new_tokens`` tokens.
2. :func:`apply_tokens` appends one token to every unfinished answer; an answer finishes when it emits
   ``<eos>`` (which is kept, and counts in its mask) or reaches ``max_new_tokens``. Tokens offered for a
   finished answer are ignored.
3. :func:`settle` asks the paying judge for ``p = P(y0 > y1 | x)``, draws ``o = 1[u < p]`` from a given
   uniform ``u``, and pays with :func:`nlhf_envs.rewards.duel_rewards`.

A *policy* is any callable ``policy(input_ids, attention_mask=None, past_key_values=None) ->
(logits [B, T, V], cache)`` with Hugging Face semantics for the mask (it covers past and new positions)
and the cache (opaque, returned by the previous call); :class:`~nlhf_envs.text.models.TinyCausalLM`,
:class:`GeometricMixture` and the Hugging Face adapter are policies. A policy whose class sets
``supports_logits_to_keep = True`` also takes the keywords ``logits_to_keep`` (an int: only the last
that many positions' logits are computed, ``0`` all) and ``use_cache`` (``False``: no cache is built
or returned); :func:`policy_logits` calls a policy with them when it can and slices otherwise, so
a scoring pass never computes the prompt's logits and generation's first call only the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from nlhf_envs.rewards import check_reward_mode, duel_rewards
from nlhf_envs.text.judging import PairwiseJudge, check_token_ids
from nlhf_envs.text.tokenizer import EOS, PAD, Tokenizer
from nlhf_envs.text.world import World, get_world

PAYERS: tuple[str, ...] = ("judge", "ground_truth")


class Policy(Protocol):
    """A causal LM over the duel's vocabulary (see the module docstring)."""

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any | None = None,
    ) -> tuple[torch.Tensor, Any]: ...


def policy_logits(
    policy: Policy,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    past_key_values: Any | None = None,
    *,
    logits_to_keep: int = 0,
    use_cache: bool = True,
) -> tuple[torch.Tensor, Any]:
    """``policy``'s logits of the last ``logits_to_keep`` positions (``0``: all) and its cache.

    A policy that declares ``supports_logits_to_keep`` computes only those logits (a Hugging Face
    causal LM projects only those hidden states onto its vocabulary) and, with ``use_cache=False``,
    builds no cache (``None`` is returned); any other policy runs as usual and its logits are
    sliced. The kept logits are the same either way.
    """
    if getattr(policy, "supports_logits_to_keep", False):
        return policy(
            input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            logits_to_keep=logits_to_keep,
            use_cache=use_cache,
        )
    logits, cache = policy(
        input_ids, attention_mask=attention_mask, past_key_values=past_key_values
    )
    if logits_to_keep:
        logits = logits[:, -logits_to_keep:]
    return logits, cache


def trim_left_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``[B, P]`` rows cut to the batch's longest one (the leading columns that are
    padding in every row are dropped). Positions are counted over the mask, so every policy gives
    the same logits for the cut rows."""
    real = mask.bool().any(0).nonzero()
    if real.numel() == 0:
        return ids, mask
    first = int(real[0, 0])
    if first == 0:
        return ids, mask
    return ids[:, first:], mask[:, first:]


# ------------------------------------------------------------------------------------------ rules


@dataclass
class AnswerState:
    """``B`` answers being written.

    Attributes:
        tokens: ``[B, N]`` int64, ``<pad>`` after each answer's end.
        lengths: ``[B]`` int64, tokens written so far (``<eos>`` included).
        finished: ``[B]`` bool.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``[B, N]`` bool, true on written tokens."""
        n = self.tokens.shape[1]
        return torch.arange(n, device=self.tokens.device)[None, :] < self.lengths[:, None]


def new_answers(
    batch_size: int, max_new_tokens: int, device: torch.device | str = "cpu"
) -> AnswerState:
    """``batch_size`` empty answers of at most ``max_new_tokens`` tokens."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    return AnswerState(
        tokens=torch.full((batch_size, max_new_tokens), PAD, dtype=torch.long, device=device),
        lengths=torch.zeros(batch_size, dtype=torch.long, device=device),
        finished=torch.zeros(batch_size, dtype=torch.bool, device=device),
    )


def apply_tokens(state: AnswerState, actions: torch.Tensor, eos_id: int = EOS) -> torch.Tensor:
    """Append ``actions[b]`` to every unfinished answer ``b`` (in place); the rule of the duel.

    Returns:
        ``[B]`` bool: which answers took their token (those unfinished before the call).
    """
    active = ~state.finished
    rows = active.nonzero().squeeze(1)
    state.tokens[rows, state.lengths[rows]] = actions[rows]
    state.lengths += active.long()
    state.finished |= active & ((actions == eos_id) | (state.lengths >= state.tokens.shape[1]))
    return active


@dataclass
class Payoff:
    """What a batch of finished duels pays.

    Attributes:
        prob: ``P(y0 > y1 | x)`` of the paying judge, float ``[B]``.
        judge_prob: the learned judge's probability, or ``None`` if no judge was given.
        true_prob: the ground truth ``P*``, or ``None`` when not computed.
        outcome: ``1[u < prob]``, float ``[B]`` (1 = ``player_0`` wins).
        reward_0: reward of ``player_0``, float ``[B]`` (see :mod:`nlhf_envs.rewards`).
        reward_1: reward of ``player_1``.
    """

    prob: torch.Tensor
    judge_prob: torch.Tensor | None
    true_prob: torch.Tensor | None
    outcome: torch.Tensor
    reward_0: torch.Tensor
    reward_1: torch.Tensor


def settle(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answers_0: AnswerState,
    answers_1: AnswerState,
    uniforms: torch.Tensor,
    *,
    judge: PairwiseJudge | None,
    truth: PairwiseJudge | None,
    payer: str,
    reward_mode: str,
) -> Payoff:
    """Pay finished duels; the payment rule of the duel.

    Args:
        prompt_ids: ``[B, P]`` prompt ids; ``prompt_mask`` ``[B, P]``.
        prompt_mask: mask of ``prompt_ids``.
        answers_0: the answers of ``player_0``.
        answers_1: the answers of ``player_1``.
        uniforms: ``[B]`` uniform draws in [0, 1); ``outcome = 1[u < prob]``.
        judge: the learned judge (scored when given).
        truth: the ground truth (scored when given).
        payer: ``"judge"`` or ``"ground_truth"``: whose probability pays.
        reward_mode: see :mod:`nlhf_envs.rewards`.
    """
    probs: dict[str, torch.Tensor | None] = {"judge": None, "ground_truth": None}
    for name, j in (("judge", judge), ("ground_truth", truth)):
        if j is not None:
            p = j.prob(
                prompt_ids,
                answers_0.tokens,
                answers_1.tokens,
                prompt_mask=prompt_mask,
                mask_a=answers_0.mask,
                mask_b=answers_1.mask,
            )
            probs[name] = p.to(uniforms.device)
    prob = probs[payer]
    if prob is None:
        raise ValueError(f"payer {payer!r} needs its judge; none was given")
    outcome, r0, r1 = pay(prob, uniforms, reward_mode)
    return Payoff(prob, probs["judge"], probs["ground_truth"], outcome, r0, r1)


def pay(
    prob: torch.Tensor, uniforms: torch.Tensor, reward_mode: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outcome ``o = 1[u < p]`` and both rewards (:func:`nlhf_envs.rewards.duel_rewards`), float ``[B]``."""
    prob = prob.to(uniforms.device)
    outcome = (uniforms < prob).float()
    r0, r1 = duel_rewards(prob.double().cpu().numpy(), outcome.double().cpu().numpy(), reward_mode)
    device = uniforms.device
    return (
        outcome,
        torch.as_tensor(np.asarray(r0), dtype=torch.float32, device=device),
        torch.as_tensor(np.asarray(r1), dtype=torch.float32, device=device),
    )


# ------------------------------------------------------------------------------------ generation


@dataclass
class Generation:
    """Answers sampled from a policy.

    Attributes:
        tokens: ``[B, N]`` int64; ``<pad>`` after each answer's end.
        log_probs: ``[B, N]`` float32 log-probabilities of the sampled tokens under the sampling
            distribution (0 where ``mask`` is false); detached.
        mask: ``[B, N]`` bool; true on the answer's tokens, its ``<eos>`` included.
        lengths: ``[B]`` int64 (``mask.sum(-1)``).
    """

    tokens: torch.Tensor
    log_probs: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor

    @property
    def state(self) -> AnswerState:
        """The answers as a finished :class:`AnswerState`."""
        return AnswerState(
            self.tokens, self.lengths, torch.ones_like(self.lengths, dtype=torch.bool)
        )


def _check_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, vocab_size: int) -> None:
    check_token_ids(prompt_ids, vocab_size, "prompt_ids")
    if tuple(prompt_mask.shape) != tuple(prompt_ids.shape):
        raise ValueError(
            f"prompt_mask must have shape {tuple(prompt_ids.shape)}; got {tuple(prompt_mask.shape)}"
        )


@torch.no_grad()
def generate(
    policy: Policy,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    *,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    use_cache: bool = True,
    eos_id: int = EOS,
    sampler: str = "multinomial",
    prompt_rows: torch.Tensor | None = None,
) -> Generation:
    """Sample one answer per prompt, all ``B`` at once.

    With ``use_cache`` the prompt is encoded once and each step feeds one token per row with the
    policy's KV cache; without it every step re-runs the whole sequence (the same samples, slower; kept
    for benchmarks and tests).

    Args:
        policy: the policy (see :class:`Policy`).
        prompt_ids: ``[B, P]`` left-padded ``<bos> ... <sep>`` ids.
        prompt_mask: ``[B, P]`` bool, true on real prompt tokens.
        max_new_tokens: the longest answer, ``<eos>`` included.
        generator: torch generator for the samples (on the tensors' device).
        temperature: logits are divided by it; the returned log-probs are those of the tempered
            distribution.
        use_cache: use the policy's KV cache.
        eos_id: the end token.
        sampler: ``"multinomial"`` (default; ``torch.multinomial``, the seeded samples of every
            shipped result) or ``"inverse_cdf"`` (:func:`sample_inverse_cdf`: one uniform per row,
            cheaper per step; the same distribution, other samples for the same seed).
        prompt_rows: ``[R]`` int64, rows may repeat: row ``i`` of the batch answers prompt
            ``prompt_rows[i]`` (both seats of a self-play pair: ``arange(B).repeat(2)``). With
            the cache, each distinct prompt is encoded once and its KV cache and last logits are
            gathered to its rows (:func:`select_cache_rows`): the same samples as with the prompts
            repeated, up to float rounding. ``None``: one row per prompt.

    Returns:
        The :class:`Generation` (``R`` rows with ``prompt_rows``).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    unique_ids, unique_mask = prompt_ids, prompt_mask
    if prompt_rows is not None:
        prompt_rows = prompt_rows.to(prompt_ids.device)
        prompt_ids, prompt_mask = prompt_ids[prompt_rows], prompt_mask[prompt_rows]
    batch, p_len = prompt_ids.shape
    device = prompt_ids.device
    state = new_answers(batch, max_new_tokens, device)
    log_probs = torch.zeros(batch, max_new_tokens, device=device)
    # mask and sequence preallocated for the whole answer and written in place (no torch.cat)
    full_mask = torch.zeros(batch, p_len + max_new_tokens, dtype=torch.bool, device=device)
    full_mask[:, :p_len] = prompt_mask.bool()
    full_seq = None
    if not use_cache:
        full_seq = torch.full((batch, p_len + max_new_tokens), PAD, dtype=torch.long, device=device)
        full_seq[:, :p_len] = prompt_ids
    pad = torch.full((batch,), PAD, dtype=torch.long, device=device)
    # the prompt's pass needs the last position's logits only (and builds the cache)
    logits = cache = None
    if prompt_rows is not None and use_cache:  # once per distinct prompt
        first, shared = policy_logits(policy, unique_ids, unique_mask.bool(), logits_to_keep=1)
        cache = select_cache_rows(shared, prompt_rows)
        logits = None if cache is None else first[prompt_rows]
    if logits is None:
        logits, cache = policy_logits(policy, prompt_ids, full_mask[:, :p_len], logits_to_keep=1)
    if use_cache:  # room for the answer's keys and values: written in place, not concatenated
        cache = reserve_cache(cache, max_new_tokens)
    for t in range(max_new_tokens):
        lp = F.log_softmax(logits[:, -1].float() / temperature, dim=-1)
        if sampler == "multinomial":
            tok = torch.multinomial(lp.exp(), 1, generator=generator).squeeze(1)
        else:
            tok = sample_inverse_cdf(lp.exp(), generator)
        tok = torch.where(state.finished, pad, tok)
        active = apply_tokens(state, tok, eos_id)
        log_probs[:, t] = torch.where(active, lp.gather(1, tok[:, None]).squeeze(1), 0.0)
        if t == max_new_tokens - 1 or bool(state.finished.all()):
            break  # every answer has ended: no further step
        full_mask[:, p_len + t] = active
        mask = full_mask[:, : p_len + t + 1]
        if use_cache:
            logits, cache = policy(tok[:, None], attention_mask=mask, past_key_values=cache)
        else:
            full_seq[:, p_len + t] = tok
            logits, _ = policy_logits(
                policy, full_seq[:, : p_len + t + 1], mask, logits_to_keep=1, use_cache=False
            )
    return Generation(state.tokens, log_probs, state.mask, state.lengths)


#: the samplers of :func:`generate`.
SAMPLERS: tuple[str, ...] = ("multinomial", "inverse_cdf")


def sample_inverse_cdf(
    probs: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One draw per row of ``probs`` ``[B, V]`` by inversion of the cumulative distribution.

    ``y = min {v : F(v) > u F(V - 1)}`` with ``F`` the row's cumulative sum and ``u ~ U[0, 1)`` from
    ``generator`` (one uniform per row, one ``searchsorted``: cheaper per step than
    ``torch.multinomial``). Rows need not be normalised. A token of probability 0 is never returned
    (rounding at the top of ``F`` falls back to the row's most likely token).

    Returns:
        ``[B]`` int64 token ids.
    """
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype)
    tok = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    tok = tok.clamp_(max=probs.shape[1] - 1)
    ok = probs.gather(1, tok[:, None]).squeeze(1) > 0
    if bool(ok.all()):
        return tok
    return torch.where(ok, tok, probs.argmax(-1))


def token_log_probs(
    policy: Policy,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    answer_mask: torch.Tensor,
    prompt_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable per-token ``log pi(y_n | x, y_<n)``, ``[B, N]``, zero where ``answer_mask`` is false.

    One forward pass over ``prompt + answer`` that computes the logits of the answer's ``N``
    positions only (:func:`policy_logits`) and no cache; answers are right-padded and their mask
    includes the ``<eos>`` (so the sequence log-prob counts every token up to and including the
    first ``<eos>``).

    With ``prompt_rows`` (``[R]`` int64: answer ``i`` continues prompt ``prompt_rows[i]``, so
    ``answer_ids`` has ``R`` rows and ``prompt_ids`` one row per distinct prompt) each prompt is
    encoded once: a pass over the ``B`` prompts builds their KV cache and the logits of their last
    position (the first answer token's), the cache's rows are gathered to the ``R`` answers
    (:func:`select_cache_rows`) and a second pass runs over the answers alone. The values are the
    same as with every prompt repeated (up to float rounding), the gradient flows through the
    gathered cache, and the prompts' positions are computed once instead of once per answer (a
    pair of answers per prompt: ``B P`` fewer positions). A policy whose cache cannot be gathered
    (none returned, e.g. under gradient checkpointing) is scored with the prompts repeated.
    """
    if prompt_rows is not None:
        shared = _shared_prompt_log_probs(
            policy, prompt_ids, prompt_mask, answer_ids, answer_mask, prompt_rows
        )
        if shared is not None:
            return shared
        prompt_ids, prompt_mask = prompt_ids[prompt_rows], prompt_mask[prompt_rows]
    n = answer_ids.shape[1]
    input_ids = torch.cat([prompt_ids, answer_ids[:, :-1]], dim=1)
    attn = torch.cat([prompt_mask.bool(), answer_mask[:, :-1].bool()], dim=1)
    logits, _ = policy_logits(policy, input_ids, attn, logits_to_keep=n, use_cache=False)
    return _answer_log_probs(logits[:, -n:], answer_ids) * answer_mask.float()


def _answer_log_probs(
    logits: torch.Tensor, answer_ids: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """``log_softmax(logits)`` at ``answer_ids`` (``[R, N]``); ``rows`` picks the logits' row of
    each answer after the log-softmax (one per distinct prompt, computed once)."""
    lsm = F.log_softmax(logits.float(), dim=-1)
    if rows is not None:
        lsm = lsm[rows]
    return lsm.gather(2, answer_ids[:, :, None]).squeeze(2)


def _shared_prompt_log_probs(
    policy: Policy,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    answer_mask: torch.Tensor,
    prompt_rows: torch.Tensor,
) -> torch.Tensor | None:
    """:func:`token_log_probs` with each prompt encoded once (``None``: the cache cannot be
    gathered, nothing was returned for it)."""
    rows = prompt_rows.to(prompt_ids.device)
    n = answer_ids.shape[1]
    first, cache = policy_logits(policy, prompt_ids, prompt_mask.bool(), logits_to_keep=1)
    cache = select_cache_rows(cache, rows)
    if cache is None:
        return None
    lp = _answer_log_probs(first[:, -1:], answer_ids[:, :1], rows)  # log-softmax of B rows
    if n > 1:
        attn = torch.cat([prompt_mask.bool()[rows], answer_mask[:, :-1].bool()], dim=1)
        rest, _ = policy_logits(policy, answer_ids[:, :-1], attn, cache)
        lp = torch.cat([lp, _answer_log_probs(rest, answer_ids[:, 1:])], dim=1)
    return lp * answer_mask.float()


def select_cache_rows(cache: Any, index: torch.Tensor) -> Any | None:
    """The KV cache of rows ``index`` (``[R]`` int64, rows may repeat) of ``cache``'s batch.

    A tensor is indexed along its first dimension, a tuple or list entry by entry (the native
    model's per-layer ``(k, v)``, a mixture's pair of caches), a ``transformers`` cache in place
    through its ``reorder_cache`` (an index-select of every layer's keys and values, differentiable).
    Returns ``None`` for ``None`` or a cache of an unknown kind.
    """
    if cache is None:
        return None
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, index.to(cache.device))
    if isinstance(cache, (tuple, list)):
        parts = [select_cache_rows(c, index) for c in cache]
        if any(part is None for part in parts):
            return None
        return type(cache)(parts)
    reorder = getattr(cache, "reorder_cache", None)
    if not callable(reorder):
        return None
    reorder(index)
    return cache


def reserve_cache(cache: Any, extra: int) -> Any:
    """``cache`` with room for ``extra`` more positions per layer, where it can be made.

    A ``transformers`` ``DynamicCache`` appends each new position's keys and values with
    ``torch.cat``, which copies the whole cache of every layer at every generated token (the
    most expensive operation of a decoding step after the matrix products, at 16 rows of a 90M
    model). Here each plain ``DynamicLayer`` gets buffers of ``extra`` more positions, the cached
    keys and values copied in once; from then on a new position is written in place and the
    layer's keys and values are views of the filled part (:func:`nlhf_envs.text.hf_cache.reserve_layers`).
    The attention sees the same numbers. A tuple or list (a mixture's pair of caches) is reserved
    entry by entry; tensor caches (the native model's) and caches of other kinds are returned as
    they are, as is everything while autograd records a cache that requires gradients. The cache
    is changed in place and returned.
    """
    if cache is None or isinstance(cache, torch.Tensor) or extra <= 0:
        return cache
    if isinstance(cache, (tuple, list)):
        for part in cache:
            reserve_cache(part, extra)
    elif isinstance(getattr(cache, "layers", None), list):  # a transformers cache (>= 4.56)
        from nlhf_envs.text.hf_cache import reserve_layers

        reserve_layers(cache, extra)
    return cache


def sequence_log_probs(
    policy: Policy,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    answer_mask: torch.Tensor,
) -> torch.Tensor:
    """Differentiable ``log pi(y | x)`` = the sum of :func:`token_log_probs`, ``[B]``."""
    return token_log_probs(policy, prompt_ids, prompt_mask, answer_ids, answer_mask).sum(-1)


class GeometricMixture:
    """Per-token geometric mixture ``pi^c ∝ pi_theta^(1-c) pi_ref^c`` of two policies (a policy itself).

    Its logits are ``(1 - c) log_softmax(logits_theta) + c log_softmax(logits_ref)`` (equal to the
    mixture of raw logits up to a per-position constant); its cache is the pair of both models' caches,
    so generation from the mixture costs one cached step of each model per token (Nash-MD's opponent).

    Args:
        policy: ``pi_theta``.
        reference: ``pi_ref``.
        coef: ``c`` in [0, 1] (``eta * beta`` in Nash-MD).
    """

    supports_logits_to_keep = True

    def __init__(self, policy: Policy, reference: Policy, coef: float) -> None:
        if not 0.0 <= coef <= 1.0:
            raise ValueError(f"mixture coefficient must lie in [0, 1], got {coef}")
        self.policy, self.reference, self.coef = policy, reference, float(coef)

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: tuple[Any, Any] | None = None,
        *,
        logits_to_keep: int = 0,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, tuple[Any, Any]]:
        past_p, past_r = past_key_values if past_key_values is not None else (None, None)
        opts = {"logits_to_keep": logits_to_keep, "use_cache": use_cache}
        lp, cache_p = policy_logits(self.policy, input_ids, attention_mask, past_p, **opts)
        lr, cache_r = policy_logits(self.reference, input_ids, attention_mask, past_r, **opts)
        c = self.coef
        logits = (1.0 - c) * F.log_softmax(lp.float(), -1) + c * F.log_softmax(lr.float(), -1)
        return logits, (cache_p, cache_r)


class _SeatAndMixture:
    """Both seats of a duel of ``pi_theta`` against ``GeometricMixture(pi_theta, pi_ref, c)`` as
    one policy over ``2 B`` rows: rows ``:B`` are ``pi_theta``'s, rows ``B:`` the mixture's.

    ``pi_theta`` runs once on all ``2 B`` rows (one cache), ``pi_ref`` on rows ``B:`` only: two
    model calls per token instead of three, the same per-row distributions as the two seats
    sampled apart (Nash-MD's duel).
    """

    supports_logits_to_keep = True

    def __init__(self, mixture: GeometricMixture, rows: int) -> None:
        self.policy, self.reference, self.coef = mixture.policy, mixture.reference, mixture.coef
        self.rows = int(rows)

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: tuple[Any, Any] | None = None,
        *,
        logits_to_keep: int = 0,
        use_cache: bool = True,
    ) -> tuple[torch.Tensor, tuple[Any, Any]]:
        b = self.rows
        past_p, past_r = past_key_values if past_key_values is not None else (None, None)
        opts = {"logits_to_keep": logits_to_keep, "use_cache": use_cache}
        mask_r = attention_mask[b:] if attention_mask is not None else None
        lp, cache_p = policy_logits(self.policy, input_ids, attention_mask, past_p, **opts)
        lr, cache_r = policy_logits(self.reference, input_ids[b:], mask_r, past_r, **opts)
        c = self.coef
        mixed = (1.0 - c) * F.log_softmax(lp[b:].float(), -1) + c * F.log_softmax(lr.float(), -1)
        return torch.cat([lp[:b].float(), mixed]), (cache_p, cache_r)


# ------------------------------------------------------------------------------------ the engine


@dataclass
class DuelResult:
    """``B`` played duels: both players' generations and the payoff."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    answers_0: Generation
    answers_1: Generation
    payoff: Payoff


def _split_rows(both: Generation, b: int) -> tuple[Generation, Generation]:
    """Rows ``:b`` and ``b:`` of a generation as two."""
    a0, a1 = (
        Generation(both.tokens[s], both.log_probs[s], both.mask[s], both.lengths[s])
        for s in (slice(0, b), slice(b, 2 * b))
    )
    return a0, a1


class DuelEngine:
    """``B`` token duels at once, on CPU or CUDA, with the rules shared with the PettingZoo env.

    Args:
        judge: the learned judge (default: the shipped one, see :func:`nlhf_envs.text.load_judge`).
        max_new_tokens: the longest answer, ``<eos>`` included.
        reward_mode: ``"outcome"`` (default), ``"centered"`` or ``"probability"``.
        payer: ``"judge"`` (default) or ``"ground_truth"`` (pay with ``P*``, to study judge
            over-optimisation).
        with_true_prob: also score every duel with the ground truth (slower: it runs on the CPU).
        device: where prompts and answers live.
        world: the world whose prompts are played and whose ground truth pays (a name or a
            :class:`~nlhf_envs.text.world.World`; default ``"default"``).
        sampler: ``"multinomial"`` (default: the seeded samples of the shipped results) or
            ``"inverse_cdf"`` (faster; see :func:`generate`). With ``"inverse_cdf"``,
            :meth:`generate_pair` (and so :meth:`play` and the text agents' duels) also samples
            both seats in one batch of ``2 B`` when they play the same policy object (self-play,
            ``pi_ref`` against ``pi_ref``).
    """

    def __init__(
        self,
        judge: PairwiseJudge | None = None,
        *,
        max_new_tokens: int | None = None,
        reward_mode: str = "outcome",
        payer: str = "judge",
        with_true_prob: bool = False,
        device: torch.device | str = "cpu",
        world: str | World | None = None,
        sampler: str = "multinomial",
    ) -> None:
        from nlhf_envs.text.ground_truth import ground_truth
        from nlhf_envs.text.models import load_judge

        if payer not in PAYERS:
            raise ValueError(f"unknown payer {payer!r}; expected one of {', '.join(PAYERS)}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
        self.sampler = sampler
        self.world = get_world(world)
        self.reward_mode = check_reward_mode(reward_mode)
        self.payer = payer
        self.device = torch.device(device)
        self.judge = (
            judge if judge is not None else load_judge(device=self.device, world=self.world)
        )
        if self.judge.tokenizer.vocab != self.world.tokenizer.vocab:
            raise ValueError(
                f"the judge's vocabulary ({self.judge.tokenizer.vocab_size} tokens) is not that of "
                f"world {self.world.name!r} ({self.world.vocab_size} tokens)"
            )
        need_truth = with_true_prob or payer == "ground_truth"
        self.truth = ground_truth(self.world) if need_truth else None
        self.tokenizer: Tokenizer = self.judge.tokenizer
        self.max_new_tokens = int(
            self.world.max_new_tokens if max_new_tokens is None else max_new_tokens
        )
        self.prompt_len = self.world.prompt_len

    def encode_prompts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and mask, ``[B, PROMPT_LEN]``, on the engine's device."""
        return self.tokenizer.encode_prompts(texts, self.prompt_len, device=self.device)

    def sample_prompts(
        self, batch_size: int, generator: torch.Generator, split: str = "train"
    ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` prompts of ``split``: ``(texts, ids, mask)``, left-padded to the
        longest prompt drawn (:func:`trim_left_padding`), not to the world's ``prompt_len``."""
        prompts = self.world.prompts
        idx = prompts.indices(split)
        pick = torch.randint(len(idx), (batch_size,), generator=generator, device=generator.device)
        texts = [prompts.texts[idx[i]] for i in pick.tolist()]
        return (texts, *trim_left_padding(*self.encode_prompts(texts)))

    def generate(
        self,
        policy: Policy,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        temperature: float = 1.0,
        use_cache: bool = True,
        prompt_rows: torch.Tensor | None = None,
    ) -> Generation:
        """:func:`generate` with the engine's ``max_new_tokens`` and input checks."""
        _check_prompts(prompt_ids, prompt_mask, self.tokenizer.vocab_size)
        return generate(
            policy,
            prompt_ids,
            prompt_mask,
            self.max_new_tokens,
            generator=generator,
            temperature=temperature,
            use_cache=use_cache,
            sampler=self.sampler,
            prompt_rows=prompt_rows,
        )

    def generate_pair(
        self,
        policy_0: Policy,
        policy_1: Policy,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        temperature: float = 1.0,
        joint: bool = False,
    ) -> tuple[Generation, Generation]:
        """Both seats' answers to the same ``B`` prompts: ``policy_0``'s, then ``policy_1``'s.

        When the same policy object sits in both seats (self-play, ``pi_ref`` against ``pi_ref``)
        and either ``joint`` is true or the sampler is ``inverse_cdf``, both seats are sampled in
        one batch of ``2 B`` (rows ``:B`` for seat 0; each prompt encoded once, its cache shared by
        both rows): one model call per token instead of two, the same distribution, other samples
        for a seed than two batches of ``B``. With ``joint`` and
        ``policy_1`` a :class:`GeometricMixture` of ``policy_0`` (Nash-MD's duel), both seats are
        sampled in one batch of ``2 B`` too: ``policy_0`` runs once on all rows, the mixture's
        reference on seat 1's rows (two model calls per token instead of three). Otherwise the two
        batches are sampled one after the other (with the default ``multinomial`` sampler and
        ``joint=False``: the seeded samples of :meth:`play` in the shipped results). The token
        agents pass ``joint=True``.
        """
        b = prompt_ids.shape[0]
        if joint and isinstance(policy_1, GeometricMixture) and policy_1.policy is policy_0:
            both = self.generate(
                _SeatAndMixture(policy_1, b),
                prompt_ids.repeat(2, 1),
                prompt_mask.repeat(2, 1),
                generator,
                temperature=temperature,
            )
            return _split_rows(both, b)
        if policy_0 is policy_1 and (joint or self.sampler != "multinomial"):
            both = self.generate(
                policy_0,
                prompt_ids,
                prompt_mask,
                generator,
                temperature=temperature,
                prompt_rows=torch.arange(b, device=prompt_ids.device).repeat(2),
            )
            return _split_rows(both, b)
        a0 = self.generate(policy_0, prompt_ids, prompt_mask, generator, temperature=temperature)
        a1 = self.generate(policy_1, prompt_ids, prompt_mask, generator, temperature=temperature)
        return a0, a1

    def score(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        answers_0: Generation | AnswerState,
        answers_1: Generation | AnswerState,
        generator: torch.Generator | None = None,
    ) -> Payoff:
        """Judge and pay ``B`` finished duels in one batched pass (outcomes drawn with ``generator``)."""
        s0 = answers_0.state if isinstance(answers_0, Generation) else answers_0
        s1 = answers_1.state if isinstance(answers_1, Generation) else answers_1
        u = torch.rand(prompt_ids.shape[0], generator=generator, device=self.device)
        return settle(
            prompt_ids,
            prompt_mask,
            s0,
            s1,
            u,
            judge=self.judge,
            truth=self.truth,
            payer=self.payer,
            reward_mode=self.reward_mode,
        )

    def play(
        self,
        policy_0: Policy,
        policy_1: Policy,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        temperature: float = 1.0,
    ) -> DuelResult:
        """Play ``B`` duels: sample both answers (KV-cached, :meth:`generate_pair`) and pay them."""
        a0, a1 = self.generate_pair(
            policy_0, policy_1, prompt_ids, prompt_mask, generator, temperature=temperature
        )
        payoff = self.score(prompt_ids, prompt_mask, a0, a1, generator)
        return DuelResult(prompt_ids, prompt_mask, a0, a1, payoff)
