"""Prompt sets of the Hugging Face token duel: loading, checking and deterministic splits.

A prompt is a string or a conversation (a list of ``{"role": ..., "content": ...}`` messages,
rendered with the tokenizer's chat template by :class:`~nlhf_envs.text.hf_env.HFTokenDuelEnv`).
:func:`load_prompts` reads

- a list (or tuple) of prompts;
- a ``.txt`` file: one prompt per non-blank line;
- a ``.jsonl`` file (one JSON object per line) or a ``.json`` file (a list of objects, or an
  object with a ``"prompts"`` list) whose objects have a ``prompt`` field;
- a ``datasets.Dataset`` (or any object with ``column_names``) with a ``prompt`` column.

Files are data: they are parsed as text or JSON, never executed or unpickled. They must be UTF-8
(a leading byte-order mark is dropped) and at most :data:`MAX_PROMPT_FILE_BYTES` long, and every
prompt (a line, a record, a conversation's messages together) at most :data:`MAX_PROMPT_CHARS`
characters: a larger file or prompt is refused before it is parsed or tokenized.
:func:`unique_prompts` drops repeated prompts (the env keeps each prompt once, so no prompt is in
two splits). :func:`split_prompts` splits a prompt list into train and held-out parts by a seeded permutation,
so the same prompts, fraction and seed always give the same split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nlhf_envs.errors import GameError

__all__ = [
    "MAX_PROMPT_CHARS",
    "MAX_PROMPT_FILE_BYTES",
    "Prompt",
    "check_prompts",
    "load_prompts",
    "prompt_key",
    "prompt_text",
    "split_prompts",
    "unique_prompts",
]

#: A prompt: plain text, or a conversation of ``{"role", "content"}`` messages.
Prompt = str | list[dict[str, str]]

#: the largest prompt file read (bytes): 256 MiB
MAX_PROMPT_FILE_BYTES = 256 * 2**20

#: the longest prompt (characters; a conversation: its messages' contents together): 1 MiB of
#: text, far beyond any model's context, so tokenizing it stays cheap
MAX_PROMPT_CHARS = 2**20


def _check_messages(messages: Any, index: int, where: str) -> list[dict[str, str]]:
    if not messages:
        raise GameError(f"prompt {index}{where} is an empty conversation")
    out = []
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) < {"role", "content"}:
            raise GameError(
                f"prompt {index}{where}: message {j} must be a dict with 'role' and 'content'; "
                f"got {m!r}"
            )
        if not isinstance(m["role"], str) or not isinstance(m["content"], str):
            raise GameError(f"prompt {index}{where}: message {j} must hold strings; got {m!r}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def check_prompts(prompts: Sequence[Any], where: str = "") -> list[Prompt]:
    """Validate prompts: non-empty strings or conversations (a new list; messages copied).

    Args:
        prompts: the prompts.
        where: a suffix naming their source in errors (e.g. ``" of prompts.jsonl"``).

    Raises:
        GameError: for an empty prompt set, a prompt that is neither a string nor a list of
            messages, a blank string, or a malformed message (the prompt's index named).
    """
    if isinstance(prompts, (str, bytes)):
        raise GameError("prompts must be a list of prompts or a file path, not one prompt text")
    out: list[Prompt] = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if not p.strip():
                raise GameError(f"prompt {i}{where} is empty")
            out.append(p)
            size = len(p)
        elif isinstance(p, (list, tuple)):
            out.append(_check_messages(p, i, where))
            size = sum(len(m["content"]) for m in out[-1])
        else:
            raise GameError(
                f"prompt {i}{where} must be a string or a list of messages; got {type(p).__name__}"
            )
        if size > MAX_PROMPT_CHARS:
            raise GameError(
                f"prompt {i}{where} has {size:,} characters; a prompt may have at most "
                f"{MAX_PROMPT_CHARS:,} (MAX_PROMPT_CHARS)"
            )
    if not out:
        raise GameError(f"the prompt set{where} is empty")
    return out


def _field(record: Any, line: int, path: Path) -> Any:
    if not isinstance(record, dict) or "prompt" not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise GameError(f"{path}: record {line} has no 'prompt' field (it has {keys})")
    return record["prompt"]


def _read_file(path: Path) -> list[Any]:
    if not path.is_file():
        raise GameError(
            f"no prompt file at {path} (prompts takes a list, a .txt/.jsonl/.json file or a "
            "datasets.Dataset)"
        )
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".json"):
        raise GameError(f"prompt file {path} must end in .txt, .jsonl or .json; got {suffix!r}")
    size = path.stat().st_size
    if size > MAX_PROMPT_FILE_BYTES:
        raise GameError(
            f"prompt file {path} has {size:,} bytes; a prompt file may have at most "
            f"{MAX_PROMPT_FILE_BYTES:,} (MAX_PROMPT_FILE_BYTES): split it or pass a "
            "datasets.Dataset"
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError as err:
        raise GameError(
            f"prompt file {path} is not UTF-8 text (byte {err.start}: {err.reason})"
        ) from None
    if suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise GameError(f"{path}: line {n} is not JSON ({err.msg})") from None
            out.append(_field(record, n, path))
        return out
    try:  # .json
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise GameError(f"{path} is not JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("prompts"), list):
        data = data["prompts"]
    if not isinstance(data, list):
        raise GameError(f"{path} must hold a list of records with a 'prompt' field")
    return [_field(r, i, path) for i, r in enumerate(data)]


def load_prompts(source: Any) -> list[Prompt]:
    """The prompts of ``source`` (see the module docstring), validated by :func:`check_prompts`.

    Raises:
        GameError: for a missing or malformed file, a record or dataset without a ``prompt``
            field, or an invalid prompt.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return check_prompts(_read_file(path), f" of {path}")
    columns = getattr(source, "column_names", None)
    if columns is not None:  # a datasets.Dataset
        if isinstance(columns, dict):  # a DatasetDict: one split must be chosen
            raise GameError(
                f"got a dataset with splits {sorted(columns)}; pass one split, e.g. ds['train']"
            )
        if "prompt" not in columns:
            raise GameError(f"the dataset has no 'prompt' column (columns: {sorted(columns)})")
        return check_prompts(list(source["prompt"]), " of the dataset")
    if isinstance(source, Sequence):
        return check_prompts(source)
    raise GameError(
        "prompts must be a list, a .txt/.jsonl/.json file or a datasets.Dataset; "
        f"got {type(source).__name__}"
    )


def split_prompts(
    prompts: Sequence[Prompt],
    heldout_fraction: float,
    seed: int = 0,
    name: str = "heldout_fraction",
) -> tuple[list[Prompt], list[Prompt]]:
    """Deterministic ``(train, heldout)`` split.

    ``round(heldout_fraction * n)`` prompts (at least one when the fraction is positive, at most
    ``n - 1``) chosen by ``np.random.default_rng(seed).permutation(n)`` are held out; both parts
    keep the original order.

    ``name`` is how errors name the fraction.

    Raises:
        GameError: for a fraction outside [0, 1) or a positive fraction with fewer than 2 prompts.
    """
    f = heldout_fraction
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
        raise GameError(f"{name} must lie in [0, 1); got {f!r}")
    n = len(prompts)
    if f == 0.0:
        return list(prompts), []
    if n < 2:
        raise GameError(f"{name}={f} needs at least 2 prompts; got {n}")
    k = min(n - 1, max(1, round(f * n)))
    held = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    train = [p for i, p in enumerate(prompts) if i not in held]
    heldout = [p for i, p in enumerate(prompts) if i in held]
    return train, heldout


def prompt_key(prompt: Prompt) -> str:
    """A text that two prompts share exactly when they are the same prompt (the string itself;
    a conversation as canonical JSON)."""
    if isinstance(prompt, str):
        return prompt
    return json.dumps([[m["role"], m["content"]] for m in prompt], ensure_ascii=False)


def unique_prompts(prompts: Sequence[Prompt]) -> tuple[list[Prompt], int]:
    """``(prompts without repeats, number dropped)``: each prompt kept once, at its first place."""
    seen: set[str] = set()
    out: list[Prompt] = []
    for p in prompts:
        key = prompt_key(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out, len(prompts) - len(out)


def prompt_text(prompt: Prompt) -> str:
    """The text a judge reads for ``prompt``: the string itself, or a conversation as
    ``"role: content"`` lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
