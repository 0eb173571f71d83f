"""llama.cpp adapter: a GGUF model run in-process through ``llama-cpp-python``.

For hosts without an Ollama server. ``llama-cpp-python`` is an optional extra
(``pip install 'devmesh[llamacpp]'``; it compiles from source): it is imported only when this
backend is chosen, and a missing package or model file is a ``ConfigError`` that says what
to do. The model loads on the first question (seconds, ~1-2 GB RAM) and stays loaded.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devmesh_core.errors import BackendUnavailable, ConfigError
from devmesh_core.log import get_logger
from devmesh_core.reason.llm.base import LLM

_log = get_logger(__name__)


def _import_llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise ConfigError(
            "llm 'llamacpp' needs the optional package llama-cpp-python: "
            "pip install 'devmesh[llamacpp]' (it compiles llama.cpp, a few minutes; set "
            "CMAKE_ARGS=-DGGML_NATIVE=OFF for a portable build), or use llm=ollama"
        ) from exc


class LlamaCppLLM(LLM):
    """A GGUF model file run with llama.cpp in this process (one question at a time)."""

    name = "llamacpp"

    def __init__(
        self, model_path: Path, *, n_ctx: int = 4096, n_threads: int = 2, max_tokens: int = 768
    ) -> None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"llm 'llamacpp': model file {path} does not exist "
                "(set DEVMESH_REASON__LLAMACPP_MODEL to a .gguf file)"
            )
        self._module = _import_llama_cpp()
        self.path = path
        self.model = path.name
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.max_tokens = max_tokens
        self._llama: Any = None
        # A llama.cpp context is not re-entrant: one generation at a time.
        self._lock = threading.Lock()

    def _model(self) -> Any:
        if self._llama is None:
            started = time.monotonic()
            try:
                self._llama = self._module.Llama(
                    model_path=str(self.path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise BackendUnavailable(
                    f"llama.cpp could not load {self.path}: {exc}", backend=self.name
                ) from exc
            _log.info(
                "llm_loaded",
                backend=self.name,
                model=self.model,
                seconds=round(time.monotonic() - started, 2),
            )
        return self._llama

    def _chunks(
        self, system: str, prompt: str, schema: dict[str, Any] | None, timeout: float
    ) -> Iterator[str]:
        """Generated text pieces; ``schema=None`` is free text, ``{}`` any JSON object."""
        deadline = time.monotonic() + timeout
        kwargs: dict[str, Any] = {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt},
            ],
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "stream": True,
        }
        if schema is not None:
            kwargs["response_format"] = (
                {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
            )
        with self._lock:
            try:
                for part in self._model().create_chat_completion(**kwargs):
                    delta = part["choices"][0].get("delta", {})
                    text = delta.get("content")
                    if text:
                        yield text
                    if time.monotonic() > deadline:
                        raise BackendUnavailable(
                            f"llama.cpp ({self.model}) took longer than {timeout:.0f}s",
                            backend=self.name,
                        )
            except (ValueError, RuntimeError, KeyError, IndexError) as exc:
                raise BackendUnavailable(
                    f"llama.cpp ({self.model}) failed: {exc}", backend=self.name
                ) from exc

    def complete_json(
        self, system: str, prompt: str, schema: dict[str, Any], *, timeout: float
    ) -> str:
        """Constrained generation (llama.cpp turns the schema into a grammar); streamed
        internally so the timeout can stop a runaway answer."""
        return "".join(self._chunks(system, prompt, schema or {}, timeout))

    def stream(self, system: str, prompt: str, *, timeout: float) -> Iterator[str]:
        """Free-text chunks as they are generated."""
        yield from self._chunks(system, prompt, None, timeout)

    def close(self) -> None:
        """Drop the loaded model (frees its memory)."""
        with self._lock:
            llama, self._llama = self._llama, None
        if llama is not None and hasattr(llama, "close"):
            llama.close()
