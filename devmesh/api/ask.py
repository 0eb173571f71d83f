"""``POST /ask``: a question about the fleet in, the typed Diagnosis (JSON) out. Thin.

The body names the question and, optionally, an incident, a service, a host, a window
(``since``/``until`` as ``15m``/``2h`` or ISO 8601) and the backend (``llm``: ``none``,
``ollama``, ``llamacpp``). The endpoint is a plain ``def`` so FastAPI runs it in its
thread pool: retrieval reads the store and a model call may take seconds.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from devmesh_core.errors import DevMeshError
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
    stream: bool = Field(
        default=False,
        description="answer as NDJSON: {'text': …} lines while a model writes, then "
        "{'diagnosis': …} (or {'error': …})",
    )


@router.post("/ask")
def ask_endpoint(body: AskBody, request: Request) -> Response:
    """Diagnose: root cause, cited evidence, next steps and proposed actions. With
    ``stream``, the model's answer is streamed as it is written (NDJSON)."""
    from devmesh.api.app import json_response
    from devmesh_core.reason import ask

    since = parse_time(body.since) if body.since else None
    until = parse_time(body.until) if body.until else None

    def run(on_text: Callable[[str], None] | None = None) -> Any:
        return ask(
            request.app.state.core,
            body.question,
            incident_id=body.incident_id,
            service=body.service,
            host=body.host,
            since=since,
            until=until,
            llm=body.llm,
            on_text=on_text,
        )

    if not body.stream:
        return json_response(run().model_dump(mode="json"))
    return StreamingResponse(_streamed(run), media_type="application/x-ndjson")


_DONE = object()


def _streamed(run: Callable[[Callable[[str], None]], Any]) -> Iterator[bytes]:
    """Run the diagnosis in a thread and relay what it writes, line by line (Starlette
    iterates this generator in its thread pool, so waiting on the queue blocks nothing)."""
    pending: queue.Queue[Any] = queue.Queue()

    def work() -> None:
        try:
            diagnosis = run(lambda text: pending.put({"text": text}))
            pending.put({"diagnosis": diagnosis.model_dump(mode="json")})
        except DevMeshError as exc:
            pending.put({"error": str(exc)})
        finally:
            pending.put(_DONE)

    threading.Thread(target=work, name="devmesh-ask-stream", daemon=True).start()
    while (item := pending.get()) is not _DONE:
        yield orjson.dumps(item) + b"\n"
