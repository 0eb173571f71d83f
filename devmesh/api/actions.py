"""Remediation endpoints: propose, approve, reject, inspect; and the node agents' pull API.

Thin: parse, call ``core.actions`` (``devmesh_core.actions.service.ActionService``), format.
All endpoints need the API bearer token (the router is included with ``require_token``).

Trust model: the approver ``identity`` in a request body is taken at its word *because the
caller holds an API token* — a token is a credential for a trusted front end (the web UI,
a bot, a script), which is responsible for having authenticated the person it names. Give
tokens only to such front ends. Roles are still checked against ``ActionSettings.roles``,
so a token cannot approve as an identity that has no approver role.

Agents poll ``GET /agent/actions?host=H`` with their node token: the server never connects
to a node. Each poll hands out approved requests for that host once (claimed atomically).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from devmesh_core.actions.models import Identity
from devmesh_core.errors import AuthError, BackendUnavailable, InvalidInput

router = APIRouter(tags=["actions"])


def _json(data: Any, status_code: int = 200) -> Response:
    # Imported here: devmesh.api.app includes this router (a module-level import is circular).
    from devmesh.api.app import json_response

    return json_response(data, status_code)


def _service(request: Request) -> Any:
    core = getattr(request.app.state, "core", None)
    service = getattr(core, "actions", None)
    if service is None:
        raise BackendUnavailable("remediation is not enabled on this server", backend="actions")
    return service


def node_of(request: Request) -> str | None:
    """The host the caller's token is bound to (a node token), if any."""
    return getattr(request.state, "token_host", None)


def _not_a_node(request: Request) -> None:
    """Proposing and deciding are for people and the server's own services: a node token,
    which sits on a machine the request may be about, never does either."""
    node = node_of(request)
    if node is not None:
        raise AuthError(f"a node token (host {node!r}) cannot propose or decide actions")


def _for_node(request: Request, host: str) -> None:
    node = node_of(request)
    if node is not None and node != host:
        raise AuthError(f"this node token is bound to host {node!r}, not {host!r}")


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json")


class ProposeBody(BaseModel):
    """``POST /actions``: what to do, where, for which incident, asked by whom."""

    action: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    host: str = Field(max_length=255)
    incident_id: str | None = Field(default=None, max_length=64)
    requested_by: Identity | str | None = Field(
        default=None,
        description="who asks: an identity (its role is checked) or a system name such as "
        "'system:diagnosis'; without it the request is recorded as api:token",
    )
    dry_run: bool = Field(default=False, description="validate and describe only")


class DecisionBody(BaseModel):
    """``POST /actions/{id}/approve|reject``: who decides (trusted: the caller has a token)."""

    identity: Identity
    reason: str = Field(default="", max_length=500)


class CallbackBody(BaseModel):
    """``POST /actions/callback``: signed button data plus who pressed it."""

    data: str = Field(max_length=64)
    identity: Identity


@router.get("/actions/catalog")
def catalog(request: Request) -> Response:
    """Every action that can be proposed, with its parameters and risk."""
    return _json([_dump(spec) for spec in _service(request).catalog()])


@router.get("/actions/pending")
def pending(request: Request, host: str | None = None) -> Response:
    """Requests waiting for approval, newest first."""
    return _json([_dump(r) for r in _service(request).pending(host)])


@router.get("/actions")
def list_actions(
    request: Request,
    status: str | None = None,
    host: str | None = None,
    incident: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Requests, newest first (``status=active`` for pending, approved and running)."""
    found = _service(request).requests(status, host=host, incident_id=incident, limit=limit)
    return _json([_dump(r) for r in found])


@router.get("/actions/{request_id}")
def get_action(request: Request, request_id: str) -> Response:
    """One request (404 if unknown)."""
    return _json(_dump(_service(request).get(request_id)))


@router.post("/actions")
def propose(request: Request, body: ProposeBody) -> Response:
    """Propose an action (201), or with ``dry_run`` only validate it and say what it would
    do. 422 names why a proposal is refused: not in catalog, bad parameter, not allowlisted."""
    _not_a_node(request)
    service = _service(request)
    if body.dry_run:
        validated = service.validate(body.action, body.params, host=body.host)
        return _json(
            {
                "dry_run": True,
                "action": validated.action,
                "params": validated.params,
                "host": validated.host,
                "risk": validated.risk,
                "summary": validated.summary,
            }
        )
    if isinstance(body.requested_by, str) and not body.requested_by.startswith(
        ("system:", "runbook:")
    ):
        raise InvalidInput("requested_by must be an identity object or a system:/runbook: name")
    made = service.propose(
        body.action,
        body.params,
        host=body.host,
        incident_id=body.incident_id,
        requested_by=body.requested_by or "api:token",
    )
    return _json(_dump(made), 201)


@router.post("/actions/callback")
def callback(request: Request, body: CallbackBody) -> Response:
    """Apply signed button data (from :meth:`ActionService.sign_callback`): 401 if forged."""
    _not_a_node(request)
    service = _service(request)
    request_id, decision = service.verify_callback(body.data)
    if decision == "approve":
        return _json(_dump(service.approve(request_id, body.identity)))
    return _json(_dump(service.reject(request_id, body.identity)))


@router.post("/actions/{request_id}/approve")
def approve(request: Request, request_id: str, body: DecisionBody) -> Response:
    """Approve as ``identity`` (401 for a role or self-approval problem, 422 when the request
    cannot be approved any more)."""
    _not_a_node(request)
    return _json(_dump(_service(request).approve(request_id, body.identity)))


@router.post("/actions/{request_id}/reject")
def reject(request: Request, request_id: str, body: DecisionBody) -> Response:
    """Reject as ``identity`` (its requester withdrawing it: cancelled)."""
    _not_a_node(request)
    return _json(_dump(_service(request).reject(request_id, body.identity, body.reason)))


@router.post("/actions/{request_id}/verify")
def verify(request: Request, request_id: str, force: bool = False) -> Response:
    """Run the verification check now (``force`` decides before the window has passed)."""
    return _json(_dump(_service(request).verify(request_id, force=force)))


@router.get("/audit")
def audit(
    request: Request,
    request_id: Annotated[str | None, Query(alias="request")] = None,
    incident: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5_000)] = 500,
) -> Response:
    """The audit trail, oldest first."""
    records = _service(request).audit(request_id=request_id, incident_id=incident, limit=limit)
    return _json([_dump(r) for r in records])


@router.get("/agent/actions")
def agent_poll(
    request: Request, host: Annotated[str, Query(min_length=1, max_length=255)]
) -> Response:
    """For node agents: approved requests for ``host``, now marked running for this caller
    alone (a second agent polling at the same moment gets none of them). A node token
    polls for its own host only."""
    _for_node(request, host)
    claimed = _service(request).claim(host, agent=f"agent:{host}")
    return _json({"actions": [_dump(r) for r in claimed]})


@router.post("/agent/actions/{request_id}/result")
def agent_result(
    request: Request,
    request_id: str,
    result: Annotated[dict[str, Any], Body()],
    host: str | None = None,
) -> Response:
    """For node agents: the outcome (``exit_code``, ``output``, ``duration``, ``verify`` …)."""
    service = _service(request)
    target = service.get(request_id).host
    _for_node(request, target)
    if host is not None and target != host:
        raise InvalidInput(f"request {request_id} is not for host {host!r}")
    agent = f"agent:{host}" if host else "agent"
    return _json(_dump(service.report_result(request_id, result, agent=agent)))
