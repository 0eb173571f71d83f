"""The on-disk spool: order, persistence, the size cap (oldest dropped first, counted)."""

from __future__ import annotations

from pathlib import Path

import orjson

from ingest.spool import Spool


def body(*ids: int) -> bytes:
    return orjson.dumps([{"n": i, "pad": "x" * 50} for i in ids])


def ids_in(data: bytes) -> list[int]:
    return [item["n"] for item in orjson.loads(data)]


def test_append_peek_read_remove_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 10 * 1024 * 1024)
    assert not spool and spool.events == 0
    spool.append(body(1, 2), 2)
    spool.append(body(3), 1)
    spool.append(body(4, 5, 6), 3)
    assert len(spool) == 3 and spool.events == 6
    head = spool.peek(max_events=3)
    assert [s.count for s in head] == [2, 1]
    assert ids_in(spool.read_body(head)) == [1, 2, 3]
    spool.remove(head)
    assert spool.events == 3
    rest = spool.peek(max_events=1)  # always at least one batch, even over the limit
    assert ids_in(spool.read_body(rest)) == [4, 5, 6]
    spool.remove(rest)
    assert not spool and spool.size_bytes == 0
    assert not list((tmp_path / "spool").iterdir())


def test_peek_respects_a_byte_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10 * 1024 * 1024)
    for i in range(5):
        spool.append(body(i), 1)
    one = len(body(0))
    assert len(spool.peek(max_events=100, max_bytes=2 * one)) == 2


def test_survives_a_restart_in_order_and_cleans_half_written_files(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, 10 * 1024 * 1024)
    for i in range(12):  # past 9 → 10, so the order must not be by string length
        spool.append(body(i), 1)
    spool.remove(spool.peek(max_events=2))
    (directory / ".0000000000000099-1.json.tmp").write_bytes(b"[{half")  # crash mid-write
    (directory / "README").write_text("not a batch")
    again = Spool(directory, 10 * 1024 * 1024)
    assert again.events == 10
    assert ids_in(again.read_body(again.peek(max_events=100))) == list(range(2, 12))
    assert not (directory / ".0000000000000099-1.json.tmp").exists()
    again.append(body(99), 1)  # numbering continues after the highest on disk
    assert ids_in(again.read_body(again.peek(max_events=100)))[-1] == 99


def test_cap_drops_oldest_first_and_counts(tmp_path: Path) -> None:
    size = len(body(0, 1))
    spool = Spool(tmp_path, max_bytes=3 * size)
    for i in range(0, 10, 2):
        spool.append(body(i, i + 1), 2)
    assert spool.size_bytes <= 3 * size
    assert spool.dropped_batches == 2 and spool.dropped_events == 4
    assert ids_in(spool.read_body(spool.peek(max_events=100))) == [4, 5, 6, 7, 8, 9]
    assert Spool(tmp_path, max_bytes=3 * size).events == 6  # and on disk too


def test_a_batch_bigger_than_the_cap_is_kept_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10)
    spool.append(body(1), 1)
    spool.append(body(2, 3), 2)
    assert spool.events == 2 and spool.dropped_events == 1
    assert ids_in(spool.read_body(spool.peek(max_events=10))) == [2, 3]


def test_files_hold_exactly_the_post_body(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1024 * 1024)
    segment = spool.append(body(7), 1)
    assert segment.path.read_bytes() == body(7)
    assert segment.path.name.endswith("-1.json")
    assert oct(segment.path.stat().st_mode & 0o777) == "0o600"
