"""The template miner in a child process (``ProcessMiner``): a real child interpreter on a
socket pair, compared line for line with the in-process miner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.synth import make_events
from devmesh_core.errors import BackendUnavailable, InvalidInput, NotFound
from devmesh_core.templates.owned import OwnedMiner
from devmesh_core.templates.process import ProcessMiner

MESSAGES = [str(e["message"]) for e in make_events(3_000, seed=4)]
BATCHES = [MESSAGES[i : i + 500] for i in range(0, len(MESSAGES), 500)]


def _gone(pid: int, within_s: float = 20.0) -> bool:
    """The process exited (a zombie not yet reaped by its parent counts as exited)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_same_templates_ids_and_new_flags_as_in_process(tmp_path: Path) -> None:
    with OwnedMiner(tmp_path / "here") as here, ProcessMiner(tmp_path / "there") as there:
        for batch in BATCHES:
            assert there.add_many(batch) == here.add_many(batch)
        assert there.take_merges() == here.take_merges()
        assert there.aliases() == here.aliases()
        assert there.templates() == here.templates()
        some = here.templates()[0].template_id
        assert there.template_text(some) == here.template_text(some)
        assert there.resolve_id(some) == some
        assert there.add_many([]) == []
        with pytest.raises(InvalidInput):
            there.add_many("one string")


def test_an_error_in_the_child_is_raised_here_and_keeps_the_child(tmp_path: Path) -> None:
    with ProcessMiner(tmp_path) as miner:
        miner.add_many(BATCHES[0])
        child = miner.pid
        with pytest.raises(NotFound, match="Tnope"):
            miner.template_text("Tnope")
        with pytest.raises(InvalidInput, match="no call"):
            miner._call("_state_bytes", ())
        assert miner.pid == child
        assert len(miner.add_many(BATCHES[0])) == len(BATCHES[0])


def test_state_survives_close_and_the_directory_is_owned(tmp_path: Path) -> None:
    first = ProcessMiner(tmp_path)
    ids = [t.template_id for t in first.add_many(MESSAGES)]
    # the child holds the directory's lock: another miner is refused, with the same error
    # class an in-process owner gives
    with pytest.raises(BackendUnavailable, match="in use by another DevMesh process"):
        OwnedMiner(tmp_path)
    with pytest.raises(BackendUnavailable, match="in use by another DevMesh process"):
        ProcessMiner(tmp_path)
    child = first.pid
    assert child is not None
    first.close()
    first.close()  # idempotent
    assert _gone(child)
    with pytest.raises(BackendUnavailable, match="closed"):
        first.add_many(["x"])
    with ProcessMiner(tmp_path) as again:
        assert [t.template_id for t in again.add_many(MESSAGES)] == ids


def test_a_killed_child_is_replaced_from_the_saved_state(tmp_path: Path) -> None:
    miner = ProcessMiner(tmp_path)
    try:
        ids = [t.template_id for t in miner.add_many(BATCHES[0])]
        miner.save()
        old = miner.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        assert _gone(old)
        # the next call starts a new child from the saved state: same ids
        assert [t.template_id for t in miner.add_many(BATCHES[0])] == ids
        assert miner.pid not in (None, old)
    finally:
        miner.close()


def test_child_outlives_a_sigterm_so_the_parent_closes_it(tmp_path: Path) -> None:
    """A service manager's SIGTERM reaches the whole group; the child waits for the parent's
    close, which saves the templates learned since the last snapshot."""
    miner = ProcessMiner(tmp_path)
    child = miner.pid
    assert child is not None
    ids = [t.template_id for t in miner.add_many(BATCHES[1])]
    os.kill(child, signal.SIGTERM)
    time.sleep(0.3)
    assert miner.add_many(BATCHES[1][:3]) and miner.pid == child
    miner.close()
    with OwnedMiner(tmp_path) as reopened:
        assert [t.template_id for t in reopened.add_many(BATCHES[1])] == ids


def test_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    """No orphan holding the miner state: kill -9 of the server frees the directory."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from devmesh_core.templates.process import ProcessMiner\n"
        "m = ProcessMiner(Path(sys.argv[1]))\n"
        "m.add_many(['job 1 done', 'job 2 done'])\n"
        "print(m.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(10)
        assert _gone(child)
        # the lock went with the child, which saved what it had learned on its way out
        with OwnedMiner(tmp_path) as owner:
            assert [t.template for t in owner.templates()] == ["job <*> done"]
    finally:
        if parent.poll() is None:
            parent.kill()
