"""The model loop: one thread runs every model step; requests in flight decode together.

Batched decoding (the default): the active requests hold slots of a SlotPool (edge_llm.slots), and
each round runs ONE forward with a row per decoding request, each row at its own length — on a
bandwidth-bound CPU a step of 4 rows costs far less than 4 steps, because the weights are read once
for all of them. A new request's prompt is prefilled alone into its slot, `prefill_chunk` tokens per
round, between those decode forwards, so the running streams wait at most one piece per token
(prefill and decode rows are not mixed in one forward). Records stay per request: a token's wall
time is its own (turns included), the decode forward's energy is split evenly over its rows, a
prefill piece's goes to its own request. A finished request's sequence stays parked in its slot
(`Parked`): a request that continues it (the next chat turn) takes that slot and prefills only what is
new, with no copy; a slot wanted by another request first moves its parked sequence to the prompt
cache; when memory is short, parked sequences give their pages back.

With speculative decoding (the model's speculator, `--speculate lookup|draft:…`, or the default
`auto` with one slot) requests take turns instead, one model step each on a KVCache of their own: one
turn's forward may verify several drafted tokens, and the turns after it hand out the accepted ones
without a forward.

Why one thread and not a thread per request: a decode step already uses every core, so two requests
stepping at the same time finish no sooner (benchmarks/results/serve-concurrency.md) — but they
contend, and per-reply energy could not be attributed (a step's process CPU time would include
the other's).

Requests past the free slots wait in a bounded queue; past `max_queue` `submit` raises QueueFull
(HTTP 429 with Retry-After). Memory is accounted per slot: a request needs room for its prompt and
max_tokens on top of what the busy slots may still grow to, checked when it is submitted (HTTP 503
before anything streams) and again when it takes a slot. A job cancelled (client gone) runs no
further step: the loop checks before each round, so at most the step already running completes. A
request's failure is its own: the loop logs it, answers that request with an error and carries on
(a failed batched forward fails the requests in it, not the others).
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from ..errors import OutOfMemoryError
from ..generate import ReplyStream, generate_tokens
from ..metering.step import StepMeter
from ..records import CostSettings, ReplyRecord, TokenRecord, log_reply, reply_record
from ..sampling import SamplingParams
from ..session import KV_CHUNK
from ..slots import SlotPool
from .metrics import ServerMetrics
from .prompt_cache import MIN_COPY, PromptCache, common_prefix

log = logging.getLogger("edge_llm.serve")


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The server is stopping: no new request is taken (HTTP 503)."""


class JobFailed(Exception):
    """The model loop could not finish this request (a bug or an onnxruntime error: HTTP 500; not
    enough memory for its KV cache: 503); others go on."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


@dataclass(eq=False)
class Job:
    ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    stop_strings: tuple[str, ...]
    stop_ids: tuple[int, ...]
    loop: asyncio.AbstractEventLoop
    tag: str = ""
    submitted: float = field(default_factory=time.perf_counter)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    record: ReplyRecord | None = None
    error_status: int = 500
    # model-loop state
    started: float | None = None
    cache: object = None
    reuse: int = 0
    pending: np.ndarray | None = None
    use_cache: bool = True
    logits: np.ndarray | None = None       # the prompt's last logits, once it has all run
    gen: object = None
    records: list[TokenRecord] = field(default_factory=list)
    pre_joules: float | None = None
    last_t: float = 0.0
    engine: "Engine | None" = None
    # batched decoding: the job's slot, its reply, the token sampled and not yet fed
    slot: int | None = None
    reply: ReplyStream | None = None
    token: int | None = None

    @property
    def positions(self) -> int:
        """Context positions this request may fill: its prompt and its whole reply."""
        return len(self.ids) + self.max_new_tokens

    def cancel(self) -> None:
        if not self.cancelled.is_set():
            self.cancelled.set()
            if self.engine is not None:
                self.engine.wake()

    async def stream(self):
        """TokenRecords as they come; `record` is set when this ends. Raises JobFailed."""
        while True:
            kind, value = await self.events.get()
            if kind == "token":
                yield value
            elif kind == "done":
                self.record = value
                return
            else:
                raise JobFailed(value, self.error_status)


@dataclass(eq=False)
class Parked:
    """A finished request's sequence left in its slot, continued in place by a request that extends it
    (no copy); moved to the prompt cache only when its slot is wanted for another request."""
    ids: np.ndarray                  # int64: exactly the slot's valid positions
    prompt_len: int                  # ids[:prompt_len] was the prompt, which ended with `logits`
    logits: np.ndarray | None
    used: int


class Engine:
    def __init__(self, model, *, name: str, slots: int = 4, max_queue: int = 16, cache_bytes: int = 1 << 30,
                 prefill_chunk: int = 256, costs: CostSettings = CostSettings(), meter: StepMeter | None = None):
        self.model, self.session, self.tokenizer = model, model.session, model.tokenizer
        self.name, self.slots, self.max_queue = name, max(1, slots), max(0, max_queue)
        self.prefill_chunk = max(1, prefill_chunk)
        self.costs, self.meter = costs, meter or StepMeter()
        self.prompt_cache = PromptCache(cache_bytes)
        # speculation verifies drafts on a request's own cache: those requests take turns instead. "auto"
        # (the default) gives way to batching where several slots can decode together; asked for by name, kept
        spec = model.speculator
        self.speculator = None if spec is not None and spec.spec.auto and self.slots > 1 else spec
        self.pool = None if self.speculator is not None else SlotPool(self.session, self.slots, model.context_length)
        self.parked: dict[int, Parked] = {}
        self.pending: collections.deque[Job] = collections.deque()
        self.active: list[Job] = []
        self.cond = threading.Condition()
        self.closing = False
        self._mean_reply_s = 5.0
        self._ids = itertools.count(1)
        self.metrics = ServerMetrics(running=lambda: len(self.active), queued=lambda: len(self.pending),
                                     cache_bytes=lambda: self.prompt_cache.nbytes,
                                     cache_entries=lambda: len(self.prompt_cache), slots=self.slots,
                                     kv_bytes=lambda: self.pool.resident_positions() * self.pool.bytes_per_position
                                     if self.pool is not None else 0)
        self.thread = threading.Thread(target=self._run, name="edge-llm-model-loop", daemon=True)

    # ---------------------------------------------------------------- event-loop side
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Refuse new requests and end every queued and running one with a 503 error after at most the
        step now running (their clients get an error object, streams an error event and [DONE]).
        Returns at once: the HTTP server calls it when shutdown begins, before it waits for replies."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        self.stop()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    @property
    def batched(self) -> bool:
        """True when requests in flight decode together (False: they take turns, for speculation)."""
        return self.pool is not None

    @property
    def speculation_label(self) -> str:
        """What the server's replies run: the model's speculation, or "off" where "auto" gave way to batching."""
        return self.model.speculation_label() if self.speculator is not None else "off"

    @property
    def healthy(self) -> bool:
        return self.thread.is_alive() and not self.closing

    def submit(self, ids: Sequence[int], *, params: SamplingParams, max_new_tokens: int,
               stop_strings: Sequence[str] = (), stop_ids: Sequence[int] = (), tag: str = "",
               use_cache: bool = True) -> Job:
        """Queue a request (call on the event loop); raises QueueFull when slots and queue are full,
        OutOfMemoryError when its KV cache does not fit beside the busy slots'.
        `use_cache=False` computes the whole prompt even when a cached prefix exists."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {max_new_tokens}")
        job = Job(list(ids), params, max_new_tokens, tuple(stop_strings), tuple(stop_ids),
                  asyncio.get_running_loop(), tag=tag or f"req-{next(self._ids)}", use_cache=use_cache)
        job.engine = self
        with self.cond:
            if self.closing:
                raise ShuttingDown("the server is shutting down")
            if len(self.active) + len(self.pending) >= self.slots + self.max_queue:
                self.metrics.rejected.inc()
                raise QueueFull(self.retry_after())
            if self.pool is not None:
                # OutOfMemoryError (HTTP 503) now, before a stream starts; checked again when it takes a slot
                self.pool.check_memory(min(job.positions, self.pool.max_len), reclaim=True)
            self.pending.append(job)
            self.cond.notify_all()
        return job

    def retry_after(self) -> int:
        """Seconds until a queue place is likely free: a mean reply time per queued request and slot."""
        waits = self._mean_reply_s * (len(self.pending) + 1) / self.slots
        return int(min(60, max(1, round(waits))))

    # ---------------------------------------------------------------- model-loop side
    def _run(self) -> None:
        while True:
            try:
                if self._round():
                    return
            except Exception:  # noqa: BLE001  (a bug outside any one request: log it, keep serving)
                log.exception("model loop error")
                time.sleep(0.05)

    def _round(self) -> bool:
        """One turn for every active request (waiting while there is none); True when closing."""
        with self.cond:
            self._admit()
            while not self.active and not self.closing:
                self.cond.wait()
                self._admit()
            if self.closing:
                for job in list(self.pending) + self.active:
                    job.error_status = 503
                    self._finish(job, error="the server is shutting down")
                self.pending.clear()
                return True
            jobs = list(self.active)
        if self.pool is not None:
            self._batched_round(jobs)
            return False
        for job in jobs:
            try:
                self._turn(job)
            except Exception as e:  # noqa: BLE001  (one request's failure must not stop the loop)
                self._fail(job, e)
        return False

    def _fail(self, job: Job, e: Exception) -> None:
        """(in an except block) End `job` with an error: 503 when its cache does not fit, else 500."""
        if isinstance(e, OutOfMemoryError):     # this request's cache does not fit: say so, keep serving
            log.warning("request %s: %s", job.tag, e)
            job.error_status = 503
            self._finish(job, error=str(e))
            return
        log.exception("request %s failed", job.tag)
        try:
            self._finish(job, error=f"{type(e).__name__}: {e}")
        except Exception:  # noqa: BLE001  (even its record failed: drop it, still answer it)
            log.exception("request %s: finishing failed", job.tag)
            with self.cond:
                if job in self.active:
                    self.active.remove(job)
            if job.slot is not None and self.pool is not None:
                self.pool.release(job.slot)
                job.slot = None
            self._push(job, "error", f"{type(e).__name__}: {e}")

    # ---------------------------------------------------------------- batched decoding
    def _batched_round(self, jobs: list[Job]) -> None:
        """Seat new jobs in slots; one decode forward for every job with a token to feed; one prefill
        piece for the oldest job still prefilling."""
        owned = {j.slot for j in jobs if j.slot is not None}
        for slot in np.flatnonzero(self.pool.busy):
            if int(slot) not in owned:      # a slot whose job ended without freeing it (a bug): free it now
                log.error("slot %d was busy with no request: freed", slot)
                self.pool.release(int(slot))
        live = []
        for job in jobs:
            try:
                if job.cancelled.is_set():
                    self._finish(job)
                    continue
                if job.slot is None:
                    self._seat(job)
            except Exception as e:  # noqa: BLE001
                self._fail(job, e)
                continue
            if job in self.active:
                live.append(job)
        decoding = [j for j in live if j.token is not None]
        if decoding:
            self._decode(decoding)
        prefilling = [j for j in live if j.reply is None and j.slot is not None]
        if prefilling:
            job = prefilling[0]
            try:
                self._prefill_piece(job)
            except Exception as e:  # noqa: BLE001
                self._fail(job, e)

    def _seat(self, job: Job) -> None:
        """Give `job` a slot (memory checked: OutOfMemoryError) holding its longest cached prefix: a parked
        slot it continues, in place; else the lowest free slot (its parked sequence moved to the prompt
        cache first), filled from the prompt cache."""
        positions = min(job.positions, self.pool.max_len)
        found = self._parked_match(job.ids) if job.use_cache else None
        if found is not None:
            slot, job.reuse, job.logits = found
            del self.parked[slot]
            try:
                job.slot = self._acquire(positions, slot=slot, keep=job.reuse)
            except Exception:
                self.pool.release(slot)        # not parked any more: its pages go back
                raise
            self.prompt_cache.count_hit(job.reuse)
        else:
            slot = int(np.flatnonzero(~self.pool.busy)[0])
            if slot in self.parked:
                self._spill(slot)
            job.slot = self._acquire(positions, slot=slot)
            cache = None
            if job.use_cache:
                cache, job.reuse, job.logits = self.prompt_cache.take(job.ids)
            if cache is not None:
                self.pool.load(job.slot, cache, job.reuse)
        job.pending = np.asarray(job.ids[job.reuse:], np.int64)
        if job.logits is not None:           # the whole prompt was cached with its logits: no prefill
            self._start_reply(job, job.logits)

    def _parked_match(self, ids: list[int]) -> tuple[int, int, np.ndarray | None] | None:
        """(slot, reusable positions, logits) of the parked sequence sharing the longest prefix with `ids`,
        by the prompt cache's rules (at least the last prompt token recomputed unless the prompt is exactly
        a parked one with its logits; a short shared prefix only when it is the whole parked sequence)."""
        want = np.asarray(ids, np.int64)
        best, best_n, exact = None, 0, False
        for slot, p in self.parked.items():
            n = common_prefix(p.ids, want)
            whole = n == want.size == p.prompt_len and p.logits is not None
            n = n if whole else min(n, want.size - 1)
            if (whole, n) > (exact, best_n):
                best, best_n, exact = slot, n, whole
        if best is None or (best_n < self.parked[best].ids.size and best_n < MIN_COPY and not exact):
            return None
        return best, best_n, (self.parked[best].logits.copy() if exact else None)

    def _acquire(self, positions: int, *, slot: int, keep: int = 0) -> int:
        """pool.acquire; when the memory is short, parked sequences give their pages back first."""
        try:
            return self.pool.acquire(positions, slot=slot, keep=keep)
        except OutOfMemoryError:
            others = [s for s in self.parked if s != slot]
            if not others:
                raise
            for s in others:
                del self.parked[s]
                self.pool.release(s)
            return self.pool.acquire(positions, slot=slot, keep=keep)

    def _spill(self, slot: int) -> None:
        """Move a parked sequence to the prompt cache (a copy, when it fits its budget) and free its slot."""
        p = self.parked.pop(slot)
        n = int(self.pool.lengths[slot])
        try:
            if -(-max(n, 1) // KV_CHUNK) * KV_CHUNK * self.pool.bytes_per_position <= self.prompt_cache.budget:
                self.prompt_cache.put(p.ids, self.pool.to_cache(slot), prompt_len=p.prompt_len, logits=p.logits)
        except Exception:  # noqa: BLE001  (e.g. no memory for the copy: the sequence is only not kept)
            log.warning("slot %d: its parked KV cache was not kept for reuse", slot, exc_info=True)
        finally:
            self.pool.release(slot)

    def _prefill_piece(self, job: Job) -> None:
        """The next `prefill_chunk` tokens of `job`'s prompt, on its slot alone; its first token after the last."""
        piece, job.pending = job.pending[:self.prefill_chunk], job.pending[self.prefill_chunk:]
        logits, energy = self.meter.run(self.pool.prefill, job.slot, piece)
        job.pre_joules = (job.pre_joules or 0.0) + energy.joules
        if not job.pending.size:
            job.logits = logits
            self._start_reply(job, logits)

    def _start_reply(self, job: Job, logits: np.ndarray) -> None:
        job.reply = ReplyStream(self.tokenizer, params=job.params, max_new_tokens=job.max_new_tokens, history=job.ids,
                                start=int(self.pool.lengths[job.slot]), max_len=self.pool.max_len,
                                stop_strings=job.stop_strings, stop_ids=job.stop_ids or None,
                                prompt_tokens=len(job.ids) - job.reuse, cached_tokens=job.reuse,
                                energy_source=self.meter.describe() if job.pre_joules is not None else None)
        token = job.reply.sample(logits)
        # the reply's first token: its time and energy cover every prefill piece since admission
        self._emit(job, job.reply.record(token, seconds=time.perf_counter() - job.started, joules=job.pre_joules))

    def _decode(self, jobs: list[Job]) -> None:
        """One forward with a row per job (each feeds its last token), then each job's next token."""
        jobs = sorted(jobs, key=lambda j: j.slot)
        try:
            logits, energy = self.meter.run(self.pool.decode, [j.slot for j in jobs], [j.token for j in jobs])
        except Exception as e:  # noqa: BLE001  (the forward failed: the requests in it fail, not the others)
            for job in jobs:
                self._fail(job, e)
            return
        self.metrics.forwards.inc()
        self.metrics.forward_rows.inc(len(jobs))
        share = energy.joules / len(jobs)          # energy split by rows
        now = time.perf_counter()
        for row, job in enumerate(jobs):
            try:
                token = job.reply.sample(logits[row])
                self._emit(job, job.reply.record(token, seconds=now - job.last_t, joules=share))
            except Exception as e:  # noqa: BLE001  (e.g. one request's sampler: its own failure)
                self._fail(job, e)

    def _emit(self, job: Job, rec: TokenRecord) -> None:
        job.token = None if rec.finish_reason is not None else rec.token_id
        job.last_t = time.perf_counter()
        job.records.append(rec)
        self._push(job, "token", rec)
        if rec.finish_reason is not None:
            self._finish(job)

    def _release_slot(self, job: Job, *, keep: bool) -> None:
        """Free `job`'s slot; with `keep` (and the prompt cache on), its sequence stays parked in it."""
        slot, job.slot = job.slot, None
        n = int(self.pool.lengths[slot])
        if keep and n and self.prompt_cache.budget > 0:
            fed = np.asarray((job.ids + [r.token_id for r in job.records])[:n], np.int64)
            self.parked[slot] = Parked(fed, len(job.ids), job.logits, next(self._ids))
            self.pool.park(slot)
        else:
            self.pool.release(slot)

    def _admit(self) -> None:
        """(cond held) Drop cancelled waiters; move waiters into free slots."""
        for job in [j for j in self.pending if j.cancelled.is_set()]:
            self.pending.remove(job)
            self._finish(job)
        while self.pending and len(self.active) < self.slots:
            job = self.pending.popleft()
            job.started = time.perf_counter()
            self.active.append(job)

    def _turn(self, job: Job) -> None:
        """One model step for `job`: a prefill piece, or the next token."""
        if job.cancelled.is_set():
            self._finish(job)
            return
        if job.cache is None:
            if job.use_cache:
                job.cache, job.reuse, job.logits = self.prompt_cache.take(job.ids)
            if job.cache is None:
                job.cache = self.session.new_cache(self.model.context_length)
            job.pending = np.asarray(job.ids[job.reuse:], np.int64)
        if job.logits is None:
            # the prompt runs in pieces of prefill_chunk, one per turn, so other streams keep flowing
            piece, job.pending = job.pending[:self.prefill_chunk], job.pending[self.prefill_chunk:]
            logits, energy = self.meter.run(self.session.forward, piece, job.cache)
            job.pre_joules = (job.pre_joules or 0.0) + energy.joules
            if job.pending.size:
                return
            job.logits = logits
        if job.gen is None:
            job.gen = generate_tokens(self.session, self.tokenizer, job.cache, [], logits=job.logits,
                                      params=job.params, max_new_tokens=job.max_new_tokens,
                                      stop_strings=job.stop_strings, stop_ids=job.stop_ids or None,
                                      history=job.ids, meter=self.meter, log=False,
                                      speculator=self.speculator)
        rec = next(job.gen)
        now = time.perf_counter()
        if not job.records:
            # the reply's first token: its time and energy cover every prefill piece since admission
            rec = replace(rec, seconds=now - job.started, prompt_tokens=len(job.ids) - job.reuse,
                          cached_tokens=job.reuse, joules=job.pre_joules,
                          energy_source=self.meter.describe() if job.pre_joules is not None else None)
        else:
            rec = replace(rec, seconds=now - job.last_t)   # wall time between tokens, turns included
        job.last_t = now
        job.records.append(rec)
        self._push(job, "token", rec)
        if rec.finish_reason is not None:
            self._finish(job)

    def _finish(self, job: Job, *, error: str | None = None) -> None:
        with self.cond:
            if job in self.active:
                self.active.remove(job)
        if job.gen is not None:
            job.gen.close()
        if job.slot is not None:
            self._release_slot(job, keep=error is None)
        if job.cache is not None and error is None:
            fed = (job.ids + [r.token_id for r in job.records])[:job.cache.length]
            self.prompt_cache.put(fed, job.cache, prompt_len=len(job.ids), logits=job.logits)
        job.cache = job.gen = job.logits = job.token = None
        now = time.perf_counter()
        queue_s = (job.started or now) - job.submitted
        rec = reply_record(job.records, costs=self.costs, queue_s=queue_s, model=self.name,
                           prompt_tokens=len(job.ids), cached_tokens=job.reuse,
                           joules=None if job.records else job.pre_joules,
                           energy_source=self.meter.describe() if job.pre_joules is not None else None)
        if rec.generated_tokens:
            self._mean_reply_s = 0.8 * self._mean_reply_s + 0.2 * (rec.total_s + queue_s)
        self.metrics.observe_reply(rec)
        log_reply(rec, request=job.tag)
        self._push(job, "error" if error else "done", error or rec)

    @staticmethod
    def _push(job: Job, kind: str, value) -> None:
        try:
            job.loop.call_soon_threadsafe(job.events.put_nowait, (kind, value))
        except RuntimeError:   # the event loop is gone (shutdown): nobody is listening
            pass
