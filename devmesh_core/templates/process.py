"""The template miner in a process of its own, so mining runs beside ingest instead of
under the same interpreter lock.

Masking and mining are pure Python: in the API server they shared one interpreter lock
with request parsing, validation and the store's inserts, and slowed HTTP ingest by 22-30 %
(``bench/ingest_http.py``) however they were tuned. :class:`ProcessMiner` runs an
:class:`~devmesh_core.templates.owned.OwnedMiner` in a child process and forwards calls to
it over a pipe. The thread that waits for a batch's templates releases the lock while the
child works, so the server parses, validates and stores the next request meanwhile.

The child owns the miner's state directory (its lock and state file) for as long as it
runs. If it dies, the call in flight raises :class:`~devmesh_core.errors.BackendUnavailable`
(ingest then stores that batch unmined, as for any miner outage, for ``devmesh templates
backfill``) and the next call starts a new child from the saved state. The child exits,
saving its state, when :meth:`ProcessMiner.close` is called or its parent goes away; it
ignores SIGTERM and SIGINT, which reach it with its parent's (a service manager stopping the
group, Ctrl-C), so that stopping goes through the parent.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import devmesh_core
from devmesh_core import errors
from devmesh_core.errors import (
    BackendError,
    BackendUnavailable,
    DevMeshError,
    InvalidInput,
    NotFound,
)
from devmesh_core.templates.miner import KnownTemplate, MinedTemplate, MinerConfig

# Calls the child answers; anything else is refused there.
_CALLS = frozenset(
    {"add_many", "take_merges", "aliases", "template_text", "resolve_id", "templates", "save"}
)


def _serve(conn: Connection) -> None:
    """Child process: open the miner the parent describes, then answer calls until told to
    close or orphaned (the parent's end of the socket closes when it exits, even by kill -9).
    """
    # Stopping is the parent's call (close, or its end of the socket closing), so the state
    # is saved once the batch in hand is done: a service manager's SIGTERM to the whole
    # group (systemd's default) would otherwise kill the child before the parent closes it
    # and lose the templates learned since the last snapshot.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from devmesh_core.log import configure_logging
    from devmesh_core.templates.owned import OwnedMiner

    try:
        state_dir, config, log_format, log_level = pickle.loads(conn.recv_bytes())
        configure_logging(log_format, log_level)  # as the parent's, on the stderr it shares
        miner = OwnedMiner(Path(state_dir), config)
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(_error(exc))
        return
    conn.send(("ok", None))
    try:
        while True:
            try:
                name, args = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if name == "close":
                break
            try:
                if name not in _CALLS:
                    raise InvalidInput(f"the miner process has no call {name!r}")
                if name == "add_many":
                    reply: Any = _pack(miner.add_many(args))
                else:
                    reply = getattr(miner, name)(*args)
            except Exception as exc:
                conn.send(_error(exc))
            else:
                conn.send(("ok", reply))
    finally:
        miner.close()
        with contextlib.suppress(OSError):
            conn.send(("ok", None))


def _pack(results: list[MinedTemplate]) -> tuple[list[str], list[str], list[int], list[int]]:
    """A batch's templates in a compact form: pickling a thousand small objects per batch
    costs more than the pipe. Distinct (id, text) pairs once, one index per line, and the
    positions of lines that created their template."""
    slot: dict[tuple[str, str], int] = {}
    ids: list[str] = []
    texts: list[str] = []
    index: list[int] = []
    new: list[int] = []
    for i, result in enumerate(results):
        key = (result.template_id, result.template)
        at = slot.get(key)
        if at is None:
            at = slot[key] = len(ids)
            ids.append(result.template_id)
            texts.append(result.template)
        index.append(at)
        if result.is_new:
            new.append(i)
    return ids, texts, index, new


def _unpack(packed: tuple[list[str], list[str], list[int], list[int]]) -> list[MinedTemplate]:
    ids, texts, index, new = packed
    shared = [MinedTemplate(t, text) for t, text in zip(ids, texts, strict=True)]
    out = [shared[i] for i in index]
    for i in new:
        out[i] = MinedTemplate(out[i].template_id, out[i].template, True)
    return out


def _error(exc: Exception) -> tuple[str, str, str, str | None]:
    backend = exc.backend if isinstance(exc, BackendError) else None
    return ("err", type(exc).__name__, str(exc), backend)


def _unwrap(answer: tuple[Any, ...]) -> Any:
    """The value of a child's answer, or the error it reported raised here (the pipe stays
    in step either way)."""
    kind, *rest = answer
    if kind == "err":
        _raise(*rest)
    return rest[0]


def _raise(name: str, message: str, backend: str | None) -> None:
    """Re-raise in the parent an error the child reported, as the same DevMesh class."""
    if name == "KeyError":  # an unknown template id, as the in-process miner raises it
        raise NotFound(f"no template {message}")
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, BackendError):
        raise cls(message, backend=backend)
    if isinstance(cls, type) and issubclass(cls, DevMeshError):
        raise cls(message)
    raise BackendError(f"template miner process: {name}: {message}", backend="miner")


class ProcessMiner:
    """A template miner (the ``add_many`` / merges interface ingest uses) whose work runs in
    a child process. Thread-safe: calls take turns on the one pipe, as they would take
    turns on an in-process miner's lock.

    Starting raises what opening the miner raises (``BackendUnavailable`` when another
    process owns the state directory).
    """

    def __init__(
        self,
        state_dir: Path,
        config: MinerConfig | None = None,
        *,
        start_timeout_s: float = 120.0,
        call_timeout_s: float = 300.0,
        log_format: str = "auto",
        log_level: str = "INFO",
    ) -> None:
        self.state_dir = Path(state_dir)
        self._config = config
        self._log = (log_format, log_level)
        self._start_timeout_s = start_timeout_s
        self._call_timeout_s = call_timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._closed = False
        with self._lock:
            self._start()

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` between a crash and the next call)."""
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # A fresh interpreter on a socket pair, not multiprocessing: its spawn re-imports the
        # parent's __main__ (a server's entry point, a test runner) and fork copies a
        # threaded process. Its own session keeps a terminal's Ctrl-C to the parent, which
        # closes the miner so its last state is saved.
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        root = str(Path(devmesh_core.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "devmesh_core.templates.process", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise BackendUnavailable(
                f"cannot start the template miner process: {exc}", backend="miner"
            ) from exc
        finally:
            theirs.close()
        self._process, self._conn = process, Connection(ours.detach())
        try:
            self._conn.send_bytes(pickle.dumps((str(self.state_dir), self._config, *self._log)))
            _unwrap(self._receive(self._start_timeout_s))
        except BaseException:
            self._stop(wait_s=5.0)
            raise

    def _receive(self, timeout_s: float) -> tuple[Any, ...]:
        conn = self._conn
        assert conn is not None
        try:
            if not conn.poll(timeout_s):
                raise BackendUnavailable(
                    f"the template miner process did not answer within {timeout_s:.0f} s",
                    backend="miner",
                )
            return tuple(conn.recv())
        except (EOFError, OSError) as exc:
            raise BackendUnavailable(
                "the template miner process exited; the next batch starts a new one",
                backend="miner",
            ) from exc

    def _call(self, name: str, args: Any) -> Any:
        with self._lock:
            if self._closed:
                raise BackendUnavailable("the template miner is closed", backend="miner")
            if self._process is None or self._process.poll() is not None:
                self._stop(wait_s=1.0)
                self._start()
            assert self._conn is not None
            try:
                self._conn.send((name, args))
                answer = self._receive(self._call_timeout_s)
            except (OSError, ValueError) as exc:
                self._stop(wait_s=1.0)
                raise BackendUnavailable(
                    f"the template miner process is unreachable: {exc}", backend="miner"
                ) from exc
            except BaseException:
                # Dead, stuck, or this thread interrupted between request and answer (a
                # late answer would be read as the next call's): this call fails (its
                # batch is stored unmined) and a new child takes the next one from the
                # saved state.
                self._stop(wait_s=1.0)
                raise
        return _unwrap(answer)

    def _stop(self, wait_s: float) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            try:
                process.wait(wait_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)

    # -- the miner interface ---------------------------------------------------------
    def add_many(self, messages: Sequence[str]) -> list[MinedTemplate]:
        """Mine a batch in the child; one result per message, in order."""
        if isinstance(messages, str):
            raise InvalidInput("add_many() takes a sequence of messages, not one string")
        if not messages:
            return []
        return _unpack(self._call("add_many", list(messages)))

    def take_merges(self) -> dict[str, str]:
        """Ids merged away since the last call, each mapped to its survivor."""
        return dict(self._call("take_merges", ()))

    def aliases(self) -> dict[str, str]:
        """Every id ever merged away, mapped to the id now standing for it."""
        return dict(self._call("aliases", ()))

    def template_text(self, template_id: str) -> str:
        """Current template text for an id (aliases resolve)."""
        return str(self._call("template_text", (template_id,)))

    def resolve_id(self, template_id: str) -> str:
        """The id that now stands for ``template_id``."""
        return str(self._call("resolve_id", (template_id,)))

    def templates(self) -> list[KnownTemplate]:
        """All current templates, oldest first."""
        return list(self._call("templates", ()))

    def save(self) -> None:
        """Have the child write its state file now."""
        self._call("save", ())

    def close(self) -> None:
        """Stop the child, which saves its state first. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conn = self._conn
            if conn is not None and self._process is not None and self._process.poll() is None:
                with contextlib.suppress(OSError, ValueError, EOFError):
                    conn.send(("close", None))
                    if conn.poll(30.0):
                        conn.recv()
            self._stop(wait_s=30.0)

    def __enter__(self) -> ProcessMiner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
