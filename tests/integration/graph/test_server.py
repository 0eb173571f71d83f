"""The embedded server's lifecycle against a real redis-server + falkordb.so."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devmesh_core.errors import BackendUnavailable, ConfigError
from devmesh_core.graph import ServiceNode, open_graph
from devmesh_core.graph.falkordb import FalkorDBGraphStore
from devmesh_core.graph.server import STATE_FILE, EmbeddedServer, _pid_alive

pytestmark = pytest.mark.timeout(120)


def _count_services(server: EmbeddedServer) -> int:
    store = FalkorDBGraphStore.embedded(server)
    try:
        return store.stats().nodes["Service"]
    finally:
        store.close()


def _write_services(server: EmbeddedServer, *names: str) -> None:
    store = FalkorDBGraphStore.embedded(server)
    try:
        store.ensure_schema()
        store.upsert([ServiceNode(name) for name in names])
    finally:
        store.close()


def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _pid_alive(pid)


@pytest.mark.parametrize("persistence", ["aof", "rdb"])
def test_stop_saves_and_restart_loads(make_server, server_dir: Path, persistence: str) -> None:
    server = make_server(persistence=persistence)
    info = server.ensure_running()
    assert server.started_here
    server.health()
    _write_services(server, "api", "db")

    assert server.stop() is True
    _wait_dead(info.pid)
    assert not (server_dir / STATE_FILE).exists()
    assert (server_dir / "graph.rdb").exists()  # SHUTDOWN SAVE wrote a snapshot
    with pytest.raises(BackendUnavailable):
        server.health()
    assert server.stop() is False  # nothing left to stop

    again = server.ensure_running()
    assert again.pid != info.pid
    assert _count_services(server) == 2


def test_private_files_and_password(make_server, server_dir: Path) -> None:
    server = make_server()
    info = server.ensure_running()
    assert stat.S_IMODE((server_dir / STATE_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((server_dir / "redis.conf").stat().st_mode) == 0o600
    assert stat.S_IMODE(server_dir.stat().st_mode) == 0o700
    # The password is not on the command line, and the server refuses anonymous clients.
    cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().decode(errors="replace")
    assert info.password not in cmdline
    anonymous = redis.Redis(
        host=info.host, port=info.port, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()


def test_second_manager_reuses_running_instance(make_server) -> None:
    first = make_server(owned=True)
    info = first.ensure_running()
    second = make_server(owned=True)
    assert second.ensure_running() == info
    assert not second.started_here
    second.close()  # owned, but it did not start the server: must leave it running
    assert first.running() == info
    first.close()  # the starter stops it
    _wait_dead(info.pid)
    assert first.running() is None


def test_concurrent_starts_make_one_server(make_server) -> None:
    managers = [make_server() for _ in range(3)]
    pids: list[int] = []
    threads = [
        threading.Thread(target=lambda m=m: pids.append(m.ensure_running().pid)) for m in managers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pids) == 3
    assert len(set(pids)) == 1


def test_kill_9_recovery_keeps_last_saved_data(make_server, server_dir: Path) -> None:
    server = make_server()  # AOF, appendfsync everysec
    info = server.ensure_running()
    _write_services(server, "api", "db", "cache")
    time.sleep(1.5)  # let the once-a-second fsync run
    os.kill(info.pid, signal.SIGKILL)
    _wait_dead(info.pid)

    # A fresh manager (another process would do the same) finds the stale state file.
    other = make_server()
    assert other.running() is None
    restarted = other.ensure_running()
    assert restarted.pid != info.pid
    assert _count_services(other) == 3


def test_store_restarts_a_crashed_server_on_next_use(make_server) -> None:
    server = make_server()
    store = FalkorDBGraphStore.embedded(server)
    try:
        store.ensure_schema()
        store.upsert([ServiceNode("api")])
        time.sleep(1.2)
        pid = server.ensure_running().pid
        os.kill(pid, signal.SIGKILL)
        _wait_dead(pid)
        # The next call reconnects, which restarts the server on its saved data.
        assert store.stats().nodes["Service"] == 1
        assert server.ensure_running().pid != pid
    finally:
        store.close()


def test_stale_state_file_with_dead_pid(make_server, server_dir: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    server_dir.mkdir(parents=True)
    (server_dir / STATE_FILE).write_text(
        json.dumps(
            {
                "pid": dead.pid,
                "host": "127.0.0.1",
                "port": 1,
                "password": "x",
                "started_at": 0,
                "directory": str(server_dir),
            }
        )
    )
    server = make_server()
    assert server.running() is None
    info = server.ensure_running()
    assert info.pid != dead.pid
    server.health()


def test_stale_state_file_with_recycled_pid(make_server, server_dir: Path) -> None:
    # The pid is alive but is not a graph server of this directory (here: the test itself).
    server_dir.mkdir(parents=True)
    (server_dir / STATE_FILE).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "host": "127.0.0.1",
                "port": 1,
                "password": "x",
                "started_at": 0,
                "directory": str(server_dir),
            }
        )
    )
    server = make_server()
    info = server.ensure_running()
    assert info.pid != os.getpid()
    assert _pid_alive(os.getpid())  # and of course it was not killed


def test_unreadable_state_file_is_replaced(make_server, server_dir: Path) -> None:
    server_dir.mkdir(parents=True)
    (server_dir / STATE_FILE).write_text("{not json")
    server = make_server()
    server.ensure_running()
    server.health()


def test_missing_module_is_a_config_error(make_server, server_dir: Path) -> None:
    server = make_server(module=server_dir.parent / "nope" / "falkordb.so")
    with pytest.raises(ConfigError, match="FalkorDB module not found"):
        server.ensure_running()


def test_broken_module_reports_the_log_tail(make_server, server_dir: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.so"
    bogus.write_text("not a shared object\n")
    bogus.chmod(0o755)
    server = make_server(module=bogus)
    with pytest.raises(BackendUnavailable) as caught:
        server.ensure_running()
    message = str(caught.value)
    assert "exited with code" in message
    assert "bogus.so" in message and "failed to load" in message  # from the server's log
    assert caught.value.backend == "falkordb"
    assert not (server_dir / STATE_FILE).exists()


def test_open_graph_owned_stops_what_it_started(tmp_path: Path) -> None:
    store = open_graph(None, tmp_path, owned=True)
    assert isinstance(store, FalkorDBGraphStore) and store.server is not None
    pid = store.server.ensure_running().pid
    store.upsert([ServiceNode("api")])
    store.close()
    _wait_dead(pid)

    # Shared (default) mode leaves it running for the next process; stop it explicitly.
    shared = open_graph(f"falkordb+embedded://{tmp_path / 'graph'}", tmp_path)
    assert isinstance(shared, FalkorDBGraphStore) and shared.server is not None
    assert shared.stats().nodes["Service"] == 1
    shared.close()
    info = shared.server.running()
    assert info is not None
    assert shared.server.stop() is True
    _wait_dead(info.pid)


def test_orphan_server_is_stopped_before_a_new_one(make_server, server_dir: Path) -> None:
    # If server.json is lost while its server runs, a second server on the same files would
    # corrupt them: the manager finds the orphan by its working directory and stops it.
    server = make_server()
    info = server.ensure_running()
    _write_services(server, "api")
    (server_dir / STATE_FILE).unlink()
    other = make_server()
    fresh = other.ensure_running()
    assert fresh.pid != info.pid
    _wait_dead(info.pid)
    assert _count_services(other) == 1  # SIGTERM made the orphan save


def test_stop_finds_a_server_whose_state_file_is_gone(make_server, server_dir: Path) -> None:
    server = make_server()
    info = server.ensure_running()
    (server_dir / STATE_FILE).unlink()
    assert server.stop() is True
    _wait_dead(info.pid)
    assert server.stop() is False
