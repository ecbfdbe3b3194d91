"""Ollama's API on the same engine: `POST /api/chat`, `POST /api/generate`, `GET /api/tags` (and
`/api/version`), so apps that speak Ollama work unchanged. Shapes follow Ollama's docs/api.md:
streaming is the default and is NDJSON (one JSON object per line, `"done": false` per piece, then one
`"done": true` object with the counts and nanosecond durations); errors are `{"error": "message"}`.
Request fields map onto the OpenAI parser's (protocol.py), so every value is checked the same way:
`options.temperature/top_p/top_k/min_p/seed/stop/repeat_penalty/presence_penalty/frequency_penalty`,
`options.num_predict` (max tokens; -1 or absent: the server's --max-tokens). `/api/generate` renders the
prompt (and `system`) in the model's chat template as Ollama does, unless `"raw": true`.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import EdgeLLMError
from . import protocol as P

VERSION = "0.6.0"          # the Ollama API version whose shapes these follow
OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "seed": "seed",
           "stop": "stop", "repeat_penalty": "repetition_penalty", "presence_penalty": "presence_penalty",
           "frequency_penalty": "frequency_penalty"}
DONE_REASON = {"eos": "stop", "stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def openai_body(body: dict) -> dict:
    """The OpenAI-shaped request equivalent to an Ollama one (checked by protocol.py afterwards)."""
    opts = body.get("options") or {}
    if not isinstance(opts, dict):
        raise P.ApiError("'options' must be an object", param="options")
    out = {OPTIONS[k]: v for k, v in opts.items() if k in OPTIONS}
    n = opts.get("num_predict")
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n < 0):
        out["max_tokens"] = n                       # -1 / -2: no limit of the request's own
    stream = body.get("stream", True)
    out["stream"] = stream
    if body.get("format") not in (None, ""):
        raise P.ApiError("'format' (JSON output) is not supported by this server", param="format")
    if body.get("tools"):
        raise P.ApiError("'tools' is not supported by this server", param="tools")
    return out


async def _ids(tokenize, param: str) -> list[int]:
    """Tokenize off the event loop; a template or tokenizer error is the request's 400."""
    try:
        return await run_in_threadpool(tokenize)
    except (EdgeLLMError, ValueError) as e:
        raise P.ApiError(str(e), param=param) from None


def stats(rec) -> dict:
    ns = 1_000_000_000
    decode_s = max(0.0, rec.total_s - rec.ttft_s)
    return {"done_reason": DONE_REASON.get(rec.finish_reason, "stop"),
            "total_duration": int((rec.total_s + rec.queue_s) * ns),
            "load_duration": 0, "prompt_eval_count": rec.prompt_tokens, "prompt_eval_duration": int(rec.ttft_s * ns),
            "eval_count": rec.generated_tokens, "eval_duration": int(decode_s * ns)}


def routes(*, engine, auth, read_json, submit, collect, stream_response) -> list[Route]:
    """`read_json`, `submit`, `collect` and `stream_response` are build_app's (auth, body limits, queue,
    disconnects); this module only translates shapes."""
    model = engine.model

    def line(obj: dict) -> bytes:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"

    async def run(request: Request, req: P.GenerationRequest, ids, *, key: str, raw: bool):
        job = submit(ids, req, chat=not raw, tag=f"ollama-{key}")
        name = engine.name

        def piece(text: str) -> dict:
            if key == "chat":
                return {"model": name, "created_at": _now(), "message": {"role": "assistant", "content": text}}
            return {"model": name, "created_at": _now(), "response": text}

        if not req.stream:
            text = await collect(job, request)
            return JSONResponse({**piece(text), "done": True, **stats(job.record)})

        async def chunks():
            async for rec in job.stream():
                if rec.text:
                    yield line({**piece(rec.text), "done": False})
            yield line({**piece(""), "done": True, **stats(job.record)})
        return stream_response(job, chunks())

    async def chat(request: Request) -> Response:
        body = await read_json(request)
        msgs = body.get("messages")
        req = P.parse_chat({**openai_body(body), "messages": msgs}, defaults=model.sampling(),
                           vocab_size=model.session.vocab)
        ids = await _ids(lambda: model.chat_ids(req.messages), "messages")
        return await run(request, req, ids, key="chat", raw=False)

    async def generate(request: Request) -> Response:
        body = await read_json(request)
        prompt, system, raw = body.get("prompt"), body.get("system"), body.get("raw", False)
        if not isinstance(prompt, str) or not prompt:
            raise P.ApiError("'prompt' must be a non-empty string", param="prompt")
        if system is not None and not isinstance(system, str):
            raise P.ApiError("'system' must be a string", param="system")
        req = P.parse_completion({**openai_body(body), "prompt": prompt}, defaults=model.sampling(),
                                 vocab_size=model.session.vocab)
        if "max_tokens" not in openai_body(body):
            req.max_tokens = None                       # Ollama has no 16-token default
        if raw is True:
            ids = await _ids(lambda: model.tokenizer.encode(prompt, bos=True), "prompt")
        else:
            ids = await _ids(lambda: model.chat_ids(([{"role": "system", "content": system}] if system else [])
                                                    + [{"role": "user", "content": prompt}]), "prompt")
        return await run(request, req, ids, key="generate", raw=raw is True)

    async def tags(request: Request) -> Response:
        auth(request)
        m = model.manifest
        q = m.quantization
        size = sum(f.stat().st_size for f in m.path.iterdir() if f.is_file())
        card = {"name": engine.name, "model": engine.name, "modified_at": _now(), "size": size,
                "digest": "", "details": {"format": "onnx", "family": m.model.architecture,
                                          "families": [m.model.architecture],
                                          "parameter_size": f"{m.model.parameters / 1e6:.1f}M",
                                          "quantization_level": q.get("precision", "")}}
        return JSONResponse({"models": [card]})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    return [Route("/api/chat", chat, methods=["POST"]), Route("/api/generate", generate, methods=["POST"]),
            Route("/api/tags", tags, methods=["GET"]), Route("/api/version", version, methods=["GET"])]


def is_ollama(path: str) -> bool:
    return path.startswith("/api/")


def error_body(err: P.ApiError) -> dict:
    return {"error": err.message}

