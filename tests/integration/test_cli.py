"""The ``devmesh`` CLI against a real SQLite store in a temp data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devmesh.cli.main import app
from devmesh_core.store import open_store

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVMESH_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DEVMESH_DATABASE_URL", raising=False)
    monkeypatch.setenv("DEVMESH_LOG_FORMAT", "json")


def _line(i: int, **kw: object) -> str:
    data = {
        "timestamp": f"2026-04-01T00:00:{i:02d}Z",
        "service": "web",
        "host": "h1",
        "level": "error" if i % 2 else "info",
        "message": f"line {i}",
        **kw,
    }
    return json.dumps(data)


def test_import_reports_bad_lines_by_number_and_loads_the_rest(tmp_path: Path) -> None:
    f = tmp_path / "logs.jsonl"
    f.write_text(
        "\n".join(
            [_line(1), "{broken", _line(3), "", json.dumps({"service": "x"}), _line(5), _line(1)]
        )
        + "\n"
    )
    result = runner.invoke(app, ["import", str(f)])
    assert result.exit_code == 0, result.output
    assert "stored 3, duplicates 1, rejected 2" in result.stdout
    assert "line 2:" in result.output and "not valid JSON" in result.output
    assert "line 5:" in result.output and "timestamp: Field required" in result.output
    strict = runner.invoke(app, ["import", "--strict", str(f)])
    assert strict.exit_code == 1
    assert "stored 0, duplicates 4, rejected 2" in strict.stdout


def test_logs_json_and_table(tmp_path: Path) -> None:
    f = tmp_path / "logs.jsonl"
    f.write_text("\n".join(_line(i, message=f"[error] line {i}") for i in range(10)) + "\n")
    assert runner.invoke(app, ["import", str(f)]).exit_code == 0
    result = runner.invoke(app, ["logs", "--json", "--level", "error", "-n", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r["message"] for r in rows] == ["[error] line 9", "[error] line 7", "[error] line 5"]
    table = runner.invoke(app, ["logs", "--service", "web", "--order", "asc", "-n", "2"])
    assert table.exit_code == 0
    assert "[error] line 0" in table.stdout and "more available" in table.stdout
    bad = runner.invoke(app, ["logs", "--since", "whenever"])
    assert bad.exit_code == 1 and "not a time" in bad.output


def test_retention_deletes_old_events(tmp_path: Path) -> None:
    f = tmp_path / "logs.jsonl"
    f.write_text(
        _line(1, timestamp="2000-01-01T00:00:00Z")
        + "\n"
        + _line(2, timestamp="2999-01-01T00:00:00Z")
        + "\n"
    )
    runner.invoke(app, ["import", str(f)])
    result = runner.invoke(app, ["retention", "--days", "30"])
    assert result.exit_code == 0 and "deleted 1 event(s)" in result.stdout
    with open_store(f"sqlite:///{tmp_path / 'state' / 'devmesh.db'}") as store:
        assert store.count() == 1


def test_token_create_prints_token_and_stores_hash(tmp_path: Path) -> None:
    result = runner.invoke(app, ["token", "create", "node-a"])
    assert result.exit_code == 0
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("dm_") and len(token) > 40
    with open_store(f"sqlite:///{tmp_path / 'state' / 'devmesh.db'}") as store:
        hashes = store.token_hashes()
    assert len(hashes) == 1 and token not in hashes.pop()
    assert runner.invoke(app, ["token", "revoke", "node-a"]).exit_code == 0
    assert runner.invoke(app, ["token", "revoke", "node-a"]).exit_code == 1


def test_sample_loads_into_empty_store(tmp_path: Path) -> None:
    from devmesh_core import services

    with open_store(f"sqlite:///{tmp_path / 'x.db'}") as store:
        report = services.load_sample(store)
        assert report.accepted == store.count() > 300 and not report.rejected
        errors = runner.invoke(
            app,
            [
                "--database-url",
                f"sqlite:///{tmp_path / 'x.db'}",
                "logs",
                "--json",
                "--level",
                "error",
                "--since",
                "1h",
            ],
        )
        assert errors.exit_code == 0 and "No space left on device" in errors.stdout
