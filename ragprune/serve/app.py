"""The FastAPI application of ``ragprune serve``: rerank, prune, retrieve and context over HTTP.

Routes (bodies in :mod:`ragprune.serve.schemas`; OpenAPI at ``/docs`` and ``/openapi.json``):

* ``POST /v1/rerank``, ``POST /v2/rerank``: Cohere rerank (v1 also answers Jina's body).
* ``POST /rerank``: text-embeddings-inference rerank.
* ``POST /prune``: sentence-level pruning, optionally under one token budget.
* ``POST /retrieve``, ``POST /context``: only with an index (``create_app(..., retriever=...)``).
* ``GET /health`` (never needs the API key), ``GET /metrics`` (Prometheus text format).

Model work goes through one :class:`~ragprune.serve.batching.DynamicBatcher` per kind of work,
so concurrent requests share model batches and the event loop never blocks on a forward pass.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import HTTPBearer
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as _e:  # the serve extra is missing
    raise ImportError(f"ragprune serve needs fastapi, uvicorn and prometheus-client ({_e}): "
                      "pip install 'ragprune[serve]'") from _e

from .._validate import check_query
from ..pipeline import Context, Pipeline, fit_context
from ..prune.base import Pruner
from ..rerank.base import Reranker
from ..retrieve.base import Retriever
from ..text import _TOKEN_RE, count_tokens
from ..types import Document, PrunedDocument, ScoredDocument
from .batching import DynamicBatcher, QueueFullError
from .schemas import (
    ApiVersion,
    BilledUnits,
    CohereMeta,
    CohereRerankRequest,
    CohereResult,
    CohereV1RerankResponse,
    CohereV2RerankResponse,
    ContextDocument,
    ContextRequest,
    ContextResponse,
    ErrorResponse,
    HealthResponse,
    JinaUsage,
    PrunedResult,
    PruneRequest,
    PruneResponse,
    RerankDocumentOut,
    RetrievedDocument,
    RetrieveRequest,
    RetrieveResponse,
    TEIRank,
    TEIRerankRequest,
)
from .settings import ServeSettings

logger = logging.getLogger(__name__)

__all__ = ["create_app", "ApiError", "sigmoid", "truncate_tokens", "load_reranker", "load_pruner", "load_retriever"]

#: Paths that never need the API key (liveness probes, the API description).
PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})

_ERRORS: dict[int, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not readable (bad encoding)"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    413: {"model": ErrorResponse, "description": "Too many documents or too large a body"},
    422: {"model": ErrorResponse, "description": "Malformed request (query too long, bad field...)"},
    503: {"model": ErrorResponse, "description": "Queue full; retry after the Retry-After header's seconds"},
}


class ApiError(Exception):
    """An error answered as an :class:`~ragprune.serve.schemas.ErrorResponse` with ``status``."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message, self.headers = status, error_type, message, headers or {}


class _AsciiJSON(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate in a document (valid JSON input) cannot make
    the reply unencodable."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error(status: int, error_type: str, message: str, detail: list[dict[str, Any]] | None = None,
           headers: dict[str, str] | None = None) -> _AsciiJSON:
    body = ErrorResponse(message=message, error_type=error_type, detail=detail).model_dump(exclude_none=True)
    return _AsciiJSON(body, status_code=status, headers=headers)


def sigmoid(x: float) -> float:
    """``1 / (1 + exp(-x))`` without overflow: a cross-encoder logit as a relevance in [0, 1].

    Args:
        x: A model score (e.g. a logit).

    Returns:
        The score mapped into [0, 1], in the same order as ``x``.

    Example:
        >>> sigmoid(0.0)
        0.5
    """
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def truncate_tokens(text: str, max_tokens: int) -> str:
    """The prefix of ``text`` holding its first ``max_tokens`` tokens, by ragprune's default
    counter (:func:`ragprune.text.count_tokens`: words and punctuation marks).

    Args:
        text: Any text.
        max_tokens: Tokens to keep (>= 1).

    Returns:
        ``text`` cut after its ``max_tokens``-th token (whole when it has no more).

    Example:
        >>> truncate_tokens("Scurvy is caused by a lack of vitamin C.", 3)
        'Scurvy is caused'
    """
    for i, m in enumerate(_TOKEN_RE.finditer(text)):
        if i + 1 == max_tokens:
            return text[: m.end()]
    return text


# ---------------------------------------------------------------- jobs run in worker threads
@dataclass(frozen=True)
class _RerankJob:
    query: str
    docs: list[Document]


@dataclass(frozen=True)
class _PruneJob:
    query: str
    docs: list[Document]
    threshold: float | None
    max_tokens: int | None


@dataclass(frozen=True)
class _PruneOut:
    pruned: list[PrunedDocument]
    context: Context | None


@dataclass(frozen=True)
class _ContextJob:
    query: str
    max_tokens: int
    candidates: int
    top_k: int


@dataclass(frozen=True)
class _RetrieveJob:
    query: str
    k: int


def _rerank_batch(reranker: Reranker) -> Callable[[list[_RerankJob]], list[list[ScoredDocument]]]:
    def run(jobs: list[_RerankJob]) -> list[list[ScoredDocument]]:
        return reranker.rerank_many([j.query for j in jobs], [j.docs for j in jobs])

    return run


def _prune_batch(pruner: Pruner) -> Callable[[list[_PruneJob]], list[_PruneOut]]:
    def rethreshold(p: PrunedDocument, threshold: float) -> PrunedDocument:
        if len(p.sentence_scores) != len(p.sentences):
            raise ValueError(f"/prune: the loaded pruner ({type(pruner).__name__}) gives no sentence scores, so "
                             "'threshold' cannot be applied; leave it out.")
        return pruner.select(p, [j for j, s in enumerate(p.sentence_scores) if s >= threshold])

    def run(jobs: list[_PruneJob]) -> list[_PruneOut]:
        pruned = pruner.prune_many([j.query for j in jobs], [j.docs for j in jobs])
        out = []
        for job, ps in zip(jobs, pruned):
            if job.threshold is not None:
                ps = [rethreshold(p, job.threshold) for p in ps]
            ctx = None
            if job.max_tokens is not None:
                ctx = fit_context(job.query, ps, job.max_tokens, pruner=pruner, token_counter=pruner.token_counter,
                                  headers=False)
            out.append(_PruneOut(ps, ctx))
        return out

    return run


def _context_batch(retriever: Retriever, reranker: Reranker, pruner: Pruner
                   ) -> Callable[[list[_ContextJob]], list[Context]]:
    def run(jobs: list[_ContextJob]) -> list[Context]:
        groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        for i, j in enumerate(jobs):
            groups[(j.max_tokens, j.candidates, j.top_k)].append(i)
        out: list[Context | None] = [None] * len(jobs)
        for (max_tokens, candidates, top_k), idx in groups.items():
            pipe = Pipeline(retriever, reranker, pruner, max_tokens=max_tokens, candidates=candidates, top_k=top_k,
                            token_counter=pruner.token_counter)
            for i, ctx in zip(idx, pipe.run_many([jobs[i].query for i in idx])):
                out[i] = ctx
        return out  # type: ignore[return-value]

    return run


def _retrieve_batch(retriever: Retriever) -> Callable[[list[_RetrieveJob]], list[list[ScoredDocument]]]:
    def run(jobs: list[_RetrieveJob]) -> list[list[ScoredDocument]]:
        groups: dict[int, list[int]] = defaultdict(list)
        for i, j in enumerate(jobs):
            groups[j.k].append(i)
        out: list[list[ScoredDocument]] = [[] for _ in jobs]
        for k, idx in groups.items():
            for i, hits in zip(idx, retriever.retrieve_many([jobs[i].query for i in idx], k=k)):
                out[i] = hits
        return out

    return run


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read, so the next ASGI message is the
    disconnect, or the end of the response)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# ---------------------------------------------------------------- ASGI guard: metrics, key, body size
class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ragprune_requests", "HTTP requests by route and status code", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("ragprune_request_seconds", "Request latency in seconds", ["route"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_requests = Histogram("ragprune_batch_requests", "Requests coalesced into one model batch",
                                        ["queue"], registry=self.registry,
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_documents = Histogram("ragprune_batch_documents", "Documents in one model batch", ["queue"],
                                         registry=self.registry,
                                         buckets=(1, 4, 16, 32, 64, 128, 256, 512, 1024, 4096))
        self.batch_seconds = Histogram("ragprune_batch_seconds", "Model time of one batch in seconds", ["queue"],
                                       registry=self.registry,
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.queue_depth = Gauge("ragprune_queue_depth", "Requests waiting for a model batch", ["queue"],
                                 registry=self.registry)

    def observe_batch(self, name: str, requests: int, documents: int, seconds: float) -> None:
        self.batch_requests.labels(queue=name).observe(requests)
        self.batch_documents.labels(queue=name).observe(documents)
        self.batch_seconds.labels(queue=name).observe(seconds)


class _BodyTooLarge(Exception):
    pass


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
                   Awaitable[None]]


class _Guard:
    """Pure ASGI middleware: counts and times every request, checks the API key and the body size
    before the application reads a byte of the body."""

    def __init__(self, app: ASGIApp, *, settings: ServeSettings, metrics: _Metrics, routes: frozenset[str]) -> None:
        self.app, self.settings, self.metrics, self.routes = app, settings, metrics, routes

    async def _reply(self, send: Callable[[dict[str, Any]], Awaitable[None]], response: Response) -> None:
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in self.routes else "other"  # bounded label values
        status = {"code": 500, "started": False}
        start = time.perf_counter()

        async def tracked_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = int(message["status"]), True
            await send(message)

        try:
            error = self._check(scope, path)
            if error is not None:
                await self._reply(tracked_send, error)
                return
            limit, seen, exceeded = self.settings.max_request_bytes, 0, False

            async def limited_receive() -> dict[str, Any]:
                nonlocal seen, exceeded
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        exceeded = True
                        raise _BodyTooLarge
                return message

            async def guarded_send(message: dict[str, Any]) -> None:
                if not exceeded:
                    await tracked_send(message)
                elif message["type"] == "http.response.start" and not status["started"]:
                    await self._reply(tracked_send, self._too_large())  # the app's own reply to the error

            try:
                await self.app(scope, limited_receive, guarded_send)
            except _BodyTooLarge:
                if not status["started"]:
                    await self._reply(tracked_send, self._too_large())
        finally:
            self.metrics.requests.labels(route=route, status=str(status["code"])).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - start)

    def _too_large(self) -> Response:
        return _error(413, "payload_too_large",
                      f"request body is over the server's limit of {self.settings.max_request_bytes} bytes; "
                      "send fewer or shorter documents (ragprune serve --max-request-bytes).")

    def _check(self, scope: Scope, path: str) -> Response | None:
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        key = self.settings.api_key
        if key is not None and path not in PUBLIC_PATHS and scope.get("method") != "OPTIONS":
            given = headers.get("authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), key.encode("utf-8")):
                return _error(401, "unauthorized", "missing or wrong API key; send 'Authorization: Bearer <key>'.",
                              headers={"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None:
            try:
                too_large = int(length) > self.settings.max_request_bytes
            except ValueError:
                return _error(400, "bad_request", "Content-Length is not a number.")
            if too_large:
                return self._too_large()
        return None


# ---------------------------------------------------------------- the application
def create_app(reranker: Reranker, pruner: Pruner, *, settings: ServeSettings | None = None,
               retriever: Retriever | None = None, index_name: str | None = None) -> FastAPI:
    """Build the FastAPI application serving ``reranker`` and ``pruner`` (and ``retriever``).

    Args:
        reranker: Any :class:`~ragprune.rerank.base.Reranker` (e.g. ``CrossEncoderReranker()``). Requests
            carry plain texts without first-stage scores, so a reranker built with
            ``first_stage_weight > 0`` is refused.
        pruner: Any :class:`~ragprune.prune.base.Pruner` (e.g. ``ProvencePruner()``).
        settings: Limits, batching and access (:class:`~ragprune.serve.settings.ServeSettings`).
        retriever: A loaded index; adds ``/retrieve`` and ``/context`` (the
            :class:`~ragprune.Pipeline` of ``retriever``, ``reranker`` and ``pruner``).
        index_name: How ``/health`` names the index (default: the retriever's class).

    Returns:
        The application; run it with uvicorn (``ragprune serve`` does).

    Raises:
        TypeError: a component without the method its routes call.
        ValueError: a reranker that fuses first-stage scores.

    Example:
        >>> from ragprune import CrossEncoderReranker, ProvencePruner              # doctest: +SKIP
        >>> app = create_app(CrossEncoderReranker(), ProvencePruner())              # doctest: +SKIP
        >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)           # doctest: +SKIP
    """
    owner = "create_app"
    settings = settings or ServeSettings()
    if not isinstance(settings, ServeSettings):
        raise TypeError(f"{owner}: settings must be a ServeSettings, got {type(settings).__name__}.")
    if not callable(getattr(reranker, "rerank_many", None)):
        raise TypeError(f"{owner}: reranker must have rerank_many(queries, docs, k), got {type(reranker).__name__}.")
    if not callable(getattr(pruner, "prune_many", None)):
        raise TypeError(f"{owner}: pruner must have prune_many(queries, docs), got {type(pruner).__name__}.")
    if retriever is not None and not callable(getattr(retriever, "retrieve_many", None)):
        raise TypeError(f"{owner}: retriever must have retrieve_many(queries, k), got {type(retriever).__name__}.")
    if float(getattr(reranker, "first_stage_weight", 0.0) or 0.0) > 0:
        raise ValueError(f"{owner}: {reranker!r} fuses first-stage scores (first_stage_weight > 0), but rerank "
                         "requests carry plain texts without them; build it with first_stage_weight=0.")

    metrics = _Metrics()
    s = settings

    def batcher(fn: Callable[[list[Any]], Sequence[Any]], name: str, size: Callable[[Any], int] | None = None
                ) -> DynamicBatcher[Any, Any]:
        b: DynamicBatcher[Any, Any] = DynamicBatcher(
            fn, name=name, max_batch_size=s.max_batch_size, max_wait_ms=s.max_wait_ms, max_queue=s.max_queue,
            size=size, retry_after=s.retry_after_s, observer=metrics.observe_batch)
        metrics.queue_depth.labels(queue=name).set_function(lambda: b.depth)
        return b

    batchers = {"rerank": batcher(_rerank_batch(reranker), "rerank", lambda j: len(j.docs)),
                "prune": batcher(_prune_batch(pruner), "prune", lambda j: len(j.docs))}
    if retriever is not None:
        batchers["context"] = batcher(_context_batch(retriever, reranker, pruner), "context", lambda j: j.top_k)
        batchers["retrieve"] = batcher(_retrieve_batch(retriever), "retrieve")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for b in batchers.values():
            await b.start()
        try:
            yield
        finally:  # uvicorn has finished the in-flight requests by now (graceful shutdown)
            for b in batchers.values():
                await b.stop()

    security = [Depends(HTTPBearer(auto_error=False))] if s.api_key else []  # documents the scheme in OpenAPI
    app = FastAPI(title="ragprune", version=_version(), lifespan=lifespan, default_response_class=_AsciiJSON,
                  description="Rerank (Cohere, Jina and text-embeddings-inference wire formats), prune and "
                              "build LLM context with ragprune. Errors: {message, error_type, detail?}.")
    app.state.batchers, app.state.metrics, app.state.settings = batchers, metrics, s

    # ------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.error_type, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        first = detail[0] if detail else {"loc": [], "msg": "invalid body"}
        where = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        return _error(422, "validation", f"invalid request: {where}: {first['msg']}", detail=detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, "http", str(exc.detail), headers=getattr(exc, "headers", None))

    async def submit(request: Request, name: str, job: Any) -> Any:
        """Run ``job`` through its batcher; a client that disconnects first withdraws it."""
        work = asyncio.ensure_future(batchers[name].submit(job))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()  # the client went away (or the server is stopping): free its queue slot
        if not work.done() or work.cancelled():
            raise ApiError(499, "client_closed", "the client closed the connection before the reply.")
        try:
            return work.result()
        except QueueFullError as e:
            raise ApiError(503, "overloaded", str(e), headers={"Retry-After": str(e.retry_after)}) from None
        except (ValueError, TypeError) as e:  # the library's input validation
            raise ApiError(422, "validation", str(e)) from None
        except ApiError:
            raise
        except Exception as e:
            logger.exception("%s failed", name)
            raise ApiError(500, "internal", f"{name} failed ({type(e).__name__}); see the server log.") from None

    def check_query_text(query: str) -> str:
        if len(query) > s.max_query_chars:
            raise ApiError(422, "query_too_long", f"query has {len(query)} characters; the server's limit is "
                           f"{s.max_query_chars} (ragprune serve --max-query-chars).")
        try:
            return check_query(query, "query")
        except (TypeError, ValueError) as e:
            raise ApiError(422, "validation", str(e)) from None

    def check_count(n: int, what: str = "documents") -> None:
        if n > s.max_documents:
            raise ApiError(413, "too_many_documents", f"{n} {what} in one request; the server's limit is "
                           f"{s.max_documents} (ragprune serve --max-documents).")

    async def rerank_texts(request: Request, query: str, texts: list[str]) -> list[ScoredDocument]:
        query = check_query_text(query)
        check_count(len(texts))
        if not texts:
            return []
        docs = [Document(id=str(i), text=t) for i, t in enumerate(texts)]
        return await submit(request, "rerank", _RerankJob(query, docs))

    def relevance(hit: ScoredDocument) -> float:
        return hit.model_score if hit.model_score is not None else hit.score

    def cohere_texts(body: CohereRerankRequest) -> list[str]:
        """The text of each document as given (``rank_fields`` joined as 'field: value' lines)."""
        check_count(len(body.documents))
        texts = []
        for i, d in enumerate(body.documents):
            if isinstance(d, str):
                text = d
            elif body.rank_fields:
                fields = {**(d.model_extra or {}), **({"text": d.text} if d.text is not None else {})}
                text = "\n".join(f"{f}: {fields[f]}" for f in body.rank_fields if f in fields)
            elif d.text is not None:
                text = d.text
            else:
                raise ApiError(422, "validation", f"documents[{i}] is an object without 'text'; give 'text' or "
                               "name the fields to rank on in 'rank_fields'.")
            texts.append(text)
        return texts

    async def cohere(request: Request, body: CohereRerankRequest, version: str) -> tuple[list[CohereResult], CohereMeta, list[str]]:
        texts = cohere_texts(body)
        n = body.max_tokens_per_doc
        hits = await rerank_texts(request, body.query, [truncate_tokens(t, n) for t in texts] if n else texts)
        if body.top_n is not None:
            hits = hits[: body.top_n]
        results = [CohereResult(index=int(h.id), relevance_score=sigmoid(relevance(h)),
                                document=RerankDocumentOut(text=texts[int(h.id)]) if body.return_documents else None)
                   for h in hits]
        meta = CohereMeta(api_version=ApiVersion(version=version),
                          billed_units=BilledUnits(search_units=max(1, math.ceil(len(texts) / 100))))
        return results, meta, texts

    rerank_tags = ["rerank"]

    @app.post("/v1/rerank", response_model=CohereV1RerankResponse, response_model_exclude_none=True,
              responses=_ERRORS, tags=rerank_tags, dependencies=security,
              summary="Cohere v1 rerank (also Jina's rerank body)")
    async def rerank_v1(body: CohereRerankRequest, request: Request) -> CohereV1RerankResponse:
        results, meta, texts = await cohere(request, body, "1")
        tokens = count_tokens(body.query) * max(1, len(texts)) + sum(count_tokens(t) for t in texts)
        return CohereV1RerankResponse(id=str(uuid.uuid4()), results=results, meta=meta,
                                      model=body.model or s.model_name, usage=JinaUsage(total_tokens=tokens))

    @app.post("/v2/rerank", response_model=CohereV2RerankResponse, response_model_exclude_none=True,
              responses=_ERRORS, tags=rerank_tags, dependencies=security, summary="Cohere v2 rerank")
    async def rerank_v2(body: CohereRerankRequest, request: Request) -> CohereV2RerankResponse:
        results, meta, _ = await cohere(request, body, "2")
        return CohereV2RerankResponse(id=str(uuid.uuid4()), results=results, meta=meta)

    @app.post("/rerank", response_model=list[TEIRank], response_model_exclude_none=True, responses=_ERRORS,
              tags=rerank_tags, dependencies=security, summary="text-embeddings-inference rerank")
    async def rerank_tei(body: TEIRerankRequest, request: Request) -> list[TEIRank]:
        hits = await rerank_texts(request, body.query, body.texts)
        return [TEIRank(index=int(h.id), score=relevance(h) if body.raw_scores else sigmoid(relevance(h)),
                        text=body.texts[int(h.id)] if body.return_text else None) for h in hits]

    @app.post("/prune", response_model=PruneResponse, responses=_ERRORS, tags=["prune"], dependencies=security,
              summary="Keep the sentences of each document that answer the query")
    async def prune(body: PruneRequest, request: Request) -> PruneResponse:
        query = check_query_text(body.query)
        items = body.documents if body.documents is not None else body.texts
        assert items is not None  # the schema asks for exactly one of them
        check_count(len(items))
        ids, docs = [], []
        for i, d in enumerate(items):
            if isinstance(d, str):
                ids.append(str(i))
                docs.append(Document(id=str(i), text=d))
            else:
                ids.append(d.id if d.id is not None else str(i))
                docs.append(Document(id=str(i), text=d.text, title=d.title))
        if not docs:
            return PruneResponse(results=[], text="", tokens=0, truncated=False)
        out: _PruneOut = await submit(request, "prune", _PruneJob(query, docs, body.threshold, body.max_tokens))
        budgeted = {p.id: p for p in out.context.documents} if out.context is not None else None
        results = []
        for p in out.pruned:
            final = p if budgeted is None else budgeted.get(p.id)
            results.append(PrunedResult(
                index=int(p.id), id=ids[int(p.id)], pruned_text=final.text if final else "",
                kept=list(final.kept) if final else [], sentences=list(p.sentences),
                sentence_scores=[float(x) for x in p.sentence_scores],
                compression=final.compression if final else 1.0, score=float(p.score)))
        if out.context is not None:
            return PruneResponse(results=results, text=out.context.text, tokens=out.context.tokens,
                                 truncated=out.context.truncated)
        text = "\n\n".join(p.text for p in out.pruned if p.text)
        return PruneResponse(results=results, text=text, tokens=pruner.token_counter(text), truncated=False)

    if retriever is not None:

        @app.post("/retrieve", response_model=RetrieveResponse, responses=_ERRORS, tags=["index"],
                  dependencies=security, summary="First-stage retrieval from the loaded index")
        async def retrieve(body: RetrieveRequest, request: Request) -> RetrieveResponse:
            query = check_query_text(body.query)
            k = _given_or_capped(body, "k", s.max_documents)
            hits = await submit(request, "retrieve", _RetrieveJob(query, k))
            return RetrieveResponse(results=[RetrievedDocument(id=h.id, score=float(h.score), title=h.document.title,
                                                               text=h.document.text) for h in hits])

        @app.post("/context", response_model=ContextResponse, responses=_ERRORS, tags=["index"],
                  dependencies=security, summary="The Pipeline's context: retrieve, rerank, prune, budget")
        async def context(body: ContextRequest, request: Request) -> ContextResponse:
            query = check_query_text(body.query)
            candidates = _given_or_capped(body, "candidates", s.max_documents)
            top_k = _given_or_capped(body, "top_k", s.max_documents)
            ctx: Context = await submit(request, "context", _ContextJob(query, body.max_tokens, candidates, top_k))
            return ContextResponse(
                query=ctx.query, text=ctx.text, tokens=ctx.tokens, truncated=ctx.truncated,
                documents=[ContextDocument(id=d.id, title=d.document.title, text=d.text, kept=list(d.kept),
                                           score=float(d.score)) for d in ctx.documents],
                stats={k: float(v) for k, v in ctx.stats.items()})

    @app.get("/health", response_model=HealthResponse, tags=["ops"], summary="Liveness (never needs the key)")
    async def health() -> HealthResponse:
        return HealthResponse(status="ok", reranker=repr(reranker), pruner=repr(pruner),
                              index=None if retriever is None else (index_name or type(retriever).__name__),
                              queue_depth={name: b.depth for name, b in batchers.items()})

    @app.get("/metrics", tags=["ops"], dependencies=security, response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
                        401: _ERRORS[401]},
             summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _document_limits(spec, s)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    routes = frozenset(r.path for r in app.routes if hasattr(r, "path"))
    app.add_middleware(_Guard, settings=s, metrics=metrics, routes=routes)
    if s.cors_origins:  # outermost: preflight requests are answered before the key check
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(s.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def _given_or_capped(body: Any, name: str, cap: int) -> int:
    """``body.name`` when the client gave it (then at most ``cap``, else 422); the default capped
    at ``cap`` when it did not."""
    value = int(getattr(body, name))
    if name not in body.model_fields_set:
        return min(value, cap)
    if value > cap:
        raise ApiError(422, "validation", f"{name}={value} is over the server's limit of {cap} "
                       "(ragprune serve --max-documents).")
    return value


def _document_limits(spec: dict[str, Any], s: ServeSettings) -> None:
    """Write the server's runtime limits into the OpenAPI request schemas, so the description
    says what the server accepts: query length and non-blank, list sizes, ``k``-like caps."""
    for schema in spec.get("components", {}).get("schemas", {}).values():
        props = schema.get("properties", {})
        if "query" in props and schema.get("title", "").endswith("Request"):
            props["query"].update(maxLength=s.max_query_chars, pattern=r"\S")
        for name in ("documents", "texts"):
            if props.get(name, {}).get("type") == "array":
                props[name]["maxItems"] = s.max_documents
        for name in ("k", "candidates", "top_k"):
            if name in props and schema.get("title", "").endswith("Request"):
                props[name]["maximum"] = s.max_documents
                if isinstance(props[name].get("default"), int):
                    props[name]["default"] = min(props[name]["default"], s.max_documents)


def _version() -> str:
    from .. import __version__

    return __version__


def load_retriever(path: str | Path) -> Retriever:
    """Load a saved index folder, BM25 or dense, by the kind its manifest records.

    Args:
        path: A folder written by ``BM25Retriever.save`` or ``DenseRetriever.save``.

    Returns:
        The loaded :class:`~ragprune.BM25Retriever` or :class:`~ragprune.DenseRetriever`.

    Raises:
        FileNotFoundError: no index at ``path``.
        ragprune.IndexFormatError: corrupt files or an unknown index kind.
    """
    from .._io import MANIFEST, IndexFormatError

    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"--index {path}: no ragprune index there (no {MANIFEST}); build one with "
                                "`ragprune index CORPUS DIR` or BM25Retriever.save / DenseRetriever.save.")
    try:
        kind = json.loads(manifest.read_text(encoding="utf-8")).get("kind")
    except (ValueError, AttributeError) as e:
        raise IndexFormatError(f"--index {path}: {manifest} is not valid JSON ({e}); rebuild the index.") from e
    if kind == "bm25":
        from ..retrieve.bm25 import BM25Retriever

        return BM25Retriever.load(path)
    if kind == "dense":
        from ..retrieve.dense import DenseRetriever

        return DenseRetriever.load(path)
    raise IndexFormatError(f"--index {path}: unknown index kind {kind!r}; expected 'bm25' or 'dense'.")


def _factory(spec: str) -> Callable[[], Any] | None:
    """``module:callable`` -> the callable; None when ``spec`` is not of that form (a model)."""
    import importlib
    import re

    if Path(spec).exists() or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec):
        return None
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{spec!r}: cannot import {name} from {module} ({e}).") from e
    if not callable(fn):
        raise TypeError(f"{spec!r} is not callable; give module:factory returning the component.")
    return fn


def load_reranker(spec: str, *, backend: str = "torch", quantize: str | None = None) -> Reranker:
    """The reranker ``ragprune serve --reranker SPEC`` names.

    Args:
        spec: A model for :class:`~ragprune.CrossEncoderReranker` (shipped name, folder or
            Hugging Face id), or ``module:factory``, a callable returning any
            :class:`~ragprune.rerank.base.Reranker` (e.g. a quantized or custom one).
        backend, quantize: Options of the named model (``--backend``, ``--quantize``); a
            factory configures its own component.

    Returns:
        The loaded reranker (model scores alone: ``first_stage_weight=0``).

    Raises:
        ValueError/TypeError: the model cannot be loaded, or the factory returns no reranker.
    """
    from ..rerank.cross_encoder import CrossEncoderReranker

    return _component(spec, "--reranker", Reranker, lambda: CrossEncoderReranker(spec, backend=backend,
                                                                                   quantize=quantize))


def load_pruner(spec: str, *, backend: str = "torch", quantize: str | None = None) -> Pruner:
    """The pruner ``ragprune serve --pruner SPEC`` names.

    Args:
        spec: A model for :class:`~ragprune.ProvencePruner` (shipped name, folder or Hugging
            Face id), or ``module:factory``, a callable returning any
            :class:`~ragprune.prune.base.Pruner`.
        backend, quantize: Options of the named model, as for :func:`load_reranker`.

    Returns:
        The loaded pruner.

    Raises:
        ValueError/TypeError: the model cannot be loaded, or the factory returns no pruner.
    """
    from ..prune.provence import ProvencePruner

    return _component(spec, "--pruner", Pruner, lambda: ProvencePruner(spec, backend=backend, quantize=quantize))


def _component(spec: str, flag: str, interface: type, named: Callable[[], Any]) -> Any:
    """``module:factory`` called, else the named model loaded; checked against ``interface``."""
    fn = _factory(spec)
    if fn is None:
        return named()
    out = fn()
    if not isinstance(out, interface):
        raise TypeError(f"{flag} {spec}: the factory returned a {type(out).__name__}, not a {interface.__name__}.")
    return out
