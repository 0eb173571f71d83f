"""Level and timestamp detection for plain log lines (the file tail's first line of an event).

Why heuristics and not per-format parsers: a homelab's ``/var/log`` mixes nginx, Python,
Java, Go (glog/klog), syslog-style and home-grown formats, and the tail must give each event
a sensible level and time without per-file configuration. The rules are deliberately narrow
to avoid false hits: a level is an UPPERCASE word (``ERROR``), or a lower/title-case word only
when it is *marked* as a level (``[error]``, ``<warn>``, ``level=info``, ``"level":"debug"``,
``severity=...``), or a glog/klog prefix (``E0102 15:04:05.123456``); a plain "connection
error" in a message is not a level. Only the first :data:`SCAN_CHARS` characters are looked at.

Timestamps are recognised at the start of the line (optionally inside ``[...]``), except the
common log format's ``[10/Oct/2000:13:55:36 -0700]``, which follows the client address. A
time without a UTC offset is read in the configured zone (local by default: files are
written by local processes). Formats without a year (syslog, glog) take the current year,
or the previous one when that would put them more than a day in the future (a December line
read in January).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

SCAN_CHARS = 256

LEVEL_WORDS: dict[str, str] = {
    "CRITICAL": "CRITICAL",
    "CRIT": "CRITICAL",
    "FATAL": "CRITICAL",
    "EMERG": "CRITICAL",
    "EMERGENCY": "CRITICAL",
    "ALERT": "CRITICAL",
    "PANIC": "CRITICAL",
    "SEVERE": "ERROR",
    "ERROR": "ERROR",
    "ERR": "ERROR",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "NOTICE": "INFO",
    "INFO": "INFO",
    "DEBUG": "DEBUG",
    "TRACE": "DEBUG",
}
GLOG_LEVELS = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}

_NAMES = "|".join(sorted(LEVEL_WORDS, key=len, reverse=True))
_UPPER = re.compile(rf"(?<![\w-])({_NAMES})(?![\w-])")
_MARKED = re.compile(
    rf"(?i)(?:\[|<|\blevel[=:]\s*\"?|\"level\"\s*:\s*\"|\bseverity[=:]\s*\"?|\blvl=)"
    rf"({_NAMES})(?![\w-])"
)
_GLOG = re.compile(r"([IWEF])(\d\d)(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?\s")

_ISO = re.compile(
    r"\[?(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
    r"(?:\s?(Z|[+-]\d\d(?::?\d\d)?)(?![\d:]))?"
)
_SLASHED = re.compile(r"\[?(\d{4})/(\d\d)/(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?")
_SYSLOG = re.compile(r"\[?([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?")
_CLF = re.compile(r"\[(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-]\d{4})\]")
MONTHS = {
    name: i
    for i, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def detect_level(line: str) -> str | None:
    """The DevMesh level a line announces (``ERROR``, ``WARNING``…), or None."""
    head = line[:SCAN_CHARS]
    glog = _GLOG.match(head)
    if glog is not None:
        return GLOG_LEVELS[glog.group(1)]
    upper = _UPPER.search(head)
    marked = _MARKED.search(head)
    if marked is not None and (upper is None or marked.start() < upper.start()):
        return LEVEL_WORDS[marked.group(1).upper()]
    if upper is not None:
        return LEVEL_WORDS[upper.group(1)]
    return None


def _fraction(text: str | None) -> int:
    """Digits after the decimal point as microseconds (nanoseconds are cut, not rounded)."""
    if not text:
        return 0
    return int(text[:6].ljust(6, "0"))


def _offset_seconds(zone: str) -> int:
    if zone == "Z":
        return 0
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    hours = int(digits[:2])
    minutes = int(digits[2:4]) if len(digits) >= 4 else 0
    return sign * (hours * 3600 + minutes * 60)


class TimestampParser:
    """Find a leading timestamp in a line; return epoch microseconds (or None).

    ``local`` reads times without an offset in this machine's zone, otherwise in UTC. The
    epoch seconds of the last wall-clock second seen are cached: consecutive lines of a busy
    log share their second, and the conversion is most of the cost.
    """

    def __init__(self, *, local: bool = True, now: float | None = None) -> None:
        self.local = local
        self._now = now
        self._key: tuple[int, int, int, int, int, int] | None = None
        self._seconds = 0

    def _year_now(self) -> datetime:
        return datetime.fromtimestamp(self._now if self._now is not None else time.time(), UTC)

    def _epoch(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> int | None:
        key = (y, mo, d, h, mi, s)
        if key == self._key:
            return self._seconds
        try:
            naive = datetime(y, mo, d, h, mi, s)  # zone applied below
        except ValueError:
            return None
        seconds = int(
            naive.astimezone().timestamp() if self.local else naive.replace(tzinfo=UTC).timestamp()
        )
        self._key, self._seconds = key, seconds
        return seconds

    def _guess_year(self, mo: int, d: int, h: int, mi: int, s: int) -> int:
        now = self._year_now()
        year = now.year
        try:
            if datetime(year, mo, d, h, mi, s, tzinfo=UTC) > now + timedelta(days=1):
                year -= 1
        except ValueError:  # 29 Feb in a non-leap year: the previous leap year is not it either
            pass
        return year

    def parse(self, line: str) -> int | None:
        """Epoch microseconds of the line's timestamp, or None when none is recognised."""
        head = line[:SCAN_CHARS]
        m = _ISO.match(head)
        if m is not None:
            g = m.groups()
            zone = g[7]
            if zone is None:
                seconds = self._epoch(
                    int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5])
                )
                if seconds is None:
                    return None
            else:
                try:
                    naive = datetime(
                        int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]), tzinfo=UTC
                    )
                except ValueError:
                    return None
                seconds = int(naive.timestamp()) - _offset_seconds(zone)
            return seconds * 1_000_000 + _fraction(g[6])
        m = _SLASHED.match(head)
        if m is not None:
            g = m.groups()
            seconds = self._epoch(int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]))
            return None if seconds is None else seconds * 1_000_000 + _fraction(g[6])
        m = _SYSLOG.match(head)
        if m is not None and m.group(1) in MONTHS:
            g = m.groups()
            mo, d, h, mi, s = MONTHS[g[0]], int(g[1]), int(g[2]), int(g[3]), int(g[4])
            seconds = self._epoch(self._guess_year(mo, d, h, mi, s), mo, d, h, mi, s)
            return None if seconds is None else seconds * 1_000_000 + _fraction(g[5])
        m = _GLOG.match(head)
        if m is not None:
            g = m.groups()
            mo, d, h, mi, s = int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5])
            seconds = self._epoch(self._guess_year(mo, d, h, mi, s), mo, d, h, mi, s)
            return None if seconds is None else seconds * 1_000_000 + _fraction(g[6])
        m = _CLF.search(head)
        if m is not None and m.group(2) in MONTHS:
            g = m.groups()
            try:
                naive = datetime(
                    int(g[2]), MONTHS[g[1]], int(g[0]), int(g[3]), int(g[4]), int(g[5]), tzinfo=UTC
                )
            except ValueError:
                return None
            return (int(naive.timestamp()) - _offset_seconds(g[6])) * 1_000_000
        return None


class IsoFormatter:
    """Epoch microseconds → ``2026-01-15T08:00:12.993908+00:00`` (cached per second)."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, micros: int) -> str:
        second, rest = divmod(micros, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{rest:06d}+00:00"
