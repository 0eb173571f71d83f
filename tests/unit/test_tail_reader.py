"""The file tail reader on real files in a temp dir, with its real thread and queue.

Acknowledgement is played by the test: committing a token to the real checkpoint store is
what the shipper does once the server took the batch; stopping the reader without committing
is a crash (nothing else survives a kill -9: the reader keeps no other state).
"""

from __future__ import annotations

import os
import queue
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.config import FileInput, MultilineConfig, TailConfig
from ingest.filters import ReloadableFilter, parse_rules
from ingest.tail import (
    CUT_MARKER,
    FileCheckpoints,
    StampLog,
    TailChunk,
    TailDone,
    TailReader,
    TailToken,
)

FAST = TailConfig(poll_interval=0.01, rotate_wait=0.3, partial_line_timeout=30.0)


class Tail:
    """A TailReader with its state dir; collects events with their tokens."""

    def __init__(
        self,
        state: Path,
        inputs: list[FileInput],
        tail: TailConfig = FAST,
        filters: ReloadableFilter | None = None,
        follow: bool = True,
    ) -> None:
        self.state = state
        self.inputs = inputs
        self.tail = tail
        self.filters = filters or ReloadableFilter(None)
        self.follow = follow
        self.out: queue.Queue[Any] = queue.Queue()
        self.checkpoints = FileCheckpoints(state / "files.json")
        self.reader: TailReader | None = None
        self.events: list[dict[str, Any]] = []
        self.tokens: list[TailToken] = []
        self.last_token: TailToken | None = None
        self.done: TailDone | None = None

    def start(self) -> Tail:
        self.state.mkdir(parents=True, exist_ok=True)
        positions = self.checkpoints.load()
        self.reader = TailReader(
            self.inputs,
            self.tail,
            positions,
            self.filters,
            self.out,
            StampLog(self.state / "stamps.json", self.checkpoints),
            node_host="node1",
            follow=self.follow,
        )
        self.reader.start()
        return self

    def drain(self) -> None:
        while True:
            try:
                item = self.out.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, TailChunk):
                if item.body:
                    self.events.extend(orjson.loads(b"[" + item.body + b"]"))
                self.tokens.extend(item.cursors)
                if item.tail_cursor is not None:
                    self.last_token = item.tail_cursor
            elif isinstance(item, TailDone):
                self.done = item

    def wait_events(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            if len(self.events) >= count:
                return self.events
            time.sleep(0.01)
        raise AssertionError(
            f"got {len(self.events)} events, wanted {count}: {[e['message'] for e in self.events]}"
        )

    def settle(self, seconds: float = 0.3) -> list[dict[str, Any]]:
        """Events after the reader had time to ship anything more it would."""
        time.sleep(seconds)
        self.drain()
        return self.events

    def ack(self, token: TailToken | None = None) -> None:
        """What the shipper does once a batch is acknowledged."""
        chosen = token or self.last_token
        assert chosen is not None
        self.checkpoints.commit(chosen)

    def crash(self) -> None:
        assert self.reader is not None
        self.reader.stop()
        self.reader.join(5)

    def messages(self) -> list[str]:
        return [e["message"] for e in self.events]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        if tail.reader is not None:
            tail.crash()


def single_lines(pattern: Path, service: str = "app", **kw: Any) -> FileInput:
    return FileInput(
        path=str(pattern), service=service, multiline=MultilineConfig(enabled=False), **kw
    )


def make(tails: list[Tail], tmp: Path, inputs: list[FileInput], **kw: Any) -> Tail:
    tail = Tail(tmp / "state", inputs, **kw)
    tails.append(tail)
    return tail.start()


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def lines(start: int, stop: int, prefix: str = "line") -> str:
    return "".join(f"{prefix} {i}\n" for i in range(start, stop))


def test_follows_appends_and_holds_a_partial_last_line(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    app = logs / "app.log"
    app.write_text("first\nsecond\nhalf a li")
    tail = make(tails, tmp_path, [single_lines(logs / "*.log")])
    assert tail.wait_events(2) and tail.settle() == tail.events
    assert tail.messages() == ["first", "second"]
    append(app, "ne\r\nthird\n")
    tail.wait_events(4)
    assert tail.messages() == ["first", "second", "half a line", "third"]
    event = tail.events[2]
    st = app.stat()
    offset = len("first\nsecond\n")
    assert event["source_id"] == f"{st.st_dev}:{st.st_ino}:0:{offset}"
    assert event["service"] == "app" and event["host"] == "node1" and event["source"] == "file"
    assert event["meta"]["path"] == str(app)


def test_a_partial_line_is_shipped_after_the_file_stopped_growing(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    (logs / "app.log").write_text("done\nno newline yet")
    tail = make(
        tails,
        tmp_path,
        [single_lines(logs / "*.log")],
        tail=TailConfig(poll_interval=0.01, partial_line_timeout=0.4),
    )
    started = time.monotonic()
    tail.wait_events(2)
    assert time.monotonic() - started >= 0.35
    assert tail.messages() == ["done", "no newline yet"]


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new_one(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    app = logs / "app.log"
    app.write_text(lines(0, 10))
    tail = make(tails, tmp_path, [single_lines(logs / "*.log")])
    tail.wait_events(10)
    old_key = (app.stat().st_dev, app.stat().st_ino)
    with app.open("a") as writer:  # the writer keeps its descriptor across the rename
        os.rename(app, logs / "app.log.1")
        app.write_text(lines(15, 20))
        writer.write(lines(10, 15))  # late lines into the rotated file
    tail.wait_events(20)
    assert sorted(tail.messages(), key=lambda m: int(m.split()[1])) == [
        f"line {i}" for i in range(20)
    ]
    # The old inode is finished and forgotten once it stayed idle for rotate_wait.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        tail.drain()
        assert tail.last_token is not None
        if old_key not in tail.last_token.positions():
            break
        time.sleep(0.05)
    assert tail.last_token is not None
    positions = tail.last_token.positions()
    assert old_key not in positions
    assert list(positions) == [(app.stat().st_dev, app.stat().st_ino)]
    assert tail.reader is not None and tail.reader.rotations == 1


def test_copytruncate_restarts_at_zero_in_a_new_generation(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    app = logs / "app.log"
    app.write_text(lines(0, 10))
    tail = make(tails, tmp_path, [single_lines(logs / "*.log")])
    tail.wait_events(10)
    shutil.copyfile(app, logs / "app.log.1")
    with app.open("r+") as f:
        f.truncate(0)
    append(app, lines(10, 13))
    tail.wait_events(13)
    assert tail.settle() and tail.messages() == [f"line {i}" for i in range(13)]
    ids = [e["source_id"] for e in tail.events]
    assert len(set(ids)) == 13
    st = app.stat()
    assert ids[10] == f"{st.st_dev}:{st.st_ino}:1:0"  # generation 1, offset 0
    assert tail.reader is not None and tail.reader.truncations == 1


def test_truncate_and_regrow_past_the_old_size_between_polls_is_noticed(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    app = logs / "app.log"
    app.write_text(lines(0, 3, "old"))
    slow = TailConfig(poll_interval=0.5, partial_line_timeout=30)
    tail = make(tails, tmp_path, [single_lines(logs / "*.log")], tail=slow)
    tail.wait_events(3)
    app.write_text(lines(0, 10, "new"))  # truncate + rewrite within one poll interval
    tail.wait_events(13)
    assert tail.messages()[3:] == [f"new {i}" for i in range(10)]


def test_new_files_matching_the_glob_are_picked_up(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    (logs / "a.log").write_text("from a\n")
    (logs / "ignored.txt").write_text("not matched\n")
    tail = make(
        tails,
        tmp_path,
        [single_lines(logs / "*.log"), single_lines(logs / "*.txt.web", service="web")],
    )
    tail.wait_events(1)
    (logs / "b.log").write_text("from b\n")
    (logs / "x.txt.web").write_text("web line\n")
    tail.wait_events(3)
    assert tail.settle() and sorted(tail.messages()) == ["from a", "from b", "web line"]
    services = {e["message"]: e["service"] for e in tail.events}
    assert services["web line"] == "web" and services["from b"] == "app"


def test_a_deleted_file_is_finished_and_forgotten(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    app = logs / "app.log"
    app.write_text("one\n")
    tail = make(tails, tmp_path, [single_lines(logs / "*.log")])
    tail.wait_events(1)
    with app.open("a") as writer:
        app.unlink()
        writer.write("written after unlink\ntail without newline")
    tail.wait_events(3)
    assert tail.messages() == ["one", "written after unlink", "tail without newline"]
    assert tail.last_token is not None and tail.last_token.positions() == {}


def test_multiline_java_and_python_traces_join_their_first_line(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    java = (
        "2024-05-01 10:00:00 ERROR [main] request failed\n"
        "java.lang.IllegalStateException: boom\n"
        "\tat com.example.Foo.bar(Foo.java:10)\n"
        "\tat com.example.Main.main(Main.java:3)\n"
        "Caused by: java.io.IOException: disk\n"
        "\t... 2 more\n"
    )
    python = (
        "2024-05-01 10:00:01 ERROR worker crashed\n"
        "Traceback (most recent call last):\n"
        '  File "w.py", line 1, in <module>\n'
        "ValueError: bad value\n"
    )
    (logs / "app.log").write_text(java + python + "2024-05-01 10:00:02 INFO next\n")
    tail = make(
        tails,
        tmp_path,
        [
            FileInput(
                path=str(logs / "*.log"), service="app", multiline=MultilineConfig(timeout=0.2)
            )
        ],
    )
    tail.wait_events(3)
    assert tail.messages() == [
        java.rstrip("\n"),
        python.rstrip("\n"),
        "2024-05-01 10:00:02 INFO next",
    ]
    assert [e["level"] for e in tail.events] == ["ERROR", "ERROR", "INFO"]
    assert tail.events[0]["meta"]["lines"] == 6


def test_multiline_start_pattern_cap_and_flush_timeout(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    text = "[1] start\nmore\nmore\nmore\nmore\n[2] second\ncontinued\n"
    (logs / "app.log").write_text(text)
    ml = MultilineConfig(start=r"^\[\d+\]", max_lines=3, timeout=0.3)
    tail = make(tails, tmp_path, [FileInput(path=str(logs / "*.log"), service="app", multiline=ml)])
    started = time.monotonic()
    tail.wait_events(3)
    assert tail.messages() == ["[1] start\nmore\nmore", "more\nmore", "[2] second\ncontinued"]
    assert tail.events[1]["meta"]["continued"] is True
    assert time.monotonic() - started >= 0.25  # the last one waited for the flush timeout


def test_levels_and_timestamps_from_lines_or_read_time(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    (logs / "app.log").write_text(
        "2024-05-01T10:00:00.5Z WARN disk 91%\n"
        "May  1 10:00:00 host sshd[9]: error: PAM\n"
        "no time, no level\n"
    )
    before = time.time()
    tail = make(
        tails,
        tmp_path,
        [
            FileInput(
                path=str(logs / "*.log"),
                service="app",
                timezone="UTC",
                multiline=MultilineConfig(enabled=False),
            )
        ],
    )
    tail.wait_events(3)
    first, second, third = tail.events
    assert first["timestamp"] == "2024-05-01T10:00:00.500000+00:00"
    assert first["level"] == "WARNING"
    assert second["timestamp"].endswith("-05-01T10:00:00.000000+00:00")
    assert second["level"] == "INFO"  # "error:" is lower case and unmarked: not a level
    read_at = datetime.fromisoformat(third["timestamp"]).timestamp()
    assert before - 1 <= read_at <= time.time() + 1
    assert third["level"] == "INFO"


def test_a_huge_line_is_cut_with_a_marker_and_the_next_line_is_intact(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    app = logs / "app.log"
    app.write_text("x" * 300_000 + "\nafter\n" + "y" * 150_000)
    tail = make(tails, tmp_path, [single_lines(logs / "*.log", max_line_bytes=1000)])
    tail.wait_events(3)
    marker = CUT_MARKER.format(limit=1000)
    assert tail.messages() == ["x" * 1000 + marker, "after", "y" * 1000 + marker]
    assert tail.events[0]["meta"]["cut"] is True
    append(app, "y" * 10 + "\nnext\n")  # the rest of the cut line is skipped
    tail.wait_events(4)
    assert tail.messages()[3] == "next"


def test_filters_apply_to_file_events(tmp_path: Path, logs: Path, tails: list[Tail]) -> None:
    (logs / "app.log").write_text("DEBUG noisy\nERROR kept\nhealthcheck ok\n")
    rules = parse_rules({"min_priority": "info", "drop_messages": ["^healthcheck"]})
    tail = make(
        tails, tmp_path, [single_lines(logs / "*.log")], filters=ReloadableFilter(None, rules)
    )
    tail.wait_events(1)
    assert tail.settle() == tail.events and tail.messages() == ["ERROR kept"]
    assert tail.last_token is not None
    (position,) = tail.last_token.positions().values()
    assert position.offset == (logs / "app.log").stat().st_size  # filtered lines are done too


def test_resume_after_a_crash_ships_exactly_what_was_not_acknowledged(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    app = logs / "app.log"
    app.write_text(lines(0, 10, "untimed"))  # read-time timestamps: must be stable too
    first = make(tails, tmp_path, [single_lines(logs / "*.log")])
    first.wait_events(10)
    first.ack(first.tokens[4])  # the server acknowledged events 0-4
    seen = {e["source_id"]: e for e in first.events}
    first.crash()
    append(app, lines(10, 15, "untimed"))

    second = make(tails, tmp_path, [single_lines(logs / "*.log")])
    second.wait_events(10)
    assert second.settle() and second.messages() == [f"untimed {i}" for i in range(5, 15)]
    for event in second.events[:5]:  # re-sent: identical, so the server's dedup absorbs them
        assert event == seen[event["source_id"]]
    second.ack()
    second.crash()

    append(app, "untimed 15\n")
    third = make(tails, tmp_path, [single_lines(logs / "*.log")])
    third.wait_events(1)
    assert third.settle() and third.messages() == ["untimed 15"]


def test_a_file_rotated_while_the_shipper_was_down_is_finished(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    app = logs / "app.log"
    app.write_text(lines(0, 5))
    first = make(tails, tmp_path, [single_lines(logs / "*.log")])
    first.wait_events(5)
    first.ack()
    first.crash()
    append(app, lines(5, 8))
    os.rename(app, logs / "app.log.1")
    app.write_text(lines(8, 10))
    second = make(tails, tmp_path, [single_lines(logs / "*.log")])
    second.wait_events(5)
    assert second.settle(0.6) and sorted(second.messages()) == sorted(
        f"line {i}" for i in range(5, 10)
    )
    assert second.last_token is not None
    assert list(second.last_token.positions()) == [(app.stat().st_dev, app.stat().st_ino)]


def test_start_tail_skips_what_is_there_at_the_first_start_only(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    app = logs / "app.log"
    app.write_text(lines(0, 5) + "partial")
    tail = make(tails, tmp_path, [single_lines(logs / "*.log", start="tail")])
    deadline = time.monotonic() + 10
    while tail.reader is not None and not tail.reader.tracked and time.monotonic() < deadline:
        time.sleep(0.01)  # the first scan decides where "tail" is
    assert tail.reader is not None and tail.reader.tracked == [str(app)]
    append(app, " done\nline 6\n")
    tail.wait_events(2)
    assert tail.settle() and tail.messages() == ["partial done", "line 6"]
    (logs / "new.log").write_text("new file from its start\n")
    tail.wait_events(3)
    assert tail.messages()[2] == "new file from its start"


def test_no_follow_reads_to_the_end_then_reports_done(
    tmp_path: Path, logs: Path, tails: list[Tail]
) -> None:
    (logs / "app.log").write_text("a\nb\nunterminated")
    tail = make(tails, tmp_path, [single_lines(logs / "*.log")], follow=False)
    deadline = time.monotonic() + 5
    while tail.done is None and time.monotonic() < deadline:
        tail.drain()
        time.sleep(0.01)
    assert tail.done is not None and tail.done.error is None
    assert tail.messages() == ["a", "b", "unterminated"]


def test_damaged_checkpoint_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "files.json"
    path.write_bytes(b"{not json")
    assert FileCheckpoints(path).load() is None
    assert (tmp_path / "files.json.bad").exists()
