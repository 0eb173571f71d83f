"""The knowledge graph: the ``GraphStore`` port and ``open_graph`` to pick a backend by URL.

The default (no URL, or ``falkordb+embedded://``) is an embedded FalkorDB server DevMesh
starts and manages under ``<data_dir>/graph``; ``redis://host:port/graph`` uses an external
FalkorDB. See :mod:`devmesh_core.graph.server` for how the embedded process is run.
"""

from __future__ import annotations

from pathlib import Path

from devmesh_core.graph.base import (
    ActionNode,
    Covers,
    DependencyRef,
    DependsOn,
    DeploymentInfo,
    DeploymentNode,
    Emits,
    FixInfo,
    FixRecord,
    GraphRecord,
    GraphStats,
    GraphStore,
    GraphURL,
    HostNode,
    Impacted,
    IncidentNode,
    IncidentRef,
    Involves,
    Neighbourhood,
    PastIncident,
    RunbookNode,
    RunbookRef,
    RunsOn,
    ServiceNode,
    TemplateNode,
    TemplateRef,
    UpsertResult,
    parse_graph_url,
)


def open_graph(
    url: str | None, data_dir: Path, *, owned: bool = False, ensure_schema: bool = True
) -> GraphStore:
    """Open the graph a URL names (``None`` → the embedded server under ``data_dir``).

    ``owned=True`` stops an embedded server this call started when the store is closed (or
    the interpreter exits); by default the server keeps running for the next process to
    reuse. With ``ensure_schema`` the merge-key indexes are created before returning.
    Raises ``ConfigError`` for a bad URL or missing binaries and ``BackendUnavailable`` when
    the server cannot be started or reached.
    """
    from devmesh_core.graph.falkordb import FalkorDBGraphStore

    store = FalkorDBGraphStore.from_url(url, data_dir, owned=owned)
    if ensure_schema:
        try:
            store.ensure_schema()
        except BaseException:
            store.close()
            raise
    return store


__all__ = [
    "ActionNode",
    "Covers",
    "DependencyRef",
    "DependsOn",
    "DeploymentInfo",
    "DeploymentNode",
    "Emits",
    "FixInfo",
    "FixRecord",
    "GraphRecord",
    "GraphStats",
    "GraphStore",
    "GraphURL",
    "HostNode",
    "Impacted",
    "IncidentNode",
    "IncidentRef",
    "Involves",
    "Neighbourhood",
    "PastIncident",
    "RunbookNode",
    "RunbookRef",
    "RunsOn",
    "ServiceNode",
    "TemplateNode",
    "TemplateRef",
    "UpsertResult",
    "open_graph",
    "parse_graph_url",
]
