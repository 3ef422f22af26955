"""bench/variants.py: the probe graphs whose figures the README quotes change what they say they change."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from bench.variants import VARIANTS, write_variant
from engine.model.registry import LoadedModel, load_model, read_model_info
from engine.model.runner import OnnxRunner


def _ops(folder: Path) -> Counter[str]:
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    return Counter(n.op_type for n in graph.node)


def _levels(folder: Path) -> set[int]:
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    return {
        a.i
        for n in graph.node
        if n.op_type == "MatMulNBits" and not n.name.startswith("lm_head")
        for a in n.attribute
        if a.name == "accuracy_level"
    }


def _logits(model: LoadedModel, ids: list[int]) -> np.ndarray:
    runner = OnnxRunner(model, device="cpu", max_len=64)
    return runner.prefill(ids)


def test_variants_change_only_what_they_say(model: LoadedModel, tmp_path: Path) -> None:
    source = model.info.path
    base = _ops(source)
    folders = {name: write_variant(source, tmp_path, name, edit) for name, edit in VARIANTS.items()}
    for folder in folders.values():
        read_model_info(folder)  # a valid model folder (checksums of the rewritten graph)
    assert _levels(source) == {0}
    assert _levels(folders["int8-body"]) == {4}
    assert _ops(folders["int8-body"]) == base
    # The offsets: per product a MatMul and an Add, per distinct activation a Reshape and a ReduceSum.
    dropped = _ops(folders["no-offsets"])
    assert base["MatMulNBits"] == dropped["MatMulNBits"]
    assert dropped["MatMul"] == 0
    assert sum(base.values()) - sum(dropped.values()) == 2 * 150 + 2 * 120
    # Float zero points are the same weights in one operator: the same logits up to rounding.
    ids = list(model.tokenizer.encode("The capital of France is").ids)
    exact = _logits(model, ids)
    folded = _logits(load_model(folders["float-zero-points"]), ids)
    np.testing.assert_allclose(folded, exact, atol=2e-3 * float(np.abs(exact).max()))
    assert int(folded.argmax()) == int(exact.argmax())
