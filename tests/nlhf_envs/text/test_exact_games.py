"""Token games whose Nash equilibrium is known: worlds as configs, the exact tiny game, Nash metrics."""

from __future__ import annotations

import numpy as np
import pettingzoo
import pytest
import torch
from scipy import stats

import agents
import nlhf_envs  # noqa: F401  (registers the ids)
from nlhf_envs.intransitivity import cyclic_share
from nlhf_envs.solvers import exploitability, kl_to_nash, regularized_nash
from nlhf_envs.text import exact
from nlhf_envs.text.engine import generate
from nlhf_envs.text.env import TokenDuelEnv
from nlhf_envs.text.estimate import estimate_nash_metrics
from nlhf_envs.text.models import LMConfig, TinyCausalLM, load_reference_policy
from nlhf_envs.text.tokenizer import EOS
from nlhf_envs.text.train import drifted_policies
from nlhf_envs.text.world import WORLD_NAMES, get_world

#: floats against stored references: `make test` runs this module again on numpy's baseline kernels
pytestmark = pytest.mark.cpu_kernels

torch.set_num_threads(1)
TINY = "nlhf/TinyTokenDuel-v0"
TINY_CYCLIC = "nlhf/TinyTokenDuel-Cyclic-v0"


@pytest.fixture(scope="module")
def tiny_env():
    return pettingzoo.make("parallel", TINY)


@pytest.fixture(scope="module")
def tiny_ref():
    return load_reference_policy(world="tiny")


# ------------------------------------------------------------------------------------------ worlds


def test_every_world_builds_from_its_config_and_has_a_distinct_fingerprint():
    worlds = [get_world(n) for n in WORLD_NAMES]
    assert len({w.fingerprint for w in worlds}) == len(worlds)
    tiny = get_world("tiny")
    assert len(tiny.prompts) == 32 and len(tiny.prompts.heldout_indices) == 8
    assert len(set(tiny.prompts.train_indices) & set(tiny.prompts.heldout_indices)) == 0
    assert tiny.answer_token_ids[0] == EOS and len(tiny.answer_token_ids) == 7
    # Worlds with the same language share vocabulary and prompts, not annotators.
    cyc = get_world("default-cyclic")
    assert cyc.tokenizer.vocab == get_world("default").tokenizer.vocab
    assert cyc.num_annotators == 12 and get_world("default").num_annotators == 20
    with pytest.raises(ValueError, match="unknown world 'huge'; registered worlds: default"):
        get_world("huge")


def test_tiny_demonstrations_use_only_answer_words():
    w = get_world("tiny")
    rng = np.random.default_rng(0)
    allowed = set(w.language.answer_words)
    for prompt in w.prompts.texts:
        for _ in range(5):
            words = w.demonstrate(prompt, rng).split()
            assert set(words) <= allowed and len(words) <= w.max_new_tokens - 1


# ------------------------------------------------------------------------------------------ exact game


def test_enumerated_answers_follow_the_rules(tiny_env):
    answers = exact.enumerate_answers(tiny_env)
    assert len(answers) == 1 + 6 + 36 + 216 == 259
    assert len(set(answers)) == 259
    assert answers[0] == (EOS,)
    ended = [a for a in answers if a[-1] == EOS]
    assert len(ended) == 1 + 6 + 36 and all(len(a) <= 3 for a in ended)
    cut = [a for a in answers if a[-1] != EOS]  # truncated at max_new_tokens, no <eos> factor
    assert len(cut) == 216 and all(len(a) == 3 for a in cut)
    with pytest.raises(ValueError, match="exact games take at most 5000"):
        exact.enumerate_answers("nlhf/TokenDuel-v0")


def test_sequence_probabilities_sum_to_one_and_refuse_a_policy_off_the_alphabet(tiny_env, tiny_ref):
    pi = exact.sequence_policy(tiny_ref, tiny_env, "all")
    assert pi.shape == (32, 259)
    w = tiny_env.world
    torch.manual_seed(0)
    random_lm = TinyCausalLM(
        LMConfig(
            vocab_size=w.vocab_size, d_model=16, d_ff=32, suppress_tokens=w.suppressed_token_ids
        )
    )
    lp = exact.sequence_log_probs_exact(
        random_lm,
        *w.tokenizer.encode_prompts(list(w.prompts.texts[:4]), w.prompt_len),
        exact.enumerate_answers(tiny_env),
    )
    assert np.abs(np.exp(lp).sum(axis=1) - 1.0).max() < 1e-9
    unsuppressed = TinyCausalLM(LMConfig(vocab_size=w.vocab_size, d_model=16, d_ff=32))
    with pytest.raises(ValueError, match="outside the 259 answers of world 'tiny'"):
        exact.sequence_policy(unsuppressed, tiny_env)


def test_sampling_agrees_with_the_exact_sequence_probabilities(tiny_env, tiny_ref):
    w = tiny_env.world
    answers = exact.enumerate_answers(tiny_env)
    prompt = w.prompts.texts[int(w.prompts.heldout_indices[0])]
    pi = exact.sequence_policy(tiny_ref, tiny_env, "heldout")[0]
    n = 20_000
    ids, mask = w.tokenizer.encode_prompts([prompt] * n, w.prompt_len)
    g = generate(tiny_ref, ids, mask, 3, generator=torch.Generator().manual_seed(0))
    index = {a: i for i, a in enumerate(answers)}
    counts = np.zeros(len(answers))
    for row, m in zip(g.tokens.tolist(), g.mask.tolist(), strict=True):
        counts[index[tuple(t for t, k in zip(row, m, strict=True) if k)]] += 1
    expected = n * pi
    big = expected >= 5  # pool the rare answers into one cell
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    assert stats.chisquare(obs, exp).pvalue > 1e-3


def test_exact_game_is_solved_by_the_matrix_solver(tiny_env, tiny_ref):
    game = exact.exact_game(tiny_env, "heldout")
    assert game.P.shape == (8, 259, 259)
    np.testing.assert_allclose(game.P + np.swapaxes(game.P, 1, 2), 1.0, atol=1e-12)
    np.testing.assert_allclose(game.pi_ref, exact.sequence_policy(tiny_ref, tiny_env), atol=1e-12)
    star = regularized_nash(game)
    assert exploitability(game, star) < 1e-9
    assert exploitability(game, game.pi_ref) > 0.01  # pi_ref is not the equilibrium
    truth = exact.exact_game(tiny_env, "heldout", payer="ground_truth")
    assert exploitability(truth, regularized_nash(truth)) < 1e-9
    assert exact.exact_game(tiny_env, "heldout", beta=0.05).beta == 0.05


def test_bulk_preferences_equal_the_judges_pairwise_answers(tiny_env):
    w = tiny_env.world
    answers = exact.enumerate_answers(tiny_env)
    ids, mask = exact.answer_tensors(answers, 3)
    p_ids, p_mask = w.tokenizer.encode_prompts([w.prompts.texts[3]], w.prompt_len)
    rng = np.random.default_rng(0)
    a, b = rng.integers(259, size=64), rng.integers(259, size=64)
    kw = {"prompt_mask": p_mask.expand(64, -1), "mask_a": mask[a], "mask_b": mask[b]}
    for judge in (tiny_env.judge, tiny_env.truth):
        bulk = exact.preference_matrix(judge, w, p_ids, p_mask, (ids, mask))
        pair = judge.prob(p_ids.expand(64, -1), ids[a], ids[b], **kw).double().numpy()
        np.testing.assert_allclose(bulk[a, b], pair, atol=1e-6)


# ------------------------------------------------------------------------------------------ cycles


#: docs/games/exact-token-games.md "Intransitivity" table (benchmarks/results/token_games.md): the
#: exact cyclic share on held-out prompts, (weighting, payer) -> share; "uniform": all 259 answers with
#: equal weights, "pi_ref": all answers weighted by the exact pi_ref of the prompt
TINY_SHARES: dict[str, dict[tuple[str, str], float]] = {
    TINY: {
        ("uniform", "judge"): 0.105,
        ("uniform", "ground_truth"): 0.125,
        ("pi_ref", "judge"): 0.045,
        ("pi_ref", "ground_truth"): 0.053,
    },
    TINY_CYCLIC: {
        ("uniform", "judge"): 0.457,
        ("uniform", "ground_truth"): 0.496,
        ("pi_ref", "judge"): 0.327,
        ("pi_ref", "ground_truth"): 0.316,
    },
    "nlhf/TinyTokenDuel-v1": {
        ("uniform", "judge"): 0.105,
        ("uniform", "ground_truth"): 0.127,
        ("pi_ref", "judge"): 0.074,
        ("pi_ref", "ground_truth"): 0.076,
    },
    "nlhf/TinyTokenDuel-Cyclic-v1": {
        ("uniform", "judge"): 0.310,
        ("uniform", "ground_truth"): 0.496,
        ("pi_ref", "judge"): 0.328,
        ("pi_ref", "ground_truth"): 0.339,
    },
}


_SHARES_CACHE: dict[str, dict[tuple[str, str], float]] = {}


def _exact_shares(env_id: str) -> dict[tuple[str, str], float]:
    """The exact cyclic shares of a tiny id on its held-out prompts, both weightings and payers."""
    if env_id not in _SHARES_CACHE:
        env = pettingzoo.make("parallel", env_id)
        out: dict[tuple[str, str], float] = {}
        for payer in ("judge", "ground_truth"):
            game = exact.exact_game(env, "heldout", payer=payer)
            out["uniform", payer] = float(np.mean(cyclic_share(game.P)))
            out["pi_ref", payer] = float(np.mean(cyclic_share(game.P, game.pi_ref)))
        _SHARES_CACHE[env_id] = out
    return _SHARES_CACHE[env_id]


#: the 256-prompt worlds take about 10 s each (64 held-out prompts x 259^2 judge pairs)
_V1 = pytest.mark.slow


@pytest.mark.parametrize(
    "env_id",
    [
        TINY,
        TINY_CYCLIC,
        pytest.param("nlhf/TinyTokenDuel-v1", marks=_V1),
        pytest.param("nlhf/TinyTokenDuel-Cyclic-v1", marks=_V1),
    ],
)
def test_cyclic_share_of_the_tiny_games_under_both_weightings(env_id):
    shares = _exact_shares(env_id)
    for key, documented in TINY_SHARES[env_id].items():
        assert shares[key] == pytest.approx(documented, abs=0.03), key
    # on pi_ref's answers the judge is as cyclic as the ground truth (within 0.011 measured)
    assert abs(shares["pi_ref", "judge"] - shares["pi_ref", "ground_truth"]) < 0.03


@pytest.mark.parametrize(
    ("plain", "cyclic"),
    [
        (TINY, TINY_CYCLIC),
        pytest.param("nlhf/TinyTokenDuel-v1", "nlhf/TinyTokenDuel-Cyclic-v1", marks=_V1),
    ],
)
def test_the_cyclic_tiny_worlds_are_clearly_more_cyclic(plain, cyclic):
    for key, plain_share in _exact_shares(plain).items():
        cyclic_share_ = _exact_shares(cyclic)[key]
        # measured: 0.310 vs 0.105 (v1, uniform, judge) at the closest
        assert cyclic_share_ >= 2.0 * plain_share and cyclic_share_ - plain_share >= 0.15, key


def test_cyclic_share_closed_forms():
    rps = np.array([[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]])
    assert cyclic_share(rps) == pytest.approx(1.0)
    s = np.random.default_rng(0).normal(size=8)
    assert cyclic_share(0.5 + 0.05 * (s[:, None] - s[None, :])) < 1e-20
    with pytest.raises(ValueError, match="P must have shape"):
        cyclic_share(np.ones((2, 3)))


# ------------------------------------------------------------------------------------------ estimator


@pytest.mark.parametrize("drift", [0.0, 1.0])
def test_estimated_metrics_cover_the_exact_values(tiny_env, tiny_ref, drift):
    policy = (
        tiny_ref
        if drift == 0.0
        else drifted_policies(tiny_ref, tiny_env.world, 1, 5, (drift, drift))[0]
    )
    game = exact.exact_game(tiny_env, "all")
    pi = exact.sequence_policy(policy, tiny_env, "all")
    star = regularized_nash(game)
    est = estimate_nash_metrics(policy, tiny_env, split="all", num_prompts=16, n=64, m=128, seed=0)
    lo, hi = est.exploitability_ci
    assert lo <= exploitability(game, pi) <= hi
    lo, hi = est.kl_to_nash_ci
    assert lo <= kl_to_nash(game, pi, star) <= hi
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        estimate_nash_metrics(policy, tiny_env, n=0)


# ------------------------------------------------------------------------------------------ beta, agents


def test_beta_belongs_to_the_game_and_agents_read_it():
    env = TokenDuelEnv(world="tiny", beta=0.05)
    assert env.beta == 0.05 and TokenDuelEnv(world="tiny").beta == 0.1
    assert agents.make("online_ipo", env, seed=0).beta == 0.05
    assert agents.make("online_ipo", env, seed=0, beta=0.2).beta == 0.2
    for bad in (0.0, -1.0, "0.1", True):
        with pytest.raises(ValueError, match="beta must be a positive number"):
            TokenDuelEnv(world="tiny", beta=bad)


def test_text_agents_log_exact_nash_metrics_on_the_tiny_game(tiny_env):
    agent = agents.make("online_ipo", TINY, seed=0, batch_size=16, eval_every=1, eval_prompts=8)
    agent.learn(num_iterations=2)
    row = agent.history[-1]
    game, star = agent.exact_game()
    pi = exact.sequence_policy(agent.model, agent.env)
    assert row["eval/exploitability"] == pytest.approx(exploitability(game, pi), abs=1e-12)
    assert row["eval/kl_to_nash"] == pytest.approx(kl_to_nash(game, pi, star), abs=1e-12)
    assert row["eval/exploitability"] > 0.0


def test_text_agents_estimate_nash_metrics_on_the_full_world():
    agent = agents.make(
        "online_ipo",
        "nlhf/TokenDuel-v0",
        seed=0,
        batch_size=8,
        eval_every=1,
        eval_prompts=8,
        nash_eval_prompts=4,
        nash_eval_samples=8,
    )
    agent.learn(num_iterations=1)
    row = agent.history[-1]
    assert (
        row["eval/exploitability_low"]
        <= row["eval/exploitability"]
        <= row["eval/exploitability_high"]
    )
    assert np.isfinite(row["eval/kl_to_nash"])


def test_forced_log_probs_equal_teacher_forcing(tiny_ref):
    from nlhf_envs.text.engine import sequence_log_probs
    from nlhf_envs.text.estimate import forced_log_probs

    w = get_world("default")
    ref = load_reference_policy()
    ids, mask = w.tokenizer.encode_prompts(list(w.prompts.texts[:16]), w.prompt_len)
    g = generate(ref, ids, mask, 24, generator=torch.Generator().manual_seed(0))
    forced = forced_log_probs(ref, ids, mask, g.tokens, g.mask)
    with torch.no_grad():
        teacher = sequence_log_probs(ref, ids, mask, g.tokens, g.mask).double()
    assert torch.allclose(forced, teacher, atol=1e-4)
    assert torch.allclose(forced, g.log_probs.double().sum(-1), atol=1e-4)


# ------------------------------------------------------------------------------------------ judges


def _judge_quality(world_name: str, pairs: int) -> dict[str, float]:
    from nlhf_envs.text.env import default_judge
    from nlhf_envs.text.train import evaluate_sources

    w = get_world(world_name)
    judge = default_judge(w, "latest")
    return evaluate_sources(judge, w, load_reference_policy(world=w), pairs, seed=101)


@pytest.mark.parametrize("world_name", ["tiny", "tiny-cyclic"])
def test_tiny_judges_hold_in_every_pair_source(world_name):
    m = _judge_quality(world_name, 600)
    for source in ("ref_vs_ref", "random_vs_random", "ref_vs_random", "drifted"):
        assert m[f"judge/{source}/agreement_confident"] >= 0.85, (source, m)
        assert m[f"judge/{source}/ece"] < 0.1, (source, m)
    assert m["judge/drifted/min_kl"] >= 2.0


@pytest.mark.slow
@pytest.mark.parametrize("world_name", ["default", "default-cyclic"])
def test_full_size_judges_hold_in_every_pair_source(world_name):
    m = _judge_quality(world_name, 1500)
    for source in ("ref_vs_ref", "random_vs_random", "ref_vs_random", "drifted"):
        assert m[f"judge/{source}/agreement_confident"] >= 0.82, (source, m)  # shipped: >= 0.85
    assert m["judge/drifted/min_kl"] >= 2.0


@pytest.mark.parametrize(
    ("env_id", "cyclic"), [("nlhf/TokenDuel-v1", False), ("nlhf/TokenDuel-Cyclic-v0", True)]
)
def test_cyclic_share_of_the_full_size_games_on_sampled_answers(env_id, cyclic):
    env = pettingzoo.make("parallel", env_id)
    w = env.world
    ref = load_reference_policy(world=w)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(1)
    shares: dict[tuple[str, str], list[float]] = {}
    for i in w.prompts.heldout_indices[:12]:
        p_ids, p_mask = w.tokenizer.encode_prompts([w.prompts.texts[i]], w.prompt_len)
        g = generate(ref, p_ids.expand(32, -1), p_mask.expand(32, -1), 24, generator=gen)
        uniform = w.tokenizer.encode_answers(
            [w.random_answer(rng) for _ in range(32)], 24, add_eos=True
        )
        for weighting, answers in (("pi_ref", (g.tokens, g.mask)), ("uniform", uniform)):
            for name, judge in (("judge", env.judge), ("truth", env.truth)):
                P = exact.preference_matrix(judge, w, p_ids, p_mask, answers)
                shares.setdefault((weighting, name), []).append(cyclic_share(P))
    mean = {k: float(np.mean(v)) for k, v in shares.items()}
    # docs/games/exact-token-games.md "Intransitivity" table (48 answers x 32 prompts; see
    # benchmarks/results/token_games.md): plain 0.11-0.21, cyclic 0.44-0.45 (uniform, answers of
    # World.random_answer) and 0.71 (pi_ref samples)
    if cyclic:
        assert min(mean[("uniform", p)] for p in ("judge", "truth")) >= 0.35, mean
        assert min(mean[("pi_ref", p)] for p in ("judge", "truth")) >= 0.6, mean
    else:
        assert max(mean.values()) < 0.3, mean


def test_cli_eval_prints_exact_nash_metrics_of_a_token_agent(tmp_path, capsys):
    from agents.zoo.cli import main

    logs = str(tmp_path / "logs")
    args = ["--agent", "online_ipo", "--env", TINY, "--num-queries", "64", "--log-folder", logs]
    assert main(["train", *args, "--params", "batch_size:32", "--no-progress"]) == 0
    run = tmp_path / "logs" / "online_ipo" / "TinyTokenDuel-v0_1"
    capsys.readouterr()
    assert main(["eval", str(run), "--n-duels", "64", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"vs pi_ref on {TINY}" in out
    assert "exact Nash metrics (beta = 0.1): exploitability" in out
    agent = agents.load(run / "final.npz")
    expected = agent.nash_metrics()["eval/exploitability"]
    assert f"exploitability {expected:.6g}" in out
    # the token agent against random words, and a CLI tournament with pi_ref and uniform
    assert (
        main(["eval", str(run), "--opponent", "uniform", "--n-duels", "40", "--no-progress"]) == 0
    )
    out = capsys.readouterr().out
    assert f"vs uniform on {TINY}" in out and "under the ground truth" in out
    t_out = str(tmp_path / "t")
    assert main(["tournament", str(run), "pi_ref", "uniform", "--n-duels", "20", "--output-dir",
                 t_out, "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"tournament on {TINY}" in out and "| uniform |" in out


def test_periodic_text_checkpoints_do_not_repeat_the_history(tmp_path):
    import zipfile

    from agents.checkpoint import read_meta
    from agents.zoo.cli import main

    logs = str(tmp_path / "logs")
    args = ["--agent", "online_ipo", "--env", TINY, "--num-queries", "96", "--log-folder", logs]
    params = ["--params", "batch_size:16", "eval_every:0"]
    assert main(["train", *args, *params, "--save-freq", "1", "--no-progress"]) == 0
    run = tmp_path / "logs" / "online_ipo" / "TinyTokenDuel-v0_1"
    ckpts = sorted((run / "checkpoints").iterdir())
    assert len(ckpts) == 6
    for path in ckpts:
        meta = read_meta(path)
        assert meta["history_keys"] is None and "history" not in meta
        assert not any(n.startswith("history/") for n in zipfile.ZipFile(path).namelist())
    final = agents.load(run / "final.npz")
    assert len(final.history) == 6 and final.history[-1]["game/queries"] == 96.0
    # a periodic checkpoint loads with an empty history; resume restores it from metrics.csv
    assert agents.load(ckpts[-1]).num_iterations == 6


def test_the_default_world_is_unchanged_by_the_world_config():
    """Against the world before worlds became configs (``data/default_world.json``): strings and
    integers exactly (by digest), floats to 1e-12 (numpy's AVX-512 kernels change the last bit of
    some annotator weights, so hashing their bytes fails on such CPUs)."""
    import hashlib
    import json
    from pathlib import Path

    ref = json.loads((Path(__file__).parent / "data" / "default_world.json").read_text())
    w = get_world("default")
    assert hashlib.sha256("\n".join(w.words).encode()).hexdigest() == ref["words_sha256"]
    assert hashlib.sha256("\n".join(w.prompts.texts).encode()).hexdigest() == ref["prompts_sha256"]
    np.testing.assert_array_equal(w.prompts.heldout_indices, ref["heldout_indices"])
    for key in ("annotator_weights", "annotator_temperatures"):
        np.testing.assert_allclose(getattr(w, key), ref[key], rtol=1e-12, atol=1e-12, err_msg=key)
    rng = np.random.default_rng(3)
    assert w.demonstrate(w.prompts.texts[0], rng) == (
        "sure cats hunt nice paws pack tail farm cats wild claws has ."
    )
