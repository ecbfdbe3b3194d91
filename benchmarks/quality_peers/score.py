"""Score edge-llm packages and llama.cpp GGUFs of one checkpoint on identical token windows against the
same fp32 reference logits (edge-llm's fp32 export).

    python benchmarks/quality_peers/score.py --reference WORK/pkg/fp32 --packages WORK/pkg \
        --ggufs WORK/gguf --llama-logits $WORK/llamacpp/build/bin/llama-logits \
        --text ../shared/fixtures/corpus-valid.txt --max-tokens 199680 --out benchmarks/results/quality-peers-fixture

Token ids come from the reference package's tokenizer by the fixture protocol (documents split on
U+001E, bos + doc + eos each; `--english-only` keeps the documents without a CJK character), cut into
fresh non-overlapping windows. Every candidate sees exactly those ids: edge-llm packages through
`session.logits_all`, GGUFs through `llama_logits.cpp` (ids on its stdin, logits of every position on its
stdout; llama.cpp's tokenizer is never used). Per position: KL(reference || candidate), top-1 agreement,
Δp of the target token, and the candidate's negative log-likelihood.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edge_llm.api import Model

CJK = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")


def corpus_ids(model: Model, path: Path, *, english_only: bool) -> tuple[list[int], int]:
    """The fixture protocol's token stream; also the number of documents kept."""
    docs = Path(path).read_text(encoding="utf-8").split("\x1e")
    if english_only:
        docs = [d for d in docs if not CJK.search(d)]
    tok, ids = model.tokenizer, []
    for doc in docs:
        ids += [tok.bos_id] + tok.encode(doc) + [tok.eos_ids[0]]
    return ids, len(docs)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """float32 (a 512 x 49,152 window in float64 took 4 s); sums in float64. KL's floor from this
    rounding is ~1e-7, far below every quantized row (the F32 GGUF row shows it)."""
    x = np.asarray(x, dtype=np.float32)
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True, dtype=np.float64)).astype(np.float32)


class EdgePackage:
    kind = "edge-llm"

    def __init__(self, path: Path, threads: int):
        self.path = Path(path)
        self.model = Model.load(self.path, threads=threads)
        man = self.model.manifest.data
        self.recipe = man["quantization"]
        self.params = man["model"]["parameters"]
        self.bytes = man["sizes"]["package_bytes"]
        self.weight_bytes = (self.path / "model.onnx.data").stat().st_size
        self.source_bytes = man["sizes"]["source_weights_bytes"]

    def logits(self, ids: np.ndarray) -> np.ndarray:
        return self.model.session.logits_all(ids)               # (T, V)

    def describe(self) -> dict:
        return {"package": str(self.path), "recipe": self.recipe}

    def close(self):
        pass


class LlamaGGUF:
    """A llama_logits.cpp child holding one GGUF; one window per request."""
    kind = "llama.cpp"

    def __init__(self, path: Path, tool: Path, threads: int, window: int, kv: str):
        from gguf import GGUFReader
        self.path = Path(path)
        self.bytes = self.path.stat().st_size
        reader = GGUFReader(str(self.path))
        self.weight_bytes = int(sum(int(t.n_bytes) for t in reader.tensors))
        self.params = int(sum(int(t.n_elements) for t in reader.tensors))
        self.types: dict[str, int] = {}
        for t in reader.tensors:
            self.types[t.tensor_type.name] = self.types.get(t.tensor_type.name, 0) + int(t.n_elements)
        self.tensor_types = {t.name: t.tensor_type.name for t in reader.tensors}
        del reader
        self.cmd = [str(tool), str(self.path), "--threads", str(threads), "--ctx", str(window), "--kv", kv]
        # passive OpenMP waits: ggml's spinning barriers crawl on a shared, oversubscribed machine
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     stderr=open(self.path.with_suffix(".log"), "w"))

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.proc.stdout.read(n - len(buf))
            if not chunk:
                raise RuntimeError(f"{self.path}: llama-logits ended early (see {self.path.with_suffix('.log')})")
            buf += chunk
        return bytes(buf)

    def logits(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype="<i4")
        self.proc.stdin.write(struct.pack("<i", len(ids)) + ids.tobytes())
        self.proc.stdin.flush()
        (n_vocab,) = struct.unpack("<i", self._read(4))
        return np.frombuffer(self._read(4 * n_vocab * len(ids)), dtype="<f4").reshape(len(ids), n_vocab)

    def describe(self) -> dict:
        return {"gguf": str(self.path), "tensor_types_by_elements": self.types, "tensor_types": self.tensor_types,
                "command": self.cmd}

    def close(self):
        try:
            self.proc.stdin.write(struct.pack("<i", 0))
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


class Tally:
    def __init__(self):
        self.nll, self.kl, self.agree, self.dp, self.seconds = [], [], [], [], 0.0

    def add(self, lp: np.ndarray, lq: np.ndarray | None, y: np.ndarray) -> None:
        rows = np.arange(len(y))
        self.nll.append(-lp[rows, y])
        if lq is not None:
            pq = np.exp(lq)
            self.kl.append((pq * (lq - lp)).sum(-1, dtype=np.float64))    # KL(reference || candidate)
            self.agree.append(lq.argmax(-1) == lp.argmax(-1))
            self.dp.append(np.exp(lp[rows, y]) - pq[rows, y])

    def result(self) -> dict:
        nll = np.concatenate(self.nll)
        nll = nll.astype(np.float64)
        r = {"tokens_scored": int(nll.size), "perplexity": float(math.exp(nll.mean())),
             "perplexity_stderr": float(math.exp(nll.mean()) * nll.std() / math.sqrt(nll.size)),
             "seconds": self.seconds}
        if self.kl:
            kl, dp = np.concatenate(self.kl), np.concatenate(self.dp)
            r |= {"kl_divergence": float(kl.mean()), "kl_divergence_p99": float(np.percentile(kl, 99)),
                  "kl_divergence_median": float(np.median(kl)),
                  "top1_agreement": float(np.concatenate(self.agree).mean()),
                  "delta_p": {"mean": float(dp.mean()), **{f"p{q}": float(np.percentile(dp, q)) for q in (1, 5, 50, 95, 99)}}}
        return r


def gguf_label(path: Path) -> str:
    return path.stem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="edge-llm fp32 package (the reference logits)")
    ap.add_argument("--packages", type=Path, nargs="*", default=[],
                    help="edge-llm packages, or folders of them (every subfolder with a manifest.json)")
    ap.add_argument("--ggufs", type=Path, nargs="*", default=[], help="GGUF files, or folders of them")
    ap.add_argument("--llama-logits", type=Path, help="the llama_logits.cpp binary (needed with --ggufs)")
    ap.add_argument("--text", type=Path, required=True)
    ap.add_argument("--english-only", action="store_true", help="keep only documents without a CJK character")
    ap.add_argument("--max-tokens", type=int, default=60_000)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads per package")
    ap.add_argument("--llama-threads", type=int, default=1, help="threads per llama_logits child")
    ap.add_argument("--kv", choices=("f32", "f16"), default="f32", help="llama.cpp KV cache type (edge-llm's is fp32)")
    ap.add_argument("--model-name", default=None)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json (the markdown comes from report.py)")
    args = ap.parse_args()

    ref = EdgePackage(args.reference, args.threads)
    cands: dict[str, object] = {}
    for p in args.packages:
        for d in ([p] if (p / "manifest.json").is_file() else sorted(x for x in p.iterdir() if (x / "manifest.json").is_file())):
            if d.resolve() != args.reference.resolve():
                cands[d.name] = EdgePackage(d, args.threads)
    for p in args.ggufs:
        for f in ([p] if p.is_file() else sorted(p.glob("*.gguf"))):
            cands[f"llama.cpp {gguf_label(f)}"] = LlamaGGUF(f, args.llama_logits, args.llama_threads, args.window, args.kv)

    ids, n_docs = corpus_ids(ref.model, args.text, english_only=args.english_only)
    n_keep = (min(args.max_tokens, len(ids) - 1) // args.window) * args.window
    arr = np.asarray(ids, dtype=np.int64)
    n_windows = n_keep // args.window
    print(f"{n_windows} windows of {args.window} from {args.text} ({n_docs} documents, {len(ids):,} tokens); "
          f"{len(cands)} candidates", file=sys.stderr, flush=True)
    tallies = {"fp32 (reference)": Tally()} | {k: Tally() for k in cands}
    t_start = time.perf_counter()
    for w in range(n_windows):
        x, y = arr[w * args.window:(w + 1) * args.window], arr[w * args.window + 1:(w + 1) * args.window + 1]
        t0 = time.perf_counter()
        lq = log_softmax(ref.logits(x))
        tallies["fp32 (reference)"].seconds += time.perf_counter() - t0
        tallies["fp32 (reference)"].add(lq, None, y)
        for name, c in cands.items():
            t0 = time.perf_counter()
            lp = log_softmax(c.logits(x))
            tallies[name].seconds += time.perf_counter() - t0
            tallies[name].add(lp, lq, y)
        el = time.perf_counter() - t_start
        print(f"window {w + 1}/{n_windows}  {el:.0f}s  ETA {el / (w + 1) * (n_windows - w - 1):.0f}s",
              file=sys.stderr, flush=True)
    for c in cands.values():
        c.close()

    ref_ppl = tallies["fp32 (reference)"].result()["perplexity"]
    rows = []
    for name, t in tallies.items():
        c = ref if name == "fp32 (reference)" else cands[name]
        r = {"name": name, "kind": c.kind, "bytes": c.bytes, "weight_bytes": c.weight_bytes,
             "parameters": c.params, "bits_per_weight": 8 * c.weight_bytes / ref.params,
             "fraction_of_bf16": c.bytes / ref.source_bytes, **t.result(), **c.describe()}
        r["perplexity_change"] = r["perplexity"] / ref_ppl - 1
        rows.append(r)
    out = {"schema": "edge-llm-quality-peers", "schema_version": 1,
           "model": args.model_name or ref.model.manifest.data["source"]["name"],
           "source_bytes": ref.source_bytes, "parameters": ref.params,
           "text": str(args.text), "english_only": args.english_only, "documents": n_docs,
           "tokens_in_text": len(ids), "tokens_scored": n_keep, "window": args.window, "threads": args.threads,
           "llama_threads": args.llama_threads,
           "llama_kv_cache": args.kv, "command": sys.argv, "rows": rows,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
