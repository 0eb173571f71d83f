"""Façade functions the front ends call (API, CLI, bots): one call per user-visible action.

Keeping validation and batching here means the HTTP API, ``devmesh import`` and the node
shipper reject the same bad input with the same messages.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from devmesh_core.config import Settings
from devmesh_core.errors import BackendUnavailable, DevMeshError, InvalidInput
from devmesh_core.formats import loki
from devmesh_core.log import get_logger
from devmesh_core.models import IngestReport, InsertResult, LogEvent, Rejection
from devmesh_core.store.base import LogStore
from devmesh_core.templates.miner import TemplateMiner
from devmesh_core.templates.owned import OwnedMiner

TOKEN_PREFIX = "dm_"


def format_validation_error(exc: ValidationError) -> str:
    """A one-line reason naming each bad field, e.g. ``timestamp: Field required``."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error.get("loc", ())) or "event"
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def validate_events(
    items: Sequence[Any], *, default_source: str | None = None, start_index: int = 0
) -> tuple[list[LogEvent], list[Rejection]]:
    """Validate raw objects into events; each bad one becomes a :class:`Rejection`.

    One malformed object never stops the rest of the batch. ``default_source`` fills in
    ``source`` for producers that do not name it (e.g. ``http`` for the ingest API).
    """
    events: list[LogEvent] = []
    rejected: list[Rejection] = []
    for offset, item in enumerate(items):
        index = start_index + offset
        if not isinstance(item, dict):
            rejected.append(Rejection(index, f"expected a JSON object, got {_kind(item)}"))
            continue
        if default_source is not None and "source" not in item:
            item = {**item, "source": default_source}
        try:
            events.append(LogEvent.model_validate(item))
        except ValidationError as exc:
            rejected.append(Rejection(index, format_validation_error(exc)))
    return events, rejected


def ingest(
    store: LogStore,
    items: Sequence[Any],
    *,
    default_source: str | None = None,
    miner: TemplateMiner | None = None,
) -> IngestReport:
    """Validate and store a batch; report stored, duplicate and rejected items.

    With a ``miner`` every event is mined into a template in the same pass (the batch is
    grouped as a whole, which gives better templates than line by line) and stored with
    its template id.
    """
    events, rejected = validate_events(items, default_source=default_source)
    result = store_events(store, events, miner=miner)
    return IngestReport(accepted=result.stored, duplicates=result.duplicates, rejected=rejected)


def ingest_loki(
    store: LogStore, payload: Any, *, miner: TemplateMiner | None = None
) -> IngestReport:
    """Store a Loki push body (JSON form); rejections name the entry's position."""
    pairs, rejected = loki.push_to_items(payload)
    events, invalid = validate_events([item for _, item in pairs])
    rejected.extend(Rejection(pairs[r.index][0], r.error) for r in invalid)
    result = store_events(store, events, miner=miner)
    rejected.sort(key=lambda r: r.index)
    return IngestReport(accepted=result.stored, duplicates=result.duplicates, rejected=rejected)


def store_events(
    store: LogStore, events: Sequence[LogEvent], *, miner: TemplateMiner | None = None
) -> InsertResult:
    """Insert validated events, mining their templates first when a miner is given.

    A miner whose backend is down (the shared miner's Redis) costs the batch its templates,
    never its events: they are stored unmined, for ``devmesh templates backfill``.
    """
    if miner is None or not events:
        return store.insert(events)
    try:
        templates = miner.add_many([event.message for event in events])
    except BackendUnavailable as exc:
        get_logger(__name__).warning("events_stored_unmined", reason=str(exc), events=len(events))
        return store.insert(events)
    result = store.insert(events, templates)
    sync_template_merges(store, miner)
    return result


def sync_template_merges(store: LogStore, miner: TemplateMiner, *, everything: bool = False) -> int:
    """Tell the store which templates the miner merged, so their events follow the survivor.

    ``everything`` replays every merge the miner remembers (idempotent): run at start-up, it
    repairs a store that missed merges because the process stopped in between.
    """
    merged = miner.aliases() if everything else miner.take_merges()
    if merged:
        try:
            texts = {new: miner.template_text(new) for new in set(merged.values())}
            store.merge_templates(merged, texts)
        except DevMeshError:
            # Not applied (e.g. a deadlock between API workers): a miner that can take them
            # back reports them with the next batch; the file miner replays all at start.
            defer = getattr(miner, "defer_merges", None)
            if defer is not None and not everything:
                defer(merged)
            raise
    return len(merged)


def open_miner(
    settings: Settings, store: LogStore, *, process: bool = False
) -> TemplateMiner | None:
    """The template miner of this data dir (``None`` when mining is off), with merges it made
    while the store was not told replayed into the store.

    With ``miner_url`` set, a :class:`~devmesh_core.templates.shared.SharedMiner` that every
    worker pointing at the same Redis and key shares (it connects on first use and replays
    merges with its first batch, so a Redis that is down at start-up does not turn mining
    off). Otherwise raises :class:`~devmesh_core.errors.BackendUnavailable` when another
    process owns the miner state; the caller decides whether to go on without mining.
    ``process`` runs that miner in a child process (:mod:`devmesh_core.templates.process`):
    what a long-running server wants, not a one-shot command.
    """
    if not settings.mine_templates:
        return None
    if settings.miner_url:
        from devmesh_core.templates.shared import SharedMiner, default_key

        return SharedMiner(
            settings.miner_url,
            settings.miner_key or default_key(settings.data_dir),
            seed_dir=settings.miner_dir,
        )
    miner: TemplateMiner
    if process:
        from devmesh_core.templates.process import ProcessMiner

        miner = ProcessMiner(
            settings.miner_dir, log_format=settings.log_format, log_level=settings.log_level
        )
    else:
        miner = OwnedMiner(settings.miner_dir)
    try:
        sync_template_merges(store, miner, everything=True)
    except BaseException:
        miner.close()
        raise
    return miner


def backfill_templates(
    store: LogStore,
    miner: TemplateMiner,
    *,
    batch_size: int = 5_000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Mine events stored without a template (before mining ran); return how many."""
    done = 0
    while True:
        events = store.events_without_template(limit=batch_size)
        if not events:
            return done
        templates = miner.add_many([event.message for event in events])
        done += store.assign_templates(events, templates)
        sync_template_merges(store, miner)
        if progress is not None:
            progress(len(events))


def import_jsonl(
    store: LogStore,
    path: Path,
    *,
    batch_size: int = 1_000,
    default_source: str = "file",
    progress: Callable[[int], None] | None = None,
    miner: TemplateMiner | None = None,
) -> IngestReport:
    """Bulk-load a JSONL file of log objects in batches.

    Each rejection's ``index`` is the 1-based line number, so a person can find the line.
    Blank lines are skipped. ``progress`` is called with the bytes consumed since last call.
    """
    report = IngestReport()
    batch: list[Any] = []
    lines: list[int] = []

    def flush() -> None:
        events, rejected = validate_events(batch, default_source=default_source)
        result = store_events(store, events, miner=miner)
        report.accepted += result.stored
        report.duplicates += result.duplicates
        report.rejected.extend(Rejection(lines[r.index], r.error) for r in rejected)
        batch.clear()
        lines.clear()

    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if progress is not None:
                progress(len(raw))
            if not raw.strip():
                continue
            try:
                item = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                report.rejected.append(Rejection(number, f"not valid JSON: {exc}"))
                continue
            batch.append(item)
            lines.append(number)
            if len(batch) >= batch_size:
                flush()
    if batch:
        flush()
    report.rejected.sort(key=lambda r: r.index)
    return report


def load_sample(
    store: LogStore, *, now: datetime | None = None, miner: TemplateMiner | None = None
) -> IngestReport:
    """Load the bundled homelab sample (≈360 events), shifted so its newest event is ``now``.

    Used by ``devmesh up`` on an empty store so a first look at ``devmesh logs`` shows
    something real-looking (a disk-full incident in postgres and its knock-on errors).
    """
    raw = resources.files("devmesh_core").joinpath("data/sample_logs.jsonl").read_bytes()
    items = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    newest = max(datetime.fromisoformat(item["timestamp"]) for item in items)
    shift = (now or datetime.now(UTC)) - newest
    for item in items:
        item["timestamp"] = (datetime.fromisoformat(item["timestamp"]) + shift).isoformat()
    return ingest(store, items, default_source="sample", miner=miner)


def apply_retention(store: LogStore, days: int, *, now: datetime | None = None) -> int:
    """Delete events older than ``days``; return how many were deleted."""
    if days < 1:
        raise InvalidInput("retention must keep at least 1 day")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    return store.delete_older_than(cutoff)


def hash_token(token: str) -> str:
    """SHA-256 hex of a token. Tokens are 256-bit random, so a fast hash is enough."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store: LogStore, name: str, *, host: str | None = None) -> str:
    """Make a new API token, remember only its hash, and return the token (shown once).

    ``host`` makes it a node token: it may ingest and read, and act as the node agent of
    that host only — it cannot poll or report another host's remediation requests, nor
    propose or approve any (so a token copied off one node cannot steer the fleet)."""
    if not name.strip():
        raise InvalidInput("a token needs a name")
    if host is not None and not host.strip():
        raise InvalidInput("a node token needs a host name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.add_token(name.strip(), hash_token(token), host.strip() if host else None)
    return token


class TokenChecker:
    """Checks bearer tokens against configured plain tokens and stored hashes.

    Stored hashes are re-read at most every ``refresh_seconds`` so a token created with
    ``devmesh token create`` works on a running server without a restart.
    """

    def __init__(
        self, store: LogStore, configured: Iterable[str] = (), refresh_seconds: float = 10.0
    ) -> None:
        self._store = store
        self._configured = {hash_token(t) for t in configured}
        self._stored: set[str] = set()
        self._hosts: dict[str, str] = {}
        self._loaded_at: float | None = None
        self._refresh = refresh_seconds
        self._required = False

    def _hashes(self, now: float) -> set[str]:
        if self._loaded_at is None or now - self._loaded_at >= self._refresh:
            self._stored = self._store.token_hashes()
            self._hosts = self._store.token_hosts()
            self._loaded_at = now
        return self._configured | self._stored

    def enabled(self, now: float) -> bool:
        """Whether tokens are required. Sticky: once any token has existed, revoking the last
        one locks the API rather than opening it."""
        self._required = self._required or bool(self._hashes(now))
        return self._required

    def check(self, token: str | None, now: float) -> bool:
        """True when ``token`` matches a known, unrevoked token."""
        if not token:
            return False
        digest = hash_token(token)
        return any(hmac.compare_digest(digest, known) for known in self._hashes(now))

    def host_of(self, token: str | None, now: float) -> str | None:
        """The host a (valid) node token is bound to; ``None`` for an unbound token."""
        if not token:
            return None
        self._hashes(now)
        return self._hosts.get(hash_token(token))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
