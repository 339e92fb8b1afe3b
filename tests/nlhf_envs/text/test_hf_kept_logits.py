"""``logits_to_keep`` through a ``transformers`` model: the kept positions reach the output layer
as a contiguous tensor (a sliced, non-contiguous input made torch's ``matmul`` run the layer as a
batch of products against its weight expanded per row), with the logits of the full pass."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from tests.nlhf_envs.text.test_reserved_cache import _policy, _prompts  # noqa: E402


@pytest.mark.parametrize("grad", [False, True])
def test_kept_positions_reach_the_output_layer_contiguous_with_the_full_pass_logits(grad):
    policy = _policy()
    ids, mask = _prompts()
    head = policy.model.get_output_embeddings()
    seen: list[tuple[tuple[int, ...], bool]] = []
    watch = head.register_forward_hook(
        lambda module, args, out: seen.append((tuple(args[0].shape), args[0].is_contiguous()))
    )
    try:
        with torch.set_grad_enabled(grad):
            kept, _ = policy(ids, attention_mask=mask, logits_to_keep=1)
            full, _ = policy(ids, attention_mask=mask)
    finally:
        watch.remove()
    rows, width = ids.shape
    # the model itself slices the last position (not contiguous in the batch's memory)
    assert seen == [((rows, 1, 32), True), ((rows, width, 32), True)]
    assert kept.shape == (rows, 1, 40) and kept.requires_grad is grad
    assert (kept - full[:, -1:]).abs().max() <= 1e-5
    assert not head._forward_pre_hooks  # the copy's hook lives for the call only
