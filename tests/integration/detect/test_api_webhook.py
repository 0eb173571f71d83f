"""End to end: events through the real API → incident opened → ONE signed webhook POST at a
real local HTTP server → resolved after the quiet period (second POST); incidents API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from devmesh_core.notify.webhook import SIGNATURE_HEADER, verify_signature
from tests.conftest import start_server

Got = list[tuple[dict[str, str], bytes]]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Got]]:
    got: Got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers.items()), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


def wait_for(predicate: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_events_to_incident_to_one_signed_webhook(
    tmp_path: Path, receiver: tuple[str, Got]
) -> None:
    url, got = receiver
    env = {
        "DEVMESH_VECTORS_ENABLED": "false",
        "DEVMESH_DETECT__INTERVAL": "0.3",
        "DEVMESH_DETECT__AUTO_RESOLVE_AFTER": "4",
        "DEVMESH_DETECT__USE_GRAPH": "false",
        "DEVMESH_NOTIFY__WEBHOOKS": json.dumps([{"url": url, "secret": "hook-secret"}]),
    }
    proc, base = start_server(tmp_path / "data", env=env)
    try:
        now = datetime.now(UTC).isoformat()
        events = [
            {
                "timestamp": now,
                "service": "nginx",
                "host": "web1",
                "level": "ERROR",
                "message": f"service_unhealthy nginx: probe {i} failed",
                "event_type": "service_unhealthy",
            }
            for i in range(3)
        ]
        r = httpx.post(f"{base}/ingest/logs", json=events, timeout=10)
        assert r.json()["accepted"] == 3
        assert wait_for(lambda: len(got) >= 1)
        time.sleep(1.0)  # more passes run: still one notification for the opening
        opened = [b for _, b in got if json.loads(b)["kind"] == "opened"]
        assert len(opened) == 1
        headers, body = got[0]
        assert verify_signature(body, "hook-secret", headers[SIGNATURE_HEADER])
        payload = json.loads(body)
        incident_id = payload["incident"]["id"]
        assert payload["incident"]["hosts"] == ["web1"]

        listed = httpx.get(f"{base}/incidents", params={"state": "active"}, timeout=10).json()
        assert [i["id"] for i in listed["incidents"]] == [incident_id]
        shown = httpx.get(f"{base}/incidents/{incident_id.lower()}", timeout=10).json()
        assert shown["incident"]["signals"][0]["kind"] == "health_event"
        assert httpx.get(f"{base}/incidents/INC-999", timeout=10).status_code == 404
        status = httpx.get(f"{base}/status", timeout=10).json()
        assert status["open_incidents"] == {"high": 1}
        assert [h["host"] for h in status["hosts"]] == ["web1"]

        # quiet period → auto-resolved, one more signed POST
        assert wait_for(lambda: any(json.loads(b)["kind"] == "resolved" for _, b in got))
        kinds = [json.loads(b)["kind"] for _, b in got]
        assert kinds == ["opened", "resolved"]
        assert all(verify_signature(b, "hook-secret", h[SIGNATURE_HEADER]) for h, b in got)
        r = httpx.post(f"{base}/incidents/{incident_id}/ack", json={"by": "alice"}, timeout=10)
        assert r.status_code == 422  # resolved incidents cannot be acknowledged
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_ingest_wakes_detection_and_mitigate_over_the_api(
    tmp_path: Path, receiver: tuple[str, Got]
) -> None:
    """With a 120 s detection interval, an incident still opens within seconds of the
    ingest (the endpoint wakes the loop); then it is mitigated through the API."""
    url, got = receiver
    env = {
        "DEVMESH_VECTORS_ENABLED": "false",
        "DEVMESH_DETECT__INTERVAL": "120",
        "DEVMESH_DETECT__USE_GRAPH": "false",
        "DEVMESH_NOTIFY__WEBHOOKS": json.dumps([{"url": url}]),
    }
    proc, base = start_server(tmp_path / "data", env=env)
    try:
        time.sleep(1.0)  # the loop's first pass has run; the next is two minutes away
        event = {
            "timestamp": datetime.now(UTC).isoformat(),
            "service": "postgres",
            "host": "db1",
            "level": "ERROR",
            "message": "service_unhealthy postgres: pg_isready failed",
            "event_type": "service_unhealthy",
        }
        sent = time.monotonic()
        assert httpx.post(f"{base}/ingest/logs", json=[event], timeout=10).json()["accepted"] == 1
        assert wait_for(lambda: len(got) >= 1, timeout=15)
        assert time.monotonic() - sent < 15  # far below the interval
        incident_id = json.loads(got[0][1])["incident"]["id"]

        r = httpx.post(f"{base}/incidents/{incident_id}/mitigate", json={"by": "bob"}, timeout=10)
        assert r.status_code == 200
        incident = r.json()["incident"]
        assert incident["state"] == "mitigated" and incident["acknowledged_by"] == "bob"
        assert wait_for(lambda: any(json.loads(b)["kind"] == "mitigated" for _, b in got))
        again = httpx.post(f"{base}/incidents/{incident_id}/mitigate", timeout=10)
        assert again.status_code == 422 and "cannot become mitigated" in again.json()["detail"]
        missing = httpx.post(f"{base}/incidents/INC-404/mitigate", timeout=10)
        assert missing.status_code == 404
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
