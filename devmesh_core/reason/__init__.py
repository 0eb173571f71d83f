"""Reasoning: runbooks, GraphRAG retrieval, LLM ports and runbook-guided diagnosis.

``from devmesh_core.reason import ask, Conversation, Diagnosis`` is the public face.
``ask`` is bound eagerly: a lazy attribute would be shadowed by the ``ask`` submodule as
soon as anything imported it. The heavy dependencies (llama-index, models) are still only
imported when a question is asked.
"""

from __future__ import annotations

from devmesh_core.reason.ask import ask
from devmesh_core.reason.conversation import Conversation
from devmesh_core.reason.models import Diagnosis, Evidence, ProposedAction

__all__ = ["Conversation", "Diagnosis", "Evidence", "ProposedAction", "ask"]
