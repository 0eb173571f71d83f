"""SharedMiner on the real local Redis: lock, version-based reload, fencing, merges, Redis down.

Every test uses a key prefix of its own and deletes it afterwards. Two SharedMiners in one
process stand for two API workers: they share nothing but Redis.
"""

from __future__ import annotations

import csv
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devmesh_core import services
from devmesh_core.config import Settings
from devmesh_core.errors import BackendUnavailable, NotFound
from devmesh_core.store import LogQuery, open_store
from devmesh_core.templates.miner import STATE_FILE, SignatureMiner
from devmesh_core.templates.shared import SharedMiner, default_key
from tests.conftest import SHARED_DATA, free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


@pytest.fixture
def key() -> Iterator[str]:
    """A fresh key prefix on the real Redis, deleted after the test."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    prefix = f"devmesh:test:{uuid.uuid4().hex}"
    try:
        yield prefix
    finally:
        for name in client.scan_iter(match=f"{{{prefix}}}:*"):
            client.delete(name)
        client.close()


def loghub(systems: tuple[str, ...], per_system: int = 2000) -> list[str]:
    """Real LogHub lines, the systems interleaved line by line (as a fleet would send them)."""
    columns = []
    for system in systems:
        path = SHARED_DATA / "loghub-2k" / system / f"{system}_2k.log_structured_corrected.csv"
        with path.open(newline="") as fh:
            columns.append([row["Content"] for row in csv.DictReader(fh)][:per_system])
    return [col[i] for i in range(per_system) for col in columns if i < len(col)]


def batches(lines: list[str], size: int) -> list[list[str]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def event(message: str, n: int) -> dict[str, Any]:
    return {
        "timestamp": f"2026-06-01T00:00:{n:02d}Z",
        "service": "svc",
        "host": "h1",
        "message": message,
    }


def test_two_workers_taking_turns_mine_exactly_like_one_miner(key: str) -> None:
    lines = loghub(("HDFS", "OpenSSH", "Zookeeper", "Apache"), per_system=1500)
    a, b = SharedMiner(REDIS_URL, key), SharedMiner(REDIS_URL, key)
    single = SignatureMiner(None)
    shared_ids: list[str] = []
    single_ids: list[str] = []
    for i, batch in enumerate(batches(lines, 200)):
        worker = (a, b)[i % 2]
        shared_ids += [r.template_id for r in worker.add_many(batch)]
        worker.take_merges()
        single_ids += [r.template_id for r in single.add_many(batch)]
    assert a.reloads > 1 and b.reloads > 1  # each saw the other's writes
    final_shared = [a.resolve_id(t) for t in shared_ids]
    final_single = [single.resolve_id(t) for t in single_ids]
    assert final_shared == final_single  # the same id for every line, merges included
    assert [t.template for t in b.templates()] == [t.template for t in single.templates()]
    assert len(a) == len(b) == len(single) > 10
    a.close()
    b.close()


def test_a_busy_single_worker_never_reloads_and_writes_only_changes(key: str) -> None:
    lines = loghub(("HDFS", "Zookeeper"), per_system=600)
    a = SharedMiner(REDIS_URL, key)
    for batch in batches(lines, 150):
        a.add_many(batch)
    assert a.reloads == 1  # the initial (empty) state, nothing after
    writes = a.publishes
    state = redis.Redis.from_url(REDIS_URL).hgetall(f"{{{key}}}:state")
    assert int(state[b"writes"]) == writes >= 1
    # Lines the state covers change counts only: no write, same version.
    first = a.add_many(lines[:150])
    assert a.publishes == writes and a.reloads == 1
    assert redis.Redis.from_url(REDIS_URL).hget(f"{{{key}}}:state", "version") == state[b"version"]
    assert all(not r.is_new for r in first)


def test_a_worker_reloads_once_after_another_worker_changed_the_state(key: str) -> None:
    a, b = SharedMiner(REDIS_URL, key), SharedMiner(REDIS_URL, key)
    hdfs = loghub(("HDFS",), per_system=300)
    ssh = loghub(("OpenSSH",), per_system=300)
    mined_by_a = a.add_many(hdfs)
    before = a.reloads
    by_b = b.add_many(ssh)  # b loads a's state, then adds OpenSSH templates
    assert b.reloads == 1 and b.publishes == 1
    again = a.add_many(ssh)  # a must see b's templates: same ids, no new ones
    assert a.reloads == before + 1
    assert [r.template_id for r in again] == [r.template_id for r in by_b]
    assert not any(r.is_new for r in again)
    a.add_many(hdfs)
    assert a.reloads == before + 1  # nothing changed since: no reload
    assert [r.template_id for r in b.add_many(hdfs)] == [r.template_id for r in mined_by_a]


def test_the_lock_serialises_workers_mining_at_the_same_time(key: str) -> None:
    lines = loghub(("BGL", "Linux", "Spark", "OpenStack"), per_system=1000)
    workers = [SharedMiner(REDIS_URL, key), SharedMiner(REDIS_URL, key)]
    handed_out: list[list[tuple[str, str]]] = [[], []]
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            for i, batch in enumerate(batches(lines, 100)):
                if i % 2 == n:
                    got = workers[n].add_many(batch)
                    handed_out[n] += [
                        (line, r.template_id) for line, r in zip(batch, got, strict=True)
                    ]
                    workers[n].take_merges()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # Without the lock a write would drop the other worker's templates: their ids would no
    # longer resolve. With it, every id either worker handed out is in the final state, and
    # mining a line again on that state gives the id it was given (or its survivor).
    final = workers[0]
    final.refresh()
    state = redis.Redis.from_url(REDIS_URL).hget(f"{{{key}}}:state", "writes")
    assert int(state or 0) == workers[0].publishes + workers[1].publishes
    pairs = handed_out[0] + handed_out[1]
    assert len(pairs) == len(lines)
    resolved = {line: final.resolve_id(tid) for line, tid in pairs}
    again = final.add_many(list(resolved))
    assert [r.template_id for r in again] == list(resolved.values())
    assert len(workers[1].templates()) == len(final)


def test_a_batch_waits_for_the_lock_and_gives_up_after_lock_wait(key: str) -> None:
    holder = redis.Redis.from_url(REDIS_URL)
    holder.set(f"{{{key}}}:lock", b"someone-else", px=60_000)
    miner = SharedMiner(REDIS_URL, key, lock_wait=0.3)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="lock"):
        miner.add_many(["a line while the lock is held"])
    assert 0.3 <= time.monotonic() - started < 3
    assert holder.get(f"{{{key}}}:lock") == b"someone-else"  # not released by a non-owner
    assert holder.exists(f"{{{key}}}:state") == 0
    # Freed a moment later: the waiting batch goes through.
    threading.Timer(0.2, holder.delete, args=(f"{{{key}}}:lock",)).start()
    assert miner.add_many(["a line after the lock is free"])[0].is_new
    assert holder.exists(f"{{{key}}}:lock") == 0  # released after the batch


def test_a_worker_whose_lock_expired_cannot_overwrite_the_state(key: str) -> None:
    lines = loghub(("HDFS", "BGL", "Linux", "Spark"), per_system=2000)
    slow = SharedMiner(REDIS_URL, key, lock_ttl=0.005)  # expires long before 8000 lines mine
    with pytest.raises(BackendUnavailable, match="lost the shared template miner lock"):
        slow.add_many(lines)
    assert redis.Redis.from_url(REDIS_URL).exists(f"{{{key}}}:state") == 0
    other = SharedMiner(REDIS_URL, key)
    assert other.templates() == []
    # The refused batch's templates were dropped locally too; the next batch starts afresh.
    assert slow.add_many(["after the refusal"])[0].is_new
    assert len(slow) == 1


def test_redis_down_stores_the_batch_unmined_and_backfill_mines_it_later(
    tmp_path: Path, key: str
) -> None:
    down = SharedMiner(f"redis://127.0.0.1:{free_port()}/0", key, socket_timeout=1)
    with pytest.raises(BackendUnavailable, match="unreachable"):
        down.add_many(["connection refused"])
    assert down.take_merges() == {}  # nothing to report, and no exception after an insert
    items = [event(f"job {n} finished in {n * 3} ms", n) for n in range(20)]
    with open_store(f"sqlite:///{tmp_path / 'devmesh.db'}") as store:
        report = services.ingest(store, items, miner=down)
        assert report.accepted == 20 and not report.rejected
        assert len(store.events_without_template()) == 20
        # Redis back (here: a reachable one): the backfill mines what was stored unmined.
        with SharedMiner(REDIS_URL, key) as up:
            assert services.backfill_templates(store, up) == 20
        assert store.events_without_template() == []
        page = store.query(LogQuery(limit=100))
        assert len({e.template_id for e in page.events}) == 1


def test_a_merge_made_while_another_worker_inserts_is_folded_after_that_insert(
    tmp_path: Path, key: str
) -> None:
    a, b = SharedMiner(REDIS_URL, key), SharedMiner(REDIS_URL, key)
    with open_store(f"sqlite:///{tmp_path / 'devmesh.db'}") as store:
        for n, word in enumerate(WORDS[:6]):  # six templates, one per worker name
            events, _ = services.validate_events([event(f"worker {word} left early", n)])
            services.store_events(store, events, miner=a)
        # a mines the seventh but has not inserted it yet ...
        late, _ = services.validate_events([event(f"worker {WORDS[6]} left early", 6)])
        late_templates = a.add_many([late[0].message])
        assert late_templates[0].is_new
        # ... when b's eighth makes the position a variable: eight templates become one,
        # and b tells the store (which does not hold a's event yet).
        eighth, _ = services.validate_events([event(f"worker {WORDS[7]} left early", 7)])
        services.store_events(store, eighth, miner=b)
        survivor = b.resolve_id(late_templates[0].template_id)
        assert survivor != late_templates[0].template_id
        assert b.take_merges() == {}  # b's merges were reported once, with its batch
        # a's insert lands after the merge; its merge check folds it into the survivor.
        store.insert(late, late_templates)
        assert services.sync_template_merges(store, a) >= 1
        page = store.query(LogQuery(limit=100))
        assert len(page.events) == 8
        assert {e.template_id for e in page.events} == {survivor}
        assert [t.template_id for t in store.list_templates(limit=10)] == [survivor]
        assert store.get_templates([survivor])[survivor].template == "worker <*> left early"


def test_a_file_state_seeds_the_shared_state_and_ids_survive_the_move(
    tmp_path: Path, key: str
) -> None:
    lines = loghub(("OpenSSH",), per_system=500)
    with SignatureMiner(tmp_path) as file_miner:
        before = [r.template_id for r in file_miner.add_many(lines)]
    shared = SharedMiner(REDIS_URL, key, seed_dir=tmp_path)
    assert [r.template_id for r in shared.add_many(lines)] == before
    # The snapshot in Redis is the state-file format: a file miner loads it as it is.
    raw = redis.Redis.from_url(REDIS_URL).hget(f"{{{key}}}:state", "snapshot")
    assert isinstance(raw, bytes) and json.loads(raw)["templates"]
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / STATE_FILE).write_bytes(raw)
    copy = SignatureMiner(tmp_path / "copy")
    assert [r.template_id for r in copy.add_many(lines)] == before


def test_a_redis_that_lost_the_state_is_reseeded_by_the_next_batch(key: str) -> None:
    a, b = SharedMiner(REDIS_URL, key), SharedMiner(REDIS_URL, key)
    lines = loghub(("Zookeeper",), per_system=400)
    ids = [r.template_id for r in a.add_many(lines)]
    redis.Redis.from_url(REDIS_URL).delete(f"{{{key}}}:state")  # e.g. restarted, no AOF
    a.add_many(["one more line after the restart"])
    assert [r.template_id for r in b.add_many(lines)] == ids
    assert not any(r.is_new for r in b.add_many(lines))


def test_settings_choose_the_shared_miner(tmp_path: Path, key: str) -> None:
    settings = Settings(data_dir=tmp_path / "node1", miner_url=REDIS_URL, miner_key=key)
    with open_store(f"sqlite:///{tmp_path / 'devmesh.db'}") as store:
        miner = services.open_miner(settings, store)
        assert isinstance(miner, SharedMiner) and miner.key == key
        miner.close()
        default = services.open_miner(Settings(data_dir=tmp_path / "x", miner_url=REDIS_URL), store)
        assert isinstance(default, SharedMiner)
        assert default.key == default_key(tmp_path / "x") == "devmesh:miner:x"
        default.close()


def test_unknown_ids_still_raise(key: str) -> None:
    miner = SharedMiner(REDIS_URL, key)
    miner.add_many(["something happened"])
    with pytest.raises(NotFound):
        miner.resolve_id("Tnope")


def test_merges_the_store_could_not_apply_are_reported_again(key: str) -> None:
    miner = SharedMiner(REDIS_URL, key)
    for word in WORDS[:8]:  # the eighth name makes the position a variable: seven merges
        miner.add_many([f"worker {word} left early"])
    merged = miner.take_merges()
    assert len(merged) == 7 and len(set(merged.values())) == 1
    assert miner.take_merges() == {}  # reported once ...
    miner.defer_merges(merged)  # ... unless the store failed to apply them
    assert miner.take_merges() == merged
    assert miner.take_merges() == {}
