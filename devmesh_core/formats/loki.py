"""Loki push API (JSON form) → DevMesh log objects.

Lets existing agents (Promtail, Grafana Alloy, Vector, Fluent Bit) point at DevMesh
unchanged: ``POST /loki/api/v1/push`` with ``{"streams": [{"stream": {labels}, "values":
[["<unix ns>", "<line>", {metadata}?], ...]}]}``. Stream labels become fields where DevMesh
has one (host, service, level) and ``meta`` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from devmesh_core.errors import InvalidInput
from devmesh_core.models import Level, Rejection

# First label present wins.
HOST_LABELS = ("host", "hostname", "instance", "node", "nodename")
SERVICE_LABELS = ("service_name", "service", "job", "unit", "app", "container", "container_name")
LEVEL_LABELS = ("level", "detected_level", "severity", "lvl", "priority")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _pick(labels: Mapping[str, str], names: tuple[str, ...]) -> tuple[str | None, str | None]:
    for name in names:
        value = labels.get(name)
        if value:
            return name, value
    return None, None


def push_to_items(payload: Any) -> tuple[list[tuple[int, dict[str, Any]]], list[Rejection]]:
    """Flatten a push body into ``(entry index, log object)`` pairs and rejections.

    Entry indexes count entries across all streams in order, so a client can find the
    entry a rejection names. A body that is not a push body at all raises
    :class:`InvalidInput`.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("streams"), list):
        raise InvalidInput('a Loki push body is {"streams": [{"stream": {...}, "values": [...]}]}')
    items: list[tuple[int, dict[str, Any]]] = []
    rejected: list[Rejection] = []
    index = 0
    for number, stream in enumerate(payload["streams"]):
        labels = stream.get("stream") if isinstance(stream, dict) else None
        values = stream.get("values") if isinstance(stream, dict) else None
        if not isinstance(labels, dict) or not isinstance(values, list):
            reason = f"stream {number}: needs 'stream' labels and 'values'"
            rejected.append(Rejection(index, reason))
            index += 1
            continue
        labels = {str(k): str(v) for k, v in labels.items()}
        host_key, host = _pick(labels, HOST_LABELS)
        service_key, service = _pick(labels, SERVICE_LABELS)
        level_key, level = _pick(labels, LEVEL_LABELS)
        if level is not None:
            try:
                level = Level.parse(level).value
            except ValueError:  # e.g. "unknown": keep it as a label, store at the default
                level_key, level = None, None
        rest = {k: v for k, v in labels.items() if k not in (host_key, service_key, level_key)}
        for value in values:
            item = _entry(value, host, service, level, rest)
            if isinstance(item, str):
                rejected.append(Rejection(index, item))
            else:
                items.append((index, item))
            index += 1
    return items, rejected


def _entry(
    value: Any, host: str | None, service: str | None, level: str | None, labels: dict[str, str]
) -> dict[str, Any] | str:
    if not isinstance(value, list) or len(value) not in (2, 3):
        return 'an entry is ["<unix epoch ns>", "<line>"] or with a third metadata object'
    ns, line = value[0], value[1]
    if not isinstance(line, str):
        return "the log line must be a string"
    try:
        nanos = int(ns)
    except (TypeError, ValueError):
        return f"timestamp {ns!r} is not integer nanoseconds since the epoch"
    meta: dict[str, Any] = {"labels": labels} if labels else {}
    if len(value) == 3:
        if not isinstance(value[2], dict):
            return "structured metadata must be an object"
        meta["metadata"] = value[2]
    item: dict[str, Any] = {
        "timestamp": _EPOCH + timedelta(microseconds=nanos // 1000),
        "source": "loki",
        "service": service or "unknown",
        "host": host or "unknown",
        "message": line,
        "meta": meta,
    }
    if level:
        item["level"] = level
    return item
