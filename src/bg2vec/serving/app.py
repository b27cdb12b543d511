"""The routes: OpenAI's `/v1/embeddings`, a Cohere/Jina-shaped `/v1/rerank`, `/v1/models`, `/health`, `/metrics`, `/`.

    app = create_app(ServedModel(encoder, "my-encoder", truncate=False, instructions=Instructions()), ServeLimits())

Each API route reads the JSON body under a byte limit, checks it (`schemas.py`), tokenizes on one tokenizer
thread, queues the inputs (`batcher.py`) and answers when its rows are embedded, or drops them if the client
leaves first. Every error is OpenAI's shape; `Authorization: Bearer` is compared in constant time; one log line
per request, without texts or key.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .batcher import Batcher, BatchLimits, QueueFull
from .metrics import Metrics
from .model import ServedModel
from .schemas import ApiError, parse_embedding_request, parse_rerank_request

log = logging.getLogger("bg2vec.serve")
OPEN_ROUTES = ("/health", "/")  # answered without the API key: no model output, no texts
WARM_UP_TEXTS = ["Warm-up.", "A second, somewhat longer warm-up text for the first forward pass."]


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits and the batching queue's settings (plain values; `ServeConfig` fills them)."""

    max_inputs: int = 2048
    max_request_tokens: int = 300_000
    max_body_bytes: int = 2_000_000
    batching: BatchLimits = field(default_factory=BatchLimits)
    api_key: str | None = None


class ClientGone(Exception):
    """The client disconnected before its embeddings were ready."""


def create_app(served: ServedModel, limits: ServeLimits) -> FastAPI:
    """The FastAPI app over one served model; its lifespan starts the queue and runs a warm-up batch."""
    metrics = Metrics()
    tokenizer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bg2vec-tokenizer")
    state: dict[str, Any] = {"ready": False, "batcher": None}

    def embedder(worker: int) -> Callable[[list], torch.Tensor]:
        return lambda inputs: served.embed_inputs(inputs, limits.batching.batch_size, limits.batching.max_batch_tokens, worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher([embedder(i) for i in range(len(served.workers))], limits.batching, metrics)
        batcher.start()
        state["batcher"] = batcher
        loop = asyncio.get_running_loop()
        inputs = await loop.run_in_executor(tokenizer_thread, served.build_inputs, WARM_UP_TEXTS)
        await asyncio.gather(*(loop.run_in_executor(None, embedder(i), inputs) for i in range(len(served.workers))))
        state["ready"] = True
        log.info("ready: %s (%d dims)", served.name, served.dimensions)
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()  # every queued request is answered first
            tokenizer_thread.shutdown(wait=True)

    app = FastAPI(title="bg2vec", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    async def prepare(items: list, instruction: str | None) -> list:
        def build() -> list:
            return served.build_inputs(served.sentences(items, instruction))
        return await asyncio.get_running_loop().run_in_executor(tokenizer_thread, build)

    async def run(request: Request, inputs: list) -> torch.Tensor:
        """Queue the inputs and await their (N, H) rows; drop them if the client leaves first."""
        tokens = sum(len(item.input_ids) for item in inputs)
        if tokens > limits.max_request_tokens:
            raise ApiError(400, f"the request has {tokens} tokens; at most {limits.max_request_tokens} per request",
                           "input", "too_many_tokens")
        try:
            job = state["batcher"].submit(inputs)
        except QueueFull as full:
            raise ApiError(429, f"the server's queue is full; retry after {full.retry_after} s", None, "queue_full",
                           type="rate_limit_error", headers={"Retry-After": str(full.retry_after)}) from None
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not job.future.done():
            state["batcher"].cancel(job)
            raise ClientGone()
        return job.future.result()

    def model_name(requested: str | None) -> None:
        if requested is not None and requested != served.name:
            raise ApiError(404, f"The model '{requested[:100]}' does not exist; this server serves '{served.name}'",
                           "model", "model_not_found")

    async def embeddings(request: Request) -> dict[str, Any]:
        req = parse_embedding_request(await _json_body(request, limits.max_body_bytes), limits.max_inputs)
        model_name(req.model)
        if req.dimensions is not None and req.dimensions > served.dimensions:
            raise ApiError(400, f"'dimensions' is {req.dimensions}; this model's embeddings have {served.dimensions}",
                           "dimensions", "invalid_value")
        inputs = await prepare(req.inputs, req.instruction or served.instructions.for_type(req.input_type))
        vectors = await run(request, inputs)  # (N, H)
        if req.dimensions is not None:
            vectors = vectors[:, : req.dimensions]  # (N, D): a Matryoshka prefix
        if req.normalize:
            vectors = F.normalize(vectors, dim=-1)
        rows = vectors.numpy()
        tokens = sum(len(item.input_ids) for item in inputs)
        request.state.counts = (len(inputs), tokens)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": _encoded(row, req.encoding_format)} for i, row in enumerate(rows)],
            "model": served.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def rerank(request: Request) -> dict[str, Any]:
        req = parse_rerank_request(await _json_body(request, limits.max_body_bytes), limits.max_inputs)
        model_name(req.model)
        query = await prepare([req.query], req.instruction or served.instructions.query)
        documents = await prepare(req.documents, served.instructions.document)
        vectors = F.normalize(await run(request, query + documents), dim=-1)  # (1 + D, H)
        scores = (vectors[1:] @ vectors[0]).tolist()  # (D,) cosines
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: req.top_n]
        tokens = sum(len(item.input_ids) for item in query + documents)
        request.state.counts = (len(query) + len(documents), tokens)
        results = []
        for i in order:
            result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if req.return_documents:
                result["document"] = {"text": req.documents[i]}
            results.append(result)
        return {"object": "list", "model": served.name, "results": results,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": served.name, "object": "model", "created": 0, "owned_by": "bg2vec", "bg2vec": served.description()}
        ]}

    async def health(request: Request) -> Response:
        if not state["ready"]:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_text(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    def route(path: str, handler: Callable, method: str) -> None:
        async def endpoint(request: Request) -> Response:
            return await _answer(request, path, handler, limits.api_key, metrics)
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)

    for prefix in ("/v1", ""):
        route(f"{prefix}/embeddings", embeddings, "POST")
        route(f"{prefix}/rerank", rerank, "POST")
        route(f"{prefix}/models", models, "GET")
    route("/health", health, "GET")
    route("/metrics", metrics_text, "GET")
    route("/", index, "GET")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:  # unknown path, wrong method
        metrics.request_done("other", exc.status_code, 0.0)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(ApiError(exc.status_code, f"{request.method} {request.url.path[:100]}: {exc.detail}", None, code).body(),
                            status_code=exc.status_code)

    return app


async def _answer(request: Request, route: str, handler: Callable, api_key: str | None, metrics: Metrics) -> Response:
    """Auth, the handler, errors in OpenAI's shape, metrics and one log line (no texts, no key)."""
    started = time.monotonic()
    request.state.counts = None
    try:
        if api_key is not None and route not in OPEN_ROUTES:
            _check_key(request, api_key)
        result = await handler(request)
        response = result if isinstance(result, Response) else JSONResponse(result)
    except ApiError as error:
        response = JSONResponse(error.body(), status_code=error.status, headers=error.headers)
    except (ClientGone, ClientDisconnect):
        response = Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    except Exception:
        log.exception("%s %s failed", request.method, route)
        response = JSONResponse(ApiError(500, "the server failed to answer this request", None, "internal_error",
                                         type="server_error").body(), status_code=500)
    seconds = time.monotonic() - started
    metrics.request_done(route, response.status_code, seconds)
    counts = request.state.counts
    detail = f" inputs={counts[0]} tokens={counts[1]}" if counts else ""
    log.info("%s %s %d %.1f ms%s", request.method, route, response.status_code, seconds * 1000, detail)
    return response


def _check_key(request: Request, api_key: str) -> None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode())):
        raise ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer KEY'", None, "invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


async def _json_body(request: Request, max_bytes: int) -> Any:
    """The decoded JSON body: 415 for another content type, 413 past `max_bytes`, 400 for invalid JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, got {content_type[:60] or 'none'!r}", None,
                       "unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"the request body has {declared} bytes; at most {max_bytes}", None, "request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"the request body has more than {max_bytes} bytes", None, "request_too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {str(exc)[:100]}", None, "invalid_json") from None


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _encoded(row: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row.tolist()
