"""Every architecture the importer takes, end to end: a tiny random model made here (a transformers config,
random weights, saved as a Hugging Face folder with a byte-level ChatML tokenizer), imported through
onnxruntime-genai's builder in fp32, decodes greedily to exactly the token ids transformers decodes on the
same weights.

The weights are drawn wider than transformers' own init (std 0.02 gives near-flat logits, where rounding
could flip an argmax) and every bias and norm weight is drawn too (transformers starts them at zero and
one, which would leave Qwen2's q/k/v biases or the q/k norms untested). Sliding windows are shorter than
the sequences, so they are exercised. A LongRoPE model's context is capped at its original length (past it
the built graph and transformers part, see engine/model/convert/hf_prepare.py): its replies run up to that
cap and are compared there. A reference that barely moves (a random model stuck on one token) fails as such:
draw other weights, don't loosen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from engine.contract import SamplingParams
from engine.model.convert.importer import import_model
from engine.model.generator import Generator
from engine.model.registry import LoadedModel, load_model
from engine.model.runner import OnnxRunner
from tests.fakes.model import CHATML, SPECIAL
from tests.model.support import collect, prompt_ids

pytestmark = pytest.mark.slow

NEW_TOKENS = 16
QUESTION = "Why is the sky blue?"  # 39 tokens in ChatML with the byte-level tokenizer
SECOND = "What do owls eat?"  # 36
MAX_LEN = 128
# Small, but with grouped-query attention (4 query heads on 2 KV heads) and a vocabulary past the tokenizer's.
COMMON: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "vocab_size": 320,
}
WINDOW = 16  # sliding windows: well inside the 55 positions a test reaches


@dataclass(frozen=True)
class Arch:
    config: str  # transformers' config class
    model: str  # transformers' causal-LM class (its name becomes the folder's `architectures`)
    options: dict[str, Any] = field(default_factory=dict)  # over COMMON
    seed: int = 0
    # Gemma multiplies its embeddings by sqrt(hidden) and ties its head to them: drawn full size they swamp
    # the layers, and a random Gemma repeats its last input token forever. Smaller embeddings and stronger
    # post-norms (and final norm) give it something to say.
    embed_scale: float = 1.0
    norm_gain: float = 0.0


def _longrope(rotary_half: int) -> dict[str, Any]:
    # As Phi-3.5-mini and Phi-4-mini's config.json carry it (transformers keeps their "type" key).
    return {
        "type": "longrope",
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.75,
        "short_factor": [1.0 + 0.1 * i for i in range(rotary_half)],
        "long_factor": [1.0 + 0.5 * i for i in range(rotary_half)],
    }


_GEMMA = {"head_dim": 16, "query_pre_attn_scalar": 16}  # attention scaled by 1/sqrt(head), as in Gemma
ARCHS: dict[str, Arch] = {
    # SmolLM2 / Llama 3.2: tied embeddings, Llama 3's RoPE scaling.
    "llama": Arch(
        "LlamaConfig",
        "LlamaForCausalLM",
        {
            "tie_word_embeddings": True,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
    ),
    # Mistral 7B v0.2 and later: no sliding window.
    "mistral": Arch("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
    # Mistral 7B v0.1: a sliding window (4096) on every layer.
    "mistral-window": Arch("MistralConfig", "MistralForCausalLM", {"sliding_window": WINDOW}),
    # Qwen2 / Qwen2.5 (7B and up): q/k/v biases, an untied output head, the 151,936-token vocabulary.
    "qwen2": Arch("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": False, "vocab_size": 151_936}),
    # Qwen3: q/k RMS norms, a head wider than hidden / heads.
    "qwen3": Arch("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 32, "tie_word_embeddings": True}),
    # Gemma 2: four norms a layer, attention and final logit soft-capping, local and global layers.
    "gemma2": Arch(
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {**_GEMMA, "sliding_window": WINDOW},
        seed=1,
        embed_scale=0.5,
        norm_gain=3.0,
    ),
    # Gemma 3 (text): q/k norms, a local and a global RoPE base, local and global layers; as 4B and up, the
    # global layers' RoPE scaled linearly (by 8), the local layers' not.
    "gemma3": Arch(
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {
            **_GEMMA,
            "sliding_window": WINDOW,
            "layer_types": ["sliding_attention", "full_attention"],
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
        },
        embed_scale=0.3,
        norm_gain=3.0,
    ),
    # Phi-3 mini 4k without its window: fused qkv and gate/up projections.
    "phi3": Arch("Phi3Config", "Phi3ForCausalLM", {"original_max_position_embeddings": 256}),
    # Phi-3 mini 4k as shipped: a sliding window (2047) on every layer.
    "phi3-window": Arch(
        "Phi3Config", "Phi3ForCausalLM", {"original_max_position_embeddings": 256, "sliding_window": WINDOW}
    ),
    # Phi-3.5 mini / Phi-4 mini: LongRoPE (short factors up to the original length, long ones past it),
    # partial rotary, tied embeddings. The context is capped at the original length (48): the prompts (39, 36)
    # fit, the replies stop there.
    # Heads of 64: the attention kernel wants rotary_dim / 2 a multiple of 8 (real head sizes give that).
    "phi3-longrope": Arch(
        "Phi3Config",
        "Phi3ForCausalLM",
        {
            "hidden_size": 128,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "original_max_position_embeddings": 48,
            "partial_rotary_factor": 0.75,
            "tie_word_embeddings": True,
            "rope_parameters": _longrope(24),
        },
    ),
    # Not supported: SmolLM3 (every fourth layer without RoPE); onnxruntime-genai 0.18's builder fails on it
    # (builders/base.py, make_attention_qk_rope: KeyError: 'position_ids').
    # gpt-oss: mixture of experts, attention sinks, local and global layers.
    "gpt_oss": Arch(
        "GptOssConfig",
        "GptOssForCausalLM",
        {
            "head_dim": 16,
            "num_local_experts": 4,
            "num_experts_per_tok": 2,
            "sliding_window": WINDOW,
            "layer_types": ["sliding_attention", "full_attention"],
        },
    ),
}


def _tokenizer() -> PreTrainedTokenizerFast:
    """tests/fakes/model.py's byte-level tokenizer (a token per byte, no merges) with ChatML, as a
    transformers tokenizer that save_pretrained writes into the model folder."""
    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL))
    end = SPECIAL[1]
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, eos_token=end, pad_token=end, chat_template=CHATML
    )


def _randomise(model: torch.nn.Module, arch: Arch) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:  # projections, experts and embeddings
                scale = arch.embed_scale if "embed_tokens" in name else 1.0
                p.normal_(0.0, 2 * scale * p.shape[-1] ** -0.5)
            elif "bias" in name or "sinks" in name:
                p.normal_(0.0, 0.5)
            else:  # norm weights (ones, or zeros where the norm adds one)
                p.add_(torch.randn_like(p), alpha=0.2)
                if ".post_" in name or name == "model.norm.weight":
                    p.add_(arch.norm_gain)


@dataclass
class Pair:
    reference: Any  # the transformers model
    tokenizer: PreTrainedTokenizerFast
    imported: LoadedModel


Source = tuple[Any, PreTrainedTokenizerFast, Path]  # the transformers model, its tokenizer, its folder
Imported = dict[str, tuple[Source, Future[LoadedModel]]]  # name -> its source, and the import of it


def _source(arch: Arch, root: Path) -> Source:
    """The transformers model, its tokenizer and its Hugging Face folder."""
    tokenizer = _tokenizer()
    end = tokenizer.convert_tokens_to_ids(SPECIAL[1])
    config = getattr(transformers, arch.config)(
        **{**COMMON, "eos_token_id": end, "pad_token_id": end, "bos_token_id": end, **arch.options}
    )
    torch.manual_seed(arch.seed)
    model = getattr(transformers, arch.model)(config).eval()
    _randomise(model, arch)
    hf = root / "hf"
    model.save_pretrained(str(hf))
    tokenizer.save_pretrained(str(hf))
    return model, tokenizer, hf


def _import(hf: Path) -> LoadedModel:
    info = import_model(str(hf), hf.parent / "models", name="tiny", precision="fp32", progress=lambda _: None)
    return load_model(info.path)


@pytest.fixture(scope="module")
def imported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """name -> its source and the import of it, for the architectures this session runs. The sources are
    made one at a time (torch's seed is global), the imports (a builder subprocess each) side by side; a
    failed import fails only its own architecture's tests."""
    wanted: set[str] = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if isinstance(item, pytest.Function) and item.module is request.module and callspec is not None:
            wanted.add(callspec.params["name"])
    sources = {name: _source(ARCHS[name], tmp_path_factory.mktemp(name)) for name in sorted(wanted)}
    tqdm = os.environ.get("TQDM_DISABLE")  # the importer sets and restores it per import; threads interleave
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        imports = {name: pool.submit(_import, source[2]) for name, source in sources.items()}
    if tqdm is None:
        os.environ.pop("TQDM_DISABLE", None)
    else:
        os.environ["TQDM_DISABLE"] = tqdm
    return {name: (sources[name], imports[name]) for name in sources}


def _pair(imported: Imported, name: str) -> Pair:
    (model, tokenizer, _), future = imported[name]
    return Pair(model, tokenizer, future.result())


def _transformers_greedy(model: Any, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    """Greedy tokens, and at each step the margin of the chosen logit over the next best."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        # The attention mask is given: the prompt holds <|im_end|>, the pad token, which generate() would mask.
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
    margins = [float(top[0] - top[1]) for top in (step[0].topk(2).values for step in out.logits)]
    return [int(t) for t in out.sequences[0, len(prompt) :]], margins


class _IdText:
    """Stands in for the tokenizer's decode in the generator: each token id written as <id>, so the streamed
    text reads back as exactly the ids chosen (the tiny tokenizer has no text for ids past its 258)."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(f"<{i}>" for i in ids)


async def _parley_greedy(model: LoadedModel, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Greedy replies through the generator, all at once (one cache row each): the first prompt is read
    whole, the others in chunks of 5 (under a sliding window) while it decodes, then all decode together."""
    by_ids = dataclasses.replace(model, tokenizer=_IdText())  # type: ignore[arg-type]  # decode() is all it needs
    runner = OnnxRunner(by_ids, device="cpu", threads=2, max_len=MAX_LEN, rows=len(prompts))
    async with Generator(runner, prefill_chunk=5) as gen:
        replies = await asyncio.gather(*(collect(gen, p, SamplingParams(max_tokens=n)) for p in prompts))
    return [[int(i) for i in re.findall(r"<(\d+)>", text)] for text, _ in replies]


def _expected(pair: Pair, prompt: list[int]) -> tuple[list[int], list[float]]:
    expected, margins = _transformers_greedy(pair.reference, prompt, NEW_TOKENS)
    assert len(set(expected)) >= NEW_TOKENS // 2, f"degenerate reference {expected}: draw other weights"
    eos = pair.imported.config.eos_token_ids
    end = next((i for i, t in enumerate(expected) if t in eos), len(expected))
    room = min(MAX_LEN, pair.imported.config.context_length) - len(prompt)  # the generator stops at the context
    return expected[: min(end, room)], margins  # and at EOS, which it does not stream


def _same(got: list[int], expected: list[int], margins: list[float]) -> str:
    """'' when equal, else where they part and how close transformers' choice was there (a near tie?)."""
    if got == expected:
        return ""
    i = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected)))
    return f"parted at step {i} (transformers' top-2 margin there {margins[i]:.3g}):\n{got}\n{expected}"


@pytest.mark.parametrize("name", list(ARCHS))
async def test_greedy_tokens_equal_transformers(imported: Imported, name: str) -> None:
    pair = _pair(imported, name)
    prompt = prompt_ids(pair.imported, QUESTION)
    # The imported folder's tokenizer and chat template give the prompt the source's own give.
    messages = [{"role": "user", "content": QUESTION}]
    assert prompt == pair.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert pair.imported.config.eos_token_ids == {pair.tokenizer.convert_tokens_to_ids(SPECIAL[1])}
    expected, margins = _expected(pair, prompt)
    [got] = await _parley_greedy(pair.imported, [prompt], NEW_TOKENS)
    assert not (diff := _same(got, expected, margins)), diff


@pytest.mark.parametrize("name", list(ARCHS))
async def test_two_replies_at_once(imported: Imported, name: str) -> None:
    """Two requests sharing the generator: chunked prefill beside a decoding row, then shared decode steps
    over rows of different lengths. Each reply is still the one transformers gives for its prompt alone."""
    pair = _pair(imported, name)
    prompts = [prompt_ids(pair.imported, QUESTION), prompt_ids(pair.imported, SECOND)]
    replies = await _parley_greedy(pair.imported, prompts, NEW_TOKENS)
    for prompt, got in zip(prompts, replies, strict=True):
        expected, margins = _expected(pair, prompt)
        assert not (diff := _same(got, expected, margins)), diff


@pytest.mark.parametrize("name", ["phi3-longrope"])
def test_longrope_context_is_the_original_length(imported: Imported, name: str) -> None:
    """Past its original length a LongRoPE model's built graph parts from transformers: the import caps the
    context there, and Parley's runner takes its context from the folder."""
    pair = _pair(imported, name)
    original = ARCHS[name].options["original_max_position_embeddings"]
    assert pair.imported.config.context_length == original
    assert OnnxRunner(pair.imported, device="cpu", threads=1, max_len=MAX_LEN).max_len == original
