"""Blockwise int4 quantization in numpy, in the exact layout of onnxruntime's MatMulNBits.

A weight W of shape (N, K) (Hugging Face `nn.Linear` layout: out_features x in_features) is cut
into blocks of `block_size` along K. Each block stores 4-bit codes q in [0, 15] and a float32 scale;
dequantized values are `(q - zp) * scale`, with zp = 8 for symmetric blocks (no zero-point tensor,
ORT's implicit default) and a per-block uint8 zp for asymmetric ones.

Packed layouts (shared/reference/ort_int4.md §1.2):
  codes        (N, n_blocks, block_size // 2) uint8, low nibble = even k
  scales       (N, n_blocks) float32
  zero_points  (N, ceil(n_blocks / 2)) uint8, low nibble = even block   [asymmetric only]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUPPORTED_BLOCK_SIZES = (16, 32, 64, 128, 256)  # MLAS fast path; anything else dequantizes every call


@dataclass(frozen=True)
class QTensor:
    codes: np.ndarray            # (N, nb, bs/2) uint8
    scales: np.ndarray           # (N, nb) float32
    zero_points: np.ndarray | None  # (N, ceil(nb/2)) uint8, or None for symmetric
    shape: tuple[int, int]       # original (N, K)
    block_size: int
    bits: int = 4                # 8: codes (N, nb, bs) uint8, zero points (N, nb) uint8 (see quantize_int8)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scales.nbytes + (0 if self.zero_points is None else self.zero_points.nbytes)


def _blocks(w: np.ndarray, block_size: int) -> np.ndarray:
    """(N, K) -> (N, nb, bs), zero-padding K up to a multiple of the block."""
    n, k = w.shape
    nb = -(-k // block_size)
    if nb * block_size != k:
        w = np.pad(w, ((0, 0), (0, nb * block_size - k)))
    return w.reshape(n, nb, block_size)


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(..., 2m) codes in [0, 15] -> (..., m) uint8, element 2j in the low nibble."""
    q = q.astype(np.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_nibbles(p: np.ndarray) -> np.ndarray:
    out = np.empty(p.shape[:-1] + (p.shape[-1] * 2,), dtype=np.uint8)
    out[..., 0::2] = p & 0x0F
    out[..., 1::2] = p >> 4
    return out


# Codes are unsigned: `bits`-bit blocks hold 0 .. 2^bits - 1, and a symmetric block's implicit zero point
# is 2^(bits-1) (8 for int4, 128 for int8), as MatMulNBits and GatherBlockQuantized read them.

def _symmetric_params(b: np.ndarray, clip: np.ndarray | float = 1.0, bits: int = 4):
    # MLAS range2scale: the signed value of largest magnitude maps to -2^(bits-1) (int4: the full [-8, 7]).
    idx = np.abs(b).argmax(axis=-1)[..., None]
    extreme = np.take_along_axis(b, idx, axis=-1)[..., 0] * clip    # (N, nb)
    scale = (extreme / -float(2 ** (bits - 1))).astype(np.float32)
    return scale, None


def _asymmetric_params(b: np.ndarray, clip: np.ndarray | float = 1.0, bits: int = 4):
    # MLAS range2scalezp: the range always contains 0 so that zero weights stay exact.
    top = 2 ** bits - 1
    mn = np.minimum(b.min(axis=-1), 0.0) * clip
    mx = np.maximum(b.max(axis=-1), 0.0) * clip
    scale = ((mx - mn) / float(top)).astype(np.float32)
    safe = np.where(scale == 0, 1.0, scale)
    zp = np.clip(np.round(-mn / safe), 0, top).astype(np.uint8)
    return scale, zp


def _codes(b: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, bits: int = 4) -> np.ndarray:
    inv = np.where(scale == 0, 0.0, 1.0 / np.where(scale == 0, 1.0, scale)).astype(np.float32)[..., None]
    z = float(2 ** (bits - 1)) if zp is None else zp[..., None].astype(np.float32)
    return np.clip(np.round(b * inv + z), 0, 2 ** bits - 1).astype(np.uint8)


def _dequant_blocks(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, bits: int = 4) -> np.ndarray:
    z = float(2 ** (bits - 1)) if zp is None else zp[..., None].astype(np.float32)
    return (q.astype(np.float32) - z) * scale[..., None]


CLIP_GRID = np.linspace(1.0, 0.70, 16, dtype=np.float32)


def _search_clip(b: np.ndarray, params):
    """Per-block shrink factor of the range that minimises the squared reconstruction error."""
    best_err = np.full(b.shape[:2], np.inf, dtype=np.float32)
    best_clip = np.ones(b.shape[:2], dtype=np.float32)
    for c in CLIP_GRID:
        scale, zp = params(b, c)
        err = ((_dequant_blocks(_codes(b, scale, zp), scale, zp) - b) ** 2).sum(axis=-1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_clip = np.where(better, c, best_clip)
    return best_clip


def quantize_int4(w: np.ndarray, *, block_size: int = 32, symmetric: bool = True, clip_search: bool = False,
                  chunk_rows: int = 4096) -> QTensor:
    """Quantize a (N, K) float matrix blockwise along K.

    `clip_search` picks, per block, the range shrink factor with the least squared reconstruction
    error. Rows are processed in chunks so a 122k x 2304 embedding never needs more than a few
    copies of `chunk_rows` rows in memory.
    """
    if block_size not in SUPPORTED_BLOCK_SIZES:
        raise ValueError(f"block size {block_size} is not one of {SUPPORTED_BLOCK_SIZES}")
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    nb = -(-k // block_size)
    codes = np.empty((n, nb, block_size // 2), dtype=np.uint8)
    scales = np.empty((n, nb), dtype=np.float32)
    zps = None if symmetric else np.empty((n, nb), dtype=np.uint8)
    params = _symmetric_params if symmetric else _asymmetric_params
    for r0 in range(0, n, chunk_rows):
        b = _blocks(w[r0:r0 + chunk_rows], block_size)
        clip = _search_clip(b, params) if clip_search else 1.0
        scale, zp = params(b, clip)
        codes[r0:r0 + chunk_rows] = pack_nibbles(_codes(b, scale, zp))
        scales[r0:r0 + chunk_rows] = scale
        if zps is not None:
            zps[r0:r0 + chunk_rows] = zp
    packed_zp = None
    if zps is not None:
        if nb % 2:
            zps = np.pad(zps, ((0, 0), (0, 1)))
        packed_zp = pack_nibbles(zps)
    return QTensor(codes, scales, packed_zp, (n, k), block_size)


def dequantize_int4(q: QTensor) -> np.ndarray:
    """Inverse of quantize_int4: (N, K) float32."""
    n, k = q.shape
    codes = unpack_nibbles(q.codes)                                  # (N, nb, bs)
    zp = None
    if q.zero_points is not None:
        zp = unpack_nibbles(q.zero_points)[:, : q.scales.shape[1]]
    w = _dequant_blocks(codes, q.scales, zp)
    return w.reshape(n, -1)[:, :k]



def quantize_int8(w: np.ndarray, *, block_size: int = 128, symmetric: bool = True) -> QTensor:
    """8-bit blocks for MatMulNBits/GatherBlockQuantized `bits=8`: codes (N, nb, bs) uint8 in [0, 255],
    one code per byte; dequantized `(q - zp) * scale` with zp = 128 for symmetric blocks (no zero-point
    tensor, onnxruntime's implicit 2^(bits-1)) or a per-block uint8 zp (N, nb) for asymmetric ones.
    The int4 quantizer's range rules at 8 bits, no clip search: at 8 bits the rounding error is already
    ~1/16 of int4's."""
    if block_size not in SUPPORTED_BLOCK_SIZES:
        raise ValueError(f"block size {block_size} is not one of {SUPPORTED_BLOCK_SIZES}")
    w = np.asarray(w, dtype=np.float32)
    b = _blocks(w, block_size)                                        # (N, nb, bs)
    scale, zp = (_symmetric_params if symmetric else _asymmetric_params)(b, bits=8)
    return QTensor(_codes(b, scale, zp, bits=8), scale, zp, w.shape, block_size, bits=8)


def dequantize(q: QTensor) -> np.ndarray:
    """Inverse of quantize_int4 / quantize_int8: (N, K) float32."""
    if q.bits == 4:
        return dequantize_int4(q)
    n, k = q.shape
    return _dequant_blocks(q.codes, q.scales, q.zero_points, bits=8).reshape(n, -1)[:, :k]
