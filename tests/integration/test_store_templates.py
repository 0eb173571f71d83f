"""Template bookkeeping in every LogStore adapter: ids per event, counts, places, merges."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devmesh_core.models import Level, LogEvent
from devmesh_core.store import LogQuery, LogStore, open_store
from devmesh_core.store.sql import SQLLogStore

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Ref:
    template_id: str
    template: str


def ev(i: int, service: str = "web", host: str = "n1", level: str = "INFO") -> LogEvent:
    return LogEvent(
        timestamp=T0 + timedelta(seconds=i),
        service=service,
        host=host,
        level=Level.parse(level),
        message=f"request {i} done",
    )


@pytest.fixture
def store(store_url: str) -> Iterator[LogStore]:
    s = open_store(store_url)
    yield s
    s.close()


def test_insert_records_template_ids_and_stats(store: LogStore) -> None:
    a, b = Ref("Ta", "request <*> done"), Ref("Tb", "other <*>")
    events = [ev(0), ev(1, host="n2", level="ERROR"), ev(2, service="db"), ev(3)]
    refs = [a, a, b, a]
    assert store.insert(events, refs).stored == 4
    got = {e.message: e.template_id for e in store.query(LogQuery()).events}
    assert got == {
        "request 0 done": "Ta",
        "request 1 done": "Ta",
        "request 2 done": "Tb",
        "request 3 done": "Ta",
    }
    info = store.get_templates(["Ta", "Tb", "Tx"])
    assert set(info) == {"Ta", "Tb"}
    ta = info["Ta"]
    assert (ta.template, ta.count) == ("request <*> done", 3)
    assert ta.services == ("web",) and ta.hosts == ("n1", "n2")
    assert ta.levels == {"INFO": 2, "ERROR": 1}
    assert (ta.first_seen, ta.last_seen) == (T0, T0 + timedelta(seconds=3))
    assert [e.message for e in store.query(LogQuery(template_id="Tb")).events] == ["request 2 done"]
    assert store.template_count() == 2


def test_resent_events_are_not_counted_twice(store: LogStore) -> None:
    ref = Ref("Ta", "request <*> done")
    events = [ev(i) for i in range(5)]
    store.insert(events, [ref] * 5)
    result = store.insert([*events, ev(5), ev(5)], [ref] * 7)
    assert (result.stored, result.duplicates) == (1, 6)
    assert store.get_templates(["Ta"])["Ta"].count == 6


def test_a_batch_run_again_after_its_commit_counts_each_event_once(
    store: LogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the store does when a commit's answer is lost: it runs the same batch again.
    # The second run stores nothing, and must not count the first run's rows as its own.
    assert isinstance(store, SQLLogStore)
    run = store._run

    def twice(work: Any, *, write: bool, retry: bool = True) -> Any:
        if write:
            run(work, write=write, retry=retry)
        return run(work, write=write, retry=retry)

    monkeypatch.setattr(store, "_run", twice)
    ref = Ref("Ta", "request <*> done")
    result = store.insert([ev(i) for i in range(5)], [ref] * 5)
    assert (result.stored, result.duplicates) == (0, 5)
    monkeypatch.undo()
    assert store.count() == 5
    info = store.get_templates(["Ta"])["Ta"]
    assert info.count == 5
    assert info.levels == {"INFO": 5}


def test_template_text_follows_the_miner(store: LogStore) -> None:
    store.insert([ev(0)], [Ref("Ta", "request 0 done")])
    store.insert([ev(1)], [Ref("Ta", "request <*> done")])
    assert store.get_templates(["Ta"])["Ta"].template == "request <*> done"


def test_list_and_embedding_queue(store: LogStore) -> None:
    store.insert(
        [ev(0), ev(1, service="db"), ev(2, service="db")],
        [Ref("T1", "a"), Ref("T2", "b"), Ref("T3", "c")],
    )
    assert [t.template_id for t in store.list_templates()] == ["T3", "T2", "T1"]
    assert [t.template_id for t in store.list_templates(service="db")] == ["T3", "T2"]
    assert [t.template_id for t in store.list_templates(limit=1)] == ["T3"]
    assert [t.template_id for t in store.templates_to_embed()] == ["T1", "T2", "T3"]
    store.mark_embedded(["T1", "T3"])
    assert [t.template_id for t in store.templates_to_embed()] == ["T2"]
    assert store.get_templates(["T1"])["T1"].embedded
    store.insert([ev(9)], [Ref("T1", "a")])  # seen again: stays embedded
    assert [t.template_id for t in store.templates_to_embed(limit=10)] == ["T2"]


def test_merge_folds_events_and_counts(store: LogStore) -> None:
    store.insert([ev(0), ev(1, host="n2")], [Ref("Told", "x <*>"), Ref("Told", "x <*>")])
    store.insert([ev(2, level="ERROR")], [Ref("Tnew", "x <*> y")])
    store.merge_templates({"Told": "Tnew"}, {"Tnew": "<*> <*> y"})
    store.merge_templates({"Told": "Tnew"}, {"Tnew": "<*> <*> y"})  # idempotent
    info = store.get_templates(["Told", "Tnew"])
    assert set(info) == {"Tnew"}
    assert info["Tnew"].count == 3 and info["Tnew"].template == "<*> <*> y"
    assert info["Tnew"].hosts == ("n1", "n2") and info["Tnew"].levels == {"INFO": 2, "ERROR": 1}
    assert info["Tnew"].first_seen == T0
    assert {e.template_id for e in store.query(LogQuery()).events} == {"Tnew"}


def test_backfill_assigns_only_unmined(store: LogStore) -> None:
    store.insert([ev(i) for i in range(4)])
    store.insert([ev(10)], [Ref("Tz", "z")])
    todo = store.events_without_template()
    assert [e.message for e in todo] == [f"request {i} done" for i in range(4)]
    assert store.assign_templates(todo, [Ref("Ta", "request <*> done")] * 4) == 4
    assert store.events_without_template() == []
    assert store.get_templates(["Ta"])["Ta"].count == 4
    assert store.assign_templates(todo, [Ref("Tb", "b")] * 4) == 0  # stale copies: no-op
    assert store.get_templates(["Tb"]) == {}
    assert {e.template_id for e in store.query(LogQuery(limit=10)).events} == {"Ta", "Tz"}


def test_incremental_reads_for_projections(store: LogStore) -> None:
    assert store.template_places_since(0) == []
    store.insert([ev(0), ev(1, host="n2")], [Ref("Ta", "a <*>"), Ref("Ta", "a <*>")])
    places = store.template_places_since(0)
    assert sorted((p.template_id, p.host, p.count) for p in places) == [
        ("Ta", "n1", 1),
        ("Ta", "n2", 1),
    ]
    assert places[0].template == "a <*>"
    watermark = max(p.updated_us for p in places)
    assert store.template_places_since(watermark) == []
    store.insert([ev(2)], [Ref("Ta", "a <*>")])
    (changed,) = store.template_places_since(watermark)
    assert (changed.host, changed.count, changed.last_seen) == ("n1", 2, T0 + timedelta(seconds=2))
    store.insert([ev(3)], [Ref("Tb", "b")])
    store.merge_templates({"Tb": "Ta"}, {"Ta": "<*> <*>"})
    merges = store.template_merges_since(0)
    assert [(old, new) for old, new, _ in merges] == [("Tb", "Ta")]
    assert store.template_merges_since(merges[0][2]) == []


def test_events_of_types(store: LogStore) -> None:
    events = [
        LogEvent(
            timestamp=T0 + timedelta(seconds=i),
            service="web",
            host="n1",
            message=f"e{i}",
            event_type=t,
        )
        for i, t in enumerate(["deployment_started", None, "deployment_failed", "node_online"])
    ]
    store.insert(events)
    got = store.events_of_types(["deployment_started", "deployment_failed"])
    assert [e.message for e in got] == ["e0", "e2"]
    assert [
        e.message for e in store.events_of_types(["deployment_failed"], after_id=got[0].id)
    ] == ["e2"]
    assert store.events_of_types([]) == []


def _pending(store: LogStore) -> int:
    assert isinstance(store, SQLLogStore)

    def read(cur: Any) -> int:
        cur.execute("SELECT COUNT(*) FROM template_place_deltas")
        return int(cur.fetchone()[0])

    return store.run(read, write=False)


def _deferred(store: LogStore) -> SQLLogStore:
    """The store with ingest folding put off (readers still fold)."""
    assert isinstance(store, SQLLogStore)
    store.place_fold_interval_s = 3600
    store.fold_template_places()
    return store


def test_places_are_appended_at_ingest_and_exact_at_read(store: LogStore) -> None:
    sql = _deferred(store)
    sql.insert([ev(0), ev(1, host="n2")], [Ref("Ta", "a <*>")] * 2)
    sql.insert([ev(2, level="ERROR"), ev(3)], [Ref("Ta", "a <*>")] * 2)
    assert _pending(sql) == 2  # one appended row per batch, template_stats untouched
    info = sql.get_templates(["Ta"])["Ta"]
    assert info.hosts == ("n1", "n2") and info.levels == {"INFO": 3, "ERROR": 1}
    assert _pending(sql) == 0
    # folding again (or another reader) adds nothing twice
    assert sql.fold_template_places() == 0
    places = {(p.host, p.level.value): p.count for p in sql.template_places(["Ta"])}
    assert places == {("n1", "INFO"): 2, ("n2", "INFO"): 1, ("n1", "ERROR"): 1}


def test_places_of_a_template_merged_before_the_fold_go_to_the_survivor(
    store: LogStore,
) -> None:
    sql = _deferred(store)
    sql.insert([ev(0, host="n2")], [Ref("Told", "x <*>")])
    sql.insert([ev(1, level="ERROR")], [Ref("Tnew", "x <*> y")])
    sql.merge_templates({"Told": "Tnew"}, {"Tnew": "<*> <*> y"})
    info = sql.get_templates(["Told", "Tnew"])
    assert set(info) == {"Tnew"}
    assert info["Tnew"].hosts == ("n1", "n2")
    assert info["Tnew"].levels == {"INFO": 1, "ERROR": 1}


def test_appended_places_outlive_the_process_that_wrote_them(store_url: str) -> None:
    writer = _deferred(open_store(store_url))
    writer.insert([ev(0), ev(1, service="db")], [Ref("Ta", "a <*>")] * 2)
    writer._unfolded = False  # as if killed: close() does not get to fold
    writer.close()
    with open_store(store_url) as reader:
        assert reader.get_templates(["Ta"])["Ta"].services == ("db", "web")
        assert _pending(reader) == 0


def test_concurrent_folds_count_each_batch_once(store_url: str) -> None:
    stores = [_deferred(open_store(store_url)) for _ in range(2)]
    try:
        for i in range(40):
            stores[i % 2].insert([ev(i, host=f"n{i % 3}")], [Ref("Ta", "a <*>")])
        assert _pending(stores[0]) == 40
        threads = [threading.Thread(target=s.fold_template_places) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        places = {p.host: p.count for p in stores[0].template_places(["Ta"])}
        assert places == {"n0": 14, "n1": 13, "n2": 13}
        assert stores[1].get_templates(["Ta"])["Ta"].count == 40
    finally:
        for s in stores:
            s.close()
