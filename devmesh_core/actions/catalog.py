"""The action catalog: every action DevMesh can ever run, with typed, validated parameters.

Validation is the security boundary of remediation. A request is accepted only if its action
is in :data:`CATALOG`, its parameters parse into that action's model (strict regexes, no
extra keys, names rather than paths) and the host's allowlist names the thing it touches.
The same checks run on the server (proposal, approval) and again on the node agent (before
execution), and :func:`plan` turns an accepted action into an ``argv`` list: no shell string
is ever built.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from devmesh_core.actions.models import ActionSpec
from devmesh_core.actions.settings import ActionSettings, Risk, ScriptParam
from devmesh_core.errors import InvalidInput

UNIT_SUFFIXES = (".service", ".socket", ".timer", ".target", ".mount", ".path")
# No leading '-' (it would read as an option), no '/', no whitespace, no shell metacharacter.
_UNIT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@:-]{0,200}")
_CONTAINER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ARG_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


def normalize_unit(value: str) -> str:
    """A systemd unit name, validated, with ``.service`` appended if it has no unit suffix."""
    if not isinstance(value, str) or not _UNIT_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a systemd unit name (letters, digits and _ . @ : - only, "
            "not starting with -)"
        )
    return value if value.endswith(UNIT_SUFFIXES) else f"{value}.service"


def _check(regex: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid {what} (letters, digits and _ . - only, "
                "starting with a letter or digit)"
            )
        return value

    return check


class ActionParams(BaseModel):
    """Base of every action's parameters: strict types, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class UnitParams(ActionParams):
    """A systemd unit (``nginx`` → ``nginx.service``)."""

    unit: StrictStr

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str) -> str:
        return normalize_unit(value)


class ContainerParams(ActionParams):
    """A container, by name."""

    container: StrictStr

    @field_validator("container")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check(_CONTAINER_RE, "container name")(value)


class CacheParams(ActionParams):
    """A cache, by its configured name (never a path)."""

    cache: StrictStr

    @field_validator("cache")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check(_NAME_RE, "cache name")(value)


class LogsParams(ActionParams):
    """A log rotation target, by its configured name."""

    target: StrictStr

    @field_validator("target")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check(_NAME_RE, "log target name")(value)


ArgValue = StrictStr | StrictInt | StrictBool


class ScriptParams(ActionParams):
    """A script, by the name of an executable file in the allowlisted directory, and its
    typed arguments (checked against the script's declaration in the settings)."""

    script: StrictStr
    args: dict[StrictStr, ArgValue] = {}

    @field_validator("script")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check(_NAME_RE, "script name")(value)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One catalog action: its parameter model, default risk and what it does."""

    name: str
    params: type[ActionParams]
    risk: Risk
    description: str
    verb: str = ""
    param_help: dict[str, str] = field(default_factory=dict)


_UNIT_HELP = {"unit": "systemd unit name on the host's allowlist (.service appended if bare)"}
CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            "restart_unit", UnitParams, "low", "restart a systemd unit", "restart", _UNIT_HELP
        ),
        CatalogEntry("start_unit", UnitParams, "low", "start a systemd unit", "start", _UNIT_HELP),
        CatalogEntry("stop_unit", UnitParams, "high", "stop a systemd unit", "stop", _UNIT_HELP),
        CatalogEntry(
            "reload_unit", UnitParams, "low", "reload a systemd unit", "reload", _UNIT_HELP
        ),
        CatalogEntry(
            "restart_container",
            ContainerParams,
            "low",
            "restart a container",
            "restart",
            {"container": "container name on the host's allowlist"},
        ),
        CatalogEntry(
            "clear_cache",
            CacheParams,
            "low",
            "remove the contents of a configured cache directory",
            "",
            {"cache": "cache name from the configured map"},
        ),
        CatalogEntry(
            "rotate_logs",
            LogsParams,
            "low",
            "gzip and truncate a configured set of log files",
            "",
            {"target": "rotation target name from the configuration"},
        ),
        CatalogEntry(
            "run_script",
            ScriptParams,
            "high",
            "run an allowlisted script with its declared typed arguments",
            "",
            {
                "script": "name of a script in the allowlisted directory",
                "args": "the script's declared arguments, name → value",
            },
        ),
    )
}


@dataclass(frozen=True, slots=True)
class ValidatedAction:
    """An action that passed the catalog and the host's allowlist."""

    action: str
    params: dict[str, Any]
    host: str
    risk: Risk
    summary: str


def catalog_specs(settings: ActionSettings | None = None) -> list[ActionSpec]:
    """The catalog as :class:`ActionSpec` s, with the risks the settings give them."""
    risks = settings.risk if settings is not None else {}
    return [
        ActionSpec(
            name=e.name,
            description=e.description,
            params=dict(e.param_help),
            risk=risks.get(e.name, e.risk),
        )
        for e in CATALOG.values()
    ]


def _allowed(name: str, patterns: list[str], *, unit: bool = False) -> bool:
    for pattern in patterns:
        if unit and not any(ch in pattern for ch in "*?[") and "." not in pattern:
            pattern = f"{pattern}.service"
        if fnmatchcase(name, pattern):
            return True
    return False


def _script_args(name: str, spec_params: dict[str, ScriptParam], args: dict[str, Any]) -> None:
    for key in args:
        if key not in spec_params or not _ARG_NAME_RE.fullmatch(key):
            raise InvalidInput(f"bad parameter: script {name!r} declares no argument {key!r}")
    for key, decl in spec_params.items():
        if key not in args:
            if decl.required:
                raise InvalidInput(f"bad parameter: script {name!r} needs argument {key!r}")
            continue
        value = args[key]
        if decl.type == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInput(f"bad parameter: {key!r} must be an integer")
            if decl.minimum is not None and value < decl.minimum:
                raise InvalidInput(f"bad parameter: {key!r} must be ≥ {decl.minimum}")
            if decl.maximum is not None and value > decl.maximum:
                raise InvalidInput(f"bad parameter: {key!r} must be ≤ {decl.maximum}")
        elif decl.type == "bool":
            if not isinstance(value, bool):
                raise InvalidInput(f"bad parameter: {key!r} must be true or false")
        elif decl.type == "choice":
            if value not in decl.choices:
                raise InvalidInput(f"bad parameter: {key!r} must be one of {decl.choices}")
        else:
            if not isinstance(value, str) or not re.fullmatch(decl.pattern, value):
                raise InvalidInput(f"bad parameter: {key!r} does not match {decl.pattern!r}")


def validate_action(
    action: str, params: Any, host: str, settings: ActionSettings, *, check_allow: bool = True
) -> ValidatedAction:
    """Check an action against the catalog and the host's allowlist; raise ``InvalidInput``
    whose message starts with the reason (``not in catalog``, ``bad parameter``, ``not
    allowlisted``)."""
    entry = CATALOG.get(action) if isinstance(action, str) else None
    if entry is None:
        raise InvalidInput(
            f"not in catalog: {str(action)[:80]!r} is not an action DevMesh can run "
            f"(known: {', '.join(CATALOG)})"
        )
    if not isinstance(host, str) or not _CONTAINER_RE.fullmatch(host):
        raise InvalidInput(f"bad parameter: {str(host)[:80]!r} is not a host name")
    if not isinstance(params, dict):
        raise InvalidInput("bad parameter: params must be an object")
    try:
        parsed = entry.params.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInput(f"bad parameter for {action}: {problems}") from None
    clean = parsed.model_dump()
    risk: Risk = settings.risk.get(action, entry.risk)
    allow = settings.host_allow(host)
    skip_allow = not check_allow
    if not skip_allow and allow.actions is not None and action not in allow.actions:
        raise InvalidInput(f"not allowlisted: {action} is not allowed on host {host!r}")
    if isinstance(parsed, UnitParams):
        if not skip_allow and not _allowed(parsed.unit, allow.units, unit=True):
            raise InvalidInput(f"not allowlisted: unit {parsed.unit!r} on host {host!r}")
        summary = f"{entry.verb} unit {parsed.unit} on {host}"
    elif isinstance(parsed, ContainerParams):
        if not skip_allow and not _allowed(parsed.container, allow.containers):
            raise InvalidInput(f"not allowlisted: container {parsed.container!r} on host {host!r}")
        summary = f"restart container {parsed.container} on {host}"
    elif isinstance(parsed, CacheParams):
        if parsed.cache not in settings.caches:
            raise InvalidInput(f"not allowlisted: no cache named {parsed.cache!r} is configured")
        if not skip_allow and not _allowed(parsed.cache, allow.caches):
            raise InvalidInput(f"not allowlisted: cache {parsed.cache!r} on host {host!r}")
        summary = f"clear cache {parsed.cache} on {host}"
    elif isinstance(parsed, LogsParams):
        if parsed.target not in settings.logs:
            raise InvalidInput(
                f"not allowlisted: no log rotation target named {parsed.target!r} is configured"
            )
        if not skip_allow and not _allowed(parsed.target, allow.logs):
            raise InvalidInput(f"not allowlisted: log target {parsed.target!r} on host {host!r}")
        summary = f"rotate logs {parsed.target} on {host}"
    else:
        assert isinstance(parsed, ScriptParams)
        spec = settings.scripts.get(parsed.script)
        if spec is None:
            raise InvalidInput(f"not allowlisted: no script named {parsed.script!r} is configured")
        if not skip_allow and not _allowed(parsed.script, allow.scripts):
            raise InvalidInput(f"not allowlisted: script {parsed.script!r} on host {host!r}")
        _script_args(parsed.script, spec.params, parsed.args)
        if action not in settings.risk:
            risk = spec.risk
        shown = " ".join(f"--{k}={v}" for k, v in sorted(parsed.args.items()))
        summary = f"run script {parsed.script}{' ' + shown if shown else ''} on {host}"
    return ValidatedAction(action, clean, host, risk, summary)


@dataclass(frozen=True, slots=True)
class Plan:
    """What executing a validated action on a node means, without doing it.

    ``argv`` is the command (``None`` for the actions done in Python: cache clearing, log
    rotation); ``paths`` the files or directory touched; ``verify`` the command whose
    output tells whether the action took (``systemctl is-active UNIT``).
    """

    action: str
    argv: list[str] | None
    description: str
    paths: list[str] = field(default_factory=list)
    verify: list[str] | None = None
    timeout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for dry runs and results)."""
        return {
            "action": self.action,
            "argv": self.argv,
            "description": self.description,
            "paths": self.paths,
            "verify": self.verify,
        }


def plan(
    validated: ValidatedAction,
    settings: ActionSettings,
    *,
    which: Callable[[str], str | None] = shutil.which,
) -> Plan:
    """The ``argv`` (or the paths) a node runs for ``validated``, resolved with the node's
    settings and PATH. Raises ``InvalidInput`` when a needed tool or file is missing."""
    action, params = validated.action, validated.params
    entry = CATALOG[action]
    if entry.params is UnitParams:
        tool = which("systemctl")
        if tool is None:
            raise InvalidInput("cannot run: systemctl is not on PATH")
        unit = params["unit"]
        return Plan(
            action, [tool, entry.verb, unit], validated.summary, verify=[tool, "is-active", unit]
        )
    if entry.params is ContainerParams:
        tool = which("docker")
        if tool is None:
            raise InvalidInput("cannot run: docker is not on PATH")
        name = params["container"]
        return Plan(
            action,
            [tool, "restart", name],
            validated.summary,
            verify=[tool, "inspect", "--format", "{{.State.Running}}", name],
        )
    if entry.params is CacheParams:
        directory = settings.caches.get(params["cache"])
        if directory is None:
            raise InvalidInput(f"not allowlisted: no cache named {params['cache']!r} here")
        return Plan(action, None, f"remove the contents of {directory}", [str(directory)])
    if entry.params is LogsParams:
        files = settings.logs.get(params["target"])
        if files is None:
            raise InvalidInput(f"not allowlisted: no log target named {params['target']!r} here")
        return Plan(
            action, None, f"gzip and truncate {', '.join(map(str, files))}", [str(f) for f in files]
        )
    script = params["script"]
    spec = settings.scripts.get(script)
    if settings.scripts_dir is None or spec is None:
        raise InvalidInput(f"not allowlisted: no script {script!r} is configured here")
    base = Path(settings.scripts_dir).resolve()
    path = (base / script).resolve()
    if path.parent != base:
        raise InvalidInput(f"not allowlisted: script {script!r} resolves outside {base}")
    argv = [str(path)]
    for key, value in sorted(params.get("args", {}).items()):
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        argv.append(f"--{key}={text}")
    return Plan(action, argv, validated.summary, [str(path)], timeout=spec.timeout)
