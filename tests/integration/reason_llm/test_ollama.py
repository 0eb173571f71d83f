"""The Ollama adapter with the real ``ollama`` client against a fake Ollama over HTTP."""

from __future__ import annotations

import json
import time

import pytest

from devmesh_core.config import Settings
from devmesh_core.errors import BackendUnavailable
from devmesh_core.reason.llm import open_llm
from devmesh_core.reason.llm.ollama import OllamaLLM
from devmesh_core.reason.settings import ReasonSettings
from tests.conftest import free_port
from tests.integration.reason_llm.conftest import FakeOllama

SCHEMA = {
    "type": "object",
    "properties": {
        "root_cause": {"type": "string", "maxLength": 200},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["root_cause", "confidence"],
}


def _llm(fake: FakeOllama, model: str = "qwen2.5:7b-instruct") -> OllamaLLM:
    llm = open_llm(f"ollama://{fake.url.removeprefix('http://')}/{model}", Settings())
    assert isinstance(llm, OllamaLLM)
    return llm


def test_complete_json_passes_schema_and_returns_answer(fake_ollama: FakeOllama) -> None:
    llm = _llm(fake_ollama)
    raw = llm.complete_json("You are DevMesh.", "Why is postgres down?", SCHEMA, timeout=10)
    assert json.loads(raw) == {"root_cause": "disk full", "confidence": 0.9}
    (request,) = fake_ollama.requests
    assert request["model"] == "qwen2.5:7b-instruct"
    assert request["format"] == SCHEMA
    assert request["stream"] is False
    assert request["options"]["temperature"] == 0
    assert request["options"]["num_predict"] == 768
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["messages"][1]["content"] == "Why is postgres down?"
    assert llm.describe() == "ollama:qwen2.5:7b-instruct"
    llm.close()


def test_empty_schema_asks_for_plain_json(fake_ollama: FakeOllama) -> None:
    _llm(fake_ollama).complete_json("s", "p", {}, timeout=10)
    assert fake_ollama.requests[0]["format"] == "json"


def test_stream_yields_chunks(fake_ollama: FakeOllama) -> None:
    chunks = list(_llm(fake_ollama).stream("s", "Explain", timeout=10))
    assert chunks == ["The disk ", "is ", "full."]
    assert fake_ollama.requests[0]["stream"] is True
    assert "format" not in fake_ollama.requests[0] or not fake_ollama.requests[0]["format"]


def test_server_down_is_unavailable_quickly() -> None:
    llm = open_llm(f"ollama://127.0.0.1:{free_port()}/m", Settings())
    assert llm is not None
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="not reachable") as info:
        llm.complete_json("s", "p", SCHEMA, timeout=30)
    assert time.monotonic() - started < 2
    assert info.value.backend == "ollama"
    with pytest.raises(BackendUnavailable):
        list(llm.stream("s", "p", timeout=30))


def test_slow_server_times_out(fake_ollama: FakeOllama) -> None:
    fake_ollama.delay = 3.0
    llm = _llm(fake_ollama)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="timed out"):
        llm.complete_json("s", "p", SCHEMA, timeout=0.5)
    assert time.monotonic() - started < 2.5


def test_stream_timeout_bounds_the_whole_answer(fake_ollama: FakeOllama) -> None:
    # Each chunk arrives in time, but the answer as a whole takes too long.
    fake_ollama.chunks = ["a"] * 50
    fake_ollama.chunk_delay = 0.1
    started = time.monotonic()
    got: list[str] = []
    with pytest.raises(BackendUnavailable, match="timed out"):
        for chunk in _llm(fake_ollama).stream("s", "p", timeout=0.6):
            got.append(chunk)
    assert 0 < len(got) < 50
    assert time.monotonic() - started < 3


def test_missing_model_and_server_errors_are_unavailable(fake_ollama: FakeOllama) -> None:
    with pytest.raises(BackendUnavailable, match=r"404.*not found"):
        _llm(fake_ollama, model="llama9:70b").complete_json("s", "p", SCHEMA, timeout=5)
    fake_ollama.status, fake_ollama.error = 500, "llama runner process has terminated"
    with pytest.raises(BackendUnavailable, match=r"500.*runner process"):
        _llm(fake_ollama).complete_json("s", "p", SCHEMA, timeout=5)


def test_error_inside_a_stream_is_unavailable(fake_ollama: FakeOllama) -> None:
    fake_ollama.stream_error = "out of memory"
    with pytest.raises(BackendUnavailable, match="out of memory"):
        list(_llm(fake_ollama).stream("s", "p", timeout=5))


def test_configured_ollama_spec(fake_ollama: FakeOllama) -> None:
    settings = Settings(reason=ReasonSettings(llm="ollama", ollama_url=fake_ollama.url))
    llm = open_llm(settings.reason.llm, settings)
    assert isinstance(llm, OllamaLLM)
    assert llm.host == fake_ollama.url and llm.model == "qwen2.5:7b-instruct"
    assert json.loads(llm.complete_json("s", "p", SCHEMA, timeout=5))["root_cause"]
