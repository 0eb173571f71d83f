"""Shipper configuration: a small YAML file, validated by hand.

The shipper runs on every node and must stay light (RSS < 60 MB), so this module uses plain
dataclasses and ``yaml.safe_load`` rather than pydantic. Nothing here reads the environment
or touches the disk at import time; :func:`load_config` is called by the entry point.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

JournalMode = Literal["live", "file", "directory"]
StartAt = Literal["head", "tail"]
JournalFormat = Literal["json", "export"]

FileStart = Literal["head", "tail"]

DEFAULT_STATE_DIR = Path("/var/lib/devmesh-shipper")
DEFAULT_SERVER = "http://127.0.0.1:8770"


class ShipperConfigError(ValueError):
    """A configuration problem a person must fix (bad YAML, missing token, wrong type).

    Distinct from transient failures so the entry point can exit with ``EX_CONFIG`` and
    systemd does not restart the shipper in a loop on a mistake that cannot heal itself.
    """


@dataclass(frozen=True, slots=True)
class JournalConfig:
    """Where entries come from.

    ``format`` is journalctl's output format: ``export`` (the default), which journalctl
    writes about 4x faster than ``json`` (less CPU on the node; the same log objects, binary
    fields included), or ``json``.

    ``live`` reads the node's own journal with ``journalctl -f``; ``directory`` reads (and
    follows) a journal directory; ``file`` reads journal files with ``--file`` — journalctl
    cannot follow files (systemd 252: "Failed to get journal fd"), so ``follow`` on files
    re-runs journalctl after the last cursor every ``poll_interval`` seconds.
    """

    enabled: bool = True
    mode: JournalMode = "live"
    format: JournalFormat = "export"
    files: tuple[Path, ...] = ()
    directory: Path | None = None
    follow: bool = True
    start: StartAt = "tail"
    poll_interval: float = 1.0
    journalctl: str = "journalctl"
    extra_args: tuple[str, ...] = ()


DEFAULT_CONTINUE_PATTERN = (
    r"^(?:\s|at\s|Caused by:|Suppressed:|\.\.\. \d+ (?:more|common frames omitted)"
    r"|Traceback \(most recent call last\)|During handling of the above exception"
    r"|The above exception was the direct cause|[\w$.]*(?:Error|Exception|Exit|Interrupt)"
    r"(?::|$)|$)"
)
"""A line matching this continues the event before it: indented lines, Java ``at …`` and
``Caused by:`` lines, Python's ``Traceback`` header, chained-exception notes and the final
``SomeError: message`` line, and blank lines. Used when no ``multiline.start`` is given."""


@dataclass(frozen=True, slots=True)
class MultilineConfig:
    """How lines join into one event (a stack trace is one event with its first line).

    ``start`` (a regex) marks a record's first line: lines not matching it continue the
    previous event; the robust choice when every record starts with a timestamp. Without it,
    ``continue_pattern`` marks continuation lines instead (the default suits Java and Python
    stack traces). ``max_lines``/``max_bytes`` cap one event (the rest starts a new one);
    ``timeout`` emits the last event of a file that stopped growing. ``enabled: false``
    ships each line on its own.
    """

    enabled: bool = True
    start: str | None = None
    continue_pattern: str = DEFAULT_CONTINUE_PATTERN
    max_lines: int = 500
    max_bytes: int = 256 * 1024
    timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class FileInput:
    """One ``files:`` entry: a glob of plain log files shipped under one service name.

    ``start`` applies only to files already there at the very first start (no checkpoint
    yet): ``head`` ships them whole, ``tail`` only what is appended from now on. Files that
    appear later are always read from their first byte. ``level`` is ``auto`` (detect a level
    word per event, default INFO) or a fixed level; ``timestamps`` is ``auto`` (a leading
    timestamp in common formats, otherwise the read time) or ``read_time``. Timestamps
    without a UTC offset are read in ``timezone`` (``local`` or ``UTC``).
    """

    path: str
    service: str
    host: str | None = None
    start: FileStart = "head"
    multiline: MultilineConfig = field(default_factory=MultilineConfig)
    level: str = "auto"
    timestamps: Literal["auto", "read_time"] = "auto"
    timezone: Literal["local", "UTC"] = "local"
    max_line_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class TailConfig:
    """Timing of the file tail (shared by every ``files:`` entry).

    ``poll_interval``: how often files are checked for new data (and globs re-scanned);
    ``rotate_wait``: how long a rotated-away or deleted file stays open after its last
    growth (a writer may still append before it reopens its log); ``partial_line_timeout``:
    how long a last line without its newline waits before it is shipped as it is.
    """

    poll_interval: float = 0.25
    rotate_wait: float = 5.0
    partial_line_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    """Everything the shipper needs. Build with :func:`load_config` or directly in tests."""

    server: str = DEFAULT_SERVER
    token: str | None = field(default=None, repr=False)
    state_dir: Path = DEFAULT_STATE_DIR
    host: str | None = None
    journal: JournalConfig = field(default_factory=JournalConfig)
    batch_max_events: int = 50
    batch_max_seconds: float = 2.0
    drain_max_events: int = 1000
    spool_max_mb: float = 100.0
    retry_initial: float = 0.5
    retry_max: float = 60.0
    request_timeout: float = 10.0
    heartbeat_seconds: float = 30.0
    cursor_commit_seconds: float = 1.0
    filters_file: Path | None = None
    drain_timeout: float | None = None
    verify_tls: bool = True
    ca_file: Path | None = None
    files: tuple[FileInput, ...] = ()
    tail: TailConfig = field(default_factory=TailConfig)

    @property
    def cursor_path(self) -> Path:
        """The committed-cursor file: one per state directory (one per journal source)."""
        return self.state_dir / "cursor.json"

    @property
    def file_checkpoint_path(self) -> Path:
        """Per-file checkpoints of the file tail ((device, inode) → offset)."""
        return self.state_dir / "files.json"

    @property
    def file_stamps_path(self) -> Path:
        """Read-time stamps of file lines without a timestamp of their own (see ingest.tail)."""
        return self.state_dir / "file-stamps.json"

    @property
    def spool_dir(self) -> Path:
        """Batches waiting for the server, one file each, oldest first."""
        return self.state_dir / "spool"

    @property
    def node_host(self) -> str:
        """The host name for the shipper's own events (and entries without ``_HOSTNAME``)."""
        return self.host or socket.gethostname()

    def validated(self) -> ShipperConfig:
        """Return self after checking ranges; raise :class:`ShipperConfigError` otherwise."""
        if not self.server.startswith(("http://", "https://")):
            raise ShipperConfigError(f"server must be an http:// or https:// URL: {self.server!r}")
        checks: list[tuple[str, float, float]] = [
            ("batch.max_events", self.batch_max_events, 1),
            ("batch.max_seconds", self.batch_max_seconds, 0.01),
            ("batch.drain_max_events", self.drain_max_events, 1),
            ("spool.max_mb", self.spool_max_mb, 0.001),
            ("retry.initial", self.retry_initial, 0.001),
            ("retry.max", self.retry_max, 0.001),
            ("request_timeout", self.request_timeout, 0.1),
            ("heartbeat_seconds", self.heartbeat_seconds, 0.1),
            ("cursor_commit_seconds", self.cursor_commit_seconds, 0.0),
            ("journal.poll_interval", self.journal.poll_interval, 0.01),
            ("tail.poll_interval", self.tail.poll_interval, 0.005),
            ("tail.rotate_wait_seconds", self.tail.rotate_wait, 0.0),
            ("tail.partial_line_seconds", self.tail.partial_line_timeout, 0.0),
        ]
        for index, item in enumerate(self.files):
            where = f"files[{index}]."
            checks += [
                (where + "multiline.max_lines", item.multiline.max_lines, 1),
                (where + "multiline.max_bytes", item.multiline.max_bytes, 64),
                (where + "multiline.timeout_seconds", item.multiline.timeout, 0.0),
                (where + "max_line_bytes", item.max_line_bytes, 64),
            ]
        for name, value, minimum in checks:
            if value < minimum:
                raise ShipperConfigError(f"{name} must be at least {minimum}, got {value}")
        if self.journal.mode == "file" and not self.journal.files:
            raise ShipperConfigError("journal.mode is 'file' but journal.files is empty")
        if self.journal.mode == "directory" and self.journal.directory is None:
            raise ShipperConfigError("journal.mode is 'directory' but journal.directory is unset")
        if not self.journal.enabled and not self.files:
            raise ShipperConfigError("nothing to ship: journal.enabled is false and no files")
        return self


def read_token_file(path: Path) -> str:
    """The bearer token from a file (first non-empty line); file tokens stay out of ``ps``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ShipperConfigError(f"cannot read token file {path}: {exc.strerror or exc}") from exc
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    raise ShipperConfigError(f"token file {path} is empty")


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise ShipperConfigError(f"{key} must be a mapping")
    return value


def _num(section: dict[str, Any], key: str, default: float, where: str) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ShipperConfigError(f"{where}{key} must be a number, got {value!r}")
    return float(value)


def _int(section: dict[str, Any], key: str, default: int, where: str) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ShipperConfigError(f"{where}{key} must be an integer, got {value!r}")
    return value


def _path(value: Any, name: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ShipperConfigError(f"{name} must be a path string, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _pattern(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ShipperConfigError(f"{where} must be a regular expression string")
    try:
        re.compile(value)
    except re.error as exc:
        raise ShipperConfigError(f"{where}: bad regex {value!r}: {exc}") from exc
    return value


def parse_file_input(item: Any, index: int, base: Path) -> FileInput:
    """One ``files:`` entry: a mapping with at least ``path`` (a glob) and ``service``."""
    where = f"files[{index}]."
    if not isinstance(item, dict):
        raise ShipperConfigError(f"files[{index}] must be a mapping with path and service")
    bad = sorted(
        set(item)
        - {
            "path",
            "service",
            "host",
            "start",
            "multiline",
            "level",
            "timestamps",
            "timezone",
            "max_line_bytes",
        }
    )
    if bad:
        raise ShipperConfigError(f"{where[:-1]}: unknown keys: {', '.join(bad)}")
    path = _path(item.get("path"), where + "path", base)
    service = item.get("service")
    if not isinstance(service, str) or not service.strip():
        raise ShipperConfigError(f"{where}service must be a non-empty string")
    host = item.get("host")
    if host is not None and (not isinstance(host, str) or not host.strip()):
        raise ShipperConfigError(f"{where}host must be a non-empty string")
    start = item.get("start", "head")
    if start not in ("head", "tail"):
        raise ShipperConfigError(f"{where}start must be head or tail, got {start!r}")
    level = str(item.get("level", "auto")).strip()
    level = "auto" if level.lower() == "auto" else level.upper()
    if level not in ("auto", *_LEVELS):
        raise ShipperConfigError(f"{where}level must be auto or one of {', '.join(_LEVELS)}")
    stamps = item.get("timestamps", "auto")
    if stamps not in ("auto", "read_time"):
        raise ShipperConfigError(f"{where}timestamps must be auto or read_time")
    zone = item.get("timezone", "local")
    if zone not in ("local", "UTC"):
        raise ShipperConfigError(f"{where}timezone must be local or UTC")
    multi = item.get("multiline", {})
    if multi is False:
        multiline = MultilineConfig(enabled=False)
    else:
        if not isinstance(multi, dict):
            raise ShipperConfigError(f"{where}multiline must be a mapping or false")
        mbad = sorted(
            set(multi)
            - {"enabled", "start", "continue", "max_lines", "max_bytes", "timeout_seconds"}
        )
        if mbad:
            raise ShipperConfigError(f"{where}multiline: unknown keys: {', '.join(mbad)}")
        mw = where + "multiline."
        multiline = MultilineConfig(
            enabled=bool(multi.get("enabled", True)),
            start=_pattern(multi["start"], mw + "start") if multi.get("start") else None,
            continue_pattern=_pattern(multi["continue"], mw + "continue")
            if multi.get("continue")
            else DEFAULT_CONTINUE_PATTERN,
            max_lines=_int(multi, "max_lines", 500, mw),
            max_bytes=_int(multi, "max_bytes", 256 * 1024, mw),
            timeout=_num(multi, "timeout_seconds", 1.0, mw),
        )
    return FileInput(
        path=str(path),
        service=service.strip(),
        host=host.strip() if host else None,
        start=start,
        multiline=multiline,
        level=level,
        timestamps=stamps,
        timezone=zone,
        max_line_bytes=_int(item, "max_line_bytes", 256 * 1024, where),
    )


def parse_config(data: Any, *, base_dir: Path = Path(".")) -> ShipperConfig:
    """Build a config from parsed YAML. Relative paths are taken from ``base_dir``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ShipperConfigError("the shipper config must be a YAML mapping")
    known = {
        "server",
        "token",
        "token_file",
        "state_dir",
        "host",
        "journal",
        "batch",
        "spool",
        "retry",
        "request_timeout",
        "heartbeat_seconds",
        "cursor_commit_seconds",
        "filters_file",
        "drain_timeout",
        "verify_tls",
        "ca_file",
        "files",
        "tail",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ShipperConfigError(f"unknown config keys: {', '.join(unknown)}")
    token = data.get("token")
    if token is not None and not isinstance(token, str):
        raise ShipperConfigError("token must be a string")
    if data.get("token_file"):
        token = read_token_file(_path(data["token_file"], "token_file", base_dir))
    journal = _section(data, "journal")
    mode = journal.get("mode", "live")
    if mode not in ("live", "file", "directory"):
        raise ShipperConfigError(f"journal.mode must be live, file or directory, got {mode!r}")
    fmt = journal.get("format", "export")
    if fmt not in ("json", "export"):
        raise ShipperConfigError(f"journal.format must be json or export, got {fmt!r}")
    start = journal.get("start", "tail")
    if start not in ("head", "tail"):
        raise ShipperConfigError(f"journal.start must be head or tail, got {start!r}")
    files = journal.get("files") or []
    if isinstance(files, str):
        files = [files]
    extra = journal.get("extra_args") or []
    if not isinstance(extra, list) or not all(isinstance(a, str) for a in extra):
        raise ShipperConfigError("journal.extra_args must be a list of strings")
    jcfg = JournalConfig(
        enabled=bool(journal.get("enabled", True)),
        mode=mode,
        format=fmt,
        files=tuple(_path(f, "journal.files[]", base_dir) for f in files),
        directory=(
            _path(journal["directory"], "journal.directory", base_dir)
            if journal.get("directory")
            else None
        ),
        follow=bool(journal.get("follow", True)),
        start=start,
        poll_interval=_num(journal, "poll_interval", 1.0, "journal."),
        journalctl=str(journal.get("journalctl", "journalctl")),
        extra_args=tuple(extra),
    )
    raw_files = data.get("files") or []
    if not isinstance(raw_files, list):
        raise ShipperConfigError("files must be a list of {path, service, ...} entries")
    file_inputs = tuple(parse_file_input(item, i, base_dir) for i, item in enumerate(raw_files))
    tail = _section(data, "tail")
    tbad = sorted(set(tail) - {"poll_interval", "rotate_wait_seconds", "partial_line_seconds"})
    if tbad:
        raise ShipperConfigError(f"tail: unknown keys: {', '.join(tbad)}")
    tcfg = TailConfig(
        poll_interval=_num(tail, "poll_interval", 0.25, "tail."),
        rotate_wait=_num(tail, "rotate_wait_seconds", 5.0, "tail."),
        partial_line_timeout=_num(tail, "partial_line_seconds", 5.0, "tail."),
    )
    batch = _section(data, "batch")
    spool = _section(data, "spool")
    retry = _section(data, "retry")
    drain_timeout = data.get("drain_timeout")
    host = data.get("host")
    if host is not None and (not isinstance(host, str) or not host.strip()):
        raise ShipperConfigError("host must be a non-empty string")
    return ShipperConfig(
        server=str(data.get("server", DEFAULT_SERVER)).rstrip("/"),
        token=token,
        state_dir=_path(data["state_dir"], "state_dir", base_dir)
        if data.get("state_dir")
        else DEFAULT_STATE_DIR,
        host=host.strip() if host else None,
        journal=jcfg,
        batch_max_events=_int(batch, "max_events", 50, "batch."),
        batch_max_seconds=_num(batch, "max_seconds", 2.0, "batch."),
        drain_max_events=_int(batch, "drain_max_events", 1000, "batch."),
        spool_max_mb=_num(spool, "max_mb", 100.0, "spool."),
        retry_initial=_num(retry, "initial_seconds", 0.5, "retry."),
        retry_max=_num(retry, "max_seconds", 60.0, "retry."),
        request_timeout=_num(data, "request_timeout", 10.0, ""),
        heartbeat_seconds=_num(data, "heartbeat_seconds", 30.0, ""),
        cursor_commit_seconds=_num(data, "cursor_commit_seconds", 1.0, ""),
        filters_file=_path(data["filters_file"], "filters_file", base_dir)
        if data.get("filters_file")
        else None,
        drain_timeout=None if drain_timeout is None else _num(data, "drain_timeout", 0, ""),
        verify_tls=bool(data.get("verify_tls", True)),
        ca_file=_path(data["ca_file"], "ca_file", base_dir) if data.get("ca_file") else None,
        files=file_inputs,
        tail=tcfg,
    ).validated()


def load_config(path: Path) -> ShipperConfig:
    """Read and validate a YAML config file; relative paths in it are relative to its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ShipperConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ShipperConfigError(f"{path} is not valid YAML: {exc}") from exc
    return parse_config(data, base_dir=path.parent)


__all__ = [
    "FileInput",
    "JournalConfig",
    "MultilineConfig",
    "ShipperConfig",
    "ShipperConfigError",
    "TailConfig",
    "load_config",
    "parse_config",
    "read_token_file",
]
