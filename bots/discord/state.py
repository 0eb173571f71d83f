"""What the bot must remember across restarts: which thread belongs to which incident, and
which message shows which action request (so a result arriving after a restart still
updates the right message).

It is presentation state of this front end, not incident data, so it lives in a small JSON
file under the data directory rather than in the core's schema. Writes are atomic (temp file
and rename) so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from devmesh_core.log import get_logger

log = get_logger(__name__)


class BotState:
    """Incident → ping message/thread, action request → message. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = {"incidents": {}, "actions": {}}
        try:
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                for key in self._data:
                    if isinstance(loaded.get(key), dict):
                        self._data[key] = loaded[key]
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("discord_state_unreadable", path=str(path), error=str(exc))

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data))
        os.replace(tmp, self.path)

    # incidents -------------------------------------------------------------------------
    def incident(self, incident_id: str) -> dict[str, Any] | None:
        """``{"channel", "message", "thread", "diagnosis"}`` of an incident, if posted."""
        with self._lock:
            found = self._data["incidents"].get(incident_id)
            return dict(found) if found else None

    def set_incident(self, incident_id: str, **values: Any) -> None:
        with self._lock:
            self._data["incidents"].setdefault(incident_id, {}).update(values)
            self._save()

    def incident_of_thread(self, thread_id: int) -> str | None:
        """The incident whose thread this is."""
        with self._lock:
            for incident_id, entry in self._data["incidents"].items():
                if entry.get("thread") == thread_id:
                    return incident_id
        return None

    # actions ---------------------------------------------------------------------------
    def action_message(self, request_id: str) -> tuple[int, int] | None:
        with self._lock:
            found = self._data["actions"].get(request_id)
            return (int(found[0]), int(found[1])) if found else None

    def set_action_message(self, request_id: str, channel_id: int, message_id: int) -> None:
        with self._lock:
            self._data["actions"][request_id] = [channel_id, message_id]
            self._save()
