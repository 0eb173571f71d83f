"""What the bot remembers between updates: the first message of each incident per chat
(so updates thread as replies), the messages showing a remediation request (so they can be
edited with the outcome), result pages behind next/previous buttons, and conversations.

Message ids live in a small JSON file under the data dir so threading survives a restart;
it keeps the ``limit`` most recently touched incidents and requests (older ones then start a
new thread, which is harmless). Pages and conversations are in memory only, bounded, and
lost on restart (a stale button answers "expired").
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Generic, TypeVar

from devmesh_core.log import get_logger

log = get_logger(__name__)

V = TypeVar("V")


class LRU(Generic[V]):
    """A bounded mapping that forgets the least recently used key."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class MessageMap:
    """``incident id → {chat id: first message id}`` and ``request id → [(chat, message)]``,
    persisted as JSON (``path=None`` keeps it in memory only)."""

    def __init__(self, path: Path | None, *, limit: int = 500) -> None:
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        self._incidents: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._requests: OrderedDict[str, list[list[int]]] = OrderedDict()
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._incidents.update(data.get("incidents", {}))
            self._requests.update(data.get("requests", {}))
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("telegram_message_map_unreadable", path=str(self.path), error=str(exc))

    def _save(self) -> None:
        if self.path is None:
            return
        body = json.dumps({"incidents": self._incidents, "requests": self._requests})
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("telegram_message_map_unwritable", path=str(self.path), error=str(exc))

    @staticmethod
    def _trim(items: OrderedDict[str, V], limit: int) -> None:
        while len(items) > limit:
            items.popitem(last=False)

    def first_message(self, incident_id: str, chat_id: int) -> int | None:
        """The message that announced ``incident_id`` in this chat, if remembered."""
        with self._lock:
            return self._incidents.get(incident_id, {}).get(str(chat_id))

    def remember_incident(self, incident_id: str, chat_id: int, message_id: int) -> None:
        with self._lock:
            chats = self._incidents.setdefault(incident_id, {})
            chats.setdefault(str(chat_id), message_id)
            self._incidents.move_to_end(incident_id)
            self._trim(self._incidents, self.limit)
            self._save()

    def incident_of(self, chat_id: int, message_id: int) -> str | None:
        """Which incident a bot message in this chat announced (for replies to it)."""
        with self._lock:
            for incident_id, chats in reversed(self._incidents.items()):
                if chats.get(str(chat_id)) == message_id:
                    return incident_id
            return None

    def request_messages(self, request_id: str) -> list[tuple[int, int]]:
        with self._lock:
            return [(c, m) for c, m in self._requests.get(request_id, [])]

    def remember_request(self, request_id: str, chat_id: int, message_id: int) -> None:
        with self._lock:
            places = self._requests.setdefault(request_id, [])
            if [chat_id, message_id] not in places:
                places.append([chat_id, message_id])
            self._requests.move_to_end(request_id)
            self._trim(self._requests, self.limit)
            self._save()


class Pages:
    """Result pages behind next/previous buttons, keyed by a short random id (the button's
    callback data carries only ``pg:<key>:<n>``, well under Telegram's 64 bytes)."""

    def __init__(self, limit: int = 256) -> None:
        self._store: LRU[tuple[int, list[str]]] = LRU(limit)

    def add(self, chat_id: int, pages: list[str]) -> str:
        key = secrets.token_urlsafe(6)
        self._store.put(key, (chat_id, pages))
        return key

    def get(self, key: str, chat_id: int) -> list[str] | None:
        """The pages of ``key`` if they were made for this chat and are still remembered."""
        found = self._store.get(key)
        if found is None or found[0] != chat_id:
            return None
        return found[1]
