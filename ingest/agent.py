"""The node agent: pull approved remediation requests from the server, run them, report.

Pull only: the agent polls ``GET /agent/actions?host=H`` with its node token and posts each
outcome to ``POST /agent/actions/{id}/result``; nothing ever connects *to* a node.

Every request is checked again here before anything runs: the action must be in the catalog,
its parameters valid, and (when this node has an actions config) its target on the node's
own allowlist. Caches, log rotation targets and scripts exist only as names in the node's
config, so the server can never point the agent at a path. Commands run as ``argv`` lists
with ``shell=False`` (tools such as ``systemctl`` and ``docker`` are looked up on ``PATH``),
with a timeout; cache clearing and log rotation are done in Python.

Like the shipper this uses ``http.client`` (one keep-alive connection, small RSS).
"""

from __future__ import annotations

import gzip
import http.client
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from devmesh_core.actions.catalog import Plan, plan, validate_action
from devmesh_core.actions.settings import ActionSettings
from devmesh_core.errors import InvalidInput
from devmesh_core.log import get_logger
from ingest.client import KeepAliveConnection, TransientError

log = get_logger(__name__)

OUTPUT_TAIL = 4_000
EX_CONFIG = 78


class AgentTransientError(Exception):
    """The server could not be reached or answered 5xx: try again later."""


class AgentAuthError(Exception):
    """The server refused the token (401/403): only a person can fix that."""


class AgentHttp(KeepAliveConnection):
    """JSON over one keep-alive HTTP/1.1 connection to the DevMesh server (the shipper's
    :class:`ingest.client.KeepAliveConnection`).

    Any failure on a reused connection is retried once on a fresh one (not only a closed
    keep-alive): the agent's requests — listing its queue, posting a result — are safe to
    repeat.
    """

    def __init__(
        self, server: str, token: str | None, *, timeout: float = 10.0, verify_tls: bool = True
    ) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "devmesh-agent"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        super().__init__(
            server,
            headers,
            timeout,
            verify_tls=verify_tls,
            retry_on=(http.client.HTTPException, OSError),
        )

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; return the decoded JSON answer. Raises
        :class:`AgentTransientError`, :class:`AgentAuthError` or ``ValueError`` (4xx)."""
        data = orjson.dumps(body) if body is not None else None
        try:
            status, raw = self.send(method, path, data)
        except TransientError as exc:
            raise AgentTransientError(str(exc)) from exc.__cause__
        if status in (401, 403):
            raise AgentAuthError(f"the server refused the token ({status})")
        if status >= 500 or status in (408, 429):
            raise AgentTransientError(f"server answered {status}")
        if status >= 400:
            raise ValueError(f"server answered {status}: {raw[:300]!r}")
        return orjson.loads(raw) if raw else None


@dataclass(slots=True)
class Executor:
    """Runs one request on this node (or, with ``dry_run``, says what it would run).

    ``settings`` is this node's own actions config; ``enforce_allowlist`` is on whenever a
    config with an ``allow`` section was given. ``which`` finds tools on ``PATH``.
    """

    host: str
    settings: ActionSettings = field(default_factory=ActionSettings)
    dry_run: bool = False
    timeout: float | None = None
    which: Callable[[str], str | None] = shutil.which

    @property
    def enforce_allowlist(self) -> bool:
        return bool(self.settings.allow)

    def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        """Validate, run and describe the outcome as the result the server expects."""
        started = time.monotonic()
        try:
            if request.get("host") != self.host:
                raise InvalidInput(f"request is for host {request.get('host')!r}, not this node")
            validated = validate_action(
                request.get("action", ""),
                request.get("params"),
                self.host,
                self.settings,
                check_allow=self.enforce_allowlist,
            )
            todo = plan(validated, self.settings, which=self.which)
        except InvalidInput as exc:
            log.warning("action_refused_on_node", id=request.get("id"), reason=str(exc))
            return {"exit_code": 126, "refused": str(exc), "output": str(exc), "duration": 0.0}
        if self.dry_run:
            return {
                "exit_code": 0,
                "dry_run": True,
                "argv": todo.argv,
                "paths": todo.paths,
                "output": f"dry run: would {todo.description}",
                "duration": 0.0,
            }
        log.info("action_running", id=request.get("id"), action=todo.action, argv=todo.argv)
        if todo.argv is not None:
            result = self._command(todo)
        elif todo.action == "clear_cache":
            result = _clear_directory(Path(todo.paths[0]))
        else:
            result = _rotate(Path(p) for p in todo.paths)
        result["duration"] = round(time.monotonic() - started, 4)
        result["argv"] = todo.argv
        if result["exit_code"] == 0 and todo.verify is not None:
            result["verify"] = self._verify(todo)
        return result

    def _command(self, todo: Plan) -> dict[str, Any]:
        assert todo.argv is not None
        if todo.action == "run_script":
            problem = _script_problem(Path(todo.argv[0]))
            if problem:
                return {"exit_code": 126, "refused": problem, "output": problem}
        timeout = todo.timeout or self.timeout or self.settings.run_timeout
        return _run(todo.argv, timeout)

    def _verify(self, todo: Plan) -> dict[str, Any]:
        """Does the unit (container) run now? ``activating`` gets a few seconds to settle."""
        assert todo.verify is not None
        out: dict[str, Any] = {}
        for _ in range(5):
            out = _run(todo.verify, 10.0)
            state = str(out.get("output", "")).strip().splitlines()[-1:] or [""]
            out["state"] = state[0]
            if state[0] not in ("activating", "reloading", "deactivating"):
                break
            time.sleep(1.0)
        expected = "true" if todo.action == "restart_container" else "active"
        if todo.action == "stop_unit":
            ok = out["state"] in ("inactive", "failed", "unknown")
        else:
            ok = out["state"] == expected
        return {
            "argv": todo.verify,
            "ok": ok,
            "state": out["state"],
            "exit_code": out.get("exit_code"),
        }


def _run(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run ``argv`` (never through a shell); exit code and the output's tail."""
    try:
        done = subprocess.run(
            argv,
            shell=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            close_fds=True,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.output.decode("utf-8", "replace") if isinstance(exc.output, bytes) else ""
        return {
            "exit_code": 124,
            "output": (output + f"\ntimed out after {timeout}s")[-OUTPUT_TAIL:],
        }
    except OSError as exc:
        return {"exit_code": 127, "output": f"cannot run {argv[0]}: {exc}"}
    text = done.stdout.decode("utf-8", "replace") if done.stdout else ""
    return {"exit_code": done.returncode, "output": text[-OUTPUT_TAIL:]}


def _script_problem(path: Path) -> str | None:
    """Why a script must not run: missing, not a regular executable file, or writable by
    others (then anyone on the node could change what an approval runs)."""
    try:
        info = path.lstat()
    except OSError:
        return f"script {path} does not exist"
    if not stat.S_ISREG(info.st_mode):
        return f"script {path} is not a regular file"
    if not os.access(path, os.X_OK):
        return f"script {path} is not executable"
    if info.st_mode & 0o022:
        return f"script {path} is writable by group or others"
    return None


def _clear_directory(directory: Path) -> dict[str, Any]:
    """Remove what is inside ``directory`` (not the directory itself; symlinks removed, never
    followed). Refuses ``/`` and top-level directories."""
    resolved = directory.resolve()
    if len(resolved.parts) < 3 or directory.is_symlink() or not resolved.is_dir():
        return {"exit_code": 1, "output": f"refusing to clear {directory}: not a cache directory"}
    removed = 0
    errors: list[str] = []
    for entry in os.scandir(resolved):
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError as exc:
            errors.append(f"{entry.name}: {exc}")
    lines = [f"removed {removed} entr{'y' if removed == 1 else 'ies'} from {resolved}", *errors]
    return {
        "exit_code": 1 if errors else 0,
        "output": "\n".join(lines)[-OUTPUT_TAIL:],
        "removed": removed,
    }


def _rotate(files: Any) -> dict[str, Any]:
    """copytruncate: gzip each file to ``<file>.<UTC time>.gz``, then truncate it in place
    (the writing service keeps its open file handle)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    lines: list[str] = []
    failed = False
    for path in files:
        try:
            if path.is_symlink() or not path.is_file():
                lines.append(f"skipped {path}: not a regular file")
                continue
            target = path.with_name(f"{path.name}.{stamp}.gz")
            with path.open("rb+") as source:
                with gzip.open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                source.truncate(0)
            lines.append(f"rotated {path} -> {target}")
        except OSError as exc:
            failed = True
            lines.append(f"failed {path}: {exc}")
    return {"exit_code": 1 if failed else 0, "output": "\n".join(lines)[-OUTPUT_TAIL:]}


class Agent:
    """Poll, execute, report, until stopped. Results that could not be sent are kept and
    sent on the next pass, so a server restart mid-run loses no outcome."""

    def __init__(
        self,
        http: AgentHttp,
        executor: Executor,
        *,
        poll_interval: float = 5.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.http = http
        self.executor = executor
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.stop_event = threading.Event()
        self._unsent: list[tuple[str, dict[str, Any]]] = []
        self.executed = 0
        self.on_start: Callable[[dict[str, Any]], None] | None = None

    @property
    def host(self) -> str:
        return self.executor.host

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current pass."""
        self.stop_event.set()

    def run_once(self) -> int:
        """One pass: resend unsent results, poll, run what was handed out. Returns how many
        requests ran. Raises :class:`AgentTransientError` / :class:`AgentAuthError`."""
        self._flush()
        answer = self.http.request("GET", f"/agent/actions?host={quote(self.host)}")
        actions = answer.get("actions", []) if isinstance(answer, dict) else []
        for request in actions:
            if self.on_start is not None:
                self.on_start(request)
            result = self.executor.execute(request)
            self.executed += 1
            self._unsent.append((str(request.get("id")), result))
            self._flush()
        return len(actions)

    def _flush(self) -> None:
        while self._unsent:
            request_id, result = self._unsent[0]
            path = f"/agent/actions/{quote(request_id)}/result?host={quote(self.host)}"
            try:
                self.http.request("POST", path, result)
            except ValueError as exc:  # the server will never take it (e.g. already timed out)
                log.warning("action_result_refused", id=request_id, error=str(exc))
            self._unsent.pop(0)

    def run(self) -> int:
        """Loop until :meth:`stop`; return 0, or ``EX_CONFIG`` when the token is refused."""
        backoff = self.poll_interval
        log.info(
            "agent_started",
            host=self.host,
            dry_run=self.executor.dry_run,
            interval=self.poll_interval,
            allowlist=self.executor.enforce_allowlist,
        )
        while not self.stop_event.is_set():
            try:
                self.run_once()
                backoff = self.poll_interval
                wait = self.poll_interval
            except AgentAuthError as exc:
                log.error("agent_token_refused", error=str(exc))
                return EX_CONFIG
            except (AgentTransientError, ValueError) as exc:
                log.warning("agent_poll_failed", error=str(exc), retry_in=backoff)
                wait = backoff
                backoff = min(backoff * 2, self.max_backoff)
            self.stop_event.wait(wait)
        self.http.close()
        return 0


def build_agent(
    server: str,
    token: str | None,
    host: str,
    *,
    config: Path | None = None,
    dry_run: bool = False,
    poll_interval: float = 5.0,
) -> Agent:
    """An agent from command-line style options (``config``: the node's actions YAML)."""
    from devmesh_core.actions.settings import load_action_settings

    settings = load_action_settings(config) if config is not None else ActionSettings()
    if not settings.allow:
        log.warning(
            "agent_without_local_allowlist",
            note="units and containers are checked only by the server's allowlist; caches, "
            "log targets and scripts need this node's actions config",
        )
    executor = Executor(host=host, settings=settings, dry_run=dry_run)
    return Agent(AgentHttp(server, token), executor, poll_interval=poll_interval)


def start_in_thread(agent: Agent) -> threading.Thread:
    """Run ``agent`` in a daemon thread (how ``devmesh ship --agent`` runs it)."""
    thread = threading.Thread(target=agent.run, name="devmesh-agent", daemon=True)
    thread.start()
    return thread


def default_host() -> str:
    """This node's name, as the shipper reports it."""
    return socket.gethostname()
