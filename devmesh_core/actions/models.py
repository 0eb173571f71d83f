"""Shapes of remediation: who asks (``Identity``), what is asked (``ActionRequest``), what may
be asked (``ActionSpec``) and what happened (``AuditRecord``).

These are the contract the chat bots, the API and the node agent code against; the logic
lives in :mod:`devmesh_core.actions.service`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from devmesh_core.actions.settings import Risk

Platform = Literal["discord", "telegram", "web", "cli", "api", "system"]
RequestStatus = Literal[
    "pending", "approved", "rejected", "expired", "cancelled", "running", "succeeded", "failed"
]
FINAL_STATUSES: frozenset[str] = frozenset(
    {"rejected", "expired", "cancelled", "succeeded", "failed"}
)
AuditStep = Literal[
    "proposed",
    "approved",
    "rejected",
    "refused",
    "expired",
    "cancelled",
    "claimed",
    "executed",
    "result",
    "verified",
]


class Identity(BaseModel):
    """A person (or the system) acting on a request, as the front end saw them.

    ``groups`` are the platform's groups the person belongs to (Discord role ids, say): each
    maps to the key ``<platform>-role:<group>`` in ``ActionSettings.roles``. The identity is
    only as trustworthy as the front end that built it (a bot from the platform's signed
    update, the API from a caller holding a token).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    platform: Platform
    user_id: str = Field(min_length=1, max_length=128)
    display: str = ""
    groups: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """``"discord:123"``: the name roles and approvals are recorded under."""
        return f"{self.platform}:{self.user_id}"

    @property
    def role_keys(self) -> tuple[str, ...]:
        """Every key in ``ActionSettings.roles`` that may grant this identity a role."""
        return (self.key, *(f"{self.platform}-role:{g}" for g in self.groups))


class ActionRequest(BaseModel):
    """One proposed action and its life: pending → approved → running → succeeded/failed
    (or rejected, expired, cancelled). ``result`` is the node agent's report."""

    id: str
    action: str
    params: dict[str, Any]
    host: str
    risk: Risk
    incident_id: str | None = None
    requested_by: str
    status: RequestStatus
    approvals: list[str] = Field(default_factory=list)
    approvals_needed: int = 1
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    verified: bool | None = None
    summary: str = ""
    reason: str | None = Field(default=None, description="why it was rejected/expired/failed")

    @property
    def final(self) -> bool:
        """Whether nothing more can happen to it (besides verification)."""
        return self.status in FINAL_STATUSES


class ActionSpec(BaseModel):
    """A catalog entry: an action's name, what it does, its parameters and default risk."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    params: dict[str, str] = Field(description="parameter name → what it must be")
    risk: Risk


class AuditRecord(BaseModel):
    """One append-only step of the audit trail."""

    id: int
    at: datetime
    request_id: str | None
    incident_id: str | None
    step: str
    actor: str
    detail: dict[str, Any] = Field(default_factory=dict)
