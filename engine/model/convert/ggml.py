"""GGUF weight blocks as ONNX Runtime's ``MatMulNBits`` / ``GatherBlockQuantized`` take them, exactly.

Every common ggml type is, per block of 16 or 32 values along a row, ``w = s * (q - z) + m``: a float
scale ``s``, integer codes ``q`` with an integer zero point ``z``, and (for the "_1" and K types) a
float offset ``m``. ONNX Runtime's block-quantized operators compute ``s * (q - z)`` with 4-bit or 8-bit
codes; the offsets, which its integer zero points cannot hold, are added by the graph (see
``onnx_writer.py``). So no weight is re-quantised: the graph computes with the GGUF's own numbers,
checked at import against the ``gguf`` package's own dequantisation.

- Q4_0, Q4_1, Q4_K: 4-bit codes, block 32 (Q4_K's 6-bit sub-scales and mins times its fp16 super-scales).
- Q5_0, Q5_1, Q5_K, Q8_0: 5- or 8-bit codes in 8-bit blocks of 32.
- Q6_K: 6-bit codes in 8-bit blocks of 16 (its sub-blocks), zero point 32.
- F32, F16, BF16: plain float weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

# type name -> (bytes per block, values per block)
_LAYOUT = {
    "Q4_0": (18, 32),
    "Q4_1": (20, 32),
    "Q5_0": (22, 32),
    "Q5_1": (24, 32),
    "Q8_0": (34, 32),
    "Q4_K": (144, 256),
    "Q5_K": (176, 256),
    "Q6_K": (210, 256),
}
FLOAT_TYPES = ("F32", "F16", "BF16")
SUPPORTED = (*FLOAT_TYPES, *_LAYOUT)


class UnsupportedType(ValueError):
    def __init__(self, tensor: str, kind: str) -> None:
        super().__init__(
            f"tensor {tensor} is {kind}, which Parley cannot run as it is (it runs {', '.join(SUPPORTED)}); "
            "import with --precision fp32 or int4 instead (dequantised by transformers, then rebuilt)"
        )


@dataclass(frozen=True)
class Blocks:
    """A [rows, cols] matrix as ``s * (q - zero) + offsets`` per block of ``block`` values along a row."""

    bits: int  # 4 or 8: the operator's code width
    block: int
    codes: U8  # [rows, cols / block, block], values below 2**bits
    scales: F32  # [rows, cols / block]
    zero: U8  # [rows, cols / block]
    offsets: F32 | None  # [rows, cols / block]; None where the type has none

    @property
    def shape(self) -> tuple[int, int]:
        rows, blocks, block = self.codes.shape
        return rows, blocks * block

    def take(self, rows: slice | npt.NDArray[np.intp]) -> Blocks:
        return Blocks(
            self.bits,
            self.block,
            self.codes[rows],
            self.scales[rows],
            self.zero[rows],
            None if self.offsets is None else self.offsets[rows],
        )

    def dequantize(self) -> F32:
        """The weights these blocks stand for, computed as ggml does (scale times code, plus offset)."""
        w = self.scales[..., None] * (self.codes.astype(np.float32) - self.zero[..., None].astype(np.float32))
        if self.offsets is not None:
            w = w + self.offsets[..., None]
        out: F32 = w.reshape(self.shape).astype(np.float32)
        return out

    def centred(self) -> Blocks:
        """The same weights with offsets folded into integer zero points as far as they go (``z`` nearest
        ``-m/s``; the remainder stays an offset, at most s/2). For int8 activations: on raw codes
        (mean about half the range) the activations' rounding error adds up block by block instead of
        cancelling. Not exact in the last bit (``m + z*s`` is rounded), so only for the int8 precision."""
        if self.offsets is None:
            return self
        top = (1 << self.bits) - 1
        safe = np.where(self.scales == 0, 1, self.scales)
        zero = np.clip(np.rint(-self.offsets / safe), 0, top).astype(np.uint8)
        rest = (self.offsets + zero.astype(np.float32) * self.scales).astype(np.float32)
        return Blocks(self.bits, self.block, self.codes, self.scales, zero, rest)


def _f16(raw: U8) -> F32:
    out: F32 = np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)
    return out


def _nibbles(qs: U8) -> U8:
    """16 bytes -> 32 codes: ggml keeps value j in the low nibble and j + 16 in the high nibble of byte j."""
    out: U8 = np.concatenate([qs & 15, qs >> 4], axis=-1)
    return out


def _high_bits(qh: U8) -> U8:
    """Q5_0/Q5_1: bit j of the 32-bit little-endian qh is bit 4 of value j."""
    bits: U8 = np.unpackbits(qh, axis=-1, bitorder="little")
    return bits


def _scale_min_k4(scales: U8) -> tuple[U8, U8]:
    """Q4_K/Q5_K: the eight 6-bit sub-block scales and mins packed into 12 bytes."""
    s = scales.astype(np.uint8)
    sc = np.empty((*s.shape[:-1], 8), np.uint8)
    mn = np.empty_like(sc)
    sc[..., :4] = s[..., 0:4] & 63
    mn[..., :4] = s[..., 4:8] & 63
    sc[..., 4:] = (s[..., 8:12] & 15) | ((s[..., 0:4] >> 6) << 4)
    mn[..., 4:] = (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)
    return sc, mn


def decode(kind: str, raw: U8, rows: int, cols: int, name: str = "?") -> Blocks | F32:
    """A GGUF tensor's bytes (``rows`` x ``cols`` values, rows contiguous) as Blocks, or as a float
    matrix for the float types."""
    if kind == "F32":
        return np.ascontiguousarray(raw).view(np.float32).reshape(rows, cols)
    if kind == "F16":
        return np.ascontiguousarray(raw).view(np.float16).reshape(rows, cols).astype(np.float32)
    if kind == "BF16":
        wide = np.ascontiguousarray(raw).view(np.uint16).astype(np.uint32) << 16
        return wide.view(np.float32).reshape(rows, cols)
    if kind not in _LAYOUT:
        raise UnsupportedType(name, kind)
    size, per = _LAYOUT[kind]
    if cols % per:
        raise ValueError(f"tensor {name}: {cols} columns is not a whole number of {kind} blocks")
    b = np.ascontiguousarray(raw).reshape(rows, cols // per, size)
    if kind == "Q4_0":
        return _blocks(4, _f16(b[..., 0:2]), _nibbles(b[..., 2:18]), 8, None)
    if kind == "Q4_1":
        return _blocks(4, _f16(b[..., 0:2]), _nibbles(b[..., 4:20]), 0, _f16(b[..., 2:4]))
    if kind == "Q5_0":
        codes = _nibbles(b[..., 6:22]) | (_high_bits(b[..., 2:6]) << 4)
        return _blocks(8, _f16(b[..., 0:2]), codes, 16, None)
    if kind == "Q5_1":
        codes = _nibbles(b[..., 8:24]) | (_high_bits(b[..., 4:8]) << 4)
        return _blocks(8, _f16(b[..., 0:2]), codes, 0, _f16(b[..., 2:4]))
    if kind == "Q8_0":
        codes = (b[..., 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return _blocks(8, _f16(b[..., 0:2]), codes, 128, None)
    if kind in ("Q4_K", "Q5_K"):
        d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
        sc, mn = _scale_min_k4(b[..., 4:16])
        qs = b[..., -128:].reshape(rows, -1, 4, 32)  # four chunks of 64 values: low nibbles, then high
        codes = np.stack([qs & 15, qs >> 4], axis=3)  # [rows, supers, 4, 2, 32]
        if kind == "Q5_K":
            qh = b[..., 16:48]  # bit 2c of byte l: value l of chunk c's low half; bit 2c+1: its high half
            shifts = np.arange(8, dtype=np.uint8).reshape(4, 2, 1)
            codes = codes | (((qh[:, :, None, None, :] >> shifts) & 1) << 4)
        scales = d[..., None] * sc.astype(np.float32)  # as ggml: d * sc, then times the code
        offsets = -(dmin[..., None] * mn.astype(np.float32))
        return _blocks(
            4 if kind == "Q4_K" else 8,
            scales.reshape(rows, -1),
            codes.reshape(rows, -1, 32),
            0,
            offsets.reshape(rows, -1).astype(np.float32),
        )
    # Q6_K: two halves of 128 values; in each, ql[0:32], ql[32:64] low nibbles then high nibbles,
    # with 2 bits each from qh[0:32] (shifts 0, 2, 4, 6), in the order of the four 32-value quarters.
    ql = b[..., 0:128].reshape(rows, -1, 2, 2, 32)  # [.., half, ql part, 32]
    qh = b[..., 128:192].reshape(rows, -1, 2, 1, 32)
    sub = b[..., 192:208].view(np.int8).astype(np.float32)
    d = _f16(b[..., 208:210])
    low = np.stack([ql[..., 0, :] & 15, ql[..., 1, :] & 15, ql[..., 0, :] >> 4, ql[..., 1, :] >> 4], axis=3)
    high = (qh >> np.array([0, 2, 4, 6], np.uint8).reshape(4, 1)) & 3  # [.., half, 4, 32]
    codes = (low | (high << 4)).reshape(rows, -1, 16)
    scales = (d[..., None] * sub).reshape(rows, -1)
    return _blocks(8, scales, codes, 32, None, block=16)


def _blocks(bits: int, scales: F32, codes: npt.NDArray[Any], zero: int, offsets: F32 | None, block: int = 32) -> Blocks:
    rows = codes.shape[0]
    codes = np.ascontiguousarray(codes.reshape(rows, -1, block), np.uint8)
    scales = np.ascontiguousarray(scales.reshape(rows, -1), np.float32)
    return Blocks(
        bits,
        block,
        codes,
        scales,
        np.full(scales.shape, zero, np.uint8),
        None if offsets is None else np.ascontiguousarray(offsets.reshape(rows, -1), np.float32),
    )


def pack(blocks: Blocks) -> tuple[U8, U8]:
    """Codes and zero points in ``MatMulNBits``'s layout: [rows, blocks, block*bits/8] and, for 4 bits,
    two zero points per byte (row-padded), element 2i in the low nibble."""
    if blocks.bits == 8:
        return blocks.codes, blocks.zero
    codes = blocks.codes
    packed: U8 = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    zero = blocks.zero
    if zero.shape[1] % 2:
        zero = np.pad(zero, ((0, 0), (0, 1)))
    zp: U8 = (zero[:, 0::2] | (zero[:, 1::2] << 4)).astype(np.uint8)
    return packed, zp
