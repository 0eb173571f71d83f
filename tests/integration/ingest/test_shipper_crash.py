"""kill -9 the shipper at random moments, over and over, while the journal keeps growing.

Whatever instant the kill lands on (starting up, reading, mid-request, between the server's
answer and the cursor commit, mid-fsync, while spooling through a server outage), the store
must end with every journal entry exactly once, in journal order. The seed is printed so a
failure can be replayed.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import time
from pathlib import Path

from tests.integration.ingest.conftest import (
    Journal,
    Server,
    assert_exactly_once,
    make_entries,
    ship_once,
    start_shipper,
    wait_for,
)

CYCLES = 22


def started_more_than(log: Path, count: int) -> bool:
    """Whether the shipper log holds more than ``count`` start lines."""
    return log.read_bytes().count(b"shipper_starting") > count


def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, journal: Journal, server: Server
) -> None:
    seed = int(os.environ.get("DEVMESH_CRASH_SEED", time.time_ns() % 1_000_000))
    print(f"crash test seed: {seed} (DEVMESH_CRASH_SEED={seed} to replay)")
    rng = random.Random(seed)
    written = 4000
    journal.write(
        make_entries(0, written, units=("nginx", "sshd", "postgresql", "cron", "kubelet"))
    )
    config = tmp_path / "shipper.yaml"
    state = tmp_path / "state"
    log = tmp_path / "shipper.log"
    progress: list[int] = []
    outages = set(rng.sample(range(2, CYCLES - 2), 2))
    for cycle in range(CYCLES):
        # Sometimes a commit after every batch (many commit points for the kill to hit),
        # sometimes every 0.5 s (a wide window of acknowledged-but-uncommitted batches that
        # the next run re-sends and the server must absorb).
        config.write_text(
            f"server: {server.url}\n"
            f"cursor_commit_seconds: {rng.choice([0, 0.5])}\n"
            "retry: {initial_seconds: 0.05, max_seconds: 0.2}\n"
        )
        if cycle in outages:  # killed while spooling through an outage
            server.stop(kill=True)
        started = log.read_bytes().count(b"shipper_starting") if log.exists() else 0
        proc = start_shipper(
            server,
            state,
            journal,
            "--config",
            str(config),
            "--batch-size",
            str(rng.choice([5, 10, 25])),
            "--batch-seconds",
            "0.1",
            log=log,
        )
        if rng.random() < 0.8:
            # Time the kill from when the shipper is up (Python start-up takes a while on a
            # busy machine); the other cycles kill it during start-up.
            wait_for(
                functools.partial(started_more_than, log, started), what="the shipper to start"
            )
        deadline = time.monotonic() + rng.uniform(0.05, 0.9)
        if rng.random() < 0.6 or cycle in outages:  # the journal grows while it runs
            time.sleep(rng.uniform(0, 0.4))
            more = rng.randint(1, 200)
            journal.write(make_entries(written, more, host=rng.choice(["node1", "node2"])))
            written += more
        time.sleep(max(0.0, deadline - time.monotonic()))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL, f"cycle {cycle}: not killed mid-run"
        if cycle in outages:
            server.start()
        progress.append(len(server.journald_events()))
    print(f"stored after each kill: {progress}")
    # The kills landed during real work, not only before start-up or after the end.
    assert progress[-1] > 0 and progress[0] < written
    assert len(set(progress)) > CYCLES // 3, progress

    code, stats = ship_once(server, state, journal, "--config", str(config))
    assert code == 0, stats
    assert_exactly_once(journal, server.journald_events())
    print(f"{CYCLES} kill -9 cycles, {written} entries: exactly once")
