"""Template mining inline at ingest: through the real API app, a real store, a real miner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from devmesh.api.app import create_app
from devmesh.cli.main import app as cli
from devmesh_core.config import Settings
from devmesh_core.store import LogQuery, open_store
from devmesh_core.templates.owned import OwnedMiner


def _batch(start: int, n: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(start, start + n):
        out.append(
            {
                "timestamp": f"2026-06-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
                "service": "api",
                "host": f"n{i % 3}",
                "level": "error" if i % 4 == 0 else "info",
                "message": f"GET /items/{i} returned 200 in {i % 50} ms",
            }
        )
        out.append(
            {
                "timestamp": f"2026-06-01T01:{i // 60 % 60:02d}:{i % 60:02d}Z",
                "service": "db",
                "host": "db1",
                "message": f"connection from 10.0.0.{i % 250} port {4000 + i} accepted",
            }
        )
    return out


def test_ingest_mines_templates_with_ids_stable_across_restarts(
    tmp_path: Path, store_url: str
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=store_url)
    with TestClient(create_app(settings)) as c:
        assert c.post("/ingest/logs", json=_batch(0, 40)).json()["accepted"] == 80
        events = c.get("/query/logs", params={"limit": 1000}).json()["events"]
        ids = {e["service"]: e["template_id"] for e in events}
        assert all(e["template_id"] for e in events)
        assert len({e["template_id"] for e in events}) == 2
        info = c.get("/info").json()
        assert info["counts"]["templates"] == 2 and info["template_mining"] is True
    # a new process (app) over the same data dir keeps the ids
    with TestClient(create_app(settings)) as c:
        c.post("/ingest/logs", json=_batch(100, 10))
        later = c.get(
            "/query/logs",
            params={
                "limit": 20,
                "start_time": "2026-06-01T00:01:40Z",
                "end_time": "2026-06-01T00:02:00Z",
            },
        ).json()["events"]
        assert later and {e["template_id"] for e in later} == {ids["api"]}
        by_template = c.get("/query/logs", params={"template_id": ids["db"], "limit": 1000}).json()
        assert len(by_template["events"]) == 50
    with open_store(store_url) as store:
        api = store.get_templates([ids["api"]])[ids["api"]]
        assert api.count == 50 and api.template.startswith("GET <*>")
        assert api.hosts == ("n0", "n1", "n2") and set(api.levels) == {"ERROR", "INFO"}


def test_second_process_runs_without_mining_and_says_so(tmp_path: Path, sqlite_url: str) -> None:
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url)
    holder = OwnedMiner(settings.miner_dir)
    try:
        with TestClient(create_app(settings)) as c:
            assert c.post("/ingest/logs", json=_batch(0, 5)).json()["accepted"] == 10
            assert c.get("/info").json()["template_mining"] is False
            assert all(e["template_id"] is None for e in c.get("/query/logs").json()["events"])
    finally:
        holder.close()
    runner = CliRunner()
    env = {
        "DEVMESH_DATA_DIR": str(tmp_path),
        "DEVMESH_DATABASE_URL": sqlite_url,
        "DEVMESH_LOG_FORMAT": "json",
    }
    result = runner.invoke(cli, ["templates", "backfill"], env=env)
    assert result.exit_code == 0 and "mined 10 event(s)" in result.stdout
    listing = runner.invoke(cli, ["templates", "list", "--json"], env=env)
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert sorted(r["count"] for r in rows) == [5, 5]


def test_cli_import_mines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVMESH_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DEVMESH_DATABASE_URL", raising=False)
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(json.dumps(e) for e in _batch(0, 30)) + "\n")
    result = CliRunner().invoke(cli, ["import", str(f)])
    assert result.exit_code == 0, result.output
    with open_store(f"sqlite:///{tmp_path / 'devmesh.db'}") as store:
        assert store.template_count() == 2
        assert store.count(LogQuery()) == 60
        assert store.events_without_template() == []
