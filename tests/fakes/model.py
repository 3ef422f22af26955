"""A stand-in for a converted model where only its tokenizer and chat template matter: the tests in which a
scripted generator answers. Built in memory, so those tests need neither the converted model nor the
`convert` extra."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from engine.model.registry import LoadedModel, ModelConfig, ModelInfo
from engine.model.template import ChatTemplate

# ChatML, as SmolLM2 and Qwen use it (the scripted generator reads the user turns back from it).
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ("<|im_start|>", "<|im_end|>")


def tiny_model(folder: Path) -> LoadedModel:
    """Byte-level tokens without merges (any text round-trips exactly, a token per byte) and ChatML."""
    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL))
    end = tokenizer.token_to_id("<|im_end|>")
    assert end is not None  # a special token of its own
    config = ModelConfig(
        num_layers=1, num_kv_heads=1, head_size=1, vocab_size=tokenizer.get_vocab_size(), context_length=2048,
        eos_token_ids=frozenset({end}), pad_token_id=end, past_key="", past_value="", present_key="",
        present_value="",
    )  # fmt: skip
    info = ModelInfo(name="tiny-test-model", path=folder, manifest={"precision": "none", "device": "cpu"})
    return LoadedModel(info=info, config=config, tokenizer=tokenizer, template=ChatTemplate(CHATML))
