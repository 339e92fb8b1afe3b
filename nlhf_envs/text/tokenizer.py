"""The word-level vocabulary and tokenizer of the token-duel language world.

Every word of the world is one token; five special tokens come first:

=========  ====  ==========================================================
token      id    meaning
=========  ====  ==========================================================
``<pad>``  0     padding (prompts are left-padded, answers right-padded)
``<bos>``  1     start of a prompt
``<eos>``  2     end of an answer
``<sep>``  3     end of a prompt; the answer starts right after it
``<unk>``  4     a word outside the vocabulary (strings only)
=========  ====  ==========================================================

A prompt is laid out for the language model as ``<pad>* <bos> w_1 ... w_k <sep>`` (left-padded to a
fixed ``prompt_len``) and an answer as ``v_1 ... v_m <eos> <pad>*`` (right-padded). Text is
lower-cased and split on whitespace; decoding joins words with single spaces.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch

PAD, BOS, EOS, SEP, UNK = 0, 1, 2, 3, 4
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<sep>", "<unk>")


class Tokenizer:
    """Word-level tokenizer over a fixed vocabulary.

    Args:
        words: the ordinary words, in id order; ids start after the special tokens.

    Raises:
        ValueError: if a word repeats, contains whitespace or is a special token.
    """

    pad_id = PAD
    bos_id = BOS
    eos_id = EOS
    sep_id = SEP
    unk_id = UNK

    def __init__(self, words: Sequence[str]) -> None:
        vocab = list(SPECIAL_TOKENS) + list(words)
        index: dict[str, int] = {}
        for i, word in enumerate(vocab):
            if not word or word != word.strip() or len(word.split()) != 1:
                raise ValueError(f"vocabulary entry {i} ({word!r}) must be one non-empty word")
            if word in index:
                raise ValueError(
                    f"word {word!r} appears twice in the vocabulary (ids {index[word]}, {i})"
                )
            index[word] = i
        self.vocab: tuple[str, ...] = tuple(vocab)
        self._index = index

    @property
    def vocab_size(self) -> int:
        """Number of tokens, special tokens included."""
        return len(self.vocab)

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids of the special tokens."""
        return tuple(range(len(SPECIAL_TOKENS)))

    def token_id(self, word: str) -> int:
        """Id of ``word`` (``<unk>`` for a word outside the vocabulary)."""
        return self._index.get(word, UNK)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (lower-cased, split on whitespace, no special tokens added)."""
        if not isinstance(text, str):
            raise TypeError(f"expected a string, got {type(text).__name__}")
        return [self._index.get(w, UNK) for w in text.lower().split()]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; with ``skip_special_tokens`` the special tokens are left out.

        Raises:
            ValueError: if an id is outside ``[0, vocab_size)``.
        """
        words = []
        for t in ids:
            t = int(t)
            if not 0 <= t < self.vocab_size:
                raise ValueError(f"token id {t} out of range [0, {self.vocab_size})")
            if skip_special_tokens and t < len(SPECIAL_TOKENS):
                continue
            words.append(self.vocab[t])
        return " ".join(words)

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` outside the vocabulary (lower-cased, in order, without repeats)."""
        out: list[str] = []
        for w in text.lower().split():
            if w not in self._index and w not in out:
                out.append(w)
        return out

    def check_prompt(self, text: Any, index: int = 0, unknown: str = "error") -> None:
        """Refuse a prompt the policies could not read.

        Args:
            text: the prompt.
            index: its position in the batch (named in errors).
            unknown: ``"error"`` (default): words outside the vocabulary raise; ``"unk"``: they are
                read as ``<unk>`` with a warning naming them.

        Raises:
            TypeError: for a prompt that is not a string.
            ValueError: for an empty prompt, or (``unknown="error"``) words outside the vocabulary.
        """
        if unknown not in ("error", "unk"):
            raise ValueError(f"unknown must be 'error' or 'unk'; got {unknown!r}")
        if not isinstance(text, str):
            raise TypeError(f"prompt {index} must be a string; got {type(text).__name__}")
        if not text.split():
            raise ValueError(f"prompt {index} is empty")
        missing = self.unknown_words(text)
        if not missing:
            return
        words = ", ".join(repr(w) for w in missing)
        if unknown == "error":
            raise ValueError(
                f"prompt {index} ({text!r}) has words outside the vocabulary: {words} "
                "(Tokenizer.vocab lists the words; unknown='unk' reads them as <unk>)"
            )
        warnings.warn(
            f"prompt {index} ({text!r}): words outside the vocabulary read as <unk>: {words}",
            stacklevel=3,
        )

    def encode_prompts(
        self,
        texts: Sequence[str],
        prompt_len: int,
        device: torch.device | str | None = None,
        *,
        unknown: str = "error",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``<bos> prompt <sep>`` ids and their mask.

        Args:
            texts: prompts as text.
            prompt_len: the fixed width, ``<bos>`` and ``<sep>`` included.
            device: where the tensors go.
            unknown: words outside the vocabulary: ``"error"`` (default) or ``"unk"`` (read as
                ``<unk>``, with a warning); see :meth:`check_prompt`.

        Returns:
            ``(ids, mask)``: int64 ``[B, prompt_len]`` and bool ``[B, prompt_len]``.

        Raises:
            TypeError: for a prompt that is not a string.
            ValueError: for an empty prompt, unknown words (``unknown="error"``), or a prompt that
                needs more than ``prompt_len`` tokens.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of prompts, not one string")
        ids = torch.full((len(texts), prompt_len), PAD, dtype=torch.long)
        mask = torch.zeros((len(texts), prompt_len), dtype=torch.bool)
        for i, text in enumerate(texts):
            self.check_prompt(text, i, unknown)
            row = [BOS, *self.encode(text), SEP]
            if len(row) > prompt_len:
                raise ValueError(
                    f"prompt {i} ({text!r}) needs {len(row)} tokens with <bos> and <sep>; "
                    f"prompt_len is {prompt_len}"
                )
            ids[i, prompt_len - len(row) :] = torch.tensor(row)
            mask[i, prompt_len - len(row) :] = True
        return ids.to(device), mask.to(device)

    def encode_answers(
        self,
        texts: Sequence[str],
        max_len: int | None = None,
        add_eos: bool = False,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded answer ids and their mask.

        Args:
            texts: answers as text.
            max_len: the width; by default the longest answer (at least 1).
            add_eos: append ``<eos>`` to every answer (it counts in the mask).
            device: where the tensors go.

        Returns:
            ``(ids, mask)``: int64 ``[B, L]`` and bool ``[B, L]``.

        Raises:
            ValueError: if an answer is longer than ``max_len``.
        """
        rows = [self.encode(t) + ([EOS] if add_eos else []) for t in texts]
        width = max([1, *(len(r) for r in rows)]) if max_len is None else max_len
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            if len(row) > width:
                raise ValueError(f"answer {i} has {len(row)} tokens; max_len is {width}")
            if row:
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = True
        return ids.to(device), mask.to(device)

    def decode_batch(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> list[str]:
        """Decode each row of ``ids`` (only the positions where ``mask`` is true, when given)."""
        out = []
        for i in range(ids.shape[0]):
            row = ids[i] if mask is None else ids[i][mask[i]]
            out.append(self.decode(row.tolist()))
        return out
