"""ONNX Runtime's own 4-bit weight quantizers as a precision candidate (issue 18), measured by ``bench.run``.

From the fp32 import of a model (the GGUF's weights dequantised), ``onnxruntime.quantization``'s
``MatMulNBitsQuantizer`` writes a ``MatMulNBits`` graph per variant: round-to-nearest (its default
algorithm) and HQQ (half-quadratic, calibration-free), each with blocks of 32 and of 16, asymmetric with
integer zero points and ``accuracy_level=4`` (int8 activations: MLAS's VNNI kernels, as Parley's ``gguf``
precision uses). HQQ optimises continuous zero points; ONNX Runtime takes float zero points only on its
slow dequantise-then-GEMM path (the ``float-zero-points`` probe in the README: 8x slower), so they are
rounded to integers here, which leaves HQQ's codes and scales as they are (a code moves only when its zero
point is exactly half-way). Each variant is a model folder beside the others, for ``bench.run --models``:

    python -m bench.ort_quant [--model smollm2-135m] [--out DIR]
    python -m bench.run --fidelity-only --models smollm2-135m,gguf,DIR/rtn-b32,DIR/hqq-b32,...

The requantisation is a second rounding of weights that were already 4-bit, so these graphs can only lose
fidelity against the GGUF's own blocks; what they may buy is speed (plain blocks, no Q4_1 offsets).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from engine.model.catalog import BUILTIN_NAME
from engine.model.registry import MANIFEST, ModelInfo, read_model_info, write_manifest
from engine.runtime.settings import load_settings

VARIANTS = {"rtn-b32": ("rtn", 32), "rtn-b16": ("rtn", 16), "hqq-b32": ("hqq", 32), "hqq-b16": ("hqq", 16)}
ACCURACY_LEVEL = 4  # int8 activations


def log(message: str) -> None:
    print(f"ort-quant: {message}", file=sys.stderr, flush=True)


def _pack_zero_points(zero: np.ndarray, n: int, blocks: int) -> np.ndarray:
    """Float zero points (N x blocks, flat) as MatMulNBits' packed 4-bit integers: per output column,
    two blocks a byte, the even block in the low nibble."""
    z = np.clip(np.rint(zero.reshape(n, blocks)), 0, 15).astype(np.uint8)
    if blocks % 2:
        z = np.concatenate([z, np.zeros((n, 1), np.uint8)], axis=1)
    return (z[:, 0::2] | (z[:, 1::2] << 4)).reshape(-1)


def integer_zero_points(model: onnx.ModelProto) -> int:
    """Every MatMulNBits with float zero points gets them rounded and packed; ``accuracy_level`` set on all.
    Returns how many nodes had float zero points."""
    inits = {t.name: t for t in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kept = [a for a in node.attribute if a.name != "accuracy_level"]
        del node.attribute[:]
        node.attribute.extend([*kept, onnx.helper.make_attribute("accuracy_level", ACCURACY_LEVEL)])
        if len(node.input) < 4 or node.input[3] not in inits:
            continue
        zp = inits[node.input[3]]
        if zp.data_type == onnx.TensorProto.UINT8:
            continue
        blocks = -(-int(attrs["K"]) // int(attrs["block_size"]))
        packed = numpy_helper.from_array(
            _pack_zero_points(numpy_helper.to_array(zp).astype(np.float32), int(attrs["N"]), blocks), zp.name
        )
        zp.CopyFrom(packed)
        changed += 1
    return changed


def quantize(fp32: ModelInfo, algorithm: str, block: int, folder: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        HQQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    model = onnx.load(str(fp32.path / "model.onnx"))  # with its external weights
    config = (
        DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=False, accuracy_level=ACCURACY_LEVEL)
        if algorithm == "rtn"
        else HQQWeightOnlyQuantConfig(block_size=block, bits=4)
    )
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    out = quantizer.model.model
    rounded = integer_zero_points(out)
    log(f"{folder.name}: {sum(n.op_type == 'MatMulNBits' for n in out.graph.node)} MatMulNBits ({rounded} rounded)")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for item in fp32.path.iterdir():
        if item.is_file() and not item.name.startswith("model.onnx") and item.name != MANIFEST:
            shutil.copy2(item, folder / item.name)
    onnx.save_model(out, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    manifest = {k: v for k, v in json.loads((fp32.path / MANIFEST).read_text()).items() if k not in ("format", "files")}
    manifest |= {"name": folder.name, "precision": f"ort-{algorithm}-b{block}", "created": time.strftime("%FT%TZ")}
    write_manifest(folder, **manifest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=BUILTIN_NAME, help="the built-in model whose fp32 import is quantised")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=Path("/tmp/parley-ort-quant"))
    args = parser.parse_args(argv)
    from engine.model.catalog import find_builtin
    from engine.model.convert.importer import import_model

    builtin = find_builtin(args.model)
    if builtin is None:
        parser.error(f"{args.model} is not a built-in model")
    models = load_settings().models_path
    folder = models / f"{builtin.name}-fp32"
    try:
        fp32 = read_model_info(folder)
    except Exception:
        log(f"importing {builtin.name} at fp32 into {folder}")
        fp32 = import_model(builtin.source, models, name=folder.name, precision="fp32")
    for name in args.variants.split(","):
        algorithm, block = VARIANTS[name]
        quantize(fp32, algorithm, block, args.out / name)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
