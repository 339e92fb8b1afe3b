"""Tiny Hugging Face parts built locally for the tests (nothing is downloaded)."""

from __future__ import annotations

import math

import torch
import transformers
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import models, pre_tokenizers

SPECIALS = ("<pad>", "<eos>", "<unk>")


def word_tokenizer(size: int, *, pad: bool = True, chat_template: str | None = None):
    """A word-level ``PreTrainedTokenizerFast`` of exactly ``size`` tokens: ``<pad>`` (0, unless
    ``pad=False``), ``<eos>``, ``<unk>``, then the words ``w3``, ``w4``, ..."""
    specials = SPECIALS if pad else SPECIALS[1:]
    vocab = {t: i for i, t in enumerate(specials)}
    for i in range(len(specials), size):
        vocab[f"w{i}"] = i
    raw = RawTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = {"pad_token": "<pad>"} if pad else {}
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def tiny_gpt2(vocab_size: int, seed: int = 0, n_positions: int = 64):
    """A random one-layer GPT-2 causal LM (eval mode) with ``vocab_size`` embeddings."""
    config = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_layer=1,
        n_embd=16,
        n_head=2,
        n_positions=n_positions,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.GPT2LMHeadModel(config).eval()


def length_judge(prompts, pairs):
    """``P(a > b) = sigmoid(len(a) - len(b))`` in words: longer answers are preferred."""
    return [1.0 / (1.0 + math.exp(len(b.split()) - len(a.split()))) for a, b in pairs]


def prompts(n: int = 6):
    """``n`` short prompts over the words of :func:`word_tokenizer`."""
    return [" ".join(f"w{10 + 3 * i + j}" for j in range(1 + i % 3)) for i in range(n)]
