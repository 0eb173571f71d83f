"""The server's background parts, in a real ``devmesh serve``: bundled runbooks loaded (so
their triggers open incidents), Prometheus metrics, and the graph kept projected."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devmesh_core.graph import open_graph
from devmesh_core.graph.server import EmbeddedServer, ServerConfig
from tests.conftest import start_server


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def _wait(check: object, timeout: float = 60.0) -> object:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_runbook_trigger_opens_an_incident_and_metrics_count_it(tmp_path: Path) -> None:
    proc, base = start_server(tmp_path / "data", env={"DEVMESH_DETECT__INTERVAL": "0.5"})
    try:
        now = datetime.now(UTC).isoformat()
        lines = [
            {
                "timestamp": now,
                "service": "postgres",
                "host": "db1",
                "level": "error",
                "message": 'could not extend file "base/16384/2619": No space left on device',
            },
            {"timestamp": now, "service": "postgres", "host": "db1", "message": "checkpoint"},
            {"service": "postgres", "message": "no timestamp"},
        ]
        with httpx.Client(base_url=base, timeout=30) as client:
            answer = client.post("/ingest/logs", json=lines).json()
            assert answer["accepted"] == 2 and len(answer["rejected"]) == 1

            def disk_incident() -> list[dict[str, object]]:
                found = client.get("/incidents").json()
                items = found["incidents"] if isinstance(found, dict) else found
                return [i for i in items if "disk-full" in i.get("runbook_ids", [])]

            incidents = _wait(disk_incident)
            assert isinstance(incidents, list) and len(incidents) == 1
            # Detection has examined both stored events (the gauge is 0 once it keeps up).
            _wait(
                lambda: (
                    _metric(client.get("/metrics").text, "devmesh_detection_backlog_events") == 0
                )
            )

            text = client.get("/metrics").text
            assert _metric(text, "devmesh_ingest_events_total", outcome="accepted") == 2
            assert _metric(text, "devmesh_ingest_events_total", outcome="rejected") == 1
            assert _metric(text, "devmesh_events_stored") == 2
            assert _metric(text, "devmesh_incident_events_total", kind="opened") == 1
            assert (
                sum(
                    _metric(text, "devmesh_incidents_open", severity=s) or 0
                    for s in ("low", "medium", "high", "critical")
                )
                == 1
            )
    finally:
        _stop(proc)


def test_server_keeps_the_graph_projected_and_stops_its_embedded_falkordb(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, base = start_server(
        data,
        env={
            "DEVMESH_GRAPH_ENABLED": "true",
            "DEVMESH_GRAPH_INTERVAL": "0.5",
            "DEVMESH_GRAPH_LAG": "0",
        },
    )
    try:
        lines = [
            {
                "timestamp": datetime.now(UTC).isoformat(),
                "service": svc,
                "host": "h1",
                "level": "error",
                "message": f"request failed after {i} ms",
            }
            for i, svc in enumerate(["nginx", "api", "nginx"])
        ]
        httpx.post(f"{base}/ingest/logs", json=lines, timeout=30).raise_for_status()

        server = EmbeddedServer(ServerConfig(directory=data / "graph"))

        def projected() -> bool:
            if server.running() is None:
                return False
            graph = open_graph(None, data, ensure_schema=False)  # reuses the server's
            try:
                stats = graph.stats()
            finally:
                graph.close()
            # nginx and api each EMIT their template and RUN_ON h1; runbooks are linked.
            return (
                stats.edges.get("EMITS", 0) == 2
                and stats.edges.get("RUNS_ON", 0) == 2
                and stats.nodes.get("Runbook", 0) >= 10
            )

        _wait(projected, timeout=90)
    finally:
        _stop(proc)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean stop here.
    assert proc.returncode in (0, -15)
    # The server started the embedded FalkorDB, so it stopped it (data saved) on the way out.
    assert server.running() is None
