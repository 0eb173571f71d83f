"""Shapes of incident detection: signals (what a detector saw), incidents (what a person is
told about) and incident events (what notifiers receive).

A signal is one symptom; an incident groups the symptoms that share a cause (same service,
its dependencies, or the same host, within a time window), so a database outage pings once
rather than once per client that logs "connection refused".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from devmesh_core.models import to_utc

Severity = Literal["low", "medium", "high", "critical"]
IncidentState = Literal["open", "acknowledged", "mitigated", "resolved"]
SignalKind = Literal[
    "error_spike",
    "new_signature",
    "new_host_signature",
    "health_event",
    "heartbeat_missing",
    "runbook_pattern",
]
IncidentEventKind = Literal[
    "opened", "updated", "escalated", "acknowledged", "mitigated", "resolved", "reopened"
]

SEVERITY_RANK: dict[str, int] = {"low": 1, "medium": 2, "high": 3, "critical": 4}
"""Order of severities, so "at least high" is a comparison."""


def max_severity(a: Severity, b: Severity) -> Severity:
    """The more severe of two severities."""
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b


class Signal(BaseModel):
    """One symptom a detector saw: the unit incidents are built from (their timeline)."""

    kind: SignalKind
    at: datetime
    service: str | None = None
    host: str | None = None
    template_id: str | None = None
    runbook_id: str | None = None
    count: int = 1
    severity: Severity = "medium"
    detail: str = ""
    event_ids: list[int] = Field(default_factory=list)

    @field_validator("at", mode="after")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return to_utc(value)

    @property
    def signature(self) -> str:
        """What makes two signals "the same problem" for reopening: kind, place and template."""
        return "|".join(
            (
                str(self.kind),
                self.service or "",
                (self.host or "") if self.kind in ("heartbeat_missing", "health_event") else "",
                self.template_id or self.runbook_id or "",
            )
        )


class Incident(BaseModel):
    """An incident: correlated signals with a lifecycle (open → acknowledged → mitigated →
    resolved), a suspected origin and the timeline of what was seen."""

    id: str
    number: int
    title: str
    state: IncidentState = "open"
    severity: Severity = "medium"
    origin_service: str | None = None
    origin_host: str | None = None
    services: list[str] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list)
    template_ids: list[str] = Field(default_factory=list)
    runbook_ids: list[str] = Field(default_factory=list)
    correlation_id: str = ""
    opened_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_by: str | None = None
    signals: list[Signal] = Field(default_factory=list)
    diagnosis: dict[str, Any] | None = None
    # Bookkeeping of the detector (not part of the contract's required fields): when the last
    # signal arrived (replay time), how many signals were folded in beyond the kept timeline,
    # the signatures seen (for reopening) and a resolution note.
    last_signal_at: datetime | None = None
    signal_count: int = 0
    signatures: list[str] = Field(default_factory=list)
    note: str | None = None

    @field_validator("opened_at", "updated_at", "acknowledged_at", "resolved_at", "last_signal_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return to_utc(value) if value is not None else None

    @property
    def active(self) -> bool:
        """Not resolved yet."""
        return self.state != "resolved"


class TemplateCount(BaseModel):
    """A template of the incident's evidence and how often it occurred in the signals."""

    template_id: str
    template: str
    count: int


class IncidentSummary(BaseModel):
    """What a notification shows: built from the evidence, not from a model's guess."""

    headline: str
    top_templates: list[TemplateCount] = Field(default_factory=list)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    hosts: list[str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)
    runbook_ids: list[str] = Field(default_factory=list)
    past_fixes: list[str] = Field(default_factory=list)


class IncidentEvent(BaseModel):
    """A change of an incident, as notifiers receive it (one per state change)."""

    kind: IncidentEventKind
    incident: Incident
    summary: IncidentSummary
    at: datetime
