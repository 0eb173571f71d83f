"""Scale-out: two real API workers on one MariaDB database share one miner through Redis.

Two ``devmesh serve`` processes (separate data dirs, as on two machines) ingest the real
LogHub lines of all eight systems in parallel, from four client threads. Checked afterwards,
in the database itself:

* nothing lost, nothing twice: every event stored exactly once, re-sends to the other worker
  counted as duplicates;
* every event has a template, and the same message has the same template id whichever worker
  stored it; that id is a live template of the shared state, and the ``templates`` table
  holds exactly the ids the events use, with counts equal to the events';
* the workers' batches form one history: each write of the shared state was made on the
  previous one (no lost update), and one plain miner fed the same batches in that order
  ends with the same templates and gives every event's message the event's template.

Why the comparison with one miner needs the lock order: batch grouping makes templates depend
on which lines arrive together and in which order (one miner fed these very batches in other
orders gives 416 or 417 templates), and two workers interleave their batches in whatever
order they get the shared lock. Each worker logs, at debug level, every batch it mined (a
digest of its messages, the state version it was mined on and the version after it); the test
rebuilds the lock order from those lines.
"""

from __future__ import annotations

import csv
import json
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from devmesh_core.store import open_store
from devmesh_core.templates.miner import SignatureMiner
from devmesh_core.templates.shared import SharedMiner, batch_digest
from tests.conftest import MARIADB, SHARED_DATA, _admin, start_server

pytestmark = pytest.mark.mariadb

REDIS_URL = "redis://127.0.0.1:6379/0"
SYSTEMS = ("Apache", "BGL", "HDFS", "Linux", "OpenSSH", "OpenStack", "Spark", "Zookeeper")
BATCH = 250
CLIENT_THREADS = 4
RETRIES = 10


def loghub_events() -> list[dict[str, Any]]:
    """All 16k LogHub lines as events, the systems interleaved line by line; each event has a
    timestamp of its own, so each is a distinct event (repeated messages included)."""
    columns = []
    for system in SYSTEMS:
        path = SHARED_DATA / "loghub-2k" / system / f"{system}_2k.log_structured_corrected.csv"
        with path.open(newline="") as fh:
            columns.append((system, [row["Content"] for row in csv.DictReader(fh)]))
    events: list[dict[str, Any]] = []
    for i in range(max(len(lines) for _, lines in columns)):
        for system, lines in columns:
            if i < len(lines):
                n = len(events)
                events.append(
                    {
                        "timestamp": f"2026-06-01T{n // 3_600_000:02d}:"
                        f"{n // 60_000 % 60:02d}:{n // 1000 % 60:02d}.{n % 1000:03d}Z",
                        "service": system.lower(),
                        "host": f"node{i % 3}",
                        "message": lines[i],
                    }
                )
    return events


class Worker:
    """One ``devmesh serve`` process; its log lines are read as they come (a full pipe would
    block the server)."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.proc, self.base = start_server(data_dir, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - reported by the test
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)

    def mined_batches(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            if "shared_miner_batch" in line:
                record = json.loads(line)
                if record.get("event") == "shared_miner_batch":
                    out.append(record)
        return out


def lock_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batches in the order they changed the shared state; a batch that changed nothing
    goes right after the write it was mined on (it cannot affect what follows)."""
    writes = sorted(
        (r for r in records if r["version"] != r["base"]),
        key=lambda r: int(str(r["version"]).split("-")[0]),
    )
    readers: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["version"] == r["base"]:
            readers[str(r["base"])].append(r)
    order = []
    for w in writes:
        order.append(w)
        order.extend(readers.pop(str(w["version"]), []))
    assert not readers, f"batches mined on a state no write produced: {list(readers)}"
    return order


@dataclass
class Run:
    """What the two workers did, collected once for the checks below."""

    posts: list[list[dict[str, Any]]]
    worker_of: dict[int, int]
    answered: list[int]  # per batch: accepted + duplicates of its final answer
    resent: list[tuple[int, int]]  # (accepted, duplicates) of re-sends to the other worker
    retried: list[str]
    errors: list[str]
    rows: list[tuple[bytes, str, str | None]]  # fingerprint, message, template_id
    templates: dict[str, int]  # the templates table: id -> count
    texts: dict[str, str]  # live templates of the final shared state
    records: list[dict[str, Any]]  # the workers' shared_miner_batch log lines


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Two workers on one fresh MariaDB database and one fresh Redis key, fed in parallel."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    key = f"devmesh:test:{uuid.uuid4().hex}"
    name = f"devmesh_t_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    password = f":{MARIADB['password']}" if MARIADB["password"] else ""
    db_url = f"mysql://{MARIADB['user']}{password}@{MARIADB['host']}:{MARIADB['port']}/{name}"
    try:
        yield ingest_in_parallel(tmp_path_factory.mktemp("scale"), db_url, key)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
        for k in client.scan_iter(match=f"{{{key}}}:*"):
            client.delete(k)
        client.close()


def ingest_in_parallel(tmp: Path, db_url: str, key: str) -> Run:
    events = loghub_events()
    posts = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    env = {
        "DEVMESH_DATABASE_URL": db_url,
        "DEVMESH_MINER_URL": REDIS_URL,
        "DEVMESH_MINER_KEY": key,
        "DEVMESH_LOG_LEVEL": "DEBUG",
    }
    workers = [Worker(tmp / "node1", env)]
    workers.append(Worker(tmp / "node2", env))
    errors: list[str] = []
    answered = [0] * len(posts)
    worker_of: dict[int, int] = {}
    retried: list[str] = []
    resent: list[tuple[int, int]] = []

    def client(k: int) -> None:
        with httpx.Client(timeout=120) as http:
            for i in range(k, len(posts), CLIENT_THREADS):
                w = (i // CLIENT_THREADS + k) % 2  # each thread alternates between workers
                worker_of[i] = w
                for attempt in range(RETRIES):
                    r = http.post(f"{workers[w].base}/ingest/logs", json=posts[i])
                    if r.status_code != 503:
                        break
                    # What a shipper does with a 503 (e.g. a database deadlock between the
                    # workers' transactions): send the same batch again a moment later.
                    retried.append(r.json()["detail"])
                    time.sleep(0.05 * (attempt + 1))
                if r.status_code != 200:
                    errors.append(f"batch {i} on worker {w}: {r.status_code} {r.text}")
                    continue
                # a 503 may come after the insert committed (the merge fold failed): the
                # retry then finds the batch stored
                answered[i] = r.json()["accepted"] + r.json()["duplicates"]

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENT_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # A shipper re-sending batches to the other worker behind the balancer.
        with httpx.Client(timeout=120) as http:
            for i in range(4):
                r = http.post(f"{workers[1 - worker_of[i]].base}/ingest/logs", json=posts[i])
                r.raise_for_status()
                resent.append((r.json()["accepted"], r.json()["duplicates"]))
    finally:
        for w in workers:
            w.stop()

    with open_store(db_url) as store:
        rows = store.run(  # type: ignore[attr-defined]
            lambda cur: (
                cur.execute("SELECT fingerprint, message, template_id FROM logs"),
                [(bytes(r[0]), str(r[1]), r[2]) for r in cur.fetchall()],
            )[1],
            write=False,
        )
        templates = dict(
            store.run(  # type: ignore[attr-defined]
                lambda cur: (
                    cur.execute("SELECT template_id, count FROM templates"),
                    cur.fetchall(),
                )[1],
                write=False,
            )
        )
    with SharedMiner(REDIS_URL, key) as shared:
        texts = {t.template_id: t.template for t in shared.templates()}
    records = workers[0].mined_batches() + workers[1].mined_batches()
    print(
        f"scale-out: {len(rows)} events, {len(set(templates))} templates, "
        f"{len(records)} batches mined, {len(retried)} retried: {sorted(set(retried))}"
    )
    return Run(posts, worker_of, answered, resent, retried, errors, rows, templates, texts, records)


def test_nothing_is_lost_or_stored_twice_and_every_event_has_a_template(run: Run) -> None:
    assert not run.errors, run.errors
    assert run.answered == [len(batch) for batch in run.posts]
    assert run.resent == [(0, len(run.posts[i])) for i in range(4)]  # duplicates, no copies
    total = sum(len(batch) for batch in run.posts)
    assert len(run.rows) == total == len({r[0] for r in run.rows})
    assert all(r[2] is not None for r in run.rows)


def test_the_same_message_gets_the_same_template_id_on_either_worker(run: Run) -> None:
    ids_of: dict[str, set[str | None]] = defaultdict(set)
    for _, message, tid in run.rows:
        ids_of[message].add(tid)
    assert all(len(ids) == 1 for ids in ids_of.values())
    stored_id = {m: str(next(iter(ids))) for m, ids in ids_of.items()}
    posted_to: dict[str, set[int]] = defaultdict(set)
    for i, batch in enumerate(run.posts):
        for e in batch:
            posted_to[e["message"]].add(run.worker_of[i])
    # The check bites: hundreds of messages and templates reached both workers.
    assert sum(1 for ws in posted_to.values() if ws == {0, 1}) > 200
    workers_of_template: dict[str, set[int]] = defaultdict(set)
    for message, ws in posted_to.items():
        workers_of_template[stored_id[message]] |= ws
    assert sum(1 for ws in workers_of_template.values() if ws == {0, 1}) > 100
    # Every stored id is a live template of the shared state (no merged-away id left behind)
    # and the templates table holds exactly those ids.
    assert set(stored_id.values()) <= set(run.texts)
    assert set(run.templates) == set(stored_id.values())


def test_the_workers_batches_form_one_history_that_one_miner_reproduces(run: Run) -> None:
    # every batch mined once, plus re-sends and retries (each retry mines its batch again)
    assert len(run.records) == len(run.posts) + 4 + len(run.retried)
    digests = {batch_digest([e["message"] for e in b]): b for b in run.posts}
    assert {r["digest"] for r in run.records} == set(digests)
    order = lock_order(run.records)
    writes = [r for r in order if r["version"] != r["base"]]
    # no lost update: each write was made on the state the previous write left
    assert [w["base"] for w in writes[1:]] == [w["version"] for w in writes[:-1]]
    single = SignatureMiner(None)
    single_ids: dict[str, set[str]] = defaultdict(set)
    for record in order:
        messages = [str(e["message"]) for e in digests[record["digest"]]]
        for message, result in zip(messages, single.add_many(messages), strict=True):
            single_ids[message].add(result.template_id)
    # The same templates, and each event under one its message got from the one miner. (Not
    # always the very same: where two templates cover one line, which one a line gets also
    # depends on each process's memo of lines it has seen, which is not shared.)
    assert sorted(t.template for t in single.templates()) == sorted(run.texts.values())
    final = {m: {single.resolve_id(t) for t in ids} for m, ids in single_ids.items()}
    stray = [(m, tid, final[m]) for _, m, tid in run.rows if tid not in final[m]]
    assert not stray, stray[:5]


def test_template_counts_match_the_events(run: Run) -> None:
    used: dict[str, int] = defaultdict(int)
    for _, _, tid in run.rows:
        used[str(tid)] += 1
    diff = {t: (run.templates.get(t), used.get(t)) for t in set(run.templates) | set(used)}
    assert run.templates == dict(used), {t: v for t, v in diff.items() if v[0] != v[1]}
