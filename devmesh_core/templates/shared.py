"""One template miner shared by several DevMesh processes through Redis.

Several API workers behind a load balancer must hand out the same template id for the same
message, whichever worker receives it. Each worker keeps an in-memory
:class:`~devmesh_core.templates.miner.SignatureMiner`; Redis holds the authoritative state:

* ``{<key>}:state`` — a hash with ``snapshot`` (the miner state, the JSON of the state file)
  and ``version`` (``<n>-<random>``, new for every write, so a Redis that lost its data and
  started counting again can never pass an old version off as current);
* ``{<key>}:lock`` — a lock (``SET NX PX`` with a random token, released by a
  compare-and-delete script) that serialises the mining of a batch across processes.

Mining a batch: take the lock; reload the snapshot only when its version differs from the one
this worker last read or wrote (a single busy worker pays one small round trip, no reload);
mine; when the batch changed the state's structure (a template created, widened or merged, a
variable value learned) write the snapshot with a new version, fenced by the lock token so a
worker whose lock expired can never overwrite a newer state; release. Template line counts
alone are not a structural change: the store keeps the authoritative counts, the miner's are
informational (:meth:`SignatureMiner.templates`) and lag in the shared snapshot.

The batches of all workers thus form one history, as if one miner had mined them in lock
order: ids agree. One race remains outside the miner: worker A mines a batch with template
``T2``, worker B then merges ``T2`` into ``T1`` and tells the store before A's insert of its
``T2`` events commits. :meth:`SharedMiner.take_merges` (called by ingest after the insert)
therefore checks whether the state moved on since this thread mined; if it did, it reloads
(what the next batch would do anyway) and also reports, for the ids this thread just used,
those merged away since (the store's fold is idempotent) and those whose text widened (as an
id mapped to itself, so the store takes the new text). Merges this worker makes are reported
once, by this worker.

Redis unreachable: every call raises :class:`~devmesh_core.errors.BackendUnavailable`, and
ingest stores the batch without templates (``devmesh templates backfill`` mines them later).
A Redis that lost the state (restarted without persistence) is re-seeded by the first worker
that mines, from its own copy; a fresh Redis is seeded from ``data_dir/miner``'s state file
when there is one, so moving an install to the shared miner keeps its template ids.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import redis
from redis.commands.core import Script

from devmesh_core.errors import BackendUnavailable, InvalidInput, NotFound
from devmesh_core.log import get_logger
from devmesh_core.templates.miner import (
    STATE_FILE,
    KnownTemplate,
    MinedTemplate,
    MinerConfig,
    SignatureMiner,
)

T = TypeVar("T")

# Release the lock only if it is still ours (it may have expired and been taken since).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# The state if its version is not the caller's: {} none stored, {v} unchanged, {v, snapshot}.
_FETCH = """
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return {} end
if v == ARGV[1] then return {v} end
return {v, redis.call('HGET', KEYS[1], 'snapshot')}
"""
# Write a snapshot only while holding the lock (fencing); returns the new version or false.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local n = redis.call('HINCRBY', KEYS[2], 'writes', 1)
local v = n .. '-' .. ARGV[3]
redis.call('HSET', KEYS[2], 'version', v, 'snapshot', ARGV[2])
return v
"""


def _log() -> Any:
    return get_logger(__name__)


def default_key(data_dir: Path) -> str:
    """Key prefix when none is configured: workers sharing a miner name their data dirs alike
    (the default data dir is ``devmesh`` on every machine)."""
    return f"devmesh:miner:{data_dir.name}"


def batch_digest(messages: Sequence[str]) -> str:
    """A short digest naming a batch of messages in the miner's debug log."""
    h = hashlib.blake2b(digest_size=8)
    for message in messages:
        h.update(message.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


class _SnapshotSource:
    """Stands in for the state file so :meth:`SignatureMiner._load` parses a Redis snapshot
    with the very code (and checks) that reads the file."""

    def __init__(self, raw: bytes, where: str) -> None:
        self._raw = raw
        self._where = where

    def read_bytes(self) -> bytes:
        return self._raw

    def __str__(self) -> str:
        return self._where


class _Used(threading.local):
    """What the current thread's last batch handed out, for the race check after its insert."""

    version: str | None = None
    texts: dict[str, str] | None = None


class SharedMiner(SignatureMiner):
    """A :class:`SignatureMiner` whose state several processes share through Redis.

    Same interface as the file-backed miner, so ingest, backfill and the CLI use it unchanged.
    Nothing connects at construction; the first call does. ``lock_ttl`` bounds how long a
    crashed worker can block the others (a batch takes well under a second to mine);
    ``lock_wait`` is how long a batch waits for the lock before it is stored unmined.
    """

    def __init__(
        self,
        url: str,
        key: str,
        config: MinerConfig | None = None,
        *,
        seed_dir: Path | None = None,
        lock_ttl: float = 60.0,
        lock_wait: float = 30.0,
        socket_timeout: float = 5.0,
    ) -> None:
        if not key:
            raise InvalidInput("the shared miner needs a key prefix")
        if lock_ttl <= 0 or lock_wait <= 0:
            raise InvalidInput("lock_ttl and lock_wait must be positive")
        super().__init__(None, config)
        try:
            self._redis: redis.Redis = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=min(socket_timeout, 2.0),
                health_check_interval=30,
            )
        except ValueError as exc:
            raise InvalidInput(f"invalid miner_url: {exc}") from exc
        self.key = key
        # One hash tag: both keys live in the same Redis Cluster slot, as scripts require.
        self._lock_key = f"{{{key}}}:lock"
        self._state_key = f"{{{key}}}:state"
        self._where = f"redis key {self._state_key}"
        self._seed_file = seed_dir / STATE_FILE if seed_dir is not None else None
        self._lock_ttl_ms = int(lock_ttl * 1000)
        self._lock_wait = lock_wait
        self._release_script: Script = self._redis.register_script(_RELEASE)
        self._fetch_script: Script = self._redis.register_script(_FETCH)
        self._publish_script: Script = self._redis.register_script(_PUBLISH)
        self._version: str | None = None  # version of the local state; None: must fetch
        self._changed = False  # the structure changed since the last publish
        self._must_publish = False  # Redis holds no state: write ours even if unchanged
        self._replay_pending = True  # report every alias once (repairs merges lost in a crash)
        self._used = _Used()
        self.reloads = 0  # how many times the snapshot was loaded (observability, tests)
        self.publishes = 0  # how many snapshots this process wrote

    # ------------------------------------------------------------------ mining

    def add(self, message: str) -> MinedTemplate:
        """Mine one line (a batch of one, under the shared lock)."""
        return self.add_many([message])[0]

    def add_many(self, messages: Sequence[str]) -> list[MinedTemplate]:
        """Mine a batch under the shared lock, on the latest shared state.

        Raises :class:`BackendUnavailable` when Redis cannot be reached or the lock not had
        in time; the local state is then dropped and fetched again by the next batch.
        """
        if isinstance(messages, str):
            raise InvalidInput("add_many() takes a sequence of messages, not one string")
        if not messages:
            return []
        with self._lock:
            token = self._acquire()
            pending = dict(self._merged)
            try:
                self._refresh()
                base = self._version
                results = super().add_many(messages)
                if self._changed or self._must_publish:
                    self._publish(token)
            except BaseException:
                # What this batch did to the local state never reached Redis: forget it.
                self._version = None
                self._merged = pending
                raise
            finally:
                self._release(token)
            self._used.version = self._version
            self._used.texts = {r.template_id: r.template for r in results}
            # Which state each batch was mined on, in lock order: enough to replay the
            # shared history through one miner (the scale-out test does).
            _log().debug(
                "shared_miner_batch",
                digest=batch_digest(messages),
                lines=len(messages),
                base=base,
                version=self._version,
            )
            return results

    def take_merges(self) -> dict[str, str]:
        """Merges to apply to the store after a batch (see the module doc).

        This worker's own merges, each reported once; after a (re)start, every merge ever
        made (idempotent in the store); and, when the shared state moved on since this thread
        mined, the ids it handed out that were merged away or widened meanwhile. Redis being
        down here is not an error (the events are stored): the full replay is done again by
        the next call that reaches it.
        """
        with self._lock:
            merged = super().take_merges()
            version, texts = self._used.version, self._used.texts
            self._used.version, self._used.texts = None, None
            try:
                if self._replay_pending:
                    self._refresh()
                    merged = {**super().aliases(), **merged}
                    self._replay_pending = False
                    texts = texts if version != self._version else None
                elif texts:
                    if self._current_version() == version:
                        return merged
                    self._refresh()
                if texts:
                    for tid, text in texts.items():
                        now = self._resolve(tid)
                        if now != tid:
                            merged[tid] = now
                        elif self._by_id[now].text != text:
                            merged.setdefault(tid, tid)  # same id, wider text
            except BackendUnavailable as exc:
                _log().warning("shared_miner_check_skipped", reason=str(exc))
                self._replay_pending = True
            return merged

    # ------------------------------------------------------------------ reads

    def aliases(self) -> dict[str, str]:
        """Every id ever merged away (on the latest shared state)."""
        with self._lock:
            self._refresh()
            return super().aliases()

    def resolve_id(self, template_id: str) -> str:
        """The id that now stands for ``template_id`` (on the latest shared state)."""
        with self._lock:
            self._refresh()
            return super().resolve_id(template_id)

    def template_text(self, template_id: str) -> str:
        """Current template text for an id. Called right after :meth:`take_merges` (which
        brought the state up to date), so the shared state is read only for an unknown id."""
        with self._lock:
            try:
                return super().template_text(template_id)
            except NotFound:
                self._refresh()
                return super().template_text(template_id)

    def defer_merges(self, merged: dict[str, str]) -> None:
        """Take back merges :meth:`take_merges` returned that the store could not apply
        (e.g. a database deadlock): the next call reports them again, so none is lost."""
        with self._lock:
            for old, new in merged.items():
                if old != new:
                    self._merged.setdefault(old, new)

    def templates(self) -> list[KnownTemplate]:
        """All current templates (on the latest shared state; counts are informational)."""
        with self._lock:
            self._refresh()
            return super().templates()

    def refresh(self) -> bool:
        """Load the shared state if it changed since this worker last saw it; True if it did."""
        with self._lock:
            before = self.reloads
            self._refresh()
            return self.reloads != before

    # ------------------------------------------------------------------ persistence

    def save(self) -> None:
        """Nothing to do: every structural change is written to Redis with its batch."""

    def close(self) -> None:
        """Close the connections to Redis (the state is already there)."""
        with self._lock:
            self._redis.close()

    def clear(self) -> None:
        """Delete the shared state and lock (tests, or starting a deployment over)."""
        self._call(lambda: self._redis.delete(self._state_key, self._lock_key))
        with self._lock:
            self._version = None

    # Hooks into SignatureMiner: every structural change goes through these two.
    def _index(self, tpl: Any) -> None:
        super()._index(tpl)
        self._changed = True

    def _learn(self, values: Iterable[str]) -> None:
        values = list(values)
        if any(v not in self._vocab for v in values):
            self._changed = True
        super()._learn(values)

    # ------------------------------------------------------------------ Redis

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except redis.RedisError as exc:
            raise BackendUnavailable(
                f"shared template miner at Redis unreachable: {exc}", backend="miner"
            ) from exc

    def _acquire(self) -> bytes:
        token = secrets.token_hex(16).encode()
        deadline = time.monotonic() + self._lock_wait
        pause = 0.001
        while True:
            ok = self._call(
                lambda: self._redis.set(self._lock_key, token, nx=True, px=self._lock_ttl_ms)
            )
            if ok:
                return token
            if time.monotonic() >= deadline:
                raise BackendUnavailable(
                    f"the shared template miner lock {self._lock_key} was not free within "
                    f"{self._lock_wait:g} s",
                    backend="miner",
                )
            time.sleep(pause * (0.5 + secrets.randbelow(1000) / 1000))
            pause = min(pause * 2, 0.02)

    def _release(self, token: bytes) -> None:
        try:
            self._release_script(keys=[self._lock_key], args=[token])
        except redis.RedisError as exc:  # it expires on its own
            _log().warning("shared_miner_unlock_failed", reason=str(exc))

    def _current_version(self) -> str | None:
        raw = self._call(lambda: self._redis.hget(self._state_key, "version"))
        return raw.decode() if isinstance(raw, bytes) else None

    def _refresh(self) -> None:
        """Bring the local state up to the shared one (caller holds ``self._lock``)."""
        got = self._call(
            lambda: self._fetch_script(keys=[self._state_key], args=[self._version or ""])
        )
        reply = cast(list[bytes], got)
        if not reply:
            self._adopt_when_missing()
            return
        version = reply[0].decode()
        if len(reply) == 1:
            return
        self._load_snapshot(reply[1])
        self._version = version
        self._must_publish = False

    def _adopt_when_missing(self) -> None:
        """Redis holds no state: seed it from ours, or from the state file on a fresh start."""
        if self._version == "":
            return  # adopted already, written with the next batch
        if self._version is not None:
            _log().warning("shared_miner_state_missing", key=self._state_key, templates=len(self))
        elif self._seed_file is not None and self._seed_file.is_file():
            self._load_snapshot(self._seed_file.read_bytes(), str(self._seed_file))
            _log().info("shared_miner_seeded", path=str(self._seed_file), templates=len(self))
        else:
            self._load_snapshot(None)
        self._version = ""
        self._must_publish = True

    def _load_snapshot(self, raw: bytes | None, where: str | None = None) -> None:
        """Replace the local state with ``raw`` (None: empty), keeping unreported merges."""
        fresh = SignatureMiner(None, self.config)
        if raw is not None:
            fresh._state_path = cast(Path, _SnapshotSource(raw, where or self._where))
            try:
                fresh._load()
            except InvalidInput as exc:
                # Unusable shared state: batches are stored unmined until an operator acts.
                raise BackendUnavailable(str(exc), backend="miner") from exc
            fresh._state_path = None
        keep = {"config", "masker", "_lock", "_merged"}
        for name, value in vars(fresh).items():
            if name not in keep:
                setattr(self, name, value)
        self._changed = False
        self.reloads += 1

    def _publish(self, token: bytes) -> None:
        stamp = secrets.token_hex(8)
        got = self._call(
            lambda: self._publish_script(
                keys=[self._lock_key, self._state_key], args=[token, self._state_bytes(), stamp]
            )
        )
        if not got:
            raise BackendUnavailable(
                "lost the shared template miner lock before the state was written "
                "(a batch took longer than the lock's TTL)",
                backend="miner",
            )
        self._version = got.decode() if isinstance(got, bytes) else str(got)
        self._changed = False
        self._must_publish = False
        self.publishes += 1
        _log().debug("shared_miner_published", version=self._version, templates=len(self))
