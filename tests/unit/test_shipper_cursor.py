"""The committed cursor: atomic (temp, fsync, rename, fsync dir), and robust to crashes."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from ingest.cursor import CursorStore, atomic_write


def test_first_start_has_no_cursor(tmp_path: Path) -> None:
    assert CursorStore(tmp_path / "cursor.json").load() is None


def test_commit_then_load(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cursor.json"
    store = CursorStore(path, source="--directory /j")
    store.commit("s=1;i=2")
    assert orjson.loads(path.read_bytes())["cursor"] == "s=1;i=2"
    again = CursorStore(path, source="--directory /j")
    assert again.load() == "s=1;i=2"
    assert again.last == "s=1;i=2"
    assert [p.name for p in path.parent.iterdir()] == ["cursor.json"]  # no temp left
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_same_cursor_is_not_rewritten(tmp_path: Path) -> None:
    store = CursorStore(tmp_path / "cursor.json")
    store.commit("a")
    store.commit("a")
    store.commit("b")
    assert store.commits == 2


def test_atomic_write_order_fsync_file_rename_fsync_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        calls.append("fsync-dir" if os.path.isdir(target) else "fsync-file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / "f", b"data")
    assert calls == ["fsync-file", "rename", "fsync-dir"]
    assert (tmp_path / "f").read_bytes() == b"data"


def test_a_crash_before_the_rename_keeps_the_old_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cursor.json"
    CursorStore(path).commit("old")

    def crash(src: str | Path, dst: str | Path) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        CursorStore(path).commit("new")
    monkeypatch.undo()
    assert CursorStore(path).load() == "old"  # the half-written temp file is ignored


def test_an_unreadable_cursor_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "cursor.json"
    path.write_bytes(b'{"cursor": ')
    assert CursorStore(path).load() is None
    assert (tmp_path / "cursor.json.bad").exists()
    assert not path.exists()


def test_discard_sets_a_rejected_cursor_aside(tmp_path: Path) -> None:
    path = tmp_path / "cursor.json"
    store = CursorStore(path)
    store.commit("refused")
    store.discard()
    assert store.last is None and not path.exists()
    assert orjson.loads((tmp_path / "cursor.json.bad").read_bytes())["cursor"] == "refused"
