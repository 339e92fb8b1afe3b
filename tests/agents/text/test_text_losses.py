"""Token-level losses: hand-computed values and one hand-computed SGD update on a tiny unigram model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.text.losses import (
    ipo_loss,
    nash_md_pg_loss,
    nash_mp_pg_loss,
    reward_to_go,
    sequence_kl,
    sequence_log_ratio,
)

V = 4
Y = torch.tensor([[1, 3, 2], [0, 2, 0]])  # answer 1 has 3 tokens, answer 2 has 2 (last is padding)
MASK = torch.tensor([[True, True, True], [True, True, False]])
Y2 = torch.tensor([[2, 2, 0], [3, 1, 2]])
MASK2 = torch.tensor([[True, False, False], [True, True, True]])
OUTCOME = torch.tensor([1.0, 0.25])


def unigram_log_probs(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A tiny policy: ``log pi(y_n) = z[y_n] - logsumexp(z)`` whatever the context."""
    return (z - torch.logsumexp(z, 0))[y] * mask


def np_logp(z: np.ndarray) -> np.ndarray:
    return z - np.log(np.exp(z).sum())


Z0 = np.array([0.3, -0.2, 0.5, 0.1])
ZREF = np.array([0.0, 0.4, -0.3, 0.2])
ZK = np.array([0.2, 0.0, 0.1, -0.1])


def test_reward_to_go_and_sequence_log_ratio_by_hand():
    vals = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert reward_to_go(vals, MASK).tolist() == [[6.0, 5.0, 3.0], [9.0, 5.0, 0.0]]
    lp, lq = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 9.0]]), torch.zeros(2, 3)
    assert sequence_log_ratio(lp, lq, MASK).tolist() == [3.0, 4.0]
    assert sequence_log_ratio(lp, lq, MASK, average=True).tolist() == [1.0, 2.0]
    assert float(sequence_kl(lp, lq, MASK)) == pytest.approx(3.5)


def _sgd_step(loss_fn, lr: float = 0.5) -> tuple[float, np.ndarray]:
    z = torch.tensor(Z0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([z], lr=lr)
    loss = loss_fn(z)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach()), z.detach().numpy()


def _hand_reinforce(coefs: list[list[float]], ys: torch.Tensor, mask: torch.Tensor):
    """Value and gradient of -(1/B) sum_bn A_bn log pi(y_bn) for the unigram model, by hand."""
    logp, p = np_logp(Z0), np.exp(np_logp(Z0))
    value, grad = 0.0, np.zeros(V)
    B = ys.shape[0]
    for b in range(B):
        for n in range(ys.shape[1]):
            if mask[b, n]:
                tok = int(ys[b, n])
                value -= coefs[b][n] * logp[tok] / B
                grad -= coefs[b][n] * (np.eye(V)[tok] - p) / B
    return value, grad


def _advantages(extra: list[tuple[float, np.ndarray]]) -> list[list[float]]:
    """A_bn = (o_b - 1/2) - sum_c coef_c * sum_{m >= n} (logp - log q_c)(y_bm), by hand."""
    logp = np_logp(Z0)
    out = []
    for b in range(2):
        toks = [int(t) for t, m in zip(Y[b], MASK[b]) if m]
        row = []
        for n in range(3):
            a = float(OUTCOME[b]) - 0.5
            for coef, zq in extra:
                lq = np_logp(zq)
                a -= coef * sum(logp[t] - lq[t] for t in toks[n:])
            row.append(a)
        out.append(row)
    return out


def test_nash_mp_pg_loss_value_and_update_by_hand():
    beta, eta, lr = 0.1, 0.2, 0.5
    ref = torch.tensor(ZREF, dtype=torch.float64)
    anchor = torch.tensor(ZK, dtype=torch.float64)

    def loss_fn(z):
        out = nash_mp_pg_loss(
            unigram_log_probs(z, Y, MASK), unigram_log_probs(ref, Y, MASK),
            unigram_log_probs(anchor, Y, MASK), MASK, OUTCOME, beta=beta, eta=eta,
        )  # fmt: skip
        parts = out.terms
        recombined = (
            parts["loss/pg_preference"]
            + beta * parts["loss/pg_kl_ref"]
            + beta / eta * parts["loss/pg_kl_anchor"]
        )
        assert float(recombined) == pytest.approx(float(out.loss.detach()))
        return out.loss

    value, z1 = _sgd_step(loss_fn, lr)
    coefs = _advantages([(beta, ZREF), (beta / eta, ZK)])
    hand_value, hand_grad = _hand_reinforce(coefs, Y, MASK)
    assert value == pytest.approx(hand_value, abs=1e-12)
    np.testing.assert_allclose(z1, Z0 - lr * hand_grad, atol=1e-12)
    # a literal number, so a change of convention cannot hide in the helper above
    assert value == pytest.approx(0.35587749, abs=1e-7)


def test_nash_md_pg_loss_value_and_update_by_hand():
    beta, lr = 0.1, 0.5
    ref = torch.tensor(ZREF, dtype=torch.float64)

    def loss_fn(z):
        out = nash_md_pg_loss(
            unigram_log_probs(z, Y, MASK), unigram_log_probs(ref, Y, MASK), MASK, OUTCOME,
            beta=beta,
        )  # fmt: skip
        assert float(out.terms["loss/nash_md_pg"]) == pytest.approx(
            float(out.terms["loss/pg_preference"] + beta * out.terms["loss/pg_kl_ref"])
        )
        return out.loss

    value, z1 = _sgd_step(loss_fn, lr)
    hand_value, hand_grad = _hand_reinforce(_advantages([(beta, ZREF)]), Y, MASK)
    assert value == pytest.approx(hand_value, abs=1e-12)
    np.testing.assert_allclose(z1, Z0 - lr * hand_grad, atol=1e-12)


@pytest.mark.parametrize("average", [False, True])
def test_ipo_loss_value_and_update_by_hand(average):
    beta, lr = 0.5, 0.1
    ref = torch.tensor(ZREF, dtype=torch.float64)

    def loss_fn(z):
        out = ipo_loss(
            unigram_log_probs(z, Y, MASK), unigram_log_probs(ref, Y, MASK), MASK,
            unigram_log_probs(z, Y2, MASK2), unigram_log_probs(ref, Y2, MASK2), MASK2,
            OUTCOME, beta=beta, average_log_probs=average,
        )  # fmt: skip
        return out.loss

    value, z1 = _sgd_step(loss_fn, lr)
    logp, lref, p = np_logp(Z0), np_logp(ZREF), np.exp(np_logp(Z0))
    hand_value, hand_grad = 0.0, np.zeros(V)
    for b in range(2):
        t1 = [int(t) for t, m in zip(Y[b], MASK[b]) if m]
        t2 = [int(t) for t, m in zip(Y2[b], MASK2[b]) if m]
        s1, s2 = (len(t1), len(t2)) if average else (1, 1)
        h = sum(logp[t] - lref[t] for t in t1) / s1 - sum(logp[t] - lref[t] for t in t2) / s2
        dh = sum(np.eye(V)[t] - p for t in t1) / s1 - sum(np.eye(V)[t] - p for t in t2) / s2
        err = h - (float(OUTCOME[b]) - 0.5) / beta
        hand_value += err**2 / 2
        hand_grad += 2 * err * dh / 2
    assert value == pytest.approx(hand_value, abs=1e-12)
    np.testing.assert_allclose(z1, Z0 - lr * hand_grad, atol=1e-12)


def test_losses_reject_bad_shapes_and_parameters():
    lp = torch.zeros(2, 3)
    with pytest.raises(
        ValueError, match=r"log_ref must have shape \(2, 3\) \[B, N\]; got \(2, 4\)"
    ):
        nash_mp_pg_loss(lp, torch.zeros(2, 4), lp, MASK, OUTCOME, beta=0.1, eta=0.2)
    with pytest.raises(ValueError, match=r"outcome must have shape \(2,\) \[B\]; got \(3,\)"):
        nash_md_pg_loss(lp, lp, MASK, torch.zeros(3), beta=0.1)
    with pytest.raises(ValueError, match="beta must be > 0; got 0.0"):
        ipo_loss(lp, lp, MASK, lp, lp, MASK, OUTCOME, beta=0.0)
    with pytest.raises(ValueError, match="eta must be > 0; got -1"):
        nash_mp_pg_loss(lp, lp, lp, MASK, OUTCOME, beta=0.1, eta=-1)
    with pytest.raises(ValueError, match="same batch size; got 2 and 1"):
        ipo_loss(lp, lp, MASK, lp[:1], lp[:1], MASK[:1], OUTCOME, beta=0.1)
