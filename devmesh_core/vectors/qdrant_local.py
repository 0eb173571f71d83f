"""The embedded default: Qdrant local mode (``QdrantClient(path=...)``) under the data dir.

No server to run: qdrant-client keeps the collection in a folder and answers in-process.
Its limits shape this adapter:

* **One process per folder.** qdrant-client locks the folder; a second process (the CLI
  while ``devmesh serve`` runs) gets :class:`~devmesh_core.errors.BackendUnavailable`
  saying so. Within the process the client is not thread-safe, so calls are serialised.
* **Brute force in Python.** Local mode scores every point with numpy but evaluates payload
  filters point by point in Python: measured here at 10k points, a filtered top-10 query
  took about 400 ms (unfiltered about 30 ms). So by default searches are answered from an
  in-memory mirror of the collection (the vectors, normalised, and the payloads) with one
  matrix product and cached filter masks: the same exact cosine ranking, in a few
  milliseconds. The folder stays the source of truth (every write goes to Qdrant first) and
  nothing else can change it while this process holds the lock, so the mirror cannot go
  stale. ``memory_search=False`` asks Qdrant itself (used by the contract tests to check
  both give the same answers).

Meant for what DevMesh stores: one point per distinct log template (thousands). Local mode
warns above 20,000 points; beyond that run a Qdrant server (``DEVMESH_VECTOR_URL``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from qdrant_client import QdrantClient

from devmesh_core.errors import BackendError, BackendUnavailable
from devmesh_core.log import get_logger
from devmesh_core.vectors._qdrant import QdrantIndex
from devmesh_core.vectors.base import (
    DEFAULT_COLLECTION,
    Vector,
    VectorFilter,
    VectorHit,
    VectorPoint,
    as_array,
)

MEMORY = ":memory:"


class QdrantLocalIndex(QdrantIndex):
    """Qdrant local mode in ``path`` (or ``":memory:"``), with fast in-process search."""

    backend = "qdrant-local"

    def __init__(
        self,
        path: Path | str,
        *,
        dim: int,
        collection: str = DEFAULT_COLLECTION,
        memory_search: bool = True,
    ) -> None:
        self.path = path
        client = _open_client(path)
        super().__init__(client, dim=dim, collection=collection, lock=threading.RLock())
        self._mirror: _Mirror | None = None
        try:
            self.ensure_collection()
            if memory_search:
                mirror = _Mirror(dim)
                for rec in self.scroll(with_vectors=True):
                    assert rec.vector is not None
                    mirror.put(rec.id, rec.vector, rec.payload)
                self._mirror = mirror
        except BaseException:
            self.close()
            raise
        get_logger(__name__).debug(
            "vector_index_opened", path=str(path), collection=collection, points=self.count()
        )

    def upsert(self, points: Sequence[VectorPoint]) -> None:
        assert self._lock is not None
        with self._lock:
            super().upsert(points)
            if self._mirror is not None:
                for p in points:
                    self._mirror.put(p.id, as_array(p.vector), _as_stored(p.payload))

    def set_payload(self, id: str, payload: Mapping[str, Any]) -> None:
        assert self._lock is not None
        with self._lock:
            super().set_payload(id, payload)
            if self._mirror is not None:
                self._mirror.set_payload(id, _as_stored(payload))

    def delete(self, ids: Sequence[str]) -> None:
        assert self._lock is not None
        with self._lock:
            super().delete(ids)
            if self._mirror is not None:
                for key in ids:
                    self._mirror.remove(key)

    def search(
        self,
        vector: Vector,
        *,
        limit: int = 10,
        filter: VectorFilter | None = None,
        score_threshold: float | None = None,
        offset: int = 0,
    ) -> list[VectorHit]:
        if self._mirror is None:
            return super().search(
                vector, limit=limit, filter=filter, score_threshold=score_threshold, offset=offset
            )
        assert self._lock is not None
        with self._lock:
            if self._closed:
                raise BackendError("vector index is closed (search)", backend=self.backend)
            query = as_array(vector)
            if query.shape != (self.dim,):
                raise BackendError(
                    f"query vector has {query.size} dimensions, the index {self.dim}",
                    backend=self.backend,
                )
            return self._mirror.search(query, limit, filter, score_threshold, offset)

    def close(self) -> None:
        super().close()
        self._mirror = None


def _as_stored(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as Qdrant gives it back (JSON: tuples become lists), so both paths agree."""
    return orjson.loads(orjson.dumps(dict(payload)))  # type: ignore[no-any-return]


def _open_client(path: Path | str) -> QdrantClient:
    if str(path) == MEMORY:
        return QdrantClient(location=MEMORY)
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return QdrantClient(path=str(folder))
    except RuntimeError as exc:  # the folder lock: another process has it open
        raise BackendUnavailable(
            f"the local vector index in {folder} is in use by another DevMesh process "
            "(Qdrant local mode allows one at a time): stop it, search through its API "
            "(GET /search), or run a Qdrant server and set DEVMESH_VECTOR_URL",
            backend="qdrant-local",
        ) from exc
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(
            f"cannot open the local vector index in {folder}: {exc}", backend="qdrant-local"
        ) from exc


class _Mirror:
    """The collection in memory: a growable row-normalised matrix plus payloads by row."""

    def __init__(self, dim: int) -> None:
        self._matrix: NDArray[np.float32] = np.zeros((256, dim), dtype=np.float32)
        self._ids: list[str] = []
        self._payloads: list[dict[str, Any]] = []
        self._row: dict[str, int] = {}
        self._masks: dict[tuple[Any, ...], NDArray[np.bool_]] = {}

    def put(self, key: str, vector: NDArray[np.float32], payload: dict[str, Any]) -> None:
        norm = float(np.linalg.norm(vector))
        unit = vector / norm if norm > 0 else vector
        row = self._row.get(key)
        if row is None:
            row = len(self._ids)
            if row == self._matrix.shape[0]:
                grown = np.zeros((row * 2, self._matrix.shape[1]), dtype=np.float32)
                grown[:row] = self._matrix
                self._matrix = grown
            self._ids.append(key)
            self._payloads.append(payload)
            self._row[key] = row
        else:
            self._payloads[row] = payload
        self._matrix[row] = unit
        self._masks.clear()

    def set_payload(self, key: str, payload: dict[str, Any]) -> None:
        row = self._row.get(key)
        if row is not None:
            self._payloads[row] = payload
            self._masks.clear()

    def remove(self, key: str) -> None:
        row = self._row.pop(key, None)
        if row is None:
            return
        last = len(self._ids) - 1
        if row != last:  # move the last row into the hole
            moved = self._ids[last]
            self._matrix[row] = self._matrix[last]
            self._ids[row] = moved
            self._payloads[row] = self._payloads[last]
            self._row[moved] = row
        self._ids.pop()
        self._payloads.pop()
        self._masks.clear()

    def _mask(self, flt: VectorFilter) -> NDArray[np.bool_]:
        key = (tuple(sorted(flt.equals.items())), tuple(sorted(flt.at_least.items())))
        mask = self._masks.get(key)
        if mask is None:
            mask = np.fromiter(
                (flt.matches(p) for p in self._payloads), dtype=np.bool_, count=len(self._ids)
            )
            self._masks[key] = mask
        return mask

    def search(
        self,
        query: NDArray[np.float32],
        limit: int,
        flt: VectorFilter | None,
        threshold: float | None,
        offset: int,
    ) -> list[VectorHit]:
        n = len(self._ids)
        if n == 0 or limit <= 0:
            return []
        norm = float(np.linalg.norm(query))
        scores = self._matrix[:n] @ (query / norm if norm > 0 else query)
        keep: NDArray[np.bool_] | None = self._mask(flt) if flt else None
        if threshold is not None:  # Qdrant keeps scores strictly above the threshold
            above = scores > threshold
            keep = above if keep is None else keep & above
        rows = np.flatnonzero(keep) if keep is not None else np.arange(n)
        want = offset + limit
        if rows.size > want:
            top = np.argpartition(-scores[rows], want - 1)[:want]
            rows = rows[top]
        rows = rows[np.argsort(-scores[rows], kind="stable")][offset:want]
        return [VectorHit(self._ids[r], float(scores[r]), dict(self._payloads[r])) for r in rows]
