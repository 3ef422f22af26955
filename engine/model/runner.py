"""The decode loop's engine room: one ONNX Runtime session over the builder's graph, many sequences.

The KV cache is one preallocated buffer per layer and K/V, ``[rows, kv_heads, max_len, head]``; each row
holds one sequence. A step binds a contiguous range of rows by pointer (past and present share the same
memory, so GroupQueryAttention writes the new positions in place and nothing is copied but the new
tokens in and one row of logits per sequence out). Rows may hold sequences of different lengths: each
row's attention mask is ones up to its own length (right padding; left padding is silently wrong on
this graph, because positions come from the mask). All rows of a step take the same number of new
tokens: one each when decoding, a chunk of one sequence's prompt when prefilling.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from engine.errors import ModelError
from engine.model.registry import LOGIT_POSITIONS, LoadedModel

log = logging.getLogger(__name__)

_ORT_DTYPES: dict[str, type[np.generic]] = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def pick_device(requested: str) -> str:
    available = ort.get_available_providers()
    if requested == "cuda" and "CUDAExecutionProvider" not in available:
        raise ModelError("PARLEY_DEVICE=cuda but this onnxruntime has no CUDA execution provider")
    if requested == "auto":
        return "cuda" if "CUDAExecutionProvider" in available else "cpu"
    return requested


class _HostMemory:
    """KV buffers in numpy arrays. ``np.zeros`` maps pages lazily, so rows never used cost nothing."""

    def __init__(self, count: int, shape: tuple[int, ...], dtype: type[np.generic]) -> None:
        self.arrays = [np.zeros(shape, dtype) for _ in range(count)]

    def pointer(self, i: int) -> int:
        return int(self.arrays[i].ctypes.data)

    def read(self, row: int, n: int) -> npt.NDArray[Any]:
        return np.stack([a[row, :, :n] for a in self.arrays])

    def write(self, row: int, kv: npt.NDArray[Any]) -> None:
        n = kv.shape[2]
        for a, part in zip(self.arrays, kv, strict=True):
            a[row, :, :n] = part

    def move(self, src: int, dst: int, n: int) -> None:
        for a in self.arrays:
            a[dst, :, :n] = a[src, :, :n]


class _CudaMemory:
    """KV buffers in device memory (ORT allocates them); copies by cudaMemcpy2D from the CUDA runtime
    that onnxruntime-gpu already loaded. A row's first ``n`` positions are ``kv_heads`` runs of
    ``n * head`` elements, ``max_len * head`` apart: one 2-D copy per buffer."""

    _H2D, _D2H, _D2D = 1, 2, 3

    def __init__(self, count: int, shape: tuple[int, ...], dtype: type[np.generic]) -> None:
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.values = [ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", 0) for _ in range(count)]
        self._cudart = self._load_cudart()
        _, heads, max_len, head = shape
        self._pitch = max_len * head * self.dtype.itemsize
        self._row = heads * self._pitch

    @staticmethod
    def _load_cudart() -> Any:
        for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            lib.cudaMemcpy2D.restype = ctypes.c_int
            lib.cudaMemcpy2D.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                         ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]  # fmt: skip
            return lib
        raise ModelError("cannot load the CUDA runtime (libcudart) to move KV caches")

    def pointer(self, i: int) -> int:
        return int(self.values[i].data_ptr())

    def _copy(self, dst: int, dpitch: int, src: int, spitch: int, n: int, kind: int) -> None:
        width = n * self.shape[3] * self.dtype.itemsize
        if err := self._cudart.cudaMemcpy2D(dst, dpitch, src, spitch, width, self.shape[1], kind):
            raise ModelError(f"cudaMemcpy2D failed with CUDA error {err}")

    def read(self, row: int, n: int) -> npt.NDArray[Any]:
        out = np.empty((len(self.values), self.shape[1], n, self.shape[3]), self.dtype)
        pitch = n * self.shape[3] * self.dtype.itemsize
        for i in range(len(self.values)):
            self._copy(out[i].ctypes.data, pitch, self.pointer(i) + row * self._row, self._pitch, n, self._D2H)
        return out

    def write(self, row: int, kv: npt.NDArray[Any]) -> None:
        kv = np.ascontiguousarray(kv, self.dtype)
        n = kv.shape[2]
        pitch = n * self.shape[3] * self.dtype.itemsize
        for i in range(len(self.values)):
            self._copy(self.pointer(i) + row * self._row, self._pitch, kv[i].ctypes.data, pitch, n, self._H2D)

    def move(self, src: int, dst: int, n: int) -> None:
        for i in range(len(self.values)):
            base = self.pointer(i)
            self._copy(base + dst * self._row, self._pitch, base + src * self._row, self._pitch, n, self._D2D)


class OnnxRunner:
    """``rows`` sequences of up to ``max_len`` positions each, over one session.

    Not thread-safe: the generator drives it from its own worker thread. ``reset``/``forward``/
    ``prefill`` run one sequence in row 0 (benchmarks and fidelity checks); the scheduler uses ``run``.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str = "auto",
        threads: int = 0,
        spinning: bool = True,
        max_len: int = 2048,
        rows: int = 1,
    ) -> None:
        self.model = model
        self.device = pick_device(device)
        cfg = model.config
        self.max_len = min(max_len, cfg.context_length)
        self.rows = rows
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        # Spinning workers pick the next operator up sooner but burn a core while they wait, which on a
        # small machine the event loop, the bots and Redis also need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
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
        # Graphs imported by Parley compute logits only at the positions asked for (see convert/graph.py).
        self._selects_logits = LOGIT_POSITIONS in inputs
        self._names = [
            (past % layer, present % layer)
            for layer in range(cfg.num_layers)
            for past, present in ((cfg.past_key, cfg.present_key), (cfg.past_value, cfg.present_value))
        ]
        self._row_shape = (cfg.num_kv_heads, self.max_len, cfg.head_size)
        shape = (rows, *self._row_shape)
        memory = _CudaMemory if self.device == "cuda" else _HostMemory
        self.kv = memory(len(self._names), shape, self.kv_dtype)
        self._row_bytes = int(np.prod(self._row_shape)) * np.dtype(self.kv_dtype).itemsize
        self.bytes_per_token = len(self._names) * cfg.num_kv_heads * cfg.head_size * np.dtype(self.kv_dtype).itemsize
        self._bindings: dict[tuple[int, int], ort.IOBinding] = {}
        self._ort_device = "cuda" if self.device == "cuda" else "cpu"
        self.length = 0  # positions in use in row 0 (the single-sequence API)

    def _binding(self, first: int, count: int) -> ort.IOBinding:
        """An IO binding with rows ``first..first+count`` of every KV buffer bound in place; made once
        per range (a decode step always uses rows 0..n, a prefill chunk one row)."""
        binding = self._bindings.get((first, count))
        if binding is None:
            binding = self.session.io_binding()
            shape = [count, *self._row_shape]
            for i, (past, present) in enumerate(self._names):
                ptr = self.kv.pointer(i) + first * self._row_bytes
                binding.bind_input(past, self._ort_device, 0, self.kv_dtype, shape, ptr)
                binding.bind_output(present, self._ort_device, 0, self.kv_dtype, shape, ptr)
            self._bindings[(first, count)] = binding
        return binding

    def run(
        self, first: int, token_ids: npt.NDArray[np.int64], past: Sequence[int], *, all_logits: bool = False
    ) -> npt.NDArray[np.float32]:
        """Append ``token_ids`` [count, new] to rows ``first..first+count`` whose sequences hold ``past``
        positions each. Logits [count, vocab] of each row's last new token ([count, new, vocab] with
        ``all_logits``)."""
        count, new = token_ids.shape
        if new == 0 or count == 0:
            raise ValueError("run() needs at least one token")
        if first < 0 or first + count > self.rows:
            raise ValueError(f"rows {first}..{first + count} outside 0..{self.rows}")
        ends = np.asarray(past, dtype=np.int64) + new
        if int(ends.max()) > self.max_len:
            raise ModelError(f"sequence of {int(ends.max())} tokens exceeds the cache ({self.max_len})")
        b = self._binding(first, count)
        b.bind_cpu_input("input_ids", np.ascontiguousarray(token_ids, dtype=np.int64))
        b.bind_cpu_input("attention_mask", (np.arange(int(ends.max())) < ends[:, None]).astype(np.int64))
        if self._selects_logits:
            positions = np.arange(new) if all_logits else np.array([new - 1])
            b.bind_cpu_input(LOGIT_POSITIONS, np.broadcast_to(positions, (count, len(positions))).astype(np.int64))
        # Logits change shape with the step, so they are re-bound on every call.
        b.bind_output("logits", "cpu")
        self.session.run_with_iobinding(b)
        # With IO binding, outputs come back in binding order: logits were bound last.
        logits: npt.NDArray[np.float32] = b.get_outputs()[-1].numpy()
        return logits if all_logits else logits[:, -1]

    # Resident caches: a row's first ``n`` positions out to host memory, back in, or to another row.
    def save(self, row: int, n: int) -> npt.NDArray[Any]:
        return self.kv.read(row, n)

    def load(self, row: int, kv: npt.NDArray[Any]) -> None:
        self.kv.write(row, kv)

    def move(self, src: int, dst: int, n: int) -> None:
        self.kv.move(src, dst, n)

    # One sequence in row 0.
    def reset(self) -> None:
        """Start a new sequence: stale cache positions are masked out, so nothing needs clearing."""
        self.length = 0

    def forward(self, token_ids: npt.NDArray[np.int64], *, all_logits: bool = False) -> npt.NDArray[np.float32]:
        """Append ``token_ids`` (1-D) to row 0's sequence; logits of the last position (or all of them)."""
        logits = self.run(0, token_ids.reshape(1, -1), [self.length], all_logits=all_logits)
        self.length += int(token_ids.shape[0])
        first: npt.NDArray[np.float32] = logits[0]
        return first

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
