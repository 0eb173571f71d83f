"""How far the detection loop is behind ingest (``DetectionRunner.backlog``, the
``devmesh_detection_backlog_events`` gauge), over a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devmesh_core.config import Settings
from devmesh_core.detect.loop import DetectionRunner, build_detector
from devmesh_core.models import LogEvent
from devmesh_core.runtime import Core
from devmesh_core.store import open_store

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _events(first: int, n: int) -> list[LogEvent]:
    return [
        LogEvent(
            timestamp=T0 + timedelta(seconds=first + i),
            service="api",
            host="h1",
            message=f"request {first + i} served",
        )
        for i in range(n)
    ]


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Core]:
    settings = Settings(data_dir=tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'logs.db'}")
    yield Core(settings, store)
    store.close()


def test_backlog_counts_what_detection_has_not_examined(core: Core) -> None:
    core.store.insert(_events(0, 5))  # stored before detection ever ran: not its backlog
    runner = DetectionRunner(core, build_detector(core))
    assert runner.backlog() == 0  # no pass yet, no watermark
    runner.start_watermark()
    assert runner.backlog() == 0
    core.store.insert(_events(5, 7))
    assert runner.backlog() == 7
    result = runner.run_pass()
    assert result.events == 7
    assert runner.backlog() == 0
    core.store.insert(_events(12, 3))
    assert runner.backlog() == 3
