"""The ``LogStore`` port: what the rest of DevMesh may ask of a log database.

Adapters (``sqlite.py``, ``mysql.py``) implement it; ``open_store`` picks one from a URL.
The port is deliberately small, like httpx's ``BaseTransport``: bulk insert with dedup,
filtered keyset-paged queries, counts, retention and a health check.
"""

from __future__ import annotations

import base64
import binascii
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from devmesh_core.errors import InvalidCursor
from devmesh_core.models import (
    InsertResult,
    Level,
    LogEvent,
    StoredEvent,
    TemplateInfo,
    TemplateLike,
    TemplatePlace,
)

Order = Literal["desc", "asc"]


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Filters for :meth:`LogStore.query` and :meth:`LogStore.count`.

    ``level`` is a minimum (``WARNING`` returns WARNING, ERROR and CRITICAL). ``start_time``
    is inclusive and ``end_time`` exclusive. ``text`` is a case-insensitive substring of the
    message (ASCII case folding on SQLite). Pagination is by ``cursor`` (keyset, stable under
    concurrent inserts); ``offset`` is accepted for compatibility with older clients.
    """

    service: str | None = None
    host: str | None = None
    level: Level | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    text: str | None = None
    trace_id: str | None = None
    template_id: str | None = None
    limit: int = 100
    cursor: str | None = None
    offset: int = 0
    order: Order = "desc"


@dataclass(slots=True)
class Page:
    """One page of results and the cursor for the next page (``None`` on the last page)."""

    events: list[StoredEvent] = field(default_factory=list)
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Position after the last row of a page: its timestamp (µs) and id, in a given order."""

    order: Order
    ts: int
    id: int

    def encode(self) -> str:
        raw = json.dumps([self.order[0], self.ts, self.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, order: Order) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            tag, ts, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
            if tag not in ("d", "a") or not isinstance(ts, int) or not isinstance(row_id, int):
                raise ValueError("bad fields")
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidCursor(f"invalid cursor: {token!r}") from exc
        decoded: Order = "desc" if tag == "d" else "asc"
        if decoded != order:
            raise InvalidCursor(f"cursor was issued for order={decoded}, not order={order}")
        return cls(decoded, ts, row_id)


class LogStore(ABC):
    """A log database. Implementations must be safe to call from several threads."""

    backend: str = "abstract"

    @abstractmethod
    def migrate(self) -> int:
        """Create or upgrade the schema; return the schema version now in force."""

    @abstractmethod
    def insert(
        self, events: Sequence[LogEvent], templates: Sequence[TemplateLike] | None = None
    ) -> InsertResult:
        """Store events, skipping those whose fingerprint is already present (one transaction).

        With ``templates`` (one per event, from the miner) each event records its template
        id and the template's counts, places and level mix are updated for the events that
        were new.
        """

    @abstractmethod
    def query(self, query: LogQuery) -> Page:
        """Return one page of events matching ``query``, newest first unless ``order='asc'``."""

    @abstractmethod
    def count(self, query: LogQuery | None = None) -> int:
        """Count events matching the filters of ``query`` (paging fields are ignored)."""

    @abstractmethod
    def delete_older_than(self, cutoff: datetime, batch_size: int = 10_000) -> int:
        """Delete events with a timestamp before ``cutoff``, in batches; return how many."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`~devmesh_core.errors.BackendUnavailable` if the store cannot answer."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""

    # Templates (log signatures) mined from the messages.
    @abstractmethod
    def get_templates(self, template_ids: Sequence[str]) -> dict[str, TemplateInfo]:
        """The named templates that exist, by id."""

    def template_texts(self, template_ids: Sequence[str]) -> dict[str, str]:
        """The current text of the named templates that exist, by id: for callers that need
        no counts or places (incident summaries, asked on every detection pass)."""
        return {tid: info.template for tid, info in self.get_templates(template_ids).items()}

    @abstractmethod
    def list_templates(self, *, service: str | None = None, limit: int = 100) -> list[TemplateInfo]:
        """Templates, most recently seen first, optionally only those of one service."""

    @abstractmethod
    def templates_to_embed(self, limit: int = 256) -> list[TemplateInfo]:
        """Templates not embedded into the vector index yet, oldest first."""

    @abstractmethod
    def mark_embedded(self, template_ids: Sequence[str]) -> None:
        """Record that these templates' vectors are in the vector index."""

    @abstractmethod
    def merge_templates(self, merged: Mapping[str, str], texts: Mapping[str, str]) -> None:
        """Fold templates merged away by the miner into the ids now standing for them."""

    @abstractmethod
    def events_without_template(self, limit: int = 5_000) -> list[StoredEvent]:
        """Events stored before mining ran, oldest first (for ``devmesh templates backfill``)."""

    @abstractmethod
    def assign_templates(
        self, events: Sequence[StoredEvent], templates: Sequence[TemplateLike]
    ) -> int:
        """Set the template of stored events that have none; return how many were set."""

    @abstractmethod
    def template_places_since(self, after_us: int) -> list[TemplatePlace]:
        """Per (template, service, host, level) counts changed after ``after_us`` (ingestion
        time, µs), oldest change first: what an incremental projection reads."""

    @abstractmethod
    def template_places(self, template_ids: Sequence[str]) -> list[TemplatePlace]:
        """Every place (service, host, level) of these templates with its count."""

    @abstractmethod
    def template_merges_since(self, after_us: int) -> list[tuple[str, str, int]]:
        """``(merged-away id, surviving id, merged at µs)`` recorded after ``after_us``."""

    @abstractmethod
    def events_of_types(
        self, event_types: Sequence[str], *, after_id: int = 0, limit: int = 1_000
    ) -> list[StoredEvent]:
        """Events whose ``event_type`` is one of ``event_types`` with id > ``after_id``,
        by id (e.g. deployment events for the graph)."""

    @abstractmethod
    def template_count(self) -> int:
        """How many templates the store knows."""

    # Token registry: hashes of API tokens made with ``devmesh token create``. It lives in the
    # same database so every API worker of a fleet sees the same tokens.
    @abstractmethod
    def add_token(self, name: str, token_hash: str, host: str | None = None) -> None:
        """Remember a token by its hash (never the token itself); ``host`` binds a node's
        token to that node."""

    @abstractmethod
    def token_hashes(self) -> set[str]:
        """Hashes of all tokens that are not revoked."""

    @abstractmethod
    def token_hosts(self) -> dict[str, str]:
        """Hash → host of the unrevoked tokens that are bound to a host."""

    @abstractmethod
    def revoke_token(self, name: str) -> int:
        """Revoke the tokens with this name; return how many."""

    def iter_all(self, batch: int = 5_000) -> Iterator[StoredEvent]:
        """Every stored event, oldest first, read in keyset-paged batches."""
        cursor: str | None = None
        while True:
            page = self.query(LogQuery(limit=batch, cursor=cursor, order="asc"))
            yield from page.events
            if page.next is None:
                return
            cursor = page.next

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
