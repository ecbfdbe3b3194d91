"""GPTQ (Frantar et al., 2022) in numpy, emitting MatMulNBits blocks.

Columns (input features) are quantized left to right; each column's rounding error is spread over
the not-yet-quantized columns through the inverse Hessian H = XᵀX of the layer's calibration inputs,
so the layer's *output* error is minimised rather than each weight's. Groups are the MatMulNBits
blocks (static, no act-order, no g_idx: that keeps every kernel on onnxruntime's fast path). Each
block's scale/zero point is chosen, when the block is reached, from the error-updated weights, with
the same clip search as the plain quantizer.
"""
from __future__ import annotations

import numpy as np

from .quant import QTensor, _asymmetric_params, _search_clip, _symmetric_params, pack_nibbles


def gptq_quantize(w: np.ndarray, hessian: np.ndarray, *, block_size: int, symmetric: bool,
                  clip_search: bool = True, damp: float = 0.01) -> QTensor:
    n, k = w.shape
    nb = -(-k // block_size)
    W = np.zeros((n, nb * block_size), np.float32)
    W[:, :k] = w
    H = np.zeros((nb * block_size,) * 2, np.float64)
    H[:k, :k] = hessian
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * np.mean(np.diag(H)) * np.eye(len(H))
    # upper Cholesky factor of H^-1, as in the reference implementation
    hinv = np.linalg.cholesky(np.linalg.inv(H)).T.astype(np.float32)
    params = _symmetric_params if symmetric else _asymmetric_params
    codes = np.empty((n, nb, block_size), np.uint8)
    scales = np.empty((n, nb), np.float32)
    zps = None if symmetric else np.empty((n, nb), np.uint8)
    for b in range(nb):
        g0, g1 = b * block_size, (b + 1) * block_size
        blk = W[:, g0:g1]                                           # view: updated in place
        clip = _search_clip(blk[:, None, :], params)[:, 0] if clip_search else 1.0
        scale, zp = params(blk[:, None, :], clip if np.ndim(clip) == 0 else clip[:, None])
        scale, zp = scale[:, 0], None if zp is None else zp[:, 0]
        inv = np.where(scale == 0, 0.0, 1.0 / np.where(scale == 0, 1.0, scale)).astype(np.float32)
        z = np.float32(8.0) if zp is None else zp.astype(np.float32)
        err_blk = np.empty((n, block_size), np.float32)
        for i in range(block_size):
            col = blk[:, i]
            q = np.clip(np.round(col * inv + z), 0, 15)
            codes[:, b, i] = q
            err = (col - (q - z) * scale) / hinv[g0 + i, g0 + i]
            blk[:, i:] -= np.outer(err, hinv[g0 + i, g0 + i:g1])
            err_blk[:, i] = err
        W[:, g1:] -= err_blk @ hinv[g0:g1, g1:]
        scales[:, b] = scale
        if zps is not None:
            zps[:, b] = zp
    packed_zp = None
    if zps is not None:
        packed_zp = pack_nibbles(np.pad(zps, ((0, 0), (0, nb % 2))))
    return QTensor(pack_nibbles(codes), scales, packed_zp, (n, k), block_size)
