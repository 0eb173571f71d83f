"""DiscordSettings from the environment, and ``devmesh discord`` without a token."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from devmesh.cli.main import app
from devmesh_core.config import Settings


def test_settings_from_flat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVMESH_DISCORD__TOKEN", "abc")
    monkeypatch.setenv("DEVMESH_DISCORD__ALLOWED_GUILD_IDS", "11, 12")
    monkeypatch.setenv("DEVMESH_DISCORD__ALLOWED_CHANNEL_IDS", "[21]")
    monkeypatch.setenv("DEVMESH_DISCORD__PING_CHANNEL_ID", "21")
    monkeypatch.setenv("DEVMESH_DISCORD__RATE_LIMIT_PER_MINUTE", "5")
    found = Settings().discord
    assert found.token is not None and found.token.get_secret_value() == "abc"
    assert found.allowed_guild_ids == [11, 12]
    assert found.allowed_channel_ids == [21]
    assert found.ping_channel_id == 21 and found.rate_limit_per_minute == 5
    assert "abc" not in repr(found)  # the token never shows in logs


def test_cli_without_token_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVMESH_DISCORD__TOKEN", raising=False)
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "discord"])
    assert result.exit_code == 2
    assert "DEVMESH_DISCORD__TOKEN" in result.output
