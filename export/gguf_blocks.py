"""llama.cpp's block formats carried exactly onto MatMulNBits' layouts (pure numpy).

Every format here is a per-block scale times an integer code, minus (for some) a per-block minimum:

  type   block bytes  value                      carried as (export/quant.py's QTensor)
  Q4_0   32   18      d·(q − 8)                  4-bit, block 32, implicit zero point 8, scale d
  Q8_0   32   34      d·q (q int8)               8-bit, block 32, code q+128 (implicit zero point 128)
  Q5_0   32   22      d·(q − 16)                 8-bit, block 32, code q+112 (implicit zero point 128): one
                                                 kernel; the 4+2 split's 2-bit block-32 part cost 3x the
                                                 4-bit part on Gemma 3 270M (2-bit kernels are slow)
  Q6_K   256  210     d·sc·(q − 32), sc int8/16  8-bit, block 16, code q+96 (implicit zero point 128),
                                                 scale d·sc (a 4+2 split at block 16 would hit
                                                 onnxruntime's 2-bit block-16 fallback: ~75x slower)
  Q4_1   32   20      d·q + m                    4-bit, zero point 8, scale d, plus a min term m + 8d
  Q5_1   32   24      d·q + m                    6-bit (5 used), zero point 16, plus a min term m + 16d
  Q4_K   256  144     d·sc·q − dmin·mn (per 32)  4-bit, block 32, zero point 8, plus a min term
  Q5_K   256  176     d·sc·q − dmin·mn (per 32)  6-bit (5 used), block 32, zero point 16, plus a min term
(a block whose m + z·d is not exact in float32 keeps zero point 0 and m: _centered)

A min term is Σ_blocks mins[n, b]·Σ_{k in b} x[k]: MatMulNBits can't take a float zero point on its fast
path, so the exporter adds a small float matmul over the block sums of x (export/decoder.py).
Scales are products of a float16 and a small integer: exact in float32 (at most 19 significant bits),
not always in float16, so carried tensors keep float32 scales.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quant import QTensor, dequantize, pack_bits, pack_zero_points, unpack_bits

BYTES = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
         "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}   # type -> (values, bytes) per block
CARRIED = tuple(BYTES)
# type -> (bits, block size) of its carried form: what `carry` builds, and what the exporter pins each tensor to
FORM = {"Q4_0": (4, 32), "Q4_1": (4, 32), "Q4_K": (4, 32), "Q8_0": (8, 32), "Q5_0": (8, 32), "Q6_K": (8, 16),
        "Q5_1": (6, 32), "Q5_K": (6, 32)}


@dataclass(frozen=True)
class Carried:
    """A GGUF tensor on MatMulNBits' grid: dequantize(q) + mins repeated over each block."""
    q: QTensor
    mins: np.ndarray | None      # (N, nb) float32, same blocks as q; None: no min term
    gguf_type: str

    @property
    def key(self) -> tuple[int, int, bool, bool]:
        """What must agree for tensors to share one packed matmul: bits, block, zero points, min term."""
        return self.q.bits, self.q.block_size, self.q.zero_points is not None, self.mins is not None

    def describe(self) -> str:
        q = self.q
        bits = "4+2-bit" if q.bits == 6 else f"{q.bits}-bit"
        extra = " + min term" if self.mins is not None else ""
        return f"exact: {bits} block {q.block_size}{extra}"


def dequantize_carried(c: Carried) -> np.ndarray:
    """(N, K) float32: the carried tensor's values (equal to gguf's dequantization up to float rounding)."""
    w = dequantize(c.q)
    if c.mins is not None:
        n, k = w.shape
        w = (w.reshape(n, -1, c.q.block_size) + c.mins[..., None]).reshape(n, k)
    return w


def _f16(b: np.ndarray) -> np.ndarray:
    """(..., 2) uint8 -> (...) float32."""
    return np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32)


def _nibbles32(qs: np.ndarray) -> np.ndarray:
    """(..., 16) bytes -> (..., 32) codes: byte j holds value j (low nibble) and value j+16 (high)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _high_bits32(qh: np.ndarray) -> np.ndarray:
    """(..., 4) bytes (a little-endian uint32) -> (..., 32) bits, value j's fifth bit in bit j."""
    return np.unpackbits(qh, axis=-1, bitorder="little")


def _k_scale_min(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes -> 8 six-bit scales and 8 six-bit mins per super-block (ggml's get_scale_min_k4)."""
    s = scales.reshape(*scales.shape[:-1], 3, 4)
    d, m, md = s[..., 0, :], s[..., 1, :], s[..., 2, :]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _q4(codes, scales, *, zp: np.ndarray | None, shape) -> QTensor:
    packed = None if zp is None else pack_zero_points(zp, 4)
    return QTensor(pack_bits(codes, 4), scales.astype(np.float32), packed, shape, codes.shape[-1], bits=4)


def _q6(codes, scales, *, zp: int | np.ndarray | None, shape) -> QTensor:
    z = None if zp is None else np.broadcast_to(np.asarray(zp, np.uint8), scales.shape).copy()
    return QTensor(codes.astype(np.uint8), scales.astype(np.float32), z, shape, codes.shape[-1], bits=6)


def _centered(scales: np.ndarray, mins: np.ndarray, *, center: int) -> tuple[np.ndarray, np.ndarray]:
    """d·q + m written as d·(q − z) + (m + z·d) with z = `center` in every block where m + z·d is exact in
    float32 (else z = 0): the same values, but codes centred on their zero point, so int8-activation
    kernels multiply smaller integers (less activation-rounding error) — and, where every block takes
    the centre, a 4-bit tensor needs no stored zero points. Returns (zero points (N, nb), new minimums)."""
    wide = mins.astype(np.float64) + center * scales.astype(np.float64)
    ok = wide.astype(np.float32).astype(np.float64) == wide
    zp = np.where(ok, center, 0).astype(np.uint8)
    return zp, np.where(ok, wide, mins).astype(np.float32)


def _with_min(codes, scales, mins, *, bits: int, shape, gguf_type: str) -> "Carried":
    """A d·q + m format (q unsigned, 4 or 5 bits), centred where exact (_centered)."""
    center = 8 if bits == 4 else 16
    zp, mins = _centered(scales, mins, center=center)
    if bits == 4:
        q = _q4(codes, scales, zp=None if (zp == center).all() else zp, shape=shape)
    else:
        q = _q6(codes, scales, zp=zp, shape=shape)
    return Carried(q, mins, gguf_type)


def carry(raw: np.ndarray, gguf_type: str, *, shape: tuple[int, int]) -> Carried:
    """raw: (N, row bytes) uint8 of a `gguf_type` tensor of (N, K) values -> its exact Carried form."""
    n, k = shape
    per, size = BYTES[gguf_type]
    b = np.ascontiguousarray(raw).reshape(n, k // per, size)
    if gguf_type == "Q4_0":
        return Carried(_q4(_nibbles32(b[..., 2:]), _f16(b[..., :2]), zp=None, shape=shape), None, gguf_type)
    if gguf_type == "Q4_1":
        return _with_min(_nibbles32(b[..., 4:]), _f16(b[..., :2]), _f16(b[..., 2:4]), bits=4, shape=shape,
                         gguf_type=gguf_type)
    if gguf_type == "Q8_0":
        codes = (b[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return Carried(QTensor(codes, _f16(b[..., :2]), None, shape, 32, bits=8), None, gguf_type)
    if gguf_type == "Q5_0":
        codes = _nibbles32(b[..., 6:]) | (_high_bits32(b[..., 2:6]) << 4)
        codes = codes.astype(np.uint8) + np.uint8(112)               # q − 16 = (q + 112) − 128
        return Carried(QTensor(codes, _f16(b[..., :2]), None, shape, 32, bits=8), None, gguf_type)
    if gguf_type == "Q5_1":
        codes = _nibbles32(b[..., 8:]) | (_high_bits32(b[..., 4:8]) << 4)
        return _with_min(codes, _f16(b[..., :2]), _f16(b[..., 2:4]), bits=5, shape=shape, gguf_type=gguf_type)
    if gguf_type == "Q6_K":
        ql, qh, sc, d = b[..., :128], b[..., 128:192], b[..., 192:208].view(np.int8), _f16(b[..., 208:210])
        lo = np.stack([ql.reshape(n, -1, 2, 64) & 0x0F, ql.reshape(n, -1, 2, 64) >> 4], axis=3)   # (n, S, 2, 2, 64)
        hi = np.stack([(qh.reshape(n, -1, 2, 32) >> s) & 3 for s in (0, 2, 4, 6)], axis=3)       # (n, S, 2, 4, 32)
        codes = lo.reshape(n, -1, 16) | (hi.reshape(n, -1, 16) << 4)                              # (n, S·16, 16)
        scales = (d[..., None] * sc.astype(np.float32)).reshape(n, -1)                            # (n, S·16)
        codes = codes.astype(np.uint8) + np.uint8(96)           # q − 32 = (q + 96) − 128
        return Carried(QTensor(codes, scales.astype(np.float32), None, shape, 16, bits=8), None, gguf_type)
    if gguf_type in ("Q4_K", "Q5_K"):
        d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
        sc, mn = _k_scale_min(b[..., 4:16])                                                      # (n, S, 8)
        scales = (d[..., None] * sc.astype(np.float32)).reshape(n, -1)
        mins = (-(dmin[..., None] * mn.astype(np.float32))).reshape(n, -1)
        qs = b[..., -128:].reshape(n, -1, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 1, 2, 1)
        codes = (qs & 0x0F).reshape(n, -1, 32)                                                   # (n, S·8, 32)
        if gguf_type == "Q4_K":
            return _with_min(codes, scales, mins, bits=4, shape=shape, gguf_type=gguf_type)
        qh = b[..., 16:48].reshape(n, -1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)
        codes = codes | ((qh & 1).reshape(n, -1, 32) << 4)
        return _with_min(codes, scales, mins, bits=5, shape=shape, gguf_type=gguf_type)
    raise ValueError(f"GGUF type {gguf_type} is not carried exactly")


def take_rows(c: Carried, rows: np.ndarray) -> Carried:
    """The same tensor with its output rows reordered (blocks run along K, so this is exact)."""
    q = c.q
    zp = None if q.zero_points is None else q.zero_points[rows]
    q2 = QTensor(q.codes[rows], q.scales[rows], zp, q.shape, q.block_size, bits=q.bits)
    return Carried(q2, None if c.mins is None else c.mins[rows], c.gguf_type)


def scaled(c: Carried, s: float) -> Carried:
    """c · s (a folded residual scale): scales and mins times s, in float32."""
    q = c.q
    q2 = QTensor(q.codes, (q.scales * np.float32(s)).astype(np.float32), q.zero_points, q.shape, q.block_size,
                 bits=q.bits)
    return Carried(q2, None if c.mins is None else (c.mins * np.float32(s)).astype(np.float32), c.gguf_type)


def _explicit_zp(q: QTensor) -> np.ndarray:
    """Zero points as stored (packed for 4-bit, one per block for 6-bit), the implicit one made explicit."""
    if q.zero_points is not None:
        return q.zero_points
    n, nb = q.scales.shape
    if q.bits == 6:
        return np.full((n, nb), 32, np.uint8)
    return pack_zero_points(np.full((n, nb), 1 << (q.bits - 1), np.uint8), q.bits)


def concat(cs: list[Carried]) -> Carried:
    """Tensors stacked along N (a packed q|k|v or gate|up): same bits and block; zero points and min terms
    made explicit where only some have them (an implicit zero point 8, a zero min), so the sum stays exact."""
    if len(cs) == 1:
        return cs[0]
    q0 = cs[0].q
    if len({(c.q.bits, c.q.block_size) for c in cs}) != 1:
        raise ValueError("carried tensors packed together must share bits and block size")
    any_zp = any(c.q.zero_points is not None for c in cs)
    zp = np.concatenate([_explicit_zp(c.q) for c in cs]) if any_zp else None
    mins = None
    if any(c.mins is not None for c in cs):
        mins = np.concatenate([c.mins if c.mins is not None else np.zeros_like(c.q.scales) for c in cs])
    n = sum(c.q.shape[0] for c in cs)
    q = QTensor(np.concatenate([c.q.codes for c in cs]), np.concatenate([c.q.scales for c in cs]), zp,
                (n, q0.shape[1]), q0.block_size, bits=q0.bits)
    return Carried(q, mins, "+".join(dict.fromkeys(c.gguf_type for c in cs)))


def unpack_zero_points(q: QTensor) -> np.ndarray | None:
    """(N, nb) zero points of a carried tensor (None: implicit)."""
    if q.zero_points is None or q.bits in (6, 8):
        return q.zero_points
    return unpack_bits(q.zero_points, q.bits)[:, :q.scales.shape[1]]
