"""A small Prometheus text-format registry (counters, gauges, histograms with labels): enough for
GET /metrics without a dependency. Thread-safe: the model loop records, the event loop renders."""
from __future__ import annotations

import math
import threading
from typing import Callable, Sequence

PREFIX = "edge_llm_"


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()):
        self.name, self.help, self.label_names = PREFIX + name, help, tuple(labels)
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.values: dict[tuple, float] = {}

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        with self._lock:
            self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self.values.items()) or ([((), 0.0)] if not self.label_names else [])
            return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in items]


class Gauge(_Metric):
    """A value read when rendered (`fn`), or set."""
    kind = "gauge"

    def __init__(self, name, help, fn: Callable[[], float] | None = None):
        super().__init__(name, help)
        self.fn, self.value = fn, 0.0

    def set(self, v: float) -> None:
        self.value = v

    def render(self) -> list[str]:
        return self.header() + [f"{self.name} {_num(self.fn() if self.fn else self.value)}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name, help, buckets: Sequence[float]):
        super().__init__(name, help)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self.counts = [0] * len(self.buckets)
        self.sum, self.count = 0.0, 0

    def observe(self, v: float) -> None:
        with self._lock:
            for i, b in enumerate(self.buckets):
                if v <= b:
                    self.counts[i] += 1
                    break
            self.sum += v
            self.count += 1

    def render(self) -> list[str]:
        with self._lock:
            out, cum = self.header(), 0
            for b, c in zip(self.buckets, self.counts):
                cum += c
                out.append(f'{self.name}_bucket{{le="{_num(b)}"}} {cum}')
            return out + [f"{self.name}_sum {_num(self.sum)}", f"{self.name}_count {self.count}"]


class Registry:
    def __init__(self):
        self.metrics: list[_Metric] = []

    def add(self, m):
        self.metrics.append(m)
        return m

    def render(self) -> str:
        return "\n".join(line for m in self.metrics for line in m.render()) + "\n"


class ServerMetrics:
    """Every figure of a reply record, as counters and histograms, plus the server's state."""

    def __init__(self, *, running: Callable[[], int], queued: Callable[[], int], cache_bytes: Callable[[], int],
                 cache_entries: Callable[[], int], slots: int, kv_bytes: Callable[[], int] = lambda: 0):
        r = self.registry = Registry()
        self.requests = r.add(Counter("requests_total", "HTTP requests by endpoint and status code.",
                                      ("endpoint", "code")))
        self.rejected = r.add(Counter("rejected_total", "Requests refused with 429 because the queue was full."))
        self.replies = r.add(Counter("replies_total", "Finished replies by finish reason.", ("finish_reason",)))
        self.prompt_tokens = r.add(Counter("prompt_tokens_total",
                                           "Prompt tokens of finished replies (cached + prefilled)."))
        self.cached_tokens = r.add(Counter("cached_prompt_tokens_total", "Prompt tokens reused from the prompt cache."))
        self.prefill_tokens = r.add(Counter("prefill_tokens_total", "Prompt tokens computed."))
        self.generated_tokens = r.add(Counter("generated_tokens_total", "Tokens generated."))
        self.draft_tokens = r.add(Counter("draft_tokens_total", "Speculative decoding: draft tokens checked."))
        self.accepted_tokens = r.add(Counter("accepted_draft_tokens_total",
                                             "Speculative decoding: draft tokens accepted."))
        self.forwards = r.add(Counter("decode_forwards_total",
                                      "Batched decode forwards (one row per request decoding)."))
        self.forward_rows = r.add(Counter("decode_rows_total", "Rows in those forwards: divided by "
                                          "decode_forwards_total, the mean number of requests decoded together."))
        self.joules = r.add(Counter("energy_joules_total", "Energy of model steps, measured or estimated "
                                    "(label) with the same model as `edge-llm bench`.", ("energy",)))
        self.cost = r.add(Counter("cost_total", "Cost of replies (electricity + hardware amortisation) "
                                  "with the same model as `edge-llm bench`.", ("currency",)))
        self.ttft = r.add(Histogram("time_to_first_token_seconds", "Prefill and first token, after the queue.",
                                    (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)))
        self.queue = r.add(Histogram("queue_seconds", "Time waiting for a free slot.",
                                     (0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30)))
        self.duration = r.add(Histogram("reply_seconds", "Prefill start to last token.",
                                        (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)))
        self.decode_tps = r.add(Histogram("decode_tokens_per_second", "Decode speed of each reply.",
                                          (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)))
        self.reply_joules = r.add(Histogram("reply_joules", "Energy per reply.",
                                            (0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000)))
        r.add(Gauge("requests_running", "Requests generating now.", running))
        r.add(Gauge("requests_queued", "Requests waiting for a slot.", queued))
        r.add(Gauge("slots", "Requests that generate at once (decoded together, one row each).", lambda: slots))
        r.add(Gauge("kv_slot_bytes", "KV bytes the slots' sequences have written (resident, to a page).", kv_bytes))
        r.add(Gauge("prompt_cache_bytes", "KV bytes held by the prompt cache.", cache_bytes))
        r.add(Gauge("prompt_cache_entries", "Conversations held by the prompt cache.", cache_entries))

    def observe_reply(self, rec) -> None:
        self.replies.inc(1, rec.finish_reason or "unknown")
        self.prompt_tokens.inc(rec.prompt_tokens)
        self.cached_tokens.inc(rec.cached_tokens)
        self.prefill_tokens.inc(rec.prefill_tokens)
        self.generated_tokens.inc(rec.generated_tokens)
        self.draft_tokens.inc(rec.draft_tokens)
        self.accepted_tokens.inc(rec.accepted_tokens)
        self.queue.observe(rec.queue_s)
        if rec.generated_tokens:
            self.ttft.observe(rec.ttft_s)
            self.duration.observe(rec.total_s)
        if rec.decode_tokens_per_s:
            self.decode_tps.observe(rec.decode_tokens_per_s)
        if rec.joules is not None:
            self.joules.inc(max(rec.joules, 0.0), rec.energy)
            self.reply_joules.observe(max(rec.joules, 0.0))
        if rec.cost is not None:
            self.cost.inc(rec.cost, rec.currency)

    def render(self) -> str:
        return self.registry.render()
