"""One record per token and one per reply: tokens, speed, energy and cost, the same figures `bench` reports.

Energy: the generator meters every model step with bench's EnergyMeter (edge_llm.metering.step.StepMeter): a RAPL/hwmon
package counter where one is readable ("measured"), else bench's stated power model ("estimated"),
idle power subtracted as in bench. Each TokenRecord carries the joules of the step(s) that produced
it, so a reply's energy is the sum of its own steps: replies that share the server's model loop do
not count each other's work (a batched decode forward's energy is split evenly over its rows). Steps
that run *at the same time* on different threads would each see the whole process's CPU time;
nothing in edge-llm does that.

Cost: bench's cost model (edge_llm.metering.cost): electricity for the reply's joules at
`price_per_kwh`, plus, when a device price is given, the device amortised over the reply's seconds.

Logging: every finished reply is logged to the `edge_llm.replies` logger (when something listens);
`log_replies_to(path)` attaches a handler that appends one JSON line per reply (`--metrics-log`).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from .metering import cost as cost_mod

DEFAULT_PRICE_PER_KWH = 0.15   # USD, the same stated assumption as bench
DEFAULT_LIFETIME_YEARS = 5.0
REPLY_LOGGER = logging.getLogger("edge_llm.replies")


@dataclass(frozen=True)
class CostSettings:
    price_per_kwh: float | None = DEFAULT_PRICE_PER_KWH
    currency: str = "USD"
    device_price: float | None = None
    lifetime_years: float = DEFAULT_LIFETIME_YEARS
    duty_cycle: float = 1.0


@dataclass(frozen=True)
class TokenRecord:
    """One generated token, as edge_llm.generate yields it."""
    token_id: int
    text: str                  # new text this token completes (may be "" while a character is incomplete)
    index: int                 # 0 for the first generated token
    position: int              # its position in the context
    seconds: float             # wall time of the model step(s) that produced it (prefill for index 0)
    prompt_tokens: int         # tokens prefilled for this reply (after cache reuse)
    finish_reason: str | None  # None, or "eos" | "stop" | "length" | "context" on the last record
    cached_tokens: int = 0     # prompt positions that were already in the cache (not prefilled)
    joules: float | None = None  # energy of the model step(s) behind this token (edge_llm.metering.step)
    energy_source: str | None = None  # "measured: <counter>" or "estimated: <power model>", as bench labels
    # speculative decoding (edge_llm.speculative), on the first token of each forward: draft tokens
    # checked, how many were accepted; forwards = 1 there and 0 on the other tokens of that forward
    drafted: int = 0
    accepted: int = 0
    forwards: int = 1


@dataclass(frozen=True)
class ReplyRecord:
    prompt_tokens: int          # the whole prompt: cached + prefilled
    cached_tokens: int          # prompt positions reused from a cache (no compute)
    prefill_tokens: int         # prompt positions computed for this reply
    generated_tokens: int
    finish_reason: str | None   # eos | stop | length | context | cancelled
    ttft_s: float               # prefill + first sample (the server's also waits for other requests' steps)
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    total_s: float              # prefill start to last token
    joules: float | None
    energy: str                 # "measured" | "estimated" | "none"
    energy_source: str | None   # bench's label: the counters read, or the power model
    cost: float | None          # currency units for this reply
    currency: str
    cost_electricity: float | None
    cost_hardware: float | None
    queue_s: float = 0.0        # time waiting for a free slot (server)
    model: str = ""
    created: float = 0.0        # unix time the record was made
    # speculative decoding (edge_llm.speculative): draft tokens checked and accepted; decode tokens
    # per target forward (1.0 for plain decoding)
    draft_tokens: int = 0
    accepted_tokens: int = 0
    acceptance_rate: float | None = None
    tokens_per_forward: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def reply_record(records: Sequence[TokenRecord], *, costs: CostSettings = CostSettings(), queue_s: float = 0.0,
                 model: str = "", prompt_tokens: int = 0, cached_tokens: int = 0, joules: float | None = None,
                 energy_source: str | None = None) -> ReplyRecord:
    """Sum one reply's TokenRecords into a ReplyRecord. The keyword counts and energy are used when
    there are no records (a reply cancelled before its first token); `joules` is added to the records'."""
    first = records[0] if records else None
    cached = first.cached_tokens if first else cached_tokens
    prefilled = first.prompt_tokens if first else max(prompt_tokens - cached, 0)
    ttft = first.seconds if first else 0.0
    decode = list(records[1:])
    dsec = sum(r.seconds for r in decode)
    steps = [r.joules for r in records if r.joules is not None]
    if steps or joules is not None:
        joules = sum(steps) + (joules or 0.0)
    source = next((r.energy_source for r in records if r.energy_source), energy_source)
    label = "none" if joules is None else ("measured" if source and source.startswith("measured") else "estimated")
    elec, hw, cost = _reply_cost(costs, joules=joules, seconds=ttft + dsec, measured=label == "measured",
                                 tokens=len(records))
    drafted = sum(getattr(r, "drafted", 0) for r in records)
    accepted = sum(getattr(r, "accepted", 0) for r in records)
    forwards = sum(getattr(r, "forwards", 1) for r in decode)
    return ReplyRecord(
        prompt_tokens=cached + prefilled, cached_tokens=cached, prefill_tokens=prefilled,
        generated_tokens=len(records), finish_reason=(records[-1].finish_reason if records else None) or "cancelled",
        ttft_s=ttft, prefill_tokens_per_s=prefilled / ttft if first and ttft > 0 else None,
        decode_tokens_per_s=len(decode) / dsec if dsec > 0 else None, total_s=ttft + dsec,
        joules=joules, energy=label, energy_source=source,
        cost=cost, currency=costs.currency, cost_electricity=elec, cost_hardware=hw,
        queue_s=queue_s, model=model, created=time.time(),
        draft_tokens=drafted, accepted_tokens=accepted, acceptance_rate=accepted / drafted if drafted else None,
        tokens_per_forward=len(decode) / forwards if forwards else None)


def _reply_cost(c: CostSettings, *, joules: float | None, seconds: float, measured: bool,
                tokens: int) -> tuple[float | None, float | None, float | None]:
    """(electricity, hardware, total) for one reply, through bench's per-million-token cost model."""
    if not tokens or seconds <= 0:
        return None, None, None
    per = tokens / cost_mod.TOKENS_PER_MTOK
    try:
        rep = cost_mod.cost_report(
            tokens_per_s=tokens / seconds, currency=c.currency, device_price=c.device_price,
            lifetime_years=c.lifetime_years, duty_cycle=c.duty_cycle,
            joules_per_token=None if joules is None else max(joules, 0.0) / tokens,
            price_per_kwh=c.price_per_kwh, energy_measured=measured)
    except cost_mod.CostInputError:
        return None, None, None
    elec, hw, total = rep["electricity_per_mtok"], rep["hardware_per_mtok"], rep["total_per_mtok"]
    return tuple(None if x is None else x * per for x in (elec, hw, total))


def format_record(r: ReplyRecord) -> str:
    """One line for `chat --stats`."""
    def tps(x):
        return f"{x:.1f} tok/s" if x else "-"
    parts = [f"prompt {r.prompt_tokens} tok ({r.cached_tokens} cached), {tps(r.prefill_tokens_per_s)}",
             f"first token {r.ttft_s * 1000:.0f} ms",
             f"decode {max(r.generated_tokens - 1, 0)} tok, {tps(r.decode_tokens_per_s)}"]
    if r.draft_tokens:
        parts.append(f"speculative: {r.accepted_tokens}/{r.draft_tokens} drafts accepted "
                     f"({r.acceptance_rate:.0%}), {r.tokens_per_forward:.2f} tok/forward")
    if r.joules is not None:
        parts.append(f"{r.joules:.3g} J {r.energy}")
    if r.cost is not None:
        parts.append(f"{r.cost:.3g} {r.currency}")
    return "[" + " | ".join(parts) + f" | stop: {r.finish_reason}]"


def log_reply(record: ReplyRecord, **extra) -> None:
    if REPLY_LOGGER.isEnabledFor(logging.INFO):
        REPLY_LOGGER.info("reply", extra={"reply": record, "reply_extra": extra})


class JsonlHandler(logging.Handler):
    """Appends each logged reply as one JSON line; the file is opened per write, so a rotated or
    deleted log is recreated and several processes can append to one file."""

    def __init__(self, path):
        super().__init__(logging.INFO)
        self.path = Path(path)

    def emit(self, record: logging.LogRecord) -> None:
        reply = getattr(record, "reply", None)
        if reply is None:
            return
        try:
            line = json.dumps({**reply.as_dict(), **getattr(record, "reply_extra", {})}, ensure_ascii=False)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except Exception:  # noqa: BLE001  (logging must never break a reply)
            self.handleError(record)


def log_replies_to(path) -> JsonlHandler:
    """Append one JSON line per reply to `path` (the CLI's --metrics-log)."""
    handler = JsonlHandler(path)
    REPLY_LOGGER.addHandler(handler)
    REPLY_LOGGER.setLevel(logging.INFO)
    REPLY_LOGGER.propagate = False
    return handler
