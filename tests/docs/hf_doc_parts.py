"""Stand-ins for the files a reader of the bring-your-own-model page brings (``docs/games/hf.md``).

:func:`build` writes, into the page's temporary folder, tiny Hugging Face parts under the names the
page uses: ``my_model/`` (a one-layer Llama causal LM and its word-level tokenizer),
``my_reward_model/`` (a one-output Llama reward model that prefers answers ending with the word
``w7``, with the same tokenizer), ``prompts.jsonl`` (20 prompts), ``model_a/`` (another Llama) and
``lora_adapter/`` (a PEFT LoRA adapter on ``my_model/``). Everything is built from configs; nothing
is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

VOCAB = 48


def _tokenizer():
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2} | {f"w{i}": i for i in range(3, VOCAB)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def _config(**over):
    import transformers

    kw = {
        "vocab_size": VOCAB,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "bos_token_id": 1,
        "eos_token_id": 1,
        "pad_token_id": 0,
    }
    kw.update(over)
    return transformers.LlamaConfig(**kw)


def build(folder: Path) -> None:
    """Write the parts into ``folder`` (the page's working directory)."""
    import peft
    import torch
    import transformers

    tok = _tokenizer()
    for name, seed in (("my_model", 0), ("model_a", 1)):
        torch.manual_seed(seed)
        transformers.LlamaForCausalLM(_config()).save_pretrained(folder / name)
        tok.save_pretrained(folder / name)
    torch.manual_seed(2)
    judge = transformers.LlamaForSequenceClassification(_config(num_labels=1)).eval()
    with torch.no_grad():  # the reward reads the last token's embedding: high for "w7"
        judge.model.embed_tokens.weight.zero_()
        judge.model.embed_tokens.weight[7, 0] = 1.0
        for layer in judge.model.layers:
            for p in layer.parameters():
                p.zero_()
        judge.score.weight.zero_()
        judge.score.weight[0, 0] = 3.0
    judge.save_pretrained(folder / "my_reward_model")
    tok.save_pretrained(folder / "my_reward_model")
    base = transformers.AutoModelForCausalLM.from_pretrained("my_model")  # cwd: the folder
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    peft.get_peft_model(base, lora).save_pretrained(folder / "lora_adapter")
    prompts = [f"w{10 + i} w{30 + i % 10}" for i in range(20)]
    (folder / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in prompts)
    )
