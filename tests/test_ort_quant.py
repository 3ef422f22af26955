"""ONNX Runtime's own 4-bit quantizers as a precision candidate (bench/ort_quant.py): HQQ's float zero
points become the packed integers that keep MatMulNBits on its fast int8 kernels, and the product stays
what the weights say."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from bench.ort_quant import ACCURACY_LEVEL, _pack_zero_points, integer_zero_points


def _matmul(weight: np.ndarray) -> onnx.ModelProto:
    k, n = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", n])],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_zero_points_pack_two_blocks_a_byte_low_nibble_first() -> None:
    zero = np.array([1.2, 14.6, 3.0, 15.9, 0.4, 7.5], dtype=np.float32)  # 2 columns x 3 blocks
    packed = _pack_zero_points(zero, n=2, blocks=3)
    assert packed.dtype == np.uint8
    assert packed.tolist() == [1 | 15 << 4, 3, 15 | 0 << 4, 8]  # odd block count: the last nibble is padding


def test_hqq_with_integer_zero_points_keeps_the_product() -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(128, 16)).astype(np.float32)
    quantizer = MatMulNBitsQuantizer(_matmul(weight), algo_config=HQQWeightOnlyQuantConfig(block_size=32))
    with warnings.catch_warnings():
        # ONNX Runtime's HQQ hands torch a read-only NumPy view of the weights (it only reads it).
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        quantizer.process()
    model = quantizer.model.model
    assert integer_zero_points(model) == 1
    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["accuracy_level"] == ACCURACY_LEVEL
    zp = next(t for t in model.graph.initializer if t.name == node.input[3])
    assert zp.data_type == TensorProto.UINT8
    x = rng.normal(size=(4, 128)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0]
    exact = x @ weight
    # 4-bit blocks of 32 with int8 activations: close to the product, far from nothing.
    assert np.abs(y - exact).mean() < 0.1 * np.abs(exact).mean()
