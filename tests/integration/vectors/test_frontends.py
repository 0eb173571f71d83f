"""``GET /search`` through the real app, and ``devmesh search`` / ``similar`` through typer.

The API test hands the app a ready index and embedder (as it does a store); the CLI test
registers the command functions on a small typer app whose callback builds ``Settings``
like ``devmesh``'s own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from devmesh.api.app import create_app
from devmesh.cli.search import search, similar
from devmesh_core.config import Settings
from devmesh_core.store import LogStore, open_store
from devmesh_core.templates.miner import SignatureMiner
from devmesh_core.vectors import EmbeddingWorker, SentenceTransformerEmbedder
from devmesh_core.vectors.qdrant_local import QdrantLocalIndex
from tests.integration.vectors.conftest import incident_logs, ingest, template_id_of


@pytest.fixture
def api(
    tmp_path: Path,
    store: LogStore,
    miner: SignatureMiner,
    index: QdrantLocalIndex,
    embedder: SentenceTransformerEmbedder,
    worker: EmbeddingWorker,
) -> Iterator[TestClient]:
    ingest(store, miner, incident_logs())
    worker.run_once()
    settings = Settings(data_dir=tmp_path / "state", mine_templates=False)
    app = create_app(settings, store, vector_index=index, embedder=embedder)
    with TestClient(app) as client:
        yield client


def test_search_endpoint(api: TestClient, store: LogStore) -> None:
    r = api.get("/search", params={"q": "disk is full", "limit": 2, "examples": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "disk is full" and len(body["hits"]) == 2
    top = body["hits"][0]
    assert "No space left on device" in top["template"]
    assert top["services"] == ["postgres"] and len(top["examples"]) == 1
    assert top["examples"][0]["template_id"] == top["template_id"]

    filtered = api.get(
        "/search", params={"q": "database down", "service": "worker", "level": "error"}
    ).json()
    assert [h["template"] for h in filtered["hits"]] == [
        "failed to connect to <*>:<*>: ECONNREFUSED"
    ]
    assert api.get("/search", params={"q": "x", "level": "LOUD"}).status_code == 422
    assert api.get("/search", params={"q": "x", "since": "yesterday"}).status_code == 422
    assert api.get("/search", params={"q": ""}).status_code == 422
    assert api.get("/search", params={"q": "x", "limit": 1000}).status_code == 422

    refused = template_id_of(store, "connection refused to")
    econn = template_id_of(store, "ECONNREFUSED")
    similar_body = api.get(f"/search/similar/{refused}").json()
    assert [s["template"] for s in similar_body["similar"]] == [
        "failed to connect to <*>:<*>: ECONNREFUSED"
    ]
    assert api.get("/search/similar/Tnope").status_code == 404
    groups = api.get("/search/groups").json()["groups"]
    assert len(groups) == 1 and groups[0]["leader"] in (refused, econn)
    assert {t["template_id"] for t in groups[0]["templates"]} == {refused, econn}


def test_search_without_vectors_is_503(tmp_path: Path, store: LogStore) -> None:
    app = create_app(Settings(data_dir=tmp_path, mine_templates=False), store)
    with TestClient(app) as client:
        r = client.get("/search", params={"q": "disk"})
    assert r.status_code == 503 and "not enabled" in r.json()["detail"]


# ---------------------------------------------------------------------------- CLI

cli = typer.Typer()


@cli.callback()
def _main(ctx: typer.Context) -> None:
    ctx.obj = Settings()


cli.command("search")(search)
cli.command("similar")(similar)
runner = CliRunner()


@pytest.fixture
def data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: SentenceTransformerEmbedder
) -> Path:
    state = tmp_path / "state"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVMESH_DATA_DIR", str(state))
    monkeypatch.delenv("DEVMESH_DATABASE_URL", raising=False)
    state.mkdir()
    with open_store(f"sqlite:///{state / 'devmesh.db'}") as store, SignatureMiner(state / "m") as m:
        ingest(store, m, incident_logs())
    return state


def _jsonl(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_cli_search_embeds_pending_templates_then_searches(data_dir: Path) -> None:
    first = runner.invoke(cli, ["search", "disk is full", "--json", "-n", "1"])
    assert first.exit_code == 0, first.output
    assert "embedded 7 template(s)" in first.stderr
    hits = _jsonl(first.stdout)
    assert len(hits) == 1 and "No space left on device" in hits[0]["template"]
    assert (data_dir / "vectors").is_dir()

    again = runner.invoke(cli, ["search", "memory exhausted", "--level", "critical"])
    assert again.exit_code == 0, again.output
    assert "embedded" not in again.stderr  # nothing left to embed
    assert "Out of memory" in again.stdout

    bad = runner.invoke(cli, ["search", "x", "--since", "yesterday"])
    assert bad.exit_code == 1 and "not a time" in bad.stderr

    groups = runner.invoke(cli, ["similar", "--json"])
    assert groups.exit_code == 0, groups.output
    [group] = _jsonl(groups.stdout)
    assert {m["template"] for m in group["templates"]} == {
        "connection refused to <*>:<*>",
        "failed to connect to <*>:<*>: ECONNREFUSED",
    }
    leader, other = (m["template_id"] for m in group["templates"])
    one = runner.invoke(cli, ["similar", leader])
    assert one.exit_code == 0, one.output
    assert other in one.stdout and leader not in one.stdout
    missing = runner.invoke(cli, ["similar", "Tnope"])
    assert missing.exit_code == 1 and "has no vector" in missing.stderr


def test_cli_says_why_when_the_index_is_held(data_dir: Path) -> None:
    with QdrantLocalIndex(data_dir / "vectors", dim=384):
        result = runner.invoke(cli, ["search", "disk is full"])
    assert result.exit_code == 1
    assert "in use by another DevMesh process" in " ".join(result.stderr.split())
