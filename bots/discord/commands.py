"""The slash commands. Each one: parse options, call one core service, format the answer.

Autocomplete offers what exists (services and hosts from the store's templates, incident
ids from the incident service, runbook ids, catalog actions), so users pick rather than
type; the core still validates whatever arrives.
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands

from bots.discord import format as fmt
from bots.discord.access import identity_of
from bots.discord.views import LogPager, action_view
from devmesh_core.errors import ConfigError, InvalidInput
from devmesh_core.models import Level
from devmesh_core.store.base import LogQuery
from devmesh_core.timeparse import parse_time

if TYPE_CHECKING:
    from bots.discord.bot import DevMeshBot

MAX_CHOICES = 25
IncidentStateChoice = Literal["active", "open", "acknowledged", "mitigated", "resolved", "all"]
LevelChoice = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _service(bot: DevMeshBot, name: str) -> Any:
    found = getattr(bot.core, name, None)
    if found is None:
        what = {"incidents": "Incident detection", "actions": "Remediation"}.get(name, name)
        raise ConfigError(f"{what} is not enabled on this DevMesh.")
    return found


def _who(interaction: discord.Interaction) -> str:
    """How a person is recorded on an incident (``discord:<id>``, the identity key)."""
    return identity_of(interaction.user).key


class Names:
    """Services and hosts for autocomplete, from the store's templates (cached a minute:
    autocomplete fires on every keystroke)."""

    def __init__(self, bot: DevMeshBot) -> None:
        self.bot = bot
        self._at = 0.0
        self._services: list[str] = []
        self._hosts: list[str] = []

    async def load(self) -> tuple[list[str], list[str]]:
        if time.monotonic() - self._at > 60:
            templates = await self.bot.call(self.bot.core.store.list_templates, limit=1_000)
            self._services = sorted({s for t in templates for s in t.services})
            self._hosts = sorted({h for t in templates for h in t.hosts})
            self._at = time.monotonic()
        return self._services, self._hosts


def _choices(values: list[str], current: str) -> list[app_commands.Choice[str]]:
    needle = current.lower()
    hits = [v for v in values if needle in v.lower()]
    hits.sort(key=lambda v: (not v.lower().startswith(needle), v))
    return [app_commands.Choice(name=fmt.clip(v, 100), value=v[:100]) for v in hits[:MAX_CHOICES]]


def register(bot: DevMeshBot) -> None:
    """Add every command to ``bot.tree``."""
    tree = bot.tree
    names = Names(bot)

    async def service_complete(
        _i: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        services, _ = await names.load()
        return _choices(services, current)

    async def host_complete(
        _i: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        _, hosts = await names.load()
        return _choices(hosts, current)

    async def incident_complete(
        _i: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        if bot.core.incidents is None:
            return []
        incidents = await bot.call(bot.core.incidents.list, None, limit=100)
        needle = current.lower().removeprefix("inc-")
        out = []
        for incident in incidents:
            label = f"{incident.id} · {incident.state} · {incident.title}"
            if needle in incident.id.lower() or needle in incident.title.lower():
                out.append(app_commands.Choice(name=fmt.clip(label, 100), value=incident.id))
        return out[:MAX_CHOICES]

    async def runbook_complete(
        _i: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        needle = current.lower()
        return [
            app_commands.Choice(name=fmt.clip(f"{r.id} · {r.title}", 100), value=r.id)
            for r in bot.core.runbooks
            if needle in r.id or needle in r.title.lower()
        ][:MAX_CHOICES]

    async def action_complete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        if bot.core.actions is None:
            return []
        names_: list[str] = []
        incident_id = getattr(interaction.namespace, "incident", None)
        if incident_id and bot.core.incidents is not None:
            try:
                incident = await bot.call(bot.core.incidents.get, str(incident_id))
                for proposal in (incident.diagnosis or {}).get("proposed_actions") or []:
                    names_.append(str(proposal.get("action")))
            except Exception:  # autocomplete must never fail loudly
                pass
        catalog = await bot.call(bot.core.actions.catalog)
        names_ += [spec.name for spec in catalog if spec.name not in names_]
        return _choices(names_, current)

    # ------------------------------------------------------------------ /status
    @app_commands.command(
        name="status", description="Fleet overview: hosts, open incidents, errors"
    )
    async def status(interaction: discord.Interaction) -> None:
        from devmesh_core.detect.status import fleet_status

        result = await bot.call(fleet_status, bot.core)
        await interaction.response.send_message(embed=bot.clean(fmt.status_embed(result)))

    # ------------------------------------------------------------------ /logs
    @app_commands.command(name="logs", description="Recent log events, newest first")
    @app_commands.describe(
        service="only this service",
        host="only this host",
        level="minimum level",
        since="how far back: 15m, 2h, 3d or an ISO time",
        text="text the message contains",
    )
    @app_commands.autocomplete(service=service_complete, host=host_complete)
    async def logs(
        interaction: discord.Interaction,
        service: str | None = None,
        host: str | None = None,
        level: LevelChoice | None = None,
        since: str | None = None,
        text: app_commands.Range[str, 1, 200] | None = None,
    ) -> None:
        try:
            start = parse_time(since) if since else None
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        query = LogQuery(
            service=service,
            host=host,
            level=Level.parse(level) if level else None,
            start_time=start,
            text=text,
        )
        filters = " ".join(
            f"{k}={v}"
            for k, v in (
                ("service", service),
                ("host", host),
                ("level≥", level),
                ("since", since),
                ("text", text),
            )
            if v
        )
        pager = LogPager(bot, query, filters or "all events")
        embed = await pager.render()
        await interaction.response.send_message(embed=embed, view=pager)

    # ------------------------------------------------------------------ /search
    @app_commands.command(name="search", description="Find log signatures by meaning")
    @app_commands.describe(query='what you are looking for, e.g. "disk is full"')
    @app_commands.autocomplete(service=service_complete)
    async def search(
        interaction: discord.Interaction,
        query: app_commands.Range[str, 1, 300],
        service: str | None = None,
    ) -> None:
        core = bot.core
        if core.vector_index is None or core.embedder is None:
            raise ConfigError("Semantic search is off on this DevMesh (no vector index).")
        from devmesh_core.vectors.search import search_templates

        await interaction.response.defer(thinking=True)
        hits = await bot.call(
            search_templates,
            core.store,
            core.vector_index,
            core.embedder,
            query,
            limit=5,
            service=service,
            examples=1,
        )
        await interaction.followup.send(embed=bot.clean(fmt.search_embed(query, hits)))

    # ------------------------------------------------------------------ /runbook
    @app_commands.command(name="runbook", description="Show a runbook")
    @app_commands.autocomplete(name=runbook_complete)
    async def runbook(interaction: discord.Interaction, name: str) -> None:
        found = next((r for r in bot.core.runbooks if r.id == name), None)
        if found is None:
            known = ", ".join(r.id for r in bot.core.runbooks[:20]) or "none loaded"
            raise InvalidInput(f"no runbook {name!r} (known: {known})")
        await interaction.response.send_message(embed=bot.clean(fmt.runbook_embed(found)))

    # ------------------------------------------------------------------ incidents
    @app_commands.command(name="incidents", description="List incidents")
    @app_commands.describe(state="which incidents (default: active = not resolved)")
    async def incidents(
        interaction: discord.Interaction, state: IncidentStateChoice | None = None
    ) -> None:
        service = _service(bot, "incidents")
        wanted = None if state == "all" else (state or "active")
        found = await bot.call(service.list, wanted, limit=25)
        await interaction.response.send_message(
            embed=bot.clean(fmt.incidents_embed(found, state or "active"))
        )

    @app_commands.command(
        name="incident", description="One incident: timeline, evidence, diagnosis"
    )
    @app_commands.autocomplete(id=incident_complete)
    async def incident(interaction: discord.Interaction, id: str) -> None:
        found = await bot.call(_service(bot, "incidents").get, id)
        await interaction.response.send_message(embed=bot.clean(fmt.incident_embed(found)))

    @app_commands.command(name="ack", description="Acknowledge an incident (you are on it)")
    @app_commands.autocomplete(id=incident_complete)
    async def ack(interaction: discord.Interaction, id: str) -> None:
        found = await bot.call(_service(bot, "incidents").acknowledge, id, _who(interaction))
        await interaction.response.send_message(
            f"👀 {found.id} acknowledged by {interaction.user.mention}.",
            embed=bot.clean(fmt.incident_embed(found, detail=False)),
        )

    @app_commands.command(name="resolve", description="Resolve an incident")
    @app_commands.autocomplete(id=incident_complete)
    @app_commands.describe(note="what fixed it (kept with the incident)")
    async def resolve(
        interaction: discord.Interaction,
        id: str,
        note: app_commands.Range[str, 1, 500] | None = None,
    ) -> None:
        found = await bot.call(_service(bot, "incidents").resolve, id, _who(interaction), note)
        await interaction.response.send_message(
            f"✅ {found.id} resolved by {interaction.user.mention}.",
            embed=bot.clean(fmt.incident_embed(found, detail=False)),
        )

    # ------------------------------------------------------------------ /fix
    @app_commands.command(name="fix", description="Propose an allowlisted remediation action")
    @app_commands.describe(
        incident="the incident it is for",
        action="catalog action (the diagnosis' proposals come first)",
        host="host to act on (default: the proposal's, else the incident's origin host)",
        params="parameters as key=value pairs, e.g. unit=nginx.service",
    )
    @app_commands.autocomplete(
        incident=incident_complete, action=action_complete, host=host_complete
    )
    async def fix(
        interaction: discord.Interaction,
        incident: str,
        action: str,
        host: str | None = None,
        params: app_commands.Range[str, 1, 300] | None = None,
    ) -> None:
        actions = _service(bot, "actions")
        found = await bot.call(_service(bot, "incidents").get, incident)
        given = _parse_params(params)
        proposal = next(
            (
                p
                for p in (found.diagnosis or {}).get("proposed_actions") or []
                if p.get("action") == action
            ),
            None,
        )
        values = {**((proposal or {}).get("params") or {}), **given}
        target = host or (proposal or {}).get("host") or found.origin_host
        if not target:
            raise InvalidInput("no host known for this incident: give host:")
        request = await bot.call(
            actions.propose,
            action,
            values,
            host=target,
            incident_id=found.id,
            requested_by=identity_of(interaction.user),
        )
        view = action_view(bot, request)
        embed = bot.clean(fmt.action_embed(request))
        if view is None:
            await interaction.response.send_message(embed=embed)
        else:
            await interaction.response.send_message(embed=embed, view=view)
        message = await interaction.original_response()
        bot.state.set_action_message(request.id, message.channel.id, message.id)

    # ------------------------------------------------------------------ /ask
    @app_commands.command(name="ask", description="Ask DevMesh what is wrong (cites evidence)")
    @app_commands.describe(
        question="e.g. why is nextcloud slow?",
        incident="incident to reason about (default: this thread's)",
    )
    @app_commands.autocomplete(incident=incident_complete)
    async def ask(
        interaction: discord.Interaction,
        question: app_commands.Range[str, 1, 1000],
        incident: str | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        channel_id = interaction.channel_id or 0
        thread_incident = bot.state.incident_of_thread(channel_id)
        incident_id = incident or thread_incident
        # Follow-ups keep their context per incident thread; elsewhere each /ask stands
        # alone (people sharing a channel must not inherit each other's scope).
        key = channel_id if thread_incident is not None else None
        diagnosis = await bot.notifier.diagnose(question, incident_id, conversation_key=key)
        await send_diagnosis(bot, interaction.followup.send, diagnosis, incident_id)

    commands: list[app_commands.Command[Any, Any, Any]] = [
        status,
        logs,
        search,
        runbook,
        incidents,
        incident,
        ack,
        resolve,
        fix,
        ask,
    ]
    for command in commands:
        tree.add_command(command)


def _parse_params(text: str | None) -> dict[str, Any]:
    """``unit=nginx.service lines=50`` → ``{"unit": "nginx.service", "lines": 50}``."""
    out: dict[str, Any] = {}
    for part in (text or "").replace(",", " ").split():
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise InvalidInput(f"parameter {part!r} is not key=value")
        out[key] = int(value) if value.isdigit() else value
    return out


async def send_diagnosis(
    bot: DevMeshBot, send: Any, diagnosis: Any, incident_id: str | None
) -> None:
    """A diagnosis as an embed; when the full text does not fit, also as a Markdown file."""
    embed = bot.clean(fmt.diagnosis_embed(diagnosis, incident_id=incident_id))
    full = bot.redact(fmt.diagnosis_text(diagnosis))
    if len(full) <= 3_000 and fmt.embed_size(embed) < fmt.EMBED_TOTAL - 200:
        await send(embed=embed)
        return
    data = io.BytesIO(full.encode())
    await send(embed=embed, file=discord.File(data, filename="diagnosis.md"))
