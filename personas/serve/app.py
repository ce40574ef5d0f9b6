"""The ASGI application: the OpenAI chat-completions interface, the persona endpoints, metrics and the dashboard.

Built with FastAPI on Starlette, served by uvicorn (`personas.serve.server`). FastAPI is what the OpenAI-compatible
servers labs already run are built on (vLLM's, SGLang's, llama-cpp-python's), so its routing, its streaming
responses and its deployment are familiar; request bodies are read and checked by this package's own code
(`personas.serve.protocol`) rather than by pydantic models, so that every bad request gets the OpenAI API's error
object and status instead of FastAPI's validation format, and the body is refused by size before it is parsed. The
interactive docs pages are off (they would be one more endpoint to guard).

Endpoints: ``POST /v1/chat/completions`` (plain and streamed, with the monitor's ``persona`` verdict),
``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/persona/score`` (text the server did not generate, read
through the served model), ``GET /v1/persona/stats`` (flag rate, the judge's agreement), ``GET /metrics``
(Prometheus), ``GET /`` (the dashboard), ``GET /health`` (no key needed). With an API key, every other endpoint needs
``Authorization: Bearer KEY`` (or HTTP Basic with the key as password, for a browser on the dashboard); the key is
compared in constant time and never logged or echoed. Every error is a JSON error object with a 4xx or 5xx status;
an exception inside the server is logged with its traceback and answered 500 without one.

(No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations at definition time, and
``Request`` is imported inside `create_app`, with the optional extra.)
"""

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from personas.errors import PersonasError
from personas.judging import wilson_interval
from personas.monitoring import GenerationRequest, render_chat
from personas.serve.dashboard import render_dashboard
from personas.serve.engine import Busy, Engine, Job
from personas.serve.protocol import (
    ApiError,
    Limits,
    check_context,
    chunk,
    completion,
    error_body,
    new_id,
    parse_chat_request,
    parse_score_request,
    sse,
)
from personas.serve.record import Recorder

logger = logging.getLogger(__name__)

__all__ = ["ServerState", "create_app"]

OPEN_PATHS = ("/health",)
ENDPOINTS = ("/v1/chat/completions", "/v1/models", "/v1/persona/score", "/v1/persona/stats", "/metrics", "/",
             "/health")


@dataclass
class ServerState:
    """What the endpoints share: the model, its monitor (or None), the engine, the record, metrics, limits."""

    model: Any
    monitor: Any
    engine: Engine
    recorder: Recorder
    metrics: Any
    served_name: str
    limits: Limits
    max_body_bytes: int
    api_key: str | None = None
    n_ctx: int = 0
    started: float = 0.0
    manifest: dict[str, Any] | None = None


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)


def _authorized(header: str, key: str) -> bool:
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        given = value
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    else:
        return False
    return hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))


class _Guard:
    """Pure ASGI middleware: the API key check, and per-endpoint request counts and latency."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = "/v1/models" if path.startswith("/v1/models") else (path if path in ENDPOINTS else "other")
        started = time.monotonic()
        status = {"code": 500}

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        metrics = self.state.metrics
        try:
            key = self.state.api_key
            if key is not None and path not in OPEN_PATHS:
                header = ""
                for name, value in scope.get("headers", []):
                    if name == b"authorization":
                        header = value.decode("latin-1")
                if not _authorized(header, key):
                    message = ("missing API key: send 'Authorization: Bearer KEY'" if not header else
                               "the API key given is not this server's key")
                    response = _json(401, error_body(message, code="invalid_api_key"),
                                     {"WWW-Authenticate": 'Bearer, Basic realm="personas"'})
                    return await response(scope, receive, counted)
            await self.app(scope, receive, counted)
        finally:
            metrics.requests.labels(endpoint=endpoint, status=str(status["code"])).inc()
            metrics.latency.labels(endpoint=endpoint).observe(time.monotonic() - started)


async def _read_json(request: Any, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the request body is {int(length)} bytes; this server accepts at most {limit}.",
                       code="request_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ApiError(413, f"the request body is over {limit} bytes, the most this server accepts.",
                           code="request_too_large")
    if not body:
        raise ApiError(400, "the request body is empty; expected a JSON object.", code="invalid_body")
    try:
        return json.loads(bytes(body))
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text; expected a JSON object.", code="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                            f"{exc.colno}); expected a JSON object.", code="invalid_json") from None


def _persona(state: ServerState, verdict: Any, review: str | None) -> dict[str, Any] | None:
    if verdict is None:
        return None
    return {**verdict.to_dict(), "review": review,
            "monitor": (state.monitor.source if state.monitor is not None else None)}


def create_app(state: ServerState) -> Any:
    """The FastAPI application over ``state`` (see the module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.responses import HTMLResponse, Response, StreamingResponse

    app = FastAPI(title="personas serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Any:
        return _json(exc.status, exc.body(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> Any:
        return _json(400, error_body(f"the request is not valid: {str(exc)[:200]}", code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Any:
        message = {404: "no such endpoint; see /v1/models, /v1/chat/completions, /v1/persona/score, "
                        "/v1/persona/stats, /metrics, /health",
                   405: "this endpoint does not take that method"}.get(exc.status_code, str(exc.detail))
        return _json(exc.status_code, error_body(message, code="not_found" if exc.status_code == 404 else None),
                     getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crash(_request: Request, exc: Exception) -> Any:
        logger.exception("unhandled error in a request")
        return _json(500, error_body("the server failed on this request; the error is in the server's log.",
                                     kind="server_error", code="internal_error"))

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "model": state.served_name, "monitor": state.monitor is not None,
                "queue_depth": state.engine.depth}

    def model_card() -> dict[str, Any]:
        return {"id": state.served_name, "object": "model", "created": int(state.started), "owned_by": "personas",
                "persona_monitor": state.monitor.describe() if state.monitor is not None else None}

    @app.get("/v1/models")
    async def models() -> Any:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> Any:
        if name != state.served_name:
            raise ApiError(404, f"the model {name[:60]!r} does not exist here; this server serves "
                                f"{state.served_name!r}.", param="model", code="model_not_found")
        return model_card()

    def busy() -> ApiError:
        return ApiError(503, "the server is busy (its queue is full); retry after a second.", kind="server_error",
                        code="server_busy", headers={"Retry-After": "1"})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await _read_json(request, state.max_body_bytes)
        req = parse_chat_request(body, state.served_name, state.limits)
        try:
            ids = render_chat(state.model, req.messages, state.monitor.capture if state.monitor else None)
        except PersonasError as exc:
            raise ApiError(400, str(exc), param="messages", code="invalid_value") from None
        check_context(len(ids), req.max_tokens, state.n_ctx)
        cid, created = new_id(), int(time.time())
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        gen = GenerationRequest(ids=ids, max_new_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                seed=req.seed, stop=req.stop,
                                on_text=(lambda text: put("text", text)) if req.stream else None,
                                on_done=lambda result: put("done", result))
        job = Job(gen, on_error=lambda exc: put("error", exc))
        gen.cancelled = job.cancelled.is_set
        try:
            state.engine.submit(job)
        except Busy:
            raise busy() from None
        state.metrics.prompt_tokens.inc(len(ids))
        prompt = req.messages[-1]["content"]

        async def finish(result: Any) -> dict[str, Any] | None:
            state.metrics.generated_tokens.inc(len(result.token_ids))
            if state.monitor is None:
                await run_in_threadpool(state.recorder.record, cid, prompt, result.text, None,
                                        finish=result.finish_reason)
                return None
            entry = await run_in_threadpool(state.recorder.record, cid, prompt, result.text, result.verdict,
                                            finish=result.finish_reason)
            return _persona(state, result.verdict, entry.get("review"))

        if req.stream:
            return StreamingResponse(_stream(state, req, cid, created, queue, job, finish, len(ids)),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        while True:
            try:
                kind, value = await asyncio.wait_for(queue.get(), timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancelled.set()
                    state.metrics.disconnects.inc()
                    return Response(status_code=499)
                continue
            if kind == "error":
                if isinstance(value, ConnectionAbortedError):
                    return Response(status_code=499)
                logger.error("generation failed: %s", value)
                raise ApiError(500, "generation failed on the server; the error is in the server's log.",
                               kind="server_error", code="generation_failed")
            if kind == "done":
                break
        result = value
        persona = await finish(result)
        return _json(200, completion(cid, state.served_name, result.text, result.finish_reason, len(ids),
                                     len(result.token_ids), persona))

    @app.post("/v1/persona/score")
    async def score(request: Request) -> Any:
        if state.monitor is None:
            raise ApiError(400, "this server runs without a monitor (--monitor none); there is nothing to score "
                                "with.", code="no_monitor")
        body = await _read_json(request, state.max_body_bytes)
        prompts, responses = parse_score_request(body, state.served_name)
        try:
            future = state.engine.run(lambda: state.monitor.verdicts(prompts, responses))
        except Busy:
            raise busy() from None
        try:
            verdicts = await asyncio.wrap_future(future)
        except PersonasError as exc:
            raise ApiError(400, str(exc), param="pairs", code="invalid_value") from None
        data = []
        for i, (p, r, v) in enumerate(zip(prompts, responses, verdicts, strict=True)):
            entry = await run_in_threadpool(state.recorder.record, f"score-{new_id()[9:]}", p, r, v, origin="scored")
            data.append({"index": i, "persona": _persona(state, v, entry.get("review"))})
        return {"object": "list", "model": state.served_name, "data": data}

    @app.get("/v1/persona/stats")
    async def stats() -> Any:
        return persona_stats(state)

    @app.get("/metrics")
    async def metrics() -> Any:
        state.metrics.queue_depth.set(state.engine.depth)
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/")
    async def dashboard(request: Request) -> Any:
        flagged_only = request.query_params.get("flagged") in ("1", "true", "yes")
        return HTMLResponse(render_dashboard(state, flagged_only=flagged_only))

    app.add_middleware(_Guard, state=state)
    return app


async def _stream(state: ServerState, req: Any, cid: str, created: int, queue: asyncio.Queue, job: Job,
                  finish: Any, n_prompt: int) -> Any:
    """The server-sent events of one streamed answer; a client that leaves stops its generation."""
    done = False
    try:
        yield sse(chunk(cid, state.served_name, created, {"role": "assistant", "content": ""}))
        while True:
            kind, value = await queue.get()
            if kind == "text":
                yield sse(chunk(cid, state.served_name, created, {"content": value}))
            elif kind == "error":
                logger.error("generation failed: %s", value)
                yield sse(error_body("generation failed on the server; the error is in the server's log.",
                                     kind="server_error", code="generation_failed"))
                done = True
                break
            elif kind == "done":
                persona = await finish(value)
                done = True
                yield sse(chunk(cid, state.served_name, created, {}, value.finish_reason, persona=persona))
                if req.include_usage:
                    n_out = len(value.token_ids)
                    yield sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                               "model": state.served_name, "choices": [],
                               "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                                         "total_tokens": n_prompt + n_out}})
                yield sse("[DONE]")
                break
    finally:
        if not done:
            job.cancelled.set()
            state.metrics.disconnects.inc()


def persona_stats(state: ServerState) -> dict[str, Any]:
    """The body of ``/v1/persona/stats``: answers, flags and the flag rate with its interval, the judge's agreement,
    the webhook's and the event log's counts."""
    rec = state.recorder
    n, k = rec.n_answers, rec.n_flagged
    lo, hi = wilson_interval(k, n)
    out: dict[str, Any] = {
        "object": "persona.stats", "model": state.served_name, "uptime_s": round(time.time() - state.started, 3),
        "monitor": state.monitor.describe() if state.monitor is not None else None,
        "answers": {"n": n, "flagged": k, "flag_rate": (k / n) if n else None, "flag_rate_ci95": [lo, hi]},
        "judge": rec.cascade.stats() if rec.cascade is not None else None,
        "webhook": None if rec.webhook is None else {"sent": rec.webhook.sent, "failed": rec.webhook.failed,
                                                     "dropped": rec.webhook.dropped, "pending": rec.webhook.pending},
        "events": None if rec.events is None else {"path": str(rec.events.path), "written": rec.events.n_written},
        "queue_depth": state.engine.depth,
    }
    return out
