"""The typed answer of reasoning: evidence with stable ids, proposed actions, the diagnosis.

Every piece of evidence carries an id that stays the same across runs and processes
(``event:123``, ``template:abc``, ``incident:INC-4``, ``runbook:disk-full``, ``fix:…``,
``deployment:…``, ``service:nginx``, ``host:db1``), so an answer — from the rule-based
diagnosis or from a model — can cite it, a reader can look it up, and ids a model invents
can be detected and dropped instead of shown as facts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EvidenceKind = Literal[
    "event", "template", "incident", "runbook", "fix", "deployment", "service", "host"
]


class Evidence(BaseModel):
    """One fact retrieval found, citable by its ``id``. ``score`` ranks it within a bundle
    (higher = more relevant); ``text`` is what a person (or a model) reads."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: EvidenceKind
    text: str
    service: str | None = None
    host: str | None = None
    at: datetime | None = None
    score: float = 0.0


class ProposedAction(BaseModel):
    """An action a matched runbook allows, with its placeholders filled from the diagnosis
    context. Only a proposal: the action layer re-validates and asks for approval."""

    model_config = ConfigDict(frozen=True)

    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    host: str | None = None
    runbook_id: str


Backend = Literal["none", "ollama", "llamacpp"]


class Diagnosis(BaseModel):
    """What ``ask`` answers: a root cause with cited evidence, next steps and proposals.

    ``backend`` names what wrote the root cause; ``fallback_reason`` says why the rule-based
    answer was used although a model was asked for; ``dropped_evidence_ids`` counts ids the
    model cited that were not in the evidence bundle (never shown as evidence).
    """

    question: str
    root_cause: str
    confidence: float = Field(ge=0.0, le=1.0)
    origin_service: str | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    next_steps: list[str] = Field(default_factory=list)
    proposed_actions: list[ProposedAction] = Field(default_factory=list)
    runbook_ids: list[str] = Field(default_factory=list)
    backend: str = "none"
    fallback_reason: str | None = None
    dropped_evidence_ids: int = 0
    latency_ms: float = 0.0
