"""Perplexity and agreement with a reference package, the way llama.cpp's perplexity tool reports them.

Protocol (shared/fixtures/README.md): documents split on U+001E, tokens = concat(<s> + doc + </s>),
the first floor(min(max_tokens, n-1)/W)*W tokens scored in non-overlapping windows of W=512 that
start fresh, every position predicting the next token.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .api import Model
from .errors import EdgeLLMError

SCHEMA_VERSION = 1


def corpus_tokens(model: Model, path: Path) -> list[int]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeLLMError(f"{path}: cannot read text ({e})") from e
    tok = model.tokenizer
    docs = text.split("\x1e") if "\x1e" in text else [text]
    ids: list[int] = []
    for doc in docs:
        ids += [tok.bos_id] + tok.encode(doc) + [tok.eos_ids[0]]
    return ids


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


# ~1.5 min with a reference on 2 cores (tiny fixture, ~700 tok/s); the fixture protocol says 200_000
DEFAULT_MAX_TOKENS = 60_000


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C during evaluate(): `.result` holds the figures of the windows completed ("partial": true)."""

    def __init__(self, result: dict):
        super().__init__()
        self.result = result


def evaluate(model: Model, text: Path, *, reference: Model | None = None, window: int = 512,
             max_tokens: int = DEFAULT_MAX_TOKENS, progress: Callable[[int, int], None] | None = None,
             ids: list[int] | None = None) -> dict:
    """Perplexity (and agreement with `reference`) over the first windows of `text`.

    progress(done, total) is called after each window. Ctrl-C raises EvalInterrupted carrying the
    result of the windows already scored (a plain KeyboardInterrupt if none was)."""
    ids = corpus_tokens(model, text) if ids is None else ids
    if window < 2:
        raise EdgeLLMError(f"window {window}: needs at least 2 tokens")
    if window > model.context_length:
        raise EdgeLLMError(f"window {window} exceeds the model's context of {model.context_length} tokens")
    n_keep = (min(max_tokens, len(ids) - 1) // window) * window
    if n_keep == 0:
        if max_tokens < window <= len(ids) - 1:
            raise EdgeLLMError(f"max_tokens {max_tokens} (--max-tokens) is less than one window of {window} tokens")
        raise EdgeLLMError(f"{text}: {len(ids)} tokens is shorter than one window of {window}")
    if reference is not None and reference.manifest.model.vocab_size != model.manifest.model.vocab_size:
        raise EdgeLLMError("the reference package has a different vocabulary")
    if reference is not None and window > reference.context_length:
        raise EdgeLLMError(f"window {window} exceeds the reference model's context of "
                           f"{reference.context_length} tokens")
    arr = np.asarray(ids, dtype=np.int64)
    nll, kl, agree, dp = [], [], [], []
    t0 = time.perf_counter()
    n_windows = n_keep // window
    try:
        for w in range(n_windows):
            s = w * window
            x, y = arr[s:s + window], arr[s + 1:s + window + 1]
            lp = _log_softmax(model.session.logits_all(x))
            rows = np.arange(window)
            if reference is not None:
                lq = _log_softmax(reference.session.logits_all(x))
                kl.append((np.exp(lq) * (lq - lp)).sum(-1))                  # KL(reference || model)
                agree.append(lq.argmax(-1) == lp.argmax(-1))
                dp.append(np.exp(lp[rows, y]) - np.exp(lq[rows, y]))
            nll.append(-lp[rows, y])                # last: a window counts only when all its figures exist
            if progress:
                progress(w + 1, n_windows)
    except KeyboardInterrupt:
        if not nll:
            raise
        partial = _result(model, reference, text, window, nll, kl, agree, dp, time.perf_counter() - t0)
        partial |= {"partial": True, "windows_planned": n_windows}
        raise EvalInterrupted(partial) from None
    return _result(model, reference, text, window, nll, kl, agree, dp, time.perf_counter() - t0)


def _result(model, reference, text, window, nll, kl, agree, dp, seconds) -> dict:
    n_keep = len(nll) * window
    kl, agree, dp = kl[:len(nll)], agree[:len(nll)], dp[:len(nll)]
    nll_all = np.concatenate(nll)
    result = {
        "schema": "edge-llm-eval", "schema_version": SCHEMA_VERSION,
        "package": str(model.manifest.path), "text": str(text), "tokens_scored": int(n_keep), "window": window,
        "perplexity": float(math.exp(nll_all.mean())),
        "perplexity_stderr": float(math.exp(nll_all.mean()) * nll_all.std() / math.sqrt(len(nll_all))),
        "seconds": seconds, "partial": False,
        "quantization": {k: model.manifest.quantization.get(k) for k in
                         ("precision", "block_size", "head_block_size", "symmetric", "accuracy_level",
                          "clip_search", "method", "head_method")},
        "package_bytes": model.manifest.data.get("sizes", {}).get("package_bytes"),
        "source_bytes": model.manifest.data.get("sizes", {}).get("source_weights_bytes"),
    }
    if reference is not None:
        kl_all, dp_all = np.concatenate(kl), np.concatenate(dp)
        result |= {
            "reference": str(reference.manifest.path),
            "kl_divergence": float(kl_all.mean()),
            "kl_divergence_p99": float(np.percentile(kl_all, 99)),
            "top1_agreement": float(np.concatenate(agree).mean()),
            "delta_p": {"mean": float(dp_all.mean()),
                        **{f"p{q}": float(np.percentile(dp_all, q)) for q in (1, 5, 10, 25, 50, 75, 90, 95, 99)}},
        }
    return result


def markdown_row(r: dict, *, header: bool = False) -> str:
    size = r.get("package_bytes")
    src = r.get("source_bytes")
    frac = f"{size / src:.1%}" if size and src else "n/a"
    q = r["quantization"]
    recipe = "fp32" if q["precision"] == "fp32" else (
        f"int4 b{q['block_size']} {'sym' if q['symmetric'] else 'asym'}"
        f"{' clip' if q.get('clip_search') else ''}{' gptq' if q.get('method') == 'gptq' else ''}"
        f"{' head-gptq' if q.get('head_method') == 'gptq' else ''}"
        f"{' acc' + str(q.get('accuracy_level')) if q.get('accuracy_level') != 4 else ''}")
    kl = f"{r['kl_divergence']:.4f}" if "kl_divergence" in r else "—"
    top1 = f"{r['top1_agreement']:.1%}" if "top1_agreement" in r else "—"
    row = f"| {recipe} | {frac} | {r['perplexity']:.3f} | {top1} | {kl} | {r['tokens_scored']} |"
    if header:
        return ("| recipe | size vs bf16 | perplexity | top-1 agree | KL | tokens |\n"
                "|---|---|---|---|---|---|\n" + row)
    return row
