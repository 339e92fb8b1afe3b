"""The parts of the vLLM generation backend that need no vLLM: the weight-change signature that
decides when weights are loaded into the engine again, and the ``generation_backend`` option's
one-line errors (``agents.text.vllm_backend``; the engine itself is tested in
``test_vllm_backend.py``, slow suite)."""

from __future__ import annotations

import copy

import pytest
import torch

import agents
from agents.config import ConfigError
from agents.text.vllm_backend import vllm_available, weights_signature


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def _signature(model: torch.nn.Module):
    return weights_signature(model.parameters())


def _loss(model: torch.nn.Module) -> torch.Tensor:
    return model(torch.randn(3, 4, generator=torch.Generator().manual_seed(1))).square().sum()


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.Adam(p, lr=1e-3),  # the agents' optimiser (foreach on every device)
        lambda p: torch.optim.Adam(p, lr=1e-3, foreach=False),
        lambda p: torch.optim.SGD(p, lr=1e-2),
        lambda p: torch.optim.AdamW(p, lr=1e-3),
    ],
)
def test_an_optimiser_step_changes_the_signature_a_forward_pass_does_not(make_optimizer):
    model = _model()
    opt = make_optimizer(model.parameters())
    s0 = _signature(model)
    opt.zero_grad()
    _loss(model).backward()
    with torch.no_grad():
        model(torch.ones(1, 4))
    assert _signature(model) == s0  # forward, backward and zero_grad leave the weights alone
    opt.step()
    assert _signature(model) != s0
    s1 = _signature(model)
    assert _signature(model) == s1  # stable while nothing changes


def test_restoring_a_state_an_ema_update_and_a_replaced_tensor_change_the_signature():
    model = _model()
    state = copy.deepcopy(model.state_dict())
    s0 = _signature(model)
    model.load_state_dict(state)  # the same values, written in place (Nash-MP restores theta_k)
    s1 = _signature(model)
    assert s1 != s0
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p_bar, p in zip(twin.parameters(), model.parameters(), strict=True):
            p_bar.lerp_(p, 0.1)  # Nash-MP's EMA network
    assert _signature(model) == s1
    s2 = _signature(twin)
    twin[0].weight.data = torch.zeros(8, 4)
    assert _signature(twin) != s2
    # a detached view shares the version counter (the engine loads detached tensors)
    p = model[0].weight
    d = p.detach()
    with torch.no_grad():
        p.add_(1.0)
    assert weights_signature([d]) == weights_signature([p])


def test_the_option_is_checked_and_nash_md_refuses_vllm():
    with pytest.raises(ConfigError, match="generation_backend: expected 'transformers' or 'vllm'"):
        agents.make("online_ipo", "nlhf/TinyTokenDuel-v0", generation_backend="vlm")
    with pytest.raises(ConfigError, match="Nash-MD's opponent mixes pi_theta's and pi_ref's"):
        agents.make("nash_md", "nlhf/TinyTokenDuel-v0", generation_backend="vllm")


def test_the_native_duel_refuses_vllm_in_one_line():
    with pytest.raises(ConfigError, match="'vllm' samples Hugging Face causal LMs"):
        agents.make("online_ipo", "nlhf/TinyTokenDuel-v0", generation_backend="vllm")


@pytest.mark.skipif(vllm_available(), reason="vllm is installed here")
def test_without_the_extra_the_hf_duel_says_how_to_install_it():
    pytest.importorskip("transformers")
    from nlhf_envs.text.hf_env import HFTokenDuelEnv

    env = HFTokenDuelEnv.from_world("nlhf/TinyTokenDuel-v0")
    with pytest.raises(
        ConfigError, match=r"needs the vllm package \(pip install 'nlhf-zoo\[vllm\]'"
    ):
        agents.make("online_ipo", env, generation_backend="vllm", eval_every=0)
