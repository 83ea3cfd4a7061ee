"""The FastAPI app factory: ``create_app(config)`` (no module-level state; two apps never share anything).

Routes: ``/v1/embeddings`` (OpenAI-compatible), ``/v1/rerank`` (Cohere/TEI shape), ``/v1/search`` and
``/v1/search/compare`` (named indexes, hybrids, reranking, per-stage timings), index administration with
aliases, ``/v1/similarity`` and ``/v1/words/*`` (the UI's playground and word explorer), ``/health``,
``/ready``, ``/metrics`` and the web UI at ``/``. Handlers validate and enqueue; each model's batcher
does the work (:mod:`embedstack.serve.batching`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstack._extras import require
from embedstack._threads import on_wide_thread
from embedstack.errors import (
    ConfigError,
    DatasetError,
    DimensionMismatch,
    EmbedstackError,
    IndexStateError,
    InputError,
    MissingExtra,
    ModelMismatch,
    NotFittedError,
    NotFoundError,
    ScoreError,
    UnknownKeyError,
)
from embedstack.serve.batching import QueryCache, QueueFull
from embedstack.serve.config import ServeConfig
from embedstack.serve.indexes import IndexManager, ServedIndex
from embedstack.serve.metrics import Metrics
from embedstack.serve.models import BatchedReranker, QueryEncoder, ServedModel, load_model

require("fastapi", "serve", "embedstack serve")
require("prometheus_client", "serve", "embedstack serve")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import FileResponse, RedirectResponse, Response  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, ValidationError  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

__all__ = ["create_app", "Server"]

log = logging.getLogger("embedstack.serve")
UI_DIR = Path(__file__).with_name("ui")
_OPEN_PATHS = ("/health", "/ready")


# ------------------------------------------------------------------------------------------ JSON out
try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover - orjson is in the serve extra
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)).encode()


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _dumps(content)


def _error(status: int, message: str, type_: str, code: str, param: str | None = None,
           headers: dict[str, str] | None = None) -> FastJSON:
    return FastJSON({"error": {"message": message, "type": type_, "code": code, "param": param}}, status_code=status,
                    headers=headers)


def _embedstack_response(server: Server, exc: EmbedstackError) -> FastJSON:
    """The JSON error (status from :func:`_status_of`) for one of our typed errors."""
    status, code = _status_of(exc)
    headers = {"Retry-After": str(int(np.ceil(exc.retry_after)))} if isinstance(exc, QueueFull) else None
    if isinstance(exc, QueueFull) and exc.model:
        server.metrics.rejected.labels(exc.model).inc()
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _error(status, str(exc), kind, code, param=exc.param[0] if exc.param else None, headers=headers)


def _validation_response(errs: Sequence[Any]) -> FastJSON:
    """400 for a body that is not JSON or does not fit the request model (pydantic's error list)."""
    first = errs[0] if errs else {}
    if first.get("type") == "json_invalid":
        return _error(400, f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')}).",
                      "invalid_request_error", "invalid_json")
    loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    return _error(400, f"{loc or 'body'}: {first.get('msg', 'invalid')}{more}.", "invalid_request_error",
                  "invalid_value", param=loc or None)


def _status_of(exc: EmbedstackError) -> tuple[int, str]:
    if isinstance(exc, QueueFull):
        return 503, "overloaded"
    if isinstance(exc, NotFoundError | UnknownKeyError | DatasetError):
        return 404, "not_found"
    if isinstance(exc, IndexStateError | ModelMismatch):
        return 409, "conflict"
    if isinstance(exc, MissingExtra):
        return 501, "missing_extra"
    if isinstance(exc, InputError | ConfigError | ScoreError | DimensionMismatch | NotFittedError):
        return 400, "invalid_request"
    return 500, "server_error"


# ------------------------------------------------------------------------------------------ requests
class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EmbeddingsRequest(_Req):
    input: str | list[str]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    truncate: bool | None = None
    role: Literal["query", "document"] = "document"
    user: str | None = None


class RerankDoc(_Req):
    text: str


class RerankRequest(_Req):
    query: str
    documents: list[str | RerankDoc]
    model: str | None = None
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False


class SearchRequest(_Req):
    query: str
    index: str | None = None
    indexes: list[str] | None = None
    k: int = Field(default=10, ge=1, le=1000)
    fusion: str = "rrf"
    candidates: int = Field(default=100, ge=1, le=10000)
    rerank: str | None = None
    rerank_k: int | None = Field(default=None, ge=1, le=1000)
    with_text: bool = True


class CompareRequest(_Req):
    query: str
    indexes: list[str] = Field(min_length=1, max_length=8)
    rerank: str | None = None
    k: int = Field(default=10, ge=1, le=100)
    rerank_k: int = Field(default=50, ge=1, le=500)


class CreateIndexRequest(_Req):
    name: str
    model: str
    index: str = "flat"


class DocIn(_Req):
    id: str
    text: str
    metadata: dict[str, Any] | None = None


class AddRequest(_Req):
    documents: list[DocIn]


class DeleteRequest(_Req):
    ids: list[str]


class AliasRequest(_Req):
    index: str


class SimilarityRequest(_Req):
    model: str
    texts: list[str] = Field(min_length=1, max_length=64)


class NeighborsRequest(_Req):
    model: str
    word: str
    k: int = Field(default=10, ge=1, le=100)


class AnalogyRequest(_Req):
    model: str
    positive: list[str] = Field(default_factory=list)
    negative: list[str] = Field(default_factory=list)
    k: int = Field(default=10, ge=1, le=100)


# ------------------------------------------------------------------------------------------ the server
class Server:
    """What one app holds: config, models, rerankers, indexes, cache, metrics, readiness."""

    def __init__(self, config: ServeConfig, preloaded: dict[str, Any] | None = None) -> None:
        self.config = config
        self.limits = config.limits
        self.metrics = Metrics()
        self.cache = QueryCache(self.limits.cache_size, self.limits.cache_ttl_s, on_lookup=self.metrics.observe_cache)
        self.models: dict[str, ServedModel] = {}
        self.hidden: dict[str, ServedModel] = {}  # query encoders of read-only index folders not served by name
        self.indexes = IndexManager(config.data_dir, checkpoint_every=config.checkpoint_every)
        self.ready = False
        self.loaded = False
        self.load_error: str | None = None
        self._preloaded = dict(preloaded or {})

    # ------------------------------------------------------------------ loading
    def _make(self, name: str, spec: Any, reranker: bool = False, spec_name: str | None = None) -> ServedModel:
        lim = self.limits
        return load_model(name, spec, spec_name=spec_name, reranker=reranker, max_batch_tokens=lim.max_batch_tokens,
                          max_wait_s=lim.max_wait_ms / 1000.0, max_queue=lim.max_queue, cache=self.cache,
                          observe=self.metrics.observe_batch, threads=lim.threads())

    def load(self) -> None:
        """Load every model, reranker and index (in a worker thread: it can take a while), on the process's wide
        thread: the threads that later run batches on one intra-op thread each make no OpenMP team of their own."""
        on_wide_thread(self._load)

    def _load(self) -> None:
        cfg = self.config
        for name, spec in cfg.models.items():
            self.models[name] = self._make(name, self._preloaded.get(name, spec), spec_name=spec)
        for name, spec in cfg.rerankers.items():
            self.models[name] = self._make(name, self._preloaded.get(name, spec), reranker=True, spec_name=spec)
        for name, path in cfg.indexes.items():
            self.indexes.add_readonly(name, path, self._model_for_index)
        self.indexes.load_managed(self.models)
        self.loaded = True

    def _model_for_index(self, index: Any, folder: str) -> ServedModel:
        """The served model whose identity matches the index's encoder, else its own encoder, served hidden."""
        from embedstack.retrieval.build import load_encoder_for

        recorded = index.encoder or {}
        for m in self.models.values():
            if m.kind == "reranker":
                continue
            sha = recorded.get("sha256")
            if (sha and sha == m.identity.get("sha256")) or (not sha and recorded.get("spec") == m.spec):
                return m
        encoder = load_encoder_for(folder, index)
        name = f"{Path(folder).name}.encoder"
        if name not in self.hidden:
            self.hidden[name] = self._make(name, encoder)
        return self.hidden[name]

    def all_models(self) -> list[ServedModel]:
        return [*self.models.values(), *self.hidden.values()]

    def start(self) -> None:
        for m in self.all_models():
            m.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for m in self.all_models():
            await m.batcher.stop()
        await run_in_threadpool(self.indexes.close)

    # ------------------------------------------------------------------ lookups
    def model(self, name: str | None, kinds: tuple[str, ...], param: str = "model") -> ServedModel:
        if not self.ready:
            raise QueueFull("the server is still loading its models.", retry_after=2.0)
        candidates = {n: m for n, m in self.models.items() if m.kind in kinds}
        if name is None:
            if len(candidates) == 1:
                return next(iter(candidates.values()))
            raise InputError(f"give {param!r}: one of {sorted(candidates)}.")
        m = self.models.get(name)
        if m is None:
            from embedstack.models import did_you_mean

            raise NotFoundError(f"model {name!r} is not served.{did_you_mean(name, list(self.models))} "
                                  f"Served: {sorted(self.models)}.")
        if m.kind not in kinds:
            raise InputError(f"model {name!r} is a {m.kind} model; {param} needs a {' or '.join(kinds)} model "
                             f"({sorted(candidates) or 'none served'}).")
        return m

    def check_key(self, presented: str | None) -> bool:
        import hashlib

        if not self.config.api_key_hashes:
            return True
        if not presented:
            return False
        digest = hashlib.sha256(presented.encode("utf-8")).hexdigest().encode()
        ok = False
        for stored in self.config.api_key_hashes:  # every digest compared, in constant time
            ok |= hmac.compare_digest(digest, stored.lower().encode())
        return ok


# ------------------------------------------------------------------------------------------ ASGI guard
class _Guard:
    """Outermost ASGI layer: API keys, body size and read timeout, in-flight gauge, per-route metrics; and the hot
    routes (``fast``: path → request model and handler), which it answers itself, without FastAPI."""

    def __init__(self, app: Any, server: Server,
                 fast: dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[Any]]]] | None = None) -> None:
        self.app = app
        self.server = server
        self.fast = {path: self._fast_app(*how) for path, how in (fast or {}).items()}

    def _fast_app(self, model: type[BaseModel], handler: Callable[[Any], Awaitable[Any]]) -> Any:
        """A POST route answered here, without FastAPI: under load FastAPI's routing, middleware and dependency
        solving cost about as much event-loop time as the handler itself (profiled at 128 clients), and every
        request passes through the event loop's one thread. Same request model, handler and JSON errors as the
        FastAPI route."""

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            msg = await receive()
            resp: Response
            try:
                req = model.model_validate_json(msg.get("body", b""))
            except ValidationError as exc:  # the request only: a ValidationError inside the handler is a 500
                resp = _validation_response(exc.errors())
            else:
                try:
                    resp = FastJSON(await handler(req))
                except EmbedstackError as exc:
                    resp = _embedstack_response(self.server, exc)
                except Exception as exc:  # noqa: BLE001 - answered like the app's catch-all handler
                    log.exception("internal error")
                    resp = _error(500, f"internal server error ({type(exc).__name__})", "server_error", "internal")
            await self._reply(send, resp)

        return app

    async def _reply(self, send: Callable[[dict[str, Any]], Awaitable[None]], resp: Response) -> None:
        await send({"type": "http.response.start", "status": resp.status_code, "headers": resp.raw_headers})
        await send({"type": "http.response.body", "body": resp.body})

    async def _run_watched(self, app: Any, scope: dict[str, Any], body: bytes, receive: Any, send: Any,
                           started: list[bool]) -> bool:
        """Run the app on a buffered ``body`` while watching the connection; False if the client left first.

        A client that disconnects before its answer starts (a timeout on its side, a cancelled request) has
        its handler cancelled: its queued batch rows are dropped, not computed for nobody.
        """
        gone = asyncio.Event()
        sent = [False]

        async def replay() -> dict[str, Any]:
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()  # the app asks for the disconnect only through us: one reader of receive()
            return {"type": "http.disconnect"}

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    gone.set()
                    return

        app_task = asyncio.ensure_future(app(scope, replay, send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({app_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if app_task.done():
                app_task.result()  # re-raise what the app raised
                return True
            if not started[0]:  # the client left before any answer: stop working for it
                app_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await app_task
                return False
            await app_task  # an answer is under way: let it finish (the server drops what it cannot send)
            return True
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        srv = self.server
        path = scope["path"]
        t0 = time.perf_counter()
        status = [500]
        started = [False]

        async def send_wrapper(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                status[0] = int(msg["status"])
                started[0] = True
            await send(msg)

        srv.metrics.in_flight.inc()
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if srv.config.api_key_hashes and (path.startswith("/v1") or path == "/metrics"):
                auth = headers.get("authorization", "")
                key = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key")
                if not srv.check_key(key):
                    await self._reply(send_wrapper, _error(401, "a valid API key is required: send "
                                                           "'Authorization: Bearer KEY'.", "authentication_error",
                                                           "invalid_api_key"))
                    return
            limit = srv.limits.max_body_bytes
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await self._reply(send_wrapper, _too_large(int(length), limit))
                return
            if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
                body = bytearray()
                more = True
                loop = asyncio.get_running_loop()
                deadline = loop.time() + float(srv.limits.body_timeout_s)  # one deadline for the whole body, not per chunk
                while more:
                    try:
                        msg = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
                    except asyncio.TimeoutError:
                        await self._reply(send_wrapper, _error(408, f"the request body did not arrive within "
                                                               f"{float(srv.limits.body_timeout_s):g} s.", "invalid_request_error",
                                                               "body_timeout"))
                        return
                    if msg["type"] == "http.disconnect":
                        status[0] = 499
                        return
                    body += msg.get("body", b"")
                    more = bool(msg.get("more_body", False))
                    if len(body) > limit:
                        await self._reply(send_wrapper, _too_large(len(body), limit))
                        return
                fast = self.fast.get(path) if scope["method"] == "POST" else None
                app = self.app if fast is None else fast
                if not await self._run_watched(app, scope, bytes(body), receive, send_wrapper, started):
                    status[0] = 499
                    srv.metrics.abandoned.inc()
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception:  # noqa: BLE001 - already answered 500 by the app's handler; logged here once
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if not started[0]:
                await self._reply(send_wrapper, _error(500, "internal server error", "server_error", "internal"))
        finally:
            srv.metrics.in_flight.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or (path if path in self.fast else "/ui" if path.startswith("/ui") else "other")
            srv.metrics.requests.labels(label, str(status[0])).inc()
            srv.metrics.latency.labels(label).observe(time.perf_counter() - t0)


def _too_large(n: int, limit: int) -> Response:
    return _error(413, f"the request body has {n:,} bytes, more than the limit of {limit:,}; send fewer inputs per "
                  "request (or raise limits.max_body_bytes).", "invalid_request_error", "body_too_large")


# ------------------------------------------------------------------------------------------ the factory
def create_app(config: ServeConfig, *, preloaded: dict[str, Any] | None = None, background_load: bool = False,
               server: Server | None = None) -> Any:
    """A FastAPI app serving ``config`` (wrapped in the guard layer; ``app.state.server`` is its :class:`Server`).

    Args:
        config: what to serve.
        preloaded: served name → an already loaded model object, used instead of resolving its SPEC (tests).
        background_load: answer ``/health`` at once and load models after start-up (``/ready`` says when);
            otherwise the app loads everything before it accepts requests.
        server: a :class:`Server` already loaded (``Server(config).load()``), so that loading errors surface
            before any socket is opened (``embedstack serve`` does this).
    """
    server = server if server is not None else Server(config, preloaded)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        async def load() -> None:
            try:
                if not server.loaded:
                    await run_in_threadpool(server.load)
                server.start()
            except Exception as exc:
                server.load_error = f"{type(exc).__name__}: {exc}"
                log.error("loading failed: %s", server.load_error)
                raise

        task = None
        if background_load:
            task = asyncio.get_running_loop().create_task(load())
        else:
            await load()
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
            await server.stop()

    app = FastAPI(title="embedstack", version=_version(), lifespan=lifespan, default_response_class=FastJSON,
                  docs_url="/docs", redoc_url=None)
    app.state.server = server

    # -------------------------------------------------------------- errors → JSON
    @app.exception_handler(EmbedstackError)
    async def _on_embedstack(request: Request, exc: EmbedstackError) -> Response:
        return _embedstack_response(server, exc)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> Response:
        return _validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, str(exc.detail), "invalid_request_error", code)

    @app.exception_handler(Exception)
    async def _on_any(request: Request, exc: Exception) -> Response:
        log.exception("internal error")
        return _error(500, f"internal server error ({type(exc).__name__})", "server_error", "internal")

    # -------------------------------------------------------------- health
    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Any:
        if server.ready:
            return {"status": "ready", "models": sorted(server.models), "indexes": sorted(server.indexes.indexes)}
        if server.load_error:
            return _error(503, f"loading failed: {server.load_error}", "server_error", "load_failed")
        return _error(503, "loading models", "server_error", "not_ready", headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def metrics() -> Any:
        body, ctype = server.metrics.render({m.name: m.batcher.depth for m in server.all_models()},
                                           server.cache.hit_rate)
        return Response(body, media_type=ctype)

    # -------------------------------------------------------------- models and embeddings
    @app.get("/v1/models")
    async def list_models() -> Any:
        return {"object": "list", "data": [m.describe() for m in server.models.values()]}

    async def embeddings_payload(req: EmbeddingsRequest) -> dict[str, Any]:
        model = server.model(req.model, ("dense", "words", "sparse", "multivector"))
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        lim = server.limits
        if not texts:
            raise InputError("input is empty; send a string or a non-empty list of strings.")
        if len(texts) > lim.max_inputs:
            raise InputError(f"input has {len(texts):,} items, more than the limit of {lim.max_inputs:,} per request; "
                             "split it into several requests.")
        if req.dimensions is not None:
            if model.kind not in ("dense", "words") or model.dim is None:
                raise InputError(f"dimensions applies to dense models; {model.name!r} is {model.kind}.")
            if not 1 <= req.dimensions <= model.dim:
                raise InputError(f"dimensions must be in 1..{model.dim} for model {model.name!r}; got {req.dimensions}.")
        truncate = lim.truncate if req.truncate is None else req.truncate
        texts, counts = model.check_lengths(texts, truncate=truncate, limit=lim.max_tokens)
        vecs = await model.embed(texts, role=req.role, tokens=sum(counts))
        data = _embedding_rows(model, vecs, req.dimensions, req.encoding_format)
        return {"object": "list", "data": data, "model": model.name,
                "usage": {"prompt_tokens": int(sum(counts)), "total_tokens": int(sum(counts))}}

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingsRequest) -> Any:
        return FastJSON(await embeddings_payload(req))

    @app.post("/v1/rerank")
    async def rerank(req: RerankRequest) -> Any:
        model = server.model(req.model, ("reranker",))
        docs = [d if isinstance(d, str) else d.text for d in req.documents]
        if len(docs) > server.limits.max_inputs:
            raise InputError(f"documents has {len(docs):,} items, more than the limit of {server.limits.max_inputs:,}.")
        if not docs:
            return {"model": model.name, "results": [], "usage": {"total_tokens": 0}}
        tokens, windows = model.counter.count_pair_windows(req.query, docs)
        over = [i for i, n in enumerate(windows) if n > server.limits.max_windows]  # windows: work grows with length
        if over:
            raise InputError(f"documents[{over[0]}] would take {windows[over[0]]:,} windows of {model.max_tokens} "
                             f"tokens for model {model.name!r}, more than limits.max_windows = "
                             f"{server.limits.max_windows} ({len(over)} document(s) too long); split it into passages "
                             "and send those.")
        scores = np.asarray(await model.batcher.submit([(req.query, d) for d in docs], tokens=sum(tokens)))
        order = np.argsort(-scores, kind="stable")[: req.top_n or len(docs)]
        results = [{"index": int(i), "relevance_score": float(scores[i]),
                    **({"document": {"text": docs[i]}} if req.return_documents else {})} for i in order]
        return {"model": model.name, "results": results, "usage": {"total_tokens": int(sum(tokens))}}

    # -------------------------------------------------------------- search
    def _pipeline(sis: list[ServedIndex], fusion: str, rerank: str | None, candidates: int,
                  rerank_k: int | None) -> Any:
        from embedstack.retrieval.evaluate import parse_fusion
        from embedstack.retrieval.pipeline import Pipeline, Retriever

        names = [si.name for si in sis]
        if len(set(names)) != len(names):
            raise InputError(f"indexes names the same index twice: {names}.")
        reranker = BatchedReranker(server.model(rerank, ("reranker",), "rerank")) if rerank else None
        return Pipeline([Retriever(si.name, QueryEncoder(si.model), si.index, check=False) for si in sis],
                        fusion=parse_fusion(fusion), reranker=reranker, candidates=candidates, rerank_top=rerank_k)

    def _run_locked(sis: list[ServedIndex], fn: Callable[[], Any]) -> Any:
        with ExitStack() as stack:
            for si in sorted(sis, key=lambda s: s.name):  # one order: no lock-order deadlocks
                stack.enter_context(si.lock.read())
            return fn()

    def _resolve_all(names: list[str]) -> list[ServedIndex]:
        if not server.ready:
            raise QueueFull("the server is still loading.", retry_after=2.0)
        return [server.indexes.resolve(n) for n in names]  # aliases followed once, here

    @app.post("/v1/search")
    async def search(req: SearchRequest) -> Any:
        names = list(req.indexes or []) + ([req.index] if req.index else [])
        if not names:
            raise InputError("give 'index' (a name or alias) or 'indexes' (several, fused).")
        sis = _resolve_all(names)
        pipe = _pipeline(sis, req.fusion, req.rerank, req.candidates, req.rerank_k)
        res = await run_in_threadpool(_run_locked, sis, lambda: pipe.search(req.query, k=req.k))
        server.metrics.stages(res.timings)
        return {"query": req.query,
                "indexes": [{"name": n, "resolved": si.name, "version": si.version} for n, si in zip(names, sis, strict=True)],
                "hits": [_hit(h, req.with_text) for h in res.hits], "timings": res.timings}

    @app.post("/v1/search/compare")
    async def compare(req: CompareRequest) -> Any:
        sis = _resolve_all(list(req.indexes))
        depth = max(req.k, req.rerank_k)

        def work() -> list[dict[str, Any]]:
            columns: list[dict[str, Any]] = []
            singles = []
            for si in sis:
                r = _pipeline([si], "rrf", None, depth, None).search(req.query, k=depth)
                singles.append(r.timings["total"])
                columns.append({"name": si.name, "kind": "retriever", "hits": r.hits, "ms": 1000 * r.timings["total"]})
            first_ms = sum(singles) * 1000
            if len(sis) > 1:
                t = time.perf_counter()
                hyb = _pipeline(sis, "rrf", None, depth, None).search(req.query, k=depth)
                fusion_ms = 1000 * hyb.timings.get("fusion", time.perf_counter() - t)
                first_ms += fusion_ms
                columns.append({"name": "hybrid (RRF)", "kind": "hybrid", "hits": hyb.hits, "ms": first_ms})
            if req.rerank:
                rr = _pipeline(sis, "rrf", req.rerank, depth, req.rerank_k).search(req.query, k=req.k)
                columns.append({"name": f"{columns[-1]['name']} + {req.rerank}", "kind": "reranked", "hits": rr.hits,
                                "ms": first_ms + 1000 * rr.timings.get("rerank", 0.0)})
            return columns

        columns = await run_in_threadpool(_run_locked, sis, work)
        out = []
        prev: dict[str, int] | None = None
        for col in columns:
            hits = col["hits"][: req.k]
            ranks = {h.id: i + 1 for i, h in enumerate(col["hits"])}
            out.append({"name": col["name"], "kind": col["kind"], "ms": round(col["ms"], 3),
                        "hits": [{"id": h.id, "score": h.score, "text": (h.text or "")[:300], "rank": i + 1,
                                  "moved": (prev[h.id] - (i + 1)) if prev is not None and h.id in prev else None}
                                 for i, h in enumerate(hits)]})
            prev = ranks
        return {"query": req.query, "columns": out}

    # -------------------------------------------------------------- index administration
    @app.get("/v1/indexes")
    async def list_indexes() -> Any:
        return {"data": [si.describe() for si in server.indexes.indexes.values()], "aliases": server.indexes.aliases}

    @app.get("/v1/indexes/{name}")
    async def get_index(name: str) -> Any:
        return server.indexes.resolve(name).describe()

    @app.post("/v1/indexes", status_code=201)
    async def create_index(req: CreateIndexRequest) -> Any:
        model = server.model(req.model, ("dense", "words", "sparse", "multivector"))
        si = await run_in_threadpool(server.indexes.create, req.name, model, req.index)
        return FastJSON(si.describe(), status_code=201)

    @app.post("/v1/indexes/{name}/documents")
    async def add_documents(name: str, req: AddRequest) -> Any:
        si = server.indexes.resolve(name)
        si._need_managed()
        docs = req.documents
        if len(docs) > server.limits.max_inputs:
            raise InputError(f"documents has {len(docs):,} items, more than the limit of {server.limits.max_inputs:,} "
                             "per request; add them in several requests.")
        if not docs:
            raise InputError("documents is empty.")
        ids = [d.id for d in docs]
        if len(set(ids)) != len(ids):
            raise InputError("documents repeats an id; ids must be unique.")
        # documents longer than the model's limit are cut by the encoder, as when an index is built; the index
        # keeps the whole text
        _, counts = si.model.check_lengths([d.text for d in docs], truncate=True, limit=None)
        vecs = await si.model.embed([d.text for d in docs], role="document", tokens=sum(counts), cache=False)
        seq = await run_in_threadpool(si.add, ids, [d.text for d in docs], [d.metadata for d in docs], vecs)
        return {"added": len(ids), "count": len(si.index), "seq": seq, "version": si.version}

    @app.post("/v1/indexes/{name}/delete")
    async def delete_documents(name: str, req: DeleteRequest) -> Any:
        si = server.indexes.resolve(name)
        n = await run_in_threadpool(si.delete, list(req.ids))
        return {"removed": n, "count": len(si.index), "seq": si.seq, "version": si.version}

    @app.post("/v1/indexes/{name}/compact")
    async def compact(name: str) -> Any:
        si = server.indexes.resolve(name)
        n = await run_in_threadpool(si.compact)
        return {"reclaimed": n, "count": len(si.index), "version": si.version}

    @app.delete("/v1/indexes/{name}")
    async def drop_index(name: str) -> Any:
        await run_in_threadpool(server.indexes.drop, name)
        return {"deleted": name}

    @app.put("/v1/aliases/{alias}")
    async def put_alias(alias: str, req: AliasRequest) -> Any:
        previous = await run_in_threadpool(server.indexes.set_alias, alias, req.index)
        return {"alias": alias, "index": req.index, "previous": previous}

    @app.get("/v1/indexes/{name}/map")
    async def index_map(name: str, n: int = 300) -> Any:
        si = server.indexes.resolve(name)
        if not 2 <= n <= 5000:
            raise InputError(f"n must be in 2..5000; got {n}.")
        if not callable(getattr(si.index, "reconstruct", None)):
            raise InputError(f"index {si.name!r} is {si.kind}; the map needs a dense flat index.")

        def work() -> dict[str, Any]:
            ids = si.index.ids
            rng = np.random.default_rng(0)
            pick = sorted(rng.choice(len(ids), size=min(n, len(ids)), replace=False).tolist()) if ids else []
            sample = [ids[i] for i in pick]
            if len(sample) < 2:
                return {"name": si.name, "points": []}
            x = si.index.reconstruct(sample)
            x = x - x.mean(axis=0)
            _, _, vt = np.linalg.svd(x, full_matrices=False)
            xy = x @ vt[:2].T
            return {"name": si.name, "points": [
                {"id": i, "x": float(p[0]), "y": float(p[1]), "text": (si.index.get(i).text or "")[:200]}
                for i, p in zip(sample, xy, strict=True)]}

        return await run_in_threadpool(_run_locked, [si], work)

    # -------------------------------------------------------------- UI helpers
    @app.post("/v1/similarity")
    async def similarity(req: SimilarityRequest) -> Any:
        model = server.model(req.model, ("dense", "words"))
        texts, counts = model.check_lengths(list(req.texts), truncate=True, limit=None)
        v = np.asarray(await model.embed(texts, role="document", tokens=sum(counts)), dtype=np.float32)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return FastJSON({"model": model.name, "texts": req.texts, "matrix": np.round(v @ v.T, 4)})

    @app.post("/v1/words/neighbors")
    async def neighbors(req: NeighborsRequest) -> Any:
        model = server.model(req.model, ("words",))
        res = await run_in_threadpool(model.obj.vectors.most_similar, [req.word], topn=req.k)
        return {"model": model.name, "word": req.word, "neighbors": [{"word": w, "score": float(s)} for w, s in res]}

    @app.post("/v1/words/analogy")
    async def analogy(req: AnalogyRequest) -> Any:
        model = server.model(req.model, ("words",))
        if not req.positive and not req.negative:
            raise InputError("give positive and/or negative words, e.g. positive=[king, woman], negative=[man].")
        res = await run_in_threadpool(model.obj.vectors.most_similar, req.positive, req.negative, topn=req.k)
        return {"model": model.name, "results": [{"word": w, "score": float(s)} for w, s in res]}

    # -------------------------------------------------------------- the UI
    if config.ui and (UI_DIR / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")

        @app.get("/", include_in_schema=False)
        async def root() -> Any:
            return FileResponse(UI_DIR / "index.html")
    else:
        @app.get("/", include_in_schema=False)
        async def root_docs() -> Any:
            return RedirectResponse("/docs")

    # the hot route skips FastAPI's routing, middleware and dependency solving (the guard parses and answers it
    # with the same request model, handler and error responses; the route above stays for /docs and direct use)
    return _Guard(app, server, fast={"/v1/embeddings": (EmbeddingsRequest, embeddings_payload)})


def _hit(h: Any, with_text: bool) -> dict[str, Any]:
    return {"id": h.id, "score": h.score, "stages": h.stages, **({"text": h.text, "metadata": h.metadata}
                                                                  if with_text else {})}


def _embedding_rows(model: ServedModel, vecs: Any, dims: int | None, fmt: str) -> list[dict[str, Any]]:
    if model.kind == "sparse":
        csr = vecs.tocsr()
        return [{"object": "embedding", "index": i,
                 "embedding": {"indices": csr.indices[csr.indptr[i]:csr.indptr[i + 1]],
                               "values": csr.data[csr.indptr[i]:csr.indptr[i + 1]].astype(np.float32)}}
                for i in range(csr.shape[0])]
    if model.kind == "multivector":
        return [{"object": "embedding", "index": i, "embedding": np.asarray(m, dtype=np.float32)}
                for i, m in enumerate(vecs)]
    v = np.asarray(vecs, dtype=np.float32)
    if dims is not None and dims < v.shape[1]:  # Matryoshka: keep the first dims, unit length again
        v = v[:, :dims]
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    if fmt == "base64":
        le = v.astype("<f4")
        return [{"object": "embedding", "index": i, "embedding": base64.b64encode(le[i].tobytes()).decode("ascii")}
                for i in range(len(le))]
    return [{"object": "embedding", "index": i, "embedding": v[i]} for i in range(len(v))]


def _version() -> str:
    from embedstack import __version__

    return __version__
