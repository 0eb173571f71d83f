"""The prompt and the bounded JSON schema a model answers a diagnosis with.

Three rules shape it. **Nothing secret reaches the model**: every text that goes into the
prompt (the question, evidence, earlier turns, hints) passes through the
:class:`~devmesh_core.reason.redact.Redactor` first. **The answer is bounded**: the schema
enumerates the evidence ids the model may cite, caps every list (``maxItems``) and string
(``maxLength``) — small models given an unbounded list emit items until the token limit —
and the answer is only ever parsed as data, never executed. **The prompt is short**: a
small model on two CPU cores reads only ~25-40 prompt tokens a second here, so the model
sees the top of the ranked evidence (what the rule-based draft cites first, then the
origin's own lines, samples folded into their templates, no steady background noise) and
the draft itself to confirm or correct, not the whole bundle: ~770 prompt tokens instead of
~1,800 (measured with ``bench/triage.py --llamacpp``; figures in ``bench/RESULTS.md``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from devmesh_core.models import Level
from devmesh_core.reason.models import Diagnosis, Evidence
from devmesh_core.reason.redact import Redactor
from devmesh_core.reason.retrieval import EvidenceBundle

MAX_ROOT_CAUSE = 600
MAX_STEP = 240
MAX_STEPS = 5
MAX_CITED = 8
MAX_RUNBOOKS = 3

PROMPT_EVIDENCE = 12
"""Evidence items a model is shown (and may cite): the top of the ranked bundle."""
PROMPT_LINE = 200
"""Characters of one evidence line in the prompt (long log lines lose their middle)."""
PROMPT_MIN_SCORE = 0.5
"""Below this rank score an item is background (steady sshd noise and the like): shown
only when the draft cites it."""
COMPACT_EVIDENCE = 8
"""Evidence items a small in-process model is shown (every prompt token costs ~40 ms on
two cores, measured with Qwen2.5-Coder-1.5B)."""
ANSWER_CITED = 3
"""Ids the compact schema lets a model cite: the key error and what supports it."""
ANSWER_ROOT_CAUSE = 240
"""Characters of a compact root cause (every generated token costs ~0.2 s on two cores
under a grammar): next steps and runbook come from the matched runbook instead."""

SYSTEM = (
    "You are DevMesh, a careful site-reliability assistant for a small self-hosted fleet. "
    "Diagnose ONLY from the evidence given; each item has an id in square brackets. The "
    "origin is the upstream-most failing service (what the others depend on), not the "
    "services that merely show symptoms; errors that are new or elevated against the "
    "baseline matter, errors that were always there (a steady background) do not. Cite "
    "ids from the list only. Answer with one JSON object matching the schema."
)

FORMAT = (
    "Answer as JSON: evidence_ids (ids from the list: the origin's key error first, then "
    "the errors it caused elsewhere), origin_service (the upstream-most failing service), "
    "root_cause (one or two sentences: start with the origin service's name, then say what "
    "failed in it and why, quoting its most specific error message rather than a generic "
    "exit status or a downstream symptom), confidence (0-1)"
)


COMPACT_ASK = (
    "origin_service: where the failure started, often not the service asked about. "
    "root_cause in this shape: <origin service>: '<its key error, word for word>' - "
    "<why, in a few words>."
)
"""The compact prompt's last line, read just before the answer: the shape of the root
cause. A 1.5B model follows a shape better than an instruction; asked only to "quote the
key error" it paraphrases it or spends its 240 characters on a symptom (measured with
``bench/triage.py``: 15-16/18 on its own text with instructions, 17-18/18 with the
shape)."""
COMPACT_ASK_DEPLOYED = "<origin service>: since the deployment of <version>: '"
"""The start of the shape when the draft ties the onset to a deployment (it cites one):
what changed is the first thing to say, and a 1.5B model asked for it in a separate
sentence, or after the quote, stopped after the quote."""


def system_prompt(*, compact: bool = False) -> str:
    """The system prompt; the compact form carries the answer format too, so a local model
    that keeps its context between questions reads it once, not per question."""
    if not compact:
        return SYSTEM
    return f"{SYSTEM} {FORMAT}."


@dataclass(slots=True)
class Turn:
    """One earlier question and the root cause given for it (for follow-ups)."""

    question: str
    root_cause: str
    evidence_ids: list[str] = field(default_factory=list)


def _sample_ids(bundle: EvidenceBundle) -> dict[str, str]:
    """Sample event id → its template's evidence id (a template line already says what
    the sample says, with counts; showing both doubles the prompt for nothing)."""
    out: dict[str, str] = {}
    for act in bundle.activities:
        for ev in act.samples[:1]:
            out.setdefault(f"event:{ev.id}", act.evidence_id)
    return out


def _steady_ids(bundle: EvidenceBundle) -> set[str]:
    """Template evidence ids whose window count is what the baseline predicts (at most
    twice the baseline rate, plus two for small counts): the fleet's steady background,
    such as sshd brute-force noise, which ranks above ``min_score`` when it is plentiful
    but explains nothing. About 40 prompt tokens per line saved on a small model."""
    scope = bundle.scope
    ratio = scope.window_seconds / scope.baseline_seconds
    return {
        act.evidence_id
        for act in bundle.activities
        if not act.new and act.window <= 2 * act.baseline * ratio + 2
    }


def select_evidence(
    bundle: EvidenceBundle,
    hints: Diagnosis | None = None,
    *,
    limit: int = PROMPT_EVIDENCE,
    keep: Sequence[str] = (),
    min_score: float = PROMPT_MIN_SCORE,
) -> list[Evidence]:
    """The evidence a model is shown: ids in ``keep`` (earlier turns' citations), then
    what the rule-based draft cites, then the bundle by rank down to ``min_score``,
    leaving out steady background (errors at their baseline rate); within the draft's
    citations and within the rest, the draft origin's own lines lead. A sample event is left
    out when its template is shown (the template's line quotes the sample), and service
    summaries go into their own prompt line."""
    samples = _sample_ids(bundle)
    ranked = [e for e in bundle.evidence if e.kind != "service"]
    by_id = {e.id: e for e in ranked}
    cited = [e.id for e in (hints.evidence if hints is not None else [])]
    first = [*keep, *cited]
    steady = _steady_ids(bundle) - set(first)
    rest = [e for e in ranked if e.score >= min_score and e.id not in steady]
    drafted = [by_id[i] for i in dict.fromkeys(cited) if i in by_id and i not in keep]
    origin = hints.origin_service if hints is not None else None
    if origin:  # the origin's own words first (a 1.5B model quotes what it reads first)
        drafted.sort(key=lambda e: e.service != origin)
        rest.sort(key=lambda e: e.service != origin)
    ordered = [by_id[i] for i in dict.fromkeys(keep) if i in by_id] + drafted + rest
    shown: list[Evidence] = []
    seen: set[str] = set()
    for item in ordered:
        if item.id in seen:
            continue
        template = samples.get(item.id)
        if template is not None and template in by_id and item.id not in keep:
            continue
        seen.add(item.id)
        shown.append(item)
        if len(shown) >= limit:
            break
    return shown


def output_schema(
    bundle: EvidenceBundle, ids: Sequence[str] | None = None, *, compact: bool = False
) -> dict[str, Any]:
    """The JSON schema of an answer, bounded: ids from ``ids`` (default: the whole
    bundle) only, capped lists and strings. ``compact`` is the tighter shape a small
    local model gets: at most three ids, origin and a short root cause, required in the
    order a diagnosis is reasoned (the evidence, the origin it points to, then the
    explanation: asked for the origin first, a 1.5B model names the service the question
    is about); its next steps and actions come from the matched runbook, not from
    generated text."""
    allowed = list(ids) if ids is not None else [e.id for e in bundle.evidence]
    allowed = allowed or ["none"]
    runbook_ids = [m.runbook.id for m in bundle.runbooks[:MAX_RUNBOOKS]]
    if compact:
        candidates = {*bundle.services, *bundle.scope.services} & bundle.known_services
        services = sorted(candidates or bundle.known_services)[:60]
    else:
        services = sorted(bundle.known_services)[:200]
    origin: dict[str, Any] = {
        "anyOf": [{"type": "string", "enum": services}, {"type": "null"}]
        if services
        else [{"type": "null"}]
    }
    evidence = {
        "type": "array",
        "items": {"type": "string", "enum": allowed},
        "minItems": 1,
        "maxItems": ANSWER_CITED if compact else MAX_CITED,
    }
    root_cause = {
        "type": "string",
        "minLength": 10,
        "maxLength": ANSWER_ROOT_CAUSE if compact else MAX_ROOT_CAUSE,
    }
    steps = {
        "type": "array",
        "items": {"type": "string", "maxLength": MAX_STEP},
        "maxItems": MAX_STEPS,
    }
    confidence = {"type": "number", "minimum": 0, "maximum": 1}
    runbooks = {
        "type": "array",
        "items": {"type": "string", "enum": runbook_ids or ["none"]},
        "maxItems": MAX_RUNBOOKS,
    }
    if compact:
        properties: dict[str, Any] = {
            "evidence_ids": evidence,
            "origin_service": origin,
            "root_cause": root_cause,
            "confidence": confidence,
        }
        required = list(properties)
    else:
        properties = {
            "root_cause": root_cause,
            "origin_service": origin,
            "confidence": confidence,
            "evidence_ids": evidence,
            "next_steps": steps,
            "runbook_ids": runbooks,
        }
        required = ["root_cause", "confidence", "evidence_ids", "next_steps"]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _template_lines(bundle: EvidenceBundle) -> dict[str, str]:
    """Template evidence id → a compact line quoting its sample (the concrete message
    reads better than the pattern: ``postgresql@15-main.service`` instead of ``<*>``)."""
    out: dict[str, str] = {}
    for act in bundle.activities:
        if not act.samples or act.evidence_id in out:
            continue
        trend = "new" if act.new else f"{act.baseline}x in the baseline"
        where = f" on {act.host}" if act.host else ""
        out[act.evidence_id] = (
            f"{Level.from_rank(act.level_rank).value} {act.service}{where}, "
            f"{act.window}x ({trend}): {act.samples[0].message}"
        )
    return out


def _line(item: Evidence, redactor: Redactor, templates: dict[str, str]) -> str:
    text = templates.get(item.id, item.text)
    if item.kind == "runbook":  # its title says what it covers; the body is for people
        text = text.split(" — ", 1)[0]
    return f"[{item.id}] {_clip(' '.join(redactor.redact(text).split()))}"


def _clip(text: str, limit: int = PROMPT_LINE) -> str:
    """``text`` cut to at most ``limit`` characters by dropping its middle, at word
    boundaries where there are any: a log line's head says who logged it, its tail
    usually says why (``…: certificate has expired``, ``…: Permission denied``), the middle
    is request and client detail."""
    if len(text) <= limit:
        return text
    tail_len = limit // 3
    head = text[: limit - tail_len - 1]
    tail = text[-tail_len:]
    head = head.rsplit(" ", 1)[0] if " " in head[len(head) // 2 :] else head
    tail = tail.split(" ", 1)[1] if " " in tail[: len(tail) // 2] else tail
    return f"{head}…{tail}"


_QUOTE = re.compile(r"(Also: )?“([^”]*)”(?: \(\d+x in the window[^)]*\))?\.?")
"""A quoted template in the draft's text, with its counts (how ``diagnose`` quotes)."""
DRAFT_QUOTE = 120
"""Characters of a sample quoted in the draft."""


def _draft_text(draft: str, bundle: EvidenceBundle, shown: Sequence[Evidence]) -> str:
    """The draft's root cause for the prompt, shorter and concrete: a quoted template of a
    shown evidence line becomes that line's sample without the counts (the line gives
    them), and its further quotes (``Also: …``) of shown lines are dropped (the lines
    follow right below; ~30-40 tokens each). A small model copies the draft's quote, and
    the sample says what happened (``port 53``) where the ``<*>`` pattern does not.
    Quotes of templates that are not shown stay as they are."""
    ids = {e.id for e in shown}
    samples = [
        (" ".join(act.text.split()), " ".join(act.samples[0].message.split()))
        for act in bundle.activities
        if act.evidence_id in ids and act.samples
    ]

    def replace(found: re.Match[str]) -> str:
        also, quoted = found.group(1), found.group(2).removesuffix("…")
        for text, sample in samples:
            if quoted and text.startswith(quoted):
                if also:
                    return ""
                end = "." if found.group(0).endswith(".") else ""
                return f"“{_clip(sample, DRAFT_QUOTE)}”{end}"
        return found.group(0)

    return " ".join(_QUOTE.sub(replace, draft).split())


def _service_counts(bundle: EvidenceBundle) -> str:
    parts = [
        f"{name} {svc.window_errors}/{svc.baseline_errors}"
        for name, svc in sorted(bundle.services.items(), key=lambda kv: -kv[1].score)[:8]
        if svc.window_errors
    ]
    return "; ".join(parts)


def build_prompt(
    bundle: EvidenceBundle,
    redactor: Redactor,
    *,
    hints: Diagnosis | None = None,
    history: Sequence[Turn] = (),
    evidence: Sequence[Evidence] | None = None,
    compact: bool = False,
) -> str:
    """The user prompt: the question, the window, the dependencies and per-service error
    counts, the evidence (redacted, with ids), earlier turns, the rule-based draft to
    confirm or correct, and the answer format (in the system prompt when ``compact``).
    ``evidence`` defaults to :func:`select_evidence`; the draft quotes concrete samples
    (:func:`_draft_text`). ``compact`` puts the draft right after the question, so a small
    model reads the evidence as a check of a hypothesis, and ends with the shape of the
    root cause (:data:`COMPACT_ASK`)."""
    r = redactor.redact
    scope = bundle.scope
    shown = list(evidence) if evidence is not None else select_evidence(bundle, hints)
    hours = scope.baseline_seconds / 3600
    lines = [
        f"Question: {r(scope.question)}",
        f"Window: {scope.since:%Y-%m-%d %H:%M}Z to {scope.until:%H:%M}Z; baseline: the "
        f"{hours:g} h before.",
    ]
    draft = ""
    if hints is not None and hints.evidence:
        origin = f" Origin: {hints.origin_service}." if hints.origin_service else ""
        draft = (
            "Draft by the rule-based analysis (confirm it, or correct it if the evidence "
            f"disagrees):{origin} {r(_draft_text(hints.root_cause, bundle, shown))}"
        )
    if scope.services or scope.hosts:
        lines.append(f"Named: services {scope.services or '-'}, hosts {scope.hosts or '-'}.")
    if compact and draft:
        lines.append(draft)
    deps = [f"{s} -> {', '.join(sorted(d))}" for s, d in sorted(bundle.dependencies.items()) if d]
    if deps:
        lines.append("Depends on (A -> B: A needs B): " + "; ".join(r(d) for d in deps[:20]))
    counts = _service_counts(bundle)
    if counts:
        lines.append(f"Warnings/errors per service (window/baseline): {r(counts)}")
    if history:
        lines.append("Earlier in this conversation:")
        for turn in history:
            lines.append(f"- Q: {r(turn.question)} A: {r(turn.root_cause)}")
    lines.append("Evidence (Nx = count in the window; new = never in the baseline):")
    templates = _template_lines(bundle)
    lines.extend(_line(item, redactor, templates) for item in shown)
    if draft and not compact:
        lines.append(draft)
    if not compact:
        lines.append(
            f"{FORMAT}, next_steps (at most {MAX_STEPS} short imperative steps), runbook_ids."
        )
        return "\n".join(lines)
    ask = COMPACT_ASK
    if hints is not None and any(e.kind == "deployment" for e in hints.evidence):
        ask = ask.replace("<origin service>: '", COMPACT_ASK_DEPLOYED)
    lines.append(ask)
    # A small model copying a log line into a JSON string often ends the string at the
    # line's first double quote instead of escaping it: it reads single quotes instead.
    return "\n".join(lines).replace('"', "'")


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
