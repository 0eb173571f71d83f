"""``TelegramNotifier``: the core's incident notifications, posted to the ping chats.

The first notification of an incident in a chat starts a thread; every later one (updated,
escalated, acknowledged, resolved…) is sent as a reply to that first message, so a chat
reads as one thread per incident and a reply to any of them is a question about that
incident. The first message ids are kept in the bot's :class:`MessageMap` (a JSON file
under the data dir).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from telegram.error import TelegramError

from bots.telegram.formatting import pack
from devmesh_core.log import get_logger
from devmesh_core.notify.base import Notifier

if TYPE_CHECKING:
    from bots.telegram.bot import TelegramBot

log = get_logger(__name__)


class TelegramNotifier(Notifier):
    """Sends each ``IncidentEvent`` to every configured ping chat, threaded per incident.

    A chat that fails (bot removed from a group, say) is logged and skipped so the other
    chats still get the news; the hub sees an exception only when every chat failed.
    """

    name = "telegram"

    def __init__(self, bot: TelegramBot) -> None:
        self.bot = bot

    async def send(self, event: Any) -> None:
        chats = self.bot.settings.ping_chat_ids
        incident_id = event.incident.id
        messages = pack(self.bot.fmt.incident_event(event))
        failures: list[str] = []
        for chat_id in chats:
            first = self.bot.messages.first_message(incident_id, chat_id)
            try:
                sent_first = None
                for text in messages:
                    sent = await self.bot.send_html(chat_id, text, reply_to=first)
                    sent_first = sent_first or sent
                if first is None and sent_first is not None:
                    self.bot.messages.remember_incident(incident_id, chat_id, sent_first)
            except TelegramError as exc:
                log.warning("telegram_ping_failed", chat_id=chat_id, error=str(exc))
                failures.append(f"{chat_id}: {exc}")
        if chats and len(failures) == len(chats):
            raise RuntimeError("telegram: every ping chat failed: " + "; ".join(failures))
