"""The node shipper: journald → batches → ``POST /ingest/logs``, each entry stored exactly once.

How exactly-once holds
----------------------
Three pieces of state: the journal (owned by journald), the committed cursor
(:mod:`ingest.cursor`) and the spool (:mod:`ingest.spool`). The rule is:

    the cursor is committed past an entry only once that entry is *acknowledged*:
    accepted (or individually rejected) by the server, durably written to the spool,
    or dropped by the noise filter.

The commit itself is atomic (temp file, fsync, rename, fsync dir) and may lag the
acknowledgements by up to ``cursor_commit_seconds`` (one fsync pair per second instead of one
per batch), which only widens the re-send window below; it never runs ahead of them.

So after any crash, everything after the committed cursor is read again, and everything up
to it is either on the server or in the spool (drained on restart). A batch can therefore be
sent twice (crash after the server answered but before the cursor/spool file changed), never
zero times; the server's fingerprint dedup (host, service, timestamp, message, source_id =
journald cursor) turns "at least once" into "exactly once" in the store. The mapping from an
entry to a log object is deterministic for that reason.

Order: while the spool holds anything, new batches are appended to it rather than sent past
it, and the spool drains oldest first, so a host's entries reach the server in journal order.
The one deliberate loss is the spool cap: when full, the oldest spooled batches are deleted
with a counted warning (the newest logs matter most during an outage).

Failure handling
----------------
- Connection errors, timeouts, 408, 429 and 5xx: transient. Exponential backoff with jitter
  (``retry.initial_seconds`` doubling to ``retry.max_seconds``); batches go to the spool
  meanwhile and the journal keeps being read.
- 200 with ``rejected`` items: those objects are logged and counted, the rest is stored; the
  batch is acknowledged (re-sending a malformed object would never help).
- 413 or another whole-batch 4xx (400, 422): the batch is split in halves until the server
  takes each part; a single event it still refuses is dropped with an error log.
- 401/403 (bad token) and 404/405 (wrong URL): configuration errors. Logged loudly, nothing
  more is committed, and the process exits with ``EX_CONFIG`` (78) so systemd does not
  restart it in a loop (the unit sets ``RestartPreventExitStatus=78``).

Threads: a reader thread (:class:`ingest.journald.JournalReader`) runs journalctl, parses,
filters, maps and encodes; the main thread batches, sends, spools, commits and heartbeats.

Inputs: the journal and/or plain log files (:mod:`ingest.tail`, ``files:`` in the config).
Each input has its own reader thread feeding the one queue, and its own checkpoint store
(``cursor.json`` for journald, ``files.json`` for the files). Each chunk says which input it
came from; a batch may mix inputs, and once it is acknowledged the newest token of *each*
input in it is committed to that input's store. The rule above holds per input.
"""

from __future__ import annotations

import os
import queue
import random
import resource
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol, cast

import orjson

from devmesh_core.log import get_logger
from ingest.client import (
    Delivery,
    FatalConfigError,
    HttpPoster,
    IngestClient,
    Poster,
    TransientError,
)
from ingest.config import ShipperConfig
from ingest.cursor import CursorStore
from ingest.filters import ReloadableFilter
from ingest.journald import Chunk, EntryMapper, JournalReader, ReaderDone, source_args
from ingest.spool import Spool
from ingest.tail import FileCheckpoints, StampLog, TailChunk, TailReader

log = get_logger(__name__)

EX_OK = 0
EX_FAILURE = 1
EX_TEMPFAIL = 75
EX_CONFIG = 78

SHIPPER_SERVICE = "devmesh-shipper"
_QUEUE_CHUNKS = 16
JOURNALD = "journald"
FILES = "files"


class CheckpointStore(Protocol):
    """Where an input commits how far it is acknowledged (CursorStore, FileCheckpoints)."""

    commits: int

    def commit(self, token: Any) -> None:
        """Durably record ``token`` (a journald cursor, a file tail token)."""


class InputReader(Protocol):
    """A reader thread feeding the shipper's queue (JournalReader, TailReader)."""

    lines: int
    read_seconds: float
    parse_seconds: float
    put_seconds: float

    def stop(self) -> None:
        """Stop reading (safe to call more than once)."""

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""


@dataclass(slots=True)
class Stats:
    """Counters and timings, logged at exit and sent in heartbeats (and read by the bench)."""

    read: int = 0
    filtered: int = 0
    sent_events: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped_too_large: int = 0
    spooled_events: int = 0
    spool_dropped_events: int = 0
    requests: int = 0
    batches: int = 0
    splits: int = 0
    failures: int = 0
    heartbeats: int = 0
    cursor_commits: int = 0
    http_seconds: float = 0.0
    spool_seconds: float = 0.0
    commit_seconds: float = 0.0
    wait_seconds: float = 0.0


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, which (unlike ``ru_maxrss``) starts afresh at
    exec, so a parent's size at fork time does not leak into the figure."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> dict[str, float]:
    """CPU time used by this process and by journalctl (the children it waited for)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_seconds": round(own.ru_utime + own.ru_stime, 3),
        "journalctl_cpu_seconds": round(children.ru_utime + children.ru_stime, 3),
    }


class Backoff:
    """Exponential backoff with jitter: half the delay is fixed, half random.

    The random half spreads a fleet's retries after a server restart; the fixed half keeps
    one node from retrying in a tight loop by bad luck.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self.next_at = 0.0
        self._rng = rng or random.Random()

    def failed(self, now: float) -> float:
        """Record a failure; return the delay before the next attempt."""
        self.failures += 1
        ceiling = min(self.maximum, self.initial * float(2 ** min(self.failures - 1, 30)))
        delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        self.next_at = now + delay
        return delay

    def succeeded(self) -> None:
        """Back to normal: the next attempt may happen at once."""
        self.failures = 0
        self.next_at = 0.0

    def ready(self, now: float) -> bool:
        """Whether an attempt is allowed now."""
        return now >= self.next_at


class Shipper:
    """Ship one journal source to one server until stopped (or, without follow, until done).

    ``run()`` returns a process exit code: 0 done/stopped, 75 the server stayed unreachable
    past ``drain_timeout``, 78 configuration error, 1 the journal could not be read.
    """

    def __init__(
        self,
        cfg: ShipperConfig,
        *,
        filters: ReloadableFilter | None = None,
        install_signals: bool = True,
        clock: Callable[[], float] | None = None,
        poster: Poster | None = None,
    ) -> None:
        self.cfg = cfg
        self.stats = Stats()
        self.filters = filters if filters is not None else ReloadableFilter(cfg.filters_file)
        self._install_signals = install_signals
        self._clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self._poster = poster
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.instance = uuid.uuid4().hex[:12]
        self._heartbeat_seq = 0
        self._queue: queue.Queue[Chunk | TailChunk | ReaderDone] = queue.Queue(
            maxsize=_QUEUE_CHUNKS
        )
        self._pending: list[bytes] = []  # comma-joined runs of events
        self._pending_count = 0
        # Per input: the token after the last pending event, and the acknowledged,
        # not yet committed one.
        self._pending_tails: dict[str, Any] = {}
        self._acked_tails: dict[str, Any] = {}
        self._stores: dict[str, CheckpointStore] = {}
        self._readers: dict[str, InputReader] = {}
        self._tail: TailReader | None = None
        self._last_commit = float("-inf")
        self._pending_since: float | None = None
        self._online_sent = False
        self._started = 0.0

    # -- control --------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to flush, commit and return (thread- and signal-safe)."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask the loop to re-read the filter file (what SIGHUP does)."""
        self._reload.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload.set()
        else:
            self._stop.set()

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; return the exit code."""
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        source = " ".join(source_args(cfg.journal)) or "system journal"
        self.cursor = CursorStore(cfg.cursor_path, source=source)
        self.file_checkpoints = FileCheckpoints(cfg.file_checkpoint_path)
        self.spool = Spool(cfg.spool_dir, int(cfg.spool_max_mb * 1024 * 1024))
        poster = (
            self._poster
            if self._poster is not None
            else HttpPoster(
                cfg.server,
                cfg.token,
                cfg.request_timeout,
                verify_tls=cfg.verify_tls,
                ca_file=str(cfg.ca_file) if cfg.ca_file else None,
            )
        )
        self.client = IngestClient(poster, self._timed_request)
        self.backoff = Backoff(cfg.retry_initial, cfg.retry_max)
        previous: dict[signal.Signals, Any] = {}
        if self._install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                previous[sig] = signal.signal(sig, self._on_signal)
        self._started = self._clock()
        self._next_heartbeat = self._started
        after = self.cursor.load() if cfg.journal.enabled else None
        positions = self.file_checkpoints.load() if cfg.files else None
        log.info(
            "shipper_starting",
            server=cfg.server,
            source=source if cfg.journal.enabled else None,
            resume_after=after,
            files=[f.path for f in cfg.files],
            file_checkpoints=len(positions or {}),
            spooled_events=self.spool.events,
            batch_events=cfg.batch_max_events,
            batch_seconds=cfg.batch_max_seconds,
            instance=self.instance,
        )
        if cfg.journal.enabled:
            self._stores[JOURNALD] = self.cursor
            self._reader = self._start_reader(after)
            self._readers[JOURNALD] = self._reader
        if cfg.files:
            self._stores[FILES] = self.file_checkpoints
            self._tail = TailReader(
                cfg.files,
                cfg.tail,
                positions,
                self.filters,
                self._queue,
                StampLog(cfg.file_stamps_path, self.file_checkpoints),
                node_host=cfg.node_host,
                follow=cfg.journal.follow,
            )
            self._tail.start()
            self._readers[FILES] = self._tail
        code = EX_OK
        try:
            code = self._loop()
        except FatalConfigError as exc:
            log.error(
                "shipper_config_error",
                error=str(exc),
                note="not retrying: fix the configuration, then restart",
            )
            code = EX_CONFIG
        finally:
            self._commit(self._clock(), force=True)
            readers = list(self._readers.values())
            for reader in readers:
                reader.stop()
            for reader in readers:
                reader.join(timeout=5)
            self.client.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stats.spool_dropped_events = self.spool.dropped_events
            self.stats.cursor_commits = sum(store.commits for store in self._stores.values())
            tail = self._tail
            tail_stats = (
                {}
                if tail is None
                else {
                    "tail_read_bytes": tail.read_bytes,
                    "tail_cut_lines": tail.cut_lines,
                    "tail_rotations": tail.rotations,
                    "tail_truncations": tail.truncations,
                    "tail_stamp_writes": tail.stamps.writes,
                }
            )
            elapsed = max(self._clock() - self._started, 1e-9)
            log.info(
                "shipper_done",
                exit_code=code,
                elapsed_seconds=round(elapsed, 3),
                rate_per_second=round(self.stats.read / elapsed, 1),
                spooled_now=self.spool.events,
                reader_lines=sum(r.lines for r in readers),
                reader_read_seconds=round(sum(r.read_seconds for r in readers), 3),
                reader_parse_seconds=round(sum(r.parse_seconds for r in readers), 3),
                reader_put_wait_seconds=round(sum(r.put_seconds for r in readers), 3),
                max_rss_mb=round(peak_rss_mb(), 1),
                **cpu_seconds(),
                **tail_stats,
                **{
                    k: round(v, 3) if isinstance(v, float) else v
                    for k, v in asdict(self.stats).items()
                },
            )
        return code

    def _start_reader(self, after: str | None) -> JournalReader:
        mapper = EntryMapper(self.cfg.node_host)
        # The journal reader only puts journal chunks; the queue is shared with the file tail.
        out = cast("queue.Queue[Chunk | ReaderDone]", self._queue)
        reader = JournalReader(self.cfg.journal, after, mapper, self.filters, out)
        reader.start()
        return reader

    def _loop(self) -> int:
        cfg = self.cfg
        source_done = False
        finished: set[str] = set()
        drain_started: float | None = None
        while True:
            now = self._clock()
            if self._reload.is_set():
                self._reload.clear()
                self.filters.reload()
            self._commit(now)
            if self._stop.is_set():
                self._flush(now, final=True)
                log.info("shipper_stopping", spooled_events=self.spool.events)
                return EX_OK
            if source_done and not self._pending_count:
                if not self.spool:
                    self._commit(now, force=True)
                    return EX_OK
                if drain_started is None:
                    drain_started = now
                if cfg.drain_timeout is not None and now - drain_started > cfg.drain_timeout:
                    log.error(
                        "server_unreachable_giving_up",
                        spooled_events=self.spool.events,
                        note="the spool is kept and drained on the next start",
                    )
                    return EX_TEMPFAIL
            if now >= self._next_heartbeat and self.backoff.ready(now):
                self._heartbeat(now)
            if self.spool and self.backoff.ready(now):
                self._drain_step(now)
            item = self._next_item(now, source_done)
            now = self._clock()
            if isinstance(item, Chunk | TailChunk):
                self._take(item, now)
            elif isinstance(item, ReaderDone):
                name = getattr(item, "input_name", JOURNALD)
                self._flush(now, final=True)
                if name == JOURNALD and item.cursor_rejected:
                    log.error(
                        "journal_cursor_rejected",
                        error=item.error,
                        cursor=self.cursor.last,
                        note=f"set aside; restarting from the {cfg.journal.start}",
                    )
                    self.cursor.discard()
                    self._reader.join(timeout=5)
                    self._reader = self._start_reader(None)
                    self._readers[JOURNALD] = self._reader
                    continue
                if item.error is not None:
                    log.error(
                        "journal_read_failed" if name == JOURNALD else "file_tail_failed",
                        error=item.error,
                    )
                    return EX_FAILURE
                finished.add(name)
                source_done = finished >= set(self._readers)
            if self._pending_since is not None and (
                now - self._pending_since >= cfg.batch_max_seconds
            ):
                self._flush(now)

    def _next_item(self, now: float, source_done: bool) -> Chunk | TailChunk | ReaderDone | None:
        """Wait for the reader, but no longer than the next thing the loop must do."""
        deadlines = [self._next_heartbeat if self.backoff.ready(now) else self.backoff.next_at]
        if self._pending_since is not None:
            deadlines.append(self._pending_since + self.cfg.batch_max_seconds)
        if self._acked_tails:
            deadlines.append(self._last_commit + self.cfg.cursor_commit_seconds)
        if self.spool:
            deadlines.append(self.backoff.next_at)
        timeout = min(0.5, max(0.0, min(deadlines) - now))
        if source_done:
            timeout = min(timeout, 0.1) if self.spool and self.backoff.ready(now) else timeout
            if timeout > 0:
                self._stop.wait(timeout)
            return None
        started = time.perf_counter()
        try:
            if timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        finally:
            self.stats.wait_seconds += time.perf_counter() - started

    # -- batching -------------------------------------------------------------------------
    def _timed_request(self, seconds: float) -> None:
        self.stats.requests += 1
        self.stats.http_seconds += seconds

    def _take(self, chunk: Chunk | TailChunk, now: float) -> None:
        name = FILES if isinstance(chunk, TailChunk) else JOURNALD
        self.stats.read += chunk.lines
        self.stats.filtered += chunk.filtered
        limit = self.cfg.batch_max_events
        count = chunk.count
        start = 0
        while start < count:
            stop = min(count, start + limit - self._pending_count)
            self._pending.append(
                chunk.body if start == 0 and stop == count else chunk.span(start, stop)
            )
            self._pending_count += stop - start
            self._pending_tails[name] = chunk.cursors[stop - 1]  # (_flush swaps the dict)
            start = stop
            if self._pending_since is None:
                self._pending_since = now
            if self._pending_count >= limit:
                self._flush(now)
        if chunk.tail_cursor is not None:
            self._pending_tails[name] = chunk.tail_cursor
            if self._pending_since is None:
                self._pending_since = now

    def _flush(self, now: float, *, final: bool = False) -> None:
        """Acknowledge the pending batch (server or spool), then commit its cursor."""
        runs, count, tails = self._pending, self._pending_count, self._pending_tails
        self._pending, self._pending_count = [], 0
        self._pending_tails, self._pending_since = {}, None
        if count:
            self.stats.batches += 1
            body = b"".join((b"[", b",".join(runs), b"]"))
            del runs
            delivered = False
            if not self.spool and self.backoff.ready(now):
                try:
                    self._record(self.client.deliver(body, count), count)
                    self._recovered()
                    delivered = True
                except TransientError as exc:
                    self._failed(exc)
            if not delivered:
                started = time.perf_counter()
                self.spool.append(body, count)
                self.stats.spooled_events += count
                self.stats.spool_seconds += time.perf_counter() - started
        if tails:
            self._acked_tails.update(tails)
            self._commit(now, force=final)

    def _commit(self, now: float, *, force: bool = False) -> None:
        """Write the acknowledged cursor, at most every ``cursor_commit_seconds``.

        Committing less often than every batch never breaks exactly-once: after a crash the
        shipper re-reads a little more, and the server absorbs the re-sent events. It saves
        an fsync pair per batch at high rates.
        """
        tails = self._acked_tails
        if not tails or (not force and now - self._last_commit < self.cfg.cursor_commit_seconds):
            return
        started = time.perf_counter()
        for name, token in tails.items():
            self._stores[name].commit(token)
        self.stats.commit_seconds += time.perf_counter() - started
        self._acked_tails = {}
        self._last_commit = now

    def _record(self, delivery: Delivery, count: int) -> None:
        self.stats.sent_events += count
        self.stats.accepted += delivery.accepted
        self.stats.duplicates += delivery.duplicates
        self.stats.rejected += delivery.rejected
        self.stats.dropped_too_large += delivery.dropped
        self.stats.splits = self.client.splits

    def _drain_step(self, now: float) -> None:
        """Send the oldest spooled batches (merged up to ``drain_max_events``) once."""
        segments = self.spool.peek(self.cfg.drain_max_events, max_bytes=16 * 1024 * 1024)
        count = sum(s.count for s in segments)
        started = time.perf_counter()
        body = self.spool.read_body(segments)
        self.stats.spool_seconds += time.perf_counter() - started
        try:
            delivery = self.client.deliver(body, count)
        except TransientError as exc:
            self._failed(exc)
            return
        self._record(delivery, count)
        started = time.perf_counter()
        self.spool.remove(segments)
        self.stats.spool_seconds += time.perf_counter() - started
        self._recovered()
        if not self.spool:
            log.info("spool_drained")

    def _failed(self, exc: Exception) -> None:
        now = self._clock()
        first = self.backoff.failures == 0
        delay = self.backoff.failed(now)
        self.stats.failures += 1
        (log.warning if first else log.info)(
            "server_unreachable",
            error=str(exc),
            retry_in_seconds=round(delay, 2),
            attempt=self.backoff.failures,
            spooled_events=self.spool.events,
        )

    def _recovered(self) -> None:
        if self.backoff.failures:
            log.info(
                "server_reachable_again",
                after_failures=self.backoff.failures,
                spooled_events=self.spool.events,
            )
        self.backoff.succeeded()

    # -- heartbeat ------------------------------------------------------------------------
    def heartbeat_event(self, now: float, kind: str) -> dict[str, Any]:
        """A ``node_online`` or ``heartbeat`` event, so the server can tell silent from offline.

        Each one gets its own ``source_id`` (instance and sequence number): two heartbeats
        must never be mistaken for a re-sent duplicate.
        """
        self._heartbeat_seq += 1
        online = kind == "node_online"
        return {
            "timestamp": datetime.now(UTC).isoformat(),
            "source": SHIPPER_SERVICE,
            "service": SHIPPER_SERVICE,
            "host": self.cfg.node_host,
            "level": "INFO" if online else "DEBUG",
            "message": (
                f"shipper started on {self.cfg.node_host}"
                if online
                else f"shipper heartbeat from {self.cfg.node_host}"
            ),
            "event_type": kind,
            "source_id": f"{self.instance}:{self._heartbeat_seq}",
            "meta": {
                "instance": self.instance,
                "pid": os.getpid(),
                "uptime_seconds": round(now - self._started, 1),
                "interval_seconds": self.cfg.heartbeat_seconds,
                "read": self.stats.read,
                "shipped": self.stats.accepted,
                "filtered": self.stats.filtered,
                "rejected": self.stats.rejected,
                "spooled_events": self.spool.events,
                "spool_dropped_events": self.spool.dropped_events,
                "cursor": self.cursor.last,
                "files": len(self.file_checkpoints.committed) if self.cfg.files else None,
            },
        }

    def _heartbeat(self, now: float) -> None:
        kind = "heartbeat" if self._online_sent else "node_online"
        body = orjson.dumps([self.heartbeat_event(now, kind)])
        try:
            self.client.deliver(body, 1)
        except TransientError as exc:
            self._failed(exc)  # not spooled: a late "I was alive" is not worth spool space
            return
        self._recovered()
        self._online_sent = True
        self.stats.heartbeats += 1
        self._next_heartbeat = now + self.cfg.heartbeat_seconds
