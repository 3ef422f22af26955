"""Edits to the builder's graph, made once at import time.

``logit_positions``: the builder's graph computes the LM head for every position of the input, so a
prefill of 800 tokens spends most of a 49152-wide matrix product on logits nobody reads. This edit
adds an input ``logit_positions`` [batch, k] (indices into the sequence axis, per row, so ragged
right-padded batches pick each row's own last token) and gathers just those hidden states before the
head. Decoding and prefill ask for one position; fidelity checks ask for all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.model.registry import LOGIT_POSITIONS


def add_logit_positions(onnx_path: Path) -> bool:
    """Rewrite ``onnx_path`` in place (weights stay in their external file); False if no LM head found."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    if any(i.name == LOGIT_POSITIONS for i in graph.input):
        return True
    head = next((n for n in graph.node if "logits" in n.output and n.op_type in ("MatMul", "MatMulNBits")), None)
    if head is None:
        return False
    hidden = head.input[0]
    graph.input.append(helper.make_tensor_value_info(LOGIT_POSITIONS, TensorProto.INT64, ["batch_size", "num_logits"]))
    graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "logit_positions/axes"))
    graph.node.extend(
        [
            helper.make_node("Unsqueeze", [LOGIT_POSITIONS, "logit_positions/axes"], ["logit_positions/index"]),
            # [b, s, h] gathered at [b, k, 1] with one batch dim -> [b, k, h]
            helper.make_node("GatherND", [hidden, "logit_positions/index"], ["logit_positions/hidden"], batch_dims=1),
        ]
    )
    head.input[0] = "logit_positions/hidden"
    for out in graph.output:
        if out.name == "logits":
            out.type.tensor_type.shape.dim[1].dim_param = "num_logits"
    # Nodes must stay topologically sorted: move the head (and what follows it) after the new nodes.
    nodes = list(graph.node)
    nodes.remove(head)
    nodes.append(head)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save_model(model, str(onnx_path))
    return True
