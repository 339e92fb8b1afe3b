"""The two small torch models of the token duel and their checkpoints.

- :class:`TinyCausalLM`: a pre-LayerNorm causal transformer language model with a key/value cache; the
  reference policy ``pi_ref`` is one of these.
- :class:`PreferenceNet`: a pairwise preference model with ``P(a > b | x) = sigmoid(f(x, a, b) -
  f(x, b, a))``, antisymmetric by construction; :class:`Judge` wraps it behind the judge interface.

Checkpoints are ``torch.save`` dictionaries of plain types (loadable with ``weights_only=True``) and
record the vocabulary, so a checkpoint cannot silently be used with another tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nlhf_envs.atomic import atomic_open
from nlhf_envs.text import world
from nlhf_envs.text.ground_truth import GroundTruth
from nlhf_envs.text.judging import PairBatch, PairwiseJudge
from nlhf_envs.text.tokenizer import Tokenizer
from nlhf_envs.text.world import World, get_world

#: Key/value cache of :class:`TinyCausalLM`: one ``(keys, values)`` pair per layer, ``[B, H, T, Dh]``.
KVCache = tuple[tuple[torch.Tensor, torch.Tensor], ...]

ASSETS = Path(__file__).resolve().parent / "assets"
#: The judge of ``nlhf/TokenDuel-v0`` (trained on the first, narrower pair distribution).
JUDGE_PATH = ASSETS / "default" / "judge_v0.pt"
#: The reference policy of the default language.
REFERENCE_PATH = ASSETS / "default" / "reference.pt"
#: Judge versions: ``"latest"`` (``assets/<world>/judge.pt``) and, for the default world, ``"v0"``.
JUDGE_VERSIONS: tuple[str, ...] = ("latest", "v0")


def reference_path(world: str | World | None = None) -> Path:
    """Where the reference policy of ``world``'s language is shipped."""
    return ASSETS / get_world(world).language.name / "reference.pt"


def default_judge_version(world: str | World | None = None) -> str:
    """The judge version used when none is named: ``"v0"`` for the default world (the judge of
    ``nlhf/TokenDuel-v0``, so existing code keeps its numbers), ``"latest"`` for the others."""
    return "v0" if get_world(world).name == "default" else "latest"


def judge_path(world: str | World | None = None, version: str | None = None) -> Path:
    """Where the judge of ``world`` (``version`` ``"latest"`` or ``"v0"``) is shipped.

    Raises:
        ValueError: for an unknown version, or ``"v0"`` of a world other than ``"default"``.
    """
    w = get_world(world)
    version = default_judge_version(w) if version is None else version
    if version == "latest":
        return ASSETS / w.name / "judge.pt"
    if version == "v0" and w.name == "default":
        return JUDGE_PATH
    raise ValueError(
        f"unknown judge version {version!r} of world {w.name!r}; expected 'latest'"
        + (" or 'v0'" if w.name == "default" else "")
    )


# ------------------------------------------------------------------------------------ language model


@dataclass(frozen=True)
class LMConfig:
    """Shape of a :class:`TinyCausalLM`."""

    vocab_size: int = world.VOCAB_SIZE
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 256
    max_len: int = 64
    #: token ids the model never emits (their logits are set to -1e4; see ``World.suppressed_token_ids``)
    suppress_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "suppress_tokens", tuple(int(t) for t in self.suppress_tokens))
        bad = [t for t in self.suppress_tokens if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"suppress_tokens {bad} outside the vocabulary [0, {self.vocab_size})")


class _Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model)
        )

    def forward(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        x = x + self.ff(self.ln2(x))
        return x, (k, v)


class TinyCausalLM(nn.Module):
    """A small causal transformer LM implementing the policy interface of :mod:`nlhf_envs.text.engine`.

    Padding is handled with ``attention_mask`` the way Hugging Face models do: positions are counted
    over unmasked tokens (so left-padded prompts work), masked keys are never attended to.

    Args:
        config: the model's shape.
    """

    def __init__(self, config: LMConfig | None = None) -> None:
        super().__init__()
        self.config = config or LMConfig()
        cfg = self.config
        self.vocab_size = cfg.vocab_size
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        suppress = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        suppress[list(cfg.suppress_tokens)] = True
        self.register_buffer("suppress_mask", suppress, persistent=False)
        self._suppress = bool(cfg.suppress_tokens)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Next-token logits for every input position.

        Args:
            input_ids: ``[B, T]`` new token ids.
            attention_mask: ``[B, T_past + T]`` (past and new positions), true where a token is real;
                default all true.
            past_key_values: the cache returned by the previous call, or ``None``.

        Returns:
            ``(logits [B, T, V], cache)``; the cache covers all ``T_past + T`` positions.

        Raises:
            ValueError: on a mask of the wrong shape or a sequence longer than ``max_len``.
        """
        b, t = input_ids.shape
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        total = past_len + t
        if attention_mask is None:
            attention_mask = torch.ones(b, total, dtype=torch.bool, device=input_ids.device)
        attention_mask = attention_mask.bool()
        if tuple(attention_mask.shape) != (b, total):
            raise ValueError(
                f"attention_mask must have shape {(b, total)} (past {past_len} + new {t}); "
                f"got {tuple(attention_mask.shape)}"
            )
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_len:]
        if total > self.config.max_len:
            raise ValueError(f"sequence of {total} tokens exceeds max_len {self.config.max_len}")
        x = self.tok_emb(input_ids) + self.pos_emb(positions)
        q_pos = torch.arange(past_len, total, device=input_ids.device)
        k_pos = torch.arange(total, device=input_ids.device)
        causal = k_pos[None, :] <= q_pos[:, None]  # [T, total]
        allowed = causal[None] & attention_mask[:, None, :]
        allowed = allowed | (k_pos[None, :] == q_pos[:, None])[None]  # a query always sees itself
        cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, allowed, None if past_key_values is None else past_key_values[i])
            cache.append(kv)
        logits = self.ln_f(x) @ self.tok_emb.weight.T
        if self._suppress:
            logits = logits.masked_fill(self.suppress_mask, -1.0e4)
        return logits, tuple(cache)


# ------------------------------------------------------------------------------------ judge


@dataclass(frozen=True)
class JudgeConfig:
    """Shape of a :class:`PreferenceNet`."""

    vocab_size: int = world.VOCAB_SIZE
    d_model: int = 48
    d_hidden: int = 96


def answer_token_flags(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token flag code ``repeat + 2 first + 4 last`` (0..7) over the masked tokens.

    ``repeat``: the same id occurs earlier in the row; ``first``/``last``: first/last masked position.
    """
    length = ids.shape[1]
    same = (ids[:, :, None] == ids[:, None, :]) & mask[:, None, :]
    earlier = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril(-1)
    repeat = (same & earlier).any(-1) & mask
    count = mask.long().cumsum(-1)
    first = mask & (count == 1)
    last = mask & (count == count[:, -1:])
    return repeat.long() + 2 * first.long() + 4 * last.long()


class PreferenceNet(nn.Module):
    """Pairwise preference model ``logit P(a > b | x) = f(x, a, b) - f(x, b, a)``.

    The prompt is mean-pooled word embeddings through an MLP (``h_x``); each answer token gets its
    embedding plus a flag embedding (:func:`answer_token_flags`), is passed through an MLP together with
    ``h_x``, and sum- and mean-pooled with the length into ``u_y``; ``f`` is an MLP of
    ``(u_a, u_b, h_x)``. Because ``f`` sees both answers, the model can represent intransitive
    preferences; antisymmetry holds exactly whatever the weights.

    Args:
        config: the model's shape.
    """

    def __init__(self, config: JudgeConfig | None = None) -> None:
        super().__init__()
        self.config = config or JudgeConfig()
        d, h = self.config.d_model, self.config.d_hidden
        self.embed = nn.Embedding(self.config.vocab_size, d)
        self.flag_embed = nn.Embedding(8, d)
        self.prompt_mlp = nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))
        self.token_mlp = nn.Sequential(nn.Linear(2 * d, h), nn.GELU(), nn.Linear(h, h))
        self.answer_mlp = nn.Sequential(nn.Linear(2 * h + 2 + d, h), nn.GELU(), nn.Linear(h, d))
        self.pair_mlp = nn.Sequential(
            nn.Linear(3 * d, h), nn.GELU(), nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1)
        )

    def encode_prompt(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``h_x``, ``[B, d]``, from content-masked prompt ids."""
        m = mask.float()[..., None]
        pooled = (self.embed(ids) * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.prompt_mlp(pooled)

    def encode_answer(
        self, h_x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """``u_y``, ``[B, d]``, from content-masked answer ids."""
        e = self.embed(ids) + self.flag_embed(answer_token_flags(ids, mask))
        z = self.token_mlp(torch.cat([e, h_x[:, None, :].expand_as(e)], dim=-1))
        m = mask.float()[..., None]
        n = m.sum(1)
        total = (z * m).sum(1)
        pooled = torch.cat(
            [total / 8.0, total / n.clamp(min=1.0), n / 10.0, (n == 0).float(), h_x], dim=-1
        )
        return self.answer_mlp(pooled)

    def forward(self, batch: PairBatch) -> torch.Tensor:
        """``logit P(a > b | x)``, ``[B]``."""
        h_x = self.encode_prompt(batch.prompt_ids, batch.prompt_mask)
        u_a = self.encode_answer(h_x, batch.a_ids, batch.a_mask)
        u_b = self.encode_answer(h_x, batch.b_ids, batch.b_mask)
        f_ab = self.pair_mlp(torch.cat([u_a, u_b, h_x], dim=-1))[:, 0]
        f_ba = self.pair_mlp(torch.cat([u_b, u_a, h_x], dim=-1))[:, 0]
        return f_ab - f_ba


class Judge(PairwiseJudge):
    """The learned judge: a :class:`PreferenceNet` behind the judge interface.

    Args:
        net: the preference model.
        tokenizer: its tokenizer; default the world's.
    """

    def __init__(self, net: PreferenceNet, tokenizer: Tokenizer | None = None) -> None:
        super().__init__(tokenizer or world.default_tokenizer())
        if net.config.vocab_size != self.tokenizer.vocab_size:
            raise ValueError(
                f"judge vocabulary has {net.config.vocab_size} tokens, tokenizer "
                f"{self.tokenizer.vocab_size}"
            )
        self.net = net.eval()

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> Judge:
        """Move the judge to ``device``; returns ``self``."""
        self.net.to(device)
        return self

    def _prob(self, batch: PairBatch) -> torch.Tensor:
        return torch.sigmoid(self.net(batch))

    def logit(self, batch: PairBatch) -> torch.Tensor:
        """Differentiable ``f(x, a, b) - f(x, b, a)`` for a prepared batch (see :meth:`prepare`)."""
        return self.net(batch)


# ------------------------------------------------------------------------------------ checkpoints


def vocab_digest(tokenizer: Tokenizer) -> str:
    """A short hash of the vocabulary, stored in checkpoints."""
    return hashlib.sha256("\n".join(tokenizer.vocab).encode()).hexdigest()[:16]


def save_checkpoint(
    path: str | os.PathLike,
    kind: str,
    model: nn.Module,
    metadata: dict[str, Any] | None = None,
    tokenizer: Tokenizer | None = None,
) -> None:
    """Write ``model`` (its config and weights) atomically (:func:`nlhf_envs.atomic.atomic_open`).

    ``tokenizer`` (default: the default world's) is recorded as a vocabulary digest.
    """
    payload = {
        "kind": kind,
        "config": dataclasses.asdict(model.config),
        "vocab_digest": vocab_digest(tokenizer or world.default_tokenizer()),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
    }
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def build_checked(
    module_cls: type[nn.Module],
    config_cls: type,
    values: Any,
    state_shapes: dict[str, tuple[int, ...]],
    source: str,
) -> nn.Module:
    """``module_cls(config_cls(**values))``, checked against a file's stored tensor shapes first.

    The module is first built on torch's ``meta`` device (no memory), so a file whose config declares
    a huge model, or one that does not match its tensors, is refused before anything is allocated.

    Args:
        module_cls: :class:`TinyCausalLM` or :class:`PreferenceNet`.
        config_cls: its config dataclass.
        values: the config fields read from the file.
        state_shapes: the shape of every tensor the file stores for the module (by state-dict key).
        source: the file and field, for messages.

    Raises:
        CheckpointError: naming ``source`` when the config is malformed or its shapes differ.
    """
    from nlhf_envs.errors import CheckpointError

    if not isinstance(values, dict):
        raise CheckpointError(f"{source}: the model config must be a mapping; got {values!r}")
    for key, value in values.items():
        if key != "suppress_tokens" and (not isinstance(value, int) or value < 1):
            raise CheckpointError(f"{source}: model config {key!r} must be a positive integer")
    try:
        config = config_cls(**values)
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in module_cls(config).state_dict().items()}
    except (TypeError, ValueError, RuntimeError, AssertionError, IndexError) as err:
        raise CheckpointError(f"{source}: invalid model config {values!r}: {err}") from None
    shapes = {k: tuple(v) for k, v in state_shapes.items()}
    if shapes != expected:
        diff = sorted(set(shapes) ^ set(expected)) or [
            k for k in expected if shapes[k] != expected[k]
        ]
        raise CheckpointError(
            f"{source}: the stored tensors do not match the model config {values!r} "
            f"(first difference: {diff[0]!r})"
        )
    return module_cls(config)


def _load(path: str | os.PathLike, kind: str, w: World) -> dict[str, Any]:
    from nlhf_envs.archives import READ_ERRORS, open_zip
    from nlhf_envs.errors import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no {kind} checkpoint at {path}; rebuild it with "
            f"`python -m nlhf_envs.text.train --world {w.name}`"
        )
    open_zip(path, what=f"{kind} checkpoint").close()  # bounded before torch reads it
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except READ_ERRORS as err:  # includes the weights-only unpickler's refusals
        raise CheckpointError(f"{str(path)!r} is not a readable {kind} checkpoint: {err}") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        kind_found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} holds a {kind_found!r} checkpoint, not {kind!r}")
    digest = vocab_digest(w.tokenizer)
    if payload.get("vocab_digest") != digest:
        raise ValueError(
            f"{path} was trained with another vocabulary (digest {payload.get('vocab_digest')}, "
            f"world {w.name!r} has {digest})"
        )
    return payload


def _build(path: Any, payload: dict[str, Any], module_cls: type, config_cls: type) -> nn.Module:
    from nlhf_envs.errors import CheckpointError

    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(path)!r}: field 'state_dict' must map names to tensors")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    model = build_checked(module_cls, config_cls, payload.get("config"), shapes, f"{str(path)!r}")
    model.load_state_dict(state)
    return model


def load_judge(
    path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    *,
    world: str | World | None = None,
    version: str | None = None,
) -> Judge:
    """A shipped learned judge (or the one at ``path``), in eval mode on ``device``.

    Args:
        path: a judge checkpoint; default the shipped judge of ``world`` and ``version``.
        device: where the judge runs.
        world: the world (default ``"default"``); checkpoints are checked against its vocabulary.
        version: ``"latest"`` or ``"v0"`` (see :func:`judge_path`); default
            :func:`default_judge_version`.
    """
    w = get_world(world)
    if path is None:
        path = judge_path(w, version)
    net = _build(path, _load(path, "judge", w), PreferenceNet, JudgeConfig)
    return Judge(net, w.tokenizer).to(device)


def load_reference_policy(
    path: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    *,
    world: str | World | None = None,
) -> TinyCausalLM:
    """The shipped reference policy ``pi_ref`` of ``world`` (default ``"default"``; or the one at
    ``path``), in eval mode on ``device``."""
    w = get_world(world)
    path = path or reference_path(w)
    model = _build(path, _load(path, "reference_lm", w), TinyCausalLM, LMConfig)
    return model.eval().to(device)


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata stored with a checkpoint (training settings, metrics)."""
    return dict(torch.load(path, map_location="cpu", weights_only=True)["metadata"])


def module_digest(module: torch.nn.Module) -> str:
    """A content hash (16 hex digits) of a torch module's state dict."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def judge_digest(judge: PairwiseJudge) -> str | None:
    """A content hash of a learned judge or a ground truth (``None`` for other judges)."""
    if isinstance(judge, GroundTruth):
        return "truth:" + judge.world.fingerprint
    if isinstance(judge, Judge):
        return "judge:" + module_digest(judge.net)
    return None
