"""Running detection: the background loop of the API server and the one-pass library call.

Each pass reads events stored after a watermark (the log row id), feeds them to the
:class:`~devmesh_core.detect.engine.Detector`, runs the clock-driven checks (silent hosts,
auto-resolve) and persists the watermark with the detectors' state, so a restart continues
where it stopped instead of re-detecting. On the very first start the watermark is the
newest stored event: history is learnt from as it arrives, not paged through at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from devmesh_core.detect.engine import DependencyMap, Detector, no_dependencies
from devmesh_core.detect.service import IncidentService
from devmesh_core.errors import DevMeshError
from devmesh_core.log import get_logger
from devmesh_core.models import StoredEvent
from devmesh_core.store.sql import SELECT_COLUMNS, stored_event

if TYPE_CHECKING:
    from devmesh_core.graph import GraphStore
    from devmesh_core.notify.base import NotifierHub
    from devmesh_core.runtime import Core

STATE_KEY = "detector"
log = get_logger(__name__)


def read_after(core: Core, after_id: int, limit: int) -> list[StoredEvent]:
    """Stored events with id > ``after_id``, by id (the order they were stored)."""
    store: Any = core.store
    p = store.placeholder

    def read(cur: Any) -> list[Any]:
        cur.execute(
            f"SELECT {', '.join(SELECT_COLUMNS)} FROM logs WHERE id > {p} ORDER BY id "
            f"LIMIT {int(limit)}",
            (after_id,),
        )
        return list(cur.fetchall())

    return [stored_event(row) for row in store.run(read, write=False)]


def max_event_id(core: Core) -> int:
    """The newest stored event id (0 for an empty store)."""
    store: Any = core.store

    def read(cur: Any) -> int:
        cur.execute("SELECT MAX(id) FROM logs")
        row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    return int(store.run(read, write=False))


class CachedDependencies:
    """``service → what it depends on`` from the graph (refreshed every ``ttl`` seconds)
    and the topology file; no source at all means no dependencies."""

    def __init__(self, core: Core, *, ttl: float = 300.0) -> None:
        self.core = core
        self.ttl = ttl
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._declared: dict[str, set[str]] = {}
        if core.settings.topology_file is not None:
            from devmesh_core.graph.topology import load_topology

            try:
                for edge in load_topology(core.settings.topology_file).dependencies():
                    self._declared.setdefault(edge.service, set()).add(edge.depends_on)
            except DevMeshError as exc:
                log.warning("topology_unavailable", error=str(exc))

    def __call__(self, service: str) -> set[str]:
        now = time.monotonic()
        cached = self._cache.get(service)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        deps = set(self._declared.get(service, ()))
        graph = detection_graph(self.core)
        if graph is not None:
            try:
                deps |= {
                    d.service
                    for d in graph.neighbourhood(service, templates=0, incidents=0).depends_on
                }
            except DevMeshError as exc:
                log.warning("graph_dependencies_unavailable", service=service, error=str(exc))
        self._cache[service] = (now, deps)
        return deps


def graph_ready(core: Core) -> bool:
    """Whether detection may use the knowledge graph now without starting one nobody asked
    for: it is already open in this process (the projection loop, reasoning), an external
    ``graph_url`` is configured, the embedded graph exists under ``data_dir/graph`` (it was
    projected into before), or ``detect.start_graph`` says to start it. Always ``False``
    with ``detect.use_graph`` off."""
    settings = core.settings
    if not settings.detect.use_graph:
        return False
    # Core has no public "is it open" probe; reading the field never opens anything.
    if getattr(core, "_graph", None) is not None:
        return True
    if settings.detect.start_graph or settings.graph_url is not None:
        return True
    return (settings.data_dir / "graph").is_dir()


def detection_graph(core: Core) -> GraphStore | None:
    """The graph for detection (dependencies, incident projection, past fixes) when
    :func:`graph_ready`, else ``None``; checked on every use, so a graph opened later by
    the projection loop is picked up."""
    return core.graph() if graph_ready(core) else None


def incident_service(core: Core) -> IncidentService:
    """``core.incidents``, created over the core's store (and graph) if not set yet."""
    if core.incidents is None:
        graph = (lambda: detection_graph(core)) if core.settings.detect.use_graph else None
        core.incidents = IncidentService(core.store, graph=graph)
    service: IncidentService = core.incidents
    return service


def build_detector(core: Core, dependencies: DependencyMap | None = None) -> Detector:
    """A detector over ``core`` with its settings, runbooks and dependency map, its state
    restored from the store."""
    service = incident_service(core)
    if dependencies is None:
        has_source = core.settings.topology_file is not None or core.settings.detect.use_graph
        dependencies = CachedDependencies(core) if has_source else no_dependencies
    detector = Detector(
        service, core.settings.detect, runbooks=core.runbooks, dependencies=dependencies
    )
    saved = service.repo.get_state(STATE_KEY)
    if saved:
        detector.load(saved.get("detectors", {}))
    return detector


@dataclass
class PassResult:
    """What one pass did."""

    events: int = 0
    signals: int = 0
    watermark: int = 0


@dataclass
class DetectionRunner:
    """The detector plus its watermark: one :meth:`run_pass` reads, detects and persists."""

    core: Core
    detector: Detector
    watermark: int = -1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start_watermark(self) -> int:
        """Where passes start: the saved watermark, or (first start ever) the newest stored
        event. Called before the server takes events, so none slips in between."""
        with self._lock:
            if self.watermark < 0:
                saved = incident_service(self.core).repo.get_state(STATE_KEY)
                self.watermark = int(saved["watermark"]) if saved else max_event_id(self.core)
            return self.watermark

    def backlog(self) -> int:
        """Stored events past the last one examined: how far detection is behind ingest
        (counted in row ids; MariaDB can skip ids, so there it is an upper bound).

        Read from another thread (the metrics scrape) without the pass lock, which a pass
        holds throughout; the watermark advances after each chunk, so a long pass shows
        its progress. 0 before the first pass.
        """
        examined = self.watermark
        if examined < 0:
            return 0
        return max(0, max_event_id(self.core) - examined)

    def run_pass(self, now: datetime | None = None) -> PassResult:
        self.start_watermark()
        with self._lock:
            service = incident_service(self.core)
            batch = self.core.settings.detect.batch
            result = PassResult(watermark=self.watermark)
            while True:
                events = read_after(self.core, self.watermark, batch)
                if not events:
                    break
                events.sort(key=lambda e: (e.timestamp, e.id))
                result.signals += len(self.detector.process(events))
                result.events += len(events)
                self.watermark = max(e.id for e in events)
                if len(events) < batch:
                    break
            result.signals += len(self.detector.tick(now or datetime.now(UTC)))
            result.watermark = self.watermark
            service.repo.set_state(
                STATE_KEY, {"watermark": self.watermark, "detectors": self.detector.state()}
            )
            return result


def detect_once(core: Core, *, now: datetime | None = None) -> PassResult:
    """One detection pass over the events stored since the last one (library form of the
    loop, for tests, cron-style use and replays)."""
    return DetectionRunner(core, build_detector(core)).run_pass(now)


class DetectionHandle:
    """The background detection thread of a server; :meth:`stop` ends it.

    A pass runs every ``interval`` seconds, and soon after :meth:`notify` (the API calls it
    when an ingest stored events), so an incident opens within a fraction of a second of
    its evidence arriving rather than up to an interval later. Wake-ups are coalesced:
    under a steady stream of batches a pass runs at most every ``min_gap`` seconds.
    """

    def __init__(self, runner: DetectionRunner, interval: float, *, min_gap: float = 0.25) -> None:
        self.runner = runner
        self.interval = interval
        self.min_gap = min(min_gap, interval)
        self.passes = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devmesh-detect", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """Run a pass soon (events were just stored). Cheap and thread-safe."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.runner.run_pass()
            except DevMeshError as exc:
                log.warning("detection_pass_failed", error=str(exc))
            except Exception as exc:  # the loop must survive a bug in one pass
                log.exception("detection_pass_crashed", error=repr(exc))
            self.passes += 1
            self._wake.wait(self.interval)
            self._wake.clear()
            rest = self.min_gap - (time.monotonic() - started)
            if rest > 0 and not self._stop.is_set():
                self._stop.wait(rest)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)


def start_detection(core: Core, hub: NotifierHub | None = None) -> DetectionHandle | None:
    """Set up incidents for a server: ``core.incidents`` (publishing to ``hub``) and,
    when detection is enabled, the background loop (started). ``None`` when disabled."""
    service = incident_service(core)
    if hub is not None:
        service.add_listener(hub.submit)
    if not core.settings.detect.enabled:
        return None
    runner = DetectionRunner(core, build_detector(core))
    runner.start_watermark()
    handle = DetectionHandle(runner, core.settings.detect.interval)
    handle.start()
    return handle


def build_hub(core: Core) -> NotifierHub:
    """The notifier hub with the webhooks configured in ``NotifySettings``."""
    from devmesh_core.notify.base import NotifierHub
    from devmesh_core.notify.settings import ChannelLimits
    from devmesh_core.notify.webhook import WebhookNotifier

    notify = core.settings.notify
    hub = NotifierHub(
        default_limits=ChannelLimits(
            rate_per_hour=notify.default_rate_per_hour, quiet_hours=notify.default_quiet_hours
        ),
        timezone=notify.timezone,
    )
    for hook in notify.webhooks:
        hub.subscribe(
            WebhookNotifier(
                hook.url,
                secret=hook.secret.get_secret_value() if hook.secret else None,
                name=hook.name,
                timeout=hook.timeout,
            ),
            ChannelLimits(
                rate_per_hour=hook.rate_per_hour,
                quiet_hours=hook.quiet_hours,
                timezone=hook.timezone,
            ),
        )
    return hub
