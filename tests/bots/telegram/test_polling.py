"""The bot end to end over long polling: the real Application, the real Updater polling the
fake Bot API, the command menu published with setMyCommands, and a command answered."""

from __future__ import annotations

import asyncio
import contextlib

from bots.telegram.app import run_telegram
from bots.telegram.bot import COMMANDS
from devmesh_core.runtime import Core
from tests.bots.telegram.conftest import CHAT, OPERATOR, STRANGER
from tests.bots.telegram.fake_telegram import FakeTelegram, message_update


async def test_polling_answers_commands_and_registers_the_menu(
    core: Core, fake: FakeTelegram
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run_telegram(core, stop=stop))
    try:
        calls = await fake.wait_for("setMyCommands")
        registered = calls[0].json("commands")
        assert [c["command"] for c in registered] == [c for c, _ in COMMANDS]
        for name in (
            "status",
            "incidents",
            "incident",
            "logs",
            "search",
            "ask",
            "runbook",
            "fix",
            "ack",
            "resolve",
            "help",
        ):
            assert name in {c["command"] for c in registered}
        assert all(0 < len(c["description"]) <= 256 for c in registered)
        await fake.wait_for("deleteWebhook")  # polling mode clears any webhook first

        fake.push_update(message_update("/help", chat_id=CHAT, user_id=OPERATOR))
        sent = await fake.wait_for("sendMessage")
        assert sent[0].params["chat_id"] == str(CHAT)
        assert sent[0].params["parse_mode"] == "HTML"
        assert "/incident ID" in sent[0].params["text"]

        # A stranger is refused politely; the update is consumed, never redelivered.
        before = len(fake.calls)
        fake.push_update(message_update("/status", chat_id=9001, user_id=STRANGER))
        refusal = await fake.wait_for("sendMessage", after=before)
        assert refusal[0].params["chat_id"] == "9001"
        assert "only answers the chats and people" in refusal[0].params["text"]
        await asyncio.sleep(0.5)
        assert len([c for c in fake.of("sendMessage") if c.params["chat_id"] == "9001"]) == 1
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
    assert task.done() and task.exception() is None
