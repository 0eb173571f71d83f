"""``files:`` / ``tail:`` in the shipper YAML and ``devmesh ship --path``: parsed, validated,
mistakes named."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devmesh.cli.ship import build_config
from ingest.config import (
    DEFAULT_CONTINUE_PATTERN,
    DEFAULT_STATE_DIR,
    ShipperConfigError,
    load_config,
    parse_config,
)
from ingest.shipper import EX_CONFIG

ROOT = Path(__file__).resolve().parents[2]


def test_files_section_with_defaults_and_relative_globs(tmp_path: Path) -> None:
    path = tmp_path / "shipper.yaml"
    path.write_text(
        "journal: {enabled: false}\n"
        "files:\n"
        "  - {path: logs/*.log, service: app}\n"
        "  - path: /var/log/nginx/error.log\n"
        "    service: nginx\n"
        "    host: edge\n"
        "    start: tail\n"
        "    level: warning\n"
        "    timestamps: read_time\n"
        "    timezone: UTC\n"
        "    multiline: {start: '^\\d{4}', max_lines: 9, timeout_seconds: 0.5}\n"
        "tail: {poll_interval: 0.05, rotate_wait_seconds: 1, partial_line_seconds: 2}\n"
    )
    cfg = load_config(path)
    assert not cfg.journal.enabled
    app, nginx = cfg.files
    assert app.path == str(tmp_path / "logs" / "*.log") and app.service == "app"
    assert app.start == "head" and app.level == "auto" and app.timestamps == "auto"
    assert app.multiline.enabled and app.multiline.continue_pattern == DEFAULT_CONTINUE_PATTERN
    assert nginx.host == "edge" and nginx.start == "tail" and nginx.level == "WARNING"
    assert nginx.timestamps == "read_time" and nginx.timezone == "UTC"
    assert nginx.multiline.start == r"^\d{4}" and nginx.multiline.max_lines == 9
    assert nginx.multiline.timeout == 0.5
    assert (cfg.tail.poll_interval, cfg.tail.rotate_wait, cfg.tail.partial_line_timeout) == (
        0.05,
        1.0,
        2.0,
    )
    assert cfg.file_checkpoint_path == DEFAULT_STATE_DIR / "files.json"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("files: {path: x}", "files must be a list"),
        ("files: ['/var/log/*.log']", "files[0] must be a mapping"),
        ("files: [{path: /x}]", "files[0].service must be a non-empty string"),
        ("files: [{service: a}]", "files[0].path must be a path string"),
        ("files: [{path: /x, service: a, colour: red}]", "files[0]: unknown keys: colour"),
        ("files: [{path: /x, service: a, start: middle}]", "start must be head or tail"),
        ("files: [{path: /x, service: a, level: loud}]", "level must be auto or one of"),
        ("files: [{path: /x, service: a, multiline: {start: '('}}]", "multiline.start: bad regex"),
        (
            "files: [{path: /x, service: a, multiline: {max_lines: 0}}]",
            "multiline.max_lines must be at least 1",
        ),
        ("files: [{path: /x, service: a, max_line_bytes: 10}]", "max_line_bytes must be at least"),
        ("tail: {poll: 1}", "tail: unknown keys: poll"),
        ("journal: {enabled: false}", "nothing to ship"),
    ],
)
def test_mistakes_are_named(text: str, error: str) -> None:
    with pytest.raises(ShipperConfigError, match=re.escape(error)):
        parse_config(yaml.safe_load(text))


def test_cli_path_replaces_files_and_switches_the_journal_off(tmp_path: Path) -> None:
    cfg = build_config(
        None,
        paths=["logs/*.log", str(tmp_path / "b.log")],
        service="app",
        multiline_start=r"^\[",
        multiline_timeout=0.3,
        max_line_bytes=4096,
        poll_interval=0.02,
        rotate_wait=0.5,
        start="tail",
    )
    assert not cfg.journal.enabled
    first, second = cfg.files
    assert Path(first.path).is_absolute() and first.path.endswith("logs/*.log")
    assert second.path == str(tmp_path / "b.log")
    assert first.service == "app" and first.start == "tail"
    assert first.multiline.start == r"^\[" and first.multiline.timeout == 0.3
    assert first.max_line_bytes == 4096
    assert cfg.tail.poll_interval == 0.02 and cfg.tail.rotate_wait == 0.5
    both = build_config(None, paths=["/x/*.log"], service="app", directory=tmp_path)
    assert both.journal.enabled and both.journal.mode == "directory" and both.files
    no_ml = build_config(None, paths=["/x/*.log"], service="app", multiline=False)
    assert not no_ml.files[0].multiline.enabled


def test_cli_path_needs_a_service() -> None:
    with pytest.raises(ShipperConfigError, match="--path needs --service"):
        build_config(None, paths=["/x/*.log"])
    with pytest.raises(ShipperConfigError, match="add --path"):
        build_config(None, service="app")


def test_light_entry_point_exits_78_without_a_service(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devmesh.cli.ship",
            "--path",
            str(tmp_path / "*.log"),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == EX_CONFIG
    assert b"--path needs --service" in result.stderr
