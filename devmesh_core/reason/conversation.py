"""Follow-up questions: a bounded history of (question, diagnosis) and the last bundle.

"why is nginx failing?" then "what should I do about it?" — the second question names
nothing, so it must inherit the first one's window, entities and incident, and the evidence
the first answer stood on must stay available to cite. A :class:`Conversation` keeps that,
bounded (``max_turns``), so a long chat session does not grow the prompt without end.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from devmesh_core.reason.models import Diagnosis
from devmesh_core.reason.prompt import Turn

if TYPE_CHECKING:
    from devmesh_core.reason.retrieval import EvidenceBundle, Scope


class Conversation:
    """One conversation's memory. Thread-safe (a bot may answer from several threads)."""

    def __init__(self, max_turns: int = 4) -> None:
        self.max_turns = max(0, max_turns)
        self._turns: deque[tuple[str, Diagnosis]] = deque(maxlen=max(1, self.max_turns))
        self._bundle: EvidenceBundle | None = None
        self._lock = threading.Lock()

    @property
    def last_bundle(self) -> EvidenceBundle | None:
        """The evidence bundle of the latest answer (reused by a follow-up)."""
        with self._lock:
            return self._bundle

    @property
    def last_scope(self) -> Scope | None:
        """The window and entities of the latest question."""
        with self._lock:
            return self._bundle.scope if self._bundle is not None else None

    @property
    def turns(self) -> list[tuple[str, Diagnosis]]:
        """Earlier (question, diagnosis) pairs, oldest first."""
        with self._lock:
            return list(self._turns) if self.max_turns else []

    def history(self) -> list[Turn]:
        """The turns as the prompt shows them."""
        return [Turn(q, d.root_cause, [e.id for e in d.evidence]) for q, d in self.turns]

    def record(self, question: str, diagnosis: Diagnosis, bundle: EvidenceBundle) -> None:
        """Remember an answer and the bundle it came from."""
        with self._lock:
            if self.max_turns:
                self._turns.append((question, diagnosis))
            self._bundle = bundle

    def clear(self) -> None:
        """Forget everything (a new topic)."""
        with self._lock:
            self._turns.clear()
            self._bundle = None

    def __len__(self) -> int:
        return len(self.turns)
