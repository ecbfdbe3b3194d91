"""Blockwise 2/4/6/8-bit quantization in numpy, in the exact layouts of onnxruntime's MatMulNBits and
GatherBlockQuantized.

A weight W of shape (N, K) (Hugging Face `nn.Linear` layout: out_features x in_features) is cut into
blocks of `block_size` along K. Each block stores `bits`-bit unsigned codes q in [0, 2^bits - 1] and one
scale; dequantized values are `(q - zp) * scale`, with zp = 2^(bits-1) for symmetric blocks (no
zero-point tensor: onnxruntime's implicit default) and a per-block zp for asymmetric ones.

Packed layouts (shared/reference/ort_int4.md §1.2; 2 and 8 bits measured the same way):
  codes        (N, n_blocks, block_size * bits / 8) uint8, element j of a byte in bits [j*bits, (j+1)*bits)
  scales       (N, n_blocks) float32
  zero_points  (N, ceil(n_blocks * bits / 8)) uint8, packed the same way   [asymmetric only]

onnxruntime has no 6-bit kernel, but a 6-bit code splits exactly into a 4-bit high part and a 2-bit low
part: q6 = 4·hi + lo and zp6 = 4·zh + zl, so s·(q6 − zp6) = 4s·(hi − zh) + s·(lo − zl): two MatMulNBits
(bits 4 and 2) on the same input, summed (`split_6bit`). A 6-bit QTensor keeps its codes unpacked
(one per byte) until it is split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUPPORTED_BLOCK_SIZES = (16, 32, 64, 128, 256)  # MLAS fast path; anything else dequantizes every call
SUPPORTED_BITS = (2, 4, 6, 8)


@dataclass(frozen=True)
class QTensor:
    codes: np.ndarray            # packed (N, nb, bs*bits/8) uint8; bits=6: unpacked (N, nb, bs)
    scales: np.ndarray           # (N, nb) float32
    zero_points: np.ndarray | None  # packed (N, ceil(nb*bits/8)) uint8 (bits=6: unpacked (N, nb)); None = symmetric
    shape: tuple[int, int]       # original (N, K)
    block_size: int
    bits: int = 4

    @property
    def nbytes(self) -> int:
        """Bytes as stored in a package with float32 scales (a 6-bit tensor as its 4-bit and 2-bit parts)."""
        if self.bits == 6:
            return sum(p.nbytes for p in split_6bit(self))
        return self.codes.nbytes + self.scales.nbytes + (0 if self.zero_points is None else self.zero_points.nbytes)


def stored_bytes(n: int, k: int, *, bits: int, block: int, symmetric: bool, scale_bytes: int = 4) -> int:
    """Bytes of an (N, K) tensor as the exporter stores it: the budget's accounting (a test checks it
    against real packages)."""
    nb = -(-k // block)
    if bits == 6:
        hi = stored_bytes(n, k, bits=4, block=block, symmetric=symmetric, scale_bytes=scale_bytes)
        lo = n * nb * (block * 2 // 8 + scale_bytes) + n * -(-nb * 2 // 8)     # the low part always has zero points
        return hi + lo
    zp = 0 if symmetric or bits == 8 else n * -(-nb * bits // 8)
    return n * nb * (block * bits // 8 + scale_bytes) + zp


def _blocks(w: np.ndarray, block_size: int) -> np.ndarray:
    """(N, K) -> (N, nb, bs), zero-padding K up to a multiple of the block."""
    n, k = w.shape
    nb = -(-k // block_size)
    if nb * block_size != k:
        w = np.pad(w, ((0, 0), (0, nb * block_size - k)))
    return w.reshape(n, nb, block_size)


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """(..., m·8/bits) codes < 2^bits -> (..., m) uint8, element j of each group in the j-th lowest bits."""
    q = q.astype(np.uint8)
    per = 8 // bits
    out = q[..., 0::per].copy()
    for j in range(1, per):
        out |= q[..., j::per] << (bits * j)
    return out


def unpack_bits(p: np.ndarray, bits: int) -> np.ndarray:
    per, mask = 8 // bits, (1 << bits) - 1
    out = np.empty(p.shape[:-1] + (p.shape[-1] * per,), dtype=np.uint8)
    for j in range(per):
        out[..., j::per] = (p >> (bits * j)) & mask
    return out


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    return pack_bits(q, 4)


def unpack_nibbles(p: np.ndarray) -> np.ndarray:
    return unpack_bits(p, 4)


def pack_zero_points(zp: np.ndarray, bits: int) -> np.ndarray:
    """(N, nb) zero points -> MatMulNBits' (N, ceil(nb*bits/8)) layout (padded with zeros)."""
    per = 8 // bits
    pad = -zp.shape[-1] % per
    return pack_bits(np.pad(zp, ((0, 0), (0, pad))) if pad else zp, bits)


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


def _block_weights(importance: np.ndarray | None, k: int, block_size: int) -> np.ndarray | float:
    """Per-input-column importance (Σx² over calibration inputs) as (nb, bs) block weights; 1.0 without."""
    if importance is None:
        return 1.0
    imp = np.asarray(importance, np.float32)
    imp = imp / (imp.mean() or 1.0) + 1e-3          # never a zero weight: unseen columns still count a little
    return _blocks(imp[None, :k], block_size)[0]


def _search_clip(b: np.ndarray, params, bits: int = 4, weights: np.ndarray | float = 1.0):
    """Per-block shrink factor of the range that minimises the (importance-weighted) squared error."""
    best_err = np.full(b.shape[:2], np.inf, dtype=np.float32)
    best_clip = np.ones(b.shape[:2], dtype=np.float32)
    for c in CLIP_GRID:
        scale, zp = params(b, c, bits=bits)
        err = (weights * (_dequant_blocks(_codes(b, scale, zp, bits), scale, zp, bits) - b) ** 2).sum(axis=-1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_clip = np.where(better, c, best_clip)
    return best_clip


def _refine_scale(b, scale, zp, bits, weights, rounds: int = 2):
    """Weighted least-squares scale for the chosen codes (zero point fixed), re-rounded; kept per block only
    where it lowers the error. The k-quants' refinement, on MatMulNBits' integer zero points."""
    def err(s):
        return (weights * (_dequant_blocks(_codes(b, s, zp, bits), s, zp, bits) - b) ** 2).sum(axis=-1)
    best = err(scale)
    z = float(2 ** (bits - 1)) if zp is None else zp[..., None].astype(np.float32)
    for _ in range(rounds):
        c = _codes(b, scale, zp, bits).astype(np.float32) - z
        num, den = (weights * b * c).sum(-1), (weights * c * c).sum(-1)
        cand = np.where(den > 0, num / np.where(den > 0, den, 1.0), scale).astype(np.float32)
        e = err(cand)
        better = e < best
        scale, best = np.where(better, cand, scale), np.where(better, e, best)
    return scale


def quantize(w: np.ndarray, *, bits: int = 4, block_size: int = 32, symmetric: bool = True, clip_search: bool = False,
             importance: np.ndarray | None = None, refine: bool = False, chunk_rows: int = 4096) -> QTensor:
    """Quantize a (N, K) float matrix blockwise along K to `bits` (2, 4, 6 or 8).

    `clip_search` picks, per block, the range shrink factor with the least squared reconstruction error;
    `refine` then refits the scale by least squares (with clip_search); `importance` (K,) weights that error
    per input column (the imatrix idea: columns whose activations are large matter more). Rows are processed
    in chunks so a 122k x 2304 embedding never needs more than a few copies of `chunk_rows` rows in memory.
    """
    if block_size not in SUPPORTED_BLOCK_SIZES:
        raise ValueError(f"block size {block_size} is not one of {SUPPORTED_BLOCK_SIZES}")
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"{bits}-bit codes are not supported ({SUPPORTED_BITS})")
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    nb = -(-k // block_size)
    codes = np.empty((n, nb, block_size), dtype=np.uint8)
    scales = np.empty((n, nb), dtype=np.float32)
    zps = None if symmetric else np.empty((n, nb), dtype=np.uint8)
    params = _symmetric_params if symmetric else _asymmetric_params
    weights = _block_weights(importance, k, block_size)
    for r0 in range(0, n, chunk_rows):
        b = _blocks(w[r0:r0 + chunk_rows], block_size)
        clip = _search_clip(b, params, bits, weights) if clip_search else 1.0
        scale, zp = params(b, clip, bits=bits)
        if clip_search and refine:
            scale = _refine_scale(b, scale, zp, bits, weights)
        codes[r0:r0 + chunk_rows] = _codes(b, scale, zp, bits)
        scales[r0:r0 + chunk_rows] = scale
        if zps is not None:
            zps[r0:r0 + chunk_rows] = zp
    if bits == 6:
        return QTensor(codes, scales, zps, (n, k), block_size, bits=6)
    packed = codes if bits == 8 else pack_bits(codes, bits)
    packed_zp = None if zps is None else (zps if bits == 8 else pack_zero_points(zps, bits))
    return QTensor(packed, scales, packed_zp, (n, k), block_size, bits=bits)


def quantize_int4(w: np.ndarray, *, block_size: int = 32, symmetric: bool = True, clip_search: bool = False,
                  importance: np.ndarray | None = None, chunk_rows: int = 4096) -> QTensor:
    return quantize(w, bits=4, block_size=block_size, symmetric=symmetric, clip_search=clip_search,
                    importance=importance, chunk_rows=chunk_rows)


def quantize_int8(w: np.ndarray, *, block_size: int = 128, symmetric: bool = True) -> QTensor:
    """8-bit blocks, one code per byte, no clip search: at 8 bits the rounding error is already ~1/16 of int4's."""
    return quantize(w, bits=8, block_size=block_size, symmetric=symmetric)


def split_6bit(q: QTensor) -> tuple[QTensor, QTensor]:
    """A 6-bit tensor as the (4-bit high, 2-bit low) pair whose MatMulNBits outputs sum to its matmul:
    hi = q >> 2 with scale 4s and zero point zp >> 2 (implicit 8 when symmetric), lo = q & 3 with scale s
    and zero point zp & 3 (a symmetric 6-bit block's zp 32 gives lo's zp 0: always stored)."""
    assert q.bits == 6
    n, nb = q.scales.shape
    z = np.full((n, nb), 32, np.uint8) if q.zero_points is None else q.zero_points
    hi_zp = None if q.zero_points is None else pack_zero_points(z >> 2, 4)
    hi = QTensor(pack_bits(q.codes >> 2, 4), (q.scales * np.float32(4)).astype(np.float32), hi_zp, q.shape,
                 q.block_size, bits=4)
    lo = QTensor(pack_bits(q.codes & 3, 2), q.scales, pack_zero_points(z & 3, 2), q.shape, q.block_size, bits=2)
    return hi, lo


def _unpacked(q: QTensor) -> tuple[np.ndarray, np.ndarray | None]:
    """(codes (N, nb, bs), zero points (N, nb) or None) of any QTensor."""
    nb = q.scales.shape[1]
    if q.bits in (6, 8):
        return q.codes, q.zero_points
    zp = None if q.zero_points is None else unpack_bits(q.zero_points, q.bits)[:, :nb]
    return unpack_bits(q.codes, q.bits), zp


def dequantize(q: QTensor) -> np.ndarray:
    """Inverse of quantize: (N, K) float32."""
    n, k = q.shape
    codes, zp = _unpacked(q)
    return _dequant_blocks(codes, q.scales, zp, bits=q.bits).reshape(n, -1)[:, :k]


def dequantize_int4(q: QTensor) -> np.ndarray:
    return dequantize(q)
