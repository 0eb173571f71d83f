"""MariaDB / MySQL adapter (through pymysql): the store for a fleet."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql
import pymysql.err
from pymysql.constants import SERVER_STATUS
from pymysql.converters import escape_string

from devmesh_core.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    DevMeshError,
    TransactionConflict,
)
from devmesh_core.store import schema_actions, schema_incidents
from devmesh_core.store.sql import INSERT_COLUMNS, Migration, SQLLogStore

_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
# Names compare exactly (as in SQLite); only the message is case-insensitive, for LIKE.
_NAME = "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
_SHORT = "VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"

_V1 = Migration(
    1,
    (
        f"""CREATE TABLE logs (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            ts BIGINT NOT NULL,
            ingested_at BIGINT NOT NULL,
            source {_NAME} NOT NULL,
            service {_NAME} NOT NULL,
            host {_NAME} NOT NULL,
            level TINYINT UNSIGNED NOT NULL,
            message MEDIUMTEXT NOT NULL,
            trace_id {_SHORT} NULL,
            span_id {_SHORT} NULL,
            event_type {_SHORT} NULL,
            error_code {_SHORT} NULL,
            meta MEDIUMTEXT NULL,
            source_id VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
            fingerprint BINARY(16) NOT NULL,
            UNIQUE KEY ux_logs_fingerprint (fingerprint),
            KEY ix_logs_ts (ts),
            KEY ix_logs_service_level_ts (service, level, ts),
            KEY ix_logs_host_level_ts (host, level, ts),
            KEY ix_logs_level_ts (level, ts),
            KEY ix_logs_trace (trace_id)
        ) {_TABLE_OPTIONS}""",
        f"""CREATE TABLE api_tokens (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            name {_NAME} NOT NULL,
            token_hash CHAR(64) CHARACTER SET ascii NOT NULL,
            created_at BIGINT NOT NULL,
            revoked_at BIGINT NULL,
            UNIQUE KEY ux_api_tokens_hash (token_hash)
        ) {_TABLE_OPTIONS}""",
    ),
)

_TID = "VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin"
_V2 = Migration(
    2,
    (
        f"ALTER TABLE logs ADD COLUMN template_id {_TID} NULL, "
        "ADD KEY ix_logs_template_ts (template_id, ts)",
        f"""CREATE TABLE templates (
            template_id {_TID} NOT NULL PRIMARY KEY,
            template MEDIUMTEXT NOT NULL,
            count BIGINT NOT NULL,
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            embedded_at BIGINT NULL,
            KEY ix_templates_last_seen (last_seen),
            KEY ix_templates_to_embed (embedded_at, created_at)
        ) {_TABLE_OPTIONS}""",
        f"""CREATE TABLE template_stats (
            template_id {_TID} NOT NULL,
            service {_NAME} NOT NULL,
            host {_NAME} NOT NULL,
            level TINYINT UNSIGNED NOT NULL,
            count BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            PRIMARY KEY (template_id, service, host, level),
            KEY ix_template_stats_service (service, template_id)
        ) {_TABLE_OPTIONS}""",
    ),
)

_V3 = Migration(
    3,
    (
        "ALTER TABLE template_stats ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0, "
        "ADD KEY ix_template_stats_updated (updated_at)",
        f"""CREATE TABLE template_merges (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            old_id {_TID} NOT NULL,
            new_id {_TID} NOT NULL,
            merged_at BIGINT NOT NULL,
            KEY ix_template_merges_at (merged_at)
        ) {_TABLE_OPTIONS}""",
    ),
)

_V4 = Migration(4, ("ALTER TABLE logs ADD KEY ix_logs_event_type (event_type, id)",))

# Node tokens: a token bound to a host may only act for that host (agent poll and results).
_V7 = Migration(7, (f"ALTER TABLE api_tokens ADD COLUMN host {_NAME} NULL",))

# Dedup on (ts, fingerprint): the same rows as the bare fingerprint (which hashes the
# timestamp), but new keys append near the index's right edge instead of on random pages,
# and InnoDB cannot buffer changes to a unique index (see the SQLite adapter's _V8).
_V8 = Migration(
    8,
    (
        "ALTER TABLE logs ADD UNIQUE KEY ux_logs_ts_fingerprint (ts, fingerprint), "
        "DROP KEY ux_logs_fingerprint",
    ),
)

# The watermark of changed template places moves to templates (see the SQLite adapter's _V9).
_V9 = Migration(
    9,
    (
        "ALTER TABLE templates ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0, "
        "ADD KEY ix_templates_updated (updated_at)",
        "UPDATE templates t SET updated_at = COALESCE((SELECT MAX(s.updated_at) "
        "FROM template_stats s WHERE s.template_id = t.template_id), 0)",
        "ALTER TABLE template_stats DROP KEY ix_template_stats_updated",
    ),
)

# Place counts are folded from per-batch rows (see the SQLite adapter's _V10).
_V10 = Migration(
    10,
    (
        f"""CREATE TABLE template_place_deltas (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            places LONGBLOB NOT NULL
        ) {_TABLE_OPTIONS}""",
    ),
)

# The service index carries the host (see the SQLite adapter's _V11).
_V11 = Migration(
    11,
    (
        "ALTER TABLE logs ADD KEY ix_logs_service_level_ts_host (service, level, ts, id, host), "
        "DROP KEY ix_logs_service_level_ts",
    ),
)

# ON DUPLICATE KEY UPDATE (not INSERT IGNORE, which would also swallow data errors) makes a
# duplicate fingerprint a no-op that reports 0 affected rows. This parameterised form is what
# the raw-driver benchmark runs through pymysql's executemany.
_INSERT = (
    f"INSERT INTO logs ({', '.join(INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in INSERT_COLUMNS)}) "
    "ON DUPLICATE KEY UPDATE id = id"
)
_INSERT_HEAD = f"INSERT INTO logs ({', '.join(INSERT_COLUMNS)}) VALUES "
_INSERT_TAIL = " ON DUPLICATE KEY UPDATE id = id"
# Statements stay well under the server's default max_allowed_packet (16 MiB).
_MAX_STATEMENT_CHARS = 4 * 1024 * 1024

# Client-side errors meaning "the server is gone or unreachable", worth a reconnect.
_CONNECTION_ERRORS = {2003, 2006, 2013, 2055, 1040, 1053}
# 1213 deadlock, 1205 lock wait timeout: InnoDB rolled the transaction back; run it again.
_CONFLICT_ERRORS = frozenset({1205, 1213})


def _string_escaper(conn: Any) -> Callable[[str], str]:
    """The string escaping that is correct for this connection's SQL mode (as pymysql does)."""
    if conn.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        return lambda text: text.replace("'", "''")
    return escape_string


class MySQLLogStore(SQLLogStore):
    """Logs in a MariaDB (or MySQL) database."""

    backend = "mysql"
    placeholder = "%s"
    migrations = (
        _V1,
        _V2,
        _V3,
        _V4,
        *schema_incidents.MYSQL,
        *schema_actions.MYSQL,
        _V7,
        _V8,
        _V9,
        _V10,
        _V11,
    )
    lock_rows = " FOR UPDATE"
    index_hint = "FORCE INDEX ({})"
    text_after_merge = True
    merge_forms: ClassVar[Mapping[str, str]] = {
        "conflict": "ON DUPLICATE KEY UPDATE ",
        "add": "{c} = {c} + VALUES({c})",
        "least": "{c} = LEAST({c}, VALUES({c}))",
        "greatest": "{c} = GREATEST({c}, VALUES({c}))",
        "replace": "{c} = VALUES({c})",
    }

    def __init__(self, **connect_args: Any) -> None:
        super().__init__()
        self._connect_args = connect_args

    @classmethod
    def from_url(cls, url: str) -> MySQLLogStore:
        """``mysql://user:password@host:port/database?unix_socket=/path&connect_timeout=5``."""
        parts = urlsplit(url)
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise ConfigError(f"MySQL URL {url!r} names no database (mysql://user@host/db)")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        args: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 3306,
            "user": unquote(parts.username or "root"),
            "password": unquote(parts.password or ""),
            "database": database,
            "connect_timeout": int(options.get("connect_timeout", 5)),
            "read_timeout": int(options.get("read_timeout", 60)),
            "write_timeout": int(options.get("write_timeout", 60)),
        }
        if "unix_socket" in options:
            args["unix_socket"] = options["unix_socket"]
        return cls(**args)

    @property
    def database(self) -> str:
        return str(self._connect_args["database"])

    def _connect(self) -> Any:
        return pymysql.connect(
            **self._connect_args,
            charset="utf8mb4",
            autocommit=False,
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        )

    def _translate(self, exc: Exception) -> DevMeshError | None:
        if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InterfaceError):
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            if code in _CONNECTION_ERRORS or isinstance(exc, pymysql.err.InterfaceError):
                return BackendUnavailable(f"mysql: {exc}", backend="mysql")
            if code in _CONFLICT_ERRORS:
                return TransactionConflict(f"mysql: {exc}", backend="mysql")
            return BackendError(f"mysql: {exc}", backend="mysql")
        if isinstance(exc, pymysql.err.MySQLError):
            return BackendError(f"mysql: {exc}", backend="mysql")
        if isinstance(exc, OSError | EOFError):
            return BackendUnavailable(f"mysql: {exc}", backend="mysql")
        return None

    def _insert_rows(self, cur: Any, rows: list[tuple[Any, ...]]) -> int:
        """Multi-row INSERTs built with the connection's own escaping.

        pymysql's ``executemany`` does the same rewrite but dispatches on the type of every
        value; our row shape is fixed (int, str, bytes or None), which halves client CPU.
        """
        escape = _string_escaper(cur.connection)
        stored = 0
        chunk: list[str] = []
        size = 0
        for row in rows:
            parts = []
            for value in row:
                kind = type(value)
                if value is None:
                    parts.append("NULL")
                elif kind is int:
                    parts.append(str(value))
                elif kind is bytes:
                    parts.append(f"X'{value.hex()}'")
                else:
                    parts.append(f"'{escape(value)}'")
            literal = f"({','.join(parts)})"
            if chunk and size + len(literal) > _MAX_STATEMENT_CHARS:
                stored += cur.execute(_INSERT_HEAD + ",".join(chunk) + _INSERT_TAIL)
                chunk, size = [], 0
            chunk.append(literal)
            size += len(literal) + 1
        if chunk:
            stored += cur.execute(_INSERT_HEAD + ",".join(chunk) + _INSERT_TAIL)
        return stored

    def _delete_batch(self, cur: Any, cutoff_us: int, batch_size: int) -> int:
        cur.execute("DELETE FROM logs WHERE ts < %s ORDER BY ts LIMIT %s", (cutoff_us, batch_size))
        return int(cur.rowcount)

    @contextmanager
    def _migration_lock(self, conn: Any) -> Iterator[None]:
        # DDL commits implicitly in MariaDB, so a transaction cannot serialise migrations;
        # a named server lock does.
        with conn.cursor() as cur:
            cur.execute("SELECT GET_LOCK('devmesh_migrate', 60)")
            (got,) = cur.fetchone()
        if got != 1:
            raise BackendUnavailable("timed out waiting for the migration lock", backend="mysql")
        try:
            yield
        finally:
            with conn.cursor() as cur:
                cur.execute("SELECT RELEASE_LOCK('devmesh_migrate')")
                cur.fetchone()
