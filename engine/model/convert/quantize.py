"""Build the "q4_1-exact" (and "q4_1-int8") CPU graphs for SmolLM2 from the GGUF's own quantized blocks.

The fp32 graph from onnxruntime-genai's builder is rewritten in place: every decoder MatMul whose
weights came from a GGUF Q4_1 tensor becomes a com.microsoft MatMulNBits over the *same* 4-bit codes
and scales, and the tied Q8_0 embedding/LM head becomes an 8-bit MatMulNBits plus a
GatherBlockQuantized over one shared copy of the codes. No weight is re-quantized, so the graph
computes with exactly the weights of the fp32 reference.

Two details keep the arithmetic faithful:

* Q4_1 is w = d*q + m. MatMulNBits only has integer zero points (float ones hit a slow path), so it
  computes d*q and the per-block mins are added exactly as blocksum(x) @ M (a [K/32, N] fp32 MatMul).
  The decoder's 4-bit products keep fp32 activations (accuracy_level 0): MLAS's int8-activation
  kernel is faster per call, but int8 activations alone cost ~6 points of top-1 agreement.
* The 49152-row LM head is the one product where fp32 activations are hopeless (8-bit weights then
  dequantize the whole matrix per call), so it uses the int8 kernel (accuracy_level 4) on a split
  activation: x = hi + lo, where hi lies exactly on the per-block int8 grid MLAS itself would choose
  (so quantizing hi loses nothing) and lo is the small remainder. Both go through the same
  MatMulNBits as two rows, so the weights are read once and only lo's quantization error remains.

Measured on 2 cores against the fp32 graph: 100% top-1 agreement on the bench's reply tokens
(627/627), about 1.8x the decode speed. An int8-activation body with the same split everywhere
reached 99.8% but was slower: its dozen extra small ops per product cost more than they saved.

"q4_1-int8" is the same graph with int8 activations in the 4-bit products (MLAS's VNNI kernels, the
arithmetic llama.cpp uses for Q4_1), about 1.2x the decode speed of q4_1-exact at llama.cpp's fidelity.
On the raw codes (w = d*q, q in 0..15, mean ~7.5d) the activations' int8 rounding error adds up
block by block instead of cancelling, which costs ~3 points of agreement; so each block gets the
integer zero point nearest -m/d (w = d*(q - zp) + r, |r| <= d/2) and only the small rest r goes
through the exact blocksum product.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from gguf import GGUFReader
from onnx import helper, numpy_helper

__all__ = ["PRECISION", "build_quantized", "supports"]

PRECISION = "q4_1-exact"
BLOCK = 32
MS_DOMAIN = "com.microsoft"
HEAD_ACCURACY = 4  # int8 activations (on the hi/lo split): the only fast 8-bit kernel
COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "genai_config.json")
DATA_FILE = "model.onnx.data"

# builder projection name -> GGUF tensors fused into it (q, k, v are concatenated along N).
PROJECTIONS = {
    "qkv_proj": ("attn_q", "attn_k", "attn_v"),
    "o_proj": ("attn_output",),
    "gate_proj": ("ffn_gate",),
    "up_proj": ("ffn_up",),
    "down_proj": ("ffn_down",),
}

Blocks = tuple[np.ndarray, np.ndarray, np.ndarray]  # scales [N, K/32], mins [N, K/32], codes [N, K/32, 32]


def _f16(raw: np.ndarray) -> np.ndarray:
    return raw.copy().view(np.float16)[..., 0].astype(np.float32)


def _q4_1(raw: np.ndarray, rows: int, k: int) -> Blocks:
    blocks = raw.reshape(rows, k // BLOCK, 20)  # fp16 d, fp16 m, 16 bytes of nibbles
    nibbles = blocks[..., 4:]
    # ggml stores element j in the low nibble and element j + 16 in the high nibble of byte j.
    codes = np.concatenate([nibbles & 15, nibbles >> 4], axis=-1)
    return _f16(blocks[..., 0:2]), _f16(blocks[..., 2:4]), codes


def _unpermute(rows: np.ndarray, heads: int) -> np.ndarray:
    # llama.cpp's converter interleaves the rotary halves of each Q/K head; the builder (like
    # transformers) uses the HF order. Rows are output channels, so whole blocks just move.
    shape = rows.shape
    return rows.reshape(heads, shape[0] // heads // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    # MatMulNBits wants element 2i in the low nibble and 2i + 1 in the high nibble.
    packed: np.ndarray = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    return packed


class _Rewriter:
    def __init__(self, graph: onnx.GraphProto, reader: GGUFReader, int8_activations: bool) -> None:
        # MatMulNBits accuracy_level of the 4-bit products: 4 = int8 activations, 0 = fp32 (exact).
        self.body_accuracy = 4 if int8_activations else 0
        self.tensors = {t.name: t for t in reader.tensors}
        self.heads = int(reader.fields["llama.attention.head_count"].parts[-1][0])
        self.kv_heads = int(reader.fields["llama.attention.head_count_kv"].parts[-1][0])
        self.layers = int(reader.fields["llama.block_count"].parts[-1][0])
        self.weights = {i.name: i for i in graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.prepared: dict[str, str] = {}
        self.sums: dict[str, str] = {}
        self.const("blk4d", np.array([0, 0, -1, BLOCK], np.int64))
        self.const("last_axis", np.array([-1], np.int64))
        self.const("inv127", np.array(1 / 127, np.float32))
        self.const("tiny", np.array(1e-30, np.float32))  # keeps all-zero blocks finite

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs: int | float) -> None:
        domain = MS_DOMAIN if op in ("MatMulNBits", "GatherBlockQuantized") else ""
        node = helper.make_node(op, inputs, outputs, name=name, domain=domain)
        node.attribute.extend(helper.make_attribute(key, value) for key, value in attrs.items())
        self.nodes.append(node)

    def blocksum(self, x: str) -> str:
        """Per-32-block sums of an activation (shared by the products that read it)."""
        if x not in self.sums:
            p = f"{x}/q41sum"
            self.node("Reshape", [x, "blk4d"], [f"{p}/blocks"], f"{p}/Reshape")
            self.node("ReduceSum", [f"{p}/blocks", "last_axis"], [f"{p}/bsum"], f"{p}/BlockSum", keepdims=0)
            self.sums[x] = f"{p}/bsum"
        return self.sums[x]

    def prepare(self, x: str, k: int) -> str:
        """Stacked [hi; lo] rows of an activation, for the int8 kernel (see the module docstring)."""
        if x not in self.prepared:
            p = f"{x}/q41"
            shape3d = f"k{k}_3d"
            if not any(i.name == shape3d for i in self.inits):
                self.const(shape3d, np.array([0, 0, k], np.int64))
            self.node("Reshape", [x, "blk4d"], [f"{p}/blocks"], f"{p}/Reshape")
            # hi = s * round(x / s) with s = amax / 127: MLAS picks the same s for hi, so hi is exact.
            self.node("Abs", [f"{p}/blocks"], [f"{p}/abs"], f"{p}/Abs")
            self.node("ReduceMax", [f"{p}/abs", "last_axis"], [f"{p}/amax"], f"{p}/AbsMax", keepdims=1)
            self.node("Mul", [f"{p}/amax", "inv127"], [f"{p}/s0"], f"{p}/Scale")
            self.node("Max", [f"{p}/s0", "tiny"], [f"{p}/s"], f"{p}/ScaleFloor")
            self.node("Div", [f"{p}/blocks", f"{p}/s"], [f"{p}/t"], f"{p}/Div")
            self.node("Round", [f"{p}/t"], [f"{p}/r"], f"{p}/Round")
            self.node("Mul", [f"{p}/r", f"{p}/s"], [f"{p}/hi"], f"{p}/Hi")
            self.node("Sub", [f"{p}/blocks", f"{p}/hi"], [f"{p}/lo"], f"{p}/Lo")
            self.node("Concat", [f"{p}/hi", f"{p}/lo"], [f"{p}/stack4d"], f"{p}/Stack", axis=0)
            self.node("Reshape", [f"{p}/stack4d", shape3d], [f"{p}/stack"], f"{p}/Reshape3d")
            self.prepared[x] = f"{p}/stack"
        return self.prepared[x]

    def gguf_blocks(self, layer: int, names: tuple[str, ...]) -> Blocks:
        parts = []
        for name in names:
            t = self.tensors[f"blk.{layer}.{name}.weight"]
            k, rows = int(t.shape[0]), int(t.shape[1])
            blocks = _q4_1(np.asarray(t.data), rows, k)
            heads = {"attn_q": self.heads, "attn_k": self.kv_heads}.get(name)
            parts.append(tuple(_unpermute(b, heads) for b in blocks) if heads else blocks)
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]

    def linear(self, x: str, y: str, weight: str, blocks: Blocks) -> None:
        d, m, q = blocks
        n, k = d.shape[0], d.shape[1] * BLOCK
        reference = numpy_helper.to_array(self.weights[weight])  # [K, N]
        if not np.array_equal((d[..., None] * q + m[..., None]).reshape(n, k).T, reference):
            raise ValueError(f"GGUF blocks do not dequantize to {weight}: wrong GGUF or fp32 graph?")
        tag = weight.removesuffix(".weight")
        if self.body_accuracy:
            # int8 activations: centred codes (see the module docstring), w = d*(q - zp) + (m + zp*d).
            zp = np.clip(np.rint(-m / np.where(d == 0, 1, d)), 0, 15).astype(np.uint8)
        else:
            zp = np.zeros_like(d, np.uint8)  # w = d*q + m
        rest = m + zp * d
        codes = self.const(f"{tag}.q4", _pack_nibbles(q))
        scales = self.const(f"{tag}.scales", d)
        zero = self.const(f"{tag}.zp", _pack_nibbles(np.pad(zp, ((0, 0), (0, zp.shape[1] % 2)))))
        mins = self.const(f"{tag}.mins", np.ascontiguousarray(rest.T))
        self.node(
            "MatMulNBits",
            [x, codes, scales, zero],
            [f"{tag}/dq"],
            f"{tag}/MatMulNBits",
            K=k,
            N=n,
            bits=4,
            block_size=BLOCK,
            accuracy_level=self.body_accuracy,
        )
        self.node("MatMul", [self.blocksum(x), mins], [f"{tag}/mins"], f"{tag}/Mins")
        self.node("Add", [f"{tag}/dq", f"{tag}/mins"], [y], f"{tag}/Add")

    def q8_head(self, reader_name: str, reference: str) -> tuple[str, str, str, int, int]:
        t = self.tensors[reader_name]
        k, vocab = int(t.shape[0]), int(t.shape[1])
        blocks = np.asarray(t.data).reshape(vocab, k // BLOCK, 2 + BLOCK)  # fp16 d, 32 x int8
        d = _f16(blocks[..., 0:2])
        q = blocks[..., 2:].view(np.int8)
        if not np.array_equal((d[..., None] * q).reshape(vocab, k).T, numpy_helper.to_array(self.weights[reference])):
            raise ValueError(f"GGUF {reader_name} does not dequantize to {reference}")
        # Q8_0 is d * q8 with signed codes: uint8 codes with zero point 128 are the same numbers.
        codes = self.const("embed.q8", (q.astype(np.int16) + 128).astype(np.uint8))
        scales = self.const("embed.scales", d)
        zero = self.const("embed.zp", np.full(d.shape, 128, np.uint8))
        return codes, scales, zero, k, vocab


def supports(gguf_path: Path) -> bool:
    """Whether this scheme applies: a llama-architecture GGUF with Q4_1 projections and a Q8_0 embedding."""
    reader = GGUFReader(str(gguf_path))
    arch = reader.fields.get("general.architecture")
    if arch is None or bytes(arch.parts[-1]).decode(errors="replace") != "llama":
        return False
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    projections = [k for n, k in kinds.items() if n.startswith("blk.") and n.endswith(".weight") and "norm" not in n]
    return kinds.get("token_embd.weight") == "Q8_0" and bool(projections) and set(projections) == {"Q4_1"}


def build_quantized(gguf_path: Path, fp32_onnx_dir: Path, out_dir: Path, *, int8_activations: bool = False) -> None:
    """Write a complete q4_1-exact model folder into out_dir (q4_1-int8 with ``int8_activations``).

    fp32_onnx_dir is onnxruntime-genai's fp32 CPU build of the dequantized GGUF: its graph is
    reused as-is and its fp32 weights are only used to verify the re-packed blocks bit for bit.
    """
    model = onnx.load(str(Path(fp32_onnx_dir) / "model.onnx"))
    graph = model.graph
    rw = _Rewriter(graph, GGUFReader(str(gguf_path)), int8_activations)
    codes, scales, zero, hidden, vocab = rw.q8_head("token_embd.weight", "lm_head.MatMul.weight")
    replaced = {"lm_head.MatMul.weight"}

    for node in graph.node:
        weight = node.input[1] if len(node.input) > 1 else ""
        if node.op_type == "MatMul" and weight.startswith("model.layers."):
            # model.layers.<L>.<attn|mlp>.<proj>.MatMul.weight
            _, _, layer, _, proj, *_ = weight.split(".")
            rw.linear(node.input[0], node.output[0], weight, rw.gguf_blocks(int(layer), PROJECTIONS[proj]))
            replaced.add(weight)
        elif node.op_type == "MatMul" and weight == "lm_head.MatMul.weight":
            stack = rw.prepare(node.input[0], hidden)
            rw.node(
                "MatMulNBits",
                [stack, codes, scales, zero],
                ["lm_head/hilo"],
                "lm_head/MatMulNBits",
                K=hidden,
                N=vocab,
                bits=8,
                block_size=BLOCK,
                accuracy_level=HEAD_ACCURACY,
            )
            rw.node("Split", ["lm_head/hilo"], ["lm_head/hi", "lm_head/lo"], "lm_head/Split", axis=0, num_outputs=2)
            rw.node("Add", ["lm_head/hi", "lm_head/lo"], list(node.output), "lm_head/Add")
        elif node.op_type == "Transpose" and node.input[0] == "lm_head.MatMul.weight":
            continue  # the builder gathers embeddings from the transposed fp32 LM head
        elif node.op_type == "Gather" and node.input[0].startswith("/model/embed_tokens/"):
            rw.node(
                "Reshape",
                [codes, rw.const("embed.shape", np.array([vocab, hidden], np.int64))],
                ["embed/codes2d"],
                "embed/Reshape",
            )
            rw.node(
                "GatherBlockQuantized",
                ["embed/codes2d", node.input[1], scales, zero],
                list(node.output),
                "embed/GatherBlockQuantized",
                gather_axis=0,
                quantize_axis=1,
                block_size=BLOCK,
                bits=8,
            )
        else:
            rw.nodes.append(node)
    if len(replaced) != 1 + len(PROJECTIONS) * rw.layers:
        raise ValueError(f"unexpected fp32 graph: replaced {len(replaced)} weight matrices")

    kept = [i for i in graph.initializer if i.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + rw.inits)
    del graph.node[:]
    graph.node.extend(rw.nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DATA_FILE).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(
        model,
        str(out_dir / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )
    for name in COPIED_FILES:
        shutil.copy(Path(fp32_onnx_dir) / name, out_dir / name)


if __name__ == "__main__":
    import sys

    build_quantized(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int8_activations="--int8" in sys.argv[4:])
