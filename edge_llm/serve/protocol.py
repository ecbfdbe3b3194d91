"""OpenAI request validation and response shapes. Pure functions on dicts: no HTTP here.

Every problem with a request is an `ApiError` that becomes an OpenAI-style error object
`{"error": {"message", "type", "param", "code"}}` with its HTTP status; nothing the client sends can
raise anything else. Omitted sampling fields take the package's generation_config.json defaults (as
`edge-llm chat` does), not OpenAI's temperature 1.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..sampling import SamplingParams

MAX_STOP = 4
CHAT_ROLES = ("system", "user", "assistant", "tool")
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


class ApiError(Exception):
    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class GenerationRequest:
    """What the engine needs, parsed from either endpoint."""
    params: SamplingParams
    max_tokens: int | None
    stop: list[str]
    stream: bool
    include_usage: bool
    model: str | None
    messages: list[dict] | None = None          # chat
    prompt: str | list[int] | None = None       # completions
    cache_prompt: bool = True                   # llama-server's field: false = no prompt-cache reuse
    extra: dict = field(default_factory=dict)


def parse_json(raw: bytes) -> dict:
    def no_constants(name):
        raise ValueError(f"{name} is not valid JSON")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except UnicodeDecodeError:
        raise ApiError("the request body is not UTF-8") from None
    except ValueError as e:
        raise ApiError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    return body


# ------------------------------------------------------------------------------------------- fields
def _number(body: dict, name: str, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ApiError(f"'{name}' must be a number", param=name)
    if v < lo or v > hi or (lo_open and v == lo):
        raise ApiError(f"'{name}' must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}; got {v:g}", param=name)
    return float(v)


def _integer(body: dict, name: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(f"'{name}' must be an integer", param=name)
    if v < lo or (hi is not None and v > hi):
        raise ApiError(f"'{name}' must be >= {lo}" + (f" and <= {hi}" if hi is not None else "") + f"; got {v}",
                       param=name)
    return v


def _bool(body: dict, name: str, default: bool = False) -> bool:
    v = body.get(name, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ApiError(f"'{name}' must be true or false", param=name)
    return v


def _stop(body: dict) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ApiError("'stop' must be a string or a list of strings", param="stop")
    if len(v) > MAX_STOP:
        raise ApiError(f"'stop' takes at most {MAX_STOP} strings", param="stop")
    return [s for s in v if s]


def _logit_bias(body: dict, vocab_size: int) -> dict[int, float]:
    v = body.get("logit_bias")
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ApiError("'logit_bias' must be an object mapping token ids to numbers", param="logit_bias")
    out = {}
    for k, b in v.items():
        try:
            tid = int(k)
        except (TypeError, ValueError):
            raise ApiError(f"'logit_bias' key {k!r} is not a token id", param="logit_bias") from None
        if not 0 <= tid < vocab_size:
            raise ApiError(f"'logit_bias' token id {tid} is outside the vocabulary (0..{vocab_size - 1})",
                           param="logit_bias")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not -100 <= b <= 100:
            raise ApiError(f"'logit_bias' values must be numbers in [-100, 100]; got {b!r} for {k}",
                           param="logit_bias")
        out[tid] = float(b)
    return out


def _unsupported(body: dict) -> None:
    if body.get("n") not in (None, 1):
        raise ApiError("only n=1 is supported", param="n")
    for name in ("tools", "functions"):
        if body.get(name):
            raise ApiError(f"'{name}' is not supported by this server", param=name)
    if body.get("logprobs") not in (None, False, 0) or body.get("top_logprobs") not in (None, 0):
        raise ApiError("'logprobs' is not supported by this server", param="logprobs")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise ApiError("only response_format {\"type\": \"text\"} is supported", param="response_format")
    if body.get("echo") or body.get("suffix") or body.get("best_of") not in (None, 1):
        raise ApiError("'echo', 'suffix' and 'best_of' are not supported by this server")


def _common(body: dict, *, defaults: SamplingParams, vocab_size: int,
            max_tokens_names: tuple[str, ...]) -> GenerationRequest:
    _unsupported(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError("'model' must be a string", param="model")
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1, lo_open=True)
    overrides = {
        "temperature": temperature, "top_p": top_p,
        "top_k": _integer(body, "top_k", 0), "min_p": _number(body, "min_p", 0, 1),
        "repetition_penalty": _number(body, "repetition_penalty", 0, 10, lo_open=True),
        "presence_penalty": _number(body, "presence_penalty", -2, 2),
        "frequency_penalty": _number(body, "frequency_penalty", -2, 2),
        "seed": _integer(body, "seed", -(2 ** 63), 2 ** 63 - 1),
        "logit_bias": _logit_bias(body, vocab_size) or None,
    }
    if overrides["min_p"] is not None and overrides["min_p"] >= 1:
        raise ApiError("'min_p' must be < 1", param="min_p")
    if overrides["seed"] is not None:
        overrides["seed"] %= 2 ** 63     # numpy's generator takes non-negative seeds
    try:
        params = replace(defaults, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as e:
        raise ApiError(str(e)) from None
    max_tokens = None
    for name in max_tokens_names:
        v = _integer(body, name, 1)
        if v is not None:
            max_tokens = v if max_tokens is None else min(max_tokens, v)
    stream = _bool(body, "stream")
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not isinstance(opts, dict):
            raise ApiError("'stream_options' must be an object", param="stream_options")
        if not stream:
            raise ApiError("'stream_options' is only allowed with stream: true", param="stream_options")
        include_usage = _bool(opts, "include_usage")
    return GenerationRequest(params=params, max_tokens=max_tokens, stop=_stop(body), stream=stream,
                             include_usage=include_usage, model=model,
                             cache_prompt=_bool(body, "cache_prompt", True))


def _content(m: dict, i: int) -> str:
    c = m.get("content")
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        texts = []
        for part in c:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(f"messages[{i}].content: only text parts are supported", param=f"messages[{i}].content")
            texts.append(part["text"])
        return "".join(texts)
    raise ApiError(f"messages[{i}].content must be a string or a list of text parts", param=f"messages[{i}].content")


def parse_chat(body: dict, *, defaults: SamplingParams, vocab_size: int) -> GenerationRequest:
    req = _common(body, defaults=defaults, vocab_size=vocab_size,
                  max_tokens_names=("max_tokens", "max_completion_tokens"))
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError("'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise ApiError(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = m.get("role")
        role = "system" if role == "developer" else role
        if role not in CHAT_ROLES:
            raise ApiError(f"messages[{i}].role: unknown role {role!r} (known: {', '.join(CHAT_ROLES)}, developer)",
                           param=f"messages[{i}].role")
        out.append({"role": role, "content": _content(m, i)})
    req.messages = out
    return req


def parse_completion(body: dict, *, defaults: SamplingParams, vocab_size: int) -> GenerationRequest:
    req = _common(body, defaults=defaults, vocab_size=vocab_size, max_tokens_names=("max_tokens",))
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
        p = p[0]     # a batch of one
    if isinstance(p, str):
        req.prompt = p
    elif isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
        bad = [t for t in p if not 0 <= t < vocab_size]
        if bad:
            raise ApiError(f"prompt token id {bad[0]} is outside the vocabulary (0..{vocab_size - 1})", param="prompt")
        req.prompt = list(p)
    else:
        raise ApiError("'prompt' must be a string or a non-empty list of token ids (one prompt per request)",
                       param="prompt")
    if req.max_tokens is None and "max_tokens" not in body:
        req.max_tokens = 16          # OpenAI's default for completions
    return req


# ------------------------------------------------------------------------------------------- responses
def usage(rec) -> dict:
    """OpenAI usage plus this server's record (speed, energy, cost) under "edge_llm"."""
    return {
        "prompt_tokens": rec.prompt_tokens, "completion_tokens": rec.generated_tokens,
        "total_tokens": rec.prompt_tokens + rec.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": rec.cached_tokens},
        "edge_llm": {k: getattr(rec, k) for k in (
            "prefill_tokens", "ttft_s", "queue_s", "prefill_tokens_per_s", "decode_tokens_per_s", "total_s",
            "joules", "energy", "energy_source", "cost", "currency", "cost_electricity", "cost_hardware",
            "draft_tokens", "accepted_tokens", "acceptance_rate", "tokens_per_forward")},
    }


def chat_response(rid: str, model: str, text: str, rec) -> dict:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": FINISH.get(rec.finish_reason, "stop")}],
            "usage": usage(rec)}


def chat_chunk(rid: str, model: str, created: int, *, delta: dict | None = None, finish: str | None = None,
               rec=None, include_usage: bool = False) -> dict:
    chunk = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
             "system_fingerprint": None,
             "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                   "finish_reason": FINISH.get(finish) if finish else None}]}
    if include_usage:
        chunk["usage"] = usage(rec) if rec is not None else None
    return chunk


def completion_response(rid: str, model: str, text: str, rec) -> dict:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": FINISH.get(rec.finish_reason, "stop")}],
            "usage": usage(rec)}


def completion_chunk(rid: str, model: str, created: int, *, text: str | None = None, finish: str | None = None,
                     rec=None, include_usage: bool = False) -> dict:
    chunk = {"id": rid, "object": "text_completion", "created": created, "model": model, "system_fingerprint": None,
             "choices": [] if text is None else [{"index": 0, "text": text, "logprobs": None,
                                                  "finish_reason": FINISH.get(finish) if finish else None}]}
    if include_usage:
        chunk["usage"] = usage(rec) if rec is not None else None
    return chunk


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
