"""The HTTP layer: OpenAI-compatible routes, the chat page, /health and /metrics, on Starlette.

Requests are parsed and checked here (protocol.py), tokenized in a worker thread, and handed to the
engine's model loop; replies come back as TokenRecords. A client that goes away (stream or not) is
noticed by a task watching the ASGI `receive` channel, which cancels its job at once.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import EdgeLLMError, OutOfMemoryError
from . import ollama
from . import protocol as P
from .engine import Engine, Job, JobFailed, QueueFull, ShuttingDown

log = logging.getLogger("edge_llm.serve")
DEFAULT_MAX_BODY = 2 << 20
DEFAULT_MAX_TOKENS = 1024


def build_app(engine: Engine, *, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
              allowed_hosts: list[str] | None = None, max_tokens: int | None = DEFAULT_MAX_TOKENS) -> Starlette:
    """`max_tokens`: the server's reply length for a request that names none, and the most any request
    gets (more is clamped, finish_reason "length", as llama-server's -n); None: the context is the limit."""
    model = engine.model
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    created = int(time.time())

    def auth(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise P.ApiError("invalid or missing API key (send 'Authorization: Bearer KEY')", status=401,
                             type="authentication_error", code="invalid_api_key",
                             headers={"WWW-Authenticate": "Bearer"})

    async def read_json(request: Request) -> dict:
        auth(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            # also keeps web pages from posting here with a CORS-free "simple" request
            raise P.ApiError("send the body as JSON with 'Content-Type: application/json'", status=415)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            raise _too_large(max_body_bytes)
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    raise _too_large(max_body_bytes)
                chunks.append(chunk)
        except ClientDisconnect:
            raise P.ApiError("the client went away while sending the body") from None
        return P.parse_json(b"".join(chunks))

    def max_new(n_prompt: int, requested: int | None, param: str) -> int:
        room = model.context_length - n_prompt
        if room < 1:
            raise P.ApiError(f"the prompt is {n_prompt} tokens; this server's context holds {model.context_length} "
                             f"(prompt and reply together)", code="context_length_exceeded", param=param)
        return min(x for x in (requested, max_tokens, room) if x is not None)

    def submit(ids, req: P.GenerationRequest, *, chat: bool, tag: str) -> Job:
        n = max_new(len(ids), req.max_tokens, "messages" if chat else "prompt")
        try:
            return engine.submit(ids, params=req.params, max_new_tokens=n,
                                 stop_strings=(model.stop_strings if chat else []) + req.stop,
                                 stop_ids=model.stop_ids if chat else model.tokenizer.eos_ids, tag=tag,
                                 use_cache=req.cache_prompt)
        except QueueFull as e:
            raise P.ApiError(str(e), status=429, type="rate_limit_error", code="queue_full",
                             headers={"Retry-After": str(e.retry_after)}) from None
        except ShuttingDown as e:
            raise P.ApiError(str(e), status=503, code="server_shutting_down") from None
        except OutOfMemoryError as e:      # its KV cache does not fit beside the busy slots' (edge_llm.slots)
            raise P.ApiError(str(e), status=503, code="insufficient_memory",
                             headers={"Retry-After": str(engine.retry_after())}) from None

    async def chat_completions(request: Request) -> Response:
        body = await read_json(request)
        req = P.parse_chat(body, defaults=model.sampling(), vocab_size=model.session.vocab)
        try:
            ids = await run_in_threadpool(model.chat_ids, req.messages)
        except (EdgeLLMError, ValueError) as e:
            raise P.ApiError(str(e), param="messages") from None
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        job = submit(ids, req, chat=True, tag=rid)
        name = engine.name
        if not req.stream:
            text = await collect(job, request)
            return JSONResponse(P.chat_response(rid, name, text, job.record))
        t = int(time.time())

        async def chunks():
            yield P.sse(P.chat_chunk(rid, name, t, delta={"role": "assistant", "content": ""},
                                     include_usage=req.include_usage))
            last = None
            async for rec in job.stream():
                last = rec
                if rec.text or rec.finish_reason:
                    yield P.sse(P.chat_chunk(rid, name, t, delta={"content": rec.text} if rec.text else {},
                                             finish=rec.finish_reason, include_usage=req.include_usage))
            if last is None or last.finish_reason is None:
                yield P.sse(P.chat_chunk(rid, name, t, delta={}, finish="cancelled", include_usage=req.include_usage))
            if req.include_usage:
                yield P.sse(P.chat_chunk(rid, name, t, rec=job.record, include_usage=True))
        return SSEResponse(job, chunks())

    async def completions(request: Request) -> Response:
        body = await read_json(request)
        req = P.parse_completion(body, defaults=model.sampling(), vocab_size=model.session.vocab)
        ids = req.prompt if isinstance(req.prompt, list) else await run_in_threadpool(
            model.tokenizer.encode, req.prompt, bos=True)
        if not ids:
            raise P.ApiError("the prompt is empty", param="prompt")
        rid = "cmpl-" + uuid.uuid4().hex[:24]
        job = submit(ids, req, chat=False, tag=rid)
        name = engine.name
        if not req.stream:
            text = await collect(job, request)
            return JSONResponse(P.completion_response(rid, name, text, job.record))
        t = int(time.time())

        async def chunks():
            async for rec in job.stream():
                if rec.text or rec.finish_reason:
                    yield P.sse(P.completion_chunk(rid, name, t, text=rec.text, finish=rec.finish_reason,
                                                   include_usage=req.include_usage))
            if req.include_usage:
                yield P.sse(P.completion_chunk(rid, name, t, rec=job.record, include_usage=True))
        return SSEResponse(job, chunks())

    async def collect(job: Job, request: Request) -> str:
        watcher = asyncio.create_task(_cancel_on_disconnect(request.receive, job))
        try:
            return "".join([rec.text async for rec in job.stream()])
        except JobFailed as e:
            raise P.ApiError(f"generation failed: {e}", status=e.status) from None
        finally:
            job.cancel()          # a no-op when it finished; stops it when this handler was cancelled
            watcher.cancel()

    async def models(request: Request) -> Response:
        auth(request)
        return JSONResponse({"object": "list", "data": [_model_card(engine, created)]})

    async def model_info(request: Request) -> Response:
        auth(request)
        if request.path_params["model"] != engine.name:
            raise P.ApiError(f"model '{request.path_params['model']}' not found", status=404,
                             code="model_not_found", param="model")
        return JSONResponse(_model_card(engine, created))

    async def props(request: Request) -> Response:
        """llama-server's /props: the defaults a request gets (the package's generation_config and this
        server's max tokens; n_predict -1: only the context limits a reply). The chat page starts from them."""
        auth(request)
        d = model.sampling()
        params = {k: getattr(d, k) for k in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                                             "presence_penalty", "frequency_penalty")}
        params["n_predict"] = max_tokens or -1
        return JSONResponse({"default_generation_settings": {"n_ctx": model.context_length, "params": params},
                             "total_slots": engine.slots, "model_alias": engine.name})

    async def health(request: Request) -> Response:
        ok = engine.healthy
        return JSONResponse({"status": "ok" if ok else "error", "model": engine.name, "slots": engine.slots,
                             "batched": engine.batched, "running": len(engine.active), "queued": len(engine.pending),
                             "prompt_cache": engine.prompt_cache.stats()}, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        auth(request)
        return PlainTextResponse(engine.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; "
                                           "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"})

    async def api_error(request: Request, exc: P.ApiError) -> Response:
        body = ollama.error_body(exc) if ollama.is_ollama(request.url.path) else exc.body()
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        err = P.ApiError(exc.detail if isinstance(exc.detail, str) else "error", status=exc.status_code,
                         code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s", request.url.path, exc_info=exc)
        return JSONResponse(P.ApiError("internal server error", status=500).body(), status_code=500)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/props", props, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model_info, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        *ollama.routes(engine=engine, auth=auth, read_json=read_json, submit=submit, collect=collect,
                       stream_response=NDJSONResponse),
    ]
    middleware = [Middleware(CountRequests, engine=engine, paths={r.path for r in routes})]
    if allowed_hosts:
        # a page on another site cannot reach a loopback server through DNS rebinding
        middleware.insert(0, Middleware(HostCheck, allowed=set(allowed_hosts)))
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={P.ApiError: api_error, HTTPException: http_error, Exception: server_error})


def _too_large(limit: int) -> P.ApiError:
    return P.ApiError(f"the request body is larger than {limit:,} bytes", status=413, code="request_too_large")


def _model_card(engine: Engine, created: int) -> dict:
    m = engine.model
    return {"id": engine.name, "object": "model", "created": created, "owned_by": "edge-llm",
            "context_length": m.context_length, "architecture": m.manifest.model.architecture}


async def _cancel_on_disconnect(receive, job: Job) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            job.cancel()
            return


class SSEResponse(StreamingResponse):
    """Server-sent events from an async iterator of byte chunks, cancelling `job` the moment the
    client goes away (whether the server reports that through `receive` or a failing `send`)."""
    kind = "text/event-stream"

    def __init__(self, job: Job, chunks):
        super().__init__(chunks, media_type=self.kind,
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job, self.chunks = job, chunks

    def end(self) -> bytes:
        return P.SSE_DONE

    def failed(self, e: JobFailed) -> bytes:
        return P.sse(P.ApiError(f"generation failed: {e}", status=e.status).body()) + P.SSE_DONE

    async def __call__(self, scope, receive, send) -> None:
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, self.job))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            try:
                async for chunk in self.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": self.end(), "more_body": False})
            except JobFailed as e:
                await send({"type": "http.response.body", "body": self.failed(e), "more_body": False})
        except OSError:
            pass                 # the client went away mid-send
        finally:
            self.job.cancel()
            watcher.cancel()
            await self.chunks.aclose()


class NDJSONResponse(SSEResponse):
    """Ollama's streams: one JSON object per line; a failure is an {"error": ...} line, as Ollama sends."""
    kind = "application/x-ndjson"

    def end(self) -> bytes:
        return b""

    def failed(self, e: JobFailed) -> bytes:
        return json.dumps({"error": f"generation failed: {e}"}).encode() + b"\n"


class CountRequests:
    """Counts requests per route and status code for /metrics (unknown paths count as 'other')."""

    def __init__(self, app, *, engine: Engine, paths: set[str]):
        self.app, self.engine, self.paths = app, engine, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in self.paths else ("/v1/models/{model}" if path.startswith("/v1/models/") else "other")
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.engine.metrics.requests.inc(1, endpoint, str(status["code"]))


def host_name(host_header: str) -> str:
    """'example.org:8080' → 'example.org', '[::1]:8080' → '::1'."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class HostCheck:
    """Answers 400 to any request whose Host header is not one of `allowed` (names without ports)."""

    def __init__(self, app, *, allowed: set[str]):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(host).lower() not in self.allowed:
                err = P.ApiError(f"this server answers only to {', '.join(sorted(self.allowed))} (Host: {host!r})")
                return await JSONResponse(err.body(), status_code=400)(scope, receive, send)
        return await self.app(scope, receive, send)
