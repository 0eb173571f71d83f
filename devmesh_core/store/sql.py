"""SQL machinery shared by the SQLite and MariaDB adapters.

Both adapters store timestamps as integer microseconds (UTC), levels as their rank, and the
16-byte fingerprint under a UNIQUE ``(ts, fingerprint)`` index so dedup happens in the
database. Queries filter on composite ``(service|host|level, level, ts)`` indexes; a
minimum-level filter is run as one index-ordered sub-select per level, merged by the
database, so "latest errors of nginx" reads about ``limit`` index entries whatever the table
size.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import orjson

from devmesh_core.errors import BackendUnavailable, DevMeshError, SchemaError, TransactionConflict
from devmesh_core.log import get_logger
from devmesh_core.models import (
    LEVEL_RANK,
    RANK_LEVEL,
    InsertResult,
    LogEvent,
    StoredEvent,
    TemplateInfo,
    TemplateLike,
    TemplatePlace,
    from_micros,
    to_micros,
)
from devmesh_core.store.base import Cursor, LogQuery, LogStore, Page

T = TypeVar("T")
V = TypeVar("V")


def _log() -> Any:
    return get_logger(__name__)


INSERT_COLUMNS = (
    "ts",
    "ingested_at",
    "source",
    "service",
    "host",
    "level",
    "message",
    "trace_id",
    "span_id",
    "event_type",
    "error_code",
    "meta",
    "source_id",
    "fingerprint",
    "template_id",
)
SELECT_COLUMNS = ("id", *INSERT_COLUMNS)
_SELECT_LIST = ", ".join(SELECT_COLUMNS)
_JOINED_LIST = ", ".join(f"logs.{column}" for column in SELECT_COLUMNS)
_ALL_RANKS = sorted(LEVEL_RANK.values())
# Values per IN (...) list in one statement.
_IN_LIST = 500
# Appended place rows (one per ingest batch) folded per transaction.
_FOLD_ROWS = 200
# Built upsert statements, per adapter class (built once: ingest asks for one per batch).
_UPSERTS: dict[tuple[type, str], str] = {}


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: the statements that take the schema from ``version - 1`` to it."""

    version: int
    statements: tuple[str, ...]


def event_row(event: LogEvent, now_us: int, template_id: str | None = None) -> tuple[Any, ...]:
    """The storage tuple of an event, in :data:`INSERT_COLUMNS` order."""
    meta = event.meta
    return (
        event.timestamp_us,
        now_us,
        event.source,
        event.service,
        event.host,
        LEVEL_RANK[event.level],
        event.message,
        event.trace_id,
        event.span_id,
        event.event_type,
        event.error_code,
        orjson.dumps(meta).decode() if meta else None,
        event.source_id,
        event.fingerprint_bytes,
        template_id,
    )


# Per template: [text, count, first ts, last ts]; per place (template, service, host, level
# rank): [count, last ts].
TemplateCounts = tuple[dict[str, list[Any]], dict[tuple[str, str, str, int], list[int]]]


def count_templates(pairs: Sequence[tuple[LogEvent, TemplateLike]]) -> TemplateCounts:
    """What a batch of newly stored events adds to the template statistics.

    Pure, so ingest computes it before taking the store's write lock.
    """
    per_template: dict[str, list[Any]] = {}
    per_place: dict[tuple[str, str, str, int], list[int]] = {}
    for event, template in pairs:
        ts = event.timestamp_us
        tid = template.template_id
        entry = per_template.get(tid)
        if entry is None:
            per_template[tid] = [template.template, 1, ts, ts]
        else:
            entry[0] = template.template  # the newest text wins (templates widen)
            entry[1] += 1
            if ts < entry[2]:
                entry[2] = ts
            elif ts > entry[3]:
                entry[3] = ts
        key = (tid, event.service, event.host, LEVEL_RANK[event.level])
        place = per_place.get(key)
        if place is None:
            per_place[key] = [1, ts]
        else:
            place[0] += 1
            if ts > place[1]:
                place[1] = ts
    return per_template, per_place


def stored_event(row: Sequence[Any]) -> StoredEvent:
    """Build a :class:`StoredEvent` from a row in :data:`SELECT_COLUMNS` order (trusted data)."""
    (
        row_id,
        ts,
        ingested,
        source,
        service,
        host,
        level,
        message,
        trace_id,
        span_id,
        event_type,
        error_code,
        meta,
        source_id,
        fingerprint,
        template_id,
    ) = row
    return StoredEvent.trusted(
        {
            "timestamp": from_micros(ts),
            "source": source,
            "service": service,
            "host": host,
            "level": RANK_LEVEL[level],
            "message": message,
            "trace_id": trace_id,
            "span_id": span_id,
            "event_type": event_type,
            "error_code": error_code,
            "source_id": source_id,
            "meta": orjson.loads(meta) if meta else {},
            "id": row_id,
            "ingested_at": from_micros(ingested),
            "fingerprint_bytes": bytes(fingerprint),
            "template_id": template_id,
        }
    )


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` as a literal substring (escape character ``!``)."""
    escaped = text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


class SQLLogStore(LogStore):
    """``LogStore`` over a DB-API driver; subclasses supply connections and dialect details.

    Each thread gets its own connection (neither sqlite3 nor pymysql connections may be
    shared between threads); all are closed by :meth:`close`.
    """

    placeholder = "?"
    migrations: tuple[Migration, ...] = ()
    # Appended to a SELECT whose rows the transaction goes on to change, so two writers
    # folding the same rows take turns (SQLite's single writer needs nothing).
    lock_rows = ""
    # How this dialect pins a query to an index ("{}" is the index name; "" lets the
    # planner choose). Used where the planner is known to pick wrongly (see _select).
    index_hint = ""
    # Whether a text filter with per-level parts is tested after merging the parts' index
    # streams rather than inside each part (see _select). Wins where a row read is dear
    # (InnoDB: through the primary key); SQLite is 5x slower that way (its merged stream is
    # materialised and sorted first).
    text_after_merge = False
    # Lock conflicts (deadlocks) are retried this many times after the first attempt.
    conflict_retries = 6
    # Databases with one writer at a time (SQLite) take writes in turn behind a lock in
    # this process: a waiting thread then wakes the moment the writer commits, instead of
    # sleeping in the database's growing busy-retry steps.
    serialize_writes = False
    # Ingest folds appended place counts into template_stats at most this often (seconds).
    # Readers fold first, so this only bounds the backlog: a fold upserts every place seen
    # since the last (they recur: ~7.6k rows per fold in bench/ingest_http.py's data however
    # long the interval), so folding every 30 s rather than 5 s writes ~1/6 of the rows.
    place_fold_interval_s = 30.0

    def __init__(self) -> None:
        self._folded_at = -float("inf")
        self._unfolded = False
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = False

    # -- adapter hooks -------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> Any:
        """Open a new DB-API connection in autocommit-off, ready-to-use state."""

    @abstractmethod
    def _translate(self, exc: Exception) -> DevMeshError | None:
        """Map a driver exception to DevMesh's tree, or ``None`` if it is not a driver error."""

    @abstractmethod
    def _insert_rows(self, cur: Any, rows: list[tuple[Any, ...]]) -> int:
        """Insert rows skipping duplicate fingerprints; return the number stored."""

    @abstractmethod
    def _delete_batch(self, cur: Any, cutoff_us: int, batch_size: int) -> int:
        """Delete up to ``batch_size`` rows older than ``cutoff_us``; return how many."""

    @abstractmethod
    def _migration_lock(self, conn: Any) -> AbstractContextManager[None]:
        """Hold a lock so that two processes never migrate the same database at once."""

    # How this dialect merges a row into an existing one on a key conflict: ``conflict`` is
    # the clause before the assignments (``{keys}`` = key columns); the other entries are one
    # assignment each (``{t}`` table, ``{c}`` column).
    merge_forms: ClassVar[Mapping[str, str]] = {}

    def _upsert(
        self,
        table: str,
        columns: Sequence[str],
        keys: Sequence[str],
        *,
        add: Sequence[str] = (),
        least: Sequence[str] = (),
        greatest: Sequence[str] = (),
        replace: Sequence[str] = (),
    ) -> str:
        """An insert-or-merge statement for ``table``: on a key conflict the ``add`` columns
        are summed, ``least``/``greatest`` keep the min/max, ``replace`` take the new value."""
        forms = self.merge_forms
        sets = [
            forms[kind].format(t=table, c=column)
            for kind, names in (
                ("add", add),
                ("least", least),
                ("greatest", greatest),
                ("replace", replace),
            )
            for column in names
        ]
        p = self.placeholder
        return (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(p for _ in columns)}) "
            + forms["conflict"].format(keys=", ".join(keys))
            + ", ".join(sets)
        )

    def _begin(self, conn: Any) -> None:
        """Start a transaction (drivers that open one implicitly need nothing)."""

    # -- connection handling -------------------------------------------------------------
    def _conn(self) -> Any:
        if self._closed:
            raise BackendUnavailable("store is closed", backend=self.backend)
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._connect()
            except Exception as exc:
                raise self._wrap(exc) from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _discard(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is None:
            return
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        with contextlib.suppress(Exception):  # best effort: it may be broken already
            conn.close()

    def _wrap(self, exc: Exception) -> DevMeshError:
        mapped = self._translate(exc)
        if mapped is not None:
            return mapped
        if isinstance(exc, DevMeshError):
            return exc
        return BackendUnavailable(f"{self.backend}: {exc}", backend=self.backend)

    def _in_lists(self, values: Sequence[V]) -> Iterator[tuple[Sequence[V], str]]:
        """``values`` in pieces small enough for one ``IN (...)`` each, with the piece's
        placeholder list."""
        for i in range(0, len(values), _IN_LIST):
            chunk = values[i : i + _IN_LIST]
            yield chunk, ", ".join([self.placeholder] * len(chunk))

    def _run(self, work: Callable[[Any], T], *, write: bool, retry: bool = True) -> T:
        """Run ``work(cursor)`` in a transaction on this thread's connection.

        A lost connection is replaced and the work retried once: every write here is
        idempotent (fingerprint dedup, deletes by predicate), so a retry cannot double data.
        """
        if write and self.serialize_writes:
            with self._write_lock:
                return self._attempt(work, write=write, retry=retry)
        return self._attempt(work, write=write, retry=retry)

    def _attempt(
        self, work: Callable[[Any], T], *, write: bool, retry: bool, conflicts: int = 0
    ) -> T:
        attempts = 2 if retry else 1
        for attempt in range(attempts):
            conn = self._conn()
            try:
                if write:
                    self._begin(conn)
                cur = conn.cursor()
                try:
                    result = work(cur)
                finally:
                    cur.close()
                conn.commit()
                return result
            except Exception as exc:
                mapped = self._wrap(exc)
                try:
                    conn.rollback()
                except Exception:
                    self._discard()
                if isinstance(mapped, BackendUnavailable):
                    self._discard()
                    if attempt + 1 < attempts:
                        continue
                if isinstance(mapped, TransactionConflict) and conflicts < self.conflict_retries:
                    # The database rolled the whole transaction back: run it again after
                    # a short random pause so the two writers do not collide again.
                    conflicts += 1
                    time.sleep(random.uniform(0.005, 0.02) * 2**conflicts)
                    return self._attempt(work, write=write, retry=retry, conflicts=conflicts)
                if mapped is exc:
                    raise
                raise mapped from exc
        raise AssertionError("unreachable")

    def run(self, work: Callable[[Any], T], *, write: bool) -> T:
        """Run ``work(cursor)`` in one transaction on this thread's connection.

        For the SQL repositories of other capabilities (incidents, remediation requests)
        that keep their tables in this database: they share its connections, retry on a
        lost connection and error translation. Their writes must be idempotent or guarded,
        since a lost connection retries the work once.
        """
        return self._run(work, write=write)

    def upsert_statement(
        self,
        table: str,
        columns: Sequence[str],
        keys: Sequence[str],
        *,
        add: Sequence[str] = (),
        least: Sequence[str] = (),
        greatest: Sequence[str] = (),
        replace: Sequence[str] = (),
    ) -> str:
        """An insert-or-merge statement in this store's dialect (see :meth:`_upsert`)."""
        return self._upsert(
            table, columns, keys, add=add, least=least, greatest=greatest, replace=replace
        )

    def close(self) -> None:
        if self._unfolded and not self._closed:
            try:
                self.fold_template_places()
            except DevMeshError as exc:  # the batches stay appended; the next fold adds them
                _log().warning("template_places_not_folded", error=str(exc))
        with self._lock:
            conns, self._all = self._all, []
            self._closed = True
        for conn in conns:
            with contextlib.suppress(Exception):  # best effort: it may be broken already
                conn.close()

    # -- schema --------------------------------------------------------------------------
    def schema_version(self) -> int:
        """The schema version recorded in the database (0 for an empty database)."""

        def read(cur: Any) -> int:
            cur.execute("SELECT MAX(version) FROM schema_version")
            row = cur.fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return self._run(read, write=False)

    def migrate(self) -> int:
        latest = self.migrations[-1].version if self.migrations else 0
        conn = self._conn()
        with self._migration_lock(conn):

            def apply(cur: Any) -> int:
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version "
                    "(version INTEGER NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)"
                )
                cur.execute("SELECT MAX(version) FROM schema_version")
                row = cur.fetchone()
                current = int(row[0]) if row and row[0] is not None else 0
                if current > latest:
                    raise SchemaError(
                        f"database schema is version {current}, newer than this DevMesh "
                        f"({latest}); upgrade DevMesh",
                        backend=self.backend,
                    )
                p = self.placeholder
                for migration in self.migrations:
                    if migration.version <= current:
                        continue
                    for statement in migration.statements:
                        cur.execute(statement)
                    cur.execute(
                        f"INSERT INTO schema_version (version, applied_at) VALUES ({p}, {p})",
                        (migration.version, _now_us()),
                    )
                    current = migration.version
                return current

            return self._run(apply, write=True, retry=False)

    # -- writes --------------------------------------------------------------------------
    def insert(
        self, events: Sequence[LogEvent], templates: Sequence[TemplateLike] | None = None
    ) -> InsertResult:
        if not events:
            return InsertResult(0, 0)
        if templates is not None and len(templates) != len(events):
            raise ValueError("templates must have one entry per event")
        now = _now_us()
        if templates is None:
            rows = [event_row(event, now) for event in events]
            stored = self._run(lambda cur: self._insert_rows(cur, rows), write=True)
            return InsertResult(stored=stored, duplicates=len(rows) - stored)
        pairs = list(zip(events, templates, strict=True))
        # Rows and counts are built before the write lock is taken (it serialises writers,
        # so Python work inside it is work no other request can overlap).
        rows = [event_row(e, now, t.template_id) for e, t in pairs]
        counts = count_templates(pairs)
        attempts = 0

        def work(cur: Any) -> int:
            nonlocal rows, attempts
            attempts += 1
            if attempts > 1:
                # A stamp of its own for each attempt: a retry after a commit whose answer
                # was lost must not mistake the first attempt's rows for its own.
                stamp = _now_us()
                rows = [(row[0], stamp, *row[2:]) for row in rows]
            stamp = rows[0][1]
            stored = self._insert_rows(cur, rows)
            fresh = counts
            if stored < len(rows):
                # Template statistics count each event once. Some events were stored already
                # (a re-sent batch) or repeated in the batch: the rows this transaction
                # inserted are the ones stamped with its ingestion time.
                new = self._stamped(cur, events, stamp)
                seen: set[bytes] = set()
                kept = []
                for event, template in pairs:
                    fp = event.fingerprint_bytes
                    if fp in new and fp not in seen:
                        seen.add(fp)
                        kept.append((event, template))
                fresh = count_templates(kept)
            self._write_counts(cur, fresh, stamp)
            return stored

        stored = self._run(work, write=True)
        self._fold_when_due()
        return InsertResult(stored=stored, duplicates=len(events) - stored)

    def _stamped(self, cur: Any, events: Sequence[LogEvent], ingested_us: int) -> set[bytes]:
        """Which of these events' fingerprints were stored with ingestion time ``ingested_us``.

        Looked up by (ts, fingerprint), the unique key, one equality pair per event: both
        databases answer an OR of index-prefix equalities with one index probe each.
        """
        found: set[bytes] = set()
        p = self.placeholder
        keys = list(dict.fromkeys((e.timestamp_us, e.fingerprint_bytes) for e in events))
        for i in range(0, len(keys), 200):
            chunk = keys[i : i + 200]
            pairs = " OR ".join([f"(ts = {p} AND fingerprint = {p})"] * len(chunk))
            cur.execute(
                f"SELECT fingerprint FROM logs WHERE ingested_at = {p} AND ({pairs})",
                (ingested_us, *(value for key in chunk for value in key)),
            )
            found.update(bytes(row[0]) for row in cur.fetchall())
        return found

    def _write_counts(self, cur: Any, counts: TemplateCounts, now: int) -> None:
        """Add a batch's counts (see :func:`count_templates`) to ``templates``, and append
        its places (template, service, host, level) for :meth:`fold_template_places`."""
        per_template, per_place = counts
        # Rows in key order: concurrent batches then lock them in the same order.
        if per_template:
            cur.executemany(
                self._templates_upsert(),
                [
                    (tid, text, n, lo, hi, now, now)
                    for tid, (text, n, lo, hi) in sorted(per_template.items())
                ],
            )
        if per_place:
            # One appended row per batch; fold_template_places() adds it to template_stats.
            self._unfolded = True
            cur.execute(
                f"INSERT INTO template_place_deltas (places) VALUES ({self.placeholder})",
                (
                    orjson.dumps(list(per_place.items())),
                ),  # [[[tid, service, host, level], [n, last]], …]
            )

    def fold_template_places(self) -> int:
        """Add the places of batches stored so far to ``template_stats``; returns how many
        batches were folded.

        Ingest appends each batch's places (counts per template, service, host and level)
        as one row instead of upserting hundreds of ``template_stats`` rows in its own
        transaction: that upsert rewrote most of the table into the log on every commit.
        Folding runs every ``place_fold_interval_s`` of ingest and before every read of
        places, so readers never see stale counts. Exactly once: the rows folded are
        deleted in the transaction that adds them (locked, so two workers cannot both add
        one); places of a template merged away since are added to the survivor.
        """
        folded = 0
        while True:
            n = self._run(self._fold_deltas, write=True)
            folded += n
            if n < _FOLD_ROWS:
                break
        self._folded_at = time.monotonic()
        self._unfolded = False
        return folded

    def _fold_deltas(self, cur: Any) -> int:
        p = self.placeholder
        cur.execute(
            f"SELECT id, places FROM template_place_deltas ORDER BY id LIMIT {_FOLD_ROWS}"
            + self.lock_rows
        )
        rows = cur.fetchall()
        if not rows:
            return 0
        per_place: dict[tuple[str, str, str, int], list[int]] = {}
        for _, blob in rows:
            for (tid, service, host, level), (n, last) in orjson.loads(bytes(blob)):
                key = (tid, service, host, level)
                place = per_place.get(key)
                if place is None:
                    per_place[key] = [n, last]
                else:
                    place[0] += n
                    place[1] = max(place[1], last)
        survivors = self._survivors(cur, {key[0] for key in per_place})
        if survivors:
            moved: dict[tuple[str, str, str, int], list[int]] = {}
            for (tid, service, host, level), (n, last) in per_place.items():
                key = (survivors.get(tid, tid), service, host, level)
                place = moved.setdefault(key, [0, last])
                place[0] += n
                place[1] = max(place[1], last)
            per_place = moved
        now = _now_us()
        # Rows in key order: concurrent folds then lock them in the same order.
        cur.executemany(
            self._stats_upsert(),
            [(*key, n, last, now) for key, (n, last) in sorted(per_place.items())],
        )
        # Stamp the templates too: template_places_since reads changed places through them.
        tids = sorted({key[0] for key in per_place})
        for chunk, marks in self._in_lists(tids):
            cur.execute(
                f"UPDATE templates SET updated_at = {p} WHERE template_id IN ({marks})",
                (now, *chunk),
            )
        for chunk, marks in self._in_lists([row[0] for row in rows]):
            cur.execute(f"DELETE FROM template_place_deltas WHERE id IN ({marks})", chunk)
        return len(rows)

    def _survivors(self, cur: Any, template_ids: set[str]) -> dict[str, str]:
        """For ids no longer in ``templates`` (merged away after their batch was stored),
        the id that stands for each now, following chains of merges."""
        ids = sorted(template_ids)
        live: set[str] = set()
        for chunk, marks in self._in_lists(ids):
            cur.execute(f"SELECT template_id FROM templates WHERE template_id IN ({marks})", chunk)
            live.update(row[0] for row in cur.fetchall())
        gone = [tid for tid in ids if tid not in live]
        if not gone:
            return {}
        cur.execute("SELECT old_id, new_id FROM template_merges ORDER BY merged_at")
        merged = {old: new for old, new in cur.fetchall()}
        out = {}
        for tid in gone:
            target, hops = tid, 0
            while target in merged and hops < 100:
                target, hops = merged[target], hops + 1
            if target != tid:
                out[tid] = target
        return out

    def _fold_when_due(self) -> None:
        if time.monotonic() - self._folded_at >= self.place_fold_interval_s:
            self.fold_template_places()

    def fold_pending_places(self) -> bool:
        """Fold what is pending before a read of places, so reads are exact (one indexed
        probe when nothing is); for code that reads ``template_stats`` itself. Returns
        whether anything was folded."""

        def pending(cur: Any) -> bool:
            cur.execute("SELECT 1 FROM template_place_deltas LIMIT 1")
            return cur.fetchone() is not None

        if self._run(pending, write=False):
            return self.fold_template_places() > 0
        return False

    def _templates_upsert(self) -> str:
        # updated_at: the newest change of the template or of any of its places
        # (template_stats), the watermark template_places_since reads through.
        return self._built("templates", self._templates_upsert_sql)

    def _templates_upsert_sql(self) -> str:
        return self._upsert(
            "templates",
            (
                "template_id",
                "template",
                "count",
                "first_seen",
                "last_seen",
                "created_at",
                "updated_at",
            ),
            ("template_id",),
            add=("count",),
            least=("first_seen",),
            greatest=("last_seen",),
            replace=("template", "updated_at"),
        )

    def _stats_upsert(self) -> str:
        return self._built("template_stats", self._stats_upsert_sql)

    def _built(self, name: str, build: Callable[[], str]) -> str:
        """A statement built once per adapter class (ingest asks for one per batch)."""
        key = (type(self), name)
        statement = _UPSERTS.get(key)
        if statement is None:
            statement = _UPSERTS[key] = build()
        return statement

    def _stats_upsert_sql(self) -> str:
        return self._upsert(
            "template_stats",
            ("template_id", "service", "host", "level", "count", "last_seen", "updated_at"),
            ("template_id", "service", "host", "level"),
            add=("count",),
            greatest=("last_seen",),
            replace=("updated_at",),
        )

    def assign_templates(
        self, events: Sequence[StoredEvent], templates: Sequence[TemplateLike]
    ) -> int:
        """Set the template of already stored events (backfill) and count them in."""
        if len(events) != len(templates):
            raise ValueError("templates must have one entry per event")
        p = self.placeholder
        now = _now_us()

        def work(cur: Any) -> int:
            done = []
            for event, template in zip(events, templates, strict=True):
                cur.execute(
                    f"UPDATE logs SET template_id = {p} WHERE id = {p} AND template_id IS NULL",
                    (template.template_id, event.id),
                )
                if cur.rowcount == 1:  # only rows still unmined count (a rerun is a no-op)
                    done.append((event, template))
            self._write_counts(cur, count_templates(done), now)
            return len(done)

        assigned = self._run(work, write=True)
        self._fold_when_due()
        return assigned

    def events_without_template(self, limit: int = 5_000) -> list[StoredEvent]:
        """Oldest-first events that were stored before mining ran (for a backfill)."""

        def read(cur: Any) -> list[Any]:
            cur.execute(
                f"SELECT {_SELECT_LIST} FROM logs WHERE template_id IS NULL "
                f"ORDER BY id LIMIT {int(limit)}"
            )
            return list(cur.fetchall())

        return [stored_event(row) for row in self._run(read, write=False)]

    def merge_templates(self, merged: Mapping[str, str], texts: Mapping[str, str]) -> None:
        """Fold templates the miner merged away into the ids that now stand for them.

        Their events are re-labelled and their counts added; ``texts`` gives the current
        text of each surviving id. Idempotent: an id already folded is skipped.
        """
        if not merged:
            return
        p = self.placeholder
        now = _now_us()

        def work(cur: Any) -> None:
            # Sorted, so concurrent folds lock rows in the same order (no deadlock cycle);
            # the rows read are locked, so two workers folding the same merge cannot both
            # add the old template's count.
            for old, new in sorted(merged.items()):
                if old == new:
                    continue
                cur.execute(
                    "SELECT template, count, first_seen, last_seen, created_at FROM templates "
                    f"WHERE template_id = {p}{self.lock_rows}",
                    (old,),
                )
                row = cur.fetchone()
                if row is not None:
                    _, count, first, last, created = row
                    cur.execute(
                        self._templates_upsert(),
                        (new, texts.get(new, row[0]), count, first, last, created, now),
                    )
                    cur.execute(
                        "SELECT service, host, level, count, last_seen FROM template_stats "
                        f"WHERE template_id = {p}{self.lock_rows}",
                        (old,),
                    )
                    stats = [(new, *r, now) for r in cur.fetchall()]
                    if stats:
                        cur.executemany(self._stats_upsert(), stats)
                    cur.execute(f"DELETE FROM template_stats WHERE template_id = {p}", (old,))
                    cur.execute(f"DELETE FROM templates WHERE template_id = {p}", (old,))
                    cur.execute(
                        "INSERT INTO template_merges (old_id, new_id, merged_at) "
                        f"VALUES ({p}, {p}, {p})",
                        (old, new, now),
                    )
                cur.execute(
                    f"UPDATE logs SET template_id = {p} WHERE template_id = {p}", (new, old)
                )
            for tid, text in texts.items():
                # the surviving template's text widened: its vector must be computed again
                cur.execute(
                    f"UPDATE templates SET template = {p}, embedded_at = NULL "
                    f"WHERE template_id = {p} AND template <> {p}",
                    (text, tid, text),
                )

        self._run(work, write=True)

    def _template_infos(
        self, cur: Any, where: str, params: Sequence[Any], tail: str
    ) -> list[TemplateInfo]:
        cur.execute(
            "SELECT template_id, template, count, first_seen, last_seen, embedded_at "
            f"FROM templates {where} {tail}",
            params,
        )
        rows = cur.fetchall()
        if not rows:
            return []
        ids = [row[0] for row in rows]
        places: dict[str, list[tuple[str, str, int, int]]] = {tid: [] for tid in ids}
        for chunk, marks in self._in_lists(ids):
            cur.execute(
                "SELECT template_id, service, host, level, count FROM template_stats "
                f"WHERE template_id IN ({marks})",
                chunk,
            )
            for tid, service, host, level, count in cur.fetchall():
                places[tid].append((service, host, level, count))
        out = []
        for tid, text, count, first, last, embedded_at in rows:
            levels: dict[str, int] = {}
            for _, _, level, n in places[tid]:
                name = RANK_LEVEL[level].value
                levels[name] = levels.get(name, 0) + n
            out.append(
                TemplateInfo(
                    template_id=tid,
                    template=text,
                    services=tuple(sorted({s for s, _, _, _ in places[tid]})),
                    hosts=tuple(sorted({h for _, h, _, _ in places[tid]})),
                    count=int(count),
                    first_seen=from_micros(first),
                    last_seen=from_micros(last),
                    levels=levels,
                    embedded=embedded_at is not None,
                )
            )
        return out

    def get_templates(self, template_ids: Sequence[str]) -> dict[str, TemplateInfo]:
        ids = list(dict.fromkeys(template_ids))
        if not ids:
            return {}
        self.fold_pending_places()

        def read(cur: Any) -> list[TemplateInfo]:
            found: list[TemplateInfo] = []
            for chunk, marks in self._in_lists(ids):
                found.extend(
                    self._template_infos(cur, f"WHERE template_id IN ({marks})", chunk, "")
                )
            return found

        return {info.template_id: info for info in self._run(read, write=False)}

    def template_texts(self, template_ids: Sequence[str]) -> dict[str, str]:
        ids = list(dict.fromkeys(template_ids))

        def read(cur: Any) -> dict[str, str]:
            found: dict[str, str] = {}
            for chunk, marks in self._in_lists(ids):
                cur.execute(
                    f"SELECT template_id, template FROM templates WHERE template_id IN ({marks})",
                    chunk,
                )
                found.update((str(tid), str(text)) for tid, text in cur.fetchall())
            return found

        return self._run(read, write=False) if ids else {}

    def list_templates(self, *, service: str | None = None, limit: int = 100) -> list[TemplateInfo]:
        self.fold_pending_places()
        p = self.placeholder
        where, params = "", []
        if service is not None:
            where = (
                f"WHERE template_id IN (SELECT template_id FROM template_stats WHERE service = {p})"
            )
            params = [service]
        tail = f"ORDER BY last_seen DESC LIMIT {int(limit)}"
        return self._run(lambda cur: self._template_infos(cur, where, params, tail), write=False)

    def templates_to_embed(self, limit: int = 256) -> list[TemplateInfo]:
        tail = f"ORDER BY created_at LIMIT {int(limit)}"

        def read(cur: Any) -> list[TemplateInfo]:
            return self._template_infos(cur, "WHERE embedded_at IS NULL", (), tail)

        # Asked after every ingest batch and nearly always empty: places are folded only
        # when there is something to embed (its payload carries services and hosts).
        infos = self._run(read, write=False)
        if infos and self.fold_pending_places():
            infos = self._run(read, write=False)
        return infos

    def mark_embedded(self, template_ids: Sequence[str]) -> None:
        p = self.placeholder
        now = _now_us()
        self._run(
            lambda cur: cur.executemany(
                f"UPDATE templates SET embedded_at = {p} WHERE template_id = {p}",
                [(now, tid) for tid in template_ids],
            ),
            write=True,
        )

    _PLACES = (
        "SELECT s.template_id, t.template, s.service, s.host, s.level, s.count, "
        "s.last_seen, s.updated_at FROM template_stats s "
        "JOIN templates t ON t.template_id = s.template_id "
    )

    @staticmethod
    def _places(rows: Sequence[Sequence[Any]]) -> list[TemplatePlace]:
        return [
            TemplatePlace(
                tid,
                text,
                service,
                host,
                RANK_LEVEL[level],
                int(count),
                from_micros(last),
                int(updated),
            )
            for tid, text, service, host, level, count, last, updated in rows
        ]

    def template_places_since(self, after_us: int) -> list[TemplatePlace]:
        self.fold_pending_places()
        p = self.placeholder

        def read(cur: Any) -> list[TemplatePlace]:
            # Through the templates' updated_at index: every change of a place also stamps
            # its template (in the same transaction, same time), and template_stats carries
            # no index on its own updated_at, which each ingest batch would rewrite.
            cur.execute(
                self._PLACES + f"WHERE t.updated_at > {p} AND s.updated_at > {p} "
                "ORDER BY s.updated_at",
                (after_us, after_us),
            )
            return self._places(cur.fetchall())

        return self._run(read, write=False)

    def template_places(self, template_ids: Sequence[str]) -> list[TemplatePlace]:
        ids = list(dict.fromkeys(template_ids))
        if ids:
            self.fold_pending_places()

        def read(cur: Any) -> list[TemplatePlace]:
            found: list[TemplatePlace] = []
            for chunk, marks in self._in_lists(ids):
                cur.execute(self._PLACES + f"WHERE s.template_id IN ({marks})", chunk)
                found.extend(self._places(cur.fetchall()))
            return found

        return self._run(read, write=False) if ids else []

    def template_merges_since(self, after_us: int) -> list[tuple[str, str, int]]:
        p = self.placeholder

        def read(cur: Any) -> list[tuple[str, str, int]]:
            cur.execute(
                "SELECT old_id, new_id, merged_at FROM template_merges "
                f"WHERE merged_at > {p} ORDER BY merged_at",
                (after_us,),
            )
            return [(old, new, int(at)) for old, new, at in cur.fetchall()]

        return self._run(read, write=False)

    def events_of_types(
        self, event_types: Sequence[str], *, after_id: int = 0, limit: int = 1_000
    ) -> list[StoredEvent]:
        if not event_types:
            return []
        p = self.placeholder

        def read(cur: Any) -> list[Any]:
            cur.execute(
                f"SELECT {_SELECT_LIST} FROM logs WHERE id > {p} "
                f"AND event_type IN ({', '.join([p] * len(event_types))}) "
                f"ORDER BY id LIMIT {int(limit)}",
                (after_id, *event_types),
            )
            return list(cur.fetchall())

        return [stored_event(row) for row in self._run(read, write=False)]

    def template_count(self) -> int:
        def read(cur: Any) -> int:
            cur.execute("SELECT COUNT(*) FROM templates")
            return int(cur.fetchone()[0])

        return self._run(read, write=False)

    def delete_older_than(self, cutoff: datetime, batch_size: int = 10_000) -> int:
        cutoff_us = to_micros(cutoff)
        total = 0
        while True:
            deleted = self._run(
                lambda cur: self._delete_batch(cur, cutoff_us, batch_size), write=True
            )
            total += deleted
            if deleted < batch_size:
                return total

    # -- reads ---------------------------------------------------------------------------
    def _filters(self, query: LogQuery, with_text: bool = True) -> tuple[list[str], list[Any]]:
        """WHERE terms for every filter except the level (callers add it their way)."""
        p = self.placeholder
        terms: list[str] = []
        params: list[Any] = []
        if query.service is not None:
            terms.append(f"service = {p}")
            params.append(query.service)
        if query.host is not None:
            terms.append(f"host = {p}")
            params.append(query.host)
        if query.trace_id is not None:
            terms.append(f"trace_id = {p}")
            params.append(query.trace_id)
        if query.template_id is not None:
            terms.append(f"template_id = {p}")
            params.append(query.template_id)
        if query.start_time is not None:
            terms.append(f"ts >= {p}")
            params.append(to_micros(query.start_time))
        if query.end_time is not None:
            terms.append(f"ts < {p}")
            params.append(to_micros(query.end_time))
        if query.text and with_text:
            terms.append(f"message LIKE {p} ESCAPE '!'")
            params.append(like_pattern(query.text))
        return terms, params

    def _select(self, query: LogQuery) -> tuple[str, list[Any]]:
        p = self.placeholder
        min_rank = query.level.rank if query.level is not None else _ALL_RANKS[0]
        per_level = (
            query.trace_id is None
            and query.template_id is None
            and (min_rank > _ALL_RANKS[0] or query.service is not None or query.host is not None)
        )
        text_last = per_level and bool(query.text) and self.text_after_merge
        terms, params = self._filters(query, with_text=not text_last)
        direction = "DESC" if query.order == "desc" else "ASC"
        if query.cursor:
            c = Cursor.decode(query.cursor, query.order)
            op = "<" if query.order == "desc" else ">"
            terms.append(f"ts {op}= {p} AND (ts {op} {p} OR id {op} {p})")
            params.extend([c.ts, c.ts, c.id])
        limit = int(query.limit)
        offset = max(int(query.offset), 0)
        fetch = limit + 1  # one more row than asked tells whether a next page exists
        order_by = f"ORDER BY ts {direction}, id {direction}"
        page = f"LIMIT {fetch} OFFSET {offset}"
        if not per_level:
            if min_rank > _ALL_RANKS[0]:
                terms.append(f"level >= {p}")
                params.append(min_rank)
            where = f"WHERE {' AND '.join(terms)}" if terms else ""
            return f"SELECT {_SELECT_LIST} FROM logs {where} {order_by} {page}", params
        # Each level's newest rows come straight off a (…, level, ts) index: only (id, ts)
        # travel through the union (covering, so no row reads, and small temp tables: MariaDB
        # would spill TEXT columns to disk), then one join fetches the page's rows.
        # Each part names the index that leads with its equality filters: with ORDER BY …
        # LIMIT, MariaDB's planner otherwise often walks ix_logs_ts from the newest row and
        # tests every row (a selective filter then reads most of the table: 150-270 ms at
        # 1M rows for a service and a text, bench/query.py). The service index carries the
        # host, so service + host is answered from the index alone.
        if query.service is not None:
            index = "ix_logs_service_level_ts_host"
        elif query.host is not None:
            index = "ix_logs_host_level_ts"
        else:
            index = "ix_logs_level_ts"
        hint = self.index_hint.format(index)
        ranks = [r for r in _ALL_RANKS if r >= min_rank]
        all_params: list[Any] = []
        for rank in ranks:
            all_params.extend([*params, rank])
        where = " AND ".join([*terms, f"level = {p}"])
        if text_last:
            # The parts yield every index entry that passes the other filters (no row
            # reads), and the merged stream is read row by row in time order until the page
            # is full: only the messages the answer needs are tested. Per-level LIMITs
            # would test up to a page of matches in every level, ~5x the row reads (MariaDB
            # p95 76 -> 20 ms for a service and a text at 1M rows, bench/query.py).
            keys = " UNION ALL ".join(
                f"SELECT id, ts FROM logs {hint} WHERE {where}" for _ in ranks
            )
            all_params.append(like_pattern(query.text or ""))
            sql = (
                f"SELECT {_JOINED_LIST} FROM ({keys}) AS k JOIN logs ON logs.id = k.id "
                f"WHERE logs.message LIKE {p} ESCAPE '!' "
                f"ORDER BY k.ts {direction}, k.id {direction} {page}"
            )
            return sql, all_params
        keys = " UNION ALL ".join(
            f"SELECT * FROM (SELECT id, ts FROM logs {hint} WHERE {where} "
            f"{order_by} LIMIT {fetch + offset}) AS p{i}"
            for i in range(len(ranks))
        )
        sql = (
            f"SELECT {_JOINED_LIST} FROM ({keys} {order_by} {page}) AS k "
            f"JOIN logs ON logs.id = k.id ORDER BY k.ts {direction}, k.id {direction}"
        )
        return sql, all_params

    def query(self, query: LogQuery) -> Page:
        sql, params = self._select(query)

        def read(cur: Any) -> list[Any]:
            cur.execute(sql, params)
            return list(cur.fetchall())

        rows = self._run(read, write=False)
        events = [stored_event(row) for row in rows[: query.limit]]
        next_cursor = None
        if len(rows) > query.limit and events:
            last = events[-1]
            next_cursor = Cursor(query.order, to_micros(last.timestamp), last.id).encode()
        return Page(events=events, next=next_cursor)

    def count(self, query: LogQuery | None = None) -> int:
        query = query or LogQuery()
        terms, params = self._filters(query)
        if query.level is not None and query.level.rank > _ALL_RANKS[0]:
            terms.append(f"level >= {self.placeholder}")
            params.append(query.level.rank)
        where = f"WHERE {' AND '.join(terms)}" if terms else ""

        def read(cur: Any) -> int:
            cur.execute(f"SELECT COUNT(*) FROM logs {where}", params)
            return int(cur.fetchone()[0])

        return self._run(read, write=False)

    def ping(self) -> None:
        def read(cur: Any) -> None:
            cur.execute("SELECT 1")
            cur.fetchone()

        self._run(read, write=False)

    # -- tokens --------------------------------------------------------------------------
    def add_token(self, name: str, token_hash: str, host: str | None = None) -> None:
        p = self.placeholder

        def write(cur: Any) -> None:
            cur.execute(
                "INSERT INTO api_tokens (name, token_hash, created_at, host) "
                f"VALUES ({p}, {p}, {p}, {p})",
                (name, token_hash, _now_us(), host),
            )

        self._run(write, write=True, retry=False)

    def token_hashes(self) -> set[str]:
        def read(cur: Any) -> set[str]:
            cur.execute("SELECT token_hash FROM api_tokens WHERE revoked_at IS NULL")
            return {row[0] for row in cur.fetchall()}

        return self._run(read, write=False)

    def token_hosts(self) -> dict[str, str]:
        def read(cur: Any) -> dict[str, str]:
            cur.execute(
                "SELECT token_hash, host FROM api_tokens "
                "WHERE revoked_at IS NULL AND host IS NOT NULL"
            )
            return {row[0]: row[1] for row in cur.fetchall()}

        return self._run(read, write=False)

    def revoke_token(self, name: str) -> int:
        p = self.placeholder

        def write(cur: Any) -> int:
            cur.execute(
                f"UPDATE api_tokens SET revoked_at = {p} WHERE name = {p} AND revoked_at IS NULL",
                (_now_us(), name),
            )
            return int(cur.rowcount)

        return self._run(write, write=True)


def _now_us() -> int:
    return to_micros(datetime.now(UTC))
