"""MNPO (Wu et al. 2025): INPO with one history policy, the regularised Nash as its fixed point,
its population weights validated, checkpoints, and the zoo (train, tournaments)."""

import numpy as np
import pytest

import agents
import nlhf_envs
import nlhf_envs.multiplayer
from agents.config import ConfigError, check_population_weights
from agents.mnpo import mnpo_step
from agents.updates import log_normalize, softmax
from agents.zoo.cli import main
from nlhf_envs import solvers

GAMES = [
    lambda: nlhf_envs.make_game("uniform", num_actions=6, seed=3, beta=0.2),
    lambda: nlhf_envs.make_game("skew_gaussian", num_actions=5, num_contexts=3, seed=1),
]


@pytest.mark.parametrize("make", GAMES)
@pytest.mark.parametrize(
    "cfg",
    [
        {"mode": "exact"},
        {"mode": "sampled", "batch_size": 64},
        {"mode": "pg", "inner_steps": 6, "pg_batch_size": 16},
        {"mode": "pg", "inner_steps": 5, "pg_average": False, "eta": 0.5},
    ],
)
def test_one_history_policy_is_inpo_step_for_step(make, cfg):
    game_a, game_b = make(), make()
    inpo = agents.make("inpo", game_a, seed=4, init="random", log_every=0, **cfg)
    mnpo = agents.make("mnpo", game_b, seed=4, init="random", log_every=0, history=1, **cfg)
    np.testing.assert_array_equal(mnpo.log_pi, inpo.log_pi)
    for _ in range(15):
        inpo.learn(num_iterations=1)
        mnpo.learn(num_iterations=1)
        np.testing.assert_allclose(mnpo.log_pi, inpo.log_pi, rtol=0, atol=1e-9)
        assert mnpo.queries_used == inpo.queries_used
    assert mnpo.past.shape == (0, *game_b.shape)


def test_population_step_matches_the_closed_form():
    """Three exact iterations with H = 3 computed by hand from the MNPO update."""
    game = nlhf_envs.make_game("uniform", num_actions=5, seed=0, beta=0.1)
    w = [0.5, 0.3, 0.2]
    agent = agents.make("mnpo", game, seed=1, init="random", history=3, weights=w, eta=0.4)
    l_ref, lam = np.log(game.pi_ref), np.array(w)
    pop = [agent.log_pi.copy()] * 3  # the population starts as copies of pi_0
    for _ in range(3):
        mu = sum(lj * softmax(l) for lj, l in zip(lam, pop))
        g = mu @ game.P[0].T
        anchor = sum(lj * l for lj, l in zip(lam, pop))
        new = log_normalize(0.96 * anchor + 0.04 * l_ref + 0.4 * g)
        pop = [new, *pop[:2]]
        agent.learn(num_iterations=1)
        np.testing.assert_allclose(agent.log_pi, new, rtol=0, atol=1e-12)
        np.testing.assert_allclose(agent.past, np.stack(pop[1:]), rtol=0, atol=1e-12)
    assert agent.queries_used == 3  # one exact win-rate evaluation (against mu_t) per iteration
    # the population matters: INPO from the same start is elsewhere after 3 steps
    inpo = agents.make("inpo", game, seed=1, init="random", eta=0.4).learn(num_iterations=3)
    assert np.abs(inpo.log_pi - agent.log_pi).max() > 1e-3


@pytest.mark.parametrize("make", GAMES)
@pytest.mark.parametrize("weights", [None, [0.6, 0.1, 0.3]])
def test_fixed_point_is_the_regularised_nash(make, weights):
    game = make()
    star = np.reshape(solvers.regularized_nash(game), game.shape)
    hist = np.repeat(np.log(star)[None], 3, axis=0)
    lam = np.full(3, 1 / 3) if weights is None else np.array(weights)
    g = game.win_rates_all(star)
    step = mnpo_step(hist, lam, np.log(game.pi_ref), g, 0.7, game.beta)
    np.testing.assert_allclose(step, np.log(star), rtol=0, atol=1e-10)
    # and the exact iteration converges to it from a random start
    agent = agents.make("mnpo", game, seed=0, init="random", history=3, weights=weights)
    agent.learn(num_iterations=1500)
    assert solvers.kl_to_nash(game, agent.policy_table()) < 1e-10
    assert solvers.multiplayer_duality_gap(game, softmax(agent.population())) < 1e-9
    assert agent.history[-1]["game/population_duality_gap"] < 1e-9


def test_population_duality_gap_metric():
    game = nlhf_envs.make_game("uniform", num_actions=5, seed=0)
    agent = agents.make("mnpo", game, seed=0, init="random", history=2).learn(num_iterations=3)
    pops = [softmax(agent.log_pi), softmax(agent.past[0])]
    want = solvers.multiplayer_duality_gap(game, pops)
    assert agent.history[-1]["game/population_duality_gap"] == pytest.approx(want, abs=1e-15)
    assert want > 1e-3
    one = agents.make("mnpo", game, seed=0, init="random", history=1).learn(num_iterations=3)
    expl = one.history[-1]["game/exploitability"]
    assert one.history[-1]["game/population_duality_gap"] == pytest.approx(2 * expl, abs=1e-12)


def test_sampled_mode_learns():
    game = nlhf_envs.make_game("biased_rps")
    agent = agents.make("mnpo", game, seed=0, mode="sampled", batch_size=512)
    start = agent.metrics()["game/exploitability"]
    agent.learn(num_queries=60_000)
    assert agent.history[-1]["game/exploitability"] < start / 20


@pytest.mark.parametrize(
    ("weights", "history", "message"),
    [
        ([0.5, 0.6], 2, "weights: must sum to 1; they sum to 1.1"),
        ([1.2, -0.2], 2, r"weights: must be non-negative; weights\[1\] = -0.2"),
        ([0.5, 0.5], 3, r"weights: need one weight per history policy \(3\); got 2"),
        ([float("nan"), 1.0], 2, r"weights(\[0\])?: must be (a )?finite"),
    ],
)
def test_bad_population_weights(weights, history, message):
    game = nlhf_envs.make_game("rps")
    with pytest.raises(ConfigError, match=message):
        agents.make("mnpo", game, history=history, weights=weights)
    with pytest.raises(ConfigError, match=message):
        check_population_weights(weights, history)


def test_bad_config_types():
    game = nlhf_envs.make_game("rps")
    with pytest.raises(ConfigError, match="history: must be an integer >= 1; got 0"):
        agents.make("mnpo", game, history=0)
    with pytest.raises(ConfigError, match=r"weights: expected a list of float; got '0.5,0.5'"):
        agents.make("mnpo", game, history=2, weights="0.5,0.5")
    with pytest.raises(ConfigError, match=r"weights\[1\]: expected a float; got 'a'"):
        agents.make("mnpo", game, history=2, weights=[0.5, "a"])
    agent = agents.make("mnpo", game, history=2, weights=[1, 0])  # ints are floats
    assert agent.config.weights == [1.0, 0.0]


def test_checkpoint_round_trip_continues_identically(tmp_path):
    game = nlhf_envs.make_game("uniform", num_actions=4, seed=0)
    a = agents.make("mnpo", game, seed=2, mode="sampled", batch_size=32, weights=[0.5, 0.25, 0.25])
    a.learn(num_iterations=4)
    a.save(tmp_path / "m.npz")
    b = agents.load(tmp_path / "m.npz")
    assert b.config.weights == [0.5, 0.25, 0.25]
    np.testing.assert_array_equal(b.past, a.past)
    a.learn(num_iterations=3)
    b.learn(num_iterations=3)
    np.testing.assert_array_equal(b.log_pi, a.log_pi)


def test_zoo_train_and_tournament(tmp_path, capsys):
    logs = tmp_path / "logs"
    base = ["--log-folder", str(logs), "--no-progress"]
    args = ["train", "--agent", "mnpo", "--env", "nlhf/RPS-v0", "--num-queries", "3000"]
    assert main([*args, "--params", "weights:[0.5,0.3,0.2]", *base]) == 0
    run = logs / "mnpo" / "RPS-v0_1"
    assert "- 0.3" in (run / "config.yml").read_text()
    agent = agents.load(run / "final.npz")
    assert agent.config.weights == [0.5, 0.3, 0.2]
    assert 3000 - agent.iteration_queries() < agent.queries_used <= 3000  # never past the budget
    assert agent.history[-1]["game/exploitability"] < 0.02
    bad = [*args, "--params", "weights:[0.5,0.6,0.2]", *base]
    assert main(bad) == 2
    assert "weights: must sum to 1; they sum to 1.3" in capsys.readouterr().err
    tdir = tmp_path / "tour"
    argv = ["tournament", f"mnpo={run}", "pi_ref", "zoo:mnpo", "--env", "nlhf/RPS-v0"]
    assert main([*argv, "--n-duels", "200", "--output-dir", str(tdir), *base]) == 0
    assert "mnpo" in (tdir / "tournament.md").read_text()


def test_learns_the_game_of_a_multiplayer_env_and_plays_its_seats():
    agent = agents.make("mnpo", "nlhf/MultiRPS-v0", seed=0, env_kwargs={"num_players": 5})
    assert agent.game.name == "rps"
    agent.learn(num_iterations=50)
    np.testing.assert_allclose(agent.policy_table(), np.full(3, 1 / 3), atol=1e-9)
    env = nlhf_envs.multiplayer.parallel_env(num_players=5, num_rounds=3)
    obs, _ = env.reset(seed=0)
    while env.agents:
        obs, rew, _, _, _ = env.step({a: agent.act(obs[a]) for a in env.agents})
        assert sum(rew.values()) == pytest.approx(2.5)
