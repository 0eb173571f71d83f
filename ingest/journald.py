"""journald input: run ``journalctl -o json``, map each entry to a DevMesh log object.

Why journalctl and not libsystemd bindings: journalctl is on every systemd node, needs no
compiled Python extension, and its cursors are the ones a person can use by hand
(``journalctl --after-cursor``). Its JSON has quirks this module handles:

- ``--all`` is required, or fields over 4 KiB come out as ``null``;
- a field that is not valid UTF-8 comes out as an array of byte values;
- a field set more than once in an entry comes out as an array of values;
- ``-f`` does not work with ``--file`` (systemd 252: "Failed to get journal fd"), so files
  are followed by re-running journalctl after the last cursor (see :class:`JournalReader`).
"""

from __future__ import annotations

import os
import queue
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from devmesh_core.log import get_logger
from ingest.config import JournalConfig
from ingest.filters import ReloadableFilter
from ingest.reader import EncodedChunk, ReaderThread
from ingest.reader import ReaderDone as ReaderDone  # re-exported: the shipper imports it here

log = get_logger(__name__)

SOURCE = "journald"
MAX_MESSAGE_CHARS = 1_048_576
"""The server rejects longer messages; the shipper truncates (and says so in ``meta``)."""
MAX_NAME_CHARS = 255
MAX_ID_CHARS = 128

# syslog priority → DevMesh level (the same table the server applies to numeric levels).
PRIORITY_LEVEL: tuple[str, ...] = (
    "CRITICAL",
    "CRITICAL",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "INFO",
    "INFO",
    "DEBUG",
)

# journald field → meta key. Kept short on purpose: meta is stored with every row.
META_FIELDS: tuple[tuple[str, str], ...] = (
    ("_PID", "pid"),
    ("_UID", "uid"),
    ("_COMM", "comm"),
    ("_EXE", "exe"),
    ("_TRANSPORT", "transport"),
    ("_BOOT_ID", "boot_id"),
    ("_MACHINE_ID", "machine_id"),
    ("_SYSTEMD_UNIT", "unit"),
    ("_SYSTEMD_USER_UNIT", "user_unit"),
    ("_SYSTEMD_INVOCATION_ID", "invocation_id"),
    ("SYSLOG_IDENTIFIER", "syslog_identifier"),
    ("SYSLOG_FACILITY", "syslog_facility"),
    ("CODE_FILE", "code_file"),
    ("CODE_LINE", "code_line"),
    ("CODE_FUNC", "code_func"),
    ("ERRNO", "errno"),
    ("MESSAGE_ID", "message_id"),
    ("CONTAINER_NAME", "container_name"),
    ("CONTAINER_ID", "container_id"),
)


def field_text(value: Any) -> str | None:
    """A journald JSON field value as text.

    Strings pass through; an array of ints is a binary (non-UTF-8) value, decoded with
    replacement characters; any other array is a field repeated in one entry, of which the
    first value is used.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):  # a binary field of the export format
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        if not value:
            return ""
        if all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value):
            return bytes(value).decode("utf-8", errors="replace")
        return field_text(value[0])
    return str(value)


def iso_from_micros(micros: int) -> str:
    """ISO 8601 in UTC with microseconds, e.g. ``2026-01-15T08:00:12.993908+00:00``."""
    seconds, rest = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest).isoformat()


def service_name(entry: Mapping[str, Any]) -> str | None:
    """The service an entry belongs to, as a person would name it (see :func:`pick_service`)."""
    return pick_service(
        field_text(entry.get("CONTAINER_NAME")),
        field_text(entry.get("_SYSTEMD_UNIT")),
        field_text(entry.get("_SYSTEMD_USER_UNIT")),
        field_text(entry.get("SYSLOG_IDENTIFIER")),
        field_text(entry.get("_COMM")),
    )


def pick_service(
    container: str | None,
    unit: str | None,
    user_unit: str | None,
    identifier: str | None,
    comm: str | None,
) -> str | None:
    """Choose the service name from the fields journald records.

    Order: a container's name (Docker's journald driver logs every container under
    ``docker.service``), the systemd unit without ``.service`` (``nginx``, like the rest of
    DevMesh), the user unit, then ``SYSLOG_IDENTIFIER`` and ``_COMM``. Scopes (login
    sessions, ``init.scope``) say little, so the identifier wins over them.
    """
    if container:
        return container
    if unit and not unit.endswith(".scope"):
        return unit[: -len(".service")] if unit.endswith(".service") else unit
    if user_unit and not user_unit.endswith(".scope"):
        return user_unit[: -len(".service")] if user_unit.endswith(".service") else user_unit
    return identifier or comm or unit or None


def parse_priority(value: Any) -> int:
    """``PRIORITY`` as 0-7; a missing or odd value counts as 6 (info), journald's default."""
    text = value if value.__class__ is str else field_text(value)
    if text is not None and len(text) == 1 and "0" <= text <= "7":
        return ord(text) - 48
    return 6


@dataclass(slots=True)
class Mapped:
    """An entry that passed the filter: its cursor and the JSON bytes of its log object."""

    cursor: str
    body: bytes


class EntryMapper:
    """Turn journald JSON entries into DevMesh log objects (as dicts or JSON bytes).

    ``host`` fills in entries without ``_HOSTNAME``. The mapping is deterministic: the same
    entry always gives the same object, which is what makes the server's fingerprint dedup
    absorb batches re-sent after a crash.
    """

    def __init__(self, host: str, extra_meta: Iterable[tuple[str, str]] = ()) -> None:
        self.host = host[:MAX_NAME_CHARS]
        self.meta_keys: dict[str, str] = dict(META_FIELDS + tuple(extra_meta))
        self.skipped = 0
        self._second = -1
        self._prefix = ""

    def timestamp(self, micros: int) -> str:
        """Like :func:`iso_from_micros` (always with 6 digits), cached per second: hot path."""
        second, rest = divmod(micros, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{rest:06d}+00:00"

    def to_event(self, entry: Mapping[str, Any]) -> dict[str, Any] | None:
        """The log object for one entry, or None (logged) for an entry without a cursor/time."""
        cursor = entry.get("__CURSOR")
        realtime = entry.get("__REALTIME_TIMESTAMP")
        if realtime.__class__ is not str:
            realtime = field_text(realtime)
        if cursor.__class__ is not str or not realtime or not realtime.isdigit():
            self.skipped += 1
            log.warning(
                "journal_entry_unusable",
                cursor=cursor,
                realtime=realtime,
                reason="missing __CURSOR or __REALTIME_TIMESTAMP",
            )
            return None
        meta: dict[str, Any] = {}
        keys = self.meta_keys
        for name, value in entry.items():
            key = keys.get(name)
            if key is not None and value is not None:
                meta[key] = value if value.__class__ is str else field_text(value)
        priority = parse_priority(entry.get("PRIORITY"))
        meta["priority"] = priority
        message = entry.get("MESSAGE")
        if message.__class__ is not str:
            message = field_text(message) or ""
        if len(message) > MAX_MESSAGE_CHARS:
            meta["truncated_from_chars"] = len(message)
            message = message[:MAX_MESSAGE_CHARS]
        service = pick_service(
            meta.get("container_name"),
            meta.get("unit"),
            meta.get("user_unit"),
            meta.get("syslog_identifier"),
            meta.get("comm"),
        )
        host = entry.get("_HOSTNAME")
        if host.__class__ is not str:
            host = field_text(host)
        host = host.strip()[:MAX_NAME_CHARS] if host else ""
        event: dict[str, Any] = {
            "timestamp": self.timestamp(int(realtime)),
            "source": SOURCE,
            "service": (service or "unknown")[:MAX_NAME_CHARS],
            "host": host or self.host,
            "level": PRIORITY_LEVEL[priority],
            "message": message,
            "source_id": cursor,
            "meta": meta,
        }
        if "TRACE_ID" in entry or "SPAN_ID" in entry:
            for name, key in (("TRACE_ID", "trace_id"), ("SPAN_ID", "span_id")):
                value = (field_text(entry.get(name)) or "").strip()
                if value and len(value) <= MAX_ID_CHARS:
                    event[key] = value
        return event


class Chunk(EncodedChunk[str]):
    """What the journal reader hands the sender: an :class:`EncodedChunk` whose positions
    are journald cursors (``tail_cursor``: the cursor of the last entry read)."""

    __slots__ = ()


def source_args(cfg: JournalConfig) -> list[str]:
    """journalctl arguments naming the journal to read."""
    if cfg.mode == "file":
        args: list[str] = []
        for path in cfg.files:
            args += ["--file", str(path)]
        return args
    if cfg.mode == "directory":
        return ["--directory", str(cfg.directory)]
    return []


def build_command(cfg: JournalConfig, after_cursor: str | None, *, follow: bool) -> list[str]:
    """The journalctl command line for one run.

    ``--all`` keeps fields over 4 KiB (otherwise printed as null); ``--no-tail`` makes ``-f``
    print everything after the cursor, not the last 10. No ``-q``: it would hide the warning
    that the user cannot read the system journal (a shipper outside ``systemd-journal``
    would then ship only its own entries, silently).
    """
    cmd = [cfg.journalctl, "-o", cfg.format, "--all", "--no-pager", *source_args(cfg)]
    if after_cursor is not None:
        cmd += ["--after-cursor", after_cursor]
    if follow:
        cmd += ["-f", "--no-tail"]
    cmd += list(cfg.extra_args)
    return cmd


def tail_cursor(cfg: JournalConfig) -> str | None:
    """The cursor of the newest entry now in the journal (None when it is empty)."""
    cmd = [
        cfg.journalctl,
        "-o",
        "json",
        "--no-pager",
        *source_args(cfg),
        "-n",
        "1",
        *cfg.extra_args,
    ]
    result = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"journalctl failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
        )
    for line in result.stdout.splitlines():
        if line.strip():
            cursor = orjson.loads(line).get("__CURSOR")
            return cursor if isinstance(cursor, str) else None
    return None


class JournalReader(ReaderThread[Chunk | ReaderDone]):
    """A thread that runs journalctl and puts :class:`Chunk` objects on a bounded queue.

    Reading, parsing, filtering, mapping and JSON-encoding all happen here, so the sender
    thread only joins bytes and does HTTP: the two overlap, and the bounded queue makes a slow
    server slow the reader down instead of filling memory (journald keeps the backlog).
    """

    READ_BYTES = 128 * 1024

    def __init__(
        self,
        cfg: JournalConfig,
        after_cursor: str | None,
        mapper: EntryMapper,
        filters: ReloadableFilter,
        out: queue.Queue[Chunk | ReaderDone],
        *,
        on_line_error: Callable[[bytes, Exception], None] | None = None,
    ) -> None:
        super().__init__(out, name="journal-reader")
        self.cfg = cfg
        self.cursor = after_cursor
        self.mapper = mapper
        self.filters = filters
        self._proc: subprocess.Popen[bytes] | None = None
        self._on_line_error = on_line_error
        self.bad_lines = 0
        self.runs = 0

    def _interrupt(self) -> None:
        """Stop journalctl, so a read blocked on its output returns."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def _run(self) -> None:
        cfg = self.cfg
        follow_native = cfg.follow and cfg.mode != "file"
        try:
            if self.cursor is None and cfg.start == "tail":
                start = tail_cursor(cfg)
                if start is not None:
                    self.cursor = start
                    self._put(Chunk(tail_cursor=start))
            while not self._stop.is_set():
                error = self._run_once(follow_native)
                if self._stop.is_set():
                    break
                if error is not None:
                    rejected = "cursor" in error.lower() and self.cursor is not None
                    if rejected or not cfg.follow:
                        self._put(ReaderDone(error=error, cursor_rejected=rejected))
                        return
                    log.error("journalctl_failed", error=error, retry_in=cfg.poll_interval * 5)
                    self._stop.wait(cfg.poll_interval * 5)
                    continue
                if not cfg.follow:
                    self._put(ReaderDone())
                    return
                # Files (or a journalctl -f that exited): poll again after the last cursor.
                self._stop.wait(cfg.poll_interval)
        except Exception as exc:  # surfaced to the sender, which decides
            log.exception("journal_reader_crashed")
            self._put(ReaderDone(error=f"reader crashed: {exc!r}"))

    def _run_once(self, follow: bool) -> str | None:
        cmd = build_command(self.cfg, self.cursor, follow=follow)
        self.runs += 1
        try:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            return f"cannot run {cmd[0]}: {exc.strerror or exc}"
        self._proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        errors: list[bytes] = []
        drain = threading.Thread(
            target=_drain, args=(proc.stderr, errors), daemon=True, name="journalctl-stderr"
        )
        drain.start()
        fd = proc.stdout.fileno()
        rest = b""
        try:
            clock = time.perf_counter
            while not self._stop.is_set():
                t0 = clock()
                data = os.read(fd, self.READ_BYTES)
                t1 = clock()
                self.read_seconds += t1 - t0
                if not data:
                    break
                if rest:
                    data = rest + data
                chunk, used = self._parse(data)
                rest = data[used:]
                if chunk.lines:
                    self.parse_seconds += clock() - t1
                    if not self._put(chunk):
                        break
        finally:
            if proc.poll() is None and self._stop.is_set():
                proc.terminate()
            code = proc.wait()
            drain.join(timeout=5)
            proc.stdout.close()
            self._proc = None
        if self._stop.is_set():
            return None
        if rest.strip():  # journalctl always ends entries; a tail means it died mid-write
            log.warning("journalctl_partial_line", bytes=len(rest))
        if code != 0:
            text = b"".join(errors).decode("utf-8", errors="replace").strip()
            return f"journalctl exited with {code}: {text or 'no message'}"
        return None

    def _parse(self, data: bytes) -> tuple[Chunk, int]:
        """Parse the complete entries at the start of ``data``; return them and bytes used."""
        if self.cfg.format == "export":
            entries, used = parse_export(data)
        else:
            used = data.rfind(b"\n") + 1
            entries = self._json_entries(data[:used])
        chunk = Chunk()
        rules = self.filters.rules
        noop = rules.is_noop
        mapper = self.mapper
        dumps = orjson.dumps
        parts: list[bytes] = []
        offsets = chunk.offsets
        cursors = chunk.cursors
        position = 0
        for entry in entries:
            chunk.lines += 1
            cursor = entry.get("__CURSOR")
            if cursor.__class__ is not str:
                self.bad_lines += 1
                log.warning("journal_entry_without_cursor", fields=sorted(entry)[:20])
                continue
            chunk.tail_cursor = cursor
            event = mapper.to_event(entry)
            if event is None:
                continue
            if not noop:
                meta = event["meta"]
                if not rules.keep(
                    meta.get("unit"),
                    meta.get("syslog_identifier"),
                    meta["priority"],
                    event["message"],
                    event["service"],
                ):
                    chunk.filtered += 1
                    continue
            # Sorted keys: the same entry gives the same bytes whatever order journalctl
            # printed its fields in (JSON and export differ), e.g. in the spool.
            encoded = dumps(event, option=orjson.OPT_SORT_KEYS)
            parts.append(encoded)
            position += len(encoded) + 1
            offsets.append(position)
            cursors.append(cursor)
        chunk.body = b",".join(parts)
        self.lines += chunk.lines
        if chunk.tail_cursor is not None:
            self.cursor = chunk.tail_cursor
        return chunk, used

    def _json_entries(self, data: bytes) -> list[dict[str, Any]]:
        entries = []
        loads = orjson.loads
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                entry = loads(line)
                if not isinstance(entry, dict):
                    raise TypeError(f"expected an object, got {type(entry).__name__}")
            except (orjson.JSONDecodeError, TypeError) as exc:
                self.bad_lines += 1
                if self._on_line_error is not None:
                    self._on_line_error(line, exc)
                else:
                    log.warning("journal_line_unparsable", error=str(exc), line=line[:200])
                continue
            entries.append(entry)
        return entries


def parse_export(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Parse complete entries of the journal export format; return them and bytes consumed.

    Text fields are ``KEY=value`` lines; a field that is not printable UTF-8 is ``KEY``, a
    newline, a 64-bit little-endian length, the raw bytes and a newline; a blank line ends
    an entry. Fast path: an entry whose text up to the first blank line is UTF-8 with an
    ``=`` on every line is text only (a binary field's ``KEY`` line always comes before its
    data, so it would show up there). Other entries, and entries repeating a field, take the
    exact, slower path, where a repeated field keeps its first value, as :func:`field_text`
    does for JSON arrays.
    """
    entries: list[dict[str, Any]] = []
    pos = 0
    size = len(data)
    while pos < size:
        end = data.find(b"\n\n", pos)
        if end < 0:
            break
        try:
            lines = data[pos:end].decode("utf-8").split("\n")
            # ValueError for a line without "=" (a binary field's name line).
            fields: dict[str, Any] = dict([line.split("=", 1) for line in lines])
            if len(fields) == len(lines):  # otherwise a field is repeated: exact path
                entries.append(fields)
                pos = end + 2
                continue
        except (UnicodeDecodeError, ValueError):
            pass
        parsed = _export_entry_exact(data, pos)
        if parsed is None:
            break
        fields, pos = parsed
        entries.append(fields)
    return entries, pos


def _export_entry_exact(data: bytes, pos: int) -> tuple[dict[str, Any], int] | None:
    """One export-format entry starting at ``pos``, binary fields included (None: incomplete)."""
    entry: dict[str, Any] = {}
    size = len(data)
    while True:
        newline = data.find(b"\n", pos)
        if newline < 0:
            return None
        if newline == pos:
            return entry, pos + 1
        line = data[pos:newline]
        equals = line.find(b"=")
        if equals >= 0:
            key = line[:equals].decode("utf-8", errors="replace")
            value: str | bytes = line[equals + 1 :].decode("utf-8", errors="replace")
            pos = newline + 1
        else:
            key = line.decode("utf-8", errors="replace")
            if newline + 9 > size:
                return None
            length = int.from_bytes(data[newline + 1 : newline + 9], "little")
            start = newline + 9
            if start + length + 1 > size:
                return None
            value = data[start : start + length]
            pos = start + length + 1
        entry.setdefault(key, value)


def _drain(stream: Any, sink: list[bytes]) -> None:
    """Read journalctl's stderr so it never blocks on a full pipe; log what it says (e.g. "you
    are not seeing messages from other users") and keep the first 64 KiB for the exit report."""
    size = 0
    for line in stream:
        if size < 65536:
            sink.append(line)
            size += len(line)
            text = line.decode("utf-8", errors="replace").strip()
            if text:
                log.warning("journalctl_says", message=text[:500])
    stream.close()


# -- journal export format (to make real journal files for tests and benches) ------------------


def export_entry(fields: Mapping[str, str | bytes]) -> bytes:
    """One entry in the journal export format (``KEY=value`` lines and a blank line).

    Values with a newline or non-UTF-8 bytes use the binary form (name, newline, 64-bit
    little-endian length, data), as ``journalctl -o export`` writes them.
    """
    out = bytearray()
    for key, value in fields.items():
        raw = value.encode("utf-8") if isinstance(value, str) else value
        binary = isinstance(value, bytes) or b"\n" in raw
        if binary:
            out += key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += key.encode() + b"=" + raw + b"\n"
    out += b"\n"
    return bytes(out)


def write_journal(
    output: Path,
    entries: Iterable[Mapping[str, str | bytes]],
    *,
    remote: str = "/lib/systemd/systemd-journal-remote",
) -> None:
    """Append entries to a real journal file with ``systemd-journal-remote -o output -``.

    The result has real cursors, as on a live node. journal-remote rotates a full file to
    ``name@….journal`` next to it, so read the folder with ``--directory`` (or glob the files).
    """
    proc = subprocess.Popen(
        [remote, "-o", str(output), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stderr is not None
    buffer = bytearray()
    for entry in entries:
        buffer += export_entry(entry)
        if len(buffer) > 1 << 20:
            proc.stdin.write(buffer)
            buffer.clear()
    proc.stdin.write(buffer)
    proc.stdin.close()
    err = proc.stderr.read()
    if proc.wait() != 0:
        raise RuntimeError(f"systemd-journal-remote failed: {err.decode(errors='replace')}")
