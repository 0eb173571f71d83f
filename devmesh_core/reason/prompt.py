"""The prompt and the bounded JSON schema a model answers a diagnosis with.

Two rules shape it. **Nothing secret reaches the model**: every text that goes into the
prompt (the question, evidence, earlier turns, hints) passes through the
:class:`~devmesh_core.reason.redact.Redactor` first. **The answer is bounded**: the schema
enumerates the evidence ids the model may cite, caps every list (``maxItems``) and string
(``maxLength``) — small models given an unbounded list emit items until the token limit —
and the answer is only ever parsed as data, never executed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from devmesh_core.reason.models import Diagnosis
from devmesh_core.reason.redact import Redactor
from devmesh_core.reason.retrieval import EvidenceBundle

MAX_ROOT_CAUSE = 600
MAX_STEP = 240
MAX_STEPS = 5
MAX_CITED = 8
MAX_RUNBOOKS = 3

SYSTEM = (
    "You are DevMesh, a careful site-reliability assistant for a small self-hosted fleet. "
    "You diagnose incidents ONLY from the evidence given, each item tagged with an id in "
    "square brackets. Prefer the upstream-most failing service (what others depend on) over "
    "its symptoms, and errors that are new or elevated against the baseline over errors that "
    "were always there. Cite the ids of the evidence you rely on; never invent ids, hosts or "
    "services. If the evidence is thin, say so and lower the confidence. Answer with one JSON "
    "object matching the schema, nothing else."
)


@dataclass(slots=True)
class Turn:
    """One earlier question and the root cause given for it (for follow-ups)."""

    question: str
    root_cause: str
    evidence_ids: list[str] = field(default_factory=list)


def output_schema(bundle: EvidenceBundle) -> dict[str, Any]:
    """The JSON schema of an answer, bounded: ids from the bundle only, capped lists."""
    ids = [e.id for e in bundle.evidence] or ["none"]
    runbook_ids = [m.runbook.id for m in bundle.runbooks[:MAX_RUNBOOKS]]
    services = sorted(bundle.known_services)[:200]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "root_cause": {"type": "string", "minLength": 10, "maxLength": MAX_ROOT_CAUSE},
            "origin_service": {
                "anyOf": [{"type": "string", "enum": services}, {"type": "null"}]
                if services
                else [{"type": "null"}]
            },
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "evidence_ids": {
                "type": "array",
                "items": {"type": "string", "enum": ids},
                "minItems": 1,
                "maxItems": MAX_CITED,
            },
            "next_steps": {
                "type": "array",
                "items": {"type": "string", "maxLength": MAX_STEP},
                "maxItems": MAX_STEPS,
            },
            "runbook_ids": {
                "type": "array",
                "items": {"type": "string", "enum": runbook_ids or ["none"]},
                "maxItems": MAX_RUNBOOKS,
            },
        },
        "required": ["root_cause", "confidence", "evidence_ids", "next_steps"],
        "additionalProperties": False,
    }
    return schema


def build_prompt(
    bundle: EvidenceBundle,
    redactor: Redactor,
    *,
    hints: Diagnosis | None = None,
    history: Sequence[Turn] = (),
) -> str:
    """The user prompt: the question, the window, the evidence (redacted, with ids), the
    rule-based analysis as a hint, earlier turns, and the answer format."""
    r = redactor.redact
    scope = bundle.scope
    lines = [
        f"Question: {r(scope.question)}",
        f"Window: {scope.since:%Y-%m-%d %H:%M:%S}Z to {scope.until:%Y-%m-%d %H:%M:%S}Z "
        f"(baseline from {scope.baseline_since:%Y-%m-%d %H:%M:%S}Z).",
    ]
    if scope.services or scope.hosts:
        lines.append(f"Named: services {scope.services or '-'}, hosts {scope.hosts or '-'}.")
    deps = [f"{s} -> {', '.join(sorted(d))}" for s, d in sorted(bundle.dependencies.items()) if d]
    if deps:
        lines.append("Depends on: " + "; ".join(r(d) for d in deps[:20]))
    if history:
        lines.append("Earlier in this conversation:")
        for turn in history:
            lines.append(f"- Q: {r(turn.question)} A: {r(turn.root_cause)}")
    lines.append("Evidence:")
    for item in bundle.evidence:
        lines.append(f"[{item.id}] {r(item.text)}")
    if hints is not None and hints.evidence:
        lines.append(
            "Rule-based analysis (a hint; correct it if the evidence disagrees): "
            + r(hints.root_cause)
        )
    lines.append(
        "Answer as JSON: root_cause (one or two sentences naming the failing service and "
        "why), origin_service, confidence (0-1), evidence_ids (ids above that support it), "
        f"next_steps (at most {MAX_STEPS} short imperative steps), runbook_ids."
    )
    return "\n".join(lines)


def repair_prompt(prompt: str, answer: str, problem: str, redactor: Redactor) -> str:
    """A second attempt: the same prompt, the rejected answer and what was wrong with it."""
    shown = answer if len(answer) <= 1_500 else answer[:1_500] + "…"
    return (
        f"{prompt}\n\nYour previous answer was rejected: {problem}\n"
        f"Previous answer: {redactor.redact(shown)}\n"
        "Reply again with ONE valid JSON object matching the schema, citing only ids listed "
        "in the evidence."
    )


def schema_text(schema: dict[str, Any]) -> str:
    """The schema as compact JSON (for backends that take it in the prompt)."""
    return json.dumps(schema, separators=(",", ":"))
