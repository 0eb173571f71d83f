"""Service dependencies for the knowledge graph: declared in a topology file, or proposed.

Logs say which service runs where and what it emits, but not who depends on whom; blast
radius and "what changed upstream" need that. Two sources feed ``DEPENDS_ON``:

* **The topology file** (YAML, the operator's word, ``source="config"``, confidence 1.0)::

      # topology.yaml
      version: 1                      # optional; only 1 exists
      services:
        nginx:
          kind: proxy                 # optional, becomes Service.kind
          depends_on: [jellyfin, postgres]
        jellyfin:
          depends_on: postgres        # a single name is fine too
        postgres: {}                  # or nothing at all: "postgres:" on its own line

  Every problem is reported with the file, line and key path (``topology.yaml:7:
  services.nginx.depends_on[1]: …``), all at once, so one edit fixes them.

* **Co-occurrence of errors** (``source="cooccurrence"``): when B's error bursts keep
  starting shortly *after* A's, B probably depends on A (the upstream fails first, its
  dependents' errors follow). :func:`propose_dependencies` reads ERROR+ events of a recent
  window from the store, buckets them per service, finds burst onsets, and scores each
  ordered pair by how often B's onsets are preceded by an A onset, corrected for chance
  and for the reverse direction (two services failing together from a common cause lead
  each other about equally often, and are not proposed). Proposals are capped below 1.0
  and never override the file: a pair declared there (either way) is never proposed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from devmesh_core.errors import ConfigError, InvalidInput
from devmesh_core.graph.base import DependsOn, ServiceNode
from devmesh_core.log import get_logger
from devmesh_core.models import Level, to_micros, to_utc
from devmesh_core.store.base import LogQuery, LogStore

CONFIG_SOURCE = "config"
COOCCURRENCE_SOURCE = "cooccurrence"
_TOP_KEYS = frozenset({"version", "services"})
_SERVICE_KEYS = frozenset({"depends_on", "kind"})
_MAX_NAME = 255


# ---------------------------------------------------------------------------- the file


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service of the topology file: its kind and what it depends on (in file order)."""

    name: str
    kind: str | None = None
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Topology:
    """A parsed topology file. ``source`` names it in messages (a path or ``<string>``)."""

    services: tuple[ServiceSpec, ...] = ()
    source: str = "<string>"

    def dependencies(self) -> list[DependsOn]:
        """The declared edges, ``source="config"``, confidence 1.0."""
        return [
            DependsOn(spec.name, dep, 1.0, CONFIG_SOURCE)
            for spec in self.services
            for dep in spec.depends_on
        ]

    def service_records(self) -> list[ServiceNode]:
        """A node per declared service (so services that never log still appear)."""
        return [ServiceNode(spec.name, kind=spec.kind) for spec in self.services]

    def pairs(self) -> set[frozenset[str]]:
        """Declared pairs, unordered: a proposal for any of them, either way, is dropped."""
        return {frozenset((spec.name, dep)) for spec in self.services for dep in spec.depends_on}


def load_topology(path: Path | str) -> Topology:
    """Read and validate a topology file; :class:`ConfigError` lists every problem."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"topology file {file} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read topology file {file}: {exc}") from exc
    return parse_topology(text, source=str(file))


def parse_topology(text: str, *, source: str = "<string>") -> Topology:
    """Parse topology YAML (see the module docstring for the format).

    Works on the YAML node tree rather than ``safe_load``'s plain objects so every error can
    name its line, and so duplicate keys (which ``safe_load`` silently collapses: the last
    one wins) are reported instead of dropping a declared dependency.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{line}: not valid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    parser = _Parser(source)
    services = parser.document(root)
    if parser.problems:
        raise ConfigError("; ".join(parser.problems))
    return Topology(services=tuple(services), source=source)


class _Parser:
    """Walks the node tree, collecting every problem rather than stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def fail(self, node: yaml.Node | None, where: str, message: str) -> None:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        prefix = f"{where}: " if where else ""
        self.problems.append(f"{self.source}{line}: {prefix}{message}")

    def mapping(self, node: yaml.Node, where: str) -> list[tuple[str, yaml.Node, yaml.Node]] | None:
        """(key, key node, value node) of a mapping with string keys, duplicates reported."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, where, f"expected a mapping, got {_kind(node)}")
            return None
        out: list[tuple[str, yaml.Node, yaml.Node]] = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self.fail(key_node, where, f"keys must be names, got {_kind(key_node)}")
                continue
            key = str(key_node.value)
            if key in seen:
                self.fail(key_node, _join(where, key), "duplicate key")
                continue
            seen.add(key)
            out.append((key, key_node, value_node))
        return out

    def document(self, root: yaml.Node | None) -> list[ServiceSpec]:
        if root is None:
            self.fail(None, "", "the file is empty; expected a 'services:' mapping")
            return []
        entries = self.mapping(root, "")
        if entries is None:
            return []
        services: list[ServiceSpec] = []
        found_services = False
        for key, key_node, value in entries:
            if key == "version":
                if not (_is_null(value) or (value.tag == _INT and value.value == "1")):
                    self.fail(value, "version", "only version 1 exists")
            elif key == "services":
                found_services = True
                services = self.services(value)
            else:
                self.fail(key_node, key, f"unknown key (expected one of {sorted(_TOP_KEYS)})")
        if not found_services:
            self.fail(root, "", "missing the 'services:' mapping")
        return services

    def services(self, node: yaml.Node) -> list[ServiceSpec]:
        if _is_null(node):
            return []
        entries = self.mapping(node, "services")
        if entries is None:
            return []
        out: list[ServiceSpec] = []
        for name, key_node, value in entries:
            where = f"services.{name}"
            if not self.check_name(key_node, "services", name):
                continue
            kind: str | None = None
            deps: list[str] = []
            body = [] if _is_null(value) else self.mapping(value, where)
            for key, sub_key, sub in body or []:
                if key == "kind":
                    if _is_null(sub):
                        continue
                    if not isinstance(sub, yaml.ScalarNode) or sub.tag != _STR or not sub.value:
                        self.fail(sub, f"{where}.kind", f"expected a name, got {_kind(sub)}")
                    else:
                        kind = str(sub.value).strip()
                elif key == "depends_on":
                    deps = self.dependencies(sub, f"{where}.depends_on", name)
                else:
                    self.fail(
                        sub_key,
                        f"{where}.{key}",
                        f"unknown key (expected one of {sorted(_SERVICE_KEYS)})",
                    )
            out.append(ServiceSpec(name=name.strip(), kind=kind, depends_on=tuple(deps)))
        return out

    def dependencies(self, node: yaml.Node, where: str, owner: str) -> list[str]:
        if _is_null(node):
            return []
        if isinstance(node, yaml.ScalarNode):
            items: list[tuple[yaml.Node, str]] = [(node, where)]
        elif isinstance(node, yaml.SequenceNode):
            items = [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
        else:
            self.fail(node, where, f"expected a service name or a list of them, got {_kind(node)}")
            return []
        out: list[str] = []
        for item, item_where in items:
            if not isinstance(item, yaml.ScalarNode) or item.tag != _STR:
                self.fail(item, item_where, f"expected a service name, got {_kind(item)}")
                continue
            if not self.check_name(item, item_where, str(item.value)):
                continue
            name = str(item.value).strip()
            if name == owner.strip():
                self.fail(item, item_where, f"{owner!r} cannot depend on itself")
            elif name not in out:  # a repeated name says the same thing twice: harmless
                out.append(name)
        return out

    def check_name(self, node: yaml.Node, where: str, name: str) -> bool:
        if not name.strip():
            self.fail(node, where, "a service name cannot be empty")
            return False
        if len(name.strip()) > _MAX_NAME:
            self.fail(node, where, f"service name longer than {_MAX_NAME} characters")
            return False
        return True


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_NULL = "tag:yaml.org,2002:null"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if _is_null(node):
        return "nothing"
    tag = str(node.tag).rsplit(":", 1)[-1]
    return f"{tag} {node.value!r}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# ---------------------------------------------------------------------------- co-occurrence


@dataclass(frozen=True, slots=True)
class CooccurrenceSettings:
    """Thresholds of the co-occurrence proposer; the defaults suit a homelab's volume.

    * ``lookback`` — how far back errors are read (the evidence window).
    * ``bucket`` — errors are counted per service in buckets of this width; lags are
      measured in whole buckets, so two onsets in one bucket lead neither way.
    * ``quiet`` — a service's error burst *starts* at a bucket with errors after at least
      this long without any (its onset); the errors of one long outage are one burst.
    * ``window`` — B's onset counts as following A's when it starts within this after it.
    * ``min_support`` — onsets of B preceded by A needed before anything is proposed.
    * ``min_confidence`` — proposals below this are dropped.
    * ``max_confidence`` — the ceiling of a proposal's confidence: evidence from timing
      alone is never as good as the operator's word (1.0).
    * ``max_events`` — at most this many error events are read (the newest are kept).
    * ``interval`` — how often a projector recomputes proposals (they need a week of errors,
      not a pass every minute).
    """

    lookback: timedelta = timedelta(days=7)
    bucket: timedelta = timedelta(seconds=1)
    quiet: timedelta = timedelta(minutes=5)
    window: timedelta = timedelta(minutes=2)
    min_level: Level = Level.ERROR
    min_support: int = 3
    min_confidence: float = 0.5
    max_confidence: float = 0.9
    max_events: int = 500_000
    interval: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.bucket <= timedelta(0) or self.lookback <= timedelta(0):
            raise InvalidInput("bucket and lookback must be positive")
        if self.window < self.bucket or self.quiet < self.bucket:
            raise InvalidInput("window and quiet must be at least one bucket")
        if self.min_support < 1:
            raise InvalidInput("min_support must be at least 1")
        if not 0.0 <= self.min_confidence <= self.max_confidence <= 1.0:
            raise InvalidInput("need 0 <= min_confidence <= max_confidence <= 1")
        if self.max_events < 1:
            raise InvalidInput("max_events must be at least 1")


@dataclass(frozen=True, slots=True)
class Proposal:
    """``service`` probably depends on ``depends_on``: of ``onsets`` error bursts of
    ``service``, ``support`` started within the window after one of ``depends_on``'s, and
    ``reverse`` of ``depends_on``'s bursts followed one of ``service``'s."""

    service: str
    depends_on: str
    confidence: float
    support: int
    onsets: int
    reverse: int
    chance: float = field(default=0.0)

    def record(self) -> DependsOn:
        """The graph edge of this proposal (``source="cooccurrence"``)."""
        return DependsOn(self.service, self.depends_on, self.confidence, COOCCURRENCE_SOURCE)


def propose_dependencies(
    store: LogStore,
    settings: CooccurrenceSettings | None = None,
    *,
    until: datetime | None = None,
    exclude: Iterable[frozenset[str]] = (),
) -> list[Proposal]:
    """Dependencies suggested by the timing of errors in ``[until - lookback, until)``.

    ``exclude`` holds unordered pairs that must not be proposed (those the topology file
    declares). Strongest first.
    """
    settings = settings or CooccurrenceSettings()
    end = to_utc(until) if until is not None else datetime.now(UTC)
    start = end - settings.lookback
    onsets = error_onsets(store, settings, start=start, end=end)
    span_buckets = max(1, int(settings.lookback / settings.bucket))
    found = score_onsets(onsets, settings, span_buckets=span_buckets)
    skip = set(exclude)
    return [p for p in found if frozenset((p.service, p.depends_on)) not in skip]


def error_onsets(
    store: LogStore, settings: CooccurrenceSettings, *, start: datetime, end: datetime
) -> dict[str, list[int]]:
    """Per service, the buckets (indexes since the epoch) where an error burst starts."""
    bucket_us = max(1, int(settings.bucket / timedelta(microseconds=1)))
    quiet = max(1, int(settings.quiet / settings.bucket))
    buckets: dict[str, set[int]] = {}
    read = 0
    cursor: str | None = None
    # Newest first, so a cap keeps the most recent evidence.
    while read < settings.max_events:
        page = store.query(
            LogQuery(
                level=settings.min_level,
                start_time=start,
                end_time=end,
                limit=min(5_000, settings.max_events - read),
                cursor=cursor,
                order="desc",
            )
        )
        for event in page.events:
            buckets.setdefault(event.service, set()).add(to_micros(event.timestamp) // bucket_us)
        read += len(page.events)
        if page.next is None:
            break
        cursor = page.next
    else:
        get_logger(__name__).info("cooccurrence_events_capped", max_events=settings.max_events)
    out: dict[str, list[int]] = {}
    for service, seen in buckets.items():
        starts: list[int] = []
        previous: int | None = None
        for b in sorted(seen):
            if previous is None or b - previous > quiet:
                starts.append(b)
            previous = b
        out[service] = starts
    return out


def score_onsets(
    onsets: Mapping[str, Sequence[int]], settings: CooccurrenceSettings, *, span_buckets: int
) -> list[Proposal]:
    """Score every ordered pair of services from their burst onsets (pure; unit-tested).

    For B after A: ``precision`` = share of B's onsets with an A onset 1..window buckets
    before; ``chance`` = share of the span covered by such windows after A's onsets (what a
    B with random timing would score), and ``adjusted = (precision - chance) / (1 - chance)``.
    ``direction = (n_AB - n_BA) / (n_AB + n_BA)`` discounts pairs that lead each other
    (a common cause). ``confidence = max_confidence · adjusted · direction``.
    """
    window = max(1, int(settings.window / settings.bucket))
    eligible = {s: list(v) for s, v in onsets.items() if len(v) >= settings.min_support}
    led: dict[tuple[str, str], int] = {}  # (a, b) -> onsets of b preceded by one of a
    for a, a_times in eligible.items():
        for b, b_times in eligible.items():
            if a == b:
                continue
            n = 0
            for t in b_times:
                i = bisect.bisect_left(a_times, t - window)  # first A onset >= t - window
                if i < len(a_times) and a_times[i] < t:  # ... and strictly before t
                    n += 1
            if n:
                led[(a, b)] = n
    out: list[Proposal] = []
    for (a, b), n_ab in led.items():
        if n_ab < settings.min_support:
            continue
        n_ba = led.get((b, a), 0)
        if n_ab <= n_ba:
            continue
        precision = n_ab / len(eligible[b])
        chance = min(1.0, len(eligible[a]) * window / max(1, span_buckets))
        if chance >= 1.0:
            continue
        adjusted = max(0.0, (precision - chance) / (1.0 - chance))
        direction = (n_ab - n_ba) / (n_ab + n_ba)
        confidence = round(settings.max_confidence * adjusted * direction, 3)
        if confidence < settings.min_confidence or confidence <= 0.0:
            continue
        out.append(
            Proposal(
                service=b,
                depends_on=a,
                confidence=confidence,
                support=n_ab,
                onsets=len(eligible[b]),
                reverse=n_ba,
                chance=round(chance, 4),
            )
        )
    out.sort(key=lambda p: (-p.confidence, -p.support, p.service, p.depends_on))
    return out
