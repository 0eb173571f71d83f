"""Settings of remediation: allowlist, roles, expiry (``DEVMESH_ACTIONS__*``).

Everything an action may touch is named here, per host: a unit, a container, a cache (a
*name* mapped to a directory), a log rotation target (a name mapped to files), a script (a
file name inside one allowlisted directory). A chat message can only ever pick one of these
names; it can never supply a path or a command. The same model is the node agent's local
config (``devmesh agent --config actions.yaml``): the agent re-checks every request against
its own copy, so a compromised server cannot widen what a node does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Risk = Literal["low", "high"]

DEFAULT_APPROVER_ROLES: dict[str, list[str]] = {
    "low": ["operator", "approver", "admin"],
    "high": ["approver", "admin"],
}


class ScriptParam(BaseModel):
    """One typed argument a script accepts, passed to it as ``--name=value``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["str", "int", "bool", "choice"] = "str"
    pattern: str = Field(
        default=r"^[A-Za-z0-9_.@:-]{1,64}$",
        description="full-match regex a str value must satisfy (strict by default)",
    )
    choices: list[str] = Field(default_factory=list)
    minimum: int | None = None
    maximum: int | None = None
    required: bool = False


class ScriptSpec(BaseModel):
    """A script that may be run: its typed arguments and its risk."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, ScriptParam] = Field(default_factory=dict)
    risk: Risk = "high"
    timeout: float | None = Field(default=None, gt=0)
    description: str = ""


class HostAllow(BaseModel):
    """What may be touched on one host (or on every host, under the key ``"*"``)."""

    model_config = ConfigDict(extra="forbid")

    units: list[str] = Field(default_factory=list)
    containers: list[str] = Field(default_factory=list)
    caches: list[str] = Field(default_factory=list)
    logs: list[str] = Field(default_factory=list)
    scripts: list[str] = Field(default_factory=list)
    actions: list[str] | None = Field(
        default=None, description="catalog actions allowed on this host; None = all"
    )


class ActionSettings(BaseModel):
    """Which actions may touch what, and who may approve them.

    ``roles`` maps identity keys (``discord:123``, ``discord-role:456``, ``telegram:789``,
    ``web:alice``, ``cli:bob``) to role names. ``approver_roles`` says which roles may approve
    each risk level; ``proposer_roles`` which may propose. A high-risk request needs
    ``high_risk_approvals`` distinct approvers, none of them its requester.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    config_file: Path | None = Field(
        default=None, description="YAML file with these same fields; merged over the defaults"
    )
    allow: dict[str, HostAllow] = Field(
        default_factory=dict, description="host name (or '*') → what may be touched there"
    )
    caches: dict[str, Path] = Field(default_factory=dict, description="cache name → directory")
    logs: dict[str, list[Path]] = Field(
        default_factory=dict, description="rotation target name → log files"
    )
    scripts_dir: Path | None = None
    scripts: dict[str, ScriptSpec] = Field(default_factory=dict)
    risk: dict[str, Risk] = Field(
        default_factory=dict, description="per-action risk overrides (e.g. restart_unit: high)"
    )
    roles: dict[str, list[str]] = Field(default_factory=dict)
    approver_roles: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_APPROVER_ROLES.items()}
    )
    proposer_roles: list[str] = Field(default_factory=lambda: ["operator", "approver", "admin"])
    high_risk_approvals: int = Field(default=2, ge=1, le=5)
    expiry_minutes: float = Field(default=15.0, gt=0)
    claim_minutes: float = Field(
        default=15.0, gt=0, description="an approved request not picked up by then expires"
    )
    run_timeout: float = Field(default=120.0, gt=0, description="seconds per command on a node")
    running_minutes: float = Field(
        default=30.0, gt=0, description="a claimed request with no result by then fails"
    )
    verify_minutes: float = Field(
        default=5.0, ge=0, description="how long the incident's errors must stay away"
    )
    sweep_seconds: float = Field(default=15.0, gt=0, description="expiry/verification period")
    callback_key: SecretStr | None = Field(
        default=None, description="HMAC key for chat callbacks; default: generated in data_dir"
    )
    record_fixes: bool = Field(default=True, description="write verified fixes to the graph")
    allow_auto_approve: bool = Field(
        default=False,
        description="let `devmesh demo --auto-approve` approve its own proposal (tests and "
        "headless demos only; the flag alone is refused)",
    )

    def effective(self) -> ActionSettings:
        """These settings with ``config_file`` (if any) merged over them."""
        if self.config_file is None:
            return self
        loaded = load_action_settings(self.config_file)
        merged = self.model_dump(exclude_unset=True)
        merged.pop("config_file", None)
        data = {**loaded.model_dump(exclude_unset=True), **merged}
        return ActionSettings.model_validate(data)

    def host_allow(self, host: str) -> HostAllow:
        """What may be touched on ``host``: the union of the ``"*"`` entry and the host's own
        entry (nothing when neither exists); the host's ``actions`` list, if set, overrides
        the ``"*"`` one."""
        parts = [a for key in ("*", host) if (a := self.allow.get(key)) is not None]
        if not parts:
            return HostAllow(actions=[])
        # Which actions: the host's own list if it has one, else the "*" entry's.
        own, star = self.allow.get(host), self.allow.get("*")
        actions = own.actions if own is not None and own.actions is not None else None
        if actions is None and star is not None:
            actions = star.actions
        return HostAllow(
            units=sorted({u for p in parts for u in p.units}),
            containers=sorted({c for p in parts for c in p.containers}),
            caches=sorted({c for p in parts for c in p.caches}),
            logs=sorted({c for p in parts for c in p.logs}),
            scripts=sorted({c for p in parts for c in p.scripts}),
            actions=actions,
        )


def load_action_settings(path: Path) -> ActionSettings:
    """Read an :class:`ActionSettings` YAML file (the node agent's config, or the server's
    ``config_file``). Raises ``ConfigError`` naming the problem."""
    import yaml

    from devmesh_core.errors import ConfigError

    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read actions config {path}: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"actions config {path} must be a mapping")
    raw.pop("config_file", None)
    try:
        return ActionSettings.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid actions config {path}: {exc}") from exc
