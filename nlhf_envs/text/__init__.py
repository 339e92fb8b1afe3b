"""Token-level text-generation preference game with a learned judge (imports torch; load on demand).

Design note
-----------
The package is a small, fully synthetic language world in which NLHF can be run end to end on a CPU.

- World (:mod:`~nlhf_envs.text.world`, :mod:`~nlhf_envs.text.tokenizer`): 317 word tokens (5 special),
  4320 prompts from instruction templates (15% held out), a demonstrator, and a population of 20
  annotators whose mean Bradley-Terry preference ``P*`` is intransitive. :func:`ground_truth` exposes
  ``P*`` behind the judge interface.
- Judges (:mod:`~nlhf_envs.text.judging`): one interface, ``prob(prompts, answers_a, answers_b) ->
  Tensor[B]`` on padded token ids (with masks or lengths) or strings, TRL's pairwise-judge
  ``judge(prompts, completions, shuffle_order=True, return_scores=False)`` (index of the preferred
  completion, or scores), and ``judge_obj(prompts, completion_pairs) -> list[float]`` on text. The learned :class:`Judge` has
  ``P = sigmoid(f(x, a, b) - f(x, b, a))``, antisymmetric by construction.
- Policies: any callable ``policy(input_ids, attention_mask=None, past_key_values=None) ->
  (logits [B, T, V], cache)`` with Hugging Face semantics (the mask spans past and new positions; the
  cache is opaque). :class:`TinyCausalLM` (the reference policy), :class:`GeometricMixture` and
  :class:`~nlhf_envs.text.hf.HFPolicy` are policies. A learner's ``pi_theta`` is typically a
  :class:`TinyCausalLM` initialised from ``load_reference_policy()``.
- Engine for learners (:mod:`~nlhf_envs.text.engine`), all batched torch on CPU or CUDA:

  - ``generate(policy, prompt_ids, prompt_mask, max_new_tokens, generator=, temperature=, use_cache=)
    -> Generation(tokens, log_probs, mask, lengths)``: KV-cached sampling; ``mask`` covers the answer
    up to and including its first ``<eos>``; ``log_probs`` are detached sampling log-probs.
  - ``token_log_probs(policy, prompt_ids, prompt_mask, answer_ids, answer_mask) -> [B, N]`` and
    ``sequence_log_probs(...) -> [B]`` (summed, not length-averaged): differentiable, one forward pass.
  - ``GeometricMixture(policy, reference, c)``: per-token ``(1 - c) log_softmax(theta) + c
    log_softmax(ref)`` with both models' KV caches (Nash-MD's opponent); it is itself a policy.
  - ``DuelEngine(judge, reward_mode=, payer=, max_new_tokens=, device=)`` with ``sample_prompts(B,
    generator)``, ``generate(policy, ...)``, ``score(prompt_ids, prompt_mask, answers_0, answers_1,
    generator) -> Payoff`` (one batched judge pass) and ``play(policy_0, policy_1, ...) ->
    DuelResult``.

  The rules (``apply_tokens``: append a token to every unfinished answer; ``<eos>`` or
  ``max_new_tokens`` ends it) and the payment (``settle``: judge probability, Bernoulli outcome,
  :func:`nlhf_envs.rewards.duel_rewards`) are single functions used by both the engine and the
  PettingZoo env ``nlhf/TokenDuel-v0`` (:mod:`~nlhf_envs.text.env`).
- Checkpoints (``assets/``): the judge and the reference policy, rebuilt by
  ``python -m nlhf_envs.text.train`` (about 5 minutes on one CPU core).
"""

from __future__ import annotations

from nlhf_envs.text.engine import (
    AnswerState,
    DuelEngine,
    DuelResult,
    Generation,
    GeometricMixture,
    Payoff,
    Policy,
    apply_tokens,
    generate,
    new_answers,
    sequence_log_probs,
    settle,
    token_log_probs,
)
from nlhf_envs.text.ground_truth import GroundTruth, ground_truth
from nlhf_envs.text.judging import PairwiseJudge
from nlhf_envs.text.models import (
    Judge,
    JudgeConfig,
    LMConfig,
    PreferenceNet,
    TinyCausalLM,
    load_judge,
    load_reference_policy,
)
from nlhf_envs.text.tokenizer import Tokenizer
from nlhf_envs.text.world import default_tokenizer


def load_tokenizer() -> Tokenizer:
    """The tokenizer of the world (encodes and decodes; the judge and policies share it)."""
    return default_tokenizer()


__all__ = [
    "AnswerState",
    "DuelEngine",
    "DuelResult",
    "Generation",
    "GeometricMixture",
    "GroundTruth",
    "Judge",
    "JudgeConfig",
    "LMConfig",
    "PairwiseJudge",
    "Payoff",
    "Policy",
    "PreferenceNet",
    "TinyCausalLM",
    "Tokenizer",
    "apply_tokens",
    "generate",
    "ground_truth",
    "load_judge",
    "load_reference_policy",
    "load_tokenizer",
    "new_answers",
    "sequence_log_probs",
    "settle",
    "token_log_probs",
]
