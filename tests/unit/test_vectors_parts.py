"""Pure parts of ``devmesh_core.vectors``: text to embed, filters, grouping, payloads, URLs."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from devmesh_core.errors import ConfigError, InvalidInput
from devmesh_core.models import TemplateInfo
from devmesh_core.vectors import VectorFilter, embedding_text, open_vector_index, template_payload
from devmesh_core.vectors.embedder import (
    SentenceTransformerEmbedder,
    _configured_dim,
    packaged_model_path,
    query_text,
)
from devmesh_core.vectors.search import leader_groups
from devmesh_core.vectors.worker import max_level_rank


def test_errno_names_get_their_message() -> None:
    assert embedding_text("connect ECONNREFUSED <*>:<*>") == (
        "connect ECONNREFUSED (Connection refused) <*>:<*>"
    )
    assert "ENOSPC (No space left on device)" in embedding_text("write failed: ENOSPC")
    # not an errno name, or part of a longer word: left alone
    assert embedding_text("EXAMPLE ERROR in ECONNREFUSEDX") == "EXAMPLE ERROR in ECONNREFUSEDX"
    assert embedding_text("  user <*> logged in ") == "user <*> logged in"


def test_query_text_validates() -> None:
    assert query_text(" disk full ") == "disk full"
    with pytest.raises(InvalidInput, match="empty"):
        query_text("  ")
    with pytest.raises(InvalidInput, match="over"):
        query_text("x" * 1001)


def test_filter_semantics() -> None:
    payload = {"services": ["api", "db"], "hosts": ["h1"], "max_level": 40}
    assert VectorFilter(equals={"services": "db"}).matches(payload)
    assert not VectorFilter(equals={"services": "web"}).matches(payload)
    assert VectorFilter(equals={"max_level": 40}).matches(payload)
    assert VectorFilter(at_least={"max_level": 40}).matches(payload)
    assert not VectorFilter(at_least={"max_level": 41}).matches(payload)
    assert not VectorFilter(at_least={"missing": 0}).matches(payload)
    assert not VectorFilter(at_least={"flag": 0}).matches({"flag": True})
    assert not VectorFilter() and VectorFilter(equals={"hosts": "h1"})


def _unit(rows: list[list[float]]) -> NDArray[np.float32]:
    m = np.asarray(rows, dtype=np.float32)
    unit: NDArray[np.float32] = m / np.linalg.norm(m, axis=1, keepdims=True)
    return unit


def test_leader_groups_do_not_chain_and_respect_labels() -> None:
    # a~b (0.8), b~c (0.8) but a!~c (0.28): leader a takes b; c stays on its own
    angle = np.arccos(0.8)
    vectors = _unit(
        [[1, 0], [np.cos(angle), np.sin(angle)], [np.cos(2 * angle), np.sin(2 * angle)], [-1, 0]]
    )
    groups = leader_groups(vectors, 0.75, block=2)
    assert [[row for row, _ in g] for g in groups] == [[0, 1], [2], [3]]
    assert groups[0][1][1] == pytest.approx(0.8, abs=1e-5)
    # the same vectors with labels: b is not a's kind, so it leads its own group with c
    labelled = leader_groups(vectors, 0.75, labels=[40, 20, 20, 40])
    assert [[row for row, _ in g] for g in labelled] == [[0], [1, 2], [3]]


def test_payload_and_levels() -> None:
    info = TemplateInfo(
        template_id="T1",
        template="disk <*> full",
        services=("db",),
        hosts=("h1", "h2"),
        count=5,
        first_seen=datetime(2026, 1, 1, tzinfo=UTC),
        last_seen=datetime(2026, 1, 2, tzinfo=UTC),
        levels={"INFO": 3, "ERROR": 2},
    )
    payload = template_payload(info)
    assert payload == {
        "template_id": "T1",
        "template": "disk <*> full",
        "text": "disk <*> full",
        "services": ["db"],
        "hosts": ["h1", "h2"],
        "levels": {"INFO": 3, "ERROR": 2},
        "max_level": 40,
        "count": 5,
    }
    assert max_level_rank({}) == 0
    assert max_level_rank({"CRITICAL": 0, "WARNING": 1, "bogus": 3}) == 30


def test_dimension_is_read_without_loading_the_model() -> None:
    assert _configured_dim(packaged_model_path()) == 384
    embedder = SentenceTransformerEmbedder()
    assert embedder.dim == 384 and not embedder.loaded
    with pytest.raises(ConfigError):
        SentenceTransformerEmbedder(batch_size=0)


def test_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="embedding size"):
        _ = SentenceTransformerEmbedder(tmp_path).dim
    with pytest.raises(ConfigError, match="no sentence-transformers model"):
        SentenceTransformerEmbedder(tmp_path).load()


def test_bad_index_urls_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unsupported vector index URL"):
        open_vector_index("grpc://qdrant:6334", tmp_path, 4)
    with pytest.raises(ConfigError, match="unknown Qdrant URL parameter"):
        open_vector_index("http://qdrant:6333?colection=x", tmp_path, 4)
    with pytest.raises(ConfigError, match="not a Qdrant server URL"):
        open_vector_index("http://", tmp_path, 4)


def test_importing_the_frontends_loads_no_ml_stack() -> None:
    """The API and CLI import these modules at start-up; torch and qdrant-client wait."""
    code = (
        "import sys, devmesh_core.vectors, devmesh.api.search, devmesh.cli.search;"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'qdrant_client') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
