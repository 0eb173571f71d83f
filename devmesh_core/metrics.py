"""Prometheus metrics of one DevMesh process (``GET /metrics``).

Counters are bumped where things happen (ingest, diagnoses, notifications, action outcomes);
gauges that describe state (events stored, open incidents, pending actions, embedding
backlog) are read from the backends at scrape time, so they are right even for work done by
another process on the same store. Each ``Metrics`` has its own registry: two apps in one
process (tests) never clash over metric names.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from devmesh_core.errors import DevMeshError
from devmesh_core.log import get_logger

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Probe = Callable[[], dict[tuple[str, ...], float]]


class _Cached:
    """A probe answered from its last value for ``max_age`` seconds.

    For gauges whose query grows with the data (``COUNT(*)`` over the log table takes
    seconds on a large MariaDB table): a Prometheus server scraping every 15 s would
    otherwise keep the store busy counting. A failed read is not cached.
    """

    def __init__(self, probe: Probe, max_age: float, clock: Callable[[], float]) -> None:
        self._probe = probe
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._value: dict[tuple[str, ...], float] | None = None
        self._read_at = 0.0

    def __call__(self) -> dict[tuple[str, ...], float]:
        with self._lock:  # concurrent scrapes wait for one read instead of each counting
            now = self._clock()
            if self._value is None or now - self._read_at >= self._max_age:
                self._value = self._probe()
                self._read_at = now
            return self._value


class _LiveState(Collector):
    """Gauges computed at scrape time by the probes registered on :class:`Metrics`."""

    def __init__(self) -> None:
        self.probes: dict[str, tuple[str, tuple[str, ...], Probe]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (doc, labels, probe) in self.probes.items():
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            try:
                values = probe()
            except DevMeshError as exc:  # a backend down must not break the scrape
                get_logger(__name__).warning("metrics_probe_failed", metric=name, error=str(exc))
                continue
            for label_values, value in values.items():
                family.add_metric(list(label_values), value)
            yield family


class Metrics:
    """The metrics of one process: counters to bump, probes for state, one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingested = Counter(
            "devmesh_ingest_events",
            "Events received by ingest, by outcome (accepted, duplicate, rejected).",
            ["outcome", "route"],
            registry=r,
        )
        self.ingest_seconds = Histogram(
            "devmesh_ingest_batch_seconds",
            "Time to validate, mine and store one ingest batch.",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.diagnoses = Counter(
            "devmesh_diagnoses",
            "Diagnoses answered, by backend and whether the LLM fell back to no-LLM.",
            ["backend", "fallback"],
            registry=r,
        )
        self.diagnosis_seconds = Histogram(
            "devmesh_diagnosis_seconds",
            "Latency of a diagnosis (retrieval + reasoning), by backend.",
            ["backend"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
        )
        self.incident_events = Counter(
            "devmesh_incident_events",
            "Incident state changes published (opened, updated, resolved, ...).",
            ["kind", "severity"],
            registry=r,
        )
        self.action_outcomes = Counter(
            "devmesh_action_outcomes",
            "Remediation requests reaching a state (approved, rejected, succeeded, ...).",
            ["action", "status"],
            registry=r,
        )
        self._live = _LiveState()
        r.register(self._live)

    def probe(
        self,
        name: str,
        doc: str,
        labels: tuple[str, ...],
        probe: Probe,
        *,
        max_age: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Register a gauge read at scrape time: ``probe()`` returns label values → value.

        With ``max_age`` > 0 a scrape reuses the value read less than that many seconds ago
        (for probes too costly to run on every scrape).
        """
        if max_age > 0:
            probe = _Cached(probe, max_age, clock)
        self._live.probes[name] = (doc, labels, probe)

    def record_ingest(self, route: str, report: Any, seconds: float) -> None:
        """Count one ingest batch (an ``IngestReport``)."""
        self.ingested.labels("accepted", route).inc(report.accepted)
        self.ingested.labels("duplicate", route).inc(report.duplicates)
        self.ingested.labels("rejected", route).inc(len(report.rejected))
        self.ingest_seconds.labels(route).observe(seconds)

    def record_diagnosis(self, diagnosis: Any) -> None:
        """Count one diagnosis (a reasoning ``Diagnosis``)."""
        backend = str(getattr(diagnosis, "backend", "none"))
        fallback = "yes" if getattr(diagnosis, "fallback_reason", None) else "no"
        self.diagnoses.labels(backend, fallback).inc()
        latency_ms = float(getattr(diagnosis, "latency_ms", 0.0) or 0.0)
        self.diagnosis_seconds.labels(backend).observe(latency_ms / 1000)

    def record_incident_event(self, event: Any) -> None:
        """Count one published incident event (an ``IncidentEvent``)."""
        self.incident_events.labels(str(event.kind), str(event.incident.severity)).inc()

    def record_action(self, request: Any) -> None:
        """Count a remediation request reaching its current status (an ``ActionRequest``)."""
        self.action_outcomes.labels(str(request.action), str(request.status)).inc()

    def render(self) -> bytes:
        """The text exposition format Prometheus scrapes."""
        return generate_latest(self.registry)
