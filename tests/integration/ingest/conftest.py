"""Real parts for the shipper tests: journal files made by systemd-journal-remote (so cursors
are real), ``devmesh serve`` as a subprocess, and the shipper as a subprocess (so it can be
killed with SIGKILL like on a real node).

Needs ``journalctl`` and ``/lib/systemd/systemd-journal-remote``
(``apt-get install -y systemd-journal-remote``); without them these tests are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.journald import write_journal
from tests.conftest import ServeProcess

ROOT = Path(__file__).resolve().parents[3]
DEVMESH = str(Path(sys.executable).with_name("devmesh"))
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
TOKEN = "dm_shipper_test_token"
BASE_US = 1_760_000_000_000_000


@pytest.fixture(autouse=True)
def _journal_tools() -> None:
    if shutil.which("journalctl") is None or not os.access(JOURNAL_REMOTE, os.X_OK):
        pytest.skip(
            "needs journalctl and systemd-journal-remote "
            "(apt-get install -y systemd-journal-remote)"
        )


def make_entries(
    start: int,
    count: int,
    *,
    host: str = "node1",
    units: tuple[str, ...] = ("nginx", "postgresql", "sshd", "cron"),
    **extra: str | bytes,
) -> list[dict[str, str | bytes]]:
    """Journal-shaped entries with distinct messages; ``i`` is encoded in the message."""
    out: list[dict[str, str | bytes]] = []
    for i in range(start, start + count):
        unit = units[i % len(units)]
        fields: dict[str, str | bytes] = {
            "__REALTIME_TIMESTAMP": str(BASE_US + i * 1000),
            "__MONOTONIC_TIMESTAMP": str(1_000_000 + i),
            "_BOOT_ID": "6d1d3c1b2a9e4f0e8c7b6a5f4e3d2c1b",
            "_HOSTNAME": host,
            "_SYSTEMD_UNIT": f"{unit}.service",
            "SYSLOG_IDENTIFIER": unit,
            "_PID": str(100 + i % 7),
            "_TRANSPORT": "journal",
            "PRIORITY": str(i % 8),
            "MESSAGE": f"{unit} entry {i}",
        }
        fields.update(extra)
        out.append(fields)
    return out


class Journal:
    """A journal directory written with systemd-journal-remote (rotated files land next to
    the first, so it is read with ``--directory``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "node.journal"

    def write(self, entries: Iterable[Mapping[str, str | bytes]]) -> None:
        write_journal(self.path, entries, remote=JOURNAL_REMOTE)

    def entries(self) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["journalctl", "--directory", str(self.directory), "-o", "json", "--all"],
            capture_output=True,
            check=True,
        ).stdout
        return [orjson.loads(line) for line in out.splitlines()]

    def cursors(self) -> list[str]:
        return [e["__CURSOR"] for e in self.entries()]

    def seqnum_ids(self) -> set[str]:
        """The ``s=…`` parts of this journal's cursors (unique to each journal file)."""
        return {cursor.split(";", 1)[0] for cursor in self.cursors()}


class Server(ServeProcess):
    """``devmesh serve`` on a fixed port and data dir, so it can be stopped and restarted."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None) -> None:
        super().__init__(data_dir, token=TOKEN, env=env)

    def journald_events(self, journal: Journal | None = None) -> list[dict[str, Any]]:
        """journald events; with ``journal``, those from that journal (its seqnum ids), so
        tests can share one server."""
        events = [e for e in self.events() if e["source"] == "journald"]
        if journal is None:
            return events
        ids = journal.seqnum_ids()
        return [e for e in events if e["source_id"].split(";", 1)[0] in ids]


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A server of the test's own (e.g. with special settings)."""
    servers: list[Server] = []

    def make(**env: str) -> Server:
        server = Server(tmp_path / f"data{len(servers)}", env)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module (starting one takes seconds on a busy 2-core machine);
    tests tell their events apart by journal (see :meth:`Server.journald_events`)."""
    server = Server(tmp_path_factory.mktemp("server") / "data").start()
    yield server
    server.stop()


def shipper_args(
    server: Server | str, state: Path, journal: Journal, *extra: str, token: str | None = TOKEN
) -> list[str]:
    url = server if isinstance(server, str) else server.url
    args = [
        sys.executable,
        "-m",
        "devmesh.cli.ship",
        "--server",
        url,
        "--state-dir",
        str(state),
        "--directory",
        str(journal.directory),
        "--start",
        "head",
        "--heartbeat-seconds",
        "3600",
        *extra,
    ]
    if token is not None:
        args += ["--token", token]
    return args


def shipper_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DEVMESH_SHIPPER_TOKEN"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ship_once(
    server: Server | str,
    state: Path,
    journal: Journal,
    *extra: str,
    token: str | None = TOKEN,
    timeout: float = 120,
) -> tuple[int, dict[str, Any]]:
    """Run the shipper with ``--no-follow`` to the end; return its exit code and final stats."""
    result = subprocess.run(
        shipper_args(server, state, journal, "--no-follow", *extra, token=token),
        cwd=ROOT,
        env=shipper_env(),
        capture_output=True,
        timeout=timeout,
    )
    return result.returncode, final_stats(result.stderr)


def final_stats(stderr: bytes) -> dict[str, Any]:
    for line in reversed(stderr.splitlines()):
        if b'"shipper_done"' in line:
            return dict(orjson.loads(line))
    raise AssertionError("no shipper_done line:\n" + stderr.decode(errors="replace")[-3000:])


def start_shipper(
    server: Server, state: Path, journal: Journal, *extra: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """The shipper in follow mode, as a node runs it."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        shipper_args(server, state, journal, "--follow", *extra),
        cwd=ROOT,
        env=shipper_env(),
        stdout=subprocess.DEVNULL,
        stderr=out,
    )
    if log is not None:
        out.close()  # type: ignore[union-attr]
    return proc


def wait_for(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def seqnum(cursor: str) -> int:
    """The journal sequence number in a cursor (``i=<hex>``): the journal's own order."""
    return int(dict(part.split("=", 1) for part in cursor.split(";"))["i"], 16)


def assert_exactly_once(journal: Journal, stored: list[dict[str, Any]]) -> None:
    """Every journal entry stored once, nothing else from journald, arrival in journal order."""
    cursors = journal.cursors()
    ids = [e["source_id"] for e in stored]
    assert len(ids) == len(set(ids)), "an entry is stored twice"
    missing = set(cursors) - set(ids)
    assert not missing, f"{len(missing)} journal entries never arrived"
    assert set(ids) == set(cursors)
    # Row ids grow with arrival: the first arrival of each entry follows journal order.
    arrival = [seqnum(e["source_id"]) for e in sorted(stored, key=lambda e: e["id"])]
    assert arrival == sorted(arrival), "entries arrived out of journal order"
