"""Vectors: embeddings of log *templates* (not lines) in Qdrant, and semantic search.

* :class:`~devmesh_core.vectors.base.VectorIndex` — the port; ``open_vector_index`` picks
  the embedded default (Qdrant local mode under ``<data_dir>/vectors``) or a Qdrant server.
* :class:`~devmesh_core.vectors.embedder.SentenceTransformerEmbedder` — the packaged
  all-MiniLM-L6-v2, loaded lazily on the CPU (never downloaded).
* :class:`~devmesh_core.vectors.worker.EmbeddingWorker` — embeds each new template once,
  off the ingest path.
* :func:`~devmesh_core.vectors.search.search_templates`, :func:`similar_templates`,
  :func:`group_similar` — what the API and CLI call.

Importing this package loads neither torch nor qdrant-client: the adapters import them
when an index is opened or a text is embedded.

Reading the collection with llama-index (for retrieval built on it)::

    QdrantVectorStore(client=index.client, collection_name=index.collection)

works with its defaults: the vector is named ``text-dense``, the node text is in the
payload key ``text`` (the template), ``doc_id`` is the template id (so
``QdrantVectorStore.delete(template_id)`` works), and the other payload keys
(``template_id``, ``services``, ``hosts``, ``levels``, ``max_level``, ``count``) come back
as node metadata. Points are not written by llama-index (no ``_node_content``), so nodes
are rebuilt through its legacy path; embed queries with the same model
(``HuggingFaceEmbedding(model_name=str(packaged_model_path()))``). In local mode only one
client may open the folder: hand llama-index the open ``index.client``, not a new client.
"""

from __future__ import annotations

from pathlib import Path

from devmesh_core.config import Settings
from devmesh_core.errors import ConfigError
from devmesh_core.vectors.base import (
    DEFAULT_COLLECTION,
    VectorFilter,
    VectorHit,
    VectorIndex,
    VectorPoint,
    VectorRecord,
)
from devmesh_core.vectors.embedder import (
    Embedder,
    SentenceTransformerEmbedder,
    embedding_text,
    packaged_model_path,
)
from devmesh_core.vectors.search import (
    DEFAULT_SIMILARITY,
    SearchHit,
    SimilarTemplate,
    TemplateGroup,
    group_similar,
    search_templates,
    similar_templates,
)
from devmesh_core.vectors.worker import EmbeddingWorker, RefreshReport, template_payload

LOCAL_DIR = "vectors"
"""Folder under the data directory holding the embedded (local-mode) index."""


def open_vector_index(
    url_or_path: str | None,
    data_dir: Path,
    dim: int,
    *,
    collection: str | None = None,
    api_key: str | None = None,
) -> VectorIndex:
    """Open the vector index a setting names, creating the collection if needed.

    ``None`` or ``""`` → Qdrant local mode in ``<data_dir>/vectors`` (the embedded default);
    ``http(s)://host:6333[?collection=…&api_key=…]`` → a Qdrant server; ``:memory:`` → an
    in-memory local index (tests); ``file:///path`` or a plain path → local mode there.
    Raises ``ConfigError`` for anything else or a collection with other vectors, and
    ``BackendUnavailable`` when the server does not answer or the local folder is in use.
    """
    name = collection or DEFAULT_COLLECTION
    target = (url_or_path or "").strip()
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    if scheme in ("http", "https"):
        from devmesh_core.vectors.qdrant_server import QdrantServerIndex

        return QdrantServerIndex.from_url(target, dim=dim, collection=collection, api_key=api_key)
    if scheme not in ("", "file"):
        raise ConfigError(
            f"unsupported vector index URL {target!r}: use http(s)://host:6333 for a Qdrant "
            "server, a folder path for local mode, or leave it unset for the default"
        )
    from devmesh_core.vectors.qdrant_local import MEMORY, QdrantLocalIndex

    if target == MEMORY:
        return QdrantLocalIndex(MEMORY, dim=dim, collection=name)
    if not target:
        path = data_dir / LOCAL_DIR
    elif scheme == "file":
        path = Path(target.split("://", 1)[1])
    else:
        path = Path(target).expanduser()
    return QdrantLocalIndex(path, dim=dim, collection=name)


def open_from_settings(settings: Settings) -> tuple[VectorIndex, SentenceTransformerEmbedder]:
    """The embedder (lazy: the model loads on first use) and vector index the settings name.

    The caller closes the index. Raises like :func:`open_vector_index`.
    """
    embedder = SentenceTransformerEmbedder(
        batch_size=settings.embed_batch, threads=settings.embed_threads
    )
    api_key = settings.vector_api_key.get_secret_value() if settings.vector_api_key else None
    index = open_vector_index(
        settings.vector_url, settings.ensure_data_dir(), embedder.dim, api_key=api_key
    )
    return index, embedder


__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_SIMILARITY",
    "LOCAL_DIR",
    "Embedder",
    "EmbeddingWorker",
    "RefreshReport",
    "SearchHit",
    "SentenceTransformerEmbedder",
    "SimilarTemplate",
    "TemplateGroup",
    "VectorFilter",
    "VectorHit",
    "VectorIndex",
    "VectorPoint",
    "VectorRecord",
    "embedding_text",
    "group_similar",
    "open_from_settings",
    "open_vector_index",
    "packaged_model_path",
    "search_templates",
    "similar_templates",
    "template_payload",
]
