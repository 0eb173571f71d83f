"""The README's settings reference is generated from the settings model: keep them equal."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from devmesh.cli.config import README_BEGIN, README_END, reference_markdown
from devmesh.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_matches_the_settings_model() -> None:
    text = README.read_text()
    between = text[text.index(README_BEGIN) + len(README_BEGIN) : text.index(README_END)]
    assert between.strip() == reference_markdown().strip(), (
        "README settings reference is stale: regenerate it with `devmesh config reference`"
    )


def test_every_nested_section_is_listed() -> None:
    table = reference_markdown()
    for prefix in ("DETECT__", "NOTIFY__", "REASON__", "ACTIONS__", "DISCORD__", "TELEGRAM__"):
        assert f"`DEVMESH_{prefix}" in table, prefix


def test_show_masks_secrets(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["config", "show", "--json"],
        env={
            "DEVMESH_DATA_DIR": str(tmp_path),
            "DEVMESH_DATABASE_URL": "mysql://devmesh:hunter2@db:3306/devmesh",
            "DEVMESH_API_TOKENS": "dm_supersecret",
            "DEVMESH_TELEGRAM__TOKEN": "999:telegram-secret",
        },
    )
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert "dm_supersecret" not in result.output
    assert "telegram-secret" not in result.output
    assert "mysql://devmesh:***@db:3306/devmesh" in result.output
