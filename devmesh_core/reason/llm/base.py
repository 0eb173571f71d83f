"""The LLM port: the one thing the diagnosis asks of a language model.

A diagnosis needs a model to answer one prompt with JSON that matches a schema, bounded in
time. Everything backend-specific (HTTP client, in-process model, grammar) stays in the
adapters, so the reasoning code is tested once against this interface and a model that is
down or slow becomes one error, :class:`~devmesh_core.errors.BackendUnavailable`, which the
caller answers with the deterministic (no-LLM) diagnosis.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

# What ``stream`` asks of ``complete_json`` when an adapter cannot stream: plain text
# wrapped in the smallest JSON object.
_TEXT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
}


class LLM(ABC):
    """A chat model that answers a system + user prompt.

    ``name`` is the backend's name as the Diagnosis reports it (``"ollama"``,
    ``"llamacpp"``); ``model`` says which model, for logs and the answer's footer.
    """

    name: str = "llm"
    model: str = ""

    @abstractmethod
    def complete_json(
        self, system: str, prompt: str, schema: dict[str, Any], *, timeout: float
    ) -> str:
        """The model's raw answer, which should be JSON matching ``schema`` (the caller
        validates it: small models do not always comply). Raises ``BackendUnavailable``
        when the model cannot be reached, fails, or takes longer than ``timeout`` seconds."""

    def stream_json(
        self, system: str, prompt: str, schema: dict[str, Any], *, timeout: float
    ) -> Iterator[str]:
        """:meth:`complete_json`'s answer in the chunks the model writes it in, so a front
        end can show the answer forming (the caller joins and validates it). Adapters
        that cannot stream get this default: the whole answer as one chunk."""
        yield self.complete_json(system, prompt, schema, timeout=timeout)

    def stream(self, system: str, prompt: str, *, timeout: float) -> Iterator[str]:
        """Free-text answer in chunks, for front ends that show it as it comes. Adapters
        that cannot stream get this default: one chunk, from :meth:`complete_json`."""
        import json

        raw = self.complete_json(system, prompt, _TEXT_SCHEMA, timeout=timeout)
        try:
            value = json.loads(raw)
        except ValueError:
            yield raw
            return
        yield str(value.get("text", raw)) if isinstance(value, dict) else raw

    def close(self) -> None:  # noqa: B027 - optional hook, most adapters hold nothing
        """Release what the adapter holds (an HTTP session, a loaded model)."""

    def describe(self) -> str:
        """``backend:model`` for logs and the diagnosis footer."""
        return f"{self.name}:{self.model}" if self.model else self.name
