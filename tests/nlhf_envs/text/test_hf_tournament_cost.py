"""Tournaments, ``eval`` and ``export`` of Hugging Face model folders at the cost of their work:
every model (participants, reference, judge) loaded once per tournament, the duels of a match
played in batches exactly as the env plays them, paths checked before anything heavy is imported,
and ``export`` that only loads, merges and saves."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from hf_parts import tiny_gpt2, word_tokenizer  # noqa: E402

from agents.arena.match import MatchSpec, play_match  # noqa: E402
from agents.arena.participants import Participant  # noqa: E402
from nlhf_envs.text.hf import HFPolicy  # noqa: E402
from nlhf_envs.text.hf_env import HFTokenDuelEnv  # noqa: E402
from nlhf_envs.text.hf_players import HFModelPlayer  # noqa: E402

torch.set_num_threads(1)
V = 64
W5 = 5


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Folders of a reference, two more causal LMs, a reward-model judge and a prompt file."""
    import transformers

    root = tmp_path_factory.mktemp("hf_tour")
    tok = word_tokenizer(V)
    for name, seed in (("ref", 0), ("model_a", 1), ("model_b", 2)):
        tiny_gpt2(V, seed=seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    config = transformers.GPT2Config(vocab_size=V, n_layer=1, n_embd=8, n_head=2, num_labels=1)
    config.pad_token_id = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        transformers.GPT2ForSequenceClassification(config).save_pretrained(root / "judge")
    tok.save_pretrained(root / "judge")
    lines = [json.dumps({"prompt": p}) for p in ("w10 w11", "w12", "w13 w14", "w15 w16 w17")]
    (root / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _env_args(root):
    return [
        "--env", "nlhf/HFTokenDuel-v0", "--env-kwargs", f"reference:{root / 'ref'}",
        f"judge:{root / 'judge'}", f"prompts:{root / 'prompts.jsonl'}", "max_prompt_tokens:4",
        "max_new_tokens:3",
    ]  # fmt: skip


@pytest.fixture
def loads(monkeypatch):
    """Every ``from_pretrained`` of a model or tokenizer folder (the real ones, counted)."""
    from nlhf_envs.text import hf_folders

    seen: Counter = Counter()
    real = hf_folders._load

    def counted(loader, path, *args, **kwargs):
        seen[(loader.__name__, path.name)] += 1
        return real(loader, path, *args, **kwargs)

    monkeypatch.setattr(hf_folders, "_load", counted)
    return seen


def test_a_tournament_of_model_folders_loads_each_model_once(folders, tmp_path, loads):
    from agents.zoo.cli import main

    argv = ["tournament", f"a={folders / 'model_a'}", f"b={folders / 'model_b'}", "pi_ref"]
    argv += _env_args(folders) + ["--n-duels", "12", "--no-progress"]
    assert main(argv + ["--output-dir", str(tmp_path / "t")]) == 0
    models = {k: v for k, v in loads.items() if k[0] != "AutoTokenizer"}
    assert models == {
        ("AutoModelForCausalLM", "ref"): 1,
        ("AutoModelForCausalLM", "model_a"): 1,
        ("AutoModelForCausalLM", "model_b"): 1,
        ("AutoModelForSequenceClassification", "judge"): 1,
    }
    assert loads[("AutoTokenizer", "ref")] == 1 and loads[("AutoTokenizer", "judge")] == 1
    data = json.loads((tmp_path / "t" / "tournament.json").read_text())
    wr = np.array(data["win_rate"])
    off = ~np.eye(3, dtype=bool)
    assert np.allclose((wr + wr.T)[off], 1.0, atol=1e-12)
    # eval of a model folder against pi_ref: the same, two participants
    loads.clear()
    assert main(["eval", str(folders / "model_a"), *_env_args(folders), "--n-duels", "8"]) == 0
    assert loads[("AutoModelForCausalLM", "ref")] == 1
    assert loads[("AutoModelForSequenceClassification", "judge")] == 1


def _prompt_judge(prompts, pairs):
    """A judge whose preference depends on the prompt and the answers' lengths in words."""
    return [
        1.0 / (1.0 + math.exp(-(len(x.split()) - 2.0 + (len(a.split()) - len(b.split())) / 2.0)))
        for x, (a, b) in zip(prompts, pairs, strict=True)
    ]


def _fields(result):
    """A match result's numbers (its ground-truth mean is NaN: this game has none)."""
    assert math.isnan(result.mean_true_prob)
    return (result.i, result.j, result.wins, result.duels, result.mean_prob, result.seed)


def _only(token, model):
    return HFPolicy(model, num_tokens=V, suppress_tokens=[t for t in range(V) if t != token])


@pytest.mark.parametrize("reward_mode", ["outcome", "centered", "probability"])
def test_a_batched_match_plays_the_env_s_own_duels(reward_mode):
    """With answers that are certain (point-mass policies) the batched match and the episode loop
    play the same duels: same prompts, seats, queries and rewards, so the same result exactly."""
    tok, ref = word_tokenizer(V), tiny_gpt2(V, seed=0)
    env = HFTokenDuelEnv(
        ref, tok, _prompt_judge, ["w10", "w11 w12", "w13 w14 w15", "w16 w17 w18 w19"],
        max_prompt_tokens=5, max_new_tokens=3, reward_mode=reward_mode,
    )  # fmt: skip
    writer, quiet = _only(W5, tiny_gpt2(V, seed=1)), _only(1, tiny_gpt2(V, seed=2))  # 1 is EOS
    sampled = [Participant("w", HFModelPlayer(writer)), Participant("q", HFModelPlayer(quiet))]
    greedy = [
        Participant("w", HFModelPlayer(writer, deterministic=True)),  # the episode loop
        Participant("q", HFModelPlayer(quiet, deterministic=True)),
    ]
    spec = MatchSpec(0, 1, *sampled, "nlhf/HFTokenDuel-v0", {}, 41, seed=123)
    batched = play_match(spec, env=env)
    loop = play_match(MatchSpec(0, 1, *greedy, "nlhf/HFTokenDuel-v0", {}, 41, seed=123), env=env)
    assert _fields(batched) == _fields(loop)
    assert 0.2 < batched.win_rate < 0.95 and batched.mean_prob > 0.5  # not a trivial match


def test_the_duels_of_a_match_are_judged_in_batches(folders):
    from agents.arena import batched

    calls = []

    def judge(prompts, pairs):
        calls.append(len(pairs))
        return _prompt_judge(prompts, pairs)

    env = HFTokenDuelEnv(
        folders / "ref", judge=judge, prompts=folders / "prompts.jsonl", max_prompt_tokens=4,
        max_new_tokens=3,
    )  # fmt: skip
    first = Participant("a", HFModelPlayer(tiny_gpt2(V, seed=1)))
    second = Participant("pi_ref", env.fixed_player("pi_ref"))
    n = batched.DUEL_BATCH + 10
    result = play_match(MatchSpec(0, 1, first, second, "nlhf/HFTokenDuel-v0", {}, n, 5), env=env)
    assert calls == [batched.DUEL_BATCH, 10] and result.duels == n
    again = play_match(MatchSpec(0, 1, first, second, "nlhf/HFTokenDuel-v0", {}, n, 5), env=env)
    assert _fields(again) == _fields(result)  # a pure function of the spec


MISSING = [
    (["tournament", "a={missing}", "pi_ref"], "participant 'a={missing}'"),
    (["tournament", "a={ok}", "b={missing}", "--env-kwargs"], "participant 'b={missing}'"),
    (["eval", "{missing}"], "participant 'agent={missing}'"),
    (["tournament", "a={ok}", "pi_ref", "--env-kwargs", "reference:{missing}"], "reference"),
    (["eval", "{ok}", "--env-kwargs", "judge:{missing}"], "judge"),
    (["eval", "{ok}", "--env-kwargs", "prompts:{missing}"], "prompts"),
]


@pytest.mark.parametrize(("argv", "named"), MISSING)
def test_a_missing_path_is_reported_before_anything_heavy_is_imported(
    folders, tmp_path, argv, named
):
    missing, ok = tmp_path / "no_such_folder", folders / "model_a"
    args = [a.format(missing=missing, ok=ok) for a in argv]
    if "--env-kwargs" in args:
        i = args.index("--env-kwargs")
        args[i + 1 : i + 1] = [
            f"{k}:{folders / v}"
            for k, v in (("reference", "ref"), ("judge", "judge"), ("prompts", "prompts.jsonl"))
            if not any(a.startswith(f"{k}:") for a in args)
        ]
        args[i:i] = ["--env", "nlhf/HFTokenDuel-v0"]
    code = (
        "import sys, time\n"
        "from agents.zoo.cli import main\n"
        "start = time.perf_counter()\n"
        f"rc = main({args!r})\n"
        "print(rc, round(time.perf_counter() - start, 3), 'torch' in sys.modules, "
        "'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    rc, seconds, torch_in, transformers_in = done.stdout.split()
    assert rc == "2" and torch_in == "False" and transformers_in == "False", done.stderr
    assert float(seconds) < 1.0
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("nlhf-zoo: error: ") and named.format(missing=missing) in line
    assert str(missing) in line
