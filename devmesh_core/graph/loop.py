"""The projection loop: keeps the knowledge graph in step with the store inside a server.

``devmesh graph project`` runs one pass by hand; a running server runs this loop instead, so
the graph the reasoning and the detectors read is never more than one interval behind the
logs. The graph is opened on the loop's first tick (the embedded FalkorDB takes a moment to
start), in the loop's thread, so server start-up does not wait for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from devmesh_core.errors import DevMeshError
from devmesh_core.graph.base import GraphStore
from devmesh_core.graph.projection import DEFAULT_LAG, ProjectionReport, Projector
from devmesh_core.graph.topology import CooccurrenceSettings, Topology
from devmesh_core.log import get_logger
from devmesh_core.store.base import LogStore


def _log() -> Any:
    return get_logger(__name__)


@dataclass
class LoopStats:
    """What the loop has done, for ``/info`` and tests."""

    passes: int = 0
    failures: int = 0
    last_error: str | None = None
    last_report: ProjectionReport | None = None


class ProjectionLoop:
    """Runs incremental projection passes every ``interval`` seconds in a daemon thread.

    ``graph`` is a callable so the graph can be opened lazily (``Core.graph``); when it
    returns ``None`` (graph off or unavailable) the pass is skipped and retried next tick.
    A failing pass is logged and retried; it never stops the loop.
    """

    def __init__(
        self,
        store: LogStore,
        graph: Callable[[], GraphStore | None],
        *,
        interval: float = 30.0,
        lag: timedelta | None = None,
        topology: Topology | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.store = store
        self._graph = graph
        self.interval = interval
        self.topology = topology
        self.lag = lag
        self._now = now
        self.stats = LoopStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._projector: Projector | None = None

    def run_once(self) -> ProjectionReport | None:
        """One pass now (in the caller's thread); ``None`` when no graph is available."""
        graph = self._graph()
        if graph is None:
            return None
        if self._projector is None or self._projector.graph is not graph:
            self._projector = Projector(
                self.store,
                graph,
                topology=self.topology,
                cooccurrence=CooccurrenceSettings(),
                lag=self.lag if self.lag is not None else DEFAULT_LAG,
            )
        report = self._projector.run_once(now=self._now() if self._now else None)
        self.stats.passes += 1
        self.stats.last_report = report
        return report

    def notify(self) -> None:
        """Run the next pass soon (e.g. after a large import) instead of at the next tick."""
        self._wake.set()

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="devmesh-graph", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the pass in progress (if any) and wait for the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
                self.stats.last_error = None
            except DevMeshError as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                _log().warning("graph_projection_failed", error=str(exc))
            except Exception as exc:  # a bug must not kill the server's graph upkeep
                self.stats.failures += 1
                self.stats.last_error = repr(exc)
                _log().exception("graph_projection_crashed")
            self._wake.wait(self.interval)
            self._wake.clear()
