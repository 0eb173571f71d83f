"""Schema of incidents and the detector's state (migration version 5), in both SQL dialects.

Kept apart from the log tables so that the incident code can evolve its tables without
touching the adapters; the adapters append these to their migration lists.

* ``incidents``: one row per incident. ``number`` is the N of ``INC-N`` (auto-increment, so
  ids are stable and short); the searchable fields are columns, the full incident (timeline,
  diagnosis) is a JSON document in ``body``. Timestamps are integer µs (UTC) like ``logs``.
* ``detect_state``: named JSON blobs of the detection loop (the log-id watermark and the
  detectors' learned state), so a restart neither re-detects nor forgets baselines.
"""

from __future__ import annotations

from devmesh_core.store.sql import Migration

SQLITE: tuple[Migration, ...] = (
    Migration(
        5,
        (
            """CREATE TABLE incidents (
                number INTEGER PRIMARY KEY AUTOINCREMENT,
                state TEXT NOT NULL,
                severity TEXT NOT NULL,
                correlation_id TEXT NOT NULL,
                opened_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                resolved_at INTEGER NULL,
                body TEXT NOT NULL
            )""",
            "CREATE INDEX ix_incidents_state ON incidents (state, number)",
            "CREATE INDEX ix_incidents_correlation ON incidents (correlation_id)",
            """CREATE TABLE detect_state (
                name TEXT NOT NULL PRIMARY KEY,
                value TEXT NOT NULL,
                updated_at INTEGER NOT NULL
            )""",
        ),
    ),
)

_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
_KEY = "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin"

MYSQL: tuple[Migration, ...] = (
    Migration(
        5,
        (
            f"""CREATE TABLE incidents (
                number BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
                state {_KEY} NOT NULL,
                severity {_KEY} NOT NULL,
                correlation_id {_KEY} NOT NULL,
                opened_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                resolved_at BIGINT NULL,
                body LONGTEXT NOT NULL,
                KEY ix_incidents_state (state, number),
                KEY ix_incidents_correlation (correlation_id)
            ) {_OPTIONS}""",
            f"""CREATE TABLE detect_state (
                name {_KEY} NOT NULL PRIMARY KEY,
                value LONGTEXT NOT NULL,
                updated_at BIGINT NOT NULL
            ) {_OPTIONS}""",
        ),
    ),
)
