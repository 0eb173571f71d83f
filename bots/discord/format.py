"""Turning core results into Discord embeds and messages, within Discord's limits.

Everything here is presentation: it reads core models and returns ``discord.Embed`` or
text. Limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits)
are enforced at the end by :func:`fit_embed`, after redaction (a redaction mark can be
longer than the secret it replaces), so a long log line or diagnosis never makes Discord
reject the whole message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import discord

if TYPE_CHECKING:
    from devmesh_core.actions.models import ActionRequest
    from devmesh_core.detect.models import Incident, IncidentEvent
    from devmesh_core.models import StoredEvent
    from devmesh_core.reason.models import Diagnosis
    from devmesh_core.reason.runbooks import Runbook
    from devmesh_core.vectors.search import SearchHit

MESSAGE_LIMIT = 2000
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELDS = 25
FIELD_NAME = 256
FIELD_VALUE = 1024
FOOTER = 2048
EMBED_TOTAL = 6000

SEVERITY_COLOUR: dict[str, int] = {
    "low": 0x3498DB,  # blue
    "medium": 0xF1C40F,  # yellow
    "high": 0xE67E22,  # orange
    "critical": 0xE74C3C,  # red
}
RESOLVED_COLOUR = 0x95A5A6  # grey
OK_COLOUR = 0x2ECC71  # green
INFO_COLOUR = 0x5865F2  # Discord blurple
SEVERITY_ICON = {"low": "🔵", "medium": "🟡", "high": "🟠", "critical": "🔴"}
LEVEL_ICON = {"DEBUG": "·", "INFO": "ℹ️", "WARNING": "⚠️", "ERROR": "❌", "CRITICAL": "🔥"}
STATUS_ICON = {
    "pending": "⏳",
    "approved": "✅",
    "running": "⚙️",
    "succeeded": "✅",
    "failed": "❌",
    "rejected": "🚫",
    "cancelled": "🚫",
    "expired": "⌛",
}


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"


def code(text: str, limit: int) -> str:
    """A code block holding ``text`` (backticks neutralised) within ``limit`` characters."""
    body = text.replace("```", "`\u200b``")
    return "```\n" + clip(body, max(limit - 8, 1)) + "\n```"


def ts(value: datetime | None, style: str = "R") -> str:
    """A Discord timestamp tag (rendered in each reader's time zone), or "—"."""
    if value is None:
        return "—"
    return discord.utils.format_dt(value, style=style)  # type: ignore[arg-type]


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters, at line breaks where
    possible (a single over-long line is cut)."""
    chunks: list[str] = []
    current = ""
    for line in text.splitlines(keepends=True):
        while len(line) > limit:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(line[:limit])
            line = line[limit:]
        if len(current) + len(line) > limit:
            chunks.append(current)
            current = ""
        current += line
    if current:
        chunks.append(current)
    return [c for c in chunks if c.strip()] or [""]


def embed_size(embed: discord.Embed) -> int:
    """Characters Discord counts towards the 6000 total."""
    total = len(embed.title or "") + len(embed.description or "")
    total += len(embed.footer.text or "") + len(embed.author.name or "")
    return total + sum(len(f.name or "") + len(f.value or "") for f in embed.fields)


def fit_embed(embed: discord.Embed) -> discord.Embed:
    """Clip every part of ``embed`` to its limit, then drop trailing fields and shorten the
    description until the whole fits in 6000 characters."""
    if embed.title:
        embed.title = clip(embed.title, EMBED_TITLE)
    if embed.description:
        embed.description = clip(embed.description, EMBED_DESCRIPTION)
    if embed.footer.text:
        embed.set_footer(text=clip(embed.footer.text, FOOTER), icon_url=embed.footer.icon_url)
    fields = [(f.name or "\u200b", f.value or "\u200b", bool(f.inline)) for f in embed.fields]
    embed.clear_fields()
    for name, value, inline in fields[:EMBED_FIELDS]:
        embed.add_field(name=clip(name, FIELD_NAME), value=clip(value, FIELD_VALUE), inline=inline)
    while embed_size(embed) > EMBED_TOTAL and len(embed.fields) > 1:
        embed.remove_field(len(embed.fields) - 1)
    excess = embed_size(embed) - EMBED_TOTAL
    if excess > 0 and embed.description:
        embed.description = clip(embed.description, max(len(embed.description) - excess, 1))
    return embed


def clean_embed(embed: discord.Embed, redact: Callable[[str], str]) -> discord.Embed:
    """``embed`` with every text redacted, then fitted to Discord's limits."""
    data = embed.to_dict()

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {
                k: (v if k in ("url", "type", "timestamp") else walk(v)) for k, v in value.items()
            }
        return value

    return fit_embed(discord.Embed.from_dict(walk(data)))


def _lines(items: Iterable[str], limit: int = FIELD_VALUE) -> str:
    """Lines joined until ``limit``, with "… and N more" when some did not fit."""
    items = list(items)
    out: list[str] = []
    used = 0
    for index, item in enumerate(items):
        rest = len(items) - index
        tail = f"… and {rest} more"
        if used + len(item) + 1 > limit - len(tail) - 1 and rest > 0:
            out.append(tail)
            break
        out.append(item)
        used += len(item) + 1
    return "\n".join(out) or "—"


# --------------------------------------------------------------------------- status


def status_embed(status: Any) -> discord.Embed:
    """``/status``: hosts online/offline, open incidents by severity, error-rate leaders."""
    hosts = list(status.hosts)
    online = [h for h in hosts if h.online]
    offline = [h for h in hosts if not h.online]
    by_severity: dict[str, int] = dict(status.open_incidents)
    worst = next((s for s in ("critical", "high", "medium", "low") if by_severity.get(s)), None)
    embed = discord.Embed(
        title="Fleet status",
        colour=SEVERITY_COLOUR[worst] if worst else OK_COLOUR,
        description=f"**{len(online)}** host(s) online, **{len(offline)}** offline",
    )
    embed.add_field(
        name="Offline",
        value=_lines(f"🔴 `{h.host}` last seen {ts(h.last_seen)}" for h in offline)
        if offline
        else "none",
        inline=False,
    )
    if online:
        embed.add_field(name="Online", value=_lines(f"🟢 `{h.host}`" for h in online), inline=False)
    open_total = sum(by_severity.values())
    embed.add_field(
        name=f"Open incidents ({open_total})",
        value=" ".join(
            f"{SEVERITY_ICON[s]} {s} **{by_severity.get(s, 0)}**"
            for s in ("critical", "high", "medium", "low")
        ),
        inline=False,
    )
    leaders = [e for e in status.error_leaders if e.errors_last_hour]
    embed.add_field(
        name="Most errors, last hour",
        value=_lines(
            f"`{e.service}` **{e.errors_last_hour}** errors / {e.events_last_hour} events"
            for e in leaders
        )
        if leaders
        else "no errors in the last hour",
        inline=False,
    )
    return embed


# --------------------------------------------------------------------------- incidents


def incident_line(incident: Incident) -> str:
    where = incident.origin_service or ", ".join(incident.services[:2]) or "?"
    host = f"@{incident.origin_host}" if incident.origin_host else ""
    return (
        f"{SEVERITY_ICON.get(incident.severity, '')} **{incident.id}** {incident.state} · "
        f"`{where}{host}` · {clip(incident.title, 80)} · {ts(incident.opened_at)}"
    )


def incidents_embed(incidents: Sequence[Incident], state: str | None) -> discord.Embed:
    """``/incidents``: one line per incident, newest first."""
    label = state or "active"
    embed = discord.Embed(title=f"Incidents ({label})", colour=INFO_COLOUR)
    embed.description = (
        _lines((incident_line(i) for i in incidents), EMBED_DESCRIPTION)
        if incidents
        else f"No {label} incidents."
    )
    return embed


def incident_colour(incident: Incident) -> int:
    if incident.state == "resolved":
        return RESOLVED_COLOUR
    return SEVERITY_COLOUR.get(incident.severity, INFO_COLOUR)


def incident_embed(incident: Incident, *, detail: bool = True) -> discord.Embed:
    """``/incident`` and the ping: what, where, since when, the timeline, the diagnosis."""
    embed = discord.Embed(
        title=f"{incident.id} · {incident.title}",
        colour=incident_colour(incident),
        timestamp=incident.opened_at,
    )
    embed.add_field(name="Severity", value=incident.severity, inline=True)
    embed.add_field(name="State", value=incident.state, inline=True)
    origin = incident.origin_service or "?"
    if incident.origin_host:
        origin += f" @ {incident.origin_host}"
    embed.add_field(name="Origin", value=origin, inline=True)
    if incident.services:
        embed.add_field(name="Services", value=", ".join(incident.services), inline=True)
    if incident.hosts:
        embed.add_field(name="Hosts", value=", ".join(incident.hosts), inline=True)
    if incident.runbook_ids:
        embed.add_field(
            name="Runbooks", value=", ".join(f"`{r}`" for r in incident.runbook_ids), inline=True
        )
    who = []
    if incident.acknowledged_by:
        who.append(f"acknowledged by {incident.acknowledged_by} {ts(incident.acknowledged_at)}")
    if incident.resolved_by:
        who.append(f"resolved by {incident.resolved_by} {ts(incident.resolved_at)}")
    if who:
        embed.add_field(name="Handled", value="\n".join(who), inline=False)
    if detail and incident.signals:
        timeline = [
            f"{ts(s.at, 'T')} {SEVERITY_ICON.get(s.severity, '')} {s.kind} "
            f"`{s.service or '?'}{'@' + s.host if s.host else ''}` ×{s.count} {clip(s.detail, 120)}"
            for s in sorted(incident.signals, key=lambda s: s.at)
        ]
        embed.add_field(name="Timeline", value=_lines(timeline[-12:]), inline=False)
        evidence = sorted({i for s in incident.signals for i in s.event_ids})
        if evidence:
            shown = ", ".join(f"event:{i}" for i in evidence[:15])
            more = f" (+{len(evidence) - 15})" if len(evidence) > 15 else ""
            embed.add_field(name="Evidence", value=shown + more, inline=False)
    if detail and incident.diagnosis:
        diag = incident.diagnosis
        conf = diag.get("confidence")
        head = f"**{diag.get('root_cause', '?')}**"
        if isinstance(conf, int | float):
            head += f" (confidence {conf:.0%})"
        steps = [f"• {s}" for s in diag.get("next_steps") or []][:5]
        embed.add_field(name="Diagnosis", value=_lines([head, *steps]), inline=False)
    embed.set_footer(text=f"updated {incident.updated_at:%Y-%m-%d %H:%M} UTC")
    return embed


def ping_embed(event: IncidentEvent) -> discord.Embed:
    """The channel post for a new incident: the summary built from evidence."""
    incident, summary = event.incident, event.summary
    embed = incident_embed(incident, detail=False)
    embed.description = summary.headline
    if summary.top_templates:
        embed.add_field(
            name="Top signatures",
            value=_lines(f"×{t.count} `{clip(t.template, 150)}`" for t in summary.top_templates),
            inline=False,
        )
    if summary.first_seen or summary.last_seen:
        embed.add_field(
            name="Seen",
            value=f"first {ts(summary.first_seen)}, last {ts(summary.last_seen)}",
            inline=False,
        )
    if summary.past_fixes:
        embed.add_field(name="Past fixes", value=_lines(summary.past_fixes), inline=False)
    embed.set_footer(text="Discussion and updates in the thread · /ack, /resolve, /fix")
    return embed


def update_text(event: IncidentEvent) -> str:
    """One line for the incident's thread when it changes."""
    incident = event.incident
    by = ""
    if event.kind == "acknowledged" and incident.acknowledged_by:
        by = f" by {incident.acknowledged_by}"
    if event.kind == "resolved" and incident.resolved_by:
        by = f" by {incident.resolved_by}"
    icon = {"resolved": "✅", "acknowledged": "👀", "escalated": "⏫", "reopened": "🔁"}
    return (
        f"{icon.get(event.kind, '🔔')} **{incident.id}** {event.kind}{by} · "
        f"{incident.severity} · {incident.state} — {event.summary.headline}"
    )


def thread_name(incident: Incident) -> str:
    """Thread names are capped at 100 characters; the id first so a search finds it."""
    return clip(f"{incident.id} {incident.title}", 100)


# --------------------------------------------------------------------------- logs / search


def event_line(event: StoredEvent, width: int = 180) -> str:
    return (
        f"{LEVEL_ICON.get(event.level.value, '')} `{event.timestamp:%m-%d %H:%M:%S}` "
        f"**{event.service}**@{event.host} {clip(event.message, width)}"
    )


def logs_embed(
    events: Sequence[StoredEvent], *, filters: str, page: int, more: bool
) -> discord.Embed:
    """``/logs``: one page of events, newest first."""
    embed = discord.Embed(title="Logs", colour=INFO_COLOUR)
    embed.description = (
        _lines((event_line(e) for e in events), EMBED_DESCRIPTION - 100)
        if events
        else "No events match."
    )
    embed.set_footer(text=f"{filters} · page {page}{' · more →' if more else ''}")
    return embed


def search_embed(query: str, hits: Sequence[SearchHit]) -> discord.Embed:
    """``/search``: templates closest in meaning, with their most recent example."""
    embed = discord.Embed(title=clip(f"Search: {query}", EMBED_TITLE), colour=INFO_COLOUR)
    if not hits:
        embed.description = "No matching log signatures."
        return embed
    for hit in hits[:10]:
        info = hit.template
        lines = [
            f"score {hit.score:.2f} · {info.count} events · {', '.join(info.services[:3])}",
            f"last {ts(info.last_seen)}",
        ]
        if hit.examples:
            lines.append(code(hit.examples[0].message, 400))
        embed.add_field(name=clip(info.template, FIELD_NAME), value="\n".join(lines), inline=False)
    return embed


def runbook_embed(runbook: Runbook) -> discord.Embed:
    """``/runbook``: what it covers, what it allows, the body."""
    embed = discord.Embed(title=f"{runbook.title} ({runbook.id})", colour=INFO_COLOUR)
    embed.description = runbook.body.strip() or "(empty)"
    if runbook.services:
        embed.add_field(name="Services", value=", ".join(runbook.services), inline=True)
    embed.add_field(name="Risk", value=runbook.risk, inline=True)
    if runbook.triggers:
        embed.add_field(
            name="Triggers",
            value=_lines(f"`{t.pattern}` → {t.severity}" for t in runbook.triggers),
            inline=False,
        )
    if runbook.actions:
        embed.add_field(
            name="Allowed actions",
            value=_lines(f"`{a.action}` {_params(a.params)}" for a in runbook.actions),
            inline=False,
        )
    if runbook.checks:
        embed.add_field(name="Checks", value=_lines(f"• {c}" for c in runbook.checks), inline=False)
    return embed


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}=`{v}`" for k, v in params.items())


# --------------------------------------------------------------------------- diagnosis


def diagnosis_text(diagnosis: Diagnosis) -> str:
    """The full diagnosis as Markdown: what a long ``/ask`` answer attaches as a file."""
    out = [
        f"**Question:** {diagnosis.question}",
        f"**Root cause:** {diagnosis.root_cause}",
        f"**Confidence:** {diagnosis.confidence:.0%}"
        + (f" · origin `{diagnosis.origin_service}`" if diagnosis.origin_service else ""),
    ]
    if diagnosis.next_steps:
        out.append("**Next steps:**")
        out += [f"{n}. {step}" for n, step in enumerate(diagnosis.next_steps, 1)]
    if diagnosis.proposed_actions:
        out.append("**Proposed actions** (use `/fix`):")
        out += [
            f"- `{a.action}` {_params(a.params)}{' on ' + a.host if a.host else ''} "
            f"(runbook `{a.runbook_id}`)"
            for a in diagnosis.proposed_actions
        ]
    if diagnosis.evidence:
        out.append("**Evidence:**")
        out += [f"- [{e.id}] {e.text}" for e in diagnosis.evidence]
    if diagnosis.runbook_ids:
        out.append("**Runbooks:** " + ", ".join(f"`{r}`" for r in diagnosis.runbook_ids))
    foot = f"backend {diagnosis.backend} · {diagnosis.latency_ms:.0f} ms"
    if diagnosis.fallback_reason:
        foot += f" · fallback: {diagnosis.fallback_reason}"
    out.append(f"-# {foot}")
    return "\n".join(out)


def diagnosis_embed(diagnosis: Diagnosis, *, incident_id: str | None = None) -> discord.Embed:
    """A diagnosis as an embed: root cause, next steps, cited evidence, proposed actions."""
    conf = diagnosis.confidence
    colour = OK_COLOUR if conf >= 0.7 else SEVERITY_COLOUR["medium"] if conf >= 0.4 else 0x99AAB5
    title = "Diagnosis" + (f" · {incident_id}" if incident_id else "")
    embed = discord.Embed(title=title, colour=colour, description=diagnosis.root_cause)
    origin = f" · origin `{diagnosis.origin_service}`" if diagnosis.origin_service else ""
    embed.add_field(name="Confidence", value=f"{conf:.0%}{origin}", inline=False)
    if diagnosis.next_steps:
        embed.add_field(
            name="Next steps",
            value=_lines(f"{n}. {s}" for n, s in enumerate(diagnosis.next_steps, 1)),
            inline=False,
        )
    if diagnosis.evidence:
        embed.add_field(
            name="Evidence",
            value=_lines(f"`{e.id}` {clip(e.text, 200)}" for e in diagnosis.evidence),
            inline=False,
        )
    if diagnosis.proposed_actions:
        embed.add_field(
            name="Proposed actions (/fix)",
            value=_lines(
                f"`{a.action}` {_params(a.params)}{' on ' + a.host if a.host else ''}"
                for a in diagnosis.proposed_actions
            ),
            inline=False,
        )
    foot = f"{diagnosis.backend} · {diagnosis.latency_ms:.0f} ms"
    if diagnosis.fallback_reason:
        foot += f" · {diagnosis.fallback_reason}"
    embed.set_footer(text=foot)
    return embed


# --------------------------------------------------------------------------- actions


def action_embed(request: ActionRequest) -> discord.Embed:
    """A remediation proposal: the exact action, parameters, risk, expiry, approvals and
    (once known) the result."""
    final_ok = request.status == "succeeded"
    colour = (
        OK_COLOUR
        if final_ok
        else RESOLVED_COLOUR
        if request.final
        else SEVERITY_COLOUR["critical" if request.risk == "high" else "medium"]
    )
    embed = discord.Embed(
        title=f"{STATUS_ICON.get(request.status, '')} {request.summary or request.action}",
        colour=colour,
    )
    embed.add_field(name="Action", value=f"`{request.action}`", inline=True)
    embed.add_field(name="Host", value=f"`{request.host}`", inline=True)
    embed.add_field(name="Risk", value=request.risk.upper(), inline=True)
    embed.add_field(name="Parameters", value=_params(request.params) or "none", inline=False)
    if request.incident_id:
        embed.add_field(name="Incident", value=request.incident_id, inline=True)
    embed.add_field(name="Status", value=request.status, inline=True)
    approvals = f"{len(request.approvals)}/{request.approvals_needed}"
    if request.approvals:
        approvals += " · " + ", ".join(request.approvals)
    embed.add_field(name="Approvals", value=approvals, inline=True)
    if request.approvals_needed > 1:
        embed.add_field(
            name="Two-person rule",
            value=f"high risk: {request.approvals_needed} different approvers, not the requester",
            inline=False,
        )
    if request.status == "pending":
        embed.add_field(name="Expires", value=ts(request.expires_at), inline=True)
    if request.reason:
        embed.add_field(name="Reason", value=request.reason, inline=False)
    if request.result:
        result = request.result
        text = str(result.get("output") or result.get("stdout") or result.get("error") or result)
        extra = ""
        if "exit_code" in result:
            extra = f"exit {result['exit_code']}\n"
        embed.add_field(name="Result", value=extra + code(text, 900), inline=False)
    if request.verified is not None:
        embed.add_field(
            name="Verified", value="yes ✅" if request.verified else "no ❌", inline=True
        )
    embed.set_footer(text=f"{request.id} · requested by {request.requested_by}")
    return embed
