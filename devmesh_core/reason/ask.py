"""``ask``: a question about the fleet in, a typed :class:`Diagnosis` with cited evidence out.

The pipeline is a llama-index query engine — a :class:`DevMeshRetriever` (a
``BaseRetriever`` over DevMesh's own ports: store, vector index, graph, runbooks) feeding
a custom response-synthesis step (the rule-based diagnosis, or a model through the
:class:`~devmesh_core.reason.llm.base.LLM` port with a fallback). llama-index's global
``Settings.llm``/``embed_model`` are set explicitly (a ``MockLLM`` and DevMesh's own
embedder) so nothing in it ever reaches for OpenAI; models are called through DevMesh's
port, where redaction, bounded schemas and fallbacks live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from devmesh_core.errors import ConfigError, DevMeshError, InvalidInput
from devmesh_core.log import get_logger
from devmesh_core.reason.conversation import Conversation
from devmesh_core.reason.diagnose import llm_diagnosis, rule_diagnosis
from devmesh_core.reason.models import Diagnosis
from devmesh_core.reason.redact import Redactor
from devmesh_core.reason.retrieval import EvidenceBundle, Retriever, make_llama_retriever

if TYPE_CHECKING:
    from devmesh_core.reason.llm.base import LLM
    from devmesh_core.runtime import Core

log = get_logger(__name__)


class Reasoner:
    """Per-process reasoning state kept on ``core.reasoner``: the redactor and the opened
    LLMs (a llama.cpp model takes seconds to load; open it once, not per question)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.redactor = Redactor(core.settings)
        self._llms: dict[str, LLM | None] = {}
        self._lock = threading.Lock()

    def llm(self, spec: str | None) -> LLM | None:
        """The model a spec names (``None`` for the rule-based diagnosis), opened once."""
        key = (spec or "none").strip()
        with self._lock:
            if key not in self._llms:
                from devmesh_core.reason.llm import open_llm

                try:
                    self._llms[key] = open_llm(key, self.core.settings)
                except ConfigError as exc:
                    raise InvalidInput(str(exc)) from exc
            return self._llms[key]

    def close(self) -> None:
        """Release the opened models."""
        with self._lock:
            models, self._llms = list(self._llms.values()), {}
        for model in models:
            if model is not None:
                model.close()


def reasoner_for(core: Core) -> Reasoner:
    """``core.reasoner``, created on first use."""
    with _CORE_LOCK:
        if not isinstance(core.reasoner, Reasoner):
            core.reasoner = Reasoner(core)
        return core.reasoner


_CORE_LOCK = threading.Lock()
_LLAMA_LOCK = threading.Lock()
_llama_ready = False


def configure_llama_index(core: Core) -> None:
    """Set llama-index's global LLM and embedding model explicitly, once per process: left
    unset, llama-index tries to import its OpenAI integration."""
    global _llama_ready
    with _LLAMA_LOCK:
        if _llama_ready:
            return
        from llama_index.core import Settings as LlamaSettings
        from llama_index.core.embeddings import MockEmbedding
        from llama_index.core.llms import MockLLM

        LlamaSettings.llm = MockLLM()
        if core.embedder is not None:
            LlamaSettings.embed_model = _embedding_adapter(core.embedder)
        else:
            LlamaSettings.embed_model = MockEmbedding(embed_dim=384)
        _llama_ready = True


def _embedding_adapter(embedder: Any) -> Any:
    """DevMesh's :class:`~devmesh_core.vectors.embedder.Embedder` as a llama-index
    ``BaseEmbedding`` (same model as the template vectors, loaded lazily)."""
    from llama_index.core.embeddings import BaseEmbedding
    from pydantic import PrivateAttr

    class DevMeshEmbedding(BaseEmbedding):
        _embedder: Any = PrivateAttr()

        def __init__(self, inner: Any) -> None:
            super().__init__(model_name=str(getattr(inner, "model_id", "devmesh")))
            self._embedder = inner

        def _get_query_embedding(self, query: str) -> list[float]:
            return [float(x) for x in self._embedder.embed_one(query)]

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._get_query_embedding(text)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    return DevMeshEmbedding(embedder)


def _engine(retriever: Any, synthesize: Callable[[EvidenceBundle], Diagnosis]) -> Any:
    """A llama-index query engine: retrieve evidence nodes, then synthesise a Diagnosis."""
    from llama_index.core.base.response.schema import Response
    from llama_index.core.query_engine import CustomQueryEngine

    class DiagnosisQueryEngine(CustomQueryEngine):
        """Retrieval through DevMesh's retriever, synthesis by DevMesh's diagnosis."""

        retriever: Any
        diagnose_fn: Any

        def custom_query(self, query_str: str) -> Response:
            nodes = self.retriever.retrieve(query_str)
            bundle = self.retriever.bundle
            diagnosis = self.diagnose_fn(bundle)
            return Response(
                response=diagnosis.root_cause,
                source_nodes=nodes,
                metadata={"diagnosis": diagnosis, "bundle": bundle},
            )

    return DiagnosisQueryEngine(retriever=retriever, diagnose_fn=synthesize)


def ask(
    core: Core,
    question: str,
    *,
    incident_id: str | None = None,
    service: str | None = None,
    host: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    llm: str | None = None,
    conversation: Conversation | None = None,
    now: datetime | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Diagnosis:
    """Answer a question about the fleet with a :class:`Diagnosis`.

    ``on_text`` receives the model's answer as it is written, where the backend streams
    (nothing is sent for the no-LLM backend, whose answer is immediate).

    ``llm`` picks the backend (``"none"``, ``"ollama"``, ``"llamacpp"`` or a full spec;
    default: ``settings.reason.llm``). With a ``conversation``, a follow-up that names no
    new window, incident, service or host inherits the previous question's and may cite
    its evidence. When an incident is asked about, the diagnosis is attached to it.
    Raises ``InvalidInput`` (empty question, bad window, unknown backend spec) and
    ``NotFound`` (unknown incident); a failing model never raises (see ``fallback_reason``).
    """
    started = time.perf_counter()
    reasoner = reasoner_for(core)
    retriever = Retriever(core)
    previous = conversation.last_bundle if conversation is not None else None
    follow_up = previous is not None and not any((incident_id, service, host, since, until))
    if follow_up and previous is not None:
        prior = previous.scope
        scope = retriever.scope(
            question,
            incident_id=None,
            since=prior.since,
            until=prior.until,
            now=now,
        )
        scope.incident, scope.origin_service, scope.origin_host = (
            prior.incident,
            prior.origin_service,
            prior.origin_host,
        )
        scope.services, scope.hosts = list(prior.services), list(prior.hosts)
    else:
        scope = retriever.scope(
            question,
            incident_id=incident_id,
            service=service,
            host=host,
            since=since,
            until=until,
            now=now,
        )
    spec = llm if llm is not None else core.settings.reason.llm
    model = reasoner.llm(spec)
    history = conversation.history() if conversation is not None else []

    def synthesize(bundle: EvidenceBundle) -> Diagnosis:
        if model is None:
            return rule_diagnosis(bundle)
        return llm_diagnosis(
            bundle,
            model,
            reasoner.redactor,
            timeout=core.settings.reason.llm_timeout,
            history=history,
            on_text=on_text,
        )

    configure_llama_index(core)
    llama_retriever = make_llama_retriever(retriever, scope, previous if follow_up else None)
    response = _engine(llama_retriever, synthesize).query(scope.question)
    diagnosis: Diagnosis = response.metadata["diagnosis"]
    bundle: EvidenceBundle = response.metadata["bundle"]
    diagnosis = diagnosis.model_copy(
        update={"latency_ms": round((time.perf_counter() - started) * 1000, 1)}
    )
    if conversation is not None:
        conversation.record(question, diagnosis, bundle)
    if core.metrics is not None:
        core.metrics.record_diagnosis(diagnosis)
    incident = scope.incident
    if incident is not None and core.incidents is not None and not follow_up:
        try:
            core.incidents.attach_diagnosis(incident.id, diagnosis.model_dump(mode="json"))
        except DevMeshError as exc:
            log.warning("diagnosis_not_attached", incident=incident.id, error=str(exc))
    log.info(
        "asked",
        backend=diagnosis.backend,
        origin=diagnosis.origin_service,
        evidence=len(diagnosis.evidence),
        degraded=bundle.degraded,
        ms=diagnosis.latency_ms,
    )
    return diagnosis
