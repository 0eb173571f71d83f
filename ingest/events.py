"""Node event files of the homelab event system: write them, validate them, collect them.

Nodes (deploy scripts, health checks, remediation runs) drop one JSON file per event under
``EVENT_ROOT/YYYY-MM-DD/<node>/<ts>_<type>_<uuid>.json``. Files are written atomically
(temporary name, fsync, rename), so a reader never sees half a file; the collector sends
every file it has not sent yet to ``POST /ingest/logs`` and remembers what it sent, so a node
that was offline for days catches up on its own (offline sync). Re-sending is harmless: the
file name is the event's ``source_id`` and the server dedups on it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator, FormatChecker

from devmesh_core.log import get_logger
from ingest.client import Delivery, IngestClient
from ingest.cursor import atomic_write

log = get_logger(__name__)

EVENT_TYPES = (
    "deployment_started",
    "deployment_succeeded",
    "deployment_failed",
    "service_unhealthy",
    "service_recovered",
    "node_offline",
    "node_online",
    "healthcheck_failed",
    "remediation_started",
    "remediation_completed",
)
SEVERITIES = ("debug", "info", "warning", "error", "critical")


class EventError(ValueError):
    """An event (or event file) is not valid; the message names the field."""


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of the event format (``ingest/schemas/node_event.schema.json``)."""
    text = resources.files("ingest").joinpath("schemas/node_event.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema(), format_checker=FormatChecker())


def validate(data: Any) -> list[str]:
    """Every problem with ``data`` as an event, each naming its field; empty when valid."""
    problems = []
    for error in sorted(_validator().iter_errors(data), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.path)
        if error.validator == "required":
            problems.append(str(error.message))
        else:
            problems.append(f"{where or 'event'}: {error.message}")
    if not problems:
        try:
            _parse_time(data["timestamp"])
        except ValueError as exc:
            problems.append(f"timestamp: {exc}")
    return problems


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class NodeEvent:
    """One validated node event."""

    timestamp: datetime
    node: str
    type: str
    severity: str
    source: str
    service: str | None
    correlation_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> NodeEvent:
        """Validate and build; raises :class:`EventError` listing every bad field."""
        problems = validate(data)
        if problems:
            raise EventError("; ".join(problems))
        return cls(
            timestamp=_parse_time(data["timestamp"]),
            node=data["node"],
            type=data["type"],
            severity=data["severity"],
            source=data["source"],
            service=data["service"],
            correlation_id=data["correlation_id"],
            payload=data["payload"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The file form (timestamps as ISO 8601 in UTC with microseconds)."""
        return {
            "timestamp": self.timestamp.astimezone(UTC).isoformat(timespec="microseconds"),
            "node": self.node,
            "type": self.type,
            "severity": self.severity,
            "source": self.source,
            "service": self.service,
            "correlation_id": self.correlation_id,
            "payload": self.payload,
        }

    def to_log(self, source_id: str) -> dict[str, Any]:
        """The log object the DevMesh API stores for this event."""
        detail = next(
            (
                str(self.payload[k])
                for k in ("message", "reason", "detail", "error")
                if k in self.payload
            ),
            "",
        )
        subject = self.service or self.node
        message = f"{self.type} {subject}" + (f": {detail}" if detail else "")
        return {
            "timestamp": self.timestamp.isoformat(),
            "source": "event",
            "service": self.service or "node",
            "host": self.node,
            "level": self.severity,
            "message": message,
            "event_type": self.type,
            "source_id": source_id,
            "meta": {
                "correlation_id": self.correlation_id,
                "event_source": self.source,
                "payload": self.payload,
            },
        }


def event_path(root: Path, event: NodeEvent, event_id: str) -> Path:
    """Where an event lives: ``root/YYYY-MM-DD/<node>/<ts>_<type>_<uuid>.json`` (UTC date)."""
    ts = event.timestamp.astimezone(UTC)
    name = f"{ts.strftime('%Y%m%dT%H%M%S.%fZ')}_{event.type}_{event_id}.json"
    return root / ts.strftime("%Y-%m-%d") / event.node / name


def write_event(
    root: Path,
    type: str,
    *,
    node: str,
    service: str | None = None,
    severity: str = "info",
    source: str = "devmesh",
    correlation_id: str | None = None,
    payload: Mapping[str, Any] | Any = None,
    timestamp: datetime | None = None,
) -> Path:
    """Validate and write one event file atomically; return its path.

    The file appears under its final name only once complete and on disk (temporary file
    in the same directory, fsync, rename, fsync of the directory).
    """
    event = NodeEvent.from_dict(
        {
            "timestamp": (timestamp or datetime.now(UTC)).isoformat(),
            "node": node,
            "type": type,
            "severity": severity,
            "source": source,
            "service": service,
            "correlation_id": correlation_id,
            "payload": {}
            if payload is None
            else (dict(payload) if isinstance(payload, Mapping) else payload),
        }
    )
    path = event_path(root, event, uuid.uuid4().hex)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, orjson.dumps(event.to_dict(), option=orjson.OPT_INDENT_2))
    return path


@dataclass(slots=True)
class CollectStats:
    """What one collection pass did."""

    sent: int = 0
    duplicates: int = 0
    invalid: int = 0
    refused: int = 0


class EventCollector:
    """Send event files under ``root`` that were not sent yet, in time order, in batches.

    What was sent is remembered per day in ``state_path`` (written atomically after every
    acknowledged batch). An invalid file is logged with its reasons and remembered as done,
    so it is reported once rather than on every pass. Days older than ``keep_days`` are
    forgotten (re-sending them would only produce duplicates, which the server absorbs).
    """

    def __init__(
        self,
        root: Path,
        state_path: Path,
        client: IngestClient,
        *,
        batch_size: int = 200,
        keep_days: int = 30,
    ) -> None:
        self.root = root
        self.state_path = state_path
        self.client = client
        self.batch_size = batch_size
        self.keep_days = keep_days
        self._done: dict[str, set[str]] = self._load()

    def _load(self) -> dict[str, set[str]]:
        try:
            raw = orjson.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError:
            log.warning("event_state_unreadable", path=str(self.state_path))
            return {}
        return {day: set(names) for day, names in raw.get("done", {}).items()}

    def _save(self) -> None:
        cutoff = (datetime.now(UTC).date() - timedelta(days=self.keep_days)).isoformat()
        self._done = {day: names for day, names in self._done.items() if day >= cutoff}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        body = {"done": {day: sorted(names) for day, names in sorted(self._done.items())}}
        atomic_write(self.state_path, orjson.dumps(body))

    def pending(self) -> Iterator[tuple[str, Path]]:
        """Files not sent yet, oldest day first, then by name (which starts with the time)."""
        if not self.root.is_dir():
            return
        for day_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            day = day_dir.name
            try:
                date.fromisoformat(day)
            except ValueError:
                continue
            done = self._done.get(day, set())
            files = [
                f
                for node_dir in day_dir.iterdir()
                if node_dir.is_dir()
                for f in node_dir.glob("*.json")
                if not f.name.startswith(".")
            ]
            for f in sorted(files, key=lambda p: p.name):
                key = f"{f.parent.name}/{f.name}"
                if key not in done:
                    yield day, f

    def run_once(self) -> CollectStats:
        """One pass over the tree. Raises the client's TransientError if the server is down
        (what was acknowledged before that is remembered)."""
        stats = CollectStats()
        batch: list[tuple[str, str, dict[str, Any]]] = []
        for day, path in self.pending():
            key = f"{path.parent.name}/{path.name}"
            try:
                event = NodeEvent.from_dict(orjson.loads(path.read_bytes()))
            except (EventError, orjson.JSONDecodeError, OSError) as exc:
                log.warning("event_file_invalid", path=str(path), error=str(exc))
                stats.invalid += 1
                self._done.setdefault(day, set()).add(key)
                continue
            batch.append((day, key, event.to_log(path.stem)))
            if len(batch) >= self.batch_size:
                self._send(batch, stats)
                batch = []
        if batch:
            self._send(batch, stats)
        elif stats.invalid:
            self._save()
        return stats

    def _send(self, batch: list[tuple[str, str, dict[str, Any]]], stats: CollectStats) -> None:
        delivery: Delivery = self.client.deliver(orjson.dumps([b[2] for b in batch]), len(batch))
        stats.sent += delivery.accepted
        stats.duplicates += delivery.duplicates
        stats.refused += delivery.rejected + delivery.dropped
        for day, key, _ in batch:
            self._done.setdefault(day, set()).add(key)
        self._save()
