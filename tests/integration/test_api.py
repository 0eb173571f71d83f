"""The HTTP API through the real FastAPI app and the real stores (SQLite and MariaDB)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from devmesh.api.app import create_app
from devmesh_core.config import Settings
from devmesh_core.store import open_store
from tests.conftest import start_server

TOKEN = "dm_test_token_value"


def _settings(tmp_path: Path, url: str, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, database_url=url, **kw)  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path, store_url: str) -> Iterator[TestClient]:
    settings = _settings(tmp_path, store_url, max_batch_events=500, max_body_bytes=2_000_000)
    with TestClient(create_app(settings)) as c:
        yield c


def _event(i: int, **kw: object) -> dict[str, object]:
    data: dict[str, object] = {
        "timestamp": f"2026-02-01T10:00:{i % 60:02d}.{i:06d}+01:00",
        "service": "api",
        "host": "node1",
        "level": "info",
        "message": f"handled request {i}",
    }
    data.update(kw)
    return data


def test_partial_rejection_stores_the_rest(client: TestClient) -> None:
    batch = [
        _event(0),
        {"service": "api", "host": "node1", "message": "no time"},
        _event(2, level="LOUD"),
        "just a string",
        _event(4, timestamp="yesterday-ish"),
        _event(5, meta=[1, 2]),
        _event(6, level=3),
    ]
    r = client.post("/ingest/logs", json=batch)
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2 and body["duplicates"] == 0
    reasons = {item["index"]: item["error"] for item in body["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "timestamp" in reasons[1] and "Field required" in reasons[1]
    assert "not a log level" in reasons[2]
    assert "JSON object" in reasons[3]
    assert reasons[4].startswith("timestamp:")
    assert reasons[5].startswith("meta:")
    events = client.get("/query/logs").json()["events"]
    assert {e["message"] for e in events} == {"handled request 0", "handled request 6"}
    assert {e["level"] for e in events} == {"INFO", "ERROR"}
    assert all(e["source"] == "http" for e in events)


def test_envelope_form_and_duplicates_on_resend(client: TestClient) -> None:
    batch = [_event(i) for i in range(20)]
    first = client.post("/ingest/logs", json={"events": batch}).json()
    assert (first["accepted"], first["duplicates"]) == (20, 0)
    again = client.post("/ingest/logs", json=[*batch[10:], _event(20)]).json()
    assert (again["accepted"], again["duplicates"]) == (1, 10)
    assert client.get("/info").json()["counts"]["events"] == 21


def test_pagination_across_pages(client: TestClient) -> None:
    client.post(
        "/ingest/logs", json=[_event(i, timestamp="2026-02-01T10:00:00Z") for i in range(57)]
    )
    client.post("/ingest/logs", json=[_event(100 + i) for i in range(30)])
    for order in ("desc", "asc"):
        seen: list[int] = []
        params: dict[str, str | int] = {"limit": 10, "order": order}
        while True:
            body = client.get("/query/logs", params=params).json()
            seen.extend(e["id"] for e in body["events"])
            if body["next"] is None:
                break
            params["cursor"] = body["next"]
        assert len(seen) == 87 == len(set(seen))
        stamps = [
            e["timestamp"]
            for e in client.get("/query/logs", params={"limit": 1000, "order": order}).json()[
                "events"
            ]
        ]
        assert stamps == sorted(stamps, reverse=order == "desc")


def test_query_filters_and_errors(client: TestClient) -> None:
    client.post(
        "/ingest/logs",
        json=[
            _event(1, level="error", service="db", message="disk full on /var"),
            _event(2, level="warning", service="db"),
            _event(3, level="error", service="web", trace_id="tr-9"),
        ],
    )
    got = client.get("/query/logs", params={"service": "db", "level": "ERROR"}).json()["events"]
    assert [e["message"] for e in got] == ["disk full on /var"]
    assert (
        client.get("/query/logs", params={"trace_id": "tr-9"}).json()["events"][0]["service"]
        == "web"
    )
    assert len(client.get("/query/logs", params={"level": "warn"}).json()["events"]) == 3
    assert (
        len(
            client.get(
                "/query/logs",
                params={
                    "start_time": "2026-02-01T09:00:02+00:00",
                    "end_time": "2026-02-01T09:00:03Z",
                },
            ).json()["events"]
        )
        == 1
    )
    bad = client.get("/query/logs", params={"level": "LOUD"})
    assert bad.status_code == 422 and "not a log level" in bad.json()["detail"]
    assert client.get("/query/logs", params={"cursor": "zzz"}).status_code == 422
    assert client.get("/query/logs", params={"limit": 5000}).status_code == 422
    assert client.get("/query/logs", params={"limit": 0}).status_code == 422


def test_limits(client: TestClient) -> None:
    too_many = client.post("/ingest/logs", json=[_event(i) for i in range(501)])
    assert too_many.status_code == 413 and "limit is 500" in too_many.json()["detail"]
    huge = client.post(
        "/ingest/logs",
        content=b"[" + b" " * 2_100_000 + b"]",
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413 and "bytes" in huge.json()["detail"]
    assert client.post("/ingest/logs", content=b"{not json").status_code == 422
    assert client.post("/ingest/logs", json={"nope": 1}).status_code == 422
    ok = client.post("/ingest/logs", json=[_event(i) for i in range(500)])
    assert ok.status_code == 200 and ok.json()["accepted"] == 500


def test_health_and_info(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "store": "ok"}
    info = client.get("/info").json()
    assert info["backends"]["store"] in ("sqlite", "mysql")
    assert info["counts"]["events"] == 0
    assert info["version"]


def test_auth_required_when_tokens_exist(tmp_path: Path, sqlite_url: str) -> None:
    settings = _settings(tmp_path, sqlite_url, api_tokens=TOKEN)
    with TestClient(create_app(settings)) as c:
        assert c.post("/ingest/logs", json=[_event(1)]).status_code == 401
        wrong = c.post("/ingest/logs", json=[_event(1)], headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert c.get("/query/logs").status_code == 401
        assert c.get("/health").status_code == 200  # health stays open for probes
        ok = c.post("/ingest/logs", json=[_event(1)], headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["accepted"] == 1


def test_created_token_works_and_revocation_applies(tmp_path: Path, sqlite_url: str) -> None:
    from devmesh_core import services

    with open_store(sqlite_url) as store:
        token = services.create_token(store, "shipper")
    settings = _settings(tmp_path, sqlite_url)
    with TestClient(create_app(settings)) as c:
        c.app.state.tokens._refresh = 0  # type: ignore[attr-defined]
        assert c.get("/info").status_code == 401
        assert c.get("/info", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        with open_store(sqlite_url) as store:
            store.revoke_token("shipper")
        assert c.get("/info", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_store_down_gives_503(tmp_path: Path, mariadb_url: str) -> None:
    store = open_store(mariadb_url)
    settings = _settings(tmp_path, mariadb_url)
    with TestClient(create_app(settings, store)) as c:
        store.close()  # the backend is gone from the app's point of view
        assert c.get("/health").status_code == 503
        r = c.post("/ingest/logs", json=[_event(1)])
        assert r.status_code == 503 and "closed" in r.json()["detail"]


def test_real_server_without_token_binds_loopback_only(tmp_path: Path) -> None:
    proc, base = start_server(tmp_path, "--host", "0.0.0.0")
    port = int(base.rsplit(":", 1)[1])
    try:
        r = httpx.post(f"{base}/ingest/logs", json=[_event(1)], timeout=5)
        assert r.json()["accepted"] == 1
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode()
    records = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    warning = [r for r in records if r.get("event") == "no_api_token_binding_loopback"]
    assert warning and warning[0]["requested_host"] == "0.0.0.0"
    serving = [r for r in records if r.get("event") == "serving"]
    assert serving[0]["url"] == f"http://127.0.0.1:{port}"
