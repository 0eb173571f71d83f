"""The demo's stand-in for systemd: runs the demo services as "units" and answers ``systemctl``.

The demo services (:mod:`devmesh.demo.apps`) are plain subprocesses. On a real node systemd
runs them, notices when one dies and writes so in the journal (``nginx.service: Main
process exited, code=killed, status=9/KILL``), and ``systemctl restart`` asks it to start
one again. :class:`UnitSupervisor` does those three things for the demo, and nothing more:

* it starts each unit's process and waits until its port answers;
* when a process exits without being asked to, it writes systemd's two lines about it into
  the unit's log file (the lines ``journalctl -u UNIT`` would show), and marks it ``failed``;
* it serves the requests of the ``systemctl`` shim (:mod:`devmesh.demo.systemctl`), which
  DevMesh's node agent runs, from ``<control>/requests``, writing the current state of each
  unit to ``<control>/state/<unit>`` for ``systemctl is-active``.

Everything here is demo scaffolding, named as such in the demo's output: on a real node the
agent's ``systemctl restart demo-inventory.service`` goes to systemd itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devmesh.demo.apps import LogFile

SUPERVISOR_NAME = "demo-systemd"
"""How the supervisor signs the lines it writes for a unit (systemd writes as ``systemd``)."""


class UnitError(RuntimeError):
    """A unit could not be started (its process exited, or its port never answered)."""


@dataclass
class Unit:
    """One supervised process: its command, the log it writes and the port it serves."""

    name: str
    argv: list[str]
    log_path: Path
    port: int
    output_path: Path
    proc: subprocess.Popen[bytes] | None = None
    state: str = "inactive"
    starts: int = 0
    expected_exit: bool = False
    _output: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        """The running process's id (``None`` when not running)."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


def port_open(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def exit_description(returncode: int) -> tuple[str, str]:
    """systemd's wording for a main process's exit: the ``code=…, status=…`` part and the
    ``Failed with result '…'`` reason."""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name.removeprefix("SIG")
        except ValueError:
            name = str(number)
        return f"code=killed, status={number}/{name}", "signal"
    return f"code=exited, status={returncode}/FAILURE", "exit-code"


class UnitSupervisor:
    """Runs the demo's units, reports unexpected exits as systemd would, and serves the
    ``systemctl`` shim's jobs (see the module docstring). ``on_event(unit, what)`` is told of
    each state change (the demo prints them)."""

    def __init__(
        self,
        control_dir: Path,
        *,
        ready_timeout: float = 30.0,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self.control = control_dir
        for sub in ("requests", "replies", "state"):
            (control_dir / sub).mkdir(parents=True, exist_ok=True)
        self.ready_timeout = ready_timeout
        self.on_event = on_event
        self.units: dict[str, Unit] = {}
        self.jobs: list[dict[str, str]] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- units ----------------------------------------------------------------------------
    def add(self, name: str, argv: Sequence[str], *, log_path: Path, port: int) -> Unit:
        """Declare a unit (not started). Its stdout/stderr go next to its log (``.out``)."""
        unit = Unit(name, list(argv), log_path, port, log_path.with_suffix(".out"))
        with self._lock:
            self.units[name] = unit
        self._write_state(unit, "inactive")
        return unit

    def _write_state(self, unit: Unit, state: str) -> None:
        unit.state = state
        path = self.control / "state" / unit.name
        tmp = path.with_name(f".{unit.name}.tmp")
        tmp.write_text(state + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def _say(self, unit: Unit, level: str, message: str) -> None:
        """A line about ``unit`` in its own log, as systemd's lines show in
        ``journalctl -u UNIT``."""
        log = LogFile(unit.log_path, SUPERVISOR_NAME)
        try:
            log.write(level, f"{unit.name}: {message}")
        finally:
            log.close()

    def _event(self, unit: Unit, what: str) -> None:
        if self.on_event is not None:
            with contextlib.suppress(Exception):  # printing must never break supervision
                self.on_event(unit.name, what)

    def start(self, name: str) -> Unit:
        """Start ``name`` (if not running) and wait until its port answers; ``UnitError``
        if the process exits or the port stays closed past ``ready_timeout``."""
        with self._lock:
            unit = self.units[name]
            if unit.pid is not None:
                return unit
            self._write_state(unit, "activating")
            unit.log_path.parent.mkdir(parents=True, exist_ok=True)
            if unit._output is None:
                unit._output = unit.output_path.open("ab")
            unit.expected_exit = False
            unit.proc = subprocess.Popen(
                unit.argv,
                stdin=subprocess.DEVNULL,
                stdout=unit._output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops units in order
            )
            unit.starts += 1
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if unit.proc.poll() is not None:
                self._write_state(unit, "failed")
                raise UnitError(
                    f"{name} exited with code {unit.proc.returncode} while starting "
                    f"(see {unit.output_path})"
                )
            if port_open(unit.port):
                with self._lock:
                    self._write_state(unit, "active")
                self._say(unit, "INFO", f"Started {name} (pid {unit.proc.pid}).")
                self._event(unit, f"started (pid {unit.proc.pid})")
                return unit
            time.sleep(0.05)
        self.stop(name)
        self._write_state(unit, "failed")
        raise UnitError(f"{name} did not listen on port {unit.port} within {self.ready_timeout}s")

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        """Stop ``name`` (SIGTERM, SIGKILL after ``timeout``), as an expected exit."""
        with self._lock:
            unit = self.units[name]
            proc = unit.proc
            unit.expected_exit = True
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        with self._lock:
            if unit.state != "failed":
                self._write_state(unit, "inactive")

    def restart(self, name: str) -> Unit:
        """Stop (if running) and start again."""
        unit = self.units[name]
        if unit.pid is not None:
            self._say(unit, "INFO", f"Stopping {name}...")
            self.stop(name)
        return self.start(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the unit's process (the chaos trigger); its pid. The watcher then
        reports the exit as unexpected."""
        unit = self.units[name]
        pid = unit.pid
        if pid is None:
            raise UnitError(f"{name} is not running")
        os.kill(pid, sig)
        return pid

    # -- watching and jobs ----------------------------------------------------------------
    def run_in_thread(self) -> None:
        """Watch the units and serve ``systemctl`` jobs in a daemon thread until
        :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="demo-systemd", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.check_exits()
            self.serve_jobs()

    def check_exits(self) -> None:
        """Report units whose process exited without being asked to (systemd's lines)."""
        for unit in list(self.units.values()):
            with self._lock:
                proc = unit.proc
                if proc is None or proc.poll() is None or unit.state in ("failed", "inactive"):
                    continue
                if unit.expected_exit:
                    continue
                self._write_state(unit, "failed")
            how, result = exit_description(proc.returncode)
            self._say(unit, "WARNING", f"Main process exited, {how}")
            self._say(unit, "WARNING", f"Failed with result '{result}'.")
            self._event(unit, f"main process exited, {how}")

    def serve_jobs(self) -> None:
        """Run the jobs the ``systemctl`` shim asked for, oldest first, and answer each."""
        requests = sorted(
            (self.control / "requests").glob("*.json"), key=lambda p: p.stat().st_mtime
        )
        for path in requests:
            try:
                job = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            path.unlink(missing_ok=True)
            code, message = self._run_job(str(job.get("verb")), str(job.get("unit")))
            self.jobs.append(
                {"verb": str(job.get("verb")), "unit": str(job.get("unit")), "exit": str(code)}
            )
            reply = self.control / "replies" / f"{job.get('id')}.json"
            tmp = reply.with_name(f".{reply.name}.tmp")
            tmp.write_text(json.dumps({"exit_code": code, "message": message}), encoding="utf-8")
            os.replace(tmp, reply)

    def _run_job(self, verb: str, name: str) -> tuple[int, str]:
        if name not in self.units:
            return 5, f"Failed to {verb} {name}: Unit {name} not found."
        self._event(self.units[name], f"systemctl {verb} requested (by the node agent)")
        try:
            if verb in ("restart", "reload"):  # the demo apps have no reload: restart them
                unit = self.restart(name)
            elif verb == "start":
                unit = self.start(name)
            elif verb == "stop":
                self.stop(name)
                return 0, ""
            else:
                return 1, f"Unknown command verb {verb}."
        except UnitError as exc:
            return 1, f"Job for {name} failed: {exc}"
        return 0, f"{name} {verb}ed: pid {unit.pid}, listening on 127.0.0.1:{unit.port}"

    def close(self) -> None:
        """Stop the watcher and every unit (expected exits), then close their outputs."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for name in list(self.units):
            self.stop(name)
        for unit in self.units.values():
            if unit._output is not None:
                unit._output.close()
                unit._output = None
