"""What the shipper's input readers (journald, file tail) have in common.

Both readers are a background thread that turns a source into :class:`EncodedChunk` s on a
bounded queue shared with the sender, and a :class:`ReaderDone` marker when they stop. The
mechanics around that — a put that gives up when the reader is stopped, start/stop/join,
the timing counters the shipper and the bench read — live here once, so the two readers
cannot drift apart in how they block, unblock or account for time.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

TokenT = TypeVar("TokenT")
ItemT = TypeVar("ItemT")

PUT_POLL_SECONDS = 0.2
"""How often a put on a full queue looks whether the reader was stopped meanwhile."""


@dataclass(frozen=True, slots=True)
class ReaderDone:
    """The reader stopped: the source is exhausted (no follow) or it failed for good."""

    error: str | None = None
    cursor_rejected: bool = False


@dataclass(slots=True)
class EncodedChunk(Generic[TokenT]):
    """Mapped events in source order, plus how far the reader got (``TokenT``: its position).

    The events are one comma-joined run of JSON objects (``body``); event ``i`` is
    ``body[offsets[i]:offsets[i + 1] - 1]``, so a batch boundary can fall anywhere without
    re-encoding. (One ``bytes`` per event would cost 4 KiB each: orjson over-allocates its
    output buffer, which is most of a 60 MB budget once a few thousand events are queued.)

    ``cursors`` holds one position per event; ``tail_cursor`` is the position after the last
    entry read, filtered or not: once every event of the chunk is acknowledged, the shipper
    is done with everything up to it.
    """

    body: bytes = b""
    offsets: list[int] = field(default_factory=lambda: [0])
    cursors: list[TokenT] = field(default_factory=list)
    tail_cursor: TokenT | None = None
    lines: int = 0
    filtered: int = 0

    @property
    def count(self) -> int:
        """Events in the chunk."""
        return len(self.cursors)

    def span(self, start: int, stop: int) -> bytes:
        """Events ``start`` to ``stop - 1`` as a comma-joined run (no brackets)."""
        return self.body[self.offsets[start] : self.offsets[stop] - 1]


class ReaderThread(Generic[ItemT]):
    """A daemon thread running :meth:`_run` that hands ``ItemT`` s to the sender via ``out``.

    The queue is bounded, so a slow server slows the reader down instead of filling memory;
    :meth:`stop` empties the queue so that a reader blocked in :meth:`_put` notices the stop.
    Counters (``lines`` and the ``*_seconds`` timings) are logged by the shipper at exit and
    read by the bench; ``put_seconds`` is the time spent waiting for room in the queue.
    """

    def __init__(self, out: queue.Queue[ItemT], *, name: str) -> None:
        self.out = out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.lines = 0
        self.read_seconds = 0.0
        self.parse_seconds = 0.0
        self.put_seconds = 0.0

    def start(self) -> None:
        """Start reading in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (safe to call more than once) and unblock a put on a full queue."""
        self._stop.set()
        self._interrupt()
        try:
            while True:
                self.out.get_nowait()
        except queue.Empty:
            pass

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        self._thread.join(timeout)

    def _interrupt(self) -> None:
        """Wake whatever the thread may be blocked on besides the queue (no-op by default)."""

    def _run(self) -> None:
        """The thread's body: read the source until stopped or exhausted."""
        raise NotImplementedError

    def _put(self, item: ItemT) -> bool:
        """Queue ``item``, waiting for room; False when the reader was stopped first."""
        started = time.perf_counter()
        try:
            while not self._stop.is_set():
                try:
                    self.out.put(item, timeout=PUT_POLL_SECONDS)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            self.put_seconds += time.perf_counter() - started
