"""The committed journald cursor, written atomically so a crash never leaves half a file.

The cursor names the last journal entry the shipper is done with: acknowledged by the
server, durably in the spool, or dropped by the filter. It is the only state needed to
resume, so it is written the careful way: temp file, fsync, rename over the old one, fsync
the directory (without the last step a power cut can forget the rename).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from devmesh_core.log import get_logger

log = get_logger(__name__)


def set_aside(path: Path, event: str, exc: Exception) -> Path:
    """Move an unreadable state file to ``<name>.bad`` and log ``event``: atomic writes make
    a damaged file unexpected, so it is kept for a person to look at while the reader starts
    afresh."""
    bad = path.with_name(path.name + ".bad")
    os.replace(path, bad)
    log.error(event, path=str(path), moved_to=str(bad), error=str(exc))
    return bad


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new bytes, never a mix.

    The data is fsynced before the rename and the directory after it, so once this returns
    the new content survives a crash or power cut.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename or unlink in it is durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CursorStore:
    """Load and commit the journald cursor kept in one small JSON file.

    The file also records which journal source the cursor belongs to, so pointing the same
    state directory at another source is noticed (and logged) instead of silently skipping.
    """

    def __init__(self, path: Path, source: str = "") -> None:
        self.path = path
        self.source = source
        self._last: str | None = None
        self.commits = 0

    def load(self) -> str | None:
        """The committed cursor, or None on a first start (or an unreadable file, logged)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = orjson.loads(raw)
            cursor = data["cursor"]
            if not isinstance(cursor, str) or not cursor:
                raise ValueError("cursor is not a non-empty string")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            set_aside(self.path, "cursor_file_unreadable", exc)
            return None
        if self.source and data.get("source") not in (None, self.source):
            log.warning(
                "cursor_from_other_source",
                path=str(self.path),
                cursor_source=data.get("source"),
                source=self.source,
                note="resuming from it anyway; journalctl seeks to the nearest entry",
            )
        self._last = cursor
        return cursor

    @property
    def last(self) -> str | None:
        """The last cursor loaded or committed by this process."""
        return self._last

    def commit(self, cursor: str) -> None:
        """Durably record ``cursor``; a no-op when it is already the committed one."""
        if cursor == self._last:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps({"cursor": cursor, "source": self.source, "committed_at": time.time()})
        atomic_write(self.path, body)
        self._last = cursor
        self.commits += 1

    def discard(self) -> None:
        """Set a rejected cursor aside (journalctl refused it) so the next start is clean."""
        if self.path.exists():
            bad = self.path.with_name(self.path.name + ".bad")
            os.replace(self.path, bad)
            fsync_dir(self.path.parent)
        self._last = None
