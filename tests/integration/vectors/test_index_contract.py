"""One contract suite over every ``VectorIndex`` adapter, on real Qdrant local mode.

* ``local``: :class:`QdrantLocalIndex` as shipped (searches answered from its in-memory
  mirror);
* ``local-qdrant-search``: the same adapter with ``memory_search=False`` (Qdrant answers);
* ``server``: :class:`QdrantServerIndex`. No Qdrant server can run on this machine (not
  packaged for PyPI, apt or npm), so its code path runs over a prebuilt local-mode
  ``QdrantClient`` — the same client API the server speaks, minus the network.

Vectors are small and hand-made so the expected ranking is known exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from devmesh_core.errors import BackendUnavailable, ConfigError
from devmesh_core.vectors import (
    VectorFilter,
    VectorIndex,
    VectorPoint,
    open_vector_index,
)
from devmesh_core.vectors.qdrant_local import QdrantLocalIndex
from devmesh_core.vectors.qdrant_server import QdrantServerIndex

DIM = 4

# The server adapter creates payload indexes; over a local-mode client they are no-ops.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")


def _unit(*values: float) -> list[float]:
    v = np.asarray(values, dtype=np.float32)
    unit: list[float] = (v / np.linalg.norm(v)).tolist()
    return unit


def _make(kind: str, folder: Path) -> VectorIndex:
    if kind == "local":
        return QdrantLocalIndex(folder, dim=DIM)
    if kind == "local-qdrant-search":
        return QdrantLocalIndex(folder, dim=DIM, memory_search=False)
    return QdrantServerIndex(QdrantClient(path=str(folder)), dim=DIM)


@pytest.fixture(params=["local", "local-qdrant-search", "server"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def index(kind: str, tmp_path: Path) -> Iterator[VectorIndex]:
    idx = _make(kind, tmp_path / "vectors")
    yield idx
    idx.close()


POINTS = [
    VectorPoint("a", _unit(1, 0, 0, 0), {"services": ["api"], "hosts": ["h1"], "max_level": 40}),
    VectorPoint(
        "b", _unit(1, 0.2, 0, 0), {"services": ["api", "db"], "hosts": ["h2"], "max_level": 20}
    ),
    VectorPoint("c", _unit(0, 1, 0, 0), {"services": ["db"], "hosts": ["h1"], "max_level": 50}),
    VectorPoint("d", _unit(0, 0, 1, 0), {"services": ["web"], "hosts": ["h3"], "max_level": 30}),
]


def test_upsert_then_search_ranks_by_cosine(index: VectorIndex) -> None:
    index.upsert(POINTS)
    assert index.count() == 4
    hits = index.search(_unit(1, 0.05, 0, 0), limit=3)
    assert [h.id for h in hits] == ["a", "b", "c"]
    assert hits[0].score == pytest.approx(0.99875, abs=1e-4)
    assert hits[0].payload == {"services": ["api"], "hosts": ["h1"], "max_level": 40}
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_offset_and_threshold(index: VectorIndex) -> None:
    index.upsert(POINTS)
    query = _unit(1, 0.05, 0, 0)
    assert [h.id for h in index.search(query, limit=2, offset=1)] == ["b", "c"]
    above = index.search(query, limit=10, score_threshold=0.5)
    assert [h.id for h in above] == ["a", "b"]


def test_filters_match_arrays_and_ranges(index: VectorIndex) -> None:
    index.upsert(POINTS)
    query = _unit(1, 0.05, 0, 0)
    by_service = index.search(query, filter=VectorFilter(equals={"services": "db"}))
    assert [h.id for h in by_service] == ["b", "c"]
    by_host = index.search(query, filter=VectorFilter(equals={"hosts": "h1"}))
    assert [h.id for h in by_host] == ["a", "c"]
    severe = index.search(query, filter=VectorFilter(at_least={"max_level": 40}))
    assert [h.id for h in severe] == ["a", "c"]
    both = VectorFilter(equals={"services": "api"}, at_least={"max_level": 30})
    assert [h.id for h in index.search(query, filter=both)] == ["a"]
    exact_level = VectorFilter(equals={"max_level": 30})
    assert [h.id for h in index.search(query, filter=exact_level)] == ["d"]
    assert index.search(query, filter=VectorFilter(equals={"services": "nope"})) == []


def test_upsert_replaces_by_id(index: VectorIndex) -> None:
    index.upsert(POINTS)
    index.upsert([VectorPoint("a", _unit(0, 0, 0, 1), {"services": ["moved"]})])
    assert index.count() == 4
    hit = index.search(_unit(0, 0, 0, 1), limit=1)[0]
    assert (hit.id, hit.payload) == ("a", {"services": ["moved"]})
    assert [
        h.id
        for h in index.search(_unit(0, 0, 0, 1), filter=VectorFilter(equals={"services": "api"}))
    ] == ["b"]


def test_retrieve_scroll_set_payload_delete(index: VectorIndex) -> None:
    index.upsert(POINTS)
    got = index.retrieve(["a", "zzz", "c"], with_vectors=True)
    assert set(got) == {"a", "c"}
    assert got["a"].vector is not None
    assert np.allclose(got["a"].vector, _unit(1, 0, 0, 0), atol=1e-6)
    assert index.retrieve(["b"])["b"].vector is None

    assert {r.id for r in index.scroll(batch=3)} == {"a", "b", "c", "d"}
    assert {r.id for r in index.scroll(filter=VectorFilter(equals={"services": "api"}))} == {
        "a",
        "b",
    }

    index.set_payload("d", {"services": ["api"], "hosts": ["h9"], "max_level": 10})
    assert index.retrieve(["d"])["d"].payload == {
        "services": ["api"],
        "hosts": ["h9"],
        "max_level": 10,
    }
    api = index.search(_unit(0, 0, 1, 0), filter=VectorFilter(equals={"services": "api"}))
    assert api[0].id == "d"
    assert api[0].score == pytest.approx(1.0, abs=1e-5)  # the vector was kept

    index.delete(["a", "unknown"])
    assert index.count() == 3
    assert "a" not in {h.id for h in index.search(_unit(1, 0, 0, 0), limit=10)}


def test_points_survive_reopening(kind: str, tmp_path: Path) -> None:
    folder = tmp_path / "vectors"
    first = _make(kind, folder)
    first.upsert(POINTS)
    first.delete(["d"])
    first.close()
    again = _make(kind, folder)
    try:
        assert again.count() == 3
        assert [h.id for h in again.search(_unit(0, 1, 0, 0), limit=1)] == ["c"]
    finally:
        again.close()


def test_local_and_qdrant_search_agree(tmp_path: Path) -> None:
    """The in-memory mirror ranks exactly as Qdrant local mode does, filters included."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((300, DIM)).astype(np.float32)
    points = [
        VectorPoint(f"t{i}", vectors[i], {"services": [f"s{i % 5}"], "max_level": 10 * (1 + i % 5)})
        for i in range(300)
    ]
    fast = QdrantLocalIndex(tmp_path / "fast", dim=DIM)
    slow = QdrantLocalIndex(tmp_path / "slow", dim=DIM, memory_search=False)
    try:
        fast.upsert(points)
        slow.upsert(points)
        fast.delete(["t3", "t4"])
        slow.delete(["t3", "t4"])
        for q in rng.standard_normal((10, DIM)).astype(np.float32):
            for flt in (None, VectorFilter(equals={"services": "s2"}, at_least={"max_level": 30})):
                a = fast.search(q, limit=7, filter=flt, offset=2)
                b = slow.search(q, limit=7, filter=flt, offset=2)
                assert [h.id for h in a] == [h.id for h in b]
                assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    finally:
        fast.close()
        slow.close()


def test_dimension_mismatch_is_a_config_error(tmp_path: Path) -> None:
    QdrantLocalIndex(tmp_path / "v", dim=DIM).close()
    with pytest.raises(ConfigError, match="another layout"):
        QdrantLocalIndex(tmp_path / "v", dim=DIM + 1)


def test_second_opener_of_a_local_folder_is_told_why(tmp_path: Path) -> None:
    with (
        QdrantLocalIndex(tmp_path / "v", dim=DIM),
        pytest.raises(BackendUnavailable, match="in use by another DevMesh process"),
    ):
        QdrantLocalIndex(tmp_path / "v", dim=DIM)
    QdrantLocalIndex(tmp_path / "v", dim=DIM).close()  # free again once closed


def test_factory_picks_the_adapter(tmp_path: Path) -> None:
    with open_vector_index(None, tmp_path, DIM) as idx:
        assert isinstance(idx, QdrantLocalIndex)
        assert idx.path == tmp_path / "vectors"
    with open_vector_index(str(tmp_path / "elsewhere"), tmp_path, DIM) as idx:
        assert idx.backend == "qdrant-local"
    assert (tmp_path / "elsewhere").is_dir()
    with open_vector_index(":memory:", tmp_path, DIM, collection="x") as idx:
        assert idx.collection == "x" and idx.count() == 0


def test_unreachable_server_is_backend_unavailable(tmp_path: Path) -> None:
    from tests.conftest import free_port

    with pytest.raises(BackendUnavailable, match="did not answer"):
        open_vector_index(f"http://127.0.0.1:{free_port()}", tmp_path, DIM)
