"""LLM adapters behind the :class:`LLM` port, chosen by a spec string.

Specs: ``"none"``/``None``/``""`` → no LLM (deterministic diagnosis);
``"ollama"`` / ``"llamacpp"`` → the one configured in ``ReasonSettings``;
``"ollama://host:port/model"`` (``ollamas://`` for HTTPS) and
``"llamacpp:///path/model.gguf"`` → that exact one. Opening never contacts the backend:
an Ollama that is down shows up as ``BackendUnavailable`` on the first call, where the
caller falls back, not as a start-up failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from devmesh_core.errors import ConfigError
from devmesh_core.reason.llm.base import LLM

if TYPE_CHECKING:
    from devmesh_core.config import Settings
    from devmesh_core.reason.settings import ReasonSettings

__all__ = ["LLM", "open_llm", "parse_spec"]

_NONE = {"", "none", "off", "no", "false"}


def _reason(settings: Settings | ReasonSettings) -> ReasonSettings:
    from devmesh_core.reason.settings import ReasonSettings

    if isinstance(settings, ReasonSettings):
        return settings
    return settings.reason


def parse_spec(spec: str, settings: Settings | ReasonSettings) -> tuple[str, str, str]:
    """``(backend, location, model)`` of a spec: for Ollama the base URL and model tag, for
    llama.cpp the GGUF path (and model = its file name). ``ConfigError`` if malformed."""
    reason = _reason(settings)
    text = spec.strip()
    lowered = text.lower()
    if lowered == "ollama":
        return "ollama", reason.ollama_url, reason.ollama_model
    if lowered == "llamacpp":
        if reason.llamacpp_model is None:
            raise ConfigError(
                "llm 'llamacpp' needs DEVMESH_REASON__LLAMACPP_MODEL (a .gguf file path)"
            )
        path = Path(reason.llamacpp_model).expanduser()
        return "llamacpp", str(path), path.name
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in {"ollama", "ollamas"}:
        if not parts.netloc:
            raise ConfigError(f"llm spec {spec!r}: expected ollama://host:port/model")
        model = unquote(parts.path.lstrip("/")) or reason.ollama_model
        base = ("https" if scheme == "ollamas" else "http") + "://" + parts.netloc
        return "ollama", base, model
    if scheme == "llamacpp":
        raw = unquote(parts.netloc + parts.path)
        if not raw:
            raise ConfigError(f"llm spec {spec!r}: expected llamacpp:///path/model.gguf")
        path = Path(raw).expanduser()
        return "llamacpp", str(path), path.name
    raise ConfigError(
        f"unknown llm spec {spec!r}: use 'none', 'ollama', 'llamacpp', "
        "'ollama://host:port/model' or 'llamacpp:///path/model.gguf'"
    )


def open_llm(spec: str | None, settings: Settings | ReasonSettings) -> LLM | None:
    """The LLM a spec names (``None`` for no LLM). ``spec=None`` means "no LLM" as the
    contract says; pass ``settings.reason.llm`` for the configured default."""
    if spec is None or spec.strip().lower() in _NONE:
        return None
    reason = _reason(settings)
    backend, location, model = parse_spec(spec, reason)
    if backend == "ollama":
        from devmesh_core.reason.llm.ollama import OllamaLLM

        return OllamaLLM(location, model, max_tokens=reason.llm_max_tokens)
    from devmesh_core.reason.llm.llamacpp import LlamaCppLLM

    return LlamaCppLLM(
        Path(location),
        n_ctx=reason.llamacpp_ctx,
        n_threads=reason.llamacpp_threads,
        max_tokens=reason.llm_max_tokens,
    )
