"""Loki push API (JSON) through the real app and store, as Promtail/Alloy/Vector send it."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from devmesh.api.app import create_app
from devmesh_core.config import Settings

NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


@pytest.fixture
def client(tmp_path: Path, store_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=tmp_path, database_url=store_url))) as c:
        yield c


def _push(**extra: object) -> dict[str, object]:
    return {
        "streams": [
            {
                "stream": {"host": "gw", "service_name": "nginx", "level": "warn", "env": "home"},
                "values": [
                    [str(NS + 1_500), "upstream timed out"],
                    [str(NS + 2_000_000), "retrying", {"trace_id": "abc"}],
                ],
            },
            {
                "stream": {"job": "systemd-journal", "instance": "db01"},
                "values": [[str(NS + 3_000_000), "checkpoint complete"]],
            },
        ],
        **extra,
    }


def test_push_maps_labels_and_stores(client: TestClient) -> None:
    r = client.post("/loki/api/v1/push", json=_push())
    assert r.status_code == 204
    events = client.get("/query/logs", params={"order": "asc"}).json()["events"]
    assert [(e["host"], e["service"], e["level"], e["message"]) for e in events] == [
        ("gw", "nginx", "WARNING", "upstream timed out"),
        ("gw", "nginx", "WARNING", "retrying"),
        ("db01", "systemd-journal", "INFO", "checkpoint complete"),
    ]
    assert events[0]["timestamp"] == "2026-01-01T00:00:00.000001Z"  # ns truncated to µs
    assert events[0]["source"] == "loki"
    assert events[0]["meta"] == {"labels": {"env": "home"}}
    assert events[1]["meta"]["metadata"] == {"trace_id": "abc"}
    # a re-push (agent retry) stores nothing twice
    assert client.post("/loki/api/v1/push", json=_push()).status_code == 204
    assert client.get("/info").json()["counts"]["events"] == 3


def test_gzip_body(client: TestClient) -> None:
    body = gzip.compress(orjson.dumps(_push()))
    r = client.post(
        "/loki/api/v1/push",
        content=body,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert r.status_code == 204
    assert client.get("/info").json()["counts"]["events"] == 3


def test_bad_entries_rejected_by_position_rest_stored(client: TestClient) -> None:
    body = {
        "streams": [
            {
                "stream": {"host": "h", "service": "s", "level": "unknown"},
                "values": [["notanumber", "x"], [str(NS), "fine"], [str(NS), 5]],
            },
            {"values": []},
            {"stream": {"host": "h", "service": "s"}, "values": [[str(NS + 1000), "also fine"]]},
        ]
    }
    r = client.post("/loki/api/v1/push", json=body)
    assert r.status_code == 400
    data = r.json()
    assert data["accepted"] == 2
    assert [x["index"] for x in data["rejected"]] == [0, 2, 3]
    assert "nanoseconds" in data["rejected"][0]["error"]
    events = client.get("/query/logs").json()["events"]
    assert {e["message"] for e in events} == {"fine", "also fine"}
    assert all(e["level"] == "INFO" for e in events)
    fine = next(e for e in events if e["message"] == "fine")
    assert fine["meta"]["labels"] == {"level": "unknown"}


def test_unsupported_and_malformed_bodies(client: TestClient) -> None:
    proto = client.post(
        "/loki/api/v1/push", content=b"\x00\x01", headers={"content-type": "application/x-protobuf"}
    )
    assert proto.status_code == 415 and "JSON" in proto.json()["detail"]
    assert client.post("/loki/api/v1/push", json={"nope": 1}).status_code == 422
    bad_gzip = client.post(
        "/loki/api/v1/push", content=b"not gzip", headers={"content-encoding": "gzip"}
    )
    assert bad_gzip.status_code == 422 and "gzip" in bad_gzip.json()["detail"]
