"""SQL persistence of remediation requests and their audit trail, in the log database.

Every state change is a compare-and-set on the request's ``version`` and is written in the
same transaction as its audit record, so the trail can never miss a change nor record one
that did not happen. Works over both SQL adapters through ``SQLLogStore.run``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from devmesh_core.actions.models import ActionRequest, AuditRecord
from devmesh_core.errors import ConfigError
from devmesh_core.models import from_micros, to_micros
from devmesh_core.store.base import LogStore
from devmesh_core.store.sql import SQLLogStore

_COLUMNS = (
    "id",
    "action",
    "params",
    "host",
    "risk",
    "incident_id",
    "requested_by",
    "status",
    "approvals",
    "approvals_needed",
    "created_at",
    "expires_at",
    "decided_at",
    "started_at",
    "finished_at",
    "result",
    "verified",
    "summary",
    "reason",
    "version",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM action_requests"
_TIMES = ("created_at", "expires_at", "decided_at", "started_at", "finished_at")
_JSON = ("params", "approvals", "result")


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _to_db(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _TIMES:
        return to_micros(value)
    if name in _JSON:
        return _dumps(value)
    if name == "verified":
        return 1 if value else 0
    return value


def _request(row: Sequence[Any]) -> tuple[ActionRequest, int]:
    data = dict(zip(_COLUMNS, row, strict=True))
    version = int(data.pop("version"))
    for name in _TIMES:
        if data[name] is not None:
            data[name] = from_micros(int(data[name]))
    for name in _JSON:
        if data[name] is not None:
            data[name] = orjson.loads(data[name])
    if data["verified"] is not None:
        data["verified"] = bool(data["verified"])
    return ActionRequest.model_validate(data), version


class Audit:
    """One audit record to append with a state change."""

    __slots__ = ("actor", "detail", "incident_id", "request_id", "step")

    def __init__(
        self,
        step: str,
        actor: str,
        *,
        request_id: str | None = None,
        incident_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        self.step = step
        self.actor = actor[:255]
        self.request_id = request_id
        self.incident_id = incident_id
        self.detail = dict(detail or {})


class ActionRepository:
    """Requests and audit records in the store's database."""

    def __init__(self, store: LogStore) -> None:
        if not isinstance(store, SQLLogStore):
            raise ConfigError("remediation needs a SQL store (SQLite or MariaDB)")
        self.store = store
        self.p = store.placeholder

    # -- writes ---------------------------------------------------------------------------
    def _append(self, cur: Any, audit: Audit, at: datetime) -> None:
        p = self.p
        cur.execute(
            "INSERT INTO action_audit (at, request_id, incident_id, step, actor, detail) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
            (
                to_micros(at),
                audit.request_id,
                audit.incident_id,
                audit.step,
                audit.actor,
                _dumps(audit.detail) if audit.detail else None,
            ),
        )

    def insert(self, request: ActionRequest, audit: Audit) -> bool:
        """Store a new request with its ``proposed`` record; False if the id is taken."""
        p = self.p
        data = request.model_dump()

        def work(cur: Any) -> bool:
            cur.execute(f"SELECT 1 FROM action_requests WHERE id = {p}", (request.id,))
            if cur.fetchone() is not None:
                return False
            values = [_to_db(c, data.get(c)) for c in _COLUMNS if c != "version"]
            cur.execute(
                f"INSERT INTO action_requests ({', '.join(_COLUMNS)}, updated_at) "
                f"VALUES ({', '.join([p] * (len(_COLUMNS) + 1))})",
                (*values, 1, to_micros(request.created_at)),
            )
            self._append(cur, audit, request.created_at)
            return True

        return self.store.run(work, write=True)

    def update(
        self,
        request_id: str,
        version: int,
        changes: Mapping[str, Any],
        audit: Audit | None,
        at: datetime,
    ) -> bool:
        """Apply ``changes`` if the request is still at ``version`` (and append ``audit``);
        False when someone else changed it first."""
        p = self.p
        sets = [f"{name} = {p}" for name in changes]
        params = [_to_db(name, value) for name, value in changes.items()]

        def work(cur: Any) -> bool:
            cur.execute(
                f"UPDATE action_requests SET {', '.join(sets)}, version = version + 1, "
                f"updated_at = {p} WHERE id = {p} AND version = {p}",
                (*params, to_micros(at), request_id, version),
            )
            if cur.rowcount != 1:
                return False
            if audit is not None:
                self._append(cur, audit, at)
            return True

        return self.store.run(work, write=True)

    def append(self, audit: Audit, at: datetime) -> None:
        """Append an audit record that changes no request (a refusal, a forged callback)."""
        self.store.run(lambda cur: self._append(cur, audit, at), write=True)

    # -- reads ----------------------------------------------------------------------------
    def get(self, request_id: str) -> tuple[ActionRequest, int] | None:
        """The request and its version, or None."""
        p = self.p

        def read(cur: Any) -> Any:
            cur.execute(f"{_SELECT} WHERE id = {p}", (request_id,))
            return cur.fetchone()

        row = self.store.run(read, write=False)
        return _request(row) if row is not None else None

    def find(
        self,
        *,
        statuses: Iterable[str] | None = None,
        host: str | None = None,
        incident_id: str | None = None,
        limit: int = 50,
    ) -> list[tuple[ActionRequest, int]]:
        """Requests matching the filters, newest first."""
        p = self.p
        terms: list[str] = []
        params: list[Any] = []
        wanted = list(statuses) if statuses is not None else None
        if wanted is not None:
            if not wanted:
                return []
            terms.append(f"status IN ({', '.join([p] * len(wanted))})")
            params.extend(wanted)
        if host is not None:
            terms.append(f"host = {p}")
            params.append(host)
        if incident_id is not None:
            terms.append(f"incident_id = {p}")
            params.append(incident_id)
        where = f" WHERE {' AND '.join(terms)}" if terms else ""

        def read(cur: Any) -> list[Any]:
            cur.execute(f"{_SELECT}{where} ORDER BY created_at DESC, id LIMIT {int(limit)}", params)
            return list(cur.fetchall())

        return [_request(row) for row in self.store.run(read, write=False)]

    def audit(
        self,
        *,
        request_id: str | None = None,
        incident_id: str | None = None,
        limit: int = 500,
    ) -> list[AuditRecord]:
        """Audit records in the order they were written (oldest first). With an incident,
        also the records of that incident's requests."""
        p = self.p
        terms: list[str] = []
        params: list[Any] = []
        if request_id is not None:
            terms.append(f"request_id = {p}")
            params.append(request_id)
        if incident_id is not None:
            terms.append(
                f"(incident_id = {p} OR request_id IN "
                f"(SELECT id FROM action_requests WHERE incident_id = {p}))"
            )
            params.extend([incident_id, incident_id])
        where = f" WHERE {' AND '.join(terms)}" if terms else ""

        def read(cur: Any) -> list[Any]:
            cur.execute(
                "SELECT id, at, request_id, incident_id, step, actor, detail FROM ("
                "SELECT id, at, request_id, incident_id, step, actor, detail FROM action_audit"
                f"{where} ORDER BY id DESC LIMIT {int(limit)}) AS recent ORDER BY id",
                params,
            )
            return list(cur.fetchall())

        return [
            AuditRecord(
                id=int(row_id),
                at=from_micros(int(at)),
                request_id=req,
                incident_id=inc,
                step=step,
                actor=actor,
                detail=orjson.loads(detail) if detail else {},
            )
            for row_id, at, req, inc, step, actor, detail in self.store.run(read, write=False)
        ]
