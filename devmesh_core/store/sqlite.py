"""SQLite adapter: the embedded default store (one file in the data directory, WAL mode)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from devmesh_core.errors import BackendError, BackendUnavailable, ConfigError, DevMeshError
from devmesh_core.store import schema_actions, schema_incidents
from devmesh_core.store.sql import INSERT_COLUMNS, Migration, SQLLogStore

_V1 = Migration(
    1,
    (
        """CREATE TABLE logs (
            id INTEGER PRIMARY KEY,
            ts INTEGER NOT NULL,
            ingested_at INTEGER NOT NULL,
            source TEXT NOT NULL,
            service TEXT NOT NULL,
            host TEXT NOT NULL,
            level INTEGER NOT NULL,
            message TEXT NOT NULL,
            trace_id TEXT,
            span_id TEXT,
            event_type TEXT,
            error_code TEXT,
            meta TEXT,
            source_id TEXT,
            fingerprint BLOB NOT NULL
        )""",
        "CREATE UNIQUE INDEX ux_logs_fingerprint ON logs (fingerprint)",
        "CREATE INDEX ix_logs_ts ON logs (ts)",
        "CREATE INDEX ix_logs_service_level_ts ON logs (service, level, ts)",
        "CREATE INDEX ix_logs_host_level_ts ON logs (host, level, ts)",
        "CREATE INDEX ix_logs_level_ts ON logs (level, ts)",
        "CREATE INDEX ix_logs_trace ON logs (trace_id) WHERE trace_id IS NOT NULL",
        """CREATE TABLE api_tokens (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        )""",
    ),
)

_V2 = Migration(
    2,
    (
        "ALTER TABLE logs ADD COLUMN template_id TEXT",
        "CREATE INDEX ix_logs_template_ts ON logs (template_id, ts)",
        """CREATE TABLE templates (
            template_id TEXT PRIMARY KEY,
            template TEXT NOT NULL,
            count INTEGER NOT NULL,
            first_seen INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            embedded_at INTEGER
        )""",
        "CREATE INDEX ix_templates_last_seen ON templates (last_seen)",
        "CREATE INDEX ix_templates_to_embed ON templates (created_at) WHERE embedded_at IS NULL",
        """CREATE TABLE template_stats (
            template_id TEXT NOT NULL,
            service TEXT NOT NULL,
            host TEXT NOT NULL,
            level INTEGER NOT NULL,
            count INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            PRIMARY KEY (template_id, service, host, level)
        ) WITHOUT ROWID""",
        "CREATE INDEX ix_template_stats_service ON template_stats (service, template_id)",
    ),
)

_V3 = Migration(
    3,
    (
        "ALTER TABLE template_stats ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX ix_template_stats_updated ON template_stats (updated_at)",
        """CREATE TABLE template_merges (
            old_id TEXT NOT NULL,
            new_id TEXT NOT NULL,
            merged_at INTEGER NOT NULL
        )""",
        "CREATE INDEX ix_template_merges_at ON template_merges (merged_at)",
    ),
)

_V4 = Migration(
    4,
    ("CREATE INDEX ix_logs_event_type ON logs (event_type, id) WHERE event_type IS NOT NULL",),
)

# Node tokens: a token bound to a host may only act for that host (agent poll and results).
_V7 = Migration(7, ("ALTER TABLE api_tokens ADD COLUMN host TEXT",))

# Dedup on (ts, fingerprint) instead of the bare fingerprint. The fingerprint hashes the
# timestamp, so the two keys accept the same rows; but a bare hash lands every new row on a
# random page of its index, and each 1,000-row commit then rewrote ~1,000 index pages into
# the WAL. Led by the timestamp, new keys append to the index's right edge, as ix_logs_ts
# does: the insert rate rose by about half (bench/store.py).
_V8 = Migration(
    8,
    (
        "CREATE UNIQUE INDEX ux_logs_ts_fingerprint ON logs (ts, fingerprint)",
        "DROP INDEX ux_logs_fingerprint",
    ),
)

# The watermark of changed template places moves from template_stats to templates: an index
# on template_stats.updated_at had one entry per place rewritten at a random position by each
# batch (most of the cost of counting templates at ingest, bench/ingest_http.py), while a
# batch touches far fewer templates than places.
_V9 = Migration(
    9,
    (
        "ALTER TABLE templates ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0",
        "UPDATE templates SET updated_at = COALESCE((SELECT MAX(s.updated_at) "
        "FROM template_stats s WHERE s.template_id = templates.template_id), 0)",
        "CREATE INDEX ix_templates_updated ON templates (updated_at)",
        "DROP INDEX ix_template_stats_updated",
    ),
)

# Place counts (template_stats) leave the ingest transaction: a batch appends its places as
# one row here and the store folds pending rows into template_stats every couple of seconds and
# before any read of places. Upserting ~750 places per 1,000-event batch rewrote most of
# template_stats into the WAL on every commit: the whole slowdown that template mining added
# to HTTP ingest (bench/ingest_http.py).
_V10 = Migration(
    10,
    ("CREATE TABLE template_place_deltas (id INTEGER PRIMARY KEY, places BLOB NOT NULL)",),
)

# The service index carries the host as a last column. Same insertion points as before (so
# the same insert cost), but a service + host query tests the host on index entries instead
# of reading each row of the service: at 1M rows, a service that runs on all 20 hosts took
# p95 68 ms on SQLite and 174 ms on MariaDB (bench/query.py).
_V11 = Migration(
    11,
    (
        "CREATE INDEX ix_logs_service_level_ts_host ON logs (service, level, ts, id, host)",
        "DROP INDEX ix_logs_service_level_ts",
    ),
)

_INSERT = (
    f"INSERT INTO logs ({', '.join(INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in INSERT_COLUMNS)}) "
    "ON CONFLICT (ts, fingerprint) DO NOTHING"
)


class SQLiteLogStore(SQLLogStore):
    """Logs in one SQLite file. WAL lets readers run while a writer inserts; ``synchronous=
    NORMAL`` keeps commits durable across a process crash (a power cut may lose the last
    transactions, never corrupt the file)."""

    backend = "sqlite"
    placeholder = "?"
    serialize_writes = True
    migrations = (
        _V1,
        _V2,
        _V3,
        _V4,
        *schema_incidents.SQLITE,
        *schema_actions.SQLITE,
        _V7,
        _V8,
        _V9,
        _V10,
        _V11,
    )
    merge_forms: ClassVar[Mapping[str, str]] = {
        "conflict": "ON CONFLICT ({keys}) DO UPDATE SET ",
        "add": "{c} = {t}.{c} + excluded.{c}",
        "least": "{c} = MIN({t}.{c}, excluded.{c})",
        "greatest": "{c} = MAX({t}.{c}, excluded.{c})",
        "replace": "{c} = excluded.{c}",
    }

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        super().__init__()
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot create {path.parent}: {exc}", backend="sqlite"
            ) from exc

    @classmethod
    def from_url(cls, url: str) -> SQLiteLogStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise ConfigError(f"bad SQLite URL {url!r}: expected sqlite:///path/to/file.db")
        path = url[len(prefix) :].split("?", 1)[0]
        if path == ":memory:":
            raise ConfigError("an in-memory SQLite store is not supported; give a file path")
        return cls(Path(path))

    def _connect(self) -> Any:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        # Checkpoint the WAL every ~64 MB rather than SQLite's 4 MB. A checkpoint copies each
        # changed page once and fsyncs twice; ingest rewrites the same index pages commit after
        # commit, so a longer WAL folds many of those writes into one (1.3-1.5x the insert
        # rate of a 16 MB WAL, bench/store.py). The size limit hands the disk back after a
        # burst that a long-running reader stretched past it.
        conn.execute("PRAGMA wal_autocheckpoint=16000")
        conn.execute("PRAGMA journal_size_limit=67108864")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _translate(self, exc: Exception) -> DevMeshError | None:
        if isinstance(exc, sqlite3.OperationalError):
            text = str(exc)
            if "locked" in text or "busy" in text or "unable to open" in text or "disk" in text:
                return BackendUnavailable(f"sqlite: {text}", backend="sqlite")
            return BackendError(f"sqlite: {text}", backend="sqlite")
        if isinstance(exc, sqlite3.Error):
            return BackendError(f"sqlite: {exc}", backend="sqlite")
        return None

    def _insert_rows(self, cur: Any, rows: list[tuple[Any, ...]]) -> int:
        before = cur.connection.total_changes
        cur.executemany(_INSERT, rows)
        return int(cur.connection.total_changes - before)

    def _delete_batch(self, cur: Any, cutoff_us: int, batch_size: int) -> int:
        cur.execute(
            "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE ts < ? LIMIT ?)",
            (cutoff_us, batch_size),
        )
        return int(cur.rowcount)

    @contextmanager
    def _migration_lock(self, conn: Any) -> Iterator[None]:
        # BEGIN IMMEDIATE in _run already serialises writers across processes.
        yield
