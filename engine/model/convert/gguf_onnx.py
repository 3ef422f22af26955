"""A GGUF file straight to Parley's ONNX graph, tensor by tensor, with the file's own quantised blocks.

For the decoder-only transformers llama.cpp calls ``llama`` (Llama, SmolLM, Mistral), ``qwen2`` and
``qwen3``. Nothing goes through a full-precision copy of the model: each tensor is read from the file,
decoded into ONNX Runtime's block layout (``ggml.py``), checked against the ``gguf`` package's own
dequantisation, appended to the weights file and dropped, so peak memory stays near the largest single
tensor (the embedding). Other architectures take the transformers + onnxruntime-genai builder route
(``importer.py``), which dequantises the whole model.

The graph is the builder's, operator for operator (GroupQueryAttention with rotary embedding inside,
SkipSimplifiedLayerNormalization, the same input and output names and genai_config.json), so the
runner serves both alike. The two precisions differ only in the block products' activations:

- ``gguf-exact``: fp32 activations in the 4-bit products (MatMulNBits accuracy level 0) and, for
  8-bit codes (whose fp32-activation kernel dequantises the whole matrix per call: ~100x slower),
  int8 activations on a split ``x = hi + lo`` where ``hi`` lies exactly on the int8 grid the kernel
  itself chooses, so only ``lo``'s small rounding error remains. The same split serves the LM head.
- ``gguf`` (int8 activations everywhere in the body, the arithmetic llama.cpp uses for these types;
  offsets centred into zero points, ``Blocks.centred``); the LM head keeps the split, since it alone
  decides which token comes next.

The per-block offsets (``w = s*q + m``: Q4_1, Q5_1, Q4_K, Q5_K), which the operators' integer zero
points cannot hold, are added as ``blocksum(x) @ M`` (a [K/block, N] fp32 product), exactly.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import onnx
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize
from onnx import TensorProto, helper, numpy_helper

from engine.model.convert.ggml import FLOAT_TYPES, SUPPORTED, Blocks, UnsupportedType, decode, pack
from engine.model.convert.importer import DIRECT
from engine.model.registry import LOGIT_POSITIONS

ARCHITECTURES = ("llama", "qwen2", "qwen3")
MS = "com.microsoft"
DATA_FILE = "model.onnx.data"
_ALIGN = 4096  # weights start on page boundaries, so ONNX Runtime can map them
_INLINE = 4096  # tensors smaller than this stay inside model.onnx
_CHECK_ROWS = 4096  # rows dequantised at a time when checking a tensor
# Tokens that end a turn, as llama.cpp recognises them beside the file's own EOS id (llama-vocab.cpp).
END_OF_TURN = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "<end_of_turn>", "<|eom_id|>")

Tick = Callable[[int], None]


class NotBuildable(ValueError):
    """This GGUF cannot be written directly (architecture or rope scaling); the builder route may."""


@dataclass(frozen=True)
class Spec:
    arch: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    rope_base: float
    rope_linear: float  # positions are divided by this (1: no scaling)
    context: int
    vocab: int
    tied: bool
    qk_norm: bool


def _field(reader: GGUFReader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_spec(reader: GGUFReader) -> Spec:
    arch = str(_field(reader, "general.architecture", "?"))
    if arch not in ARCHITECTURES:
        raise NotBuildable(f"architecture '{arch}' is built through transformers (direct: {', '.join(ARCHITECTURES)})")
    names = {t.name for t in reader.tensors}
    scaling = str(_field(reader, f"{arch}.rope.scaling.type", "none"))
    if scaling not in ("none", "linear"):
        raise NotBuildable(f"rope scaling '{scaling}' is built through transformers")
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    embed = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return Spec(
        arch=arch,
        layers=int(_field(reader, f"{arch}.block_count")),
        hidden=hidden,
        heads=heads,
        kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(_field(reader, f"{arch}.attention.key_length", hidden // heads)),
        eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        rope_base=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        rope_linear=float(_field(reader, f"{arch}.rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0,
        context=int(_field(reader, f"{arch}.context_length", 4096)),
        vocab=int(embed.shape[1]),
        tied="output.weight" not in names,
        qk_norm="blk.0.attn_q_norm.weight" in names,
    )


def unsupported_tensors(reader: GGUFReader) -> list[str]:
    """Tensors this writer cannot run as they are (named with their type)."""
    return [f"{t.name} ({t.tensor_type.name})" for t in reader.tensors if t.tensor_type.name not in SUPPORTED]


def read_gguf(gguf: Path) -> GGUFReader:
    """The file's parsed metadata and tensor index, parsed once per import (5 s for a 151k-token vocabulary)
    however many steps ask for it; a file rewritten in place is parsed again."""
    stat = gguf.stat()
    return _parse(str(gguf.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1)
def _parse(path: str, mtime_ns: int, size: int) -> GGUFReader:
    return GGUFReader(path)


def buildable(gguf: Path) -> str | None:
    """None if ``gguf`` can be written directly, else why not."""
    try:
        reader = read_gguf(gguf)
        read_spec(reader)
    except NotBuildable as exc:
        return str(exc)
    except (ValueError, OSError, KeyError, TypeError, StopIteration) as exc:
        return f"unreadable GGUF ({exc})"
    bad = unsupported_tensors(reader)
    return f"{bad[0]} cannot run as it is" if bad else None


class _Weights:
    """Initializers: small ones inline, large ones appended to one external data file."""

    def __init__(self, folder: Path) -> None:
        self.file: BinaryIO = (folder / DATA_FILE).open("wb")
        self.protos: list[TensorProto] = []
        self.names: set[str] = set()

    def add(self, name: str, array: npt.NDArray[Any]) -> str:
        if name in self.names:
            return name
        self.names.add(name)
        array = np.ascontiguousarray(array)
        if array.nbytes < _INLINE:
            self.protos.append(numpy_helper.from_array(array, name))
            return name
        offset = self.file.tell()
        if offset % _ALIGN:
            self.file.write(b"\0" * (_ALIGN - offset % _ALIGN))
            offset = self.file.tell()
        self.file.write(array.data)
        proto = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
        proto.data_location = TensorProto.EXTERNAL
        for key, value in (("location", DATA_FILE), ("offset", str(offset)), ("length", str(array.nbytes))):
            entry = proto.external_data.add()
            entry.key, entry.value = key, value
        self.protos.append(proto)
        return name

    def close(self) -> None:
        self.file.close()


class _Writer:
    def __init__(self, gguf: Path, reader: GGUFReader, spec: Spec, weights: _Weights, exact: bool, tick: Tick) -> None:
        self.gguf, self.spec, self.w, self.exact, self.tick = gguf, spec, weights, exact, tick
        self.tensors = {t.name: t for t in reader.tensors}
        self.nodes: list[onnx.NodeProto] = []
        self.sums: dict[tuple[str, int], str] = {}
        self.splits: dict[tuple[str, int], str] = {}

    # -- graph plumbing -------------------------------------------------------------------------
    def op(self, kind: str, inputs: list[str], name: str, outputs: int = 1, **attrs: Any) -> list[str]:
        outs = [f"{name}/out{i}" for i in range(outputs)]
        node = helper.make_node(kind, inputs, outs, name=name, domain=MS if kind in _MS_OPS else "")
        node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
        self.nodes.append(node)
        return outs

    def one(self, kind: str, inputs: list[str], name: str, **attrs: Any) -> str:
        return self.op(kind, inputs, name, **attrs)[0]

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        return self.w.add(name, value)

    def ints(self, *values: int) -> str:
        return self.const("const/" + "_".join(map(str, values)), np.array(values, np.int64))

    # -- reading the GGUF -----------------------------------------------------------------------
    def raw(self, name: str) -> tuple[npt.NDArray[np.uint8], str, int, int]:
        t = self.tensors[name]
        with self.gguf.open("rb") as f:
            f.seek(int(t.data_offset))
            raw = np.frombuffer(f.read(int(t.n_bytes)), np.uint8)
        cols = int(t.shape[0])
        rows = int(np.prod([int(d) for d in t.shape[1:]])) if len(t.shape) > 1 else 1
        self.tick(int(t.n_bytes))
        return raw, t.tensor_type.name, rows, cols

    def vector(self, name: str) -> npt.NDArray[np.float32]:
        raw, kind, rows, cols = self.raw(name)
        if kind not in FLOAT_TYPES:
            raise UnsupportedType(name, kind)
        value = decode(kind, raw, rows, cols, name)
        assert not isinstance(value, Blocks)
        return value.reshape(-1)

    def matrix(self, name: str, rows_order: npt.NDArray[np.intp] | None = None) -> Blocks | npt.NDArray[np.float32]:
        """A [N, K] weight, checked against gguf's dequantisation (in row chunks, to bound memory)."""
        raw, kind, rows, cols = self.raw(name)
        value = decode(kind, raw, rows, cols, name)
        if isinstance(value, Blocks):
            per_row = raw.size // rows
            qtype = GGMLQuantizationType[kind]
            for start in range(0, rows, _CHECK_ROWS):
                part = slice(start, min(rows, start + _CHECK_ROWS))
                ref = dequantize(raw[start * per_row : part.stop * per_row], qtype).reshape(-1, cols)
                if not np.array_equal(value.take(part).dequantize(), ref):
                    raise ValueError(f"{name}: the re-packed {kind} blocks do not reproduce the GGUF's weights")
        if rows_order is not None:
            value = value.take(rows_order) if isinstance(value, Blocks) else value[rows_order]
        return value

    # -- products -------------------------------------------------------------------------------
    def blocksum(self, x: str, block: int) -> str:
        key = (x, block)
        if key not in self.sums:
            blocks = self.one("Reshape", [x, self.ints(0, 0, -1, block)], f"{x}/b{block}")
            self.sums[key] = self.one("ReduceSum", [blocks, self.ints(-1)], f"{x}/bsum{block}", keepdims=0)
        return self.sums[key]

    def split(self, x: str, k: int, block: int) -> str:
        """[hi; lo] stacked on the batch axis (module docstring): hi = s * round(x / s), s = amax/127 per
        block, the grid MLAS quantises to, so the int8 kernel takes hi exactly."""
        key = (x, block)
        if key not in self.splits:
            p = f"{x}/split{block}"
            blocks = self.one("Reshape", [x, self.ints(0, 0, -1, block)], f"{p}/blocks")
            amax = self.one(
                "ReduceMax", [self.one("Abs", [blocks], f"{p}/abs"), self.ints(-1)], f"{p}/amax", keepdims=1
            )
            scale = self.one("Mul", [amax, self.const("const/inv127", np.array(1 / 127, np.float32))], f"{p}/s0")
            scale = self.one("Max", [scale, self.const("const/tiny", np.array(1e-30, np.float32))], f"{p}/s")
            hi = self.one(
                "Mul", [self.one("Round", [self.one("Div", [blocks, scale], f"{p}/t")], f"{p}/r"), scale], f"{p}/hi"
            )
            lo = self.one("Sub", [blocks, hi], f"{p}/lo")
            both = self.one("Concat", [hi, lo], f"{p}/stack", axis=0)
            self.splits[key] = self.one("Reshape", [both, self.ints(0, 0, k)], f"{p}/rows")
        return self.splits[key]

    def linear(self, x: str, tag: str, weight: Blocks | npt.NDArray[np.float32], *, head: bool = False) -> str:
        if not isinstance(weight, Blocks):
            return self.one("MatMul", [x, self.const(f"{tag}.weight", np.ascontiguousarray(weight.T))], tag)
        n, k = weight.shape
        exact = self.exact or head
        blocks = weight if exact else weight.centred()
        codes, zero = pack(blocks)
        inputs = [self.const(f"{tag}.codes", codes), self.const(f"{tag}.scales", blocks.scales)]
        inputs.append(self.const(f"{tag}.zero", zero))
        split = exact and blocks.bits == 8
        source = self.split(x, k, blocks.block) if split else x
        attrs = {"K": k, "N": n, "bits": blocks.bits, "block_size": blocks.block}
        accuracy = 0 if exact and not split else 4
        y = self.one("MatMulNBits", [source, *inputs], f"{tag}/MatMulNBits", accuracy_level=accuracy, **attrs)
        if split:
            hi, lo = self.op("Split", [y], f"{tag}/unsplit", outputs=2, axis=0, num_outputs=2)
            y = self.one("Add", [hi, lo], f"{tag}/sum")
        if blocks.offsets is not None:
            # [blocks, N]: not the embedding's [N, blocks] table, which a tied head shares the name prefix with
            offsets = self.const(f"{tag}.block_offsets", np.ascontiguousarray(blocks.offsets.T))
            y = self.one(
                "Add",
                [y, self.one("MatMul", [self.blocksum(x, blocks.block), offsets], f"{tag}/offsets")],
                f"{tag}/add",
            )
        return y

    def dense(self, x: str, name: str, bias: bool = False, rows_order: npt.NDArray[np.intp] | None = None) -> str:
        tag = name.removesuffix(".weight")
        y = self.linear(x, tag, self.matrix(name, rows_order))
        if bias:
            b = self.vector(f"{tag}.bias")
            y = self.one(
                "Add", [y, self.const(f"{tag}.bias", b if rows_order is None else b[rows_order])], f"{tag}/bias"
            )
        return y

    # -- the model ------------------------------------------------------------------------------
    def embedding(self, ids: str, table: Blocks | npt.NDArray[np.float32]) -> str:
        if not isinstance(table, Blocks):
            return self.one("Gather", [self.const("token_embd.weight", table), ids], "embed", axis=0)
        codes, zero = pack(table)
        vocab, k = table.shape
        data = self.one("Reshape", [self.const("token_embd.codes", codes), self.ints(vocab, -1)], "embed/codes")
        scales, zp = self.const("token_embd.scales", table.scales), self.const("token_embd.zero", zero)
        y = self.one(
            "GatherBlockQuantized",
            [data, ids, scales, zp],
            "embed/gather",
            gather_axis=0,
            quantize_axis=1,
            block_size=table.block,
            bits=table.bits,
        )
        if table.offsets is not None:
            rows = self.one("Gather", [self.const("token_embd.offsets", table.offsets), ids], "embed/offsets", axis=0)
            wide = self.one("Unsqueeze", [rows, self.ints(-1)], "embed/offsets4d")
            wide = self.one("Expand", [wide, self.ints(1, 1, 1, table.block)], "embed/expand")
            y = self.one("Add", [y, self.one("Reshape", [wide, self.ints(0, 0, k)], "embed/offsets3d")], "embed/add")
        return y

    def head_norm(self, x: str, name: str, heads: int) -> str:
        d = self.spec.head_dim
        shaped = self.one("Reshape", [x, self.ints(0, 0, heads, d)], f"{name}/heads")
        normed = self.one(
            "SimplifiedLayerNormalization",
            [shaped, self.const(f"{name}.weight", self.vector(f"{name}.weight"))],
            f"{name}/norm",
            epsilon=self.spec.eps,
            axis=-1,
            stash_type=1,
        )
        return self.one("Reshape", [normed, self.ints(0, 0, heads * d)], f"{name}/flat")

    def rope_cache(self) -> tuple[str, str]:
        s = self.spec
        # as transformers computes it, in float32: inv_freq = 1 / base^(2i/d), angles = position * inv_freq
        exponent = np.arange(0, s.head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(s.head_dim)
        inv_freq = (np.float32(1.0) / np.power(np.float32(s.rope_base), exponent)).astype(np.float32)
        if "rope_freqs.weight" in self.tensors:  # llama 3.1-style long-context factors
            inv_freq = (inv_freq / self.vector("rope_freqs.weight")).astype(np.float32)
        positions = (np.arange(s.context, dtype=np.float32) / np.float32(s.rope_linear)).astype(np.float32)
        angles = np.outer(positions, inv_freq).astype(np.float32)
        return self.const("cos_cache", np.cos(angles)), self.const("sin_cache", np.sin(angles))

    def build(self) -> onnx.ModelProto:
        s = self.spec
        mask = "attention_mask"
        lengths = self.one("ReduceSum", [mask, self.ints(1)], "mask/lengths", keepdims=0)
        seqlens = self.one(
            "Cast", [self.one("Sub", [lengths, self.ints(1)], "mask/last")], "mask/seqlens", to=TensorProto.INT32
        )
        total = self.one(
            "Gather",
            [self.one("Shape", [mask], "mask/shape"), self.const("const/one", np.array(1, np.int64))],
            "mask/total",
            axis=0,
        )
        total = self.one("Cast", [total], "mask/total32", to=TensorProto.INT32)
        cos, sin = self.rope_cache()
        table = self.matrix("token_embd.weight")
        hidden = self.embedding("input_ids", table)
        residual, branch = hidden, ""
        for i in range(s.layers):
            p = f"blk.{i}"
            norm = self.const(f"{p}.attn_norm.weight", self.vector(f"{p}.attn_norm.weight"))
            if i == 0:
                x = self.one(
                    "SimplifiedLayerNormalization",
                    [residual, norm],
                    f"{p}/attn_norm",
                    epsilon=s.eps,
                    axis=-1,
                    stash_type=1,
                )
            else:
                x, _, _, residual = self.op(
                    "SkipSimplifiedLayerNormalization",
                    [residual, branch, norm],
                    f"{p}/attn_norm",
                    outputs=4,
                    epsilon=s.eps,
                )
            q_order = k_order = None
            if s.arch == "llama":  # llama.cpp interleaves each Q/K head's rotary halves; undo it (rows only)
                q_order, k_order = _unpermute(s.heads, s.head_dim), _unpermute(s.kv_heads, s.head_dim)
            bias = f"{p}.attn_q.bias" in self.tensors
            q = self.dense(x, f"{p}.attn_q.weight", bias, q_order)
            k = self.dense(x, f"{p}.attn_k.weight", bias, k_order)
            v = self.dense(x, f"{p}.attn_v.weight", bias)
            if s.qk_norm:
                q, k = self.head_norm(q, f"{p}.attn_q_norm", s.heads), self.head_norm(k, f"{p}.attn_k_norm", s.kv_heads)
            attn, present_k, present_v = self.op(
                "GroupQueryAttention",
                [q, k, v, f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total, cos, sin],
                f"{p}/attn",
                outputs=3,
                num_heads=s.heads,
                kv_num_heads=s.kv_heads,
                scale=float(1 / np.sqrt(s.head_dim)),
                do_rotary=1,
                rotary_interleaved=0,
                local_window_size=-1,
                softcap=0.0,
            )
            self.nodes.append(helper.make_node("Identity", [present_k], [f"present.{i}.key"], name=f"{p}/present_k"))
            self.nodes.append(helper.make_node("Identity", [present_v], [f"present.{i}.value"], name=f"{p}/present_v"))
            out = self.dense(attn, f"{p}.attn_output.weight")
            norm = self.const(f"{p}.ffn_norm.weight", self.vector(f"{p}.ffn_norm.weight"))
            x, _, _, residual = self.op(
                "SkipSimplifiedLayerNormalization", [residual, out, norm], f"{p}/ffn_norm", outputs=4, epsilon=s.eps
            )
            gate = self.dense(x, f"{p}.ffn_gate.weight")
            up = self.dense(x, f"{p}.ffn_up.weight")
            silu = self.one("Mul", [gate, self.one("Sigmoid", [gate], f"{p}/sigmoid")], f"{p}/silu")
            branch = self.dense(self.one("Mul", [silu, up], f"{p}/gated"), f"{p}.ffn_down.weight")
        norm = self.const("output_norm.weight", self.vector("output_norm.weight"))
        final = self.op(
            "SkipSimplifiedLayerNormalization", [residual, branch, norm], "output_norm", outputs=1, epsilon=s.eps
        )[0]
        index = self.one("Unsqueeze", [LOGIT_POSITIONS, self.ints(-1)], "logits/index")
        picked = self.one("GatherND", [final, index], "logits/hidden", batch_dims=1)
        if s.tied:  # the head is the embedding matrix: same initializers (names), read once
            logits = self.linear(picked, "token_embd", table, head=True)
        else:
            del table
            logits = self.linear(picked, "output", self.matrix("output.weight"), head=True)
        self.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
        return self._model()

    def _model(self) -> onnx.ModelProto:
        s = self.spec
        f32, i64 = TensorProto.FLOAT, TensorProto.INT64
        kv: list[str | int] = ["batch_size", s.kv_heads, "past_sequence_length", s.head_dim]
        inputs = [
            helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
            helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"]),
            helper.make_tensor_value_info(LOGIT_POSITIONS, i64, ["batch_size", "num_logits"]),
        ]
        present: list[str | int] = ["batch_size", s.kv_heads, "total_sequence_length", s.head_dim]
        outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", "num_logits", s.vocab])]
        for i in range(s.layers):
            for part in ("key", "value"):
                inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{part}", f32, kv))
                outputs.append(helper.make_tensor_value_info(f"present.{i}.{part}", f32, present))
        graph = helper.make_graph(self.nodes, "parley", inputs, outputs, self.w.protos)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
        model.ir_version = 10
        return model


_MS_OPS = {"MatMulNBits", "GatherBlockQuantized", "GroupQueryAttention", "SkipSimplifiedLayerNormalization"}


def _unpermute(heads: int, head_dim: int) -> npt.NDArray[np.intp]:
    """Row order that undoes llama.cpp's Q/K permutation (its rotary halves interleaved per head)."""
    order: npt.NDArray[np.intp] = (
        np.arange(heads * head_dim).reshape(heads, head_dim // 2, 2).swapaxes(1, 2).reshape(-1)
    )
    return order


def eos_ids(reader: GGUFReader, tokens: list[str]) -> list[int]:
    found = [int(_field(reader, "tokenizer.ggml.eos_token_id"))]
    if (eot := _field(reader, "tokenizer.ggml.eot_token_id")) is not None:
        found.append(int(eot))
    index = {t: i for i, t in enumerate(tokens) if t in END_OF_TURN}
    found += [index[t] for t in END_OF_TURN if t in index]
    return list(dict.fromkeys(found))


def genai_config(spec: Spec, eos: list[int], bos: int | None, pad: int) -> dict[str, Any]:
    """The parts of onnxruntime-genai's genai_config.json that Parley's loader reads (registry.load_model)."""
    return {
        "model": {
            "type": spec.arch,
            "bos_token_id": bos,
            "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": pad,
            "vocab_size": spec.vocab,
            "context_length": spec.context,
            "decoder": {
                "filename": "model.onnx",
                "head_size": spec.head_dim,
                "hidden_size": spec.hidden,
                "num_attention_heads": spec.heads,
                "num_hidden_layers": spec.layers,
                "num_key_value_heads": spec.kv_heads,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
            },
        },
        "search": {"max_length": spec.context},
    }


def total_bytes(gguf: Path) -> int:
    return sum(int(t.n_bytes) for t in read_gguf(gguf).tensors)


def write_onnx(gguf: Path, out: Path, *, precision: str, tick: Tick) -> Spec:
    """model.onnx, its weights and genai_config.json for ``gguf`` in ``out`` (the tokenizer is separate)."""
    if precision not in DIRECT:
        raise ValueError(f"precision must be one of {DIRECT}")
    reader = read_gguf(gguf)
    spec = read_spec(reader)
    if bad := unsupported_tensors(reader):
        raise ValueError(f"{bad[0]} cannot run as it is")
    out.mkdir(parents=True, exist_ok=True)
    weights = _Weights(out)
    try:
        model = _Writer(gguf, reader, spec, weights, precision == "gguf-exact", tick).build()
    finally:
        weights.close()
    onnx.save_model(model, str(out / "model.onnx"))
    tokens = [str(t) for t in (_field(reader, "tokenizer.ggml.tokens") or [])]
    eos = eos_ids(reader, tokens)
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    pad = _field(reader, "tokenizer.ggml.padding_token_id", eos[0])
    config = genai_config(spec, eos, None if bos is None else int(bos), int(pad))
    (out / "genai_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return spec
