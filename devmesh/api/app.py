"""The DevMesh HTTP API (FastAPI): ingest and query logs, health and info.

Thin by design: each endpoint parses the request, calls one ``devmesh_core`` service and
formats the answer. Blocking store calls run in the thread pool.
"""

from __future__ import annotations

import ipaddress
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

import devmesh_core
from devmesh.api import background
from devmesh.api.actions import router as actions_router
from devmesh.api.ask import router as ask_router
from devmesh.api.incidents import router as incidents_router
from devmesh.api.search import router as search_router
from devmesh.web.routes import STATIC_DIR as WEB_STATIC_DIR
from devmesh.web.routes import router as web_router
from devmesh_core import services
from devmesh_core.config import Settings
from devmesh_core.errors import (
    AuthError,
    BackendError,
    BackendUnavailable,
    DevMeshError,
    InvalidInput,
    LimitExceeded,
    NotFound,
    TransactionConflict,
    UnsupportedFormat,
)
from devmesh_core.log import get_logger
from devmesh_core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from devmesh_core.models import Level
from devmesh_core.receivers.syslog import SyslogReceiver
from devmesh_core.runtime import Core
from devmesh_core.store import LogQuery, LogStore, open_store
from devmesh_core.templates.miner import TemplateMiner
from devmesh_core.wiring import serve_services

if TYPE_CHECKING:
    from devmesh_core.vectors import Embedder, EmbeddingWorker, VectorIndex

log = get_logger(__name__)


def json_response(
    data: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """JSON through orjson: several times faster than the stdlib for large pages."""
    return Response(
        content=orjson.dumps(data),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


_STATUS: list[tuple[type[DevMeshError], int]] = [
    (LimitExceeded, 413),
    (UnsupportedFormat, 415),
    (InvalidInput, 422),
    (AuthError, 401),
    (NotFound, 404),
    (BackendUnavailable, 503),
    # Rolled back whole after the store's own retries: safe to send again (as a shipper does).
    (TransactionConflict, 503),
    (BackendError, 500),
]


def _status_for(exc: DevMeshError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_miner(settings: Settings, store: LogStore) -> TemplateMiner | None:
    """The template miner for this data dir, or ``None`` (with a warning) if mining is off or
    another process owns the miner state."""
    try:
        return services.open_miner(settings, store, process=settings.miner_process)
    except BackendUnavailable as exc:
        log.warning("template_mining_off", reason=str(exc))
        return None


def get_store(request: Request) -> LogStore:
    """The store opened by the app's lifespan."""
    return request.app.state.store  # type: ignore[no-any-return]


def get_core(request: Request) -> Core:
    """The process's backends and services, opened by the app's lifespan."""
    return request.app.state.core  # type: ignore[no-any-return]


def require_token(request: Request) -> None:
    """Bearer auth whenever any token exists (configured or created)."""
    checker: services.TokenChecker = request.app.state.tokens
    now = time.monotonic()
    if not checker.enabled(now):
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not checker.check(token.strip(), now):
        raise AuthError("missing or invalid bearer token")
    # A node token (bound to a host) may act for that host only; the routes that care read it.
    request.state.token_host = checker.host_of(token.strip(), now)


StoreDep = Annotated[LogStore, Depends(get_store)]
CoreDep = Annotated[Core, Depends(get_core)]


def open_vectors(
    settings: Settings, store: LogStore
) -> tuple[VectorIndex | None, Embedder | None, EmbeddingWorker | None]:
    """The vector index, embedder and background embedding worker, or Nones (with a warning)
    when vectors are off or the index cannot be opened. The model loads in the worker's
    thread, so start-up is not held up by it."""
    if not settings.vectors_enabled:
        return None, None, None
    from devmesh_core.vectors import EmbeddingWorker, open_from_settings

    try:
        index, embedder = open_from_settings(settings)
    except DevMeshError as exc:
        log.warning("semantic_search_off", reason=str(exc))
        return None, None, None
    worker = EmbeddingWorker(
        store, index, embedder, batch_size=settings.embed_batch, interval=settings.embed_interval
    )
    worker.start()
    return index, embedder, worker


def create_app(
    settings: Settings,
    store: LogStore | None = None,
    *,
    vector_index: VectorIndex | None = None,
    embedder: Embedder | None = None,
) -> FastAPI:
    """Build the API. The store (and, if enabled, the vector index with its embedding
    worker) are opened at startup and closed at shutdown, unless given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        app.state.store = (
            store
            if store is not None
            else await run_in_threadpool(open_store, settings.effective_database_url)
        )
        app.state.tokens = services.TokenChecker(
            app.state.store, [t.get_secret_value() for t in settings.api_tokens]
        )
        app.state.miner = await run_in_threadpool(open_miner, settings, app.state.store)
        worker: EmbeddingWorker | None = None
        if vector_index is not None and embedder is not None:
            app.state.vector_index, app.state.embedder = vector_index, embedder
        else:
            app.state.vector_index, app.state.embedder, worker = await run_in_threadpool(
                open_vectors, settings, app.state.store
            )
        app.state.embedding_worker = worker
        app.state.core = Core(
            settings,
            app.state.store,
            miner=app.state.miner,
            vector_index=app.state.vector_index,
            embedder=app.state.embedder,
        )
        core = app.state.core
        app.state.detection = app.state.projection = app.state.syslog = None
        app.state.bots = []
        try:
            # Runbooks, remediation, the notifier hub and the detection loop: the wiring the
            # bot-only commands share (devmesh_core.wiring), stopped in reverse on the way out.
            async with serve_services(core, detect=True) as wired:
                app.state.detection = wired.detection
                try:
                    background.setup_metrics(core, wired.detection)
                    app.state.projection = background.start_projection(core)
                    if settings.syslog_udp_port is not None or settings.syslog_tcp_port is not None:
                        app.state.syslog = SyslogReceiver(
                            partial(
                                services.ingest,
                                app.state.store,
                                default_source="syslog",
                                miner=app.state.miner,
                            ),
                            host=settings.syslog_host,
                            udp_port=settings.syslog_udp_port,
                            tcp_port=settings.syslog_tcp_port,
                        )
                        await app.state.syslog.start()
                    app.state.bots = background.start_bots(core)
                    yield
                finally:
                    await background.stop_bots(app.state.bots)
                    if app.state.syslog is not None:
                        await app.state.syslog.stop()
                    if app.state.projection is not None:
                        await run_in_threadpool(app.state.projection.stop)
        finally:
            await run_in_threadpool(core.close_graph)
            if worker is not None:
                await run_in_threadpool(worker.stop)
                app.state.vector_index.close()
            if app.state.miner is not None:
                app.state.miner.close()
            if own:
                app.state.store.close()

    app = FastAPI(
        title="DevMesh",
        version=devmesh_core.__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )

    @app.exception_handler(DevMeshError)
    async def _devmesh_error(request: Request, exc: DevMeshError) -> Response:
        status = _status_for(exc)
        if status >= 500:
            log.warning("request_failed", path=request.url.path, error=str(exc), status=status)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return json_response({"detail": str(exc)}, status, headers)

    @app.post("/ingest/logs", dependencies=[Depends(require_token)])
    async def ingest_logs(request: Request, store: StoreDep) -> Response:
        """Store a batch: a JSON array of log objects, or ``{"events": [...]}``.

        Malformed objects are rejected one by one with their index and reason; the rest of
        the batch is stored. Re-sent events are counted as duplicates, not stored twice.
        """
        body = await _read_body(request, settings.max_body_bytes)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"body is not valid JSON: {exc}") from exc
        if isinstance(payload, dict) and isinstance(payload.get("events"), list):
            items = payload["events"]
        elif isinstance(payload, list):
            items = payload
        else:
            raise InvalidInput('body must be a JSON array of events or {"events": [...]}')
        if len(items) > settings.max_batch_events:
            raise LimitExceeded(
                f"batch has {len(items)} events; the limit is {settings.max_batch_events}"
            )
        started = time.perf_counter()
        report = await run_in_threadpool(
            services.ingest, store, items, default_source="http", miner=request.app.state.miner
        )
        _record_ingest(request, "http", report, started)
        _new_templates_maybe(request, report.accepted)
        return json_response(
            {
                "accepted": report.accepted,
                "duplicates": report.duplicates,
                "rejected": [{"index": r.index, "error": r.error} for r in report.rejected],
            }
        )

    @app.post("/loki/api/v1/push", dependencies=[Depends(require_token)])
    async def loki_push(request: Request, store: StoreDep) -> Response:
        """Loki's push API (JSON, optionally gzip-compressed), so Promtail, Grafana Alloy,
        Vector or Fluent Bit can ship here unchanged. 204 when every entry was taken; 400
        naming the refused entries (the others are stored)."""
        content_type = request.headers.get("content-type", "")
        if "protobuf" in content_type:
            raise UnsupportedFormat(
                "protobuf push bodies are not supported; configure the agent to send JSON "
                "(e.g. Vector: encoding.codec=json; Fluent Bit's loki output sends JSON)"
            )
        body = await _read_body(request, settings.max_body_bytes)
        if request.headers.get("content-encoding", "").lower() == "gzip":
            body = _gunzip(body, settings.max_body_bytes)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"body is not valid JSON: {exc}") from exc
        started = time.perf_counter()
        report = await run_in_threadpool(
            services.ingest_loki, store, payload, miner=request.app.state.miner
        )
        _record_ingest(request, "loki", report, started)
        _new_templates_maybe(request, report.accepted)
        if report.rejected:
            return json_response(
                {
                    "accepted": report.accepted,
                    "duplicates": report.duplicates,
                    "rejected": [{"index": r.index, "error": r.error} for r in report.rejected],
                },
                400,
            )
        return Response(status_code=204)

    @app.get("/query/logs", dependencies=[Depends(require_token)])
    def query_logs(
        store: StoreDep,
        service: str | None = None,
        host: str | None = None,
        level: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        text: str | None = None,
        trace_id: str | None = None,
        template_id: str | None = None,
        limit: Annotated[int, Query(ge=1)] = 100,
        cursor: str | None = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        order: Literal["desc", "asc"] = "desc",
    ) -> Response:
        """Filtered events, newest first (``order=asc`` for oldest first), keyset-paged."""
        if limit > settings.max_page_size:
            raise InvalidInput(
                f"limit {limit} is over the maximum page size {settings.max_page_size}"
            )
        try:
            min_level = Level.parse(level) if level is not None else None
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        page = store.query(
            LogQuery(
                service=service,
                host=host,
                level=min_level,
                start_time=start_time,
                end_time=end_time,
                text=text,
                trace_id=trace_id,
                template_id=template_id,
                limit=limit,
                cursor=cursor,
                offset=offset,
                order=order,
            )
        )
        return json_response({"events": [e.to_api() for e in page.events], "next": page.next})

    @app.get("/metrics", dependencies=[Depends(require_token)])
    def metrics(core: CoreDep) -> Response:
        """Prometheus metrics: ingest, diagnoses, incidents, actions, stored events."""
        assert core.metrics is not None
        return Response(core.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/health")
    def health(store: StoreDep) -> Response:
        """200 when the store answers, 503 (with the reason) when it does not."""
        try:
            store.ping()
        except DevMeshError as exc:
            return json_response({"status": "unavailable", "store": str(exc)}, 503)
        return json_response({"status": "ok", "store": "ok"})

    @app.get("/info", dependencies=[Depends(require_token)])
    def info(request: Request, store: StoreDep) -> Response:
        """Version, backends in use and counts."""
        checker: services.TokenChecker = request.app.state.tokens
        return json_response(
            {
                "version": devmesh_core.__version__,
                "backends": {"store": store.backend},
                "counts": {"events": store.count(), "templates": store.template_count()},
                "template_mining": request.app.state.miner is not None,
                "syslog": (
                    None
                    if request.app.state.syslog is None
                    else asdict(request.app.state.syslog.stats)
                ),
                "auth": "token" if checker.enabled(time.monotonic()) else "none (loopback only)",
            }
        )

    app.include_router(search_router, dependencies=[Depends(require_token)])
    app.include_router(ask_router, dependencies=[Depends(require_token)])
    app.include_router(actions_router, dependencies=[Depends(require_token)])
    app.include_router(incidents_router, dependencies=[Depends(require_token)])
    # The status page (/ui) does its own session auth (cookies + CSRF), not bearer tokens.
    app.include_router(web_router)
    app.mount("/ui/static", StaticFiles(directory=WEB_STATIC_DIR), name="ui-static")
    return app


def _record_ingest(request: Request, route: str, report: Any, started: float) -> None:
    """Count an ingest batch in the process's metrics."""
    core: Core = request.app.state.core
    if core.metrics is not None:
        core.metrics.record_ingest(route, report, time.perf_counter() - started)


def _new_templates_maybe(request: Request, accepted: int) -> None:
    """Wake the embedding worker after stored events (it embeds only new templates)."""
    worker = getattr(request.app.state, "embedding_worker", None)
    if accepted and worker is not None:
        worker.notify()
    if accepted and getattr(request.app.state, "detection", None) is not None:
        request.app.state.detection.notify()  # detect now, not at the next interval


def _gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body, refusing (413) one that inflates past ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid gzip: {exc}") from exc
    if len(out) > limit:
        raise LimitExceeded(f"body inflates past the limit of {limit} bytes")
    return out


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise LimitExceeded(f"body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LimitExceeded(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
