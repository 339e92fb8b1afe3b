"""The vLLM generation backend (``agents.text.vllm_backend``) on an enumerable Hugging Face game.

Needs the ``vllm`` package (on this CPU: ``make setup-vllm``, then ``make test-vllm``); skipped
without it. The game is the tiny world through ``HFTokenDuelEnv.from_world`` with answers of at most
two tokens (43 answers per prompt) and a random Llama policy of head size 32 (vLLM's CPU attention
refuses the tiny world's own GPT-2, whose heads are 8 wide), so every answer's exact probability
comes from ``transformers`` and vLLM's samples are compared with it:

* the empirical answer distribution of ``n`` samples per prompt is within total-variation distance
  ``tv_threshold`` of the exact one, before and after training steps (full fine-tuning, LoRA, the
  LoRA base ``pi_ref`` and a frozen adapter), and training moves the exact distribution by more than
  three thresholds, so sampling stale weights would fail;
* every sampled token's log-probability equals ``transformers``' to 1e-4 (full, LoRA, Nash-MP's
  frozen adapters, MNPO's population reloaded in place);
* a short Online IPO run reaches the same exact exploitability with vLLM as with ``transformers``
  (a permutation test over seeds).
"""

from __future__ import annotations

import gc
import itertools
import math
import types

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

pytest.importorskip("vllm", reason="the vllm extra is not installed (make setup-vllm)")
pytest.importorskip("peft")

import transformers  # noqa: E402

import agents  # noqa: E402
from agents.text.common import frozen_copy  # noqa: E402
from nlhf_envs.text.engine import token_log_probs  # noqa: E402
from nlhf_envs.text.exact import enumerate_answers, sequence_log_probs_exact  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402
from nlhf_envs.text.tokenizer import BOS, EOS, PAD  # noqa: E402
from nlhf_envs.text.world import get_world  # noqa: E402

#: samples per prompt of a distribution check, and the prompts (two of the train split)
N_SAMPLES = 4000
PROMPTS = (0, 5)
#: the false-alarm probability of one total-variation check
DELTA = 1e-6
LORA = {"rank": 8, "alpha": 16.0, "target_modules": ["q_proj", "v_proj"]}


def llama_env(seed: int = 0) -> HFTokenDuelEnv:
    """The tiny world's game (answers of at most 2 tokens) with a random Llama reference: 64 wide,
    two heads of 32, one layer, over the world's 25 tokens."""
    w = get_world("tiny")
    config = transformers.LlamaConfig(
        vocab_size=w.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=False,
        initializer_range=0.1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = transformers.LlamaForCausalLM(config).eval()
    return HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0", reference=lm, max_new_tokens=2)


@pytest.fixture(scope="module")
def env():
    return llama_env()


def make_agent(env, name="online_ipo", backend="vllm", seed=0, **overrides):
    cfg = {"batch_size": 64, "lr": 1e-2, "eval_every": 0, "generation_backend": backend}
    cfg.update(overrides)
    return agents.make(name, env, seed=seed, **cfg)


def close(agent) -> None:
    vllm = getattr(agent.engine, "vllm", None)
    if vllm is not None:
        vllm.close()


def prompts(agent, n: int = N_SAMPLES):
    """The check's prompts, each repeated ``n`` times: ``(ids, mask)`` and the distinct ones."""
    texts = [agent.env.prompts["train"][i] for i in PROMPTS]
    ids, mask = agent.engine.encode_prompts(texts)
    return ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), ids, mask


def exact_distribution(policy, ids, mask, answers) -> np.ndarray:
    """``[C, N]`` exact answer probabilities of ``policy`` (transformers forward passes)."""
    with torch.no_grad():
        return np.exp(sequence_log_probs_exact(policy, ids, mask, answers))


def tv_threshold(p: np.ndarray, n: int, delta: float = DELTA) -> float:
    """A bound that the mean over prompts of the total-variation distance between ``n`` samples'
    frequencies and ``p`` (``[C, N]``) exceeds with probability at most ``delta``.

    ``E |p_hat - p| <= sqrt(p (1 - p) / n)`` per answer (Jensen), so ``E TV <= mean_c 1/2
    sum_y sqrt(p (1 - p) / n)``; one sample moves the mean TV by at most ``1 / (n C)``, so by
    McDiarmid's inequality it exceeds its mean by ``sqrt(ln(1/delta) / (2 n C))`` with
    probability at most ``delta``.
    """
    mean = 0.5 * np.sqrt(p * (1 - p) / n).sum(1).mean()
    return float(mean + math.sqrt(math.log(1 / delta) / (2 * n * p.shape[0])))


def empirical_tv(gen, p: np.ndarray, answers, n: int) -> float:
    """Mean over prompts of TV(frequencies of ``gen``'s answers, ``p``); rows grouped by ``n``."""
    index = {a: i for i, a in enumerate(answers)}
    counts = np.zeros_like(p)
    for r in range(gen.tokens.shape[0]):
        answer = tuple(gen.tokens[r, : int(gen.lengths[r])].tolist())
        counts[r // n, index[answer]] += 1  # KeyError: an answer outside the rules
    return float(0.5 * np.abs(counts / n - p).sum(1).mean())


def tv(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(p - q).sum(1).mean())


def check_distribution(agent, policy, answers, seed: int) -> np.ndarray:
    """vLLM's samples of ``policy`` follow its exact distribution; returns that distribution."""
    ids, mask, ids1, mask1 = prompts(agent)
    p = exact_distribution(policy, ids1, mask1, answers)
    gen = agent.engine.generate(policy, ids, mask, torch.Generator().manual_seed(seed))
    d, bound = empirical_tv(gen, p, answers, N_SAMPLES), tv_threshold(p, N_SAMPLES)
    assert d <= bound, f"TV {d:.4f} > {bound:.4f}"
    with torch.no_grad():  # the returned log-probs are the policy's
        lp = token_log_probs(policy, ids[::50], mask[::50], gen.tokens[::50], gen.mask[::50])
    assert (lp - gen.log_probs[::50]).abs().max().item() < 1e-4
    return p


def checking_log_probs(agent):
    """Instrument ``agent.engine.generate``: every call's log-probs must be those of its policy
    under ``transformers``; returns the list of checked calls."""
    calls = []
    inner = type(agent.engine).generate

    def generate(self, policy, ids, mask, generator=None, **kw):
        g = inner(self, policy, ids, mask, generator, **kw)
        with torch.no_grad():
            lp = token_log_probs(policy, ids, mask, g.tokens, g.mask)
        calls.append((lp - g.log_probs).abs().max().item())
        return g

    agent.engine.generate = types.MethodType(generate, agent.engine)
    return calls


# ------------------------------------------------------------------------------- distribution


def test_full_fine_tuning_samples_follow_the_policy_before_and_after_steps(env):
    answers = enumerate_answers(env)
    assert len(answers) == 43
    agent = make_agent(env)
    try:
        before = check_distribution(agent, agent.model, answers, seed=1)
        agent.learn(num_iterations=10)  # its duels are sampled by vLLM, synced after every step
        ids, mask, ids1, mask1 = prompts(agent)
        after = exact_distribution(agent.model, ids1, mask1, answers)
        assert tv(before, after) > 3 * tv_threshold(after, N_SAMPLES)  # stale weights would fail
        check_distribution(agent, agent.model, answers, seed=2)
    finally:
        close(agent)


def test_lora_samples_follow_the_adapter_the_base_and_a_frozen_adapter(env):
    answers = enumerate_answers(env)
    agent = make_agent(env, lora=LORA)
    try:
        before = check_distribution(agent, agent.model, answers, seed=1)
        agent.learn(num_iterations=10)
        pi_k = frozen_copy(agent.model)  # a target network: its own adapter over the shared base
        agent.learn(num_iterations=10)
        ids, mask, ids1, mask1 = prompts(agent)
        after = exact_distribution(agent.model, ids1, mask1, answers)
        frozen = exact_distribution(pi_k, ids1, mask1, answers)
        bound = tv_threshold(after, N_SAMPLES)
        assert tv(before, after) > 3 * bound and tv(frozen, after) > 3 * bound
        check_distribution(agent, agent.model, answers, seed=2)
        check_distribution(agent, pi_k, answers, seed=3)
        ref = check_distribution(agent, agent.reference, answers, seed=4)  # pi_ref: the base
        assert np.abs(ref - before).max() < 1e-6  # a fresh adapter is pi_ref exactly
        assert len(agent.engine.vllm.llm.llm_engine.list_loras()) == 2
        del pi_k
        gc.collect()
        check_distribution(agent, agent.model, answers, seed=5)
        assert len(agent.engine.vllm.llm.llm_engine.list_loras()) == 1  # the copy's adapter left
    finally:
        close(agent)


def test_a_tied_output_head_follows_the_embedding_and_a_stale_engine_is_refused():
    from agents.text.backend import HFCausalPolicy
    from agents.text.vllm_backend import VLLMGenerator

    config = transformers.GPT2Config(
        vocab_size=40, n_positions=32, n_embd=64, n_layer=1, n_head=2, tie_word_embeddings=True
    )
    torch.manual_seed(0)
    lm = transformers.GPT2LMHeadModel(config).eval()
    assert lm.lm_head.weight is lm.transformer.wte.weight
    policy = HFCausalPolicy(lm, 40)
    vllm = VLLMGenerator(lm, eos_id=39, max_prompt_tokens=4, max_new_tokens=6)
    try:
        ids = torch.randint(0, 39, (256, 4), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids, dtype=torch.bool)

        def log_prob_gap() -> float:
            g = vllm.generate(policy, ids, mask, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                lp = token_log_probs(policy, ids, mask, g.tokens, g.mask)
            return (lp - g.log_probs).abs().max().item()

        assert log_prob_gap() < 1e-4
        with torch.no_grad():
            lm.transformer.wte.weight.mul_(3.0)  # the output head changes with it
        assert log_prob_gap() < 1e-4  # reloaded under both names, checked on the probe
        # the check refuses an engine that holds other weights than the policy's
        stale = [(n, p.detach() * 0.5) for n, p in lm.named_parameters(remove_duplicate=False)]
        vllm.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": iter(stale), "is_checkpoint_format": True}
        )
        with pytest.raises(RuntimeError, match="does not reproduce the policy after loading"):
            vllm._verify(lm, adapter=False, request=None)
    finally:
        vllm.close()


def test_the_benchmark_writes_its_table(tmp_path):
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "vllm_generation.py"
    bench = runpy.run_path(str(path), run_name="vllm_generation")
    out = tmp_path / "vllm.md"
    args = ["--shapes", "quick", "--batch", "8", "--new-tokens", "4", "--rounds", "1"]
    args += ["--train-iterations", "1", "--train-quick"]
    assert bench["main"]([*args, "--out", str(out)]) == 0
    text = out.read_text()
    assert "Device: CPU" in text and "vLLM backend" in text and "weight sync" in text
    assert "Online IPO on 2-layer GPT-2 (quick)" in text and "iterations/s" in text
    gap = float(text.split("largest log-prob difference, vLLM vs transformers | ")[1].split(" ")[0])
    assert gap < 1e-4


# ------------------------------------------------------------------------------- agents


def test_nash_mp_lora_samples_its_frozen_adapters_and_prunes_them(env):
    agent = make_agent(env, "nash_mp", lora=LORA, inner_steps=1, lr=1e-2)
    try:
        calls = checking_log_probs(agent)
        agent.learn(num_iterations=3)  # each iteration: pi_k and pi_{k+1/2}, two new adapters
        assert len(calls) == 3 * 2 * 2  # 3 iterations x 2 half-steps x (pi_theta, opponent)
        assert max(calls) < 1e-4
        assert len(agent.engine.vllm.llm.llm_engine.list_loras()) <= 3  # old copies pruned
    finally:
        close(agent)


def test_mnpo_full_population_is_reloaded_in_place(env):
    agent = make_agent(env, "mnpo", history=2, inner_steps=1, lr=1e-2)
    try:
        calls = checking_log_probs(agent)
        agent.learn(num_iterations=3)  # members pi_t, pi_{t-1}: weights swapped in the engine
        assert len(calls) == 3 * 2
        assert max(calls) < 1e-4
    finally:
        close(agent)


def test_nash_md_refuses_vllm_in_one_line(env):
    from agents.config import ConfigError

    with pytest.raises(ConfigError, match="generation_backend: Nash-MD's opponent mixes"):
        make_agent(env, "nash_md")


# ------------------------------------------------------------------------------- a run


def permutation_p_value(a: list[float], b: list[float]) -> float:
    """Two-sided exact permutation p-value of the difference of means of ``a`` and ``b``."""
    pooled, k = np.array(a + b), len(a)
    observed = abs(np.mean(a) - np.mean(b))
    hits = total = 0
    for pick in itertools.combinations(range(len(pooled)), k):
        rest = np.delete(pooled, pick)
        hits += abs(pooled[list(pick)].mean() - rest.mean()) >= observed - 1e-12
        total += 1
    return hits / total


def test_online_ipo_reaches_the_same_exact_exploitability_with_vllm(env):
    seeds = range(6)
    settings = {"lr": 1e-3, "mode": "probability", "nash_eval": "exact"}
    expl: dict[str, list[float]] = {"transformers": [], "vllm": []}
    start = None
    for backend, seed in itertools.product(expl, seeds):
        agent = make_agent(env, backend=backend, seed=seed, **settings)
        try:
            start = agent.nash_metrics(exact=True)["eval/exploitability"]
            agent.learn(num_iterations=40)
            expl[backend].append(agent.nash_metrics(exact=True)["eval/exploitability"])
        finally:
            close(agent)
    t, v = expl["transformers"], expl["vllm"]
    assert start > 0.15 and max(t) < start / 3 and max(v) < start / 3  # both learn
    # the same law: no split of the 12 runs separates the backends more than the observed one
    # does with probability below 0.005 (the smallest p-value of 6 against 6 is 2/924)
    assert permutation_p_value(t, v) >= 0.005, (t, v)
