"""Online log template mining for DevMesh: Drain3 plus generic masking and batch grouping.

What DevMesh needs from a template miner at ingest:

* every line gets a template id that stays the same across restarts and across batches, so
  incidents, counts and alerts can refer to it;
* event types are neither merged (``VM Started`` vs ``VM Stopped``) nor split by a variable
  (``user cyrus`` vs ``user news``), with one configuration for every source.

How :class:`SignatureMiner` gets there:

1. :class:`~devmesh_core.templates.masking.Masker` replaces values with ``<*>`` using generic
   shapes (addresses, numbers, ids, paths, dates ...).
2. A batch (:meth:`SignatureMiner.add_many`) is grouped Brain-style
   (:mod:`devmesh_core.templates.grouping`): whole-batch token statistics tell constants from
   variables far better than comparing one line with one template.
3. Each batch template is resolved against the templates already known. The known templates
   live in a Drain3 :class:`drain3.drain.Drain` prefix tree (one Drain cluster per template):
   Drain3 finds the template that covers a line, and for a line nothing covers it proposes
   the most similar template, which is generalised only when the differing tokens look like
   variables by the same evidence rules as the batch grouping (Drain's bare similarity
   threshold is what merges distinct event types). Single lines (:meth:`SignatureMiner.add`)
   take the same path as a batch of one.
4. A post-pass merges over-split templates: when templates that differ at only one position
   accumulate enough distinct values there, they become one template with ``<*>``. The
   oldest id survives and the others are kept as aliases, so ids handed out earlier still
   resolve (:meth:`SignatureMiner.resolve_id`, :meth:`SignatureMiner.template_text`).

State (templates, aliases, learned variable vocabulary) is saved as JSON in ``state_dir``
with an atomic replace, on :meth:`SignatureMiner.save`, periodically after additions, and on
:meth:`SignatureMiner.close`; the Drain3 tree is rebuilt from it on start. Drain3's own
``FilePersistence`` is not used: it rewrites the file in place (a crash mid-write loses the
state) and restores with jsonpickle, which builds arbitrary objects from the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from drain3.drain import Drain, LogCluster

from devmesh_core.errors import DevMeshError, InvalidInput, NotFound
from devmesh_core.log import get_logger
from devmesh_core.templates.grouping import (
    Tokens,
    group_sequences,
    is_variable_column,
    variable_token,
)
from devmesh_core.templates.masking import WILDCARD, Masker, MaskingConfig


def _log() -> Any:
    # Looked up per use: a module-level bound logger would freeze the structlog
    # configuration that was current at import time.
    return get_logger(__name__)


STATE_FILE = "templates.json"
_STATE_VERSION = 1
_LINE_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class MinerConfig:
    """Tuning of :class:`SignatureMiner`; the defaults are meant for every log source.

    ``min_distinct`` is how many distinct values make a position a variable on count alone
    (enumerations such as HTTP methods or states stay below it). ``similarity`` is the Drain3
    threshold for proposing an existing template to a line nothing covers; ``drain_depth``
    and ``drain_max_children`` shape Drain3's prefix tree. ``snapshot_interval_s`` is how
    often state is saved while lines arrive (0 saves after every call); ``vocabulary_size``
    bounds the remembered variable values.
    """

    min_distinct: int = 8
    similarity: float = 0.5
    drain_depth: int = 4
    drain_max_children: int = 100
    snapshot_interval_s: float = 300.0
    vocabulary_size: int = 50_000
    merge_siblings: bool = True
    masking: MaskingConfig = field(default_factory=MaskingConfig)

    def __post_init__(self) -> None:
        if self.min_distinct < 2:
            raise InvalidInput("min_distinct must be at least 2")
        if not 0.0 < self.similarity <= 1.0:
            raise InvalidInput("similarity must be in (0, 1]")
        if self.drain_depth < 3:
            raise InvalidInput("drain_depth must be at least 3")
        if self.snapshot_interval_s < 0 or self.vocabulary_size < 0:
            raise InvalidInput("snapshot_interval_s and vocabulary_size must not be negative")


@dataclass(frozen=True, slots=True)
class MinedTemplate:
    """The template one input line belongs to.

    ``template`` uses ``<*>`` for variables. ``is_new`` is true on the first line of the
    call that created the template, so ingest can announce new event types once.
    """

    template_id: str
    template: str
    is_new: bool = False


@dataclass(frozen=True, slots=True)
class KnownTemplate:
    """A known template with its line count and the ids merged into it."""

    template_id: str
    template: str
    count: int
    aliases: tuple[str, ...]


class TemplateMiner(Protocol):
    """What ingest needs of a miner: :class:`SignatureMiner` in this process, its Redis-shared
    form (``templates.shared``) or one in a child process (``templates.process``)."""

    def add_many(self, messages: Sequence[str]) -> list[MinedTemplate]:
        """Mine a batch; one result per message, in order."""
        ...

    def take_merges(self) -> dict[str, str]:
        """Ids merged away since the last call, each mapped to its survivor."""
        ...

    def aliases(self) -> dict[str, str]:
        """Every id ever merged away, mapped to its survivor."""
        ...

    def template_text(self, template_id: str) -> str:
        """Current text of a template (aliases resolve)."""
        ...

    def close(self) -> None:
        """Save pending state and release what the miner holds."""
        ...


@dataclass(slots=True)
class _Template:
    template_id: str
    tokens: Tokens
    count: int
    created: int
    cluster_id: int
    aliases: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@functools.lru_cache(maxsize=4096)
def _glob(token: str) -> re.Pattern[str]:
    return re.compile(".+".join(re.escape(part) for part in token.split(WILDCARD)), re.DOTALL)


def token_covers(general: str, specific: str) -> bool:
    """True when template token ``general`` matches ``specific`` (each ``<*>`` = 1+ chars).

    ``user=<*>`` covers ``user=guest`` and ``user=<*>``; a bare ``<*>`` covers anything.
    """
    if general in (specific, WILDCARD):
        return True
    i = general.find(WILDCARD)
    if i < 0:
        return False
    if general.count(WILDCARD) == 1:
        head, tail = general[:i], general[i + len(WILDCARD) :]
        return (
            len(specific) > len(head) + len(tail)
            and specific.startswith(head)
            and specific.endswith(tail)
        )
    return _glob(general).fullmatch(specific) is not None


def covers(general: Sequence[str], specific: Sequence[str]) -> bool:
    """True when every line matching template ``specific`` also matches ``general``."""
    if len(general) != len(specific):
        return False
    return all(token_covers(g, s) for g, s in zip(general, specific, strict=True))


def keeps_enough(general: Sequence[str], specific: Sequence[str]) -> bool:
    """Whether widening ``specific`` to ``general`` keeps enough of its constant words.

    Merges made online (batch over earlier templates, Drain3 proposals, over-split
    siblings) may only turn a minority of a template's constant tokens into ``<*>`` and
    must leave at least one; otherwise a few odd lines could create a catch-all template
    such as ``<*> <*> <*>`` that swallows every event of that length.
    """
    const = [i for i, tok in enumerate(specific) if tok != WILDCARD]
    if not const:
        return True
    kept = sum(1 for i in const if general[i] != WILDCARD)
    return kept >= 1 and 2 * kept >= len(const)


class SignatureMiner:
    """Assign stable template ids to log lines, online or in batches (see module doc).

    Thread-safe: calls are serialised by a lock. Use as a context manager (or call
    :meth:`close`) so the last additions are saved.
    """

    def __init__(self, state_dir: Path | str | None = None, config: MinerConfig | None = None):
        self.config = config or MinerConfig()
        self.masker = Masker(self.config.masking)
        self._state_path = Path(state_dir) / STATE_FILE if state_dir is not None else None
        self._lock = threading.RLock()
        self._drain = Drain(
            depth=self.config.drain_depth,
            sim_th=self.config.similarity,
            max_children=self.config.drain_max_children,
            param_str=WILDCARD,
        )
        self._by_id: dict[str, _Template] = {}
        self._by_cluster: dict[int, str] = {}
        self._by_tokens: dict[Tokens, str] = {}
        self._by_length: dict[int, set[str]] = {}
        self._alias: dict[str, str] = {}
        self._merged: dict[str, str] = {}  # merges not yet reported by take_merges()
        # position-blanked signature -> ids of templates that differ only at that position
        self._siblings: dict[tuple[int, Tokens], set[str]] = {}
        self._vocab: OrderedDict[str, None] = OrderedDict()
        self._line_cache: dict[Tokens, str] = {}
        self._seq = 0
        self._dirty = False
        self._last_save = time.monotonic()
        if self._state_path is not None:
            self._load()

    # ------------------------------------------------------------------ public API

    def add(self, message: str) -> MinedTemplate:
        """Mine one line (a batch of one; a line a known template covers takes a fast path)."""
        with self._lock:
            tokens = tuple(self.masker.tokenize(message))
            tid = self._find_covering(tokens)
            if tid is not None:
                tpl = self._by_id[tid]
                tpl.count += 1
                self._dirty = True
                self._maybe_snapshot()
                return MinedTemplate(tid, tpl.text, False)
            result = self._add_tokenized([tokens])[0]
            self._maybe_snapshot()
            return result

    def add_many(self, messages: Sequence[str]) -> list[MinedTemplate]:
        """Mine a batch; returns one result per message, in order.

        The whole batch is grouped together, so larger batches give better templates.
        """
        if isinstance(messages, str):
            raise InvalidInput("add_many() takes a sequence of messages, not one string")
        if not messages:
            return []
        with self._lock:
            token_lists = self.masker.tokenize_many(messages)
            results = self._add_tokenized(token_lists)
            self._maybe_snapshot()
        return results

    def template_text(self, template_id: str) -> str:
        """Current template text for an id (aliases of merged templates resolve)."""
        with self._lock:
            return self._by_id[self._resolve(template_id)].text

    def take_merges(self) -> dict[str, str]:
        """Ids merged away since the last call, each mapped to the id now standing for it.

        Ingest calls this after each batch so the store can fold the merged templates'
        events and counts into the surviving id (ids stay stable; only aliases disappear).
        """
        with self._lock:
            merged = {old: self._resolve(new) for old, new in self._merged.items()}
            self._merged.clear()
            return merged

    def aliases(self) -> dict[str, str]:
        """Every id ever merged away, mapped to the id now standing for it."""
        with self._lock:
            return {old: self._resolve(old) for old in self._alias}

    def resolve_id(self, template_id: str) -> str:
        """The id that now stands for ``template_id`` (itself unless it was merged away)."""
        with self._lock:
            return self._resolve(template_id)

    def templates(self) -> list[KnownTemplate]:
        """All current templates, oldest first."""
        with self._lock:
            return [
                KnownTemplate(t.template_id, t.text, t.count, tuple(t.aliases))
                for t in sorted(self._by_id.values(), key=lambda t: t.created)
            ]

    def __len__(self) -> int:
        return len(self._by_id)

    def save(self) -> None:
        """Write the state file now (atomically). No-op for an in-memory miner."""
        with self._lock:
            if self._state_path is None:
                return
            self._write_state(self._state_path)
            self._dirty = False
            self._last_save = time.monotonic()

    def close(self) -> None:
        """Save pending changes."""
        with self._lock:
            if self._dirty:
                self.save()

    def __enter__(self) -> SignatureMiner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ mining

    def _add_tokenized(self, token_lists: Sequence[Sequence[str]]) -> list[MinedTemplate]:
        index: dict[Tokens, int] = {}
        line_seq: list[int] = []
        for tokens in token_lists:
            key = tuple(tokens)
            line_seq.append(index.setdefault(key, len(index)))
        seqs = list(index)
        tally = Counter(line_seq)
        counts = [tally[i] for i in range(len(seqs))]

        seq_to_id: dict[int, str] = {}
        created: set[str] = set()
        pending: list[tuple[Tokens, tuple[int, ...]]] = []
        # Lines a known template already covers need no grouping.
        for i, seq in enumerate(seqs):
            known = self._find_covering(seq)
            if known is not None:
                seq_to_id[i] = known
                self._by_id[known].count += counts[i]
        rest = [i for i in range(len(seqs)) if i not in seq_to_id]
        if rest:
            known_before = set(self._by_id)
            if len(rest) == 1:
                pending.append((seqs[rest[0]], (rest[0],)))
            else:
                learned: set[str] = set()
                groups = group_sequences(
                    [seqs[i] for i in rest],
                    [counts[i] for i in rest],
                    min_distinct=self.config.min_distinct,
                    vocabulary=self._vocab.keys(),
                    learned=learned,
                )
                self._learn(learned)
                for group in groups:
                    pending.append((group.tokens, tuple(rest[j] for j in group.members)))
            for tokens, members in pending:
                n = sum(counts[i] for i in members)
                tid, is_created = self._register(tokens, n, known_before)
                if is_created:
                    created.add(tid)
                for i in members:
                    seq_to_id[i] = tid
            if self.config.merge_siblings:
                for tid in sorted(created, key=lambda t: self._by_id[t].created):
                    if tid in self._by_id:
                        self._merge_siblings(tid)
        if seqs:
            self._dirty = True

        results: list[MinedTemplate] = []
        announced: set[str] = set()
        memo: dict[str, MinedTemplate] = {}
        for s in line_seq:
            tid = self._resolve(seq_to_id[s])
            if tid in created and tid not in announced:
                announced.add(tid)
                results.append(MinedTemplate(tid, self._by_id[tid].text, True))
                continue
            got = memo.get(tid)
            if got is None:
                got = MinedTemplate(tid, self._by_id[tid].text, False)
                memo[tid] = got
            results.append(got)
        return results

    def _find_covering(self, tokens: Tokens) -> str | None:
        """Id of a known template that covers this masked line, if any (via Drain3).

        Results are memoised: templates only ever get more general, so a line once covered
        stays covered by the same id (or the id it was merged into).
        """
        tid = self._by_tokens.get(tokens) or self._line_cache.get(tokens)
        if tid is not None:
            return self._resolve(tid)
        if not self._by_id:
            return None
        cluster = self._drain.match(" ".join(tokens), full_search_strategy="never")
        tid = self._by_cluster.get(cluster.cluster_id) if cluster is not None else None
        if tid is None:
            # Drain3 compares whole tokens and walks its tree by the first token; a template
            # token such as "user=<*>" or one generalised after insertion needs a scan.
            # Prefer the most specific covering template (fewest wildcards), then the oldest.
            best: tuple[int, int, str] | None = None
            for t in self._same_length(len(tokens)):
                if covers(t.tokens, tokens):
                    rank = (t.tokens.count(WILDCARD), t.created, t.template_id)
                    if best is None or rank < best:
                        best = rank
            if best is None:
                return None
            tid = best[2]
        if len(self._line_cache) >= _LINE_CACHE_SIZE:
            self._line_cache.clear()
        self._line_cache[tokens] = tid
        return tid

    def _register(self, tokens: Tokens, count: int, known_before: set[str]) -> tuple[str, bool]:
        """Attach a batch template to a known one or create it; returns (id, created)."""
        same = self._by_tokens.get(tokens)
        if same is not None:
            self._by_id[same].count += count
            return same, False
        # Templates from earlier batches that this one generalises: merge into the oldest.
        covered = [
            t
            for t in self._same_length(len(tokens))
            if t.template_id in known_before
            and covers(tokens, t.tokens)
            and keeps_enough(tokens, t.tokens)
        ]
        if covered:
            keep = self._merge(covered, tokens)
            keep.count += count
            return keep.template_id, False
        # Drain3 proposes the most similar earlier template; generalise it only when every
        # differing position looks like a variable.
        candidate = self._similar(tokens, known_before)
        if candidate is not None:
            merged = self._generalise(candidate.tokens, tokens)
            if merged is not None:
                keep = self._merge([candidate], merged)
                keep.count += count
                return keep.template_id, False
        return self._create(tokens, count).template_id, True

    def _similar(self, tokens: Tokens, eligible: set[str]) -> _Template | None:
        cluster = self._drain.tree_search(
            self._drain.root_node, list(tokens), self.config.similarity, False
        )
        if cluster is None:
            return None
        tid = self._by_cluster.get(cluster.cluster_id)
        if tid is None or tid not in eligible:
            return None
        return self._by_id[tid]

    def _generalise(self, old: Tokens, new: Tokens) -> Tokens | None:
        """``old`` widened to cover ``new``, or None if a differing token looks constant."""
        if len(old) != len(new):
            return None
        out = list(old)
        vocab = self._vocab.keys()
        for p, (a, b) in enumerate(zip(old, new, strict=True)):
            if a in (b, WILDCARD):
                continue
            pair = {a, b}
            if not is_variable_column(pair, self.config.min_distinct, vocab):
                return None
            out[p] = variable_token(pair)
        merged = tuple(out)
        if not (keeps_enough(merged, old) and keeps_enough(merged, new)):
            return None
        return merged

    def _merge_siblings(self, tid: str) -> None:
        """Post-pass: merge templates that differ only at one position holding a variable."""
        tpl = self._by_id[tid]
        for key in list(self._sibling_keys(tpl.tokens)):
            ids = self._siblings.get(key)
            if not ids or len(ids) < 2:
                continue
            p = key[0]
            members = [self._by_id[i] for i in ids]
            values = {m.tokens[p] for m in members}
            if not is_variable_column(values, self.config.min_distinct, self._vocab.keys()):
                continue
            merged = list(tpl.tokens)
            merged[p] = variable_token(values)
            if not keeps_enough(merged, tpl.tokens):
                continue
            members.sort(key=lambda m: m.created)
            keep = self._merge(members, tuple(merged))
            _log().info(
                "templates_merged",
                template_id=keep.template_id,
                merged=len(members) - 1,
                template=keep.text,
            )
            return

    # ------------------------------------------------------------------ registry

    def _same_length(self, length: int) -> list[_Template]:
        return [self._by_id[i] for i in self._by_length.get(length, ())]

    def _new_id(self, text: str) -> str:
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=6).hexdigest()
        tid = "T" + digest
        n = 1
        while tid in self._by_id or tid in self._alias:
            n += 1
            tid = f"T{digest}-{n}"
        return tid

    def _create(self, tokens: Tokens, count: int) -> _Template:
        self._seq += 1
        tpl = _Template(self._new_id(" ".join(tokens)), tokens, count, self._seq, 0, [])
        self._index(tpl)
        return tpl

    def _index(self, tpl: _Template) -> None:
        """Register ``tpl`` under its current tokens, with a fresh Drain3 cluster."""
        drain = self._drain
        drain.clusters_counter += 1
        cluster = LogCluster(list(tpl.tokens), drain.clusters_counter)
        drain.id_to_cluster[cluster.cluster_id] = cluster
        drain.add_seq_to_prefix_tree(drain.root_node, cluster)
        tpl.cluster_id = cluster.cluster_id
        self._by_id[tpl.template_id] = tpl
        self._by_cluster[tpl.cluster_id] = tpl.template_id
        self._by_tokens[tpl.tokens] = tpl.template_id
        self._by_length.setdefault(len(tpl.tokens), set()).add(tpl.template_id)
        for key in self._sibling_keys(tpl.tokens):
            self._siblings.setdefault(key, set()).add(tpl.template_id)

    def _unindex(self, tpl: _Template) -> None:
        """Forget ``tpl``'s current tokens (its Drain3 cluster becomes a stale tree entry)."""
        if self._by_tokens.get(tpl.tokens) == tpl.template_id:
            del self._by_tokens[tpl.tokens]
        self._by_cluster.pop(tpl.cluster_id, None)
        self._drain.id_to_cluster.pop(tpl.cluster_id, None)
        self._by_id.pop(tpl.template_id, None)
        self._by_length.get(len(tpl.tokens), set()).discard(tpl.template_id)
        for key in self._sibling_keys(tpl.tokens):
            ids = self._siblings.get(key)
            if ids is not None:
                ids.discard(tpl.template_id)
                if not ids:
                    del self._siblings[key]

    @staticmethod
    def _sibling_keys(tokens: Tokens) -> Iterable[tuple[int, Tokens]]:
        for p, tok in enumerate(tokens):
            if tok != WILDCARD:
                yield p, (*tokens[:p], WILDCARD, *tokens[p + 1 :])

    def _merge(self, templates: Iterable[_Template], tokens: Tokens) -> _Template:
        """Make ``templates`` one template with ``tokens``; the oldest id survives.

        Any other template the new tokens cover (or equal) joins the merge when the widening
        is modest (:func:`keeps_enough`); every old id keeps resolving via aliases.
        """
        group = {t.template_id: t for t in templates}
        if len(group) == 1:
            (only,) = group.values()
            if only.tokens == tokens:
                return only
        for t in self._same_length(len(tokens)):
            if (
                t.template_id not in group
                and covers(tokens, t.tokens)
                and keeps_enough(tokens, t.tokens)
            ):
                group[t.template_id] = t
        members = sorted(group.values(), key=lambda t: t.created)
        keep = members[0]
        for t in members:
            self._unindex(t)
        for t in members[1:]:
            keep.count += t.count
            keep.aliases.extend([t.template_id, *t.aliases])
            self._alias[t.template_id] = keep.template_id
            self._merged[t.template_id] = keep.template_id
            for alias in t.aliases:
                self._alias[alias] = keep.template_id
                self._merged[alias] = keep.template_id
        keep.tokens = tokens
        self._index(keep)
        return keep

    def _resolve(self, template_id: str) -> str:
        tid = template_id
        seen = 0
        while tid not in self._by_id:
            nxt = self._alias.get(tid)
            if nxt is None or seen > len(self._alias):
                raise NotFound(f"unknown template id {template_id!r}")
            tid = nxt
            seen += 1
        return tid

    def _learn(self, values: Iterable[str]) -> None:
        limit = self.config.vocabulary_size
        if limit == 0:
            return
        vocab = self._vocab
        for v in values:
            vocab[v] = None
            vocab.move_to_end(v)
        while len(vocab) > limit:
            vocab.popitem(last=False)

    # ------------------------------------------------------------------ persistence

    def _maybe_snapshot(self) -> None:
        if self._state_path is None or not self._dirty:
            return
        if time.monotonic() - self._last_save >= self.config.snapshot_interval_s:
            self.save()

    def _state_bytes(self) -> bytes:
        """The state in the state-file format: what a file miner writes to disk and the
        shared miner publishes (so either can load the other's state)."""
        state: dict[str, Any] = {
            "version": _STATE_VERSION,
            "seq": self._seq,
            "templates": [
                {
                    "id": t.template_id,
                    "tokens": list(t.tokens),
                    "count": t.count,
                    "created": t.created,
                    "aliases": t.aliases,
                }
                for t in sorted(self._by_id.values(), key=lambda t: t.created)
            ],
            "aliases": self._alias,
            "vocabulary": list(self._vocab),
        }
        return json.dumps(state, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _write_state(self, path: Path) -> None:
        data = self._state_bytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".templates-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _log().debug("template_state_saved", path=str(path), templates=len(self._by_id))

    def _load(self) -> None:
        assert self._state_path is not None
        path = self._state_path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise DevMeshError(f"cannot read template state {path}: {exc}") from exc
        try:
            state = json.loads(raw)
            if state.get("version") != _STATE_VERSION:
                raise ValueError(f"unsupported version {state.get('version')!r}")
            templates = sorted(state["templates"], key=lambda t: int(t["created"]))
            for item in templates:
                tokens = tuple(str(x) for x in item["tokens"])
                tpl = _Template(
                    template_id=str(item["id"]),
                    tokens=tokens,
                    count=int(item["count"]),
                    created=int(item["created"]),
                    cluster_id=0,
                    aliases=[str(a) for a in item.get("aliases", [])],
                )
                self._index(tpl)
            self._alias = {str(k): str(v) for k, v in dict(state.get("aliases", {})).items()}
            self._learn(str(v) for v in state.get("vocabulary", []))
            newest = max((t.created for t in self._by_id.values()), default=0)
            self._seq = max(int(state.get("seq", 0)), newest)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"template state {path} is corrupt: {exc}") from exc
        _log().info("template_state_loaded", path=str(path), templates=len(self._by_id))


def mine_lines(lines: Iterable[str], config: MinerConfig | None = None) -> list[MinedTemplate]:
    """Mine a whole file offline: one result per line, in order (nothing is persisted).

    All lines form one batch, so the grouping sees the whole file — this is what
    ``devmesh templates mine`` and benchmark harnesses call.
    """
    miner = SignatureMiner(None, config)
    return miner.add_many([line.rstrip("\r\n") for line in lines])
