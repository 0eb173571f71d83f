"""File tail input: plain log files (globs) into the shipper's batching/ack/spool pipeline.

Exactly once, as for journald (see :mod:`ingest.shipper`)
---------------------------------------------------------
The state to resume from is one checkpoint per file, keyed by ``(device, inode)``: the offset
of the first byte not yet acknowledged, a generation number (bumped when the file is
truncated in place) and the file's first bytes (to tell a replaced file or a reused inode
from the one the checkpoint was about). The reader hands the shipper, with every event, a
:class:`TailToken` naming the positions of *all* files as of just after that event; the
shipper commits the token of the last acknowledged event (:class:`FileCheckpoints`, written
with :func:`ingest.cursor.atomic_write`) only after the server or the spool has the batch.
Acknowledgement is in stream order, so such a token never runs ahead of what is safe.

Re-sent events are absorbed by the server's fingerprint dedup (host, service, timestamp,
message, source id) only if they are byte-for-byte the same event. Hence:

- ``source_id`` is ``"{dev}:{ino}:{gen}:{offset}"`` — the event's first byte in this file
  generation (the generation keeps a copytruncated file's new lines apart from the old ones
  at the same offsets);
- an event without a timestamp of its own gets its *read time*, which would differ on the
  second reading. So read times are recorded before the events that use them leave the
  reader (:class:`StampLog`, one small atomic write per read pass that needs a new stamp,
  none for files whose lines carry timestamps): "bytes ``[start, end)`` of this file
  generation were first seen at ``t``". A second reading finds the stamp and gives the event
  the same time.

What a second reading can still do differently (documented limits): join lines into
multi-line events differently when the first reading cut an event by the flush timeout, or
ship a completed line that the first reading shipped as a partial last line. Both need a
crash inside the acknowledged-but-uncommitted window (``cursor_commit_seconds``) right at such
a boundary.

Rotation
--------
- rename (logrotate's default): the open descriptor keeps reading the old inode; the glob
  finds the new file at the path and reads it from offset 0. The old file, no longer at any
  matching path (or deleted), is read to its end, kept open ``rotate_wait`` seconds after its
  last growth (a writer may append before it reopens its log), then finished: its last
  partial line and multi-line event are shipped and its checkpoint forgotten. A file rotated
  while the shipper was down is looked up by inode next to its old path (``app.log.1``) and
  finished the same way.
- copytruncate: the file shrinks below what was seen (or its first bytes change): pending
  data of the old content is shipped, the generation is bumped and reading restarts at 0.

Bounds: a line longer than ``max_line_bytes`` is cut there with a marker and the rest of it is
skipped; a multi-line event stops at ``max_lines``/``max_bytes`` (the next line starts a new
event, marked ``meta.continued``); a file that cannot be opened or read is logged and retried
at the next poll, never fatal.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob
import os
import queue
import re
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import orjson

from devmesh_core.log import get_logger
from ingest.config import FileInput, TailConfig
from ingest.cursor import atomic_write, set_aside
from ingest.filters import ReloadableFilter
from ingest.reader import EncodedChunk, ReaderDone, ReaderThread
from ingest.tail_detect import IsoFormatter, TimestampParser, detect_level

log = get_logger(__name__)

SOURCE = "file"
INPUT_NAME = "files"
HEAD_BYTES = 256
READ_BYTES = 32 * 1024
"""One read pass, one chunk. 32 KiB of plain log is ~300-400 events, ~150 KB encoded; the
shipper's queue holds 16 chunks, so this bounds what waits in memory when the server is the
bottleneck (128 KiB reads put the shipper at 56 MB RSS there, near the node's 60 MB budget)."""
CUT_MARKER = " …[line cut: longer than {limit} bytes]"
MAX_NAME_CHARS = 255

Key = tuple[int, int]

# DevMesh level → syslog priority, for the noise filter's ``min_priority``.
LEVEL_PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


def key_text(key: Key) -> str:
    """``"dev:ino"``: a checkpoint key as it appears in the state files."""
    return f"{key[0]}:{key[1]}"


# -- checkpoints --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FilePos:
    """Where one file stands: next byte to ship in generation ``gen``, its path and head."""

    dev: int
    ino: int
    gen: int
    offset: int
    path: str
    head: bytes = b""

    @property
    def key(self) -> Key:
        """The file's identity."""
        return (self.dev, self.ino)

    def to_json(self) -> dict[str, Any]:
        """JSON form; the head is cut to the bytes before ``offset`` (what was checked)."""
        return {
            "dev": self.dev,
            "ino": self.ino,
            "gen": self.gen,
            "offset": self.offset,
            "path": self.path,
            "head": self.head[: min(len(self.head), self.offset)].hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FilePos:
        """Inverse of :meth:`to_json` (raises KeyError/ValueError/TypeError when malformed)."""
        return cls(
            int(data["dev"]),
            int(data["ino"]),
            int(data["gen"]),
            int(data["offset"]),
            str(data["path"]),
            bytes.fromhex(str(data.get("head", ""))),
        )


class TailToken:
    """The positions of every file just after one event (or one read pass).

    ``base`` is shared by all events of a chunk (one dict copy per chunk, not per event);
    ``key``/``offset`` say how this event moves its own file on. ``key`` None: ``base`` is
    the whole state (e.g. after a file was forgotten).
    """

    __slots__ = ("base", "key", "offset")

    def __init__(self, base: Mapping[Key, FilePos], key: Key | None, offset: int) -> None:
        self.base = base
        self.key = key
        self.offset = offset

    def positions(self) -> dict[Key, FilePos]:
        """The full state this token stands for."""
        out = dict(self.base)
        if self.key is not None:
            out[self.key] = replace(out[self.key], offset=self.offset)
        return out

    def __repr__(self) -> str:
        return f"TailToken(files={len(self.base)}, key={self.key}, offset={self.offset})"


class FileCheckpoints:
    """Load and commit the file tail's checkpoints (one JSON file, atomic writes).

    ``committed`` is what the last commit wrote: the reader thread reads it (a reference
    swap, no lock needed) to prune read-time stamps that can no longer be needed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commits = 0
        self.committed: Mapping[Key, FilePos] = {}

    def load(self) -> dict[Key, FilePos] | None:
        """The committed positions; None on a first start (no file). A damaged file is set
        aside as ``.bad`` (logged) and the files are read as on a first start."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = orjson.loads(raw)
            positions = {pos.key: pos for pos in map(FilePos.from_json, data["files"])}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            set_aside(self.path, "file_checkpoints_unreadable", exc)
            return None
        self.committed = positions
        return positions

    @property
    def last(self) -> dict[str, int]:
        """``{"dev:ino": offset}`` of the last commit (for heartbeats and logs)."""
        return {key_text(k): p.offset for k, p in self.committed.items()}

    def commit(self, token: TailToken) -> None:
        """Durably record the positions ``token`` stands for (no-op when unchanged)."""
        positions = token.positions()
        if positions == self.committed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps(
            {"files": [p.to_json() for p in positions.values()], "committed_at": time.time()}
        )
        atomic_write(self.path, body)
        self.committed = positions
        self.commits += 1


class StampLog:
    """Read times of file bytes, recorded before events using them are shipped.

    A stamp ``[gen, start, end, micros]`` says: the bytes ``[start, end)`` of that file
    generation existed at ``micros`` (``end`` is the file's size then). An event starting in
    that range without a timestamp of its own gets ``micros``, on every reading. Stamps wholly
    before the committed checkpoint are pruned at each write.
    """

    def __init__(self, path: Path, checkpoints: FileCheckpoints) -> None:
        self.path = path
        self.checkpoints = checkpoints
        self.writes = 0
        self._stamps: dict[Key, list[tuple[int, int, int, int]]] = {}
        try:
            data = orjson.loads(path.read_bytes())
            for name, items in data.items():
                dev, ino = (int(x) for x in name.split(":"))
                self._stamps[(dev, ino)] = [
                    (int(g), int(s), int(e), int(t)) for g, s, e, t in items
                ]
        except FileNotFoundError:
            pass
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            log.warning(
                "file_stamps_unreadable",
                path=str(path),
                error=str(exc),
                note="lines without timestamps re-read after a crash may be stored twice",
            )
            self._stamps = {}

    def find(self, key: Key, gen: int, offset: int) -> int | None:
        """The recorded read time of the byte at ``offset``, or None."""
        for g, start, end, micros in self._stamps.get(key, ()):
            if g == gen and start <= offset < end:
                return micros
        return None

    def record(
        self, key: Key, gen: int, start: int, end: int, micros: int, alive: Iterable[Key]
    ) -> None:
        """Durably add a stamp (and drop stamps that can no longer be needed)."""
        self._stamps.setdefault(key, []).append((gen, start, end, micros))
        committed = self.checkpoints.committed
        kept: dict[Key, list[tuple[int, int, int, int]]] = {}
        for k in set(alive) | {key}:
            stamps = self._stamps.get(k)
            if not stamps:
                continue
            pos = committed.get(k)
            if pos is not None:
                stamps = [
                    s for s in stamps if s[0] > pos.gen or (s[0] == pos.gen and s[2] > pos.offset)
                ]
            if stamps:
                kept[k] = stamps
        self._stamps = kept
        atomic_write(self.path, orjson.dumps({key_text(k): v for k, v in kept.items()}))
        self.writes += 1


# -- the reader ---------------------------------------------------------------------------------


class TailChunk(EncodedChunk[TailToken]):
    """What the file tail hands the shipper: an :class:`ingest.reader.EncodedChunk` (as the
    journal reader's :class:`ingest.journald.Chunk`) with :class:`TailToken` s instead of
    journald cursors."""

    __slots__ = ()
    input_name: ClassVar[str] = INPUT_NAME


@dataclass(frozen=True, slots=True)
class TailDone(ReaderDone):
    """The file tail stopped (no follow: every file read to its end; or it failed)."""

    input_name: ClassVar[str] = INPUT_NAME


class _Input:
    """A :class:`FileInput` with its patterns compiled and its helpers."""

    def __init__(self, cfg: FileInput, node_host: str) -> None:
        self.cfg = cfg
        self.host = (cfg.host or node_host)[:MAX_NAME_CHARS]
        self.service = cfg.service[:MAX_NAME_CHARS]
        ml = cfg.multiline
        self.multiline = ml.enabled
        self.start_re = re.compile(ml.start) if ml.start else None
        self.continue_re = re.compile(ml.continue_pattern)
        self.timestamps = (
            TimestampParser(local=cfg.timezone == "local") if cfg.timestamps == "auto" else None
        )
        self.fixed_level = None if cfg.level == "auto" else cfg.level

    def continues(self, line: str) -> bool:
        """Whether ``line`` belongs to the event before it."""
        if self.start_re is not None:
            return self.start_re.match(line) is None
        return self.continue_re.match(line) is not None


@dataclass(slots=True)
class _Pending:
    """A multi-line event being assembled."""

    start: int
    end: int
    lines: list[str]
    size: int
    updated: float
    continued: bool = False
    cut: bool = False


@dataclass(slots=True)
class _Event:
    start: int
    end: int
    text: str
    lines: int
    continued: bool = False
    cut: bool = False


@dataclass(slots=True)
class _File:
    """A file being tailed: descriptor, read position, unfinished data."""

    key: Key
    inp: _Input
    path: str
    fd: int
    gen: int
    offset: int  # next byte to read
    buf: bytes = b""  # the unfinished last line, starting at ``offset - len(buf)``
    discarding: bool = False  # skipping the rest of a line that was cut
    pending: _Pending | None = None
    head: bytes = b""
    size_seen: int = 0
    mtime_seen: int = 0
    last_growth: float = 0.0
    orphan_since: float | None = None
    events: list[_Event] = field(default_factory=list)

    @property
    def done_offset(self) -> int:
        """First byte not yet turned into a shipped event (the checkpoint offset)."""
        if self.pending is not None:
            return self.pending.start
        return self.offset - len(self.buf)


class TailReader(ReaderThread[TailChunk | TailDone]):
    """A thread that tails the configured files and puts :class:`TailChunk` objects on the
    shipper's queue (the same bounded queue and contract as :class:`JournalReader`)."""

    def __init__(
        self,
        inputs: Iterable[FileInput],
        tail: TailConfig,
        positions: Mapping[Key, FilePos] | None,
        filters: ReloadableFilter,
        out: queue.Queue[Any],
        stamps: StampLog,
        *,
        node_host: str,
        follow: bool = True,
    ) -> None:
        super().__init__(out, name="file-tail")
        self.inputs = [_Input(i, node_host) for i in inputs]
        self.tail = tail
        self.first_start = positions is None
        self.filters = filters
        self.stamps = stamps
        self.follow = follow
        self._positions: dict[Key, FilePos] = dict(positions or {})
        self._files: dict[Key, _File] = {}
        self._unreadable: dict[str, str] = {}
        self._iso = IsoFormatter()
        self._clock = time.monotonic
        # Counters (the shipper logs them at exit, the bench reads them), besides the
        # reader's own (lines and timings).
        self.read_bytes = 0
        self.cut_lines = 0
        self.rotations = 0
        self.truncations = 0

    @property
    def tracked(self) -> list[str]:
        """Paths of the files open now (rotated-away ones under their current name)."""
        return [f.path for f in list(self._files.values())]

    # -- thread control (start/stop/put: ReaderThread) -----------------------------------------
    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end, then close the files."""
        super().join(timeout)
        if not self._thread.is_alive():
            for f in self._files.values():
                _close(f.fd)
            self._files.clear()

    # -- main loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._scan(self._clock(), initial=True)
            self._adopt_rotated_while_down()
            while not self._stop.is_set():
                now = self._clock()
                self._scan(now)
                busy = False
                for f in list(self._files.values()):
                    if self._stop.is_set():
                        return
                    busy = self._poll(f, now) or busy
                if self.follow:
                    self._timeouts(self._clock())
                elif not busy:
                    self._finish_all()
                    self._put(TailDone())
                    return
                if not busy:
                    self._stop.wait(self.tail.poll_interval)
        except Exception as exc:  # surfaced to the shipper, which decides
            log.exception("file_tail_crashed")
            self._put(TailDone(error=f"file tail crashed: {exc!r}"))

    # -- discovery ----------------------------------------------------------------------------
    def _scan(self, now: float, *, initial: bool = False) -> None:
        """Glob every input; open new files, note files that left every glob (rotated)."""
        seen: dict[Key, tuple[str, _Input]] = {}
        for inp in self.inputs:
            for path in sorted(glob.glob(inp.cfg.path)):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                seen.setdefault((st.st_dev, st.st_ino), (path, inp))
        for key, (path, inp) in seen.items():
            f = self._files.get(key)
            if f is not None:
                if f.orphan_since is not None:
                    log.info("file_back_in_glob", path=path)
                f.path, f.orphan_since = path, None
                continue
            self._open(key, path, inp, now, initial=initial)
        for f in self._files.values():
            if f.key not in seen and f.orphan_since is None:
                f.orphan_since = now
                self.rotations += 1
                log.info(
                    "file_rotated_away",
                    path=f.path,
                    key=key_text(f.key),
                    note="reading it to its end, then forgetting it",
                )

    def _open(
        self, key: Key, path: str, inp: _Input, now: float, *, initial: bool, orphan: bool = False
    ) -> _File | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            self._report_unreadable(path, exc)
            return None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != key:  # replaced between stat and open: next scan
                _close(fd)
                return None
            head = os.pread(fd, HEAD_BYTES, 0)
        except OSError as exc:
            _close(fd)
            self._report_unreadable(path, exc)
            return None
        if self._unreadable.pop(path, None) is not None:
            log.info("file_readable_again", path=path)
        pos = self._positions.get(key)
        gen, offset = 0, 0
        if pos is not None:
            saved = pos.head[: min(len(pos.head), pos.offset)]
            if head.startswith(saved) and st.st_size >= pos.offset:
                gen, offset = pos.gen, pos.offset
            else:
                gen = pos.gen + 1
                self.truncations += 1
                log.warning(
                    "file_changed_since_checkpoint",
                    path=path,
                    key=key_text(key),
                    checkpoint_offset=pos.offset,
                    size=st.st_size,
                    note="truncated or replaced: reading it from the start",
                )
        elif initial and self.first_start and inp.cfg.start == "tail":
            offset = _after_last_newline(fd, st.st_size)
        f = _File(
            key=key,
            inp=inp,
            path=path,
            fd=fd,
            gen=gen,
            offset=offset,
            head=head,
            size_seen=offset,
            mtime_seen=0,
            last_growth=now,
            orphan_since=now if orphan else None,
        )
        self._files[key] = f
        self._positions[key] = FilePos(key[0], key[1], gen, offset, path, head)
        log.info(
            "file_tail_open",
            path=path,
            key=key_text(key),
            offset=offset,
            gen=gen,
            service=inp.service,
            orphan=orphan,
        )
        return f

    def _report_unreadable(self, path: str, exc: OSError) -> None:
        text = f"{errno.errorcode.get(exc.errno or 0, 'error')}: {exc.strerror or exc}"
        if self._unreadable.get(path) != text:
            self._unreadable[path] = text
            log.warning(
                "file_unreadable",
                path=path,
                error=text,
                note="retried at every poll; shipping goes on for other files",
            )

    def _adopt_rotated_while_down(self) -> None:
        """Checkpointed files no glob finds: look for the inode next to its old path (renamed
        by logrotate while the shipper was down) and finish it; forget the rest."""
        gone: list[Key] = []
        for key, pos in list(self._positions.items()):
            if key in self._files:
                continue
            found = _find_inode(Path(pos.path).parent, key)
            if found is not None:
                inp = next(
                    (i for i in self.inputs if fnmatch.fnmatch(pos.path, i.cfg.path)),
                    self.inputs[0],
                )
                log.info("file_rotated_while_down", old_path=pos.path, path=found)
                if (
                    self._open(key, found, inp, self._clock(), initial=False, orphan=True)
                    is not None
                ):
                    continue
            gone.append(key)
        if gone:
            for key in gone:
                self._positions.pop(key, None)
            log.info(
                "file_checkpoints_forgotten",
                files=[key_text(k) for k in gone],
                reason="no longer found",
            )
            self._emit_state()

    # -- reading ------------------------------------------------------------------------------
    def _poll(self, f: _File, now: float) -> bool:
        """Read what is new in one file (up to a budget); True when data was read."""
        clock = time.perf_counter
        try:
            st = os.fstat(f.fd)
            if st.st_size != f.size_seen or st.st_mtime_ns != f.mtime_seen:
                current = os.pread(f.fd, HEAD_BYTES, 0)
                if st.st_size < f.size_seen or not current.startswith(f.head):
                    self._truncated(f, st.st_size)
                    current = os.pread(f.fd, HEAD_BYTES, 0)
                f.head = current
                f.mtime_seen = st.st_mtime_ns
            f.size_seen = st.st_size
            got = False
            for _ in range(8):  # a budget, so one busy file cannot starve the others
                if f.offset >= st.st_size or self._stop.is_set():
                    break
                t0 = clock()
                data = os.pread(f.fd, READ_BYTES, f.offset)
                t1 = clock()
                self.read_seconds += t1 - t0
                if not data:
                    break
                got = True
                f.offset += len(data)
                self.read_bytes += len(data)
                self._consume(f, data, now)
                self._ship(f, now)
                self.parse_seconds += clock() - t1
            if got:
                f.last_growth = now
            return got
        except OSError as exc:
            self._report_unreadable(f.path, exc)
            return False

    def _truncated(self, f: _File, size: int) -> None:
        """copytruncate: ship what was read of the old content, restart at 0, next generation."""
        self._flush_partial(f)
        self._flush_pending(f)
        self._ship(f, self._clock())
        self.truncations += 1
        log.info(
            "file_truncated",
            path=f.path,
            key=key_text(f.key),
            read_up_to=f.offset,
            size=size,
            gen=f.gen + 1,
        )
        f.gen += 1
        f.offset = 0
        f.buf = b""
        f.discarding = False
        f.size_seen = 0
        f.head = b""
        self._positions[f.key] = FilePos(f.key[0], f.key[1], f.gen, 0, f.path, b"")
        self._emit_state()

    def _consume(self, f: _File, data: bytes, now: float) -> None:
        """Split new bytes into lines and feed them to the event assembler."""
        base = f.offset - len(data)  # file offset of data[0]
        if f.discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return
            data = data[newline + 1 :]
            base += newline + 1
            f.discarding = False
        if f.buf:
            base -= len(f.buf)
            data = f.buf + data
            f.buf = b""
        limit = f.inp.cfg.max_line_bytes
        pos = 0
        size = len(data)
        while pos < size:
            newline = data.find(b"\n", pos)
            if newline < 0:
                break
            end = newline
            if end > pos and data[end - 1] == 13:  # \r\n
                end -= 1
            raw = data[pos:end]
            cut = len(raw) > limit
            if cut:
                raw = raw[:limit]
            self._feed(f, raw, base + pos, base + newline + 1, now, cut)
            pos = newline + 1
        rest = data[pos:]
        if len(rest) > limit:  # no newline in sight: cut now, skip the rest of the line
            self._feed(f, rest[:limit], base + pos, base + size, now, True)
            f.discarding = True
        else:
            f.buf = rest

    def _feed(self, f: _File, raw: bytes, start: int, end: int, now: float, cut: bool) -> None:
        """One complete line: continue the pending event or start a new one."""
        self.lines += 1
        text = raw.decode("utf-8", errors="replace")
        if cut:
            self.cut_lines += 1
            text += CUT_MARKER.format(limit=f.inp.cfg.max_line_bytes)
        inp = f.inp
        if not inp.multiline:
            f.events.append(_Event(start, end, text, 1, cut=cut))
            return
        pending = f.pending
        continued = False
        if pending is not None:
            if inp.continues(text):
                ml = inp.cfg.multiline
                if len(pending.lines) < ml.max_lines and pending.size + len(text) <= ml.max_bytes:
                    pending.lines.append(text)
                    pending.size += len(text) + 1
                    pending.end = end
                    pending.updated = now
                    pending.cut = pending.cut or cut
                    return
                continued = True
            self._flush_pending(f)
        f.pending = _Pending(start, end, [text], len(text), now, continued, cut)

    def _flush_pending(self, f: _File) -> None:
        p = f.pending
        if p is not None:
            f.pending = None
            f.events.append(
                _Event(p.start, p.end, "\n".join(p.lines), len(p.lines), p.continued, p.cut)
            )

    def _flush_partial(self, f: _File) -> None:
        """Ship the unfinished last line as it is (the file stopped growing, or went away)."""
        if f.buf:
            rest, f.buf = f.buf, b""
            self._feed(f, rest, f.offset - len(rest), f.offset, self._clock(), False)

    def _timeouts(self, now: float) -> None:
        tail = self.tail
        for f in list(self._files.values()):
            idle = now - f.last_growth
            if f.buf and idle >= tail.partial_line_timeout:
                self._flush_partial(f)
            if f.pending is not None and now - f.pending.updated >= f.inp.cfg.multiline.timeout:
                self._flush_pending(f)
            if f.events:
                self._ship(f, now)
            if (
                f.orphan_since is not None
                and now - max(f.last_growth, f.orphan_since) >= tail.rotate_wait
            ):
                self._finish(f)

    def _finish(self, f: _File) -> None:
        """A rotated-away or deleted file is done: ship what is left, forget its checkpoint."""
        self._flush_partial(f)
        self._flush_pending(f)
        self._ship(f, self._clock())
        _close(f.fd)
        del self._files[f.key]
        self._positions.pop(f.key, None)
        log.info("file_finished", path=f.path, key=key_text(f.key), offset=f.offset)
        self._emit_state()

    def _finish_all(self) -> None:
        """No follow: everything read; ship partial lines and pending events of every file."""
        for f in list(self._files.values()):
            self._flush_partial(f)
            self._flush_pending(f)
            self._ship(f, self._clock())
            if f.orphan_since is not None:
                self._finish(f)

    # -- events -------------------------------------------------------------------------------
    def _ship(self, f: _File, now: float) -> None:
        """Turn the file's finished events into one chunk (with tokens) and queue it."""
        events, f.events = f.events, []
        done = f.done_offset
        old = self._positions.get(f.key)
        if not events and old is not None and old.offset == done and old.gen == f.gen:
            return
        base = dict(self._positions)
        start_pos = FilePos(
            f.key[0], f.key[1], f.gen, old.offset if old is not None else 0, f.path, f.head
        )
        base[f.key] = start_pos
        chunk = TailChunk()
        micros = self._event_times(f, events)
        inp = f.inp
        rules = self.filters.rules
        noop = rules.is_noop
        dumps = orjson.dumps
        parts: list[bytes] = []
        position = 0
        dev, ino = f.key
        gen = f.gen
        for event, when in zip(events, micros, strict=True):
            chunk.lines += 1
            first = event.text if event.lines == 1 else event.text[: event.text.find("\n")]
            level = inp.fixed_level or detect_level(first) or "INFO"
            if not noop and not rules.keep(
                None, None, LEVEL_PRIORITY[level], event.text, inp.service
            ):
                chunk.filtered += 1
                continue
            meta: dict[str, Any] = {"path": f.path, "offset": event.start}
            if event.lines > 1:
                meta["lines"] = event.lines
            if event.continued:
                meta["continued"] = True
            if event.cut:
                meta["cut"] = True
            encoded = dumps(
                {
                    "timestamp": self._iso(when),
                    "source": SOURCE,
                    "service": inp.service,
                    "host": inp.host,
                    "level": level,
                    "message": event.text,
                    "source_id": f"{dev}:{ino}:{gen}:{event.start}",
                    "meta": meta,
                },
                option=orjson.OPT_SORT_KEYS,
            )
            parts.append(encoded)
            position += len(encoded) + 1
            chunk.offsets.append(position)
            chunk.cursors.append(TailToken(base, f.key, event.end))
        chunk.body = b",".join(parts)
        chunk.tail_cursor = TailToken(base, f.key, done)
        self._positions[f.key] = replace(start_pos, offset=done)
        self._put(chunk)

    def _event_times(self, f: _File, events: list[_Event]) -> list[int]:
        """Each event's time: its own leading timestamp, else its recorded or new read time."""
        parser = f.inp.timestamps
        out: list[int] = []
        needing: list[int] = []
        for i, event in enumerate(events):
            micros = parser.parse(event.text) if parser is not None else None
            if micros is None:
                micros = self.stamps.find(f.key, f.gen, event.start)
                if micros is None:
                    needing.append(i)
                    micros = 0
            out.append(micros)
        if needing:
            now_us = time.time_ns() // 1000
            start = events[needing[0]].start
            end = max(f.offset, events[needing[-1]].end)
            with contextlib.suppress(OSError):
                end = max(end, os.fstat(f.fd).st_size)
            self.stamps.record(f.key, f.gen, start, end, now_us, self._files.keys())
            for i in needing:
                out[i] = now_us
        return out

    def _emit_state(self) -> None:
        """Queue a chunk without events that carries the whole state (after a forget/reset)."""
        chunk = TailChunk()
        chunk.tail_cursor = TailToken(dict(self._positions), None, 0)
        self._put(chunk)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _after_last_newline(fd: int, size: int) -> int:
    """The offset just after the last complete line (``start: tail`` on a first start)."""
    position = size
    while position > 0:
        step = min(65536, position)
        data = os.pread(fd, step, position - step)
        newline = data.rfind(b"\n")
        if newline >= 0:
            return position - step + newline + 1
        position -= step
    return 0


def _find_inode(directory: Path, key: Key) -> str | None:
    """A regular file in ``directory`` with this (device, inode), or None."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.inode() != key[1]:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev == key[0] and stat.S_ISREG(st.st_mode):
                    return entry.path
    except OSError:
        return None
    return None
