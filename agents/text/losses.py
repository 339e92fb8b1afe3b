"""Pure, shape-checked token-level NLHF losses (``equations.md`` §4-§5).

Every function takes per-token tensors ``[B, N]`` (``B`` answers of at most ``N`` tokens, right
padded) with a boolean ``mask`` that is true on each answer's tokens up to and including its first
``<eos>``, and per-answer tensors ``[B]``. Losses are averaged over the batch. Log-ratios that the
papers stop gradients through are detached here, so callers may pass differentiable tensors.

Sequence KL estimator (one deliberate choice, used by Nash-MP and Nash-MD-PG): the *reward-to-go*
score-function form. For ``y ~ pi_theta`` with per-token log-ratios ``r_n = log pi_theta(y_n) - log
q(y_n)``,

    grad KL(pi_theta || q) = E[ sum_n grad log pi_theta(y_n) * sum_{m >= n} r_m ],

which is unbiased for the *sequence* KL (the discarded past terms ``m < n`` have zero mean by
causality). The immediate-term form ``sum_n grad log pi_theta(y_n) r_n`` is cheaper but biased for the
sequence KL (it ignores how a token changes the KL of the tokens after it), so it is not offered.
The value of the KL itself is estimated by the plain Monte-Carlo mean of ``sum_n r_n``
(:func:`sequence_kl`), unbiased for the sequence KL.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = [
    "LossTerms",
    "reward_to_go",
    "sequence_kl",
    "sequence_log_ratio",
    "nash_mp_pg_loss",
    "nash_md_pg_loss",
    "ipo_loss",
]


class LossTerms(NamedTuple):
    """A differentiable loss and its named parts (detached floats-as-tensors, for logging).

    Attributes:
        loss: the scalar to minimise.
        terms: ``{"loss/<name>": scalar tensor}``; the parts sum (with their coefficients) to
            ``loss`` as documented by each function.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


def _check_tokens(name: str, x: torch.Tensor, like: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != like.shape:
        raise ValueError(f"{name} must have shape {tuple(like.shape)} [B, N]; got {tuple(x.shape)}")


def _check_batch(name: str, x: torch.Tensor, batch: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) [B]; got {tuple(x.shape)}")


def _check_mask(mask: torch.Tensor) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"mask must be a [B, N] tensor; got {getattr(mask, 'shape', mask)!r}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0; got {value}")


def reward_to_go(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``R_n = sum_{m >= n} mask_m values_m`` per row, zero where ``mask`` is false; ``[B, N]``.

    Args:
        values: ``[B, N]`` per-token values (e.g. log-ratios).
        mask: ``[B, N]`` bool.
    """
    _check_mask(mask)
    _check_tokens("values", values, mask)
    v = values * mask.to(values.dtype)
    rtg = v.flip(-1).cumsum(-1).flip(-1)
    return rtg * mask.to(values.dtype)


def sequence_log_ratio(
    log_p: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor, *, average: bool = False
) -> torch.Tensor:
    """``log p(y) - log q(y)`` per answer, ``[B]``: the masked sum of token log-ratios.

    Args:
        log_p: ``[B, N]`` token log-probs under ``p``.
        log_q: ``[B, N]`` token log-probs under ``q``.
        mask: ``[B, N]`` bool.
        average: divide each answer's sum by its length (length-averaged log-probs).
    """
    _check_mask(mask)
    _check_tokens("log_p", log_p, mask)
    _check_tokens("log_q", log_q, mask)
    m = mask.to(log_p.dtype)
    out = ((log_p - log_q) * m).sum(-1)
    if average:
        out = out / m.sum(-1).clamp(min=1.0)
    return out


def sequence_kl(log_p: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo sequence ``KL(p || q) ~= mean_b sum_n (log p - log q)(y_bn)`` for ``y_b ~ p``.

    Unbiased for the sequence KL when the answers are samples of ``p``; detached scalar.
    """
    return sequence_log_ratio(log_p.detach(), log_q.detach(), mask).mean()


def _reinforce(log_pi: torch.Tensor, mask: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """``-(1/B) sum_b sum_n mask_bn sg(A_bn) log pi_theta(y_bn)``."""
    return -(advantage.detach() * log_pi * mask.to(log_pi.dtype)).sum(-1).mean()


def nash_mp_pg_loss(
    log_pi: torch.Tensor,
    log_ref: torch.Tensor,
    log_anchor: torch.Tensor,
    mask: torch.Tensor,
    outcome: torch.Tensor,
    *,
    beta: float,
    eta: float,
) -> LossTerms:
    """Policy-gradient surrogate of one approximate Nash-MP half-step (``equations.md`` §3).

    The half-step maximises ``P(pi > pi_opp) - beta KL(pi||pi_ref) - (beta/eta) KL(pi||pi_k)`` over
    ``pi_theta``; with ``y ~ pi_theta``, ``y' ~ pi_opp`` and ``o ~ Bernoulli(P(y > y'|x))`` the
    token-level advantage is (reward-to-go KL estimator, see the module docstring)

        A_n = (o - 1/2) - beta sum_{m>=n} sg(log pi_theta/pi_ref)(y_m)
                        - (beta/eta) sum_{m>=n} sg(log pi_theta/pi_k)(y_m)

    and the loss is ``-(1/B) sum_b sum_n A_bn log pi_theta(y_bn)``
    ``= loss/pg_preference + beta loss/pg_kl_ref + (beta/eta) loss/pg_kl_anchor``.

    Args:
        log_pi: ``[B, N]`` differentiable token log-probs of ``y`` under ``pi_theta``.
        log_ref: ``[B, N]`` token log-probs under ``pi_ref``.
        log_anchor: ``[B, N]`` token log-probs under the anchor ``pi_k``.
        mask: ``[B, N]`` bool answer mask.
        outcome: ``[B]`` preference outcomes (or probabilities) ``o`` in [0, 1] of ``y`` over ``y'``.
        beta: regularisation ``beta > 0``.
        eta: prox step ``eta > 0``.
    """
    _check_mask(mask)
    for name, x in (("log_pi", log_pi), ("log_ref", log_ref), ("log_anchor", log_anchor)):
        _check_tokens(name, x, mask)
    _check_batch("outcome", outcome, mask.shape[0])
    _check_positive("beta", beta)
    _check_positive("eta", eta)
    rtg_ref = reward_to_go((log_pi - log_ref).detach(), mask)
    rtg_anchor = reward_to_go((log_pi - log_anchor).detach(), mask)
    centred = (outcome.to(log_pi.dtype) - 0.5)[:, None].expand_as(log_pi)
    pref = _reinforce(log_pi, mask, centred)
    kl_ref = -_reinforce(log_pi, mask, rtg_ref)
    kl_anchor = -_reinforce(log_pi, mask, rtg_anchor)
    loss = pref + beta * kl_ref + (beta / eta) * kl_anchor
    return LossTerms(
        loss,
        {
            "loss/nash_mp_pg": loss.detach(),
            "loss/pg_preference": pref.detach(),
            "loss/pg_kl_ref": kl_ref.detach(),
            "loss/pg_kl_anchor": kl_anchor.detach(),
        },
    )


def nash_md_pg_loss(
    log_pi: torch.Tensor,
    log_ref: torch.Tensor,
    mask: torch.Tensor,
    outcome: torch.Tensor,
    *,
    beta: float,
) -> LossTerms:
    """Nash-MD-PG loss (Munos et al. 2024; ``equations.md`` §4).

    With ``y ~ pi_theta``, ``y'`` from the geometric mixture and ``o`` the outcome of ``y`` over
    ``y'``:

        loss = -(1/B) sum_b (o_b - 1/2) sum_n log pi_theta(y_bn) + beta KLhat(pi_theta || pi_ref),
        KLhat = (1/B) sum_b sum_n log pi_theta(y_bn) sg(sum_{m>=n} log pi_theta/pi_ref (y_bm))

    (the reward-to-go surrogate, whose gradient is unbiased for the sequence KL's). Parts:
    ``loss = loss/pg_preference + beta loss/pg_kl_ref``.

    Args:
        log_pi: ``[B, N]`` differentiable token log-probs of ``y`` under ``pi_theta``.
        log_ref: ``[B, N]`` token log-probs under ``pi_ref``.
        mask: ``[B, N]`` bool answer mask.
        outcome: ``[B]`` outcomes ``o`` in [0, 1].
        beta: regularisation ``beta > 0``.
    """
    _check_mask(mask)
    _check_tokens("log_pi", log_pi, mask)
    _check_tokens("log_ref", log_ref, mask)
    _check_batch("outcome", outcome, mask.shape[0])
    _check_positive("beta", beta)
    rtg_ref = reward_to_go((log_pi - log_ref).detach(), mask)
    centred = (outcome.to(log_pi.dtype) - 0.5)[:, None].expand_as(log_pi)
    pref = _reinforce(log_pi, mask, centred)
    kl_ref = -_reinforce(log_pi, mask, rtg_ref)
    loss = pref + beta * kl_ref
    return LossTerms(
        loss,
        {
            "loss/nash_md_pg": loss.detach(),
            "loss/pg_preference": pref.detach(),
            "loss/pg_kl_ref": kl_ref.detach(),
        },
    )


def ipo_loss(
    log_pi_y: torch.Tensor,
    log_ref_y: torch.Tensor,
    mask_y: torch.Tensor,
    log_pi_y2: torch.Tensor,
    log_ref_y2: torch.Tensor,
    mask_y2: torch.Tensor,
    outcome: torch.Tensor,
    *,
    beta: float,
    average_log_probs: bool = False,
) -> LossTerms:
    """Online IPO loss (Calandriello et al. 2024; ``equations.md`` §4).

        loss = (1/B) sum_b (h_b - (o_b - 1/2) / beta)^2,
        h = log(pi_theta(y)/pi_ref(y)) - log(pi_theta(y')/pi_ref(y'))

    on self-play pairs ``y, y' ~ sg(pi_theta)`` with ``o`` the outcome of ``y`` over ``y'``. Sequence
    log-probs are summed over tokens (default) or length-averaged (``average_log_probs``). The
    logged part ``loss/ipo_margin`` is the mean of ``h``.

    Args:
        log_pi_y: ``[B, N]`` differentiable token log-probs of ``y`` under ``pi_theta``.
        log_ref_y: ``[B, N]`` token log-probs of ``y`` under ``pi_ref``.
        mask_y: ``[B, N]`` bool mask of ``y``.
        log_pi_y2: ``[B, N']`` differentiable token log-probs of ``y'``.
        log_ref_y2: ``[B, N']`` token log-probs of ``y'`` under ``pi_ref``.
        mask_y2: ``[B, N']`` bool mask of ``y'``.
        outcome: ``[B]`` outcomes ``o`` in [0, 1].
        beta: regularisation ``beta > 0``.
        average_log_probs: length-average the sequence log-probs.
    """
    _check_mask(mask_y)
    _check_mask(mask_y2)
    if mask_y.shape[0] != mask_y2.shape[0]:
        raise ValueError(
            f"y and y' must have the same batch size; got {mask_y.shape[0]} and {mask_y2.shape[0]}"
        )
    _check_batch("outcome", outcome, mask_y.shape[0])
    _check_positive("beta", beta)
    h = sequence_log_ratio(log_pi_y, log_ref_y, mask_y, average=average_log_probs)
    h = h - sequence_log_ratio(log_pi_y2, log_ref_y2, mask_y2, average=average_log_probs)
    target = (outcome.to(h.dtype) - 0.5) / beta
    loss = ((h - target) ** 2).mean()
    return LossTerms(loss, {"loss/ipo": loss.detach(), "loss/ipo_margin": h.detach().mean()})
