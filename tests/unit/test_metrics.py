"""Prometheus metrics: counters bumped by what happened, gauges probed at scrape time."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from devmesh_core.errors import BackendUnavailable
from devmesh_core.metrics import Metrics
from devmesh_core.models import IngestReport, Rejection


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_ingest_batches_are_counted_by_outcome() -> None:
    metrics = Metrics()
    report = IngestReport(accepted=7, duplicates=2, rejected=[Rejection(3, "bad level")])
    metrics.record_ingest("http", report, 0.02)
    metrics.record_ingest("http", IngestReport(accepted=1, duplicates=0, rejected=[]), 0.01)
    samples = _samples(metrics)
    key = "devmesh_ingest_events_total"
    assert samples[(key, (("outcome", "accepted"), ("route", "http")))] == 8
    assert samples[(key, (("outcome", "duplicate"), ("route", "http")))] == 2
    assert samples[(key, (("outcome", "rejected"), ("route", "http")))] == 1
    assert samples[("devmesh_ingest_batch_seconds_count", (("route", "http"),))] == 2


def test_probes_are_read_at_scrape_time_and_a_failing_one_is_skipped() -> None:
    metrics = Metrics()
    open_incidents = {"high": 1}

    def incidents() -> dict[tuple[str, ...], float]:
        return {(severity,): n for severity, n in open_incidents.items()}

    def broken() -> dict[tuple[str, ...], float]:
        raise BackendUnavailable("store down", backend="sqlite")

    metrics.probe("devmesh_incidents_open", "Open incidents.", ("severity",), incidents)
    metrics.probe("devmesh_events_stored", "Events in the store.", (), broken)
    assert _samples(metrics)[("devmesh_incidents_open", (("severity", "high"),))] == 1
    open_incidents["high"] = 3
    samples = _samples(metrics)
    assert samples[("devmesh_incidents_open", (("severity", "high"),))] == 3
    assert not any(name == "devmesh_events_stored" for name, _ in samples)


def test_a_costly_probe_is_read_at_most_once_per_max_age() -> None:
    metrics = Metrics()
    now = [100.0]
    reads: list[float] = []
    fail = [False]

    def stored() -> dict[tuple[str, ...], float]:
        if fail[0]:
            raise BackendUnavailable("store down", backend="sqlite")
        reads.append(now[0])
        return {(): float(len(reads))}

    metrics.probe("devmesh_events_stored", "Events.", (), stored, max_age=60, clock=lambda: now[0])
    key = ("devmesh_events_stored", ())
    assert _samples(metrics)[key] == 1
    now[0] += 59
    assert _samples(metrics)[key] == 1  # cached
    now[0] += 1
    assert _samples(metrics)[key] == 2  # 60 s old: read again
    assert reads == [100.0, 160.0]
    fail[0] = True
    now[0] += 60
    assert key not in _samples(metrics)  # a failure is skipped, not cached
    fail[0] = False
    assert _samples(metrics)[key] == 3


def test_two_registries_do_not_clash() -> None:
    a, b = Metrics(), Metrics()
    a.record_ingest("loki", IngestReport(accepted=5, duplicates=0, rejected=[]), 0.1)
    key = ("devmesh_ingest_events_total", (("outcome", "accepted"), ("route", "loki")))
    assert _samples(a)[key] == 5
    assert key not in _samples(b)
