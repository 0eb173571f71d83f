"""The LLM port: spec parsing, the no-LLM default, llama.cpp's configuration errors and
the default ``stream`` of the base class."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devmesh_core.config import Settings
from devmesh_core.errors import ConfigError
from devmesh_core.reason.llm import LLM, open_llm, parse_spec
from devmesh_core.reason.llm.ollama import OllamaLLM
from devmesh_core.reason.settings import ReasonSettings


@pytest.mark.parametrize("spec", [None, "", "none", "NONE", " off "])
def test_no_llm(spec: str | None) -> None:
    assert open_llm(spec, Settings()) is None


def test_default_setting_is_no_llm() -> None:
    settings = Settings()
    assert settings.reason.llm == "none"
    assert open_llm(settings.reason.llm, settings) is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ollama", ("ollama", "http://127.0.0.1:11434", "qwen2.5:7b-instruct")),
        ("ollama://gpu-box:11434/llama3.1:8b", ("ollama", "http://gpu-box:11434", "llama3.1:8b")),
        (
            "ollamas://ai.example.org/qwen2.5:14b",
            ("ollama", "https://ai.example.org", "qwen2.5:14b"),
        ),
        ("ollama://10.0.0.9:11434", ("ollama", "http://10.0.0.9:11434", "qwen2.5:7b-instruct")),
        ("llamacpp:///models/q.gguf", ("llamacpp", "/models/q.gguf", "q.gguf")),
    ],
)
def test_parse_spec(spec: str, expected: tuple[str, str, str]) -> None:
    assert parse_spec(spec, Settings()) == expected


def test_parse_spec_uses_reason_settings() -> None:
    reason = ReasonSettings(ollama_url="http://nas:11434", ollama_model="phi4", llm_max_tokens=99)
    assert parse_spec("ollama", reason) == ("ollama", "http://nas:11434", "phi4")
    llm = open_llm("ollama", reason)
    assert isinstance(llm, OllamaLLM) and llm.max_tokens == 99


@pytest.mark.parametrize("spec", ["gpt4", "http://x/y", "ollama://", "llamacpp://"])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        open_llm(spec, Settings())


def test_llamacpp_needs_a_model_setting() -> None:
    with pytest.raises(ConfigError, match="LLAMACPP_MODEL"):
        open_llm("llamacpp", Settings())


def test_llamacpp_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_llm(f"llamacpp://{tmp_path}/absent.gguf", Settings())


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is not None, reason="llama-cpp-python is installed"
)
def test_llamacpp_missing_package(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    settings = Settings(reason=ReasonSettings(llm="llamacpp", llamacpp_model=model))
    with pytest.raises(ConfigError, match=r"pip install 'devmesh\[llamacpp\]'"):
        open_llm(settings.reason.llm, settings)


class _Echo(LLM):
    """The smallest adapter: answers every prompt with fixed JSON (tests the base class's
    default ``stream``, which every non-streaming adapter inherits)."""

    name = "echo"

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.schemas: list[dict[str, Any]] = []

    def complete_json(
        self, system: str, prompt: str, schema: dict[str, Any], *, timeout: float
    ) -> str:
        self.schemas.append(schema)
        return self.answer


def test_default_stream_is_one_chunk_of_complete_json() -> None:
    llm = _Echo('{"text": "the disk is full"}')
    chunks: Iterator[str] = llm.stream("s", "p", timeout=1)
    assert list(chunks) == ["the disk is full"]
    assert llm.schemas[0]["required"] == ["text"]
    assert list(_Echo("not json").stream("s", "p", timeout=1)) == ["not json"]
    assert _Echo("x").describe() == "echo"


def test_llamacpp_aliases_the_citable_ids_and_maps_them_back() -> None:
    from devmesh_core.reason.llm.llamacpp import _Restore, _shorten, id_aliases

    ids = ["template:Ta8a51fd978a7", "deployment:api-2.4.0", "host:db2", "none"]
    schema = {
        "properties": {
            "origin_service": {"anyOf": [{"type": "string", "enum": ["api"]}]},
            "evidence_ids": {"type": "array", "items": {"type": "string", "enum": ids}},
        }
    }
    aliases = id_aliases(schema)
    assert aliases == {
        "template:Ta8a51fd978a7": "E1",
        "deployment:api-2.4.0": "E2",
        "host:db2": "E3",
    }
    assert id_aliases({"type": "object"}) == {}
    # Whole ids only: a longer id or plain text that contains one stays as it is.
    prompt = "[template:Ta8a51fd978a7] api 2.4.0 is live [deployment:api-2.4.0] host:db22"
    assert _shorten(prompt, aliases) == "[E1] api 2.4.0 is live [E2] host:db22"

    answer = (
        '{ "origin_service": "api", "evidence_ids": ["E1", "E2"], '
        '"root_cause": "api: \\"E12\\" after [E2]", "confidence": 0.9 }'
    )
    expected = answer.replace('"E1"', '"template:Ta8a51fd978a7"').replace(
        '"E2"', '"deployment:api-2.4.0"'
    )
    expected = expected.replace("[E2]", "[deployment:api-2.4.0]")
    for size in (1, 2, 3, 7, len(answer)):  # however the stream splits it
        restore = _Restore(aliases)
        pieces = [restore.feed(answer[i : i + size]) for i in range(0, len(answer), size)]
        assert "".join(pieces) + restore.flush() == expected
