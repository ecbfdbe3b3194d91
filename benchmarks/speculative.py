"""Speculative decoding benchmark: plain vs speculative greedy decoding, interleaved, on real prompts.

    python benchmarks/speculative.py --package SMOLLM2_INT4 [--rounds 2] [--max-new-tokens 128]
        [--cost-package MINICPM_2B_SHAPE_INT4 ...] [--draft DRAFT_PKG] [--sets summarise,quote,...]
        --json benchmarks/results/speculative-smollm2.json --markdown benchmarks/results/speculative-smollm2.md

Measured, per prompt (benchmarks/speculative_prompts.py) and round, in one process with plain and
speculative runs alternating (order flipped every round): the greedy reply of each mode, whether
the two are identical, decode tokens/s (the generator's own timing: decode tokens over the model
steps' seconds, prefill excluded), draft tokens checked and accepted, tokens per target forward.

Modelled, for larger targets (`--cost-package`, synthetic weights: speed only): the seconds of one
forward of r rows at the benchmark's context depth, relative to one row, measured on that package;
then n-gram lookup replayed on each prompt's plain greedy reply from the real model (a lookup draft
is accepted up to its first token that differs from that reply) with the same draft policy fed
those costs: tokens per forward and the decode speedup that cost curve gives. The acceptance is the
real model's; the cost is the other package's; nothing else is carried over.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import runpy
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edge_llm.api import Model
from edge_llm.records import reply_record
from edge_llm.session import ModelSession
from edge_llm.speculative import DraftPolicy, LookupDrafter, Speculation, Speculator

_PROMPTS = runpy.run_path(str(Path(__file__).with_name("speculative_prompts.py")))
SETS, GROUNDED, UNGROUNDED = _PROMPTS["SETS"], _PROMPTS["GROUNDED"], _PROMPTS["UNGROUNDED"]

ROWS = tuple(range(1, 12))


# ------------------------------------------------------------------------------------------ measured
def one_reply(model: Model, prompt: str, speculator, max_new: int) -> dict:
    model.speculator = speculator
    recs = list(model.chat([{"role": "user", "content": prompt}], params=model.sampling(temperature=0),
                           max_new_tokens=max_new))
    r = reply_record(recs)
    decode = recs[1:]
    return {"text": "".join(x.text for x in recs), "ids": [x.token_id for x in recs],
            "decode_tokens": len(decode), "decode_s": sum(x.seconds for x in decode),
            "drafted": r.draft_tokens, "accepted": r.accepted_tokens,
            "forwards": sum(x.forwards for x in decode),
            "rounds": [[x.drafted, x.accepted] for x in decode if x.forwards]}


def run_prompts(model: Model, speculator, sets: list[str], *, rounds: int, max_new: int) -> list[dict]:
    rows = []
    for set_name in sets:
        for i, prompt in enumerate(SETS[set_name]):
            runs = {"plain": [], "spec": []}
            for rnd in range(rounds):
                order = ("plain", "spec") if (rnd + i) % 2 == 0 else ("spec", "plain")
                for mode in order:
                    runs[mode].append(one_reply(model, prompt, speculator if mode == "spec" else None, max_new))
            ids = model.chat_ids([{"role": "user", "content": prompt}])
            row = {"set": set_name, "i": i, "prompt_tokens": len(ids), "prompt_ids": ids, **_summary(runs)}
            rows.append(row)
            print(f"{set_name:10s} {i:2d} identical={row['identical']} plain {row['plain_tps']:.1f} "
                  f"spec {row['spec_tps']:.1f} tok/s ({row['ratio']:.2f}x) accept {row['acceptance']} "
                  f"tok/fwd {row['tokens_per_forward']:.2f}", file=sys.stderr, flush=True)
    return rows


def _tps(run: dict) -> float:
    return run["decode_tokens"] / run["decode_s"] if run["decode_s"] > 0 else float("nan")


def _summary(runs: dict) -> dict:
    plain, spec = runs["plain"], runs["spec"]
    identical = all(s["text"] == plain[0]["text"] for s in spec) and all(p["text"] == plain[0]["text"] for p in plain)
    drafted = sum(s["drafted"] for s in spec)
    first_diff = None
    if not identical:
        a, b = plain[0]["ids"], spec[0]["ids"]
        first_diff = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    pt, st = statistics.median(_tps(r) for r in plain), statistics.median(_tps(r) for r in spec)
    return {"identical": identical, "first_difference": first_diff,
            "plain_tps": pt, "spec_tps": st, "ratio": st / pt,
            "plain_tokens": plain[0]["decode_tokens"], "spec_tokens": spec[0]["decode_tokens"],
            "plain_s": [r["decode_s"] for r in plain], "spec_s": [r["decode_s"] for r in spec],
            "plain_n": [r["decode_tokens"] for r in plain], "spec_n": [r["decode_tokens"] for r in spec],
            "acceptance": round(sum(s["accepted"] for s in spec) / drafted, 3) if drafted else None,
            "tokens_per_forward": sum(s["decode_tokens"] for s in spec) / max(1, sum(s["forwards"] for s in spec)),
            "spec_rounds": spec[0]["rounds"], "plain_ids": plain[0]["ids"], "spec_ids": spec[0]["ids"],
            "plain_text": plain[0]["text"], "spec_text": spec[0]["text"]}


# ------------------------------------------------------------------------------------------ modelled
def forward_costs(session: ModelSession, *, depth: int = 256, reps: int = 5, rows=ROWS) -> dict[int, float]:
    """Median seconds of one forward of r rows after `depth` cached positions, reps interleaved."""
    cache = session.new_cache(depth + max(rows) + 1)
    session.forward(np.arange(depth, dtype=np.int64) % 1000 + 100, cache)
    times: dict[int, list[float]] = {r: [] for r in rows}
    for rep in range(reps + 1):                    # the first pass warms every shape up, not counted
        for r in (rows if rep % 2 == 0 else tuple(reversed(rows))):
            cache.truncate(depth)
            ids = np.full(r, 1234, np.int64)
            t = time.perf_counter()
            session.forward(ids, cache) if r == 1 else session.forward_all(ids, cache)
            if rep:
                times[r].append(time.perf_counter() - t)
    return {r: statistics.median(v) for r, v in times.items()}


def _cost(costs: dict[int, float], rows: int) -> float:
    if rows in costs:
        return costs[rows]
    hi = max(costs)
    return costs[hi] + (rows - hi) * (costs[hi] - costs[hi - 1])


def simulate_lookup(prompt_ids: list[int], out_ids: list[int], costs: dict[int, float], *,
                    max_draft: int = Speculation().max_draft) -> dict:
    """Replay lookup decoding of `out_ids` (the plain greedy reply) with the draft policy fed `costs`."""
    policy, drafter = DraftPolicy(max_draft=max_draft), LookupDrafter()
    policy.forward(1, costs[1])
    ctx, i, seconds, forwards, drafted, accepted = list(prompt_ids) + out_ids[:1], 1, 0.0, 0, 0, 0
    while i < len(out_ids):
        draft = drafter.propose(ctx, policy, len(out_ids) - i)
        d = len(draft.tokens)
        truth = out_ids[i:i + d]
        a = next((k for k, (x, y) in enumerate(zip(draft.tokens, truth)) if x != y), min(d, len(truth)))
        t = _cost(costs, d + 1)
        policy.forward(d + 1, t)
        if d:
            policy.accepted(draft.key, d, a)
        n = min(a + 1, len(out_ids) - i)
        ctx += out_ids[i:i + n]
        i += n
        seconds, forwards, drafted, accepted = seconds + t, forwards + 1, drafted + d, accepted + a
    tokens = len(out_ids) - 1
    return {"tokens": tokens, "forwards": forwards, "drafted": drafted, "accepted": accepted,
            "speedup": tokens * costs[1] / seconds if seconds else 1.0}


def modelled(rows: list[dict], costs: dict[int, float]) -> dict:
    out = {}
    groups = {name: [name] for name in dict.fromkeys(r["set"] for r in rows)}
    groups["grounded (pooled)"] = [n for n in GROUNDED if n in groups]
    for set_name, members in groups.items():
        sims = [simulate_lookup(r["prompt_ids"], r["plain_ids"], costs) for r in rows if r["set"] in members]
        if not sims:
            continue
        tokens, fwd = sum(s["tokens"] for s in sims), sum(s["forwards"] for s in sims)
        out[set_name] = {"speedup_median": statistics.median(s["speedup"] for s in sims),
                         "speedup_total": tokens / sum(s["tokens"] / s["speedup"] for s in sims),
                         "tokens_per_forward": tokens / max(fwd, 1),
                         "acceptance": sum(s["accepted"] for s in sims) / max(1, sum(s["drafted"] for s in sims))}
    return out


def draft_model_table(costs: dict[int, float], draft_step: float, *, alphas=(0.5, 0.6, 0.7, 0.8, 0.9),
                      max_draft: int = 10) -> dict:
    """Best decode speedup of draft-model speculation at per-token acceptance alpha: expected tokens
    (1 + a + ... + a^d) over the time of d draft steps and one target forward of d + 1 rows, in units
    of one plain target step; the best d for each alpha."""
    out = {}
    for alpha in alphas:
        best = (1.0, 0)
        for d in range(1, max_draft + 1):
            tokens = (1 - alpha ** (d + 1)) / (1 - alpha)
            speed = tokens * costs[1] / (_cost(costs, d + 1) + d * draft_step)
            best = max(best, (speed, d))
        out[str(alpha)] = {"speedup": best[0], "draft_tokens": best[1]}
    return out


# ------------------------------------------------------------------------------------------- report
def set_table(rows: list[dict]) -> dict:
    out = {}
    for set_name in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["set"] == set_name]
        pn = sum(sum(r["plain_n"]) for r in rs)
        sn = sum(sum(r["spec_n"]) for r in rs)
        p_tps = pn / sum(sum(r["plain_s"]) for r in rs)
        s_tps = sn / sum(sum(r["spec_s"]) for r in rs)
        acc = [r["acceptance"] for r in rs if r["acceptance"] is not None]
        out[set_name] = {"prompts": len(rs), "identical": sum(r["identical"] for r in rs),
                         "plain_tps": p_tps, "spec_tps": s_tps, "ratio_total": s_tps / p_tps,
                         "ratio_median": statistics.median(r["ratio"] for r in rs),
                         "acceptance_median": statistics.median(acc) if acc else None,
                         "tokens_per_forward": statistics.median(r["tokens_per_forward"] for r in rs)}
    return out


def pooled(rows: list[dict], names) -> dict:
    """Speedup over several sets: all their decode tokens over all their decode seconds, each mode."""
    rs = [r for r in rows if r["set"] in names]
    if not rs:
        return {}
    def tps(mode):
        return sum(sum(r[f"{mode}_n"]) for r in rs) / sum(sum(r[f"{mode}_s"]) for r in rs)
    return {"sets": list(dict.fromkeys(r["set"] for r in rs)), "prompts": len(rs),
            "identical": sum(r["identical"] for r in rs), "speedup_total": tps("spec") / tps("plain"),
            "speedup_median_prompt": statistics.median(r["ratio"] for r in rs),
            "speedup_worst_prompt": min(r["ratio"] for r in rs)}


def markdown(res: dict) -> str:
    L = [f"# Speculative decoding: {res['package']}", "",
         f"`{res['command']}`", "",
         *([f"Tables recomputed from that run's stored measurements by `{res['recomputed_by']}`.", ""]
           if res.get("recomputed_by") else []),
         f"Machine: {res['machine']}; load average {res['load_before']} before, {res['load_after']} after "
         f"(shared with other jobs: compare only within this run). Greedy, {res['max_new_tokens']} new tokens at most, "
         f"{res['rounds']} interleaved round(s) per prompt per mode, medians per prompt.", "",
         *([res["note"], ""] if res.get("note") else []),
         "## Measured", "",
         "| set | prompts | identical greedy text | plain tok/s | speculative tok/s | speedup (total) | speedup (median prompt) | acceptance (median) | tokens/forward (median) |",
         "|---|---|---|---|---|---|---|---|---|"]
    for name, t in res["sets"].items():
        acc = "-" if t["acceptance_median"] is None else f"{t['acceptance_median']:.0%}"
        L.append(f"| {name} | {t['prompts']} | {t['identical']}/{t['prompts']} | {t['plain_tps']:.1f} | {t['spec_tps']:.1f} | "
                 f"{t['ratio_total']:.2f}x | {t['ratio_median']:.2f}x | {acc} | {t['tokens_per_forward']:.2f} |")
    L += ["", "| pooled | prompts | identical greedy text | speedup (all tokens / all seconds) | median prompt | worst prompt |",
          "|---|---|---|---|---|---|"]
    for name in ("grounded", "ungrounded"):
        g = res.get(name)
        if g:
            L.append(f"| {name} ({', '.join(g['sets'])}) | {g['prompts']} | {g['identical']}/{g['prompts']} | "
                     f"{g['speedup_total']:.2f}x | {g['speedup_median_prompt']:.2f}x | {g['speedup_worst_prompt']:.2f}x |")
    L += ["", "## Forward cost by rows fed (seconds relative to one row, median)", "",
          "| package | " + " | ".join(str(r) for r in ROWS) + " |", "|---|" + "---|" * len(ROWS)]
    for name, c in res["costs"].items():
        L.append(f"| {name} (1 row: {c['1'] * 1000:.1f} ms) | " + " | ".join(f"{c[str(r)] / c['1']:.2f}" for r in ROWS) + " |")
    if res.get("modelled"):
        L += ["", "## Modelled: lookup acceptance replayed from the real model's greedy replies, forward cost of each package", "",
              "| package | set | speedup (total) | speedup (median prompt) | tokens/forward | acceptance |", "|---|---|---|---|---|---|"]
        for pkg, sets in res["modelled"].items():
            for name, m in sets.items():
                L.append(f"| {pkg} | {name} | {m['speedup_total']:.2f}x | {m['speedup_median']:.2f}x | "
                         f"{m['tokens_per_forward']:.2f} | {m['acceptance']:.0%} |")
    if res.get("modelled_linear"):
        names = list(next(iter(res["modelled_linear"].values())))
        L += ["", "## What-if: the same replay with linear forward costs 1 + s * (rows - 1)", "",
              "(not measured: s is what one extra row costs relative to a one-row step; the packages above measure "
              "their own s on this 2-core machine)", "",
              "| s | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for slope, sets in res["modelled_linear"].items():
            L.append(f"| {slope} | " + " | ".join(f"{sets[n]['speedup_total']:.2f}x" for n in names) + " |")
    if res.get("draft_model_modelled"):
        L += ["", f"## Modelled: draft-model speculation (draft step {res['draft_step_s'] * 1000:.1f} ms)", "",
              "Best decode speedup over plain decoding at a given per-token acceptance, from each package's "
              "forward cost by rows and the draft model's step time (best draft length in brackets).", "",
              "| target package | " + " | ".join(f"acceptance {x}" for x in next(iter(res['draft_model_modelled'].values()))) + " |",
              "|---|" + "---|" * len(next(iter(res["draft_model_modelled"].values())))]
        for pkg, t in res["draft_model_modelled"].items():
            L.append(f"| {pkg} | " + " | ".join(f"{v['speedup']:.2f}x ({v['draft_tokens']})" for v in t.values()) + " |")
    diffs = [r for r in res["prompts"] if not r["identical"]]
    if diffs:
        L += ["", "## Replies that differ", "",
              "| set | # | first differing token | plain | speculative |", "|---|---|---|---|---|"]
        for r in diffs:
            k = r["first_difference"]
            L.append(f"| {r['set']} | {r['i']} | {k} | {json.dumps(r['plain_text'][:60])} | {json.dumps(r['spec_text'][:60])} |")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="plain vs speculative decoding, interleaved")
    ap.add_argument("--package", required=True)
    ap.add_argument("--draft", default=None, help="draft-model speculation with this package instead of lookup")
    ap.add_argument("--cost-package", action="append", default=[], help="measure forward cost by rows on this package")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--limit", type=int, default=None, help="first N prompts of each set")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--slopes", default="0.05,0.1,0.2",
                    help="also model linear forward costs 1 + s*(rows-1) (what-if for machines where decode is more bandwidth-bound)")
    ap.add_argument("--reuse", default=None,
                    help="take the measured replies (and, without --cost-package, the costs) from this earlier "
                         "--json and recompute the tables")
    ap.add_argument("--note", default="", help="a paragraph for the report, under the machine line")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    a = ap.parse_args()
    load_before = os.getloadavg()
    model = Model.load(a.package, threads=a.threads, speculate="off")
    spec = Speculation("draft", Path(a.draft)) if a.draft else Speculation("lookup")
    speculator = Speculator(spec, model.session, threads=a.threads)
    sets = a.sets.split(",")
    if a.limit:
        for s in sets:
            SETS[s] = SETS[s][:a.limit]
    old = json.loads(Path(a.reuse).read_text(encoding="utf-8")) if a.reuse else None
    if old:
        rows, load_before = old["prompts"], old["load_before"]
        a.rounds, a.max_new_tokens = old["rounds"], old["max_new_tokens"]
    else:
        rows = run_prompts(model, speculator, sets, rounds=a.rounds, max_new=a.max_new_tokens)
    depth = int(statistics.median(r["prompt_tokens"] for r in rows)) + a.max_new_tokens // 2
    if old and not a.cost_package:
        costs = {k: {int(r): v for r, v in c.items()} for k, c in old["costs"].items()}
    else:
        costs = {Path(a.package).name: forward_costs(model.session, depth=depth)}
        for pkg in a.cost_package:
            costs[Path(pkg).name] = forward_costs(ModelSession(pkg, threads=a.threads), depth=depth)
    draft_step = None
    if a.draft:                                   # one step of the draft model, at the same depth
        draft_step = forward_costs(speculator.draft_session, depth=depth, rows=(1,))[1]
    table = set_table(rows)
    command = " ".join(["python"] + sys.argv)
    res = {"package": Path(a.package).name, "command": old["command"] if old else command,
           "recomputed_by": f"python benchmarks/speculative.py --package PKG --reuse {Path(a.json or a.reuse).name}"
                            if old else None, "speculation": spec.mode,
           "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.processor() or platform.platform()}",
           "load_before": [round(x, 2) for x in load_before],
           "load_after": old["load_after"] if old and not a.cost_package else [round(x, 2) for x in os.getloadavg()],
           "rounds": a.rounds, "max_new_tokens": a.max_new_tokens, "context_depth_for_costs": depth, "note": a.note,
           "sets": table, "grounded": pooled(rows, GROUNDED), "ungrounded": pooled(rows, UNGROUNDED),
           "costs": {k: {str(r): v for r, v in c.items()} for k, c in costs.items()},
           "modelled": {k: modelled(rows, c) for k, c in costs.items()} if spec.mode == "lookup" else {},
           "modelled_linear": {s: modelled(rows, {r: 1.0 + float(s) * (r - 1) for r in ROWS})
                               for s in a.slopes.split(",") if s} if spec.mode == "lookup" else {},
           "draft_model_modelled": {k: draft_model_table(c, draft_step) for k, c in costs.items()} if draft_step else {},
           "draft_step_s": draft_step,
           "prompts": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    text = markdown(res)
    if a.markdown:
        Path(a.markdown).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
