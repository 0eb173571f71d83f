"""Diagnosis from an evidence bundle: rule-based (the default), or by a model with a fallback.

The **rule-based** diagnosis (backend ``none``) is what DevMesh answers offline, and it has
to be good on its own:

* the **origin** is the incident's correlated origin when an incident is asked about, else
  the upstream-most service with new or elevated errors (nothing it depends on is failing
  too), preferring the one most others depend on, then the earliest onset;
* the **cause** is the origin's error templates that distinguish the window from the
  baseline (see :func:`~devmesh_core.reason.retrieval.distinct_score`), plus what the
  kernel or systemd said about it, a deployment just before the onset, or a host that went
  silent;
* the **runbook** is the best match among those covering that activity; its steps become
  the next steps and only its ``actions`` are proposed, with ``{service}``, ``{host}`` and
  ``{unit}`` filled in.

With a **model**, the redacted bundle and the rule-based answer (as a hint) go into a
prompt, the answer must match a bounded schema, cited ids not in the bundle are dropped and
counted, one repair attempt is made, and anything else — the model down, slow, or still
wrong — returns the rule-based diagnosis with ``fallback_reason`` set. Never a crash, and
nothing the model writes is executed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from devmesh_core.errors import BackendUnavailable, DevMeshError
from devmesh_core.log import get_logger
from devmesh_core.models import Level
from devmesh_core.reason.models import Diagnosis, Evidence, ProposedAction
from devmesh_core.reason.prompt import (
    COMPACT_EVIDENCE,
    MAX_CITED,
    MAX_ROOT_CAUSE,
    MAX_RUNBOOKS,
    MAX_STEP,
    MAX_STEPS,
    PROMPT_EVIDENCE,
    Turn,
    build_prompt,
    output_schema,
    repair_prompt,
    select_evidence,
    system_prompt,
)
from devmesh_core.reason.redact import Redactor
from devmesh_core.reason.retrieval import (
    PLATFORM_SERVICES,
    EvidenceBundle,
    RunbookMatch,
    TemplateActivity,
    mentioned_services,
    normalise_name,
)
from devmesh_core.reason.runbooks import Runbook

log = get_logger(__name__)

AFFECTED_SCORE = 1.0
"""A service counts as failing in the window when its distinguishing templates score this."""
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_STEP_LINE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*\S)\s*$")


# ---------------------------------------------------------------------------- origin


def _closure(start: str, deps: dict[str, set[str]]) -> set[str]:
    """Everything ``start`` depends on, transitively (not itself)."""
    seen: set[str] = set()
    stack = list(deps.get(start, ()))
    while stack:
        node = stack.pop()
        if node in seen or node == start:
            continue
        seen.add(node)
        stack.extend(deps.get(node, ()))
    return seen


def attributed_scores(bundle: EvidenceBundle) -> dict[str, float]:
    """Per service, the score of its distinguishing errors plus what the kernel or systemd
    reported about it (an OOM kill of ``postgres`` counts for postgres)."""
    scores = {name: svc.score for name, svc in bundle.services.items()}
    for act in bundle.activities[:40]:
        if act.service not in PLATFORM_SERVICES or act.score <= 0:
            continue
        text = " ".join([act.text, *(e.message for e in act.samples[:1])])
        for other in mentioned_services(text, bundle.known_services - {act.service}):
            if other not in PLATFORM_SERVICES:
                scores[other] = scores.get(other, 0.0) + act.score
    return scores


def pick_origin(bundle: EvidenceBundle) -> tuple[str | None, str]:
    """The origin service and a short reason for the choice (see the module docstring)."""
    scope = bundle.scope
    if scope.origin_service:
        return scope.origin_service, "the incident's correlated origin"
    scores = attributed_scores(bundle)
    affected = {s for s, v in scores.items() if v >= AFFECTED_SCORE and s not in PLATFORM_SERVICES}
    if not affected:
        platform = [s for s, v in scores.items() if v >= AFFECTED_SCORE]
        if platform:
            return max(platform, key=lambda s: scores[s]), "the only service with new errors"
        return None, "no service has errors that stand out against the baseline"
    deps = {s: {d for d in ds} for s, ds in bundle.dependencies.items()}
    # Focus on what the question names: its service and everything upstream of it.
    named = [s for s in scope.services if s in affected or _closure(s, deps) & affected]
    pool = affected
    if named:
        focus: set[str] = set()
        for s in named:
            focus |= {s} | _closure(s, deps)
        pool = (affected & focus) or affected
    roots = [s for s in pool if not (_closure(s, deps) & affected)]
    if not roots:  # a dependency cycle: fall back to everything in the pool
        roots = list(pool)

    def dependents(s: str) -> int:
        return sum(1 for other in affected if other != s and s in _closure(other, deps))

    def onset(s: str) -> float:
        svc = bundle.services.get(s)
        return svc.onset.timestamp() if svc is not None and svc.onset is not None else float("inf")

    roots.sort(key=lambda s: (-dependents(s), onset(s), -scores.get(s, 0.0), s))
    origin = roots[0]
    n = dependents(origin)
    if n:
        why = f"upstream of {n} other failing service{'s' if n > 1 else ''}"
    elif len(affected) > 1:
        why = "its errors started first"
    else:
        why = "the only service with new or elevated errors"
    return origin, why


# ---------------------------------------------------------------------------- helpers


def _about(act: TemplateActivity, service: str, known: set[str]) -> bool:
    if act.service == service:
        return True
    if act.service in PLATFORM_SERVICES:
        text = " ".join([act.text, *(e.message for e in act.samples[:1])])
        return service in mentioned_services(text, known)
    return False


def origin_activities(bundle: EvidenceBundle, origin: str) -> list[TemplateActivity]:
    """The distinguishing activity of the origin (and what the platform said about it),
    strongest first."""
    found = [
        a for a in bundle.activities if a.score > 0 and _about(a, origin, bundle.known_services)
    ]
    found.sort(
        key=lambda a: (-(a.score + 0.5 * bool(a.runbook_ids) + 0.3 * (a.service == origin)), a.key)
    )
    return found


def pick_runbook(bundle: EvidenceBundle, origin: str | None, keys: set[str]) -> RunbookMatch | None:
    """The best runbook that covers the origin's activity (else the best overall)."""
    if not bundle.runbooks:
        return None
    for match in bundle.runbooks:
        if match.activity_keys & keys:
            return match
    if origin is not None:
        for match in bundle.runbooks:
            if origin in match.services or any(
                normalise_name(origin) == normalise_name(s) for s in match.runbook.services
            ):
                return match
    return bundle.runbooks[0] if not keys else None


def runbook_steps(
    runbook: Runbook, context: dict[str, str] | None = None, limit: int = MAX_STEPS
) -> list[str]:
    """The runbook's list items (its steps, continuation lines joined), then its checks,
    capped; ``{service}``/``{host}``/``{unit}`` filled where the context knows them."""
    steps: list[str] = []
    current: list[str] | None = None
    for line in runbook.body.splitlines():
        found = _STEP_LINE.match(line)
        if found:
            current = [found.group(1)]
            steps.append(found.group(1))
        elif current is not None and line.startswith((" ", "\t")) and line.strip():
            current.append(line.strip())
            steps[-1] = " ".join(current)
        else:
            current = None
        if len(steps) > limit:
            break
    steps = steps[:limit]
    for check in runbook.checks:
        if len(steps) >= limit:
            break
        steps.append(f"Verify: {check}")
    ctx = context or {}
    return [
        _PLACEHOLDER.sub(lambda m: ctx.get(m.group(1), m.group(0)), s.replace("`", ""))[:MAX_STEP]
        for s in steps
    ]


def action_context(service: str | None, host: str | None) -> dict[str, str]:
    """What ``{service}``, ``{unit}`` and ``{host}`` stand for in a runbook."""
    context: dict[str, str] = {}
    if service:
        context["service"] = service
        context["unit"] = service if service.endswith(".service") else f"{service}.service"
    if host:
        context["host"] = host
    return context


def fill_placeholders(value: Any, context: dict[str, str]) -> Any:
    """``{service}``/``{host}``/``{unit}`` in (nested) parameter values, filled; raises
    ``KeyError`` for a placeholder the context cannot fill."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: context[m.group(1)], value)
    if isinstance(value, list):
        return [fill_placeholders(v, context) for v in value]
    if isinstance(value, dict):
        return {k: fill_placeholders(v, context) for k, v in value.items()}
    return value


def proposed_actions(
    runbook: Runbook | None, service: str | None, host: str | None
) -> list[ProposedAction]:
    """The runbook's allowed actions with placeholders filled; an action whose parameters
    name something unknown here is left out rather than proposed half-filled."""
    if runbook is None:
        return []
    context = action_context(service, host)
    out: list[ProposedAction] = []
    for action in runbook.actions:
        try:
            params = fill_placeholders(dict(action.params), context)
        except KeyError:
            continue
        out.append(
            ProposedAction(action=action.action, params=params, host=host, runbook_id=runbook.id)
        )
    return out


def _quote(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return f"“{text if len(text) <= limit else text[: limit - 1] + '…'}”"


def _counts(act: TemplateActivity) -> str:
    if act.new:
        return f"{act.window}x in the window, never in the baseline"
    return f"{act.window}x in the window vs {act.baseline}x in the longer baseline"


def _cite(bundle: EvidenceBundle, ids: Sequence[str]) -> list[Evidence]:
    out: list[Evidence] = []
    seen: set[str] = set()
    for evidence_id in ids:
        item = bundle.get(evidence_id)
        if item is not None and evidence_id not in seen:
            seen.add(evidence_id)
            out.append(item)
    return out


def _template_ids(act: TemplateActivity) -> list[str]:
    return [act.evidence_id, *(f"event:{e.id}" for e in act.samples[:1])]


# ---------------------------------------------------------------------------- rule-based


def rule_diagnosis(bundle: EvidenceBundle, *, latency_ms: float = 0.0) -> Diagnosis:
    """The deterministic diagnosis of a bundle (backend ``none``)."""
    scope = bundle.scope
    origin, why = pick_origin(bundle)
    acts = origin_activities(bundle, origin) if origin else []
    keys = {a.key for a in acts}
    match = pick_runbook(bundle, origin, keys)
    runbook = match.runbook if match is not None else None
    if match is not None:  # what the runbook recognises leads, then the rest by score
        covered = match.activity_keys
        acts.sort(key=lambda a: (a.key not in covered, -a.level_rank, -a.score, a.key))
    svc = bundle.services.get(origin) if origin else None
    host = scope.origin_host or (
        sorted(svc.hosts)[0] if svc is not None and svc.hosts else (acts[0].host if acts else None)
    )
    cited: list[str] = []
    parts: list[str] = []
    confidence = 0.15

    silent = bundle.silent_hosts
    silent_first = False
    if silent:
        # A quiet host is the cause when others fail to reach it, or nothing else explains
        # the window; not when the origin on that host said why it stopped (a fatal error).
        h = silent[0][0]
        reached_for = any(
            h in " ".join([a.text, *(e.message for e in a.samples[:1])])
            for a in bundle.activities[:20]
            if a.score > 0 and h not in a.hosts
        )
        explained = any(h in a.hosts and a.level_rank >= 40 for a in acts)
        silent_first = origin is None or (reached_for and not explained)

    if silent_first:
        h, last, _ = silent[0]
        when = f" at {last:%H:%M:%S}Z" if last else ""
        parts.append(
            f"Host {h} went silent{when}: it logged steadily in the baseline and nothing "
            "since, so the node is likely offline (or its shipper is down)."
        )
        cited.append(f"host:{h}")
        confidence = 0.55
        if origin and acts:
            top = acts[0]
            parts.append(f"Errors followed in {origin}: {_quote(top.text)} ({_counts(top)}).")
            cited.extend(_template_ids(top))
        host = h
    elif origin and acts:
        top = acts[0]
        lead = f"{origin}"
        if host:
            lead += f" on {host}"
        title = f" ({runbook.title})" if runbook is not None else ""
        parts.append(f"{lead} is the likely origin{title}, {why}.")
        parts.append(f"Distinguishing error: {_quote(top.text)} ({_counts(top)}).")
        cited.extend(_template_ids(top))
        for extra in acts[1:3]:
            if extra.score >= 0.5 * top.score:
                parts.append(f"Also: {_quote(extra.text, 120)} ({_counts(extra)}).")
                cited.extend(_template_ids(extra))
        confidence = 0.45 + (0.1 if top.new else 0.0)
    elif origin:
        parts.append(f"{origin} is the likely origin ({why}).")
        confidence = 0.3

    if origin and not silent_first:
        # A deployment of the origin (or of what it depends on) just before the onset.
        onset = svc.onset if svc is not None else None
        window = scope.until - scope.since
        for dep in bundle.deployments:
            if dep.service != origin and dep.service not in bundle.dependencies.get(origin, set()):
                continue
            if onset is not None and not (
                onset - window - timedelta(minutes=5) <= dep.at <= onset + timedelta(minutes=1)
            ):
                continue
            version = f" (version {dep.version})" if dep.version else ""
            parts.append(
                f"It started right after a deployment of {dep.service}{version} at "
                f"{dep.at:%H:%M:%S}Z: a bad deployment is the prime suspect; roll it back."
            )
            cited.append(f"deployment:{dep.id}")
            confidence += 0.15
            break

    # What the origin's failure caused downstream (the symptoms), briefly.
    if origin:
        downstream = [
            name
            for name, s in bundle.services.items()
            if name != origin
            and name not in PLATFORM_SERVICES
            and s.score >= 1.0
            and origin in _upstream(name, bundle.dependencies)
        ]
        if downstream:
            parts.append("Symptoms downstream: " + ", ".join(sorted(downstream)) + ".")
            for name in sorted(downstream)[:2]:
                top_down = bundle.services[name].top[:1]
                for act in top_down:
                    cited.append(act.evidence_id)
            confidence += 0.1
        cited.append(f"service:{origin}")

    if runbook is not None:
        cited.append(f"runbook:{runbook.id}")
        confidence += 0.15
    fixes = [f for f in bundle.fixes if f.outcome == "success"][:2]
    for fix in fixes:
        parts.append(f"Fixed before by {fix.action} (incident {fix.incident_id}).")
        cited.append(f"fix:{fix.id}")
        confidence += 0.05
    for past in bundle.past_incidents[:2]:
        cited.append(past.id)
    if scope.origin_service:
        confidence += 0.1

    if not parts:
        frequent = sorted(bundle.activities, key=lambda a: -a.window)[:1]
        if frequent:
            act = frequent[0]
            parts.append(
                "Nothing in the window stands out against the baseline; the most frequent "
                f"warning is {_quote(act.text)} in {act.service} ({_counts(act)}), which was "
                "already there before."
            )
            cited.extend(_template_ids(act))
        else:
            parts.append("No warnings or errors were logged in the window.")
        confidence = 0.1

    steps = runbook_steps(runbook, action_context(origin, host)) if runbook is not None else []
    if not steps:
        steps = _generic_steps(origin, host, scope.since)
    actions = proposed_actions(runbook, origin, host)
    evidence = _cite(bundle, cited)
    return Diagnosis(
        question=scope.question,
        root_cause=" ".join(parts)[: MAX_ROOT_CAUSE * 2],
        confidence=round(min(confidence, 0.95), 2),
        origin_service=origin,
        evidence=evidence,
        next_steps=steps,
        proposed_actions=actions,
        runbook_ids=[runbook.id] if runbook is not None else [],
        backend="none",
        latency_ms=latency_ms,
    )


def _upstream(service: str, deps: dict[str, set[str]]) -> set[str]:
    return _closure(service, deps)


def _generic_steps(origin: str | None, host: str | None, since: Any) -> list[str]:
    if origin is None:
        return ["Widen the window (--since) or name the service you are asking about."]
    unit = origin if origin.endswith(".service") else f"{origin}.service"
    where = f" on {host}" if host else ""
    return [
        f"Check the unit{where}: systemctl status {unit}",
        f"Read its journal from the onset{where}: journalctl -u {unit} --since "
        f"'{since:%Y-%m-%d %H:%M:%S}'",
        f"List its errors: devmesh logs --service {origin} --level error --since "
        f"{since:%Y-%m-%dT%H:%M:%SZ}",
    ]


# ---------------------------------------------------------------------------- with a model


class AnswerError(ValueError):
    """The model's answer was not usable (bad JSON, wrong shape, no valid evidence)."""


def parse_answer(raw: str, bundle: EvidenceBundle) -> tuple[dict[str, Any], int]:
    """Validate a model's answer against the bundle; return the cleaned answer and how many
    cited ids were not in the bundle (dropped). Raises :class:`AnswerError`."""
    text = raw.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise AnswerError(f"not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise AnswerError("the answer is not a JSON object")
    root = value.get("root_cause")
    if not isinstance(root, str) or len(root.strip()) < 10:
        raise AnswerError("root_cause is missing or too short")
    raw_ids = value.get("evidence_ids")
    if not isinstance(raw_ids, list):
        raise AnswerError("evidence_ids must be a list")
    valid = bundle.ids
    ids: list[str] = []
    dropped = 0
    for item in raw_ids[: MAX_CITED * 3]:
        if isinstance(item, str) and item in valid:
            if item not in ids:
                ids.append(item)
        else:
            dropped += 1
    dropped += max(0, len(raw_ids) - MAX_CITED * 3)
    if not ids:
        raise AnswerError(
            f"no cited id is in the evidence ({dropped} unknown id(s)); cite ids from the list"
        )
    confidence = value.get("confidence", 0.5)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        confidence = 0.5
    steps_raw = value.get("next_steps") or []
    steps = (
        [s.strip()[:MAX_STEP] for s in steps_raw if isinstance(s, str) and s.strip()][:MAX_STEPS]
        if isinstance(steps_raw, list)
        else []
    )
    origin = value.get("origin_service")
    if not isinstance(origin, str) or origin not in bundle.known_services:
        origin = None
    known_runbooks = {m.runbook.id for m in bundle.runbooks}
    rb_raw = value.get("runbook_ids") or []
    runbook_ids = (
        [r for r in rb_raw if isinstance(r, str) and r in known_runbooks][:MAX_RUNBOOKS]
        if isinstance(rb_raw, list)
        else []
    )
    return (
        {
            "root_cause": root.strip()[:MAX_ROOT_CAUSE],
            "confidence": float(min(max(confidence, 0.0), 1.0)),
            "evidence_ids": ids[:MAX_CITED],
            "next_steps": steps,
            "origin_service": origin,
            "runbook_ids": runbook_ids,
        },
        dropped,
    )


def llm_diagnosis(
    bundle: EvidenceBundle,
    llm: Any,
    redactor: Redactor,
    *,
    timeout: float,
    history: Sequence[Turn] = (),
    on_text: Callable[[str], None] | None = None,
) -> Diagnosis:
    """Diagnose with a model (the :class:`~devmesh_core.reason.llm.base.LLM` port); the
    rule-based diagnosis, with ``fallback_reason``, whenever the model cannot deliver.
    ``on_text`` receives the model's answer as it is written (streamed where the backend
    streams), for front ends that show it forming; the result is validated as a whole."""
    base = rule_diagnosis(bundle)
    backend = str(getattr(llm, "name", "llm"))
    # A small in-process model (``compact_answers``) reads fewer items and writes a
    # shorter answer: on two cores each prompt token costs ~40 ms, each answer token ~0.2 s.
    compact = bool(getattr(llm, "compact_answers", False))
    earlier = [i for turn in history for i in turn.evidence_ids]
    limit = COMPACT_EVIDENCE if compact else PROMPT_EVIDENCE
    shown = select_evidence(bundle, base, keep=earlier, limit=limit)
    prompt = build_prompt(
        bundle, redactor, hints=base, history=history, evidence=shown, compact=compact
    )
    schema = output_schema(bundle, [e.id for e in shown], compact=compact)
    system = system_prompt(compact=compact)
    dropped_total = 0
    problem = ""
    answer: dict[str, Any] | None = None
    attempt_prompt = prompt
    for attempt in range(2):  # the answer, then one repair
        try:
            if on_text is None:
                raw = llm.complete_json(system, attempt_prompt, schema, timeout=timeout)
            else:
                pieces = []
                for chunk in llm.stream_json(system, attempt_prompt, schema, timeout=timeout):
                    pieces.append(chunk)
                    on_text(chunk)
                raw = "".join(pieces)
        except BackendUnavailable as exc:
            return _fallback(base, backend, f"{backend} unavailable: {exc}", dropped_total)
        except DevMeshError as exc:
            return _fallback(base, backend, f"{backend} failed: {exc}", dropped_total)
        except Exception as exc:
            log.warning("llm_error", backend=backend, error=repr(exc))
            return _fallback(base, backend, f"{backend} error: {type(exc).__name__}", dropped_total)
        try:
            answer, dropped = parse_answer(str(raw), bundle)
            dropped_total += dropped
            break
        except AnswerError as exc:
            problem = str(exc)
            log.info("llm_answer_rejected", backend=backend, attempt=attempt + 1, problem=problem)
            attempt_prompt = repair_prompt(prompt, str(raw), problem, redactor)
    if answer is None:
        return _fallback(
            base, backend, f"{backend} answer unusable after a retry: {problem}", dropped_total
        )
    runbook_ids = answer["runbook_ids"] or base.runbook_ids
    chosen = next((m.runbook for m in bundle.runbooks if m.runbook.id in runbook_ids), None)
    origin = answer["origin_service"] or base.origin_service
    host = None
    if base.proposed_actions:
        host = base.proposed_actions[0].host
    svc = bundle.services.get(origin) if origin else None
    if svc is not None and svc.hosts:
        host = sorted(svc.hosts)[0]
    return Diagnosis(
        question=bundle.scope.question,
        root_cause=_with_draft(answer["root_cause"], answer["origin_service"], base)
        if compact
        else answer["root_cause"],
        confidence=answer["confidence"],
        origin_service=origin,
        evidence=_cite(bundle, answer["evidence_ids"]),
        next_steps=answer["next_steps"] or base.next_steps,
        proposed_actions=proposed_actions(chosen, origin, host) if chosen else [],
        runbook_ids=[r for r in runbook_ids if any(m.runbook.id == r for m in bundle.runbooks)],
        backend=backend,
        dropped_evidence_ids=dropped_total,
    )


def _with_draft(text: str, origin: str | None, draft: Diagnosis) -> str:
    """A small model's short root cause, followed by the rule-based draft's facts when the
    model confirmed the draft's origin: a 1.5B model's sentence is often right but vague
    (the error without the deployment that caused it), and the draft's counts, quotes and
    deployment are deterministic facts from the same evidence. When the model named
    another origin, its answer stands alone, so a correction is never buried."""
    if origin is None or origin != draft.origin_service or not draft.root_cause:
        return text
    if draft.root_cause[:60].lower() in text.lower():  # the model copied the draft
        return text
    return f"{text.rstrip()} (Rule-based analysis agrees: {draft.root_cause})"


def _fallback(base: Diagnosis, backend: str, reason: str, dropped: int) -> Diagnosis:
    log.info("diagnosis_fallback", backend=backend, reason=reason)
    return base.model_copy(
        update={"fallback_reason": reason[:500], "dropped_evidence_ids": dropped, "backend": "none"}
    )


def level_name(rank: int) -> str:
    """The level name of a stored rank (for renderers)."""
    return Level.from_rank(rank).value
