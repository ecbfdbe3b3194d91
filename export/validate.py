"""Export validation: each check raises its own named error, so a failure says what went wrong."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_llm.errors import ExportError


class IOMismatchError(ExportError):
    """The graph's inputs/outputs are not the ones the manifest promises."""


class LogitsMismatchError(ExportError):
    """The exported graph disagrees with the numpy reference forward."""


def check_io(session, manifest) -> None:
    io, n = manifest.io, manifest.kv.num_layers
    want_in = {io.input_ids, io.attention_mask, io.logits_to_keep}
    want_in |= {name for k in ("past_key", "past_value") for name in io.per_layer(k, n)}
    want_out = {io.logits} | {name for k in ("present_key", "present_value") for name in io.per_layer(k, n)}
    got_in = {i.name for i in session.sess.get_inputs() + session.sess.get_overridable_initializers()}
    got_out = {o.name for o in session.sess.get_outputs()}
    if got_in != want_in or got_out != want_out:
        raise IOMismatchError(f"graph I/O differs from the manifest: inputs {sorted(got_in ^ want_in)}, "
                              f"outputs {sorted(got_out ^ want_out)}")


def check_logits(session, cfg, get, *, ids, precision: str, kv_dtype: str = "float32") -> dict:
    from .reference import forward
    ref = forward(cfg, get, ids)
    got = session.logits_all(ids)
    if got.shape != ref.shape:
        raise LogitsMismatchError(f"logits shape {got.shape}, reference {ref.shape}")
    diff = float(np.abs(got - ref).max())
    top1 = float((got.argmax(-1) == ref.argmax(-1)).mean())
    # float32 weights and cache must match within 1e-3; a float16 cache rounds keys/values to 11 bits
    tol = 1e-3 if kv_dtype == "float32" else 1e-2 * max(1.0, float(np.abs(ref).max()))
    if precision == "fp32" and diff > tol:
        raise LogitsMismatchError(f"fp32 logits differ from the numpy reference by {diff:.2e} (> {tol:.0e}, "
                                  f"{kv_dtype} cache)")
    return {"max_abs_diff": diff, "top1_agreement": top1}


PROBE_TEXT = ("The quick brown fox jumps over the lazy dog. 床前明月光，疑是地上霜。 def f(x): return 2 * x + 1\n"
              "In the beginning God created the heaven and the earth.")


PROBE_TOKENS = 16


def probe_ids(manifest, n: int = PROBE_TOKENS) -> np.ndarray:
    """Ordinary text as the model's tokenizer encodes it (special or untrained ids would make a poor probe)."""
    from edge_llm.tokenizer import Tokenizer
    ids = Tokenizer.from_manifest(manifest).encode(PROBE_TEXT, bos=True)[:n]
    return np.asarray(ids, np.int64)


def validate_package(folder: Path, *, ckpt, cfg, max_params_for_numeric: int = 200_000_000) -> dict:
    """I/O names always; logits against the numpy reference when the model is small enough to run it."""
    from edge_llm.session import ModelSession

    session = ModelSession(folder, threads=None)
    check_io(session, session.manifest)
    result = {"io": "ok"}
    if session.manifest.model.parameters <= max_params_for_numeric:
        ids = probe_ids(session.manifest)
        precision = session.manifest.quantization["precision"]
        # int4 is compared with the original weights too: the figure is quantization plus kernel error,
        # reported (top-1 agreement), not enforced; fp32 must match within 1e-3.
        result |= check_logits(session, cfg, ckpt.load, ids=ids, precision=precision,
                               kv_dtype=session.manifest.kv.dtype)
    return result

