"""A fake Discord: REST API and gateway on 127.0.0.1 for the real discord.py client.

discord.py talks HTTP to ``Route.BASE`` and a websocket to
``DiscordWebSocket.DEFAULT_GATEWAY``; a test points both here (see
``../shared/docs/bot-testing.md``) and the bot under test is the real bot over the real
library. The fake records every REST request so tests assert on what the library sent
(command registrations, interaction callbacks, messages, threads), and tests push gateway
dispatches (``INTERACTION_CREATE``, ``MESSAGE_CREATE``) as Discord would.

Only what the bot uses is served; an unknown route answers 404 and is recorded, so a test
sees it rather than hanging.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import BodyPartReader, WSMsgType, web

APP_ID = 900_000_000_000_000_001
BOT_ID = 900_000_000_000_000_002
GUILD_ID = 900_000_000_000_000_010
CHANNEL_ID = 900_000_000_000_000_020  # the ping channel
OTHER_CHANNEL_ID = 900_000_000_000_000_021  # a channel the bot must not answer in
APPROVER_ROLE_ID = 900_000_000_000_000_030
OWNER_ID = 900_000_000_000_000_040

_HOOK_MESSAGE = r"/webhooks/\d+/([^/]+)/messages/(@original|\d+)"
_ids = itertools.count(910_000_000_000_000_000)


def snowflake() -> int:
    """A fresh, increasing id."""
    return next(_ids)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "bot": bot,
    }


def text_channel(channel_id: int, name: str) -> dict[str, Any]:
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(GUILD_ID),
        "name": name,
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
    }


@dataclass
class Recorded:
    """One REST request the client made."""

    method: str
    path: str
    json: Any
    files: dict[str, bytes] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


class FakeDiscord:
    """REST + gateway. ``start()`` returns the port; ``dispatch()`` pushes an event."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {
            CHANNEL_ID: text_channel(CHANNEL_ID, "incidents"),
            OTHER_CHANNEL_ID: text_channel(OTHER_CHANNEL_ID, "random"),
        }
        self.identified = asyncio.Event()
        self._changed = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Awaitable[Any]]]] = [
            ("GET", re.compile(r"/users/@me"), self._me),
            ("GET", re.compile(r"/oauth2/applications/@me"), self._app_info),
            ("PUT", re.compile(r"/applications/\d+(/guilds/\d+)?/commands"), self._commands),
            ("POST", re.compile(r"/interactions/(\d+)/([^/]+)/callback"), self._callback),
            ("POST", re.compile(r"/webhooks/\d+/([^/]+)"), self._followup),
            (
                "PATCH",
                re.compile(r"/webhooks/\d+/([^/]+)/messages/(@original|\d+)"),
                self._edit_hook,
            ),
            ("GET", re.compile(_HOOK_MESSAGE), self._get_hook),
            ("POST", re.compile(r"/channels/(\d+)/typing"), self._typing),
            ("POST", re.compile(r"/channels/(\d+)/messages/(\d+)/threads"), self._thread),
            ("POST", re.compile(r"/channels/(\d+)/messages"), self._send),
            ("PATCH", re.compile(r"/channels/(\d+)/messages/(\d+)"), self._edit),
            ("GET", re.compile(r"/channels/(\d+)/messages/(\d+)"), self._get_message),
            ("GET", re.compile(r"/channels/(\d+)"), self._get_channel),
        ]
        self._hook_messages: dict[str, int] = {}  # interaction token -> original message id

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> int:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = int(server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ------------------------------------------------------------------ assertions
    def find(self, method: str, pattern: str) -> list[Recorded]:
        """Requests with this method whose path matches ``pattern`` (a regex)."""
        rx = re.compile(pattern)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]

    async def wait_for(
        self, method: str, pattern: str, *, count: int = 1, wait: float = 10.0
    ) -> list[Recorded]:
        """Wait until at least ``count`` matching requests were made; return them all."""

        async def enough() -> list[Recorded]:
            async with self._changed:
                while len(found := self.find(method, pattern)) < count:
                    await self._changed.wait()
                return found

        try:
            return await asyncio.wait_for(enough(), wait)
        except TimeoutError:
            seen = [f"{r.method} {r.path}" for r in self.requests]
            raise AssertionError(
                f"no {count}x {method} {pattern} within {wait}s; saw {seen}"
            ) from None

    async def _record(self, item: Recorded) -> None:
        async with self._changed:
            self.requests.append(item)
            self._changed.notify_all()

    # ------------------------------------------------------------------ gateway
    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Push a dispatch (op 0) to every connected client."""
        self._seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self._seq, "d": data})
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.send_str(frame)

    def guild_payload(self) -> dict[str, Any]:
        return {
            "id": str(GUILD_ID),
            "name": "homelab",
            "icon": None,
            "owner_id": str(OWNER_ID),
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "features": [],
            "roles": [
                {
                    "id": str(GUILD_ID),
                    "name": "@everyone",
                    "permissions": "0",
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                },
                {
                    "id": str(APPROVER_ROLE_ID),
                    "name": "oncall",
                    "permissions": "0",
                    "position": 1,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                },
            ],
            "emojis": [],
            "stickers": [],
            "channels": list(self.channels.values()),
            "threads": [],
            "members": [],
            "voice_states": [],
            "presences": [],
            "member_count": 3,
            "large": False,
            "unavailable": False,
            "joined_at": now_iso(),
        }

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 30_000}}))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                op = payload.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:
                    await self._ready(ws)
        finally:
            self._sockets.remove(ws)
        return ws

    async def _ready(self, ws: web.WebSocketResponse) -> None:
        self._seq += 1
        ready = {
            "v": 10,
            "user": user(BOT_ID, "devmesh", bot=True),
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APP_ID), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": ready}))
        self._seq += 1
        frame = {"op": 0, "t": "GUILD_CREATE", "s": self._seq, "d": self.guild_payload()}
        await ws.send_str(json.dumps(frame))
        self.identified.set()

    # ------------------------------------------------------------------ REST
    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body: Any = None
        files: dict[str, bytes] = {}
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                else:
                    files[part.filename or part.name or "file"] = await part.read()
        elif request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        await self._record(Recorded(request.method, path, body, files, dict(request.query)))
        for method, rx, handler in self._routes:
            found = rx.fullmatch(path)
            if method == request.method and found:
                result = await handler(body, *found.groups(), files=files)
                if result is None:
                    return web.Response(status=204)
                # Exactly application/json: discord.py reads anything else as text.
                return web.Response(
                    body=json.dumps(result).encode(), headers={"Content-Type": "application/json"}
                )
        return web.Response(
            status=404,
            body=json.dumps({"message": "Unknown route", "code": 0}).encode(),
            headers={"Content-Type": "application/json"},
        )

    async def _me(self, _body: Any, **_: Any) -> dict[str, Any]:
        return user(BOT_ID, "devmesh", bot=True)

    async def _app_info(self, _body: Any, **_: Any) -> dict[str, Any]:
        return {
            "id": str(APP_ID),
            "name": "devmesh",
            "description": "",
            "icon": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "verify_key": "00",
            "owner": user(OWNER_ID, "owner"),
            "flags": 0,
        }

    async def _commands(self, body: Any, *_groups: Any, **_: Any) -> list[dict[str, Any]]:
        out = []
        for command in body or []:
            out.append(
                {
                    **command,
                    "id": str(snowflake()),
                    "application_id": str(APP_ID),
                    "version": "1",
                    "default_member_permissions": None,
                }
            )
        return out

    def _message(self, channel_id: int, body: Any, files: dict[str, bytes]) -> dict[str, Any]:
        body = body or {}
        message_id = snowflake()
        message: dict[str, Any] = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "guild_id": str(GUILD_ID),
            "author": user(BOT_ID, "devmesh", bot=True),
            "content": body.get("content") or "",
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [
                {
                    "id": str(snowflake()),
                    "filename": name,
                    "size": len(data),
                    "url": f"http://127.0.0.1:{self.port}/files/{name}",
                    "proxy_url": f"http://127.0.0.1:{self.port}/files/{name}",
                }
                for name, data in files.items()
            ],
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "pinned": False,
            "type": 0,
            "flags": body.get("flags") or 0,
        }
        self.messages[message_id] = message
        return message

    def _update(self, message_id: int, body: Any) -> dict[str, Any]:
        message = self.messages.get(message_id)
        if message is None:
            message = self._message(CHANNEL_ID, {}, {})
            message["id"] = str(message_id)
            self.messages[message_id] = message
        for key in ("content", "embeds", "components", "flags"):
            if body and key in body:
                message[key] = body[key]
        message["edited_timestamp"] = now_iso()
        return message

    async def _callback(
        self, body: Any, interaction_id: str, token: str, **kw: Any
    ) -> dict[str, Any]:
        kind = body["type"]
        data = body.get("data") or {}
        result: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": 2,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool((data.get("flags") or 0) & 64),
            },
            "resource": {"type": kind},
        }
        if kind in (4, 5):
            message = self._message(CHANNEL_ID, data, kw.get("files") or {})
            self._hook_messages[token] = int(message["id"])
            result["interaction"]["response_message_id"] = message["id"]
            result["resource"]["message"] = message
        elif kind == 7:
            original = self._hook_messages.get(token)
            if original is not None:
                result["resource"]["message"] = self._update(original, data)
        return result

    async def _followup(self, body: Any, token: str, **kw: Any) -> dict[str, Any]:
        message = self._message(CHANNEL_ID, body, kw.get("files") or {})
        return message

    async def _edit_hook(self, body: Any, token: str, which: str, **_: Any) -> dict[str, Any]:
        message_id = self._hook_messages.get(token) if which == "@original" else int(which)
        if message_id is None:
            message_id = snowflake()
            self._hook_messages[token] = message_id
        return self._update(message_id, body)

    async def _get_hook(self, _body: Any, token: str, which: str, **_: Any) -> dict[str, Any]:
        message_id = self._hook_messages.get(token) if which == "@original" else int(which)
        return self.messages[message_id or 0]

    async def _send(self, body: Any, channel_id: str, **kw: Any) -> dict[str, Any]:
        return self._message(int(channel_id), body, kw.get("files") or {})

    async def _edit(self, body: Any, _channel_id: str, message_id: str, **_: Any) -> dict[str, Any]:
        return self._update(int(message_id), body)

    async def _get_message(self, _body: Any, _cid: str, message_id: str, **_: Any) -> Any:
        return self.messages.get(int(message_id))

    async def _get_channel(self, _body: Any, channel_id: str, **_: Any) -> Any:
        return self.channels.get(int(channel_id))

    async def _typing(self, _body: Any, _channel_id: str, **_: Any) -> None:
        return None

    async def _thread(
        self, body: Any, channel_id: str, message_id: str, **_: Any
    ) -> dict[str, Any]:
        thread_id = snowflake()
        thread = {
            "id": str(thread_id),
            "type": 11,
            "guild_id": str(GUILD_ID),
            "parent_id": channel_id,
            "owner_id": str(BOT_ID),
            "name": body["name"],
            "last_message_id": None,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": now_iso(),
                "locked": False,
            },
        }
        self.channels[thread_id] = thread
        return thread

    # ------------------------------------------------------------------ payload builders
    def member(self, user_id: int, name: str, roles: tuple[int, ...] = ()) -> dict[str, Any]:
        return {
            "user": user(user_id, name),
            "roles": [str(r) for r in roles],
            "joined_at": now_iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": "2147483647",
        }

    def _interaction_base(
        self,
        kind: int,
        *,
        user_id: int,
        name: str,
        roles: tuple[int, ...],
        channel_id: int,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        interaction_id = snowflake()
        return {
            "id": str(interaction_id),
            "application_id": str(APP_ID),
            "type": kind,
            "token": f"tok-{interaction_id}",
            "version": 1,
            "guild_id": str(GUILD_ID),
            "channel_id": str(channel_id),
            "channel": self.channels.get(channel_id) or text_channel(channel_id, "elsewhere"),
            "member": self.member(user_id, name, roles),
            "data": data,
            "app_permissions": "2147483647",
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(GUILD_ID)},
            "context": 0,
            "attachment_size_limit": 8 * 1024 * 1024,
        }

    def command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: int = 1001,
        user_name: str = "alice",
        roles: tuple[int, ...] = (),
        channel_id: int = CHANNEL_ID,
        focused: str | None = None,
    ) -> dict[str, Any]:
        """An application command interaction (type 2), or its autocomplete (type 4) when
        ``focused`` names the option being typed."""
        opts = []
        for key, value in (options or {}).items():
            kind = 4 if isinstance(value, int) and not isinstance(value, bool) else 3
            option: dict[str, Any] = {"name": key, "type": kind, "value": value}
            if key == focused:
                option["focused"] = True
            opts.append(option)
        data = {"id": str(snowflake()), "name": name, "type": 1, "options": opts}
        return self._interaction_base(
            4 if focused else 2,
            user_id=user_id,
            name=user_name,
            roles=roles,
            channel_id=channel_id,
            data=data,
        )

    def click(
        self,
        message_id: int,
        custom_id: str,
        *,
        user_id: int = 1001,
        user_name: str = "alice",
        roles: tuple[int, ...] = (),
        channel_id: int = CHANNEL_ID,
    ) -> dict[str, Any]:
        """A button press (type 3) on a message the fake has stored."""
        message = dict(self.messages[message_id])
        return self._interaction_base(
            3,
            user_id=user_id,
            name=user_name,
            roles=roles,
            channel_id=channel_id,
            data={"custom_id": custom_id, "component_type": 2},
        ) | {"message": message}

    def user_message(
        self,
        channel_id: int,
        content: str,
        *,
        user_id: int = 1001,
        user_name: str = "alice",
        mention_bot: bool = True,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE payload from a person (optionally mentioning the bot)."""
        return {
            "id": str(snowflake()),
            "channel_id": str(channel_id),
            "guild_id": str(GUILD_ID),
            "author": user(user_id, user_name),
            "member": {k: v for k, v in self.member(user_id, user_name).items() if k != "user"},
            "content": content,
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [user(BOT_ID, "devmesh", bot=True)] if mention_bot else [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
