"""``Core``: the opened backends and services one DevMesh process works with.

Built once by an entry point (the API's lifespan, a CLI command, ``devmesh up``) from
``Settings`` and handed to the front ends, so a bot handler or an endpoint reaches every
capability through one object instead of opening its own connections. Each capability adds
its service here (incidents, actions, reasoning) and opens/closes it with the rest.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devmesh_core.config import Settings
from devmesh_core.errors import DevMeshError
from devmesh_core.log import get_logger
from devmesh_core.store.base import LogStore

if TYPE_CHECKING:
    from devmesh_core.actions.service import ActionService
    from devmesh_core.detect.service import IncidentService
    from devmesh_core.graph import GraphStore
    from devmesh_core.metrics import Metrics
    from devmesh_core.notify.base import NotifierHub
    from devmesh_core.reason.runbooks import Runbook
    from devmesh_core.templates.miner import TemplateMiner
    from devmesh_core.vectors import Embedder, VectorIndex


@dataclass
class Core:
    """The process's backends. Fields left ``None`` are off or unavailable; callers say so
    to the user rather than fail (e.g. semantic search without an index)."""

    settings: Settings
    store: LogStore
    miner: TemplateMiner | None = None
    vector_index: VectorIndex | None = None
    embedder: Embedder | None = None
    runbooks: list[Runbook] = field(default_factory=list)
    # Services of the capabilities built on the backends; each is set by its opener.
    incidents: IncidentService | None = None
    notifiers: NotifierHub | None = None
    actions: ActionService | None = None
    reasoner: Any = None
    metrics: Metrics | None = None
    _graph: GraphStore | None = field(default=None, repr=False)
    _graph_error: str | None = field(default=None, repr=False)
    _graph_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _owns_backends: bool = field(default=False, repr=False)

    def graph(self) -> GraphStore | None:
        """The knowledge graph, opened on first use (the embedded FalkorDB takes a moment to
        start, and many commands never need it); ``None`` with a warning if it cannot be
        opened. Later calls do not retry a failed start. An embedded server this call had
        to start is owned: :meth:`close_graph` stops it (data saved); one already running
        for the data dir (another DevMesh process) is reused and left running."""
        with self._graph_lock:
            if self._graph is None and self._graph_error is None:
                from devmesh_core.graph import open_graph

                try:
                    self._graph = open_graph(
                        self.settings.graph_url, self.settings.data_dir, owned=True
                    )
                except DevMeshError as exc:
                    self._graph_error = str(exc)
                    get_logger(__name__).warning("graph_unavailable", reason=str(exc))
            return self._graph

    def set_graph(self, graph: GraphStore | None) -> None:
        """Use an already opened graph (tests, or a caller that opened it itself)."""
        with self._graph_lock:
            self._graph, self._graph_error = graph, None

    def close_graph(self) -> None:
        """Close the graph client if it was opened, stopping the embedded server if this
        process started it."""
        with self._graph_lock:
            graph, self._graph = self._graph, None
        if graph is not None:
            graph.close()

    @classmethod
    def open(cls, settings: Settings, *, vectors: bool = True) -> Core:
        """Open the store and (when enabled and wanted) the vector index and embedder, for a
        command-line process; the API's lifespan builds its ``Core`` from what it opened.
        Close it with :meth:`close`."""
        from devmesh_core.store import open_store

        settings.ensure_data_dir()
        core = cls(settings, open_store(settings.effective_database_url))
        if vectors and settings.vectors_enabled:
            from devmesh_core.vectors import open_from_settings

            try:
                core.vector_index, core.embedder = open_from_settings(settings)
            except DevMeshError as exc:
                get_logger(__name__).warning("semantic_search_off", reason=str(exc))
        core._owns_backends = True
        return core

    def close(self) -> None:
        """Close what :meth:`open` opened (and the graph client, if used)."""
        self.close_graph()
        if self._owns_backends:
            if self.vector_index is not None:
                self.vector_index.close()
            self.store.close()
