"""llama.cpp adapter: a GGUF model run in-process through ``llama-cpp-python``.

For hosts without an Ollama server. ``llama-cpp-python`` is an optional extra
(``pip install 'devmesh[llamacpp]'``; it compiles from source): it is imported only when this
backend is chosen, and a missing package or model file is a ``ConfigError`` that says what
to do. The model loads on the first question (seconds, ~1-2 GB RAM) and stays loaded.
"""

from __future__ import annotations

import importlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devmesh_core.errors import BackendUnavailable, ConfigError
from devmesh_core.log import get_logger
from devmesh_core.reason.llm.base import LLM

_log = get_logger(__name__)


_ALIASED = re.compile(r'(["\[])(E\d+)(["\]])')
_PARTIAL = re.compile(r'["\[](?:E\d*)?$')


def id_aliases(schema: dict[str, Any]) -> dict[str, str]:
    """Evidence id → a short alias (``E1``, ``E2`` …) for each id the schema lets an answer
    cite (``properties.evidence_ids.items.enum``, see
    :func:`~devmesh_core.reason.prompt.output_schema`).

    Qwen's tokenizer spends a token on almost every character of a hex id:
    ``template:Ta8a51fd978a7`` is ~13 tokens, ``E1`` is 2. A compact prompt shows eight ids
    and an answer cites three, so aliasing saves ~80 prompt and ~30 answer tokens (several
    seconds on two cores); the answer is mapped back before anyone sees it."""
    cited = schema.get("properties", {}).get("evidence_ids", {})
    enum = cited.get("items", {}).get("enum") if isinstance(cited, dict) else None
    if not isinstance(enum, list):
        return {}
    ids = [v for v in dict.fromkeys(enum) if isinstance(v, str) and ":" in v]
    return {long: f"E{i}" for i, long in enumerate(ids, 1)}


def _shorten(text: str, aliases: dict[str, str]) -> str:
    """``text`` with every whole occurrence of an aliased id replaced by its alias."""
    if not aliases:
        return text
    pattern = "|".join(re.escape(i) for i in sorted(aliases, key=len, reverse=True))
    return re.sub(rf"(?<![\w.:@-])(?:{pattern})(?![\w.:@-])", lambda m: aliases[m[0]], text)


class _Restore:
    """Maps aliases in generated text back to evidence ids, chunk by chunk: a quoted
    (``"E2"``) or bracketed (``[E2]``) alias is replaced; a chunk ending inside one is held
    back until the next chunk completes it."""

    def __init__(self, aliases: dict[str, str]) -> None:
        self._back = {short: long for long, short in aliases.items()}
        self._pending = ""

    def _sub(self, text: str) -> str:
        def one(found: re.Match[str]) -> str:
            opening, alias, closing = found.groups()
            if opening + closing not in ('""', "[]") or alias not in self._back:
                return found.group(0)
            return f"{opening}{self._back[alias]}{closing}"

        return _ALIASED.sub(one, text)

    def feed(self, text: str) -> str:
        buffer = self._sub(self._pending + text)
        partial = _PARTIAL.search(buffer)
        cut = partial.start() if partial else len(buffer)
        self._pending = buffer[cut:]
        return buffer[:cut]

    def flush(self) -> str:
        rest, self._pending = self._sub(self._pending), ""
        return rest


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
    compact_answers = True
    """A small model on a few CPU cores: the diagnosis sends it a shorter prompt and a
    smaller schema (see :func:`~devmesh_core.reason.prompt.output_schema`)."""

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
        self.last_stats: dict[str, Any] = {}
        """Figures of the last call (for benchmarks and logs): ``prompt_tokens``,
        ``answer_tokens``, ``first_token_s`` (reading the prompt), ``seconds``."""

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
        """Generated text pieces; ``schema=None`` is free text, ``{}`` any JSON object.
        Evidence ids the schema enumerates are shown to the model as short aliases (see
        :func:`id_aliases`) and mapped back in what is yielded."""
        deadline = time.monotonic() + timeout
        aliases = id_aliases(schema) if schema else {}
        if aliases:
            prompt = _shorten(prompt, aliases)
            schema = json.loads(_shorten(json.dumps(schema), aliases))
        restore = _Restore(aliases)
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
            started = time.monotonic()
            first: float | None = None
            pieces = 0
            llama = self._model()
            try:
                for part in llama.create_chat_completion(**kwargs):
                    delta = part["choices"][0].get("delta", {})
                    text = delta.get("content")
                    if text:
                        pieces += 1
                        if first is None:
                            first = time.monotonic() - started
                        text = restore.feed(text)
                        if text:
                            yield text
                    if time.monotonic() > deadline:
                        raise BackendUnavailable(
                            f"llama.cpp ({self.model}) took longer than {timeout:.0f}s",
                            backend=self.name,
                        )
                rest = restore.flush()
                if rest:
                    yield rest
            except (ValueError, RuntimeError, KeyError, IndexError) as exc:
                raise BackendUnavailable(
                    f"llama.cpp ({self.model}) failed: {exc}", backend=self.name
                ) from exc
            finally:
                # A streamed piece is one token; the context holds prompt + answer.
                in_context = int(getattr(llama, "n_tokens", 0) or 0)
                self.last_stats = {
                    "prompt_tokens": max(0, in_context - pieces),
                    "answer_tokens": pieces,
                    "first_token_s": round(first, 2) if first is not None else None,
                    "seconds": round(time.monotonic() - started, 2),
                }
                _log.info("llm_generated", backend=self.name, model=self.model, **self.last_stats)

    def complete_json(
        self, system: str, prompt: str, schema: dict[str, Any], *, timeout: float
    ) -> str:
        """Constrained generation (llama.cpp turns the schema into a grammar); streamed
        internally so the timeout can stop a runaway answer."""
        return "".join(self._chunks(system, prompt, schema or {}, timeout))

    def stream_json(
        self, system: str, prompt: str, schema: dict[str, Any], *, timeout: float
    ) -> Iterator[str]:
        """The constrained answer in the pieces it is generated in."""
        yield from self._chunks(system, prompt, schema or {}, timeout)

    def stream(self, system: str, prompt: str, *, timeout: float) -> Iterator[str]:
        """Free-text chunks as they are generated."""
        yield from self._chunks(system, prompt, None, timeout)

    def close(self) -> None:
        """Drop the loaded model (frees its memory)."""
        with self._lock:
            llama, self._llama = self._llama, None
        if llama is not None and hasattr(llama, "close"):
            llama.close()
