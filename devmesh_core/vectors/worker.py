"""The embedding worker: keeps the vector index in step with the store's templates.

Off the ingest hot path on purpose: embedding runs at about 180 templates/s on two CPU
cores, while ingest stores tens of thousands of lines per second. The store records which
templates still need a vector (``templates_to_embed``/``mark_embedded``), so the worker
embeds each distinct template once — never a log line, never a template twice — and picks
up where it left off after a restart. Ingest only has to call :meth:`EmbeddingWorker.notify`
(or not even that: the worker also wakes every ``interval`` seconds).

:meth:`EmbeddingWorker.refresh` repairs what the store's flag cannot see: templates whose
text the miner generalised after they were embedded (re-embedded), templates merged away
(their points deleted), an index that was wiped or replaced (re-filled), and payloads whose
services, hosts or levels have grown since (updated in place, so search filters stay right).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from devmesh_core.errors import ConfigError, DevMeshError
from devmesh_core.log import get_logger
from devmesh_core.models import Level, TemplateInfo
from devmesh_core.store.base import LogStore
from devmesh_core.vectors.base import VectorIndex, VectorPoint
from devmesh_core.vectors.embedder import DEFAULT_BATCH_SIZE, Embedder, embedding_text


def _log() -> Any:
    return get_logger(__name__)


def max_level_rank(levels: dict[str, int]) -> int:
    """Rank of the most severe level a template was seen at (0 when unknown)."""
    ranks = []
    for name, count in levels.items():
        if count > 0:
            try:
                ranks.append(Level.parse(name).rank)
            except ValueError:
                continue
    return max(ranks, default=0)


def template_payload(info: TemplateInfo) -> dict[str, Any]:
    """The payload stored with a template's vector.

    ``text`` repeats the template under the key llama-index reads node text from by
    default; ``max_level`` (a :class:`~devmesh_core.models.Level` rank) lets a search ask for
    "at least WARNING" as one range condition. Counts are informational and refreshed
    periodically, not on every event: search reads current figures from the store.
    """
    return {
        "template_id": info.template_id,
        "template": info.template,
        "text": info.template,
        "services": list(info.services),
        "hosts": list(info.hosts),
        "levels": dict(info.levels),
        "max_level": max_level_rank(info.levels),
        "count": info.count,
    }


def _filter_fields(payload: dict[str, Any]) -> tuple[Any, ...]:
    return (
        sorted(payload.get("services") or ()),
        sorted(payload.get("hosts") or ()),
        payload.get("max_level"),
    )


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """What :meth:`EmbeddingWorker.refresh` changed in the index."""

    deleted: int = 0
    reembedded: int = 0
    updated: int = 0


class EmbeddingWorker:
    """Embeds new templates in batches, in the caller's thread or a background thread.

    ``embedded`` counts the templates this worker sent to the embedder (new ones and
    re-embedded ones). ``last_error`` is the last failure of the background loop, for a
    health endpoint.
    """

    def __init__(
        self,
        store: LogStore,
        index: VectorIndex,
        embedder: Embedder,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        interval: float = 30.0,
        refresh_interval: float = 600.0,
        refresh_limit: int = 100_000,
        preload: bool = True,
    ) -> None:
        if embedder.dim != index.dim:
            raise ConfigError(
                f"the embedder makes {embedder.dim}-dim vectors but the index holds {index.dim}"
            )
        self._store = store
        self._index = index
        self._embedder = embedder
        self.batch_size = max(1, batch_size)
        self.interval = interval
        self.refresh_interval = refresh_interval
        self.refresh_limit = refresh_limit
        self.preload = preload
        self.embedded = 0
        self.last_error: str | None = None
        self._run_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ one pass

    def run_once(self) -> int:
        """Embed every template the store says has no vector yet; return how many."""
        total = 0
        with self._run_lock:
            previous: list[str] = []
            while not self._stop.is_set():
                infos = self._store.templates_to_embed(limit=self.batch_size)
                if not infos:
                    break
                ids = [info.template_id for info in infos]
                if ids == previous:  # mark_embedded did not stick: do not spin on it
                    raise DevMeshError(f"templates stay unembedded after marking: {ids[:5]}")
                self._embed(infos)
                self._store.mark_embedded(ids)
                total += len(ids)
                previous = ids
        if total:
            _log().info("templates_embedded", count=total, index_points=self._index.count())
        return total

    def _embed(self, infos: Sequence[TemplateInfo]) -> None:
        vectors = self._embedder.embed([embedding_text(info.template) for info in infos])
        self._index.upsert(
            [
                VectorPoint(info.template_id, vector, template_payload(info))
                for info, vector in zip(infos, vectors, strict=True)
            ]
        )
        self.embedded += len(infos)

    def refresh(self) -> RefreshReport:
        """Bring the index's points in line with the store's templates (see the module doc).

        Only points with a ``template_id`` in their payload are considered (and possibly
        deleted): anything else someone put in the collection is left alone.
        """
        with self._run_lock:
            stored = {
                rec.id: rec.payload for rec in self._index.scroll() if "template_id" in rec.payload
            }
            current = {
                info.template_id: info
                for info in self._store.list_templates(limit=self.refresh_limit)
            }
            unlisted = [tid for tid in stored if tid not in current]
            if unlisted:
                current.update(self._store.get_templates(unlisted))
            gone = [tid for tid in unlisted if tid not in current]
            self._index.delete(gone)

            stale = [
                info
                for tid, info in current.items()
                if info.embedded
                and (tid not in stored or stored[tid].get("template") != info.template)
            ]
            for start in range(0, len(stale), self.batch_size):
                if self._stop.is_set():
                    break
                self._embed(stale[start : start + self.batch_size])

            updated = 0
            redone = {info.template_id for info in stale}
            for tid, payload in stored.items():
                info = current.get(tid)
                if info is None or tid in redone:
                    continue
                fresh = template_payload(info)
                if _filter_fields(fresh) != _filter_fields(payload):
                    self._index.set_payload(tid, fresh)
                    updated += 1
        report = RefreshReport(deleted=len(gone), reembedded=len(stale), updated=updated)
        if gone or stale or updated:
            _log().info(
                "vector_index_refreshed",
                deleted=report.deleted,
                reembedded=report.reembedded,
                updated=report.updated,
            )
        return report

    # ------------------------------------------------------------------ background mode

    def start(self) -> None:
        """Run in a daemon thread: refresh, then embed whenever notified or every interval."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="devmesh-embedder", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Wake the background thread now (e.g. after an ingest batch made new templates)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background thread after the batch in progress."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        log = _log()
        failures = 0
        next_refresh = 0.0
        if self.preload:
            try:
                self._embedder.load()
            except DevMeshError as exc:
                self.last_error = str(exc)
                log.warning("embedding_model_unavailable", error=str(exc))
        while not self._stop.is_set():
            try:
                now = time.monotonic()
                if now >= next_refresh:
                    self.refresh()
                    next_refresh = now + self.refresh_interval
                self.run_once()
                failures = 0
                self.last_error = None
            except DevMeshError as exc:
                failures += 1
                self.last_error = str(exc)
                log.warning("embedding_failed", error=str(exc), failures=failures)
            except Exception as exc:  # a bug must not silently end the thread
                failures += 1
                self.last_error = repr(exc)
                log.exception("embedding_crashed", failures=failures)
            delay = self.interval if failures == 0 else min(self.interval * 2**failures, 300.0)
            self._wake.wait(delay)
            self._wake.clear()
