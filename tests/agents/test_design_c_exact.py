"""Nash-MP's design (C), the EMA reading, in exact dynamics (issue 32, item 3): it is not mirror
prox and has no step-size condition that makes it converge; on rock-paper-scissors at beta = 0.03
with eta = 4 beta and kappa = 0.045 (the tuned token settings' scale) it circles the equilibrium at
some logit steps and converges at others."""

from __future__ import annotations

import numpy as np
import pytest

from agents.nash_mp_ema import nash_mp_ema_step
from agents.updates import softmax
from nlhf_envs import make_game, solvers


def _kl_range(lr: float, steps: int = 20_000, tail: int = 1_000) -> tuple[float, float]:
    game = make_game("rps", beta=0.03)
    star = game.as_policy(solvers.regularized_nash(game))
    theta = np.log(softmax(np.random.default_rng(0).standard_normal(game.shape)))
    bar = theta.copy()
    kls = []
    for t in range(steps):
        theta, bar = nash_mp_ema_step(game, theta, bar, eta=0.12, lr=lr, kappa=0.045)
        if t >= steps - tail:
            kls.append(float((star * (np.log(star) - theta)).sum()))
    return min(kls), max(kls)


@pytest.mark.parametrize(("lr", "circles"), [(3.0, True), (10.0, False), (30.0, True)])
def test_design_c_circles_or_converges_depending_on_the_step(lr, circles):
    low, high = _kl_range(lr)
    if circles:
        assert high > 0.3 and high - low > 0.1  # after 20,000 steps it still moves around pi*
    else:
        assert high < 1e-12
