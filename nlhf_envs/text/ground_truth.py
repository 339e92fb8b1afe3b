"""The population of annotators as a pairwise judge: ``P*(a > b | x)``."""

from __future__ import annotations

import numpy as np
import torch

from nlhf_envs.text import world
from nlhf_envs.text.judging import PairBatch, PairwiseJudge, TokenInput
from nlhf_envs.text.world import World, get_world


def _rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    ids, mask = ids.cpu(), mask.cpu()
    return [ids[i][mask[i]].tolist() for i in range(ids.shape[0])]


class GroundTruth(PairwiseJudge):
    """The annotator population of a world (:mod:`nlhf_envs.text.world`) behind the judge interface.

    ``prob`` returns ``P*(a > b | x) = (1/K) sum_k sigmoid(tau_k (s_k(x, a) - s_k(x, b)))``, computed in
    float64 and returned as float32; the population is fixed, so nothing here is random except
    :meth:`votes`, which takes a generator.

    Args:
        world: the world (a name or a :class:`~nlhf_envs.text.world.World`; default ``"default"``).
    """

    def __init__(self, world: str | World | None = None) -> None:
        self.world = get_world(world)
        super().__init__(self.world.tokenizer)

    def features(self, batch: PairBatch) -> tuple[np.ndarray, np.ndarray]:
        """Feature vectors ``phi(x, a)`` and ``phi(x, b)``, each ``[B, NUM_FEATURES]``."""
        w = self.world
        prompts = [w.parse_prompt(r) for r in _rows(batch.prompt_ids, batch.prompt_mask)]
        a_rows = _rows(batch.a_ids, batch.a_mask)
        b_rows = _rows(batch.b_ids, batch.b_mask)
        fa = np.array([w.answer_features(p, r) for p, r in zip(prompts, a_rows, strict=True)])
        fb = np.array([w.answer_features(p, r) for p, r in zip(prompts, b_rows, strict=True)])
        shape = (len(batch), world.NUM_FEATURES)
        return fa.reshape(shape), fb.reshape(shape)

    def _prob(self, batch: PairBatch) -> torch.Tensor:
        fa, fb = self.features(batch)
        return torch.as_tensor(self.world.population_prob(fa, fb), dtype=torch.float32)

    def annotator_probs(
        self,
        prompts: TokenInput,
        answers_a: TokenInput,
        answers_b: TokenInput,
        **masks: torch.Tensor | None,
    ) -> torch.Tensor:
        """Every annotator's ``P_k(a > b | x)``, float64 ``[B, K]`` (arguments as in :meth:`prob`)."""
        fa, fb = self.features(self.prepare(prompts, answers_a, answers_b, **masks))
        return torch.as_tensor(self.world.annotator_probs(fa, fb))

    def votes(
        self,
        prompts: TokenInput,
        answers_a: TokenInput,
        answers_b: TokenInput,
        num_votes: int,
        rng: np.random.Generator,
        **masks: torch.Tensor | None,
    ) -> torch.Tensor:
        """Votes (1 = ``a`` wins) of ``num_votes`` annotators drawn at random per pair, ``[B, num_votes]``."""
        fa, fb = self.features(self.prepare(prompts, answers_a, answers_b, **masks))
        return torch.as_tensor(self.world.sample_votes(fa, fb, num_votes, rng))


_GROUND_TRUTHS: dict[str, GroundTruth] = {}


def ground_truth(world: str | World | None = None) -> GroundTruth:
    """The (shared, stateless) ground-truth population judge of ``world`` (default ``"default"``)."""
    w = get_world(world)
    if w.name not in _GROUND_TRUTHS or _GROUND_TRUTHS[w.name].world is not w:
        _GROUND_TRUTHS[w.name] = GroundTruth(w)
    return _GROUND_TRUTHS[w.name]
