"""Proactive pings: the bot as a core ``Notifier``.

A new incident is posted as an embed in the ping channel and gets a thread of its own;
every later change (acknowledged, escalated, resolved…) is a line in that thread and
refreshes the original post, and the diagnosis is posted there too. People discuss the
incident in its thread, and questions asked there (``/ask`` or a mention of the bot) keep
the incident's context through one ``Conversation`` per thread.

The notifier hub may call :meth:`DiscordNotifier.send` from another event loop (the API
server's) or a worker thread's loop; delivery always hops onto the bot's own loop, where
its HTTP session lives.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import discord

from bots.discord import format as fmt
from devmesh_core.errors import DevMeshError
from devmesh_core.log import get_logger
from devmesh_core.notify.base import Notifier

if TYPE_CHECKING:
    from bots.discord.bot import DevMeshBot
    from devmesh_core.detect.models import Incident, IncidentEvent
    from devmesh_core.reason.models import Diagnosis

log = get_logger(__name__)
MAX_CONVERSATIONS = 200


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DiscordNotifier(Notifier):
    """Posts incident events to the ping channel, one thread per incident."""

    name = "discord"

    def __init__(self, bot: DevMeshBot) -> None:
        self.bot = bot
        self._conversations: OrderedDict[int, Any] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    def attach(self) -> None:
        """Subscribe to the core's notifier hub, if it has one."""
        hub = self.bot.core.notifiers
        if hub is not None and self not in hub.notifiers:
            hub.subscribe(self)

    async def send(self, event: IncidentEvent) -> None:
        """Deliver on the bot's loop, whichever loop the hub runs on."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - the hub always awaits this
            running = None
        if running is self.bot.loop:
            await self.deliver(event)
            return
        future = asyncio.run_coroutine_threadsafe(self.deliver(event), self.bot.loop)
        await asyncio.wrap_future(future)

    # ------------------------------------------------------------------ delivery
    async def deliver(self, event: IncidentEvent) -> None:
        """Post a new incident (with its thread) or add the change to its thread."""
        bot = self.bot
        channel_id = bot.settings.ping_channel_id
        if channel_id is None:
            log.info("discord_ping_skipped", reason="no ping channel configured")
            return
        await bot.wait_until_ready()
        incident = event.incident
        async with self._lock:  # one thread per incident even if two events race
            entry = bot.state.incident(incident.id)
            if entry is None:
                entry = await self._open(channel_id, event)
                fresh = True
            else:
                fresh = False
        embed = bot.clean(fmt.ping_embed(event))
        if not fresh:
            thread = bot.get_partial_messageable(entry["thread"])
            await thread.send(fmt.clip(bot.redact(fmt.update_text(event)), fmt.MESSAGE_LIMIT))
            message = bot.get_partial_messageable(entry["channel"]).get_partial_message(
                entry["message"]
            )
            try:
                await message.edit(embed=embed)
            except discord.HTTPException as exc:
                log.warning("discord_ping_edit_failed", incident=incident.id, error=str(exc))
        if incident.diagnosis and _digest(incident.diagnosis) != entry.get("diagnosis"):
            await self.post_diagnosis(incident, incident.diagnosis)
        elif fresh and bot.settings.diagnose_new_incidents and incident.diagnosis is None:
            self._spawn(self._auto_diagnose(incident))

    async def _open(self, channel_id: int, event: IncidentEvent) -> dict[str, Any]:
        bot = self.bot
        incident = event.incident
        channel = bot.get_channel(channel_id) or await bot.fetch_channel(channel_id)
        if not isinstance(channel, discord.TextChannel):
            raise DevMeshError(f"Discord channel {channel_id} is not a text channel")
        message = await channel.send(embed=bot.clean(fmt.ping_embed(event)))
        thread = await message.create_thread(
            name=fmt.thread_name(incident), auto_archive_duration=1440
        )
        await thread.send(
            f"Updates on **{incident.id}** will appear here. Ask about it with `/ask` in this "
            f"thread or by mentioning {bot.user.mention if bot.user else 'the bot'}; "
            f"`/ack {incident.id}`, `/resolve {incident.id}`, `/fix {incident.id} …`."
        )
        bot.state.set_incident(
            incident.id, channel=channel.id, message=message.id, thread=thread.id
        )
        log.info("discord_incident_posted", incident=incident.id, thread=thread.id)
        entry = bot.state.incident(incident.id)
        assert entry is not None
        return entry

    async def post_diagnosis(self, incident: Incident, diagnosis: dict[str, Any]) -> None:
        """Post a diagnosis into the incident's thread (once per distinct diagnosis)."""
        from bots.discord.commands import send_diagnosis
        from devmesh_core.reason.models import Diagnosis

        entry = self.bot.state.incident(incident.id)
        if entry is None:
            return
        model = Diagnosis.model_validate(diagnosis)
        thread = self.bot.get_partial_messageable(entry["thread"])
        await send_diagnosis(self.bot, thread.send, model, incident.id)
        self.bot.state.set_incident(incident.id, diagnosis=_digest(diagnosis))

    async def _auto_diagnose(self, incident: Incident) -> None:
        try:
            diagnosis = await self.diagnose(
                f"What is the root cause of {incident.id} ({incident.title})?", incident.id
            )
            # ask() attaches the diagnosis to the incident it is about.
            await self.post_diagnosis(incident, diagnosis.model_dump(mode="json"))
        except Exception as exc:  # a failed diagnosis must not break notifications
            log.warning("discord_auto_diagnosis_failed", incident=incident.id, error=repr(exc))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ reasoning
    async def diagnose(
        self, question: str, incident_id: str | None, *, conversation_key: int | None = None
    ) -> Diagnosis:
        """Run the core's runbook-guided diagnosis in a worker thread, keeping one
        conversation per channel/thread for follow-up questions."""
        # Not ``from devmesh_core.reason import ask``: once the submodule ``reason.ask`` is
        # imported, the package attribute ``ask`` is that module, not the function.
        from devmesh_core.reason.ask import ask
        from devmesh_core.reason.conversation import Conversation

        conversation = None
        if conversation_key is not None:
            conversation = self._conversations.get(conversation_key)
            if conversation is None:
                conversation = Conversation()
                self._conversations[conversation_key] = conversation
                while len(self._conversations) > MAX_CONVERSATIONS:
                    self._conversations.popitem(last=False)
            self._conversations.move_to_end(conversation_key)
        result: Diagnosis = await self.bot.call(
            ask, self.bot.core, question, incident_id=incident_id, conversation=conversation
        )
        return result

    async def on_thread_message(self, message: discord.Message) -> None:
        """A follow-up question in an incident thread that mentions the bot."""
        bot = self.bot
        incident_id = bot.state.incident_of_thread(message.channel.id)
        if incident_id is None or bot.user is None or bot.user not in message.mentions:
            return
        if not bot.gate.message_allowed(message, own_thread=True):
            return
        question = message.content.replace(f"<@{bot.user.id}>", "")
        question = question.replace(f"<@!{bot.user.id}>", "").strip()
        if not question:
            return
        from bots.discord.bot import user_message
        from bots.discord.commands import send_diagnosis

        try:
            diagnosis = await self.diagnose(
                question, incident_id, conversation_key=message.channel.id
            )
        except Exception as exc:
            await message.reply(user_message(exc))
            return
        await send_diagnosis(bot, message.reply, diagnosis, incident_id)
