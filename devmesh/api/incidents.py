"""Incident endpoints: list, show, acknowledge, mitigate, resolve, and the fleet status.

Thin: each handler calls ``IncidentService`` (``core.incidents``) or ``fleet_status``.
Mounted by ``create_app`` with ``require_token``.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response

from devmesh_core.detect.loop import incident_service
from devmesh_core.detect.models import Incident
from devmesh_core.detect.status import fleet_status
from devmesh_core.runtime import Core

router = APIRouter()


def _core(request: Request) -> Core:
    # Not devmesh.api.app's CoreDep: app.py includes this router, so importing it is circular.
    return request.app.state.core  # type: ignore[no-any-return]


CoreDep = Annotated[Core, Depends(_core)]


def json_response(data: Any) -> Response:
    """JSON through orjson (as the rest of the API answers)."""
    return Response(content=orjson.dumps(data), media_type="application/json")


def _body(payload: dict[str, Any] | None, key: str, default: str | None) -> str | None:
    value = (payload or {}).get(key, default)
    return str(value) if value is not None else None


def _by(payload: dict[str, Any] | None) -> str:
    """Who changes the incident's state: the body's ``by``, else ``api``."""
    return _body(payload, "by", "api") or "api"


def _incident_response(incident: Incident) -> Response:
    """The answer of every state change: the incident as it now is."""
    return json_response({"incident": incident.model_dump(mode="json")})


@router.get("/incidents")
def list_incidents(
    core: CoreDep,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    """Incidents newest first; ``state=active`` for those not resolved."""
    items = incident_service(core).list(state, limit=limit)
    return json_response({"incidents": [i.model_dump(mode="json") for i in items]})


@router.get("/incidents/{incident_id}")
def get_incident(core: CoreDep, incident_id: str) -> Response:
    """One incident with its timeline and the evidence summary."""
    service = incident_service(core)
    incident = service.get(incident_id)
    return json_response(
        {
            "incident": incident.model_dump(mode="json"),
            "summary": service.summary(incident).model_dump(mode="json"),
        }
    )


@router.post("/incidents/{incident_id}/ack")
def ack_incident(
    core: CoreDep, incident_id: str, payload: Annotated[dict[str, Any] | None, Body()] = None
) -> Response:
    """Acknowledge (body ``{"by": "alice"}``, default ``api``)."""
    return _incident_response(incident_service(core).acknowledge(incident_id, _by(payload)))


@router.post("/incidents/{incident_id}/mitigate")
def mitigate_incident(
    core: CoreDep, incident_id: str, payload: Annotated[dict[str, Any] | None, Body()] = None
) -> Response:
    """Mark the impact stopped though the cause may remain (body ``{"by": "alice"}``)."""
    return _incident_response(incident_service(core).mitigate(incident_id, _by(payload)))


@router.post("/incidents/{incident_id}/resolve")
def resolve_incident(
    core: CoreDep, incident_id: str, payload: Annotated[dict[str, Any] | None, Body()] = None
) -> Response:
    """Resolve (body ``{"by": "alice", "note": "restarted postgres"}``)."""
    note = _body(payload, "note", None)
    return _incident_response(incident_service(core).resolve(incident_id, _by(payload), note))


@router.get("/status")
def status(core: CoreDep) -> Response:
    """Hosts online/offline, open incidents by severity, error leaders of the last hour."""
    return json_response(fleet_status(core).model_dump(mode="json"))
