"""``devmesh ship --path`` against the real server: rotation by rename and by copytruncate,
kill -9 and restart, mid-stream; the store must end with every logical event exactly once.

The application log mixes lines with ISO timestamps, lines without any (read-time stamps,
which must come out the same when re-read after a crash), and Python tracebacks (multi-line
events). The kill moments are random; the seed is printed so a failure can be replayed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest

from tests.integration.ingest.conftest import (
    ROOT,
    TOKEN,
    Server,
    shipper_env,
    wait_for,
)

HOST = "tailnode"


@pytest.fixture(autouse=True)
def _journal_tools() -> None:
    """Overrides the directory's skip: the file tail needs no journal tools."""


class AppLog:
    """An application writing its log (O_APPEND, like a logger), able to be rotated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] = path.open("a", encoding="utf-8")
        self.count = 0
        self.expected: list[str] = []

    def event(self, i: int) -> str:
        if i % 7 == 3:
            return (
                f"2025-01-01T00:00:{i % 60:02d}.{i % 1000:03d}Z ERROR evt {i} failed\n"
                "Traceback (most recent call last):\n"
                f'  File "app.py", line {i}, in run\n'
                f"ValueError: evt {i}"
            )
        if i % 2:
            return f"2025-01-01T00:01:{i % 60:02d}.{i % 1000:03d}Z INFO evt {i} ok"
        return f"plain evt {i} without a timestamp"

    def write(self, count: int) -> None:
        for _ in range(count):
            message = self.event(self.count)
            self.count += 1
            self.file.write(message + "\n")
            self.file.flush()
            self.expected.append(message)

    def rotate_by_rename(self, late: int) -> None:
        """logrotate's default: rename, the app writes a few more lines, then reopens."""
        os.rename(self.path, self.path.with_name(self.path.name + f".{time.monotonic_ns()}"))
        self.write(late)
        self.file.close()
        self.file = self.path.open("a", encoding="utf-8")

    def copytruncate(self) -> None:
        shutil.copyfile(self.path, self.path.with_name(self.path.name + ".copy"))
        os.truncate(self.path, 0)


def start_shipper(
    server: Server, state: Path, logs: Path, config: Path, log: Path
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "devmesh.cli.ship",
        "--config",
        str(config),
        "--server",
        server.url,
        "--token",
        TOKEN,
        "--state-dir",
        str(state),
        "--path",
        str(logs / "*.log"),
        "--service",
        "app",
        "--host",
        HOST,
        "--poll-interval",
        "0.02",
        "--rotate-wait",
        "0.5",
        "--partial-line-seconds",
        "0.5",
        "--multiline-timeout",
        "0.2",
        "--batch-size",
        "20",
        "--batch-seconds",
        "0.1",
        "--heartbeat-seconds",
        "3600",
        "--follow",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=shipper_env(), stdout=subprocess.DEVNULL, stderr=out
        )


def started_more_than(log: Path, count: int) -> bool:
    """Whether the shipper log holds more than ``count`` start lines."""
    return log.read_bytes().count(b"shipper_starting") > count


def stored(server: Server) -> list[dict[str, Any]]:
    return [e for e in server.events() if e["source"] == "file" and e["host"] == HOST]


def test_rotation_and_kill_9_store_every_event_exactly_once(tmp_path: Path, server: Server) -> None:
    seed = int(os.environ.get("DEVMESH_CRASH_SEED", time.time_ns() % 1_000_000))
    print(f"tail e2e seed: {seed} (DEVMESH_CRASH_SEED={seed} to replay)")
    rng = random.Random(seed)
    logs = tmp_path / "logs"
    logs.mkdir()
    state = tmp_path / "state"
    config = tmp_path / "shipper.yaml"
    config.write_text(
        "cursor_commit_seconds: 0.2\nretry: {initial_seconds: 0.05, max_seconds: 0.2}\n"
    )
    log = tmp_path / "shipper.log"
    app = AppLog(logs / "app.log")
    app.write(40)

    def caught_up() -> bool:
        return len(stored(server)) >= len(app.expected)

    starts_before = 0
    proc = start_shipper(server, state, logs, config, log)
    wait_for(caught_up, timeout=60, what="the first lines to arrive")
    # Rotation while the shipper runs, by rename and by copytruncate.
    app.write(15)
    app.rotate_by_rename(late=5)
    app.write(15)
    wait_for(caught_up, timeout=60, what="lines around the rename rotation")
    app.copytruncate()
    app.write(20)
    wait_for(caught_up, timeout=60, what="lines after the copytruncate")

    # kill -9 at random moments while the application keeps logging; one rotation happens
    # while the shipper is down, one right before a kill.
    kills = 6
    for cycle in range(kills):
        # Time the kill from when the shipper is up (Python start-up takes a while on a busy
        # machine), except once, when it is killed during start-up.
        if cycle != 1:
            wait_for(
                functools.partial(started_more_than, log, starts_before),
                what="the shipper to start",
            )
        time.sleep(rng.uniform(0.05, 0.6))
        app.write(rng.randint(1, 30))
        if cycle == 2:
            app.rotate_by_rename(late=3)
            app.write(5)
        if cycle == 4:
            # The next rotation happens while the shipper is down: it can find the renamed
            # file by inode only if its checkpoint knows the file (see ingest.tail).
            wait_for(caught_up, timeout=60, what="the current file to be shipped")
            time.sleep(0.5)  # > cursor_commit_seconds
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        app.write(rng.randint(1, 20))
        if cycle == 4:  # rotated while the shipper is down
            app.rotate_by_rename(late=4)
            app.write(6)
        starts_before = log.read_bytes().count(b"shipper_starting")
        proc = start_shipper(server, state, logs, config, log)

    app.write(10)
    try:
        with contextlib.suppress(AssertionError):  # the verdict below says what is missing
            wait_for(caught_up, timeout=60, what="every event to arrive")
        time.sleep(1.0)  # anything more (a duplicate) would show up now
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    events = stored(server)
    counts = Counter(e["message"] for e in events)
    twice = [m for m, n in counts.items() if n > 1]
    assert not twice, f"stored more than once: {twice[:5]}"
    missing = [m for m in app.expected if m not in counts]
    assert counts == Counter(app.expected), (
        f"missing {len(missing)} of {len(app.expected)}: {missing[:5]}; "
        f"unexpected {sorted(set(counts) - set(app.expected))[:5]}"
    )
    by_message = {e["message"]: e for e in events}
    trace = next(m for m in app.expected if "Traceback" in m)
    assert by_message[trace]["level"] == "ERROR"
    assert by_message[trace]["timestamp"].startswith("2025-01-01T00:00:")
    assert all(e["service"] == "app" for e in events)
    starts = log.read_bytes().count(b"shipper_starting")
    assert kills <= starts <= kills + 1, starts  # one kill may land before start-up
    print(f"{len(app.expected)} events, {kills} kill -9, 3 renames, 1 copytruncate: exactly once")
