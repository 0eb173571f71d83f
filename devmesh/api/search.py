"""Semantic search endpoints: ``GET /search``, ``/search/similar/{id}``, ``/search/groups``.

Thin: parse the query string, call one ``devmesh_core.vectors`` function, format. The app
provides ``app.state.store``, ``app.state.vector_index`` and ``app.state.embedder``; without
the last two (vectors disabled) the endpoints answer 503. Endpoints are plain ``def`` so
FastAPI runs them in its thread pool: embedding a query holds the CPU for milliseconds.
``devmesh_core.vectors`` is imported on first use, so an API that never searches never loads
numpy, qdrant-client or torch for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from devmesh_core.errors import BackendUnavailable, InvalidInput
from devmesh_core.models import Level
from devmesh_core.timeparse import parse_time

if TYPE_CHECKING:
    from devmesh_core.store.base import LogStore
    from devmesh_core.vectors.base import VectorIndex
    from devmesh_core.vectors.embedder import Embedder

router = APIRouter(tags=["search"])


def _json(data: Any) -> Response:
    # Imported here: devmesh.api.app includes this router, so a module-level import would
    # be circular.
    from devmesh.api.app import json_response

    return json_response(data)


def _index(request: Request) -> VectorIndex:
    index = getattr(request.app.state, "vector_index", None)
    if index is None:
        raise BackendUnavailable("semantic search is not enabled on this server", backend="vectors")
    return index  # type: ignore[no-any-return]


def _parts(request: Request) -> tuple[LogStore, VectorIndex, Embedder]:
    index = _index(request)
    embedder = getattr(request.app.state, "embedder", None)
    if embedder is None:
        raise BackendUnavailable("semantic search is not enabled on this server", backend="vectors")
    return request.app.state.store, index, embedder


def _level(value: str | None) -> Level | None:
    try:
        return Level.parse(value) if value else None
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


@router.get("/search")
def search(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=1_000, description="What to look for.")],
    service: str | None = None,
    host: str | None = None,
    level: Annotated[str | None, Query(description="Minimum level.")] = None,
    since: Annotated[str | None, Query(description="15m, 2h, 3d or ISO 8601.")] = None,
    until: Annotated[str | None, Query(description="15m, 2h, 3d or ISO 8601.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    examples: Annotated[int, Query(ge=0, le=20)] = 3,
    min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
) -> Response:
    """Log templates closest in meaning to ``q``, each with its recent matching events.

    With filters only templates that have an event matching all of them are returned.
    """
    from devmesh_core.vectors.search import search_templates

    store, index, embedder = _parts(request)
    hits = search_templates(
        store,
        index,
        embedder,
        q,
        limit=limit,
        service=service,
        host=host,
        level=_level(level),
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
        examples=examples,
        min_score=min_score,
    )
    return _json({"query": q, "hits": [hit.to_api() for hit in hits]})


@router.get("/search/similar/{template_id}")
def similar(
    request: Request,
    template_id: str,
    threshold: Annotated[float | None, Query(ge=-1, le=1)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """Templates worded differently that read as the same event as this one."""
    from devmesh_core.vectors.search import DEFAULT_SIMILARITY, similar_templates

    found = similar_templates(
        _index(request),
        template_id,
        threshold=DEFAULT_SIMILARITY if threshold is None else threshold,
        limit=limit,
    )
    return _json({"template_id": template_id, "similar": [s.to_api() for s in found]})


@router.get("/search/groups")
def groups(
    request: Request,
    threshold: Annotated[float | None, Query(ge=-1, le=1)] = None,
    service: str | None = None,
    min_size: Annotated[int, Query(ge=2, le=1_000)] = 2,
) -> Response:
    """Groups of templates that read as the same event (ids are never merged)."""
    from devmesh_core.vectors.search import DEFAULT_SIMILARITY, group_similar

    found = group_similar(
        _index(request),
        threshold=DEFAULT_SIMILARITY if threshold is None else threshold,
        service=service,
        min_size=min_size,
    )
    return _json({"groups": [g.to_api() for g in found]})
