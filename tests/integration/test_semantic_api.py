"""The whole path as `devmesh serve` wires it: ingest → mining → background embedding worker
(real model, Qdrant local) → ``GET /search`` finds the template by meaning."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from devmesh.api.app import create_app
from devmesh_core.config import Settings


def test_ingest_then_search_by_meaning(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, vectors_enabled=True, embed_interval=0.5)
    lines = [
        (
            "postgres",
            "ERROR",
            'could not write to file "pg_wal/xlogtemp.{i}": No space left on device',
        ),
        (
            "nginx",
            "ERROR",
            "connect() failed (111: Connection refused) while connecting to upstream",
        ),
        ("kernel", "CRITICAL", "Out of memory: Killed process {i} (java) total-vm:{i}kB"),
        ("sshd", "INFO", "Accepted publickey for admin from 10.0.0.{i} port 22"),
    ]
    batch = [
        {
            "timestamp": f"2026-11-01T00:00:{i:02d}Z",
            "service": svc,
            "host": "h1",
            "level": lvl,
            "message": text.format(i=i),
        }
        for i in range(20)
        for svc, lvl, text in lines
    ]
    with TestClient(create_app(settings)) as client:
        assert client.post("/ingest/logs", json=batch).json()["accepted"] == 80
        deadline = time.monotonic() + 120  # the worker loads the model in the background
        hits: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            r = client.get("/search", params={"q": "the disk is full", "limit": 1})
            if r.status_code == 200 and r.json()["hits"]:
                hits = r.json()["hits"]
                break
            time.sleep(0.5)
        assert hits, "no search hits within 120 s"
        assert "No space left on device" in str(hits[0]["template"])
        assert hits[0]["services"] == ["postgres"]
