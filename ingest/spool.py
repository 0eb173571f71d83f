"""A bounded on-disk spool of batches waiting for the server, drained oldest first.

Why on disk: the cursor moves on once a batch is durably here, so a node can keep reading its
journal through a long server outage and a shipper crash without losing what it read.
Why bounded: a node's disk matters more than old logs. When a new batch would push the spool
over its cap, the *oldest* batches are deleted (and counted, with a warning): the newest logs
are the ones someone triaging an outage wants.

Layout: one file per batch, ``<seq:016d>-<events>.json``, holding exactly the JSON array body
that is POSTed, written with :func:`ingest.cursor.atomic_write` (a crash leaves either the
whole file or none). Sequence numbers only grow, so file order is shipping order.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devmesh_core.log import get_logger
from ingest.cursor import atomic_write, fsync_dir

log = get_logger(__name__)

_SUFFIX = ".json"


@dataclass(frozen=True, slots=True)
class Segment:
    """One spooled batch: its place in line, how many events it holds and its file."""

    seq: int
    count: int
    size: int
    path: Path


class Spool:
    """Append batches, peek the oldest ones, remove them once the server took them."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.dropped_events = 0
        self.dropped_batches = 0
        self._segments: deque[Segment] = deque()
        self._bytes = 0
        self._events = 0
        self._next_seq = 1
        self._scan()

    def _scan(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        found: list[Segment] = []
        for entry in os.scandir(self.directory):
            name = entry.name
            if name.startswith("."):
                # A temp file left by a crash mid-write: its batch was never acknowledged.
                os.unlink(entry.path)
                continue
            if not name.endswith(_SUFFIX):
                continue
            seq_text, _, count_text = name[: -len(_SUFFIX)].partition("-")
            if not (seq_text.isdigit() and count_text.isdigit()):
                log.warning("spool_unknown_file", path=entry.path)
                continue
            found.append(
                Segment(int(seq_text), int(count_text), entry.stat().st_size, Path(entry.path))
            )
        found.sort(key=lambda s: s.seq)
        self._segments = deque(found)
        self._bytes = sum(s.size for s in found)
        self._events = sum(s.count for s in found)
        self._next_seq = (found[-1].seq + 1) if found else 1
        if found:
            log.info("spool_found", batches=len(found), events=self.events, bytes=self._bytes)

    def __len__(self) -> int:
        return len(self._segments)

    def __bool__(self) -> bool:
        return bool(self._segments)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk in spooled batches."""
        return self._bytes

    @property
    def events(self) -> int:
        """Events waiting in the spool."""
        return self._events

    def append(self, body: bytes, count: int) -> Segment:
        """Durably add a batch (a JSON array body of ``count`` events) at the tail.

        Oldest batches are deleted first to stay under the cap. A single batch larger than
        the whole cap is still kept (alone): dropping the batch being written would lose the
        newest data, which is the opposite of the policy.
        """
        dropped_events = 0
        dropped_batches = 0
        while self._segments and self._bytes + len(body) > self.max_bytes:
            oldest = self._segments.popleft()
            self._bytes -= oldest.size
            self._events -= oldest.count
            _unlink(oldest.path)
            dropped_events += oldest.count
            dropped_batches += 1
        seq = self._next_seq
        self._next_seq += 1
        path = self.directory / f"{seq:016d}-{count}{_SUFFIX}"
        atomic_write(path, body)
        segment = Segment(seq, count, len(body), path)
        self._segments.append(segment)
        self._bytes += segment.size
        self._events += count
        if dropped_batches:
            self.dropped_events += dropped_events
            self.dropped_batches += dropped_batches
            log.warning(
                "spool_full_dropped_oldest",
                dropped_events=dropped_events,
                dropped_batches=dropped_batches,
                total_dropped_events=self.dropped_events,
                cap_bytes=self.max_bytes,
            )
        return segment

    def peek(self, max_events: int, max_bytes: int | None = None) -> list[Segment]:
        """The oldest batches, up to ``max_events`` events in all (always at least one)."""
        taken: list[Segment] = []
        events = 0
        size = 0
        for segment in self._segments:
            if taken and (
                events + segment.count > max_events
                or (max_bytes is not None and size + segment.size > max_bytes)
            ):
                break
            taken.append(segment)
            events += segment.count
            size += segment.size
        return taken

    def read_body(self, segments: Sequence[Segment]) -> bytes:
        """One JSON array holding the events of ``segments`` in order (joined bytewise)."""
        parts: list[bytes] = []
        for segment in segments:
            data = segment.path.read_bytes().strip()
            inner = data[1:-1].strip()
            if inner:
                parts.append(inner)
        return b"[" + b",".join(parts) + b"]"

    def remove(self, segments: Sequence[Segment]) -> None:
        """Forget batches the server acknowledged (they must be the oldest ones)."""
        gone = {s.seq for s in segments}
        while self._segments and self._segments[0].seq in gone:
            segment = self._segments.popleft()
            self._bytes -= segment.size
            self._events -= segment.count
            _unlink(segment.path)
        # Durability of the unlink is not needed for correctness: a batch that reappears after
        # a crash is re-sent and absorbed by the server's dedup. One fsync keeps it tidy.
        fsync_dir(self.directory)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
