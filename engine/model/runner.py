"""The decode loop's engine room: one ONNX Runtime session over the builder's graph.

IO binding with the past and present KV tensors bound to one preallocated buffer per layer gives an
in-place cache (GroupQueryAttention writes the new positions into it), so a decode step copies nothing
but the new token in and one row of logits out. Positions come from the attention mask, which is why
sequences are right-padded (left padding is silently wrong on this graph).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from engine.errors import ModelError
from engine.model.graph import LOGIT_POSITIONS
from engine.model.registry import LoadedModel

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def pick_device(requested: str) -> str:
    available = ort.get_available_providers()
    if requested == "cuda" and "CUDAExecutionProvider" not in available:
        raise ModelError("PARLEY_DEVICE=cuda but this onnxruntime has no CUDA execution provider")
    if requested == "auto":
        return "cuda" if "CUDAExecutionProvider" in available else "cpu"
    return requested


class OnnxRunner:
    """One sequence at a time (batch 1) over a preallocated KV cache of ``max_len`` positions.

    Not thread-safe: the generator drives it from its own worker thread.
    """

    def __init__(self, model: LoadedModel, *, device: str = "auto", threads: int = 0, max_len: int = 2048) -> None:
        self.model = model
        self.device = pick_device(device)
        cfg = model.config
        self.max_len = min(max_len, cfg.context_length)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device == "cuda":
            providers = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(model.info.path / "model.onnx"), opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ModelError(f"cannot load {model.info.path / 'model.onnx'}: {exc}") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        past0 = cfg.past_key % 0
        if "input_ids" not in inputs or past0 not in inputs:
            raise ModelError(f"{model.info.path} is not a decoder graph with a KV cache")
        self.kv_dtype = _ORT_DTYPES.get(inputs[past0].type, np.float32)
        # Graphs imported by Parley compute logits only at the positions asked for (see graph.py).
        self._selects_logits = LOGIT_POSITIONS in inputs
        self._ort_device = "cuda" if self.device == "cuda" else "cpu"
        shape = (1, cfg.num_kv_heads, self.max_len, cfg.head_size)
        self._binding = self.session.io_binding()
        self._cache: list[ort.OrtValue] = []
        for layer in range(cfg.num_layers):
            for past, present in ((cfg.past_key, cfg.present_key), (cfg.past_value, cfg.present_value)):
                buf = ort.OrtValue.ortvalue_from_shape_and_type(shape, self.kv_dtype, self._ort_device, 0)
                self._binding.bind_ortvalue_input(past % layer, buf)
                self._binding.bind_ortvalue_output(present % layer, buf)
                self._cache.append(buf)
        self.length = 0  # positions of the cache in use
        # The mask is all ones (right padding only): one buffer, sliced per step, not a new array per token.
        self._mask = np.ones((1, self.max_len), dtype=np.int64)

    def reset(self) -> None:
        """Start a new sequence: stale cache positions are masked out, so nothing needs clearing."""
        self.length = 0

    def forward(self, token_ids: npt.NDArray[np.int64], *, all_logits: bool = False) -> npt.NDArray[np.float32]:
        """Append ``token_ids`` (1-D) to the sequence; logits of the last position (or all of them)."""
        n = int(token_ids.shape[0])
        if n == 0:
            raise ValueError("forward() needs at least one token")
        if self.length + n > self.max_len:
            raise ModelError(f"sequence of {self.length + n} tokens exceeds the cache ({self.max_len})")
        b = self._binding
        b.bind_cpu_input("input_ids", token_ids.reshape(1, n))
        b.bind_cpu_input("attention_mask", self._mask[:, : self.length + n])
        if self._selects_logits:
            positions = np.arange(n, dtype=np.int64) if all_logits else np.array([n - 1], dtype=np.int64)
            b.bind_cpu_input(LOGIT_POSITIONS, positions.reshape(1, -1))
        # Logits change shape with n, so they are re-bound on every call.
        b.bind_output("logits", "cpu")
        self.session.run_with_iobinding(b)
        self.length += n
        logits: npt.NDArray[np.float32] = b.get_outputs()[-1].numpy()[0]
        return logits if all_logits else logits[-1]

    def prefill(self, token_ids: list[int], *, chunk: int = 1024) -> npt.NDArray[np.float32]:
        """Feed a prompt in chunks (bounded logits memory); logits of its last token."""
        ids = np.asarray(token_ids, dtype=np.int64)
        logits: npt.NDArray[np.float32] | None = None
        for start in range(0, len(ids), chunk):
            logits = self.forward(ids[start : start + chunk])
        if logits is None:
            raise ValueError("prefill() needs at least one token")
        return logits

    def teacher_forced_logits(self, token_ids: list[int]) -> npt.NDArray[np.float32]:
        """Logits at every position of a whole sequence in one pass (fidelity measurements)."""
        self.reset()
        return self.forward(np.asarray(token_ids, dtype=np.int64), all_logits=True)
