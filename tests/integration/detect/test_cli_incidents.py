"""``devmesh incidents`` list/show/ack/resolve over a real SQLite data dir."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from devmesh.cli.main import app
from devmesh_core.detect.engine import Detector
from devmesh_core.detect.replay import stored
from devmesh_core.detect.service import IncidentService
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.store import open_store


def test_cli_lifecycle(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'devmesh.db'}")
    try:
        det = Detector(IncidentService(store), DetectSettings(new_signature_warmup=0))
        det.process([stored(1, datetime.now(UTC), "api", "a1", "CRITICAL", "panic: nil map")])
    finally:
        store.close()
    runner = CliRunner()
    env = {
        "DEVMESH_DATA_DIR": str(tmp_path),
        "DEVMESH_DETECT__USE_GRAPH": "false",
        "DEVMESH_VECTORS_ENABLED": "false",
    }
    listed = runner.invoke(app, ["incidents", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "INC-1" in listed.output and "api" in listed.output
    shown = runner.invoke(app, ["incidents", "show", "1"], env=env)
    assert "panic: nil map" in shown.output
    acked = runner.invoke(app, ["incidents", "ack", "INC-1", "--by", "alice"], env=env)
    assert "acknowledged by alice" in acked.output
    again = runner.invoke(app, ["incidents", "ack", "INC-1"], env=env)
    assert again.exit_code == 1 and "cannot become acknowledged" in again.output
    mitigated = runner.invoke(app, ["incidents", "mitigate", "1", "--by", "bob"], env=env)
    assert mitigated.exit_code == 0 and "INC-1 mitigated by bob" in mitigated.output
    shown = runner.invoke(app, ["incidents", "list", "--json"], env=env)
    assert '"state":"mitigated"' in shown.output
    twice = runner.invoke(app, ["incidents", "mitigate", "INC-1"], env=env)
    assert twice.exit_code == 1 and "cannot become mitigated" in twice.output
    done = runner.invoke(app, ["incidents", "resolve", "INC-1", "--note", "fixed"], env=env)
    assert done.exit_code == 0 and "resolved" in done.output
    assert "no incidents" in runner.invoke(app, ["incidents", "list"], env=env).output
