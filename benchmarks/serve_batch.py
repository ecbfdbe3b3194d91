"""How does `edge-llm serve` scale with concurrent streams (batched decoding, issue 22)?

    python benchmarks/serve_batch.py PACKAGE [--streams 1,2,4,8] [--prompt-tokens 128] [--tokens 128]
                                     [--threads N] [--rounds 1] [--json OUT.json] [--markdown OUT.md]
                                     [--llama-server BIN --gguf MODEL.gguf]

For each number of streams N (the rounds interleave the values of N, and servers when there are two):
  1. starts the server with N + 1 slots (`edge-llm serve --slots`, llama-server `-np`), a context of
     prompt + tokens + 16 per slot, speculation off;
  2. idle TTFT: one request with a `--prompt-tokens` prompt and 8 tokens on the idle server;
  3. N streams at once, each a different `--prompt-tokens` prompt (token ids, no prompt cache) and
     `--tokens` greedy tokens with the end-of-sequence ids banned, so every stream runs its full length;
  4. TTFT under load: once every stream has its first token, one more request like step 2's.

Reported per N: aggregate decode tok/s = Σ (tokens − 1) over the streams ÷ (last token of any stream −
first token of any stream), per-stream decode tok/s (median over streams, each (tokens − 1) ÷ its own
first-to-last-token time), TTFT of the streams (median, max), idle TTFT and TTFT under load. Times are
taken by the client on loopback (HTTP included). Medians over rounds. The prompts are token ids
of the package's own vocabulary, so a llama-server GGUF must be of the same weights.

Needs httpx (the test extra). Run it on a quiet machine; nothing else should share the cores.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "quality_peers"))
from portable import portable  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def banned_ids(package: Path) -> list[int]:
    """Every end-of-sequence / end-of-turn id the package names (banned so that streams run to --tokens)."""
    m = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    ids = set((m.get("chat") or {}).get("stop_ids") or [])
    tok = m.get("tokenizer") or {}
    for key in ("eos_ids", "eos_token_ids", "eos_id"):
        v = tok.get(key)
        ids.update(v if isinstance(v, list) else [] if v is None else [v])
    return sorted(int(i) for i in ids)


class Target:
    """A server to measure, started per number of slots."""

    def __init__(self, name: str, cmd):
        self.name, self.cmd = name, cmd          # cmd(port, slots, ctx) -> argv
        self.proc = None

    def start(self, slots: int, ctx: int) -> str:
        port = free_port()
        self.log = tempfile.TemporaryFile("w+")      # a file, not a pipe: a chatty server never blocks on it
        self.proc = subprocess.Popen(self.cmd(port, slots, ctx), stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not start: {self.tail()}")
            time.sleep(0.3)

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


async def stream(client: httpx.AsyncClient, prompt: list[int], n: int, bias: dict, first: asyncio.Event | None = None
                 ) -> dict:
    """One streaming completion; client-side times of its first and last token, and its token count."""
    body = {"model": "x", "prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "logit_bias": bias, "cache_prompt": False}
    t0 = time.perf_counter()
    t_first = t_last = None
    chunks, usage = 0, None
    async with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            usage = chunk.get("usage") or usage
            if any(c.get("text") for c in chunk.get("choices", [])):
                now = time.perf_counter()
                t_first = t_first or now
                t_last = now
                chunks += 1
                if first is not None and not first.is_set():
                    first.set()
    tokens = (usage or {}).get("completion_tokens") or chunks
    return {"t0": t0, "t_first": t_first, "t_last": t_last, "tokens": tokens, "ttft_s": t_first - t0}


async def measure(url: str, n: int, prompts: list[list[int]], probe: list[int], tokens: int, bias: dict) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=3600) as c:
        await stream(c, probe[:16], 4, bias)                                   # warm-up
        idle = await stream(c, probe, 8, bias)
        firsts = [asyncio.Event() for _ in range(n)]
        runs = [asyncio.create_task(stream(c, prompts[i], tokens, bias, firsts[i])) for i in range(n)]
        await asyncio.gather(*(e.wait() for e in firsts))
        loaded = await stream(c, probe, 8, bias)
        res = await asyncio.gather(*runs)
    span = max(r["t_last"] for r in res) - min(r["t_first"] for r in res)
    per = [(r["tokens"] - 1) / (r["t_last"] - r["t_first"]) for r in res if r["t_last"] > r["t_first"]]
    return {"streams": n, "aggregate_decode_tps": sum(r["tokens"] - 1 for r in res) / span,
            "per_stream_decode_tps": statistics.median(per), "per_stream_decode_tps_min": min(per),
            "stream_ttft_median_s": statistics.median(r["ttft_s"] for r in res),
            "stream_ttft_max_s": max(r["ttft_s"] for r in res),
            "idle_ttft_s": idle["ttft_s"], "loaded_ttft_s": loaded["ttft_s"],
            "tokens": [r["tokens"] for r in res]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--llama-server", default=None, help="llama-server binary: measure it too, on --gguf.")
    ap.add_argument("--gguf", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    counts = [int(x) for x in args.streams.split(",")]
    threads = args.threads or len(os.sched_getaffinity(0))
    vocab = json.loads((args.package / "manifest.json").read_text())["model"]["vocab_size"]
    rng = np.random.default_rng(0)
    low = min(1000, vocab // 4)        # ordinary tokens: skip the special ids at the start of most vocabularies
    prompts = [rng.integers(low, vocab, args.prompt_tokens).tolist() for _ in range(max(counts))]
    probe = rng.integers(low, vocab, args.prompt_tokens).tolist()
    bias = {str(i): -100 for i in banned_ids(args.package)}
    per_slot = args.prompt_tokens + args.tokens + 16

    targets = [Target("edge-llm", lambda port, slots, ctx: [
        sys.executable, "-m", "edge_llm", "serve", str(args.package), "--port", str(port), "--slots", str(slots),
        "--threads", str(threads), "--speculate", "off", "--context", str(ctx), "--max-queue", "16",
        "--cache-mb", "16", "--log-level", "warning"])]
    if args.llama_server:
        if not args.gguf:
            raise SystemExit("--llama-server needs --gguf")
        # -c is the whole KV across slots; llama-server rounds it to a multiple of 256 and splits it evenly, so
        # each slot's share is rounded up to 256 first (a share below the request's length hangs the request)
        targets.append(Target("llama-server", lambda port, slots, ctx: [
            args.llama_server, "-m", str(args.gguf), "--port", str(port), "-np", str(slots),
            "-c", str(-(-ctx // 256) * 256 * slots),
            "-t", str(threads), "-tb", str(threads), "--no-webui", "-cb"]))

    rows: dict[tuple[str, int], list[dict]] = {}
    failures: list[str] = []
    for rnd in range(args.rounds):
        order = counts if rnd % 2 == 0 else counts[::-1]
        for n in order:
            for t in (targets if rnd % 2 == 0 else targets[::-1]):
                url = t.start(n + 1, per_slot)
                try:
                    r = asyncio.run(measure(url, n, prompts, probe, args.tokens, bias))
                except Exception as e:      # a server that dies is a result: said, and the run goes on
                    failures.append(f"round {rnd + 1}, {t.name}, {n} stream(s): {e!r}")
                    print(f"{failures[-1]}; its log ends:\n{t.tail()}", file=sys.stderr)
                    continue
                finally:
                    t.stop()
                rows.setdefault((t.name, n), []).append(r)
                print(f"round {rnd + 1} {t.name} {n} stream(s): aggregate {r['aggregate_decode_tps']:.1f} tok/s, "
                      f"per stream {r['per_stream_decode_tps']:.1f}, TTFT idle {r['idle_ttft_s'] * 1000:.0f} ms, "
                      f"under load {r['loaded_ttft_s'] * 1000:.0f} ms", file=sys.stderr)

    def med(rs, k):
        return statistics.median(r[k] for r in rs)
    keys = ("aggregate_decode_tps", "per_stream_decode_tps", "per_stream_decode_tps_min", "stream_ttft_median_s",
            "stream_ttft_max_s", "idle_ttft_s", "loaded_ttft_s")
    summary = [{"server": name, "streams": n, **{k: med(rs, k) for k in keys}, "rounds": rs}
               for (name, n), rs in sorted(rows.items())]
    one = {s["server"]: s["aggregate_decode_tps"] for s in summary if s["streams"] == 1}
    lines = ["# Concurrent streams: batched decoding", "",
             f"`python benchmarks/serve_batch.py {portable(' '.join(sys.argv[1:]))}` · {os.cpu_count()} logical CPUs, "
             f"{threads} threads · prompt {args.prompt_tokens} tokens, {args.tokens} tokens per stream, greedy, "
             f"end-of-sequence banned · median of {args.rounds} round(s)", "",
             "| server | streams | aggregate decode tok/s | × one stream | per-stream tok/s (median, min) | "
             "stream TTFT median / max | TTFT idle → under load |", "|---|---|---|---|---|---|---|"]
    for s in summary:
        x = s["aggregate_decode_tps"] / one[s["server"]] if one.get(s["server"]) else float("nan")
        lines.append(f"| {s['server']} | {s['streams']} | {s['aggregate_decode_tps']:.1f} | {x:.2f}× | "
                     f"{s['per_stream_decode_tps']:.1f}, {s['per_stream_decode_tps_min']:.1f} | "
                     f"{s['stream_ttft_median_s'] * 1000:.0f} / {s['stream_ttft_max_s'] * 1000:.0f} ms | "
                     f"{s['idle_ttft_s'] * 1000:.0f} → {s['loaded_ttft_s'] * 1000:.0f} ms "
                     f"({s['loaded_ttft_s'] / s['idle_ttft_s']:.2f}×) |")
    if failures:
        lines += ["", "Failed measurements (not in the medians): " + "; ".join(failures)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"command": [portable(a) for a in sys.argv], "threads": threads,
                                         "summary": summary, "failures": failures}, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
