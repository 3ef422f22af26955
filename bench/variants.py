"""Graph variants of the default model, to measure how far ONNX Runtime's CPU kernels can go at batch 1.

Not models to serve: each is the installed ``q4_1-exact`` folder with one change, written to OUT/<name>
so that ``python -m bench.run --models smollm2-135m,OUT/int8-body,OUT/no-offsets`` times them beside
llama.cpp in one run (decode speed and top-1 agreement against the reference):

- ``int8-body``: the 4-bit products take int8 activations (MatMulNBits ``accuracy_level=4``, MLAS's VNNI
  kernels) on the raw codes (zero point 0). Faster, but less faithful than llama.cpp: the ``q4_1-int8``
  precision (quantize.py) is this with centred zero points, which recovers llama.cpp's fidelity.
- ``no-offsets``: ``int8-body`` without the Q4_1 block offsets (``blocksum(x) @ M`` and its add, 540 of
  the graph's 897 operators). Its answers are wrong; its speed is a ceiling for any rearrangement of
  the exact offsets, since none can cost less than leaving them out.
- ``float-zero-points``: the offsets folded into MatMulNBits as float zero points (``-m/d`` per block),
  exact in one operator, but ONNX Runtime runs float zero points on a slow dequantize-then-GEMM path.

    python -m bench.variants OUT [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor

from engine.model.catalog import BUILTIN_NAME, resolve_model
from engine.model.convert.quantize import PRECISION
from engine.model.registry import MANIFEST, write_manifest
from engine.runtime.settings import load_settings

Edit = Callable[[onnx.ModelProto, Path], None]


def _body(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "MatMulNBits" and not n.name.startswith("lm_head")]


def _set_accuracy(node: onnx.NodeProto, level: int) -> None:
    next(a for a in node.attribute if a.name == "accuracy_level").i = level


def int8_body(model: onnx.ModelProto, _: Path) -> None:
    for node in _body(model):
        _set_accuracy(node, 4)


def _drop_offsets(model: onnx.ModelProto) -> None:
    """Remove ``blocksum(x) @ M`` and its Add: each product's output comes straight from MatMulNBits."""
    renamed: dict[str, str] = {}
    kept = []
    for node in model.graph.node:
        if node.name.endswith("/Mins") or "/q41sum/" in node.name:
            continue
        if node.op_type == "Add" and node.input[0].endswith("/dq"):
            renamed[node.input[0]] = node.output[0]
            continue
        kept.append(node)
    for node in kept:
        node.output[:] = [renamed.get(o, o) for o in node.output]
    del model.graph.node[:]
    model.graph.node.extend(kept)


def no_offsets(model: onnx.ModelProto, folder: Path) -> None:
    int8_body(model, folder)
    _drop_offsets(model)


def float_zero_points(model: onnx.ModelProto, folder: Path) -> None:
    inits = {i.name: i for i in model.graph.initializer}
    for node in _body(model):
        tag = node.name.removesuffix("/MatMulNBits")
        scales, mins = inits[node.input[2]], inits[f"{tag}.mins"]
        for tensor in (scales, mins):
            load_external_data_for_tensor(tensor, str(folder))
        d, m = numpy_helper.to_array(scales), numpy_helper.to_array(mins).T  # both [N, K/32]
        # d*q + m == d*(q - zp) with zp = -m/d. A block with d == 0 (all its weights equal m) cannot be
        # written this way and would lose m; the test checks the logits against the default graph's.
        zp = (-m / np.where(d == 0, 1, d)).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(zp, f"{tag}.fzp"))
        node.input[3] = f"{tag}.fzp"
    _drop_offsets(model)


VARIANTS: dict[str, Edit] = {
    "int8-body": int8_body,
    "no-offsets": no_offsets,
    "float-zero-points": float_zero_points,
}


def write_variant(source: Path, out: Path, name: str, edit: Edit) -> Path:
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    # ONNX Runtime refuses external data outside the model's folder, so the weights are copied.
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.onnx", MANIFEST))
    model = onnx.load(str(source / "model.onnx"), load_external_data=False)
    edit(model, folder)  # weights read from the copy: onnx refuses a hard-linked file (tests link the source)
    # New initializers (float zero points) are small enough to stay inside model.onnx.
    onnx.save_model(model, str(folder / "model.onnx"))
    manifest = json.loads((source / MANIFEST).read_text())
    fields = {k: v for k, v in manifest.items() if k not in ("files", "format")}
    write_manifest(folder, **(fields | {"name": name, "precision": f"{PRECISION}, {name}"}))
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default=BUILTIN_NAME)
    args = parser.parse_args(argv)
    info = resolve_model(args.model, load_settings().models_path)
    if info.precision != PRECISION:
        parser.error(f"{args.model} is {info.precision}, not {PRECISION}")
    for name, edit in VARIANTS.items():
        print(write_variant(info.path, args.out, name, edit))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
