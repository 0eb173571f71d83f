"""``ActionService``: proposal → approval → execution (by a node agent) → verification, with
every step in the audit trail.

Rules it enforces (each refusal is audited with its reason):

* Only catalog actions with valid parameters on allowlisted targets can be proposed, approved
  or handed to an agent (checked again at each step, so a settings change takes effect on
  requests already pending).
* Approval needs an identity whose role (``ActionSettings.roles``) may approve the request's
  risk. High risk needs ``high_risk_approvals`` distinct approvers, never the requester.
  ``system`` identities never approve. Each approval counts once; expired, rejected,
  cancelled or executed requests cannot be approved.
* Chat buttons carry :meth:`ActionService.sign_callback` data (HMAC), so a forged or
  tampered callback is refused.
* Agents pull work (:meth:`ActionService.claim`); claiming is a compare-and-set, so two
  agents never run one request. Results come back through :meth:`report_result`.

Sync and thread-safe: state changes go through the store's transactions with optimistic
versioning, so several server processes over one MariaDB database are safe too.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import hmac
import os
import queue
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from devmesh_core.actions.catalog import (
    ValidatedAction,
    catalog_specs,
    validate_action,
)
from devmesh_core.actions.models import ActionRequest, ActionSpec, AuditRecord, Identity
from devmesh_core.actions.repository import ActionRepository, Audit
from devmesh_core.actions.settings import ActionSettings, Risk
from devmesh_core.errors import AuthError, DevMeshError, InvalidInput, NotFound
from devmesh_core.log import get_logger
from devmesh_core.models import Level, LogEvent
from devmesh_core.store.base import LogQuery, LogStore

if TYPE_CHECKING:
    from devmesh_core.config import Settings
    from devmesh_core.runtime import Core

log = get_logger(__name__)

Decision = Literal["approve", "reject"]
Listener = Callable[[ActionRequest], None]

_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
_ID_RE = re.compile(r"A-[23456789a-z]{5,12}")
_KEY_FILE = "actions-callback.key"
_OUTPUT_TAIL = 4_000
_MAX_STR = 2_000
SYSTEM_ACTOR = "system:devmesh"


def new_request_id() -> str:
    """A short, unambiguous id (``A-7f3k2``): readable in chat, typed on a phone."""
    return "A-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(5))


def _now() -> datetime:
    return datetime.now(UTC)


def _trim(value: Any, depth: int = 0) -> Any:
    """Bound what an agent reports (strings, lists, nesting) before it is stored."""
    if isinstance(value, str):
        return value[-_MAX_STR:]
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth > 3:
        return str(value)[:_MAX_STR]
    if isinstance(value, Mapping):
        return {str(k)[:64]: _trim(v, depth + 1) for k, v in list(value.items())[:32]}
    if isinstance(value, list | tuple):
        return [_trim(v, depth + 1) for v in list(value)[:32]]
    return str(value)[:_MAX_STR]


class ActionService:
    """Remediation requests over the log database (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: LogStore,
        *,
        core: Core | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.settings = settings
        self.config: ActionSettings = settings.actions.effective()
        self.repo = ActionRepository(store)
        self.store = store
        self.core = core
        self.clock = clock
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self._key: bytes | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._followups: queue.Queue[ActionRequest | None] = queue.Queue()
        self._followup_thread: threading.Thread | None = None

    @classmethod
    def from_core(cls, core: Core) -> ActionService:
        """The service for a process's ``Core`` (incidents and the graph used when present)."""
        return cls(core.settings, core.store, core=core)

    # -- catalog, roles -------------------------------------------------------------------
    def catalog(self) -> list[ActionSpec]:
        """Every action that can be proposed, with its parameters and risk."""
        return catalog_specs(self.config)

    def roles_of(self, identity: Identity) -> set[str]:
        """The roles ``ActionSettings.roles`` grants this identity (through its user key or
        any of its groups)."""
        return {r for key in identity.role_keys for r in self.config.roles.get(key, [])}

    def can_approve(self, identity: Identity, request: ActionRequest) -> tuple[bool, str]:
        """Whether ``identity`` may approve ``request`` now, and if not why (for buttons)."""
        if identity.platform == "system":
            return False, "system identities cannot approve actions"
        allowed = set(self.config.approver_roles.get(request.risk, []))
        if not self.roles_of(identity) & allowed:
            return False, (
                f"{identity.key} has no role that may approve {request.risk}-risk actions "
                f"(needs one of: {', '.join(sorted(allowed)) or 'none configured'})"
            )
        if request.risk == "high" and identity.key == request.requested_by:
            return False, "the requester cannot approve their own high-risk request"
        if identity.key in request.approvals:
            return False, f"{identity.key} has already approved this request"
        if request.status != "pending":
            return False, f"request {request.id} is {request.status}"
        if request.expires_at <= self.clock():
            return False, f"request {request.id} has expired"
        return True, "ok"

    # -- proposal -------------------------------------------------------------------------
    def validate(
        self, action: str, params: Any, *, host: str, check_allow: bool = True
    ) -> ValidatedAction:
        """Check an action against the catalog and allowlist without proposing it (dry run)."""
        return validate_action(action, params, host, self.config, check_allow=check_allow)

    def propose(
        self,
        action: str,
        params: dict[str, Any],
        *,
        host: str,
        incident_id: str | None,
        requested_by: Identity | str,
        min_risk: Risk | None = None,
    ) -> ActionRequest:
        """Make a pending request; raise ``InvalidInput`` naming why it cannot be (not in
        catalog, bad parameter, not allowlisted) or ``AuthError`` for a person without a
        proposer role. ``min_risk`` raises the risk (a runbook may mark its action high)."""
        actor = requested_by.key if isinstance(requested_by, Identity) else str(requested_by)
        actor = actor[:255] or "unknown"
        refused = {"action": str(action)[:80], "params": _trim(params), "host": str(host)[:255]}
        if not self.config.enabled:
            self._refuse(None, incident_id, actor, "remediation is disabled", refused)
            raise InvalidInput("remediation is disabled (DEVMESH_ACTIONS__ENABLED=false)")
        if isinstance(requested_by, Identity) and requested_by.platform != "system":
            roles = self.roles_of(requested_by)
            if not roles & set(self.config.proposer_roles) and not roles & set(
                r for rs in self.config.approver_roles.values() for r in rs
            ):
                reason = f"{actor} has no role that may propose actions"
                self._refuse(None, incident_id, actor, reason, refused)
                raise AuthError(reason)
        try:
            validated = self.validate(action, params, host=host)
        except InvalidInput as exc:
            self._refuse(None, incident_id, actor, str(exc), refused)
            raise
        incident_id = self._incident_id(incident_id)
        risk: Risk = "high" if "high" in (validated.risk, min_risk) else "low"
        now = self.clock()
        needed = self.config.high_risk_approvals if risk == "high" else 1
        for _ in range(8):
            request = ActionRequest(
                id=new_request_id(),
                action=validated.action,
                params=validated.params,
                host=validated.host,
                risk=risk,
                incident_id=incident_id,
                requested_by=actor,
                status="pending",
                approvals=[],
                approvals_needed=needed,
                created_at=now,
                expires_at=now + timedelta(minutes=self.config.expiry_minutes),
                summary=validated.summary,
            )
            audit = Audit(
                "proposed",
                actor,
                request_id=request.id,
                incident_id=incident_id,
                detail={
                    "action": request.action,
                    "params": request.params,
                    "host": request.host,
                    "risk": risk,
                    "approvals_needed": needed,
                },
            )
            if self.repo.insert(request, audit):
                log.info("action_proposed", id=request.id, summary=request.summary, by=actor)
                self._notify(request)
                return request
        raise DevMeshError("could not allocate a request id")  # pragma: no cover

    def propose_from_diagnosis(
        self, diagnosis: Any, *, incident_id: str | None, host: str | None = None
    ) -> tuple[list[ActionRequest], list[str]]:
        """Propose each of a diagnosis's ``proposed_actions`` (a ``Diagnosis`` or its JSON)
        as ``system:diagnosis``; return the requests made and the refusals (each audited).
        Whatever a model wrote, only catalog actions on allowlisted targets get through."""
        data = diagnosis.model_dump() if hasattr(diagnosis, "model_dump") else dict(diagnosis)
        made: list[ActionRequest] = []
        refused: list[str] = []
        for item in data.get("proposed_actions") or []:
            if not isinstance(item, Mapping):
                refused.append("not an action object")
                continue
            target = item.get("host") or host
            try:
                made.append(
                    self.propose(
                        str(item.get("action", "")),
                        item.get("params") or {},
                        host=str(target or ""),
                        incident_id=incident_id,
                        requested_by="system:diagnosis",
                    )
                )
            except (InvalidInput, AuthError) as exc:
                refused.append(str(exc))
        return made, refused

    def _incident_id(self, incident_id: str | None) -> str | None:
        """The incident's canonical id when the incident service knows it."""
        if incident_id is None:
            return None
        incidents = getattr(self.core, "incidents", None)
        if incidents is not None:
            with contextlib.suppress(DevMeshError, AttributeError):
                return str(incidents.get(incident_id).id)
        return str(incident_id)[:64]

    # -- approval -------------------------------------------------------------------------
    def _load(self, request_id: str) -> tuple[ActionRequest, int]:
        found = self.repo.get(str(request_id)[:32])
        if found is None:
            raise NotFound(f"no action request {str(request_id)[:32]!r}")
        request, version = found
        if self._expire_if_due(request, version):
            found = self.repo.get(request.id)
            assert found is not None
        return found

    def get(self, request_id: str) -> ActionRequest:
        """The request (``NotFound`` if there is none)."""
        return self._load(request_id)[0]

    def approve(self, request_id: str, approver: Identity) -> ActionRequest:
        """Record an approval; the request becomes ``approved`` once it has enough."""
        with self._lock:
            for _ in range(5):
                try:
                    request, version = self._load(request_id)
                except NotFound as exc:
                    self._refuse(str(request_id)[:32], None, approver.key, str(exc), {})
                    raise
                if request.status != "pending":
                    reason = f"request {request.id} is {request.status}; it cannot be approved"
                    self._refuse(request.id, request.incident_id, approver.key, reason, {})
                    raise InvalidInput(reason)
                ok, reason = self.can_approve(approver, request)
                if not ok:
                    self._refuse(request.id, request.incident_id, approver.key, reason, {})
                    if identity_problem(reason):
                        raise AuthError(reason)
                    raise InvalidInput(reason)
                try:  # the allowlist may have changed since the proposal
                    self.validate(request.action, request.params, host=request.host)
                except InvalidInput as exc:
                    self._refuse(request.id, request.incident_id, approver.key, str(exc), {})
                    raise
                approvals = [*request.approvals, approver.key]
                now = self.clock()
                changes: dict[str, Any] = {"approvals": approvals}
                if len(approvals) >= request.approvals_needed:
                    changes.update(status="approved", decided_at=now)
                audit = Audit(
                    "approved",
                    approver.key,
                    request_id=request.id,
                    incident_id=request.incident_id,
                    detail={
                        "approvals": len(approvals),
                        "needed": request.approvals_needed,
                        "display": approver.display[:128],
                    },
                )
                if self.repo.update(request.id, version, changes, audit, now):
                    updated = self.get(request.id)
                    log.info(
                        "action_approved", id=request.id, by=approver.key, status=updated.status
                    )
                    self._notify(updated)
                    return updated
            raise InvalidInput(f"request {request_id} changed concurrently; try again")

    def reject(self, request_id: str, by: Identity, reason: str = "") -> ActionRequest:
        """Reject a pending (or approved, not yet running) request; its requester may
        withdraw it instead (status ``cancelled``)."""
        with self._lock:
            for _ in range(5):
                request, version = self._load(request_id)
                if request.status not in ("pending", "approved"):
                    why = f"request {request.id} is {request.status}; it cannot be rejected"
                    self._refuse(request.id, request.incident_id, by.key, why, {})
                    raise InvalidInput(why)
                own = by.key == request.requested_by
                allowed = set(self.config.approver_roles.get(request.risk, []))
                if not own and (by.platform == "system" or not self.roles_of(by) & allowed):
                    why = f"{by.key} has no role that may reject {request.risk}-risk actions"
                    self._refuse(request.id, request.incident_id, by.key, why, {})
                    raise AuthError(why)
                status = "cancelled" if own else "rejected"
                now = self.clock()
                text = reason[:500]
                audit = Audit(
                    status,
                    by.key,
                    request_id=request.id,
                    incident_id=request.incident_id,
                    detail={"reason": text} if text else {},
                )
                changes = {"status": status, "decided_at": now, "reason": text or None}
                if self.repo.update(request.id, version, changes, audit, now):
                    updated = self.get(request.id)
                    self._notify(updated)
                    return updated
            raise InvalidInput(f"request {request_id} changed concurrently; try again")

    def pending(self, host: str | None = None) -> list[ActionRequest]:
        """Requests waiting for approval (expired ones are marked expired first)."""
        self.expire_due()
        return [r for r, _ in self.repo.find(statuses=["pending"], host=host, limit=200)]

    def requests(
        self,
        status: str | None = None,
        *,
        host: str | None = None,
        incident_id: str | None = None,
        limit: int = 50,
    ) -> list[ActionRequest]:
        """Requests, newest first; ``status`` "active" = pending, approved or running,
        "all" or None = any."""
        statuses: list[str] | None = None
        if status == "active":
            statuses = ["pending", "approved", "running"]
        elif status is not None and status != "all":
            statuses = [status]
        return [
            r
            for r, _ in self.repo.find(
                statuses=statuses, host=host, incident_id=incident_id, limit=limit
            )
        ]

    def audit(
        self, *, request_id: str | None = None, incident_id: str | None = None, limit: int = 500
    ) -> list[AuditRecord]:
        """The audit trail, oldest first, optionally of one request or one incident."""
        return self.repo.audit(request_id=request_id, incident_id=incident_id, limit=limit)

    # -- callbacks --------------------------------------------------------------------------
    def _callback_key(self) -> bytes:
        if self._key is None:
            configured = self.config.callback_key
            if configured is not None:
                self._key = configured.get_secret_value().encode()
            else:
                self._key = _stored_key(self.settings.ensure_data_dir() / _KEY_FILE)
        return self._key

    def _mac(self, request_id: str, decision: str) -> str:
        digest = hmac.new(
            self._callback_key(), f"{decision}|{request_id}".encode(), hashlib.sha256
        ).digest()[:15]
        return base64.urlsafe_b64encode(digest).decode()

    def sign_callback(self, request_id: str, decision: Decision) -> str:
        """``"a|A-7f3k2|<mac>"``: button data (≤ 64 bytes) that only this server can make."""
        if decision not in ("approve", "reject") or not _ID_RE.fullmatch(request_id):
            raise InvalidInput("cannot sign: bad request id or decision")
        return f"{decision[0]}|{request_id}|{self._mac(request_id, decision)}"

    def verify_callback(self, data: str) -> tuple[str, str]:
        """``(request_id, decision)`` from signed button data; ``AuthError`` (audited) if it
        was forged or tampered with."""
        parts = data.split("|") if isinstance(data, str) and len(data) <= 64 else []
        if len(parts) == 3 and parts[0] in ("a", "r") and _ID_RE.fullmatch(parts[1]):
            decision = "approve" if parts[0] == "a" else "reject"
            if hmac.compare_digest(parts[2], self._mac(parts[1], decision)):
                return parts[1], decision
        request_id = parts[1] if len(parts) == 3 and _ID_RE.fullmatch(parts[1]) else None
        self._refuse(
            request_id, None, "callback", "forged or tampered callback", {"data": str(data)[:80]}
        )
        raise AuthError("forged or tampered callback data")

    # -- execution (node agents) ------------------------------------------------------------
    def claim(self, host: str, *, agent: str = "agent") -> list[ActionRequest]:
        """Approved requests for ``host``, each marked ``running`` by this call only (a
        compare-and-set: a second agent polling at once gets none of them)."""
        self.expire_due()
        claimed: list[ActionRequest] = []
        for request, version in self.repo.find(statuses=["approved"], host=host, limit=20):
            now = self.clock()
            try:
                self.validate(request.action, request.params, host=request.host)
            except InvalidInput as exc:
                audit = Audit(
                    "refused",
                    agent,
                    request_id=request.id,
                    incident_id=request.incident_id,
                    detail={"reason": str(exc)},
                )
                changes = {"status": "failed", "finished_at": now, "reason": str(exc)}
                if self.repo.update(request.id, version, changes, audit, now):
                    self._notify(self.get(request.id))
                continue
            audit = Audit(
                "claimed",
                agent,
                request_id=request.id,
                incident_id=request.incident_id,
                detail={"host": host},
            )
            if self.repo.update(
                request.id, version, {"status": "running", "started_at": now}, audit, now
            ):
                running = self.get(request.id)
                claimed.append(running)
                self._emit("remediation_started", running)
                self._notify(running)
        return claimed

    def report_result(
        self, request_id: str, result: Mapping[str, Any], *, agent: str = "agent"
    ) -> ActionRequest:
        """Record what the agent did: ``exit_code``, ``output`` (tail), ``duration``, and
        optionally ``argv``, ``dry_run`` and ``verify`` (``{"ok": bool, ...}``)."""
        request, version = self._load(request_id)
        if request.status != "running":
            reason = f"request {request.id} is {request.status}, not running; result ignored"
            self._refuse(request.id, request.incident_id, agent, reason, {})
            raise InvalidInput(reason)
        exit_code = result.get("exit_code")
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise InvalidInput("result.exit_code must be an integer")
        clean = _trim(dict(result))
        if isinstance(result.get("output"), str):
            clean["output"] = result["output"][-_OUTPUT_TAIL:]
        dry_run = bool(result.get("dry_run"))
        refused = result.get("refused")
        status = "succeeded" if exit_code == 0 else "failed"
        now = self.clock()
        changes: dict[str, Any] = {"status": status, "finished_at": now, "result": clean}
        check = result.get("verify")
        if status == "failed" or (isinstance(check, Mapping) and check.get("ok") is False):
            changes["verified"] = False
        if status == "failed":
            changes["reason"] = str(refused)[:1000] if refused else f"exit code {exit_code}"
        audit = Audit(
            "refused" if refused else "executed",
            agent,
            request_id=request.id,
            incident_id=request.incident_id,
            detail={
                "exit_code": exit_code,
                "duration": clean.get("duration"),
                "dry_run": dry_run,
                "status": status,
                "argv": clean.get("argv"),
                **({"reason": str(refused)[:1000]} if refused else {}),
            },
        )
        if not self.repo.update(request.id, version, changes, audit, now):
            raise InvalidInput(f"request {request.id} changed concurrently; result not stored")
        updated = self.get(request.id)
        log.info("action_executed", id=updated.id, status=status, exit_code=exit_code)
        self._emit("remediation_completed", updated)
        self._notify(updated)
        if updated.verified is False:
            self._record_verification(updated, False, "the action failed or did not take")
        elif not dry_run and self.config.verify_minutes == 0:
            return self.verify(updated.id)
        return self.get(updated.id)

    # -- verification ---------------------------------------------------------------------
    def verify(self, request_id: str, *, force: bool = False) -> ActionRequest:
        """Decide whether a succeeded request fixed things: the agent's check passed and no
        new error of the incident's templates was stored since it ran. Until
        ``verify_minutes`` have passed a clean check leaves it undecided (unless ``force``)."""
        request, version = self._load(request_id)
        if request.verified is not None or request.status != "succeeded":
            return request
        if (request.result or {}).get("dry_run"):
            return request
        finished = request.finished_at or request.created_at
        errors = self._errors_since(request, finished)
        now = self.clock()
        if errors:
            verified, why = False, f"{errors} new error(s) of the incident's templates"
        elif force or now >= finished + timedelta(minutes=self.config.verify_minutes):
            verified, why = True, "no new errors of the incident's templates"
        else:
            return request
        audit = Audit(
            "verified",
            SYSTEM_ACTOR,
            request_id=request.id,
            incident_id=request.incident_id,
            detail={"worked": verified, "reason": why, "errors": errors},
        )
        if self.repo.update(request.id, version, {"verified": verified}, audit, now):
            updated = self.get(request.id)
            self._notify(updated)
            self._followup(updated)
            return updated
        return self.get(request.id)

    def _record_verification(self, request: ActionRequest, worked: bool, why: str) -> None:
        self.repo.append(
            Audit(
                "verified",
                SYSTEM_ACTOR,
                request_id=request.id,
                incident_id=request.incident_id,
                detail={"worked": worked, "reason": why},
            ),
            self.clock(),
        )
        self._followup(request)

    def _errors_since(self, request: ActionRequest, since: datetime) -> int:
        """Errors of the incident's templates stored since ``since`` (0 without incident)."""
        incidents = getattr(self.core, "incidents", None)
        if request.incident_id is None or incidents is None:
            return 0
        try:
            incident = incidents.get(request.incident_id)
        except (DevMeshError, AttributeError):
            return 0
        total = 0
        for template_id in list(getattr(incident, "template_ids", []) or [])[:20]:
            total += self.store.count(
                LogQuery(template_id=template_id, level=Level.ERROR, start_time=since)
            )
        return total

    def _followup(self, request: ActionRequest) -> None:
        """Graph and incident updates run in a worker thread: opening the embedded graph
        takes seconds, which no API request or agent report should wait for."""
        if request.incident_id is None:
            return
        with self._lock:
            if self._followup_thread is None or not self._followup_thread.is_alive():
                self._followup_thread = threading.Thread(
                    target=self._followup_loop, name="actions-followup", daemon=True
                )
                self._followup_thread.start()
        self._followups.put(request)

    def _followup_loop(self) -> None:
        while True:
            try:
                request = self._followups.get(timeout=30)
            except queue.Empty:
                return
            if request is None:
                return
            try:
                self.apply_outcome(request)
            except Exception as exc:  # a broken graph or incident store must not kill it
                log.warning("action_followup_failed", id=request.id, error=str(exc))

    def apply_outcome(self, request: ActionRequest) -> None:
        """Write the fix to the graph (if available) and mark the incident mitigated when the
        fix worked. Called by the follow-up worker; callable directly (tests, backfills)."""
        current = self.get(request.id)
        if current.incident_id is None or current.verified is None:
            return
        incidents = getattr(self.core, "incidents", None)
        if current.verified and incidents is not None and hasattr(incidents, "mitigate"):
            try:
                incidents.mitigate(current.incident_id, by=f"devmesh:{current.id}")
            except DevMeshError as exc:
                log.info("incident_not_mitigated", id=current.incident_id, reason=str(exc))
        if not self.config.record_fixes or self.core is None:
            return
        graph = self.core.graph()
        if graph is None:
            return
        from devmesh_core.graph.base import FixRecord

        graph.record_fix(
            FixRecord(
                incident_id=current.incident_id,
                action=current.action,
                applied_at=current.started_at or current.created_at,
                outcome="success" if current.verified else "failed",
                parameters={**current.params, "host": current.host},
                approver=",".join(current.approvals) or None,
                notes=current.summary,
                fix_id=f"fix-{current.id}",
            )
        )

    # -- housekeeping ---------------------------------------------------------------------
    def _expire_if_due(self, request: ActionRequest, version: int) -> bool:
        now = self.clock()
        if request.status == "pending" and request.expires_at <= now:
            reason = "not approved in time"
            changes: dict[str, Any] = {"status": "expired", "reason": reason}
        elif (
            request.status == "approved"
            and (request.decided_at or request.created_at)
            + (timedelta(minutes=self.config.claim_minutes))
            <= now
        ):
            reason = "no agent picked it up in time"
            changes = {"status": "expired", "reason": reason}
        elif (
            request.status == "running"
            and (request.started_at or request.created_at)
            + (timedelta(minutes=self.config.running_minutes))
            <= now
        ):
            reason = "the agent reported no result in time"
            changes = {"status": "failed", "reason": reason, "finished_at": now}
        else:
            return False
        step = "expired" if changes["status"] == "expired" else "result"
        audit = Audit(
            step,
            SYSTEM_ACTOR,
            request_id=request.id,
            incident_id=request.incident_id,
            detail={"reason": reason},
        )
        if self.repo.update(request.id, version, changes, audit, now):
            found = self.repo.get(request.id)
            if found is not None:
                self._notify(found[0])
        return True

    def expire_due(self) -> int:
        """Expire pending/approved requests past their time and fail silent runs."""
        count = 0
        for request, version in self.repo.find(
            statuses=["pending", "approved", "running"], limit=500
        ):
            if self._expire_if_due(request, version):
                count += 1
        return count

    def verify_due(self) -> int:
        """Verify succeeded requests whose verification window has passed."""
        done = 0
        for request, _ in self.repo.find(statuses=["succeeded"], limit=200):
            if request.verified is None and self.verify(request.id).verified is not None:
                done += 1
        return done

    def sweep(self) -> None:
        """One housekeeping pass (the background thread runs it every ``sweep_seconds``)."""
        self.expire_due()
        self.verify_due()

    def start(self) -> None:
        """Run :meth:`sweep` periodically in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.config.sweep_seconds):
                try:
                    self.sweep()
                except DevMeshError as exc:
                    log.warning("action_sweep_failed", error=str(exc))

        self._thread = threading.Thread(target=loop, name="actions-sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background threads (waits briefly)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._followup_thread is not None and self._followup_thread.is_alive():
            self._followups.put(None)
            self._followup_thread.join(timeout=5)

    # -- listeners, events, refusals ------------------------------------------------------
    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(request)`` after every change (bots edit their messages)."""
        self._listeners.append(callback)

    def _notify(self, request: ActionRequest) -> None:
        for callback in list(self._listeners):
            try:
                callback(request)
            except Exception as exc:  # one broken listener must not break the others
                log.warning("action_listener_failed", error=str(exc))

    def _refuse(
        self,
        request_id: str | None,
        incident_id: str | None,
        actor: str,
        reason: str,
        detail: Mapping[str, Any],
    ) -> None:
        log.info("action_refused", id=request_id, by=actor, reason=reason)
        try:
            self.repo.append(
                Audit(
                    "refused",
                    actor,
                    request_id=request_id,
                    incident_id=incident_id,
                    detail={**detail, "reason": reason[:1000]},
                ),
                self.clock(),
            )
        except DevMeshError as exc:
            log.warning("audit_write_failed", error=str(exc))

    def correlation_id(self, request: ActionRequest) -> str:
        """The incident's correlation id (so remediation events join its timeline), or one
        of the request's own."""
        incidents = getattr(self.core, "incidents", None)
        if request.incident_id is not None and incidents is not None:
            with contextlib.suppress(DevMeshError, AttributeError):
                return str(incidents.get(request.incident_id).correlation_id)
        return f"remediation-{request.id}"

    def _emit(self, kind: str, request: ActionRequest) -> None:
        """Store a homelab event (``remediation_started``/``_completed``) as a log event,
        in the shape node event files take (see ``ingest.events.NodeEvent.to_log``)."""
        service = (
            str(request.params.get("unit", "")).removesuffix(".service")
            or request.params.get("container")
            or "devmesh"
        )
        failed = request.status == "failed"
        result = request.result or {}
        payload: dict[str, Any] = {
            "request_id": request.id,
            "action": request.action,
            "params": request.params,
            "incident_id": request.incident_id,
            "status": request.status,
            "message": request.summary,
        }
        if kind == "remediation_completed":
            payload.update(
                exit_code=result.get("exit_code"),
                duration=result.get("duration"),
                dry_run=bool(result.get("dry_run")),
            )
        try:
            event = LogEvent(
                timestamp=self.clock(),
                source="event",
                service=str(service)[:255],
                host=request.host,
                level=Level.ERROR if failed else Level.INFO,
                message=f"{kind} {service}: {request.summary}"
                + (f" (exit {result.get('exit_code')})" if kind.endswith("completed") else ""),
                event_type=kind,
                source_id=f"{request.id}:{kind}",
                meta={
                    "correlation_id": self.correlation_id(request),
                    "event_source": "devmesh-actions",
                    "payload": payload,
                },
            )
            self.store.insert([event])
        except (DevMeshError, ValueError) as exc:
            log.warning("remediation_event_failed", id=request.id, error=str(exc))


def identity_problem(reason: str) -> bool:
    """Whether a refusal from :meth:`ActionService.can_approve` is about who is asking
    (``AuthError``) rather than about the request's state (``InvalidInput``)."""
    return "role" in reason or "requester" in reason or "system identities" in reason


def cli_identity() -> Identity:
    """``cli:<os user>``: who runs ``devmesh actions`` on this machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no passwd entry
        user = str(os.getuid())
    return Identity(platform="cli", user_id=user, display=user)


def _stored_key(path: Path) -> bytes:
    """The callback HMAC key kept in the data dir, made (private to the user) if missing."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except ValueError:
        log.warning("callback_key_unreadable", path=str(path))
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex())
    try:
        os.link(tmp, path)  # fails if another process made one meanwhile: use theirs
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return bytes.fromhex(path.read_text().strip())
    tmp.unlink(missing_ok=True)
    return key


__all__ = ["ActionService", "cli_identity", "identity_problem", "new_request_id"]
