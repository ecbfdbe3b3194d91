"""Decode speed and peak memory against context depth, edge-llm beside `llama-bench -d`, interleaved
(issue 14). Every measurement is a fresh process; each round runs every (depth, runtime) pair, the
runtimes' order alternating by round and depth, so both see the same machine state.

    python benchmarks/depth_peers.py --package PKG --gguf GGUF --llama-bench PATH \
        [--depths 0,512,1024,2048] [--gen 32] [--rounds 2] [--threads 2] [--name NAME] [--out OUT]

What one measurement is, for both runtimes (llama-bench's own `tg` definition):
* the context: `depth` tokens already in the cache (edge-llm: BOS + random ids in [3, 8192) run as a
  prompt, untimed; llama-bench `-d depth`: its own untimed prompt of that length);
* then `gen` single-token steps of random ids, timed: decode tok/s = gen / their time. One untimed
  step first (llama-bench's warm-up run does the same);
* peak RSS = the child's `ru_maxrss` from wait4 (process high-water mark: weights, cache, activations,
  runtime; file-backed weight pages count for both).
Memory model: package + KV(c) with c = depth + gen; KV bytes per position from the manifest
(edge-llm) and n_layer x n_kv_head x head_dim x 2 (K and V) x 2 bytes (llama.cpp's default f16 cache).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MiB = 2 ** 20

EDGE_CHILD = r"""
import json, sys, time
import numpy as np
from edge_llm.api import Model
pkg, depth, gen, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = Model.load(pkg, threads=threads, context_length=depth + gen + 1, speculate="off")
rng = np.random.default_rng(0)
c = m.cache()
if depth:
    m.session.forward(np.concatenate([[1], rng.integers(3, 8192, depth - 1)]).astype(np.int64), c)
m.session.forward(np.array([5], np.int64), c)                      # warm-up step
ids = rng.integers(3, 8192, gen)
t = time.perf_counter()
for i in ids:
    m.session.forward(np.array([i], np.int64), c)
print(json.dumps({"decode_tok_s": gen / (time.perf_counter() - t), "kv_bytes": c.nbytes}))
"""


def measure(cmd: list[str]) -> tuple[str, int]:
    """Runs `cmd`, returning (stdout, peak RSS bytes) from the kernel's rusage of that child alone."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_chunks, err_chunks = [], []

    def pump(stream, sink):
        for chunk in iter(lambda: stream.read(65536), b""):
            sink.append(chunk)
    ts = [threading.Thread(target=pump, args=(p.stdout, out_chunks)),
          threading.Thread(target=pump, args=(p.stderr, err_chunks))]
    for t in ts:
        t.start()
    _, status, usage = os.wait4(p.pid, 0)
    for t in ts:
        t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        err = b"".join(err_chunks).decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{Path(cmd[0]).name} exited {p.returncode}: {err[-1] if err else ''}")
    return b"".join(out_chunks).decode(), usage.ru_maxrss * 1024


def edge_once(pkg: Path, depth: int, gen: int, threads: int) -> dict:
    out, rss = measure([sys.executable, "-c", EDGE_CHILD, str(pkg), str(depth), str(gen), str(threads)])
    return json.loads(out.strip().splitlines()[-1]) | {"peak_rss": rss}


def llama_once(bench: Path, gguf: Path, depth: int, gen: int, threads: int) -> dict:
    out, rss = measure([str(bench), "-m", str(gguf), "-p", "0", "-n", str(gen), "-d", str(depth),
                        "-t", str(threads), "-r", "1", "-o", "json"])
    rows = json.loads(out)
    return {"decode_tok_s": rows[0]["avg_ts"], "peak_rss": rss, "build": rows[0].get("build_commit"),
            "flash_attn": rows[0].get("flash_attn"), "type_k": rows[0].get("type_k")}


def gguf_kv_bytes_per_position(gguf: Path) -> int | None:
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    r = GGUFReader(str(gguf))
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()

    def val(key):
        f = r.fields.get(f"{arch}.{key}")
        return None if f is None else int(f.parts[-1][0])
    n_layer, n_head, n_kv, n_embd = val("block_count"), val("attention.head_count"), val("attention.head_count_kv"), val("embedding_length")
    head_dim = val("attention.key_length") or n_embd // n_head
    return n_layer * (n_kv or n_head) * head_dim * 2 * 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, required=True)
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--llama-bench", type=Path, required=True)
    ap.add_argument("--depths", default="0,512,1024,2048")
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", type=Path, default=None, help="writes OUT.json and OUT.md")
    a = ap.parse_args()
    from edge_llm.manifest import load_manifest
    man = load_manifest(a.package)
    depths = [int(d) for d in a.depths.split(",")]
    if depths[-1] + a.gen + 1 > man.model.context_length:
        raise SystemExit(f"--depths: {depths[-1]} + {a.gen} does not fit the package's context {man.model.context_length}")
    pkg_bytes = sum(f.stat().st_size for f in a.package.iterdir() if f.is_file())
    runs = {rt: {d: [] for d in depths} for rt in ("edge-llm", "llama.cpp")}
    t0 = time.time()
    for r in range(a.rounds):
        for j, d in enumerate(depths):
            order = ["edge-llm", "llama.cpp"] if (r + j) % 2 == 0 else ["llama.cpp", "edge-llm"]
            for rt in order:
                res = (edge_once(a.package, d, a.gen, a.threads) if rt == "edge-llm"
                       else llama_once(a.llama_bench, a.gguf, d, a.gen, a.threads))
                runs[rt][d].append(res)
                print(f"round {r + 1} depth {d} {rt}: {res['decode_tok_s']:.2f} tok/s, peak RSS "
                      f"{res['peak_rss'] / MiB:.0f} MiB", flush=True)
    result = {
        "name": a.name or a.package.name, "package": str(a.package), "package_bytes": pkg_bytes,
        "gguf": str(a.gguf), "gguf_bytes": a.gguf.stat().st_size, "depths": depths, "gen": a.gen,
        "rounds": a.rounds, "threads": a.threads, "seconds": round(time.time() - t0),
        "edge_kv_bytes_per_position": man.kv.bytes_per_position, "edge_kv_dtype": man.kv.dtype,
        "llama_kv_bytes_per_position": gguf_kv_bytes_per_position(a.gguf),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_avg_end": os.getloadavg()},
        "runs": runs,
    }
    md = report(result)
    print(md)
    if a.out:
        Path(f"{a.out}.json").write_text(json.dumps(result, indent=2, default=str))   # (names may hold dots)
        Path(f"{a.out}.md").write_text(md)


def report(res: dict) -> str:
    med = statistics.median
    depths, gen = res["depths"], res["gen"]
    edge, llama = res["runs"]["edge-llm"], res["runs"]["llama.cpp"]
    e0 = med(x["decode_tok_s"] for x in edge[depths[0]])
    lines = [f"# Decode and memory at depth: {res['name']}, edge-llm vs llama.cpp",
             "",
             f"`python benchmarks/depth_peers.py --package {res['package']} --gguf {res['gguf']} "
             f"--depths {','.join(map(str, depths))} --gen {gen} --rounds {res['rounds']} --threads {res['threads']}` "
             f"({res['seconds']} s). {res['threads']} threads; every cell is a fresh process, runtimes alternating; "
             f"medians of {res['rounds']} rounds (range in brackets). Decode = {gen} single-token steps after "
             f"`depth` tokens of context (llama-bench `-p 0 -n {gen} -d depth`). Peak RSS = the child's ru_maxrss.",
             "",
             f"edge-llm package {res['package_bytes'] / MiB:,.0f} MiB, KV {res['edge_kv_dtype']} "
             f"{res['edge_kv_bytes_per_position']:,} B/position; llama.cpp GGUF {res['gguf_bytes'] / MiB:,.0f} MiB, "
             f"KV f16 {res['llama_kv_bytes_per_position'] or 0:,} B/position.",
             "",
             "| depth | edge-llm tok/s | llama.cpp tok/s | edge ÷ llama | edge vs its depth 0 | edge peak RSS MiB | "
             "edge RSS ÷ (package + KV(c)) | llama peak RSS MiB | llama RSS ÷ (GGUF + KV(c)) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def rng(xs):
        return f"[{min(xs):.2f}–{max(xs):.2f}]" if len(xs) > 1 else ""
    for d in depths:
        et = [x["decode_tok_s"] for x in edge[d]]
        lt = [x["decode_tok_s"] for x in llama[d]]
        ratios = [e / l for e, l in zip(et, lt)]
        c = d + gen + 1
        er = med(x["peak_rss"] for x in edge[d])
        lr = med(x["peak_rss"] for x in llama[d])
        e_model = res["package_bytes"] + c * res["edge_kv_bytes_per_position"]
        l_model = res["gguf_bytes"] + c * (res["llama_kv_bytes_per_position"] or 0)
        lines.append(f"| {d} | {med(et):.2f} {rng(et)} | {med(lt):.2f} {rng(lt)} | {med(ratios):.2f}× {rng(ratios)} | "
                     f"{med(et) / e0:.2f} | {er / MiB:,.0f} | {er / e_model:.2f} | {lr / MiB:,.0f} | {lr / l_model:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
