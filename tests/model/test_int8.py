"""The ``gguf`` precision on the test model: its GGUF's blocks with int8 activations (gguf_onnx.py), beside
the test model's own ``gguf-exact``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from engine.contract import SamplingParams
from engine.model.catalog import BUILTIN_NAME, BUILTIN_SOURCE
from engine.model.convert.importer import import_model
from engine.model.generator import Generator
from engine.model.registry import LoadedModel, load_model
from engine.model.runner import OnnxRunner
from tests.model.support import QUESTIONS, collect, prompt_ids

PRECISION = "gguf"


@pytest.fixture(scope="module")
def int8_model(models_dir: Path) -> LoadedModel:
    info = import_model(
        BUILTIN_SOURCE, models_dir, name=f"{BUILTIN_NAME}-{PRECISION}", precision=PRECISION, progress=lambda _: None
    )
    return load_model(info.path)


def _argmax_over(model: LoadedModel, ids: list[int]) -> np.ndarray:
    runner = OnnxRunner(model, device="cpu", max_len=512)
    return runner.teacher_forced_logits(ids).argmax(-1)


def test_same_codes_int8_products_centred_zero_points(int8_model: LoadedModel, model: LoadedModel) -> None:
    assert int8_model.info.precision == PRECISION
    graph = onnx.load(str(int8_model.info.path / "model.onnx"), load_external_data=False).graph
    # The LM head (tied: the embedding's blocks) keeps the exact hi/lo split in both precisions.
    body = [n for n in graph.node if n.op_type == "MatMulNBits" and not n.name.startswith("token_embd")]
    levels = {a.i for n in body for a in n.attribute if a.name == "accuracy_level"}
    assert levels == {4}
    # The weights file differs from gguf-exact's only in zero points and offsets: same size.
    size = (int8_model.info.path / "model.onnx.data").stat().st_size
    assert size == (model.info.path / "model.onnx.data").stat().st_size


def test_follows_the_exact_graph(int8_model: LoadedModel, model: LoadedModel) -> None:
    # Teacher-forced over prompts and the exact graph's own greedy answers: int8 activations move few
    # argmaxes (97.7% agreement with the reference on the bench; without centred zero points, 94.5%).
    agree = total = 0
    for question in QUESTIONS[:3]:
        prompt = prompt_ids(model, question)
        runner = OnnxRunner(model, device="cpu", max_len=512)
        reply = [int(runner.prefill(prompt).argmax())]
        for _ in range(40):
            reply.append(int(runner.forward(np.array(reply[-1:])).argmax()))
        ids = prompt + reply
        exact, fast = _argmax_over(model, ids), _argmax_over(int8_model, ids)
        span = slice(len(prompt) - 1, len(ids) - 1)
        agree += int((exact[span] == fast[span]).sum())
        total += len(reply)
    # Here: 122/123 centred; the raw codes (zero point 0) gave 115/123.
    assert agree / total >= 0.97


@pytest.fixture(scope="module")
async def int8_batched(int8_model: LoadedModel) -> AsyncIterator[Generator]:
    async with Generator(OnnxRunner(int8_model, device="cpu", max_len=1024, rows=4), prefill_chunk=16) as gen:
        yield gen


async def test_batched_greedy_equals_single_runs(int8_model: LoadedModel, int8_batched: Generator) -> None:
    params = [SamplingParams(max_tokens=8 + 6 * i) for i in range(len(QUESTIONS))]
    prompts = [prompt_ids(int8_model, q) for q in QUESTIONS]
    async with Generator(OnnxRunner(int8_model, device="cpu", max_len=1024, rows=1)) as single_gen:
        single = [await collect(single_gen, p, sp) for p, sp in zip(prompts, params, strict=True)]
    together = await asyncio.gather(*(collect(int8_batched, p, sp) for p, sp in zip(prompts, params, strict=True)))
    assert "Paris" in single[0][0]
    if _has_vnni():
        assert [t for t, _ in together] == [t for t, _ in single]
        return
    # Without VNNI (AVX2 only) MLAS's int8 kernels round differently with more rows in a step, so two
    # answers may part at a near-tie: on one AMD EPYC 4 of 6 were identical and the others parted after 36
    # and 59 characters; on another two parted after 4. What holds: every answer starts as its single
    # run's does (same first token), and most are identical.
    agreed = [_common_start(a, b) for (a, _), (b, _) in zip(single, together, strict=True)]
    assert min(agreed) >= 1, agreed
    assert sum(a == b for (a, _), (b, _) in zip(single, together, strict=True)) >= len(QUESTIONS) // 2, agreed


def _has_vnni() -> bool:
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _common_start(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
