"""What every script of the peer harness shares: the prompt all runtimes get, medians, JSON output and
the command-line options of a measurement. The scripts are run as files (`python
benchmarks/peers/X.py`), so this folder is on their import path without any sys.path edits.

Standard library and numpy only: the llama.cpp venv imports it too. Memory and bandwidth probes come
from `edge_llm.metering.probes` (setup_llamacpp.sh installs edge-llm into that venv, without its
dependencies, for exactly that).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
from pathlib import Path
from typing import Sequence

import numpy as np

BOS_ID = 1
RANDOM_ID_RANGE = (3, 8192)   # peers.md: ids below the converter-padded / tokenizer-covered range


def make_prompt(prompt_len: int, seed: int) -> list[int]:
    """BOS + `prompt_len - 1` random ids in RANDOM_ID_RANGE: byte-identical for every runtime."""
    rng = np.random.default_rng(seed)
    lo, hi = RANDOM_ID_RANGE
    return [BOS_ID] + [int(t) for t in rng.integers(lo, hi, size=prompt_len - 1)]


def prompt_digest(ids: Sequence[int]) -> str:
    return hashlib.sha256(np.asarray(ids, np.int64).tobytes()).hexdigest()[:16]


def median(xs) -> float | None:
    """Median of the values that are not None; None when there are none."""
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def write_json(obj: dict, path: Path | None) -> None:
    """To `path` (folders created), or to stdout when there is none."""
    text = json.dumps(obj, indent=2, default=str)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    else:
        print(text)


def rep_record(*, rep: int, warmup: int, prompt_len: int, gen_len: int, t_start: float, t_prefill: float,
               t_first: float, t_end: float, first_tokens: Sequence[int]) -> dict:
    """One repetition's figures from its four clock readings (the same definitions for every runtime):
    prefill = start..prefill done; TTFT = start..first token; decode = the other gen_len - 1 tokens."""
    prefill_s, decode_s = t_prefill - t_start, t_end - t_first
    return {"rep": rep - warmup, "warmup": rep < warmup,
            "prefill_s": prefill_s, "prefill_tok_s": prompt_len / prefill_s,
            "ttft_s": t_first - t_start,
            "decode_s": decode_s, "decode_tok_s": (gen_len - 1) / decode_s,
            "decode_ms_per_tok": 1e3 * decode_s / (gen_len - 1),
            "total_s": t_end - t_start,
            "first_tokens": [int(t) for t in list(first_tokens)[:8]]}


def add_run_options(ap: argparse.ArgumentParser, *, json_help: str = "write the result JSON here") -> None:
    """The measurement options every child (and the harness, which passes them on) takes."""
    ap.add_argument("--json", type=Path, default=None, help=json_help)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen-len", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)


def check_run_options(ap: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.threads < 1 or a.prompt_len < 1 or a.gen_len < 2 or a.reps < 1 or a.warmup < 0:
        ap.error("need threads >= 1, prompt-len >= 1, gen-len >= 2, reps >= 1, warmup >= 0")


def run_options_argv(a: argparse.Namespace, *, sizes: bool = True) -> list[str]:
    """The options above as command-line words, to pass on to a child."""
    out = ["--threads", str(a.threads), "--seed", str(a.seed)]
    if sizes:
        out += ["--prompt-len", str(a.prompt_len), "--gen-len", str(a.gen_len), "--reps", str(a.reps),
                "--warmup", str(a.warmup)]
    return out
