"""deploy/compose.yaml, deploy/Dockerfile and deploy/systemd/: Docker does not run here, so
they are checked for what can go wrong without it — every DEVMESH_* variable they set is a
real setting and parses with the values of .env.example, every service has a health check,
references resolve, and the commands the units run exist in the CLI."""

from __future__ import annotations

import configparser
import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from devmesh.cli.main import app as cli_app
from devmesh_core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*)|:\?[^}]*)?\}")


def _env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _substitute(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` forms."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        if ":?" in match.group(0):
            raise AssertionError(f"{name} is required but .env.example leaves it empty")
        return ""

    return _VAR.sub(one, value)


def _setting_exists(key: str) -> bool:
    """Whether ``DEVMESH_A__B`` names a field of Settings (``a``) / its section (``b``)."""
    path = key.removeprefix("DEVMESH_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(path):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_every_service_is_health_checked_and_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"devmesh", "mariadb", "qdrant", "falkordb", "redis", "ollama"} <= set(services)
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        assert service.get("image") or service.get("build"), name
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition["condition"] in {"service_healthy", "service_started"}
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            assert source in declared_volumes, f"{name} mounts undeclared volume {source}"


def test_devmesh_environment_is_real_settings_that_parse(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = _env_example()
    environment = compose["services"]["devmesh"]["environment"]
    assert environment, "the devmesh service has no settings"
    for key, raw in environment.items():
        assert key.startswith("DEVMESH_"), key
        assert _setting_exists(key), f"{key} is not a DevMesh setting"
        monkeypatch.setenv(key, _substitute(str(raw), env))
    monkeypatch.setenv("DEVMESH_DATA_DIR", str(tmp_path))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.effective_database_url.startswith("mysql://devmesh:")
    assert settings.effective_database_url.endswith("@mariadb:3306/devmesh")
    assert settings.vector_url == "http://qdrant:6333"
    assert settings.graph_url == "redis://falkordb:6379/devmesh"
    assert settings.miner_url == "redis://redis:6379/0"
    # The server container must listen beyond its own loopback.
    assert settings.api_host == "0.0.0.0"


def test_dockerfile_settings_and_command() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for key in re.findall(r"\b(DEVMESH_[A-Z_]+)=", text):
        assert _setting_exists(key), f"Dockerfile sets {key}, which is not a setting"
    assert "torch==2.13.0" in text.split("pip install --no-cache-dir .", 1)[0]
    cmd = re.search(r'^CMD \["devmesh", "(\w+)"\]', text, re.MULTILINE)
    assert cmd is not None and _cli_has(cmd.group(1))


def _cli_has(*words: str) -> bool:
    """Whether ``devmesh WORD...`` is a command of the CLI (walking typer groups)."""
    import typer.main

    group: Any = typer.main.get_command(cli_app)
    for word in words:
        commands = getattr(group, "commands", None)
        if not commands or word not in commands:
            return False
        group = commands[word]
    return True


@pytest.mark.parametrize("unit", ["devmesh.service", "devmesh-agent.service"])
def test_systemd_units_run_existing_commands(unit: str) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / unit)
    exec_start = shlex.split(parser["Service"]["ExecStart"])
    options = [arg.split("=", 1)[0] for arg in exec_start if arg.startswith("--")]
    if exec_start[0].endswith("/devmesh"):  # the server's full install: the typer CLI
        assert _cli_has(exec_start[1]), f"{unit} runs `devmesh {exec_start[1]}`: no such command"
        command = _command(exec_start[1])
        known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    else:  # a node's light venv: a module with its own argparse entry point
        assert exec_start[0].endswith("/python") and exec_start[1] == "-m", exec_start
        module = importlib.import_module(exec_start[2])
        known = set(module.build_parser()._option_string_actions)
    assert set(options) <= known, f"unknown options {set(options) - known}"
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def _command(name: str) -> Any:
    import typer.main

    return typer.main.get_command(cli_app).commands[name]  # type: ignore[attr-defined]
