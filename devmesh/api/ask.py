"""``POST /ask``: a question about the fleet in, the typed Diagnosis (JSON) out. Thin.

The body names the question and, optionally, an incident, a service, a host, a window
(``since``/``until`` as ``15m``/``2h`` or ISO 8601) and the backend (``llm``: ``none``,
``ollama``, ``llamacpp``). The endpoint is a plain ``def`` so FastAPI runs it in its
thread pool: retrieval reads the store and a model call may take seconds.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from devmesh_core.timeparse import parse_time

router = APIRouter(tags=["reasoning"])


class AskBody(BaseModel):
    """The request body of ``POST /ask``."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=2_000)
    incident_id: str | None = Field(default=None, max_length=64)
    service: str | None = Field(default=None, max_length=255)
    host: str | None = Field(default=None, max_length=255)
    since: str | None = Field(default=None, max_length=64)
    until: str | None = Field(default=None, max_length=64)
    llm: str | None = Field(default=None, max_length=512)


@router.post("/ask")
def ask_endpoint(body: AskBody, request: Request) -> Response:
    """Diagnose: root cause, cited evidence, next steps and proposed actions."""
    from devmesh.api.app import json_response
    from devmesh_core.reason import ask

    diagnosis = ask(
        request.app.state.core,
        body.question,
        incident_id=body.incident_id,
        service=body.service,
        host=body.host,
        since=parse_time(body.since) if body.since else None,
        until=parse_time(body.until) if body.until else None,
        llm=body.llm,
    )
    return json_response(diagnosis.model_dump(mode="json"))
