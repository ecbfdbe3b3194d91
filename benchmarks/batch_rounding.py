"""What does batched decoding change in a reply? (docs/serve.md, "Batched decoding")

    python benchmarks/batch_rounding.py [PACKAGE] [--tokens 48] [--markdown OUT.md]

Chat prompts (serve_load.py's eight) are decoded greedily (1) each alone and (2) all together, one forward
per step with a row per prompt (Model.stream_batch): how many replies are identical, and where the others
first differ. Then, teacher-forced (every row fed its lone run's tokens, so contexts stay equal), the
largest |logit difference| between a batched row and the lone forward, and how often their top-1 agrees (replies run past their end of turn).
On float32-activation packages both are exact to float32 rounding; on int8-activation ones onnxruntime's
k-row and 1-row int4 kernels round differently. Not a timing benchmark: any machine, any load.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge_llm.api import Model
from edge_llm.sampling import SamplingParams
from edge_llm.slots import SlotPool
from edge_llm.speculative import rows_exact

from serve_load import PROMPTS       # (benchmarks/, this script's folder, is on the path)

sys.path.insert(0, str(Path(__file__).resolve().parent / "quality_peers"))
from portable import portable  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", nargs="?", default=None)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    model = Model.load(args.package, threads=args.threads, speculate="off")
    s, n = model.session, args.tokens
    params = SamplingParams()
    prompts = [model.chat_ids([{"role": "user", "content": p}]) for p in PROMPTS]
    stop = {}        # no stop: every reply runs its `--tokens` (past its end of turn)
    lone = [[r.token_id for r in model.stream(p, params=params, max_new_tokens=n, ignore_eos=True, **stop)]
            for p in prompts]
    batched = [[] for _ in prompts]
    for i, rec in model.stream_batch(prompts, params=params, max_new_tokens=n, slots=len(prompts),
                                     ignore_eos=True, **stop):
        batched[i].append(rec.token_id)
    firsts = [next((k for k, (a, b) in enumerate(zip(x, y)) if a != b), None) for x, y in zip(lone, batched)]

    # teacher-forced: the same tokens into both, per-step logits compared
    length = max(len(p) + len(t) for p, t in zip(prompts, lone)) + 1
    pool = SlotPool(s, len(prompts), length)
    caches = [s.new_cache(length) for _ in prompts]
    worst, agree, steps = 0.0, 0, 0
    for j, p in enumerate(prompts):
        pool.acquire(len(p) + n)
        pool.prefill(j, p)
        s.forward(p, caches[j])
    for k in range(min(len(t) for t in lone) - 1):
        tokens = [t[k] for t in lone]
        rows = pool.decode(range(len(prompts)), tokens)
        for j, t in enumerate(tokens):
            ref = s.forward([t], caches[j])
            worst = max(worst, float(np.abs(rows[j] - ref).max()))
            agree += int(rows[j].argmax() == ref.argmax())
            steps += 1
    q = model.manifest.quantization
    lines = ["# Batched decoding vs lone runs", "",
             f"`python benchmarks/batch_rounding.py {portable(' '.join(sys.argv[1:]))}` · package {model.manifest.path.name} "
             f"(accuracy_level {q.get('accuracy_level', '-')}, scale dtype {q.get('scale_dtype', '-')}, "
             f"precision {q.get('precision', '-')}; rows exact: {rows_exact(model.manifest)})", "",
             f"- greedy replies of {n} tokens, {len(prompts)} chat prompts decoded together: "
             f"{sum(f is None for f in firsts)} of {len(prompts)} identical to the lone run"
             + ("" if all(f is None for f in firsts) else
                f"; the others first differ at token {', '.join(str(f) for f in firsts if f is not None)}"),
             f"- teacher-forced, {steps} rows: largest |logit difference| {worst:.3g}, top-1 agrees in "
             f"{agree} of {steps}", ""]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
