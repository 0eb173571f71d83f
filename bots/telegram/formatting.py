"""Telegram HTML for DevMesh objects, and splitting long answers under the message limit.

Telegram's HTML parse mode treats every ``<``, ``>`` and ``&`` as markup, and log lines are
full of them (``<script>``, ``a && b``, ``List<String>``): one unescaped character makes the
whole ``sendMessage`` fail. So every piece of text from outside (log messages, host names,
runbook bodies, model answers) goes through :meth:`Formatter.t`, which first redacts secrets
and then escapes; tags are only ever written by this module. HTML was chosen over
MarkdownV2 because it has three special characters instead of eighteen.

An answer is built as a list of *blocks* (self-contained HTML fragments, tags balanced)
and :func:`pack` joins them into messages under the limit without ever cutting a tag.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

# Telegram accepts 4,096 characters of text per message (after entity parsing). We count
# the HTML source in UTF-16 code units, which is never less than what Telegram counts.
MESSAGE_LIMIT = 4096
# Raw characters kept of one log message in a list: escaped, even a line made only of
# "&" (5 characters each once escaped) stays far below the limit.
LINE_CHARS = 300
# Raw characters per block of free text (runbook body, model answer) before it is cut.
BLOCK_CHARS = 700

_TAG = re.compile(r"<[^>]*>")

LEVEL_ICON = {
    "DEBUG": "·",
    "INFO": "ℹ️",
    "WARNING": "⚠️",
    "ERROR": "❌",
    "CRITICAL": "🔥",
}
SEVERITY_ICON = {"low": "🔵", "medium": "🟡", "high": "🟠", "critical": "🔴"}
STATE_ICON = {"open": "🚨", "acknowledged": "👀", "mitigated": "🩹", "resolved": "✅"}
ACTION_ICON = {
    "pending": "⏳",
    "approved": "👍",
    "rejected": "🚫",
    "expired": "⌛",
    "cancelled": "🚫",
    "running": "⚙️",
    "succeeded": "✅",
    "failed": "❌",
}


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units: an emoji counts two)."""
    return len(text.encode("utf-16-le")) // 2


def to_plain(fragment: str) -> str:
    """The visible text of HTML made by this module (for documents and alerts)."""
    return html.unescape(_TAG.sub("", fragment))


def cut(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def when(value: datetime | None) -> str:
    """A UTC timestamp as ``2026-01-02 03:04:05Z`` (or ``-``)."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def pack(blocks: Iterable[str], limit: int = MESSAGE_LIMIT) -> list[str]:
    """Join blocks with newlines into as few messages as fit under ``limit``.

    A block is never cut between messages (its tags stay balanced); a block that alone is
    over the limit — which the formatters avoid by bounding raw text — is sent as its
    visible text, escaped again and cut, rather than failing the whole answer.
    """
    messages: list[str] = []
    current = ""
    for block in blocks:
        if utf16_len(block) > limit:
            block = html.escape(cut(to_plain(block), limit // 6), quote=False)
        candidate = f"{current}\n{block}" if current else block
        if utf16_len(candidate) <= limit:
            current = candidate
            continue
        if current:
            messages.append(current)
        current = block
    if current or not messages:
        messages.append(current or "(nothing)")
    return messages


class Formatter:
    """Renders DevMesh objects as Telegram HTML blocks. ``redact`` (the core's Redactor)
    runs over every outside text before escaping, so a secret in a log line or a model
    answer never reaches a chat."""

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        self._redact = redact or (lambda text: text)

    def t(self, raw: object, limit: int | None = None) -> str:
        """Outside text, redacted, optionally cut, and escaped for HTML."""
        text = self._redact(str(raw))
        if limit is not None:
            text = cut(text, limit)
        return html.escape(text, quote=False)

    def code(self, raw: object, limit: int | None = None) -> str:
        return f"<code>{self.t(raw, limit)}</code>"

    def plain_text(self, raw: str) -> str:
        """Redacted text for a document attachment (no HTML)."""
        return self._redact(raw)

    def paragraphs(self, raw: str, *, pre: bool = False) -> list[str]:
        """Free text (a runbook body, a model answer) as blocks of at most ``BLOCK_CHARS``
        raw characters each, split at line ends where possible."""
        blocks: list[str] = []
        chunk: list[str] = []
        size = 0
        for line in raw.splitlines() or [""]:
            pieces = [line[i : i + BLOCK_CHARS] for i in range(0, len(line), BLOCK_CHARS)] or [""]
            for piece in pieces:
                if size + len(piece) > BLOCK_CHARS and chunk:
                    blocks.append(self._wrap("\n".join(chunk), pre))
                    chunk, size = [], 0
                chunk.append(piece)
                size += len(piece) + 1
        if chunk and any(part.strip() for part in chunk):
            blocks.append(self._wrap("\n".join(chunk), pre))
        return blocks

    def _wrap(self, raw: str, pre: bool) -> str:
        return f"<pre>{self.t(raw)}</pre>" if pre else self.t(raw)

    # Logs and search ---------------------------------------------------------------
    def event(self, event: Any) -> str:
        """One stored log event as a line: time, level, host/service, message."""
        level = str(getattr(event.level, "value", event.level))
        return (
            f"{LEVEL_ICON.get(level, '')} <code>{event.timestamp.strftime('%m-%d %H:%M:%S')}"
            f"</code> <b>{self.t(event.host)}/{self.t(event.service)}</b> "
            f"<code>{self.t(event.message, LINE_CHARS)}</code>"
        )

    def search_hit(self, hit: Any) -> str:
        """A semantic search hit: score, template, where, how often, latest example."""
        info = hit.template
        line = (
            f"<b>{hit.score:.2f}</b> <code>{self.t(info.template, LINE_CHARS)}</code>\n"
            f"   {self.t(', '.join(info.services) or '-', 80)} · {info.count} event(s) · "
            f"last {when(info.last_seen)}"
        )
        if hit.examples:
            line += f"\n   e.g. <code>{self.t(hit.examples[0].message, LINE_CHARS)}</code>"
        return line

    # Status ------------------------------------------------------------------------
    def status(self, fleet: Any) -> list[str]:
        """The fleet status: hosts online/offline, open incidents, noisiest services."""
        blocks = ["<b>Fleet status</b>"]
        hosts = list(fleet.hosts)
        online = sum(1 for h in hosts if h.online)
        blocks.append(f"Hosts: {online}/{len(hosts)} online")
        for h in hosts:
            mark = "🟢" if h.online else "🔴"
            blocks.append(f"{mark} {self.t(h.host, 80)} · last seen {when(h.last_seen)}")
        counts = {k: v for k, v in dict(fleet.open_incidents).items() if v}
        if counts:
            parts = [f"{SEVERITY_ICON.get(k, '')} {k}: {v}" for k, v in counts.items()]
            blocks.append("Open incidents: " + ", ".join(parts))
        else:
            blocks.append("Open incidents: none")
        leaders = list(fleet.error_leaders)
        if leaders:
            blocks.append("<b>Errors in the last hour</b>")
            for rate in leaders:
                blocks.append(
                    f"• {self.t(rate.service, 80)}: {rate.errors_last_hour} error(s) of "
                    f"{rate.events_last_hour}"
                )
        return blocks

    # Incidents ---------------------------------------------------------------------
    def incident_line(self, incident: Any) -> str:
        """An incident in a list: id, severity, state, title, where."""
        where = incident.origin_service or ", ".join(incident.services[:3]) or "-"
        return (
            f"{STATE_ICON.get(incident.state, '')}{SEVERITY_ICON.get(incident.severity, '')} "
            f"<b>{self.t(incident.id)}</b> {self.t(incident.title, 200)}\n"
            f"   {incident.state} · {self.t(where, 80)} · opened {when(incident.opened_at)}"
        )

    def incident(self, incident: Any) -> list[str]:
        """An incident in full: header, places, timeline, diagnosis."""
        blocks = [
            f"{STATE_ICON.get(incident.state, '')} <b>{self.t(incident.id)}: "
            f"{self.t(incident.title, 300)}</b>",
            f"Severity {SEVERITY_ICON.get(incident.severity, '')} {incident.severity} · "
            f"state <b>{incident.state}</b>",
            f"Opened {when(incident.opened_at)} · updated {when(incident.updated_at)}",
        ]
        if incident.origin_service or incident.origin_host:
            blocks.append(
                f"Suspected origin: <b>{self.t(incident.origin_service or '?', 80)}</b>"
                f" on {self.t(incident.origin_host or '?', 80)}"
            )
        if incident.services:
            blocks.append("Services: " + self.t(", ".join(incident.services), 300))
        if incident.hosts:
            blocks.append("Hosts: " + self.t(", ".join(incident.hosts), 300))
        if incident.acknowledged_by:
            blocks.append(f"Acknowledged by {self.t(incident.acknowledged_by, 80)}")
        if incident.resolved_by:
            blocks.append(f"Resolved by {self.t(incident.resolved_by, 80)}")
        if incident.runbook_ids:
            blocks.append("Runbooks: " + self.t(", ".join(incident.runbook_ids), 300))
        if incident.signals:
            blocks.append("<b>Timeline</b>")
            for signal in incident.signals[-15:]:
                place = "/".join(p for p in (signal.host, signal.service) if p) or "-"
                blocks.append(
                    f"• <code>{when(signal.at)}</code> {signal.kind} ×{signal.count} "
                    f"{self.t(place, 80)}: {self.t(signal.detail, LINE_CHARS)}"
                )
        if incident.diagnosis:
            blocks.append("<b>Diagnosis</b>")
            blocks.extend(self.diagnosis_dict(incident.diagnosis))
        return blocks

    def incident_event(self, event: Any) -> list[str]:
        """A notification: what happened to the incident and the evidence summary."""
        incident, summary = event.incident, event.summary
        head = {
            "opened": "New incident",
            "updated": "Incident updated",
            "escalated": "Incident escalated",
            "acknowledged": "Acknowledged",
            "mitigated": "Mitigated",
            "resolved": "Resolved",
            "reopened": "Reopened",
        }.get(event.kind, event.kind)
        blocks = [
            f"{STATE_ICON.get(incident.state, '')}{SEVERITY_ICON.get(incident.severity, '')} "
            f"<b>{head}: {self.t(incident.id)}</b> {self.t(incident.title, 200)}",
            self.t(summary.headline, 500),
        ]
        if summary.services or summary.hosts:
            blocks.append(
                f"Services: {self.t(', '.join(summary.services) or '-', 200)} · "
                f"hosts: {self.t(', '.join(summary.hosts) or '-', 200)}"
            )
        for tc in summary.top_templates[:3]:
            blocks.append(f"• ×{tc.count} <code>{self.t(tc.template, LINE_CHARS)}</code>")
        if summary.runbook_ids:
            blocks.append("Runbooks: " + self.t(", ".join(summary.runbook_ids), 200))
        if summary.past_fixes:
            blocks.append("Fixed before: " + self.t("; ".join(summary.past_fixes), 300))
        if event.kind in ("acknowledged", "resolved") and (
            incident.acknowledged_by or incident.resolved_by
        ):
            who = incident.resolved_by if event.kind == "resolved" else incident.acknowledged_by
            blocks.append(f"by {self.t(who or '?', 80)}")
        return blocks

    # Reasoning ---------------------------------------------------------------------
    def diagnosis(self, diagnosis: Any) -> list[str]:
        """A Diagnosis object (from ``ask``)."""
        return self.diagnosis_dict(diagnosis.model_dump(mode="json"))

    def diagnosis_dict(self, data: dict[str, Any]) -> list[str]:
        """A diagnosis as stored on an incident (its JSON form)."""
        confidence = float(data.get("confidence") or 0.0)
        blocks = [f"<b>Root cause</b> ({confidence:.0%} confident)"]
        blocks.extend(self.paragraphs(str(data.get("root_cause") or "unknown")))
        if data.get("origin_service"):
            blocks.append(f"Origin: <b>{self.t(data['origin_service'], 80)}</b>")
        steps: Sequence[str] = data.get("next_steps") or []
        if steps:
            blocks.append("<b>Next steps</b>")
            blocks.extend(f"{n}. {self.t(step, BLOCK_CHARS)}" for n, step in enumerate(steps, 1))
        evidence: Sequence[dict[str, Any]] = data.get("evidence") or []
        if evidence:
            blocks.append("<b>Evidence</b>")
            for item in evidence[:8]:
                blocks.append(
                    f"[{self.t(item.get('id', '?'), 80)}] "
                    f"<code>{self.t(item.get('text', ''), LINE_CHARS)}</code>"
                )
        actions: Sequence[dict[str, Any]] = data.get("proposed_actions") or []
        if actions:
            blocks.append("<b>Proposed fixes</b> (use /fix to request one)")
            for act in actions:
                blocks.append(
                    f"• {self.t(act.get('action', '?'), 80)} "
                    f"{self.t(_params(act.get('params') or {}), 200)} "
                    f"on {self.t(act.get('host') or '?', 80)}"
                    f" (runbook {self.t(act.get('runbook_id', '?'), 80)})"
                )
        backend = data.get("backend") or "none"
        foot = f"<i>answered by {self.t(backend, 40)}"
        if data.get("fallback_reason"):
            foot += f"; fallback: {self.t(data['fallback_reason'], 200)}"
        blocks.append(foot + "</i>")
        return blocks

    def runbook(self, runbook: Any) -> list[str]:
        """A runbook: title, coverage, allowed actions, checks and its body."""
        blocks = [f"📘 <b>{self.t(runbook.title, 200)}</b> (<code>{self.t(runbook.id)}</code>)"]
        if runbook.services:
            blocks.append("Services: " + self.t(", ".join(runbook.services), 300))
        if runbook.actions:
            blocks.append(
                "Allowed fixes: " + ", ".join(self.t(a.action, 80) for a in runbook.actions)
            )
        if runbook.checks:
            blocks.append("Checks: " + self.t("; ".join(runbook.checks), 500))
        blocks.extend(self.paragraphs(runbook.body.strip()))
        return blocks

    def runbook_line(self, runbook: Any) -> str:
        return f"• <code>{self.t(runbook.id)}</code> {self.t(runbook.title, 200)}"

    # Remediation -------------------------------------------------------------------
    def action(self, request: Any) -> list[str]:
        """A remediation request and where it stands."""
        blocks = [
            f"{ACTION_ICON.get(request.status, '')} <b>Fix {self.t(request.id)}</b>: "
            f"{self.t(request.summary or request.action, 300)}",
            f"Action <code>{self.t(request.action, 80)}</code> "
            f"{self.t(_params(request.params), 300)} on <b>{self.t(request.host, 80)}</b>",
            f"Risk: <b>{request.risk}</b> · approvals {len(request.approvals)}/"
            f"{request.approvals_needed} · status <b>{request.status}</b>",
        ]
        if request.incident_id:
            blocks.append(f"Incident {self.t(request.incident_id)}")
        if request.approvals:
            blocks.append("Approved by " + self.t(", ".join(request.approvals), 300))
        if request.status == "pending":
            blocks.append(f"Expires {when(request.expires_at)}")
        reason = getattr(request, "reason", None)
        if reason:
            blocks.append("Reason: " + self.t(reason, 300))
        if request.result:
            blocks.append("Result: " + self.code(_params(request.result), 500))
        if request.verified is not None:
            blocks.append("Verified: " + ("yes ✅" if request.verified else "no ❌"))
        return blocks


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())
