"""What the Qdrant adapters share: the collection layout, id mapping and error translation.

Only imported by :mod:`~devmesh_core.vectors.qdrant_local` and
:mod:`~devmesh_core.vectors.qdrant_server` (qdrant-client takes seconds to import; nothing
else in DevMesh should pay for it).

Collection layout (also what llama-index's ``QdrantVectorStore`` expects by default):

* one named dense vector, ``text-dense`` (llama-index's default name), cosine distance;
* point id = ``uuid5(NAMESPACE, id)`` (Qdrant ids must be integers or UUIDs), with the
  caller's string id kept in the payload under ``doc_id`` — the key llama-index uses for a
  node's source document, so ``QdrantVectorStore.delete(template_id)`` deletes a template.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from devmesh_core.errors import BackendError, BackendUnavailable, ConfigError
from devmesh_core.vectors.base import (
    Vector,
    VectorFilter,
    VectorHit,
    VectorIndex,
    VectorPoint,
    VectorRecord,
    as_array,
)

VECTOR_NAME = "text-dense"
ID_KEY = "doc_id"
_NAMESPACE = uuid.UUID("6f1e1c3a-8f0b-5d8e-9a57-2d3b8c1e4a10")


def point_id(key: str) -> str:
    """The Qdrant point id (a UUID string) standing for the caller's string id."""
    return str(uuid.uuid5(_NAMESPACE, key))


def to_qdrant_filter(flt: VectorFilter | None) -> models.Filter | None:
    """Our narrow filter as a Qdrant filter (``MatchValue`` also matches inside arrays)."""
    if not flt:
        return None
    must: list[Any] = [
        models.FieldCondition(key=key, match=models.MatchValue(value=value))
        for key, value in flt.equals.items()
    ]
    must.extend(
        models.FieldCondition(key=key, range=models.Range(gte=bound))
        for key, bound in flt.at_least.items()
    )
    return models.Filter(must=must)


def _split_payload(raw: Mapping[str, Any] | None, fallback_id: str) -> tuple[str, dict[str, Any]]:
    payload = dict(raw or {})
    key = payload.pop(ID_KEY, None)
    return (str(key) if key is not None else fallback_id), payload


def _vector_of(raw: Any) -> np.ndarray[Any, np.dtype[np.float32]] | None:
    if isinstance(raw, dict):
        raw = raw.get(VECTOR_NAME)
    return None if raw is None else as_array(raw)


class QdrantIndex(VectorIndex):
    """A :class:`VectorIndex` over any ``QdrantClient`` (local mode or server).

    ``lock`` serialises calls for clients that are not thread-safe (local mode).
    """

    backend = "qdrant"

    def __init__(
        self,
        client: QdrantClient,
        *,
        dim: int,
        collection: str,
        lock: threading.RLock | None = None,
    ) -> None:
        self._client = client
        self.dim = dim
        self.collection = collection
        self._lock = lock
        self._closed = False

    @property
    def client(self) -> QdrantClient:
        """The underlying client, e.g. for llama-index's ``QdrantVectorStore``.

        Read through it only: writes would bypass this adapter's lock (and, in local mode,
        the in-memory search mirror).
        """
        return self._client

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Serialise (if needed) and translate qdrant-client errors at the seam."""
        if self._closed:
            raise BackendError(f"vector index is closed ({what})", backend=self.backend)
        try:
            if self._lock is None:
                yield
            else:
                with self._lock:
                    yield
        except BackendError:
            raise
        except ResponseHandlingException as exc:
            raise BackendUnavailable(
                f"Qdrant did not answer ({what}): {exc.source}", backend=self.backend
            ) from exc
        except UnexpectedResponse as exc:
            kind = BackendUnavailable if exc.status_code in (502, 503, 504) else BackendError
            detail = exc.content.decode("utf-8", "replace")[:300]
            raise kind(
                f"Qdrant refused {what}: HTTP {exc.status_code} {detail}", backend=self.backend
            ) from exc
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"Qdrant failed ({what}): {exc}", backend=self.backend) from exc

    def ensure_collection(self) -> None:
        """Create the collection if missing; refuse one laid out for other vectors."""
        with self._call("open collection"):
            if not self._client.collection_exists(self.collection):
                self._client.create_collection(
                    self.collection,
                    vectors_config={
                        VECTOR_NAME: models.VectorParams(
                            size=self.dim, distance=models.Distance.COSINE
                        )
                    },
                )
                self._created()
                return
            params = self._client.get_collection(self.collection).config.params.vectors
        found = params.get(VECTOR_NAME) if isinstance(params, dict) else None
        if found is None or found.size != self.dim or found.distance != models.Distance.COSINE:
            raise ConfigError(
                f"vector collection {self.collection!r} exists with another layout ({params}); "
                f"DevMesh needs a {self.dim}-dim cosine vector named {VECTOR_NAME!r}: "
                "point DevMesh at another collection or delete this one"
            )

    def _created(self) -> None:
        """Hook run once after the collection was created (the server adds payload indexes)."""

    # ------------------------------------------------------------------ the port

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        structs = [
            models.PointStruct(
                id=point_id(p.id),
                vector={VECTOR_NAME: as_array(p.vector).tolist()},
                payload={**p.payload, ID_KEY: p.id},
            )
            for p in points
        ]
        with self._call("upsert"):
            self._client.upsert(self.collection, points=structs, wait=True)

    def search(
        self,
        vector: Vector,
        *,
        limit: int = 10,
        filter: VectorFilter | None = None,
        score_threshold: float | None = None,
        offset: int = 0,
    ) -> list[VectorHit]:
        with self._call("search"):
            response = self._client.query_points(
                self.collection,
                query=as_array(vector).tolist(),
                using=VECTOR_NAME,
                query_filter=to_qdrant_filter(filter),
                limit=limit,
                offset=offset or None,
                score_threshold=score_threshold,
                with_payload=True,
            )
        hits = []
        for point in response.points:
            key, payload = _split_payload(point.payload, str(point.id))
            hits.append(VectorHit(key, float(point.score), payload))
        return hits

    def retrieve(
        self, ids: Sequence[str], *, with_vectors: bool = False
    ) -> dict[str, VectorRecord]:
        if not ids:
            return {}
        with self._call("retrieve"):
            records = self._client.retrieve(
                self.collection,
                ids=[point_id(i) for i in ids],
                with_payload=True,
                with_vectors=[VECTOR_NAME] if with_vectors else False,
            )
        out = {}
        for rec in records:
            key, payload = _split_payload(rec.payload, str(rec.id))
            out[key] = VectorRecord(key, payload, _vector_of(rec.vector) if with_vectors else None)
        return out

    def scroll(
        self, *, filter: VectorFilter | None = None, with_vectors: bool = False, batch: int = 1_000
    ) -> Iterator[VectorRecord]:
        offset: Any = None
        while True:
            with self._call("scroll"):
                records, offset = self._client.scroll(
                    self.collection,
                    scroll_filter=to_qdrant_filter(filter),
                    limit=batch,
                    offset=offset,
                    with_payload=True,
                    with_vectors=[VECTOR_NAME] if with_vectors else False,
                )
            for rec in records:
                key, payload = _split_payload(rec.payload, str(rec.id))
                yield VectorRecord(key, payload, _vector_of(rec.vector) if with_vectors else None)
            if offset is None:
                return

    def set_payload(self, id: str, payload: Mapping[str, Any]) -> None:
        with self._call("set payload"):
            self._client.overwrite_payload(
                self.collection, payload={**payload, ID_KEY: id}, points=[point_id(id)], wait=True
            )

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._call("delete"):
            self._client.delete(
                self.collection,
                points_selector=models.PointIdsList(points=[point_id(i) for i in ids]),
                wait=True,
            )

    def count(self) -> int:
        with self._call("count"):
            return int(self._client.count(self.collection, exact=True).count)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        lock = self._lock or threading.RLock()
        with lock, contextlib.suppress(Exception):  # closing must not fail a shutdown
            self._client.close()
