"""Node event files: schema errors that name the field, atomic files, and a collector that
catches up after being offline, against a real ``devmesh serve``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from devmesh.cli.main import app as cli
from ingest.client import HttpPoster, IngestClient, TransientError
from ingest.events import EVENT_TYPES, EventCollector, EventError, NodeEvent, schema, write_event
from tests.conftest import free_port

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _valid() -> dict[str, object]:
    return {
        "timestamp": "2026-11-20T12:00:00+00:00",
        "node": "media01",
        "type": "service_unhealthy",
        "severity": "error",
        "source": "healthcheck",
        "service": "jellyfin",
        "correlation_id": "c-1",
        "payload": {"reason": "HTTP 502 on /health"},
    }


def test_schema_lists_the_normalised_types() -> None:
    assert schema()["properties"]["type"]["enum"] == list(EVENT_TYPES)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "service_exploded"}, "type:"),
        ({"severity": "loud"}, "severity:"),
        ({"timestamp": "yesterday"}, "timestamp:"),
        ({"timestamp": "2026-11-20T12:00:00"}, "timestamp:"),  # no offset
        ({"node": "a/b"}, "node:"),
        ({"payload": [1]}, "payload:"),
        ({"extra": 1}, "extra"),
    ],
)
def test_validation_errors_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(EventError) as info:
        NodeEvent.from_dict({**_valid(), **change})
    assert field in str(info.value)


def test_missing_fields_are_named() -> None:
    data = _valid()
    del data["correlation_id"], data["service"]
    with pytest.raises(EventError) as info:
        NodeEvent.from_dict(data)
    assert "'correlation_id' is a required property" in str(info.value)
    assert "'service' is a required property" in str(info.value)


def test_write_event_layout_and_round_trip(tmp_path: Path) -> None:
    path = write_event(
        tmp_path,
        "deployment_failed",
        node="db01",
        service="postgres",
        severity="error",
        correlation_id="deploy-7",
        payload={"version": "16.2", "error": "migration 42 failed"},
        timestamp=NOW,
    )
    assert path.parent == tmp_path / "2026-11-20" / "db01"
    assert path.name.startswith("20261120T120000.000000Z_deployment_failed_")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left
    event = NodeEvent.from_dict(json.loads(path.read_text()))
    assert (event.type, event.correlation_id, event.timestamp) == (
        "deployment_failed",
        "deploy-7",
        NOW,
    )
    log = event.to_log(path.stem)
    assert log["message"] == "deployment_failed postgres: migration 42 failed"
    assert log["event_type"] == "deployment_failed" and log["host"] == "db01"
    assert log["meta"]["correlation_id"] == "deploy-7"
    with pytest.raises(EventError):
        write_event(tmp_path, "nonsense", node="db01")


def _client(base: str) -> IngestClient:
    return IngestClient(HttpPoster(base, None, timeout=10))


def test_collector_sends_each_file_once_and_catches_up(tmp_path: Path, devmesh_server: str) -> None:
    root = tmp_path / "events"
    for day in range(3):  # a node that was offline for three days
        for i in range(4):
            write_event(
                root,
                EVENT_TYPES[i],
                node=f"n{i % 2}",
                service="web",
                severity="warning",
                correlation_id=f"c{day}",
                timestamp=NOW - timedelta(days=3 - day) + timedelta(minutes=i),
            )
    bad = root / "2026-11-19" / "n0" / "20261119T000000.000000Z_node_online_x.json"
    bad.write_text('{"node": "n0"}')
    (root / "2026-11-19" / "n0" / ".partial.json.tmp").write_text("{")  # a writer mid-way

    collector = EventCollector(root, tmp_path / "state.json", _client(devmesh_server), batch_size=5)
    first = collector.run_once()
    assert (first.sent, first.invalid, first.duplicates) == (12, 1, 0)
    again = EventCollector(root, tmp_path / "state.json", _client(devmesh_server)).run_once()
    assert (again.sent, again.invalid) == (0, 0)  # state survives a restart

    events = httpx.get(
        f"{devmesh_server}/query/logs", params={"limit": 100, "order": "asc"}
    ).json()["events"]
    assert len(events) == 12
    assert [e["event_type"] for e in events[:4]] == list(EVENT_TYPES[:4])
    assert {e["source"] for e in events} == {"event"}
    assert {e["meta"]["correlation_id"] for e in events} == {"c0", "c1", "c2"}

    # losing the state only costs duplicates, never double storage
    (tmp_path / "state.json").unlink()
    resent = EventCollector(root, tmp_path / "state.json", _client(devmesh_server)).run_once()
    assert (resent.sent, resent.duplicates) == (0, 12)


def test_collector_keeps_unsent_files_when_server_is_down(tmp_path: Path) -> None:
    root = tmp_path / "events"
    write_event(root, "node_online", node="n1", timestamp=NOW)
    down = IngestClient(HttpPoster(f"http://127.0.0.1:{free_port()}", None, timeout=2))
    collector = EventCollector(root, tmp_path / "state.json", down)
    with pytest.raises(TransientError):
        collector.run_once()
    assert len(list(collector.pending())) == 1


def test_cli_emit_and_collect(tmp_path: Path, devmesh_server: str) -> None:
    runner = CliRunner()
    root = tmp_path / "ev"
    emitted = runner.invoke(
        cli,
        [
            "event",
            "emit",
            "healthcheck_failed",
            "--root",
            str(root),
            "--node",
            "gw",
            "--service",
            "nginx",
            "--severity",
            "error",
            "--payload",
            '{"reason": "timeout"}',
        ],
    )
    assert emitted.exit_code == 0, emitted.output
    assert Path(emitted.stdout.strip()).is_file()
    bad = runner.invoke(
        cli,
        [
            "event",
            "emit",
            "healthcheck_failed",
            "--root",
            str(root),
            "--node",
            "gw",
            "--payload",
            "[1]",
        ],
    )
    assert bad.exit_code == 2 and "payload" in bad.output
    collected = runner.invoke(
        cli,
        [
            "event",
            "collect",
            "--root",
            str(root),
            "--server",
            devmesh_server,
            "--state",
            str(tmp_path / "s.json"),
        ],
    )
    assert collected.exit_code == 0, collected.output
    assert "sent 1" in collected.stdout
    got = httpx.get(f"{devmesh_server}/query/logs", params={"service": "nginx"}).json()
    assert got["events"][0]["message"] == "healthcheck_failed nginx: timeout"
