"""Schema of remediation requests, approvals and the audit trail (migration version 6), in
both SQL dialects. Appended by the adapters to their migration lists.

``action_requests`` holds each request's current state; its ``version`` column makes every
state change a compare-and-set (``UPDATE … WHERE id = ? AND version = ?``), so two approvers
clicking at once, or two agents polling at once, can never both win. ``action_audit`` is the
append-only trail: the code only ever inserts into it, and on SQLite triggers refuse updates
and deletes outright. (MariaDB would need the TRIGGER privilege, and with binary logging
SUPER, which a homelab's application user often lacks, so there the guarantee is the code's.)
"""

from __future__ import annotations

from devmesh_core.store.sql import Migration

VERSION = 6

SQLITE: tuple[Migration, ...] = (
    Migration(
        VERSION,
        (
            """CREATE TABLE action_requests (
                id TEXT PRIMARY KEY,
                action TEXT NOT NULL,
                params TEXT NOT NULL,
                host TEXT NOT NULL,
                risk TEXT NOT NULL,
                incident_id TEXT,
                requested_by TEXT NOT NULL,
                status TEXT NOT NULL,
                approvals TEXT NOT NULL,
                approvals_needed INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                decided_at INTEGER,
                started_at INTEGER,
                finished_at INTEGER,
                result TEXT,
                verified INTEGER,
                summary TEXT NOT NULL,
                reason TEXT,
                version INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            )""",
            "CREATE INDEX ix_action_requests_host_status ON action_requests (host, status)",
            "CREATE INDEX ix_action_requests_status ON action_requests (status, expires_at)",
            "CREATE INDEX ix_action_requests_incident ON action_requests (incident_id)",
            """CREATE TABLE action_audit (
                id INTEGER PRIMARY KEY,
                at INTEGER NOT NULL,
                request_id TEXT,
                incident_id TEXT,
                step TEXT NOT NULL,
                actor TEXT NOT NULL,
                detail TEXT
            )""",
            "CREATE INDEX ix_action_audit_request ON action_audit (request_id, id)",
            "CREATE INDEX ix_action_audit_incident ON action_audit (incident_id, id)",
            """CREATE TRIGGER action_audit_no_update BEFORE UPDATE ON action_audit
            BEGIN SELECT RAISE(ABORT, 'the action audit trail is append-only'); END""",
            """CREATE TRIGGER action_audit_no_delete BEFORE DELETE ON action_audit
            BEGIN SELECT RAISE(ABORT, 'the action audit trail is append-only'); END""",
        ),
    ),
)

_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"

MYSQL: tuple[Migration, ...] = (
    Migration(
        VERSION,
        (
            f"""CREATE TABLE action_requests (
                id VARCHAR(32) NOT NULL PRIMARY KEY,
                action VARCHAR(64) NOT NULL,
                params TEXT NOT NULL,
                host VARCHAR(255) NOT NULL,
                risk VARCHAR(8) NOT NULL,
                incident_id VARCHAR(64) NULL,
                requested_by VARCHAR(255) NOT NULL,
                status VARCHAR(16) NOT NULL,
                approvals TEXT NOT NULL,
                approvals_needed INT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                decided_at BIGINT NULL,
                started_at BIGINT NULL,
                finished_at BIGINT NULL,
                result MEDIUMTEXT NULL,
                verified TINYINT NULL,
                summary TEXT NOT NULL,
                reason TEXT NULL,
                version INT NOT NULL,
                updated_at BIGINT NOT NULL,
                KEY ix_action_requests_host_status (host, status),
                KEY ix_action_requests_status (status, expires_at),
                KEY ix_action_requests_incident (incident_id)
            ) {_OPTIONS}""",
            f"""CREATE TABLE action_audit (
                id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
                at BIGINT NOT NULL,
                request_id VARCHAR(32) NULL,
                incident_id VARCHAR(64) NULL,
                step VARCHAR(16) NOT NULL,
                actor VARCHAR(255) NOT NULL,
                detail MEDIUMTEXT NULL,
                KEY ix_action_audit_request (request_id, id),
                KEY ix_action_audit_incident (incident_id, id)
            ) {_OPTIONS}""",
        ),
    ),
)
