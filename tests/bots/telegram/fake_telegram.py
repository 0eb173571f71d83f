"""A fake Telegram Bot API on 127.0.0.1 (aiohttp) for driving the real python-telegram-bot.

It serves ``POST /bot{token}/{method}`` with form-encoded (or multipart) parameters, as the
library sends them (nested objects arrive as JSON strings, numbers as strings), records every
call for the test to assert on, and answers what a triage bot needs: ``getMe``,
``deleteWebhook``, ``getUpdates`` (honouring ``offset`` and long-polling briefly),
``sendMessage``, ``editMessageText``, ``answerCallbackQuery``, ``setMyCommands``,
``sendDocument`` and ``sendChatAction``. See ../shared/docs/bot-testing.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = {
    "id": 999,
    "is_bot": True,
    "first_name": "DevMesh",
    "username": "devmesh_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


@dataclass
class Call:
    """One Bot API request the library made."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)

    def json(self, name: str) -> Any:
        """A nested parameter (``reply_markup``, ``commands``…), decoded from its JSON form."""
        return json.loads(self.params[name])


class FakeTelegram:
    """The fake server. ``await start()``, point the bot at :attr:`base_url`, push updates
    with :meth:`push_update` or the helpers, and read :attr:`calls`."""

    def __init__(self, token: str = "999:TEST") -> None:
        self.token = token
        self.calls: list[Call] = []
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(100)
        self._new_update = asyncio.Event()
        self._new_call = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Methods answered with an API error (HTTP 400), by name; and chats every call to
        # which fails (a group the bot was removed from), by chat id.
        self.fail: dict[str, str] = {}
        self.fail_chats: dict[int, str] = {}

    @property
    def base_url(self) -> str:
        """What ``ApplicationBuilder.base_url`` takes (the library appends token/method)."""
        return f"http://127.0.0.1:{self.port}/bot"

    async def start(self) -> None:
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_post("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # Feeding updates -----------------------------------------------------------------
    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update for ``getUpdates``; return its ``update_id``."""
        update_id = next(self._update_ids)
        self._updates.append({"update_id": update_id, **update})
        self._new_update.set()
        return update_id

    def next_update_id(self) -> int:
        return next(self._update_ids)

    # Asserting -----------------------------------------------------------------------
    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(
        self, method: str, count: int = 1, *, after: int = 0, within: float = 10.0
    ) -> list[Call]:
        """Wait until at least ``count`` calls of ``method`` arrived after call index
        ``after``; return them."""
        deadline = time.monotonic() + within
        while True:
            found = [c for c in self.calls[after:] if c.method == method]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [c.method for c in self.calls[after:]]
                raise AssertionError(f"no {count}x {method} within {within}s; saw {seen}")
            self._new_call.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_call.wait(), min(remaining, 0.5))

    async def until(self, check: Callable[[], object], *, within: float = 10.0) -> None:
        """Wait until ``check()`` is true (state the bot records after a response)."""
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {within}s")
            await asyncio.sleep(0.02)

    # Serving -------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _reply({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)
        method = request.match_info["method"]
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            params = await request.json()
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = value.file.read()
                else:
                    params[key] = value
        if method != "getUpdates":
            self.calls.append(Call(method, params, files))
            self._new_call.set()
        chat = params.get("chat_id")
        if chat is not None and int(chat) in self.fail_chats:
            description = self.fail_chats[int(chat)]
            return _reply({"ok": False, "error_code": 400, "description": description}, 400)
        if method in self.fail:
            return _reply({"ok": False, "error_code": 400, "description": self.fail[method]}, 400)
        result = await self._answer(method, params, files)
        return _reply({"ok": True, "result": result})

    async def _answer(self, method: str, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if method == "getMe":
            return BOT_USER
        if method == "getUpdates":
            return await self._get_updates(params)
        if method in ("sendMessage", "editMessageText"):
            chat_id = int(params.get("chat_id", 0))
            if method == "editMessageText":
                message_id = int(params["message_id"])
            else:
                message_id = next(self._message_ids)
            message: dict[str, Any] = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                "from": BOT_USER,
                "text": params.get("text", ""),
            }
            if "reply_to_message_id" in params or "reply_parameters" in params:
                message["reply_to_message"] = {
                    "message_id": _reply_target(params),
                    "date": int(time.time()),
                    "chat": message["chat"],
                }
            return message
        if method == "sendDocument":
            chat_id = int(params.get("chat_id", 0))
            return {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "document": {"file_id": "f1", "file_unique_id": "u1", "file_name": "answer.txt"},
            }
        # setMyCommands, deleteWebhook, setWebhook, answerCallbackQuery, sendChatAction…
        return True

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates:
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), 0.3)
            except TimeoutError:
                return []
        return list(self._updates)


def _reply_target(params: dict[str, Any]) -> int:
    if "reply_to_message_id" in params:
        return int(params["reply_to_message_id"])
    return int(json.loads(params["reply_parameters"])["message_id"])


def _reply(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body), status=status, content_type="application/json")


# Update builders ---------------------------------------------------------------------
_message_counter = itertools.count(1)


def user(user_id: int, name: str = "Ann") -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": name}


def message_update(
    text: str,
    *,
    chat_id: int,
    user_id: int,
    chat_type: str = "private",
    reply_to: int | None = None,
) -> dict[str, Any]:
    """A ``message`` update; a leading ``/cmd`` gets its ``bot_command`` entity."""
    message: dict[str, Any] = {
        "message_id": next(_message_counter),
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": chat_type},
        "from": user(user_id),
        "text": text,
    }
    if text.startswith("/"):
        command = text.split()[0]
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    if reply_to is not None:
        message["reply_to_message"] = {
            "message_id": reply_to,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": chat_type},
            "from": BOT_USER,
            "text": "(earlier bot message)",
        }
    return {"message": message}


def callback_update(
    data: str, *, chat_id: int, user_id: int, message_id: int, text: str = "proposal"
) -> dict[str, Any]:
    """A ``callback_query`` update for a button under bot message ``message_id``."""
    return {
        "callback_query": {
            "id": f"cq{next(_message_counter)}",
            "from": user(user_id),
            "chat_instance": "ci1",
            "data": data,
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                "from": BOT_USER,
                "text": text,
            },
        }
    }
