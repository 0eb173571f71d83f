"""The ``VectorIndex`` port: what DevMesh asks of a vector database, and the shapes it gets.

DevMesh embeds log *templates* (one point per distinct template, never one per line), so an
index holds thousands of points, not millions. The port is small and concrete in the spirit
of httpx's ``BaseTransport``: string ids and plain payload dicts in, scored hits out, no
driver types on either side, so the embedded default (Qdrant local mode under the data
directory) and a Qdrant server are interchangeable and callers never import qdrant-client.

Filters are deliberately narrow (:class:`VectorFilter`): "this array/scalar payload key holds
this value" and "this integer payload key is at least N" are all semantic search needs to
narrow by service, host and level, and both map onto every Qdrant deployment.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

DEFAULT_COLLECTION = "devmesh_templates"
"""Collection name used unless configured otherwise (one point per log template)."""

Vector = Sequence[float] | NDArray[np.float32]
"""A dense vector: a list of floats or a 1-D float32 array (the embedder's output)."""


@dataclass(frozen=True, slots=True)
class VectorPoint:
    """A point to store: a caller-chosen string id, its vector and a JSON-ready payload."""

    id: str
    vector: Vector
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VectorHit:
    """A search result: the point's id, its similarity to the query and its payload.

    ``score`` is cosine similarity (1.0 = same direction), so thresholds mean the same on
    every backend.
    """

    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """A stored point read back by id or by scrolling; ``vector`` only when asked for."""

    id: str
    payload: dict[str, Any]
    vector: NDArray[np.float32] | None = None


@dataclass(frozen=True, slots=True)
class VectorFilter:
    """Conditions on payload keys, all of which must hold.

    ``equals``: the key's value is this string or integer, or (for an array) contains it —
    so ``{"services": "nginx"}`` matches a template seen in nginx among other services.
    ``at_least``: the key's integer value is >= this bound (e.g. a maximum level rank).
    """

    equals: Mapping[str, str | int] = field(default_factory=dict)
    at_least: Mapping[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.equals or self.at_least)

    def matches(self, payload: Mapping[str, Any]) -> bool:
        """Evaluate the filter on one payload, with the semantics Qdrant gives it."""
        for key, wanted in self.equals.items():
            value = payload.get(key)
            if isinstance(value, list | tuple):
                if wanted not in value:
                    return False
            elif value != wanted:
                return False
        for key, bound in self.at_least.items():
            value = payload.get(key)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < bound:
                return False
        return True


class VectorIndex(ABC):
    """One collection of same-sized vectors compared by cosine similarity.

    Implementations must be safe to call from several threads (the embedding worker writes
    while API requests search) and translate driver errors into
    :class:`~devmesh_core.errors.BackendError` subclasses at the seam.
    """

    backend: str = "abstract"
    dim: int
    collection: str

    @abstractmethod
    def upsert(self, points: Sequence[VectorPoint]) -> None:
        """Insert or replace points by id (idempotent: re-sending a point overwrites it)."""

    @abstractmethod
    def search(
        self,
        vector: Vector,
        *,
        limit: int = 10,
        filter: VectorFilter | None = None,
        score_threshold: float | None = None,
        offset: int = 0,
    ) -> list[VectorHit]:
        """The ``limit`` points closest to ``vector`` (after skipping ``offset``), best first.

        Only points matching ``filter`` and scoring at least ``score_threshold`` count.
        """

    @abstractmethod
    def retrieve(
        self, ids: Sequence[str], *, with_vectors: bool = False
    ) -> dict[str, VectorRecord]:
        """The points among ``ids`` that exist, by id."""

    @abstractmethod
    def scroll(
        self, *, filter: VectorFilter | None = None, with_vectors: bool = False, batch: int = 1_000
    ) -> Iterator[VectorRecord]:
        """Every point (matching ``filter``), read in batches; order is unspecified."""

    @abstractmethod
    def set_payload(self, id: str, payload: Mapping[str, Any]) -> None:
        """Replace the payload of one point, keeping its vector (no re-embedding)."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""

    @abstractmethod
    def count(self) -> int:
        """How many points the collection holds."""

    @abstractmethod
    def close(self) -> None:
        """Release the client (and the local storage lock). Not usable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_array(vector: Vector) -> NDArray[np.float32]:
    """A 1-D float32 copy-free view of ``vector`` where possible."""
    return np.asarray(vector, dtype=np.float32).reshape(-1)
