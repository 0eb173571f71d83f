"""A model's answer streamed as it is written: through the real ``ollama`` client against
the fake Ollama server, to ``ask(on_text=…)`` and to ``POST /ask`` with ``stream``."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from devmesh.api.app import create_app
from devmesh_core.reason import ask
from tests.evals.harness import CASES_DIR, load_case, loaded_core
from tests.integration.reason_llm.conftest import FakeOllama

CASE = load_case(CASES_DIR / "oom-killed-dependency")


def _answer(evidence_id: str) -> str:
    return json.dumps(
        {
            "root_cause": "postgres on db1 was killed by the kernel's OOM killer",
            "origin_service": "postgres",
            "confidence": 0.8,
            "evidence_ids": [evidence_id],
            "next_steps": ["Give postgres more memory"],
            "runbook_ids": ["oom-kill"],
        }
    )


def _pieces(text: str, size: int = 17) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _an_evidence_id(fake: FakeOllama, spec: str, core: object) -> str:
    """One id the schema allows (the first call's ``format`` enumerates them)."""
    fake.chunks = _pieces('{"not": "an answer"}')
    ask(core, CASE.question, since=CASE.since, until=CASE.until, llm=spec, on_text=lambda _: None)  # type: ignore[arg-type]
    return str(fake.requests[0]["format"]["properties"]["evidence_ids"]["items"]["enum"][0])


def test_ask_relays_the_streamed_answer_and_validates_it_whole(
    fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    with loaded_core(CASE, tmp_path) as core:
        spec = "ollama://" + fake_ollama.url.split("://", 1)[1] + "/qwen2.5:7b-instruct"
        evidence_id = _an_evidence_id(fake_ollama, spec, core)
        fake_ollama.requests.clear()
        fake_ollama.chunks = _pieces(_answer(evidence_id))
        seen: list[str] = []
        diagnosis = ask(
            core, CASE.question, since=CASE.since, until=CASE.until, llm=spec, on_text=seen.append
        )
    assert seen == fake_ollama.chunks and len(seen) > 5
    request = fake_ollama.requests[0]
    assert request["stream"] is True and isinstance(request["format"], dict)
    assert diagnosis.backend == "ollama" and diagnosis.fallback_reason is None
    assert [e.id for e in diagnosis.evidence] == [evidence_id]


def test_post_ask_streams_ndjson_then_the_diagnosis(
    fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    with loaded_core(CASE, tmp_path) as core:
        spec = "ollama://" + fake_ollama.url.split("://", 1)[1] + "/qwen2.5:7b-instruct"
        evidence_id = _an_evidence_id(fake_ollama, spec, core)
        fake_ollama.chunks = _pieces(_answer(evidence_id))
        body = {
            "question": CASE.question,
            "since": CASE.since.isoformat() if CASE.since else None,
            "until": CASE.until.isoformat() if CASE.until else None,
            "llm": spec,
            "stream": True,
        }
        with TestClient(create_app(core.settings, core.store)) as client:
            lines = client.post("/ask", json=body).content.splitlines()
            plain = client.post("/ask", json={**body, "stream": False, "llm": "none"}).json()
    items = [orjson.loads(line) for line in lines]
    texts = [i["text"] for i in items[:-1]]
    assert "".join(texts) == "".join(fake_ollama.chunks)
    final = items[-1]["diagnosis"]
    assert final["backend"] == "ollama" and final["origin_service"] == "postgres"
    assert plain["backend"] == "none"  # the default answer is one JSON document


def test_post_ask_stream_reports_errors_in_band(tmp_path: Path) -> None:
    with (
        loaded_core(CASE, tmp_path) as core,
        TestClient(create_app(core.settings, core.store)) as client,
    ):
        lines = client.post(
            "/ask", json={"question": "why?", "incident_id": "INC-999", "stream": True}
        ).content.splitlines()
    assert len(lines) == 1
    error = orjson.loads(lines[0])["error"]
    assert "INC-999" in error
