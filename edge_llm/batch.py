"""Many prompts decoded together: the batched generator behind `Model.generate_batch`.

Continuous batching on a SlotPool (edge_llm.slots): up to `slots` prompts are in flight; each is
prefilled alone into its slot, then every in-flight reply gets its next token from one forward with
a row per reply; a finished reply's slot takes the next prompt at once. Each reply keeps its own
ReplyStream (sampler, penalties, stop strings), so it says what its lone run says — exactly on
float32-activation packages, to the kernels' rounding elsewhere (docs/serve.md, "Batched decoding").

Records stay per reply: a token's `seconds` is the wall time of the forward that produced it, its
`joules` that forward's energy split evenly over the rows in it.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

from .errors import ContextFullError
from .generate import ReplyStream, _model_name
from .metering.step import StepMeter, default_step_meter
from .records import TokenRecord, log_reply, reply_record
from .sampling import SamplingParams
from .session import ModelSession
from .slots import SlotPool
from .tokenizer import Tokenizer


@dataclass
class _Row:
    index: int            # which prompt
    reply: ReplyStream
    token: int            # sampled, not yet fed


def generate_batch(session: ModelSession, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]], *,
                   params: SamplingParams = SamplingParams(), max_new_tokens: int = 256, slots: int = 8,
                   max_len: int | None = None, stop_strings: Sequence[str] = (),
                   stop_ids: Sequence[int] | None = None, ignore_eos: bool = False,
                   meter: StepMeter | None = None, log: bool = True) -> Iterator[tuple[int, TokenRecord]]:
    """(prompt index, TokenRecord) for every generated token of every prompt, in the order they are
    made. `slots`: replies decoded together (at most len(prompts)); `max_len`: each reply's context
    (default: the model's). Every prompt is checked before anything runs (empty, or no room for a reply:
    ContextFullError); memory is checked as each prompt takes its slot (OutOfMemoryError)."""
    prompts = [list(map(int, p)) for p in prompts]
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, not {max_new_tokens}")
    if not prompts:
        return
    pool_len = min(max_len or session.context_length, session.context_length)
    for i, ids in enumerate(prompts):
        if not ids:
            raise ValueError(f"prompt {i} is empty")
        if len(ids) >= pool_len:
            raise ContextFullError(f"prompt {i} is {len(ids)} tokens; "
                                   f"the context holds {pool_len} (including the reply)")
    meter = meter or default_step_meter()
    source = meter.describe()
    pool = SlotPool(session, max(1, min(slots, len(prompts))), pool_len)
    waiting = collections.deque(enumerate(prompts))
    rows: dict[int, _Row] = {}                 # slot -> its reply

    def done(slot: int, row: _Row) -> None:
        pool.release(slot)
        rows.pop(slot, None)
        if log:
            log_reply(reply_record(row.reply.records, model=_model_name(session),
                                   prompt_tokens=len(prompts[row.index])))

    try:
        while waiting or rows:
            while waiting and pool.free:                       # a free slot takes the next prompt
                i, ids = waiting.popleft()
                budget = min(max_new_tokens, pool_len - len(ids))
                slot = pool.acquire(len(ids) + budget)
                t0 = time.perf_counter()
                logits, energy = meter.run(pool.prefill, slot, ids)
                row = _Row(i, ReplyStream(tokenizer, params=params, max_new_tokens=budget, history=ids,
                                          start=len(ids), max_len=pool_len, stop_strings=stop_strings,
                                          stop_ids=stop_ids, ignore_eos=ignore_eos, prompt_tokens=len(ids),
                                          energy_source=source), 0)
                rows[slot] = row
                row.token = row.reply.sample(logits)
                yield i, row.reply.record(row.token, seconds=time.perf_counter() - t0, joules=energy.joules)
                if row.reply.finished:
                    done(slot, row)
            if not rows:
                continue
            order = sorted(rows)
            t0 = time.perf_counter()
            logits, energy = meter.run(pool.decode, order, [rows[s].token for s in order])
            seconds, share = time.perf_counter() - t0, energy.joules / len(order)
            for r, slot in enumerate(order):
                row = rows[slot]
                row.token = row.reply.sample(logits[r])
                yield row.index, row.reply.record(row.token, seconds=seconds, joules=share)
                if row.reply.finished:
                    done(slot, row)
    finally:
        for slot, row in list(rows.items()):                   # stopped early: log what was made
            done(slot, row)
