"""Ollama adapter: a local model server over HTTP, through the official ``ollama`` client.

Ollama takes a JSON schema as ``format`` and constrains the output to it, which is what the
diagnosis needs; ``temperature: 0`` makes answers repeatable. Every failure of the server
(not running, model missing, error reply, too slow) becomes ``BackendUnavailable`` so the
caller falls back to the deterministic diagnosis instead of failing the question.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import ollama

from devmesh_core.errors import BackendUnavailable
from devmesh_core.log import get_logger
from devmesh_core.reason.llm.base import LLM

_log = get_logger(__name__)

# Connecting is either immediate (local server) or hopeless: do not spend the whole answer
# budget on it.
_CONNECT_TIMEOUT = 5.0


class OllamaLLM(LLM):
    """A model served by Ollama at ``host`` (``http://127.0.0.1:11434``)."""

    name = "ollama"

    def __init__(self, host: str, model: str, *, max_tokens: int = 768) -> None:
        self.host = host.rstrip("/")
        self.model = model
        self.max_tokens = max_tokens
        # One client per timeout value: the ollama client takes its timeout at construction,
        # and an httpx client (thread-safe, pooled) is worth keeping between questions.
        self._clients: dict[float, ollama.Client] = {}
        self._lock = threading.Lock()

    def _client(self, timeout: float) -> ollama.Client:
        with self._lock:
            client = self._clients.get(timeout)
            if client is None:
                client = ollama.Client(
                    host=self.host,
                    timeout=httpx.Timeout(timeout, connect=min(timeout, _CONNECT_TIMEOUT)),
                )
                self._clients[timeout] = client
            return client

    def _options(self) -> dict[str, Any]:
        return {"temperature": 0, "num_predict": self.max_tokens}

    @staticmethod
    def _messages(system: str, prompt: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]

    def _unavailable(self, exc: BaseException, started: float) -> BackendUnavailable:
        elapsed = time.monotonic() - started
        if isinstance(exc, httpx.TimeoutException):
            why = f"timed out after {elapsed:.1f}s"
        elif isinstance(exc, ollama.ResponseError):
            why = f"error {exc.status_code}: {exc.error}"
        elif isinstance(exc, ConnectionError | httpx.ConnectError):
            why = "not reachable (is `ollama serve` running?)"
        else:
            why = f"{type(exc).__name__}: {exc}"
        _log.warning("llm_unavailable", backend=self.name, host=self.host, reason=why)
        return BackendUnavailable(
            f"Ollama at {self.host} (model {self.model}) {why}", backend=self.name
        )

    def complete_json(
        self, system: str, prompt: str, schema: dict[str, Any], *, timeout: float
    ) -> str:
        """One non-streamed chat call with the schema as ``format`` (``"json"`` when the
        schema is empty); the raw message content."""
        started = time.monotonic()
        try:
            response = self._client(timeout).chat(
                model=self.model,
                messages=self._messages(system, prompt),
                format=schema or "json",
                options=self._options(),
                stream=False,
            )
        except (ConnectionError, ollama.ResponseError, httpx.HTTPError, ValueError) as exc:
            raise self._unavailable(exc, started) from exc
        return response.message.content or ""

    def stream(self, system: str, prompt: str, *, timeout: float) -> Iterator[str]:
        """Text chunks as the model writes them. ``timeout`` bounds the whole answer, not
        just the gap between chunks: a server trickling tokens forever still ends."""
        yield from self._stream(system, prompt, None, timeout)

    def stream_json(
        self, system: str, prompt: str, schema: dict[str, Any], *, timeout: float
    ) -> Iterator[str]:
        """The schema-constrained answer (as :meth:`complete_json`), streamed."""
        yield from self._stream(system, prompt, schema or "json", timeout)

    def _stream(
        self,
        system: str,
        prompt: str,
        fmt: dict[str, Any] | Literal["json"] | None,
        timeout: float,
    ) -> Iterator[str]:
        started = time.monotonic()
        deadline = started + timeout
        try:
            parts = self._client(timeout).chat(
                model=self.model,
                messages=self._messages(system, prompt),
                options=self._options(),
                stream=True,
                format=fmt,
            )
            for part in parts:
                chunk = part.message.content or ""
                if chunk:
                    yield chunk
                if part.done:
                    return
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("answer took longer than the timeout")
        except (ConnectionError, ollama.ResponseError, httpx.HTTPError, ValueError) as exc:
            raise self._unavailable(exc, started) from exc

    def close(self) -> None:
        """Close the pooled HTTP clients."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()  # type: ignore[no-untyped-call]
