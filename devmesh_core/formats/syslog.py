"""Syslog lines (RFC 5424 and RFC 3164, as rsyslog/syslog-ng forward them) → log objects.

Timestamps without a zone (RFC 3164's ``Mmm dd hh:mm:ss``) are taken as UTC, and their
missing year is the receiver's current year (or the previous one when that would put the
line more than a day in the future, as around New Year).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
)

_PRI = re.compile(r"<(\d{1,3})>")
_RFC5424 = re.compile(
    r"(?P<version>[1-9]\d{0,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<rest>.*)",
    re.DOTALL,
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_BSD_TS = re.compile(r"(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<time>\d{2}:\d{2}:\d{2}) ")
_ISO_TS = re.compile(
    r"(?P<iso>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?) "
)
_TAG = re.compile(r"(?P<tag>[^\s\[:]{1,64})(?:\[(?P<pid>[^\]\s]{1,32})\])?: ?")
_SD_ELEMENT = re.compile(r'\[(?P<id>[^\s\]=]+)(?P<params>(?: [^\s=\]]+="(?:[^"\\]|\\.)*")*)\]')
_SD_PARAM = re.compile(r' (?P<name>[^\s=\]]+)="(?P<value>(?:[^"\\]|\\.)*)"')


class SyslogError(ValueError):
    """The line is not syslog in a form DevMesh reads; the message says what is wrong."""


def parse(line: str, *, peer: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Parse one syslog line into a log object (for ``validate_events``).

    ``peer`` (the sender's address) stands in for a missing host name.
    """
    now = now or datetime.now(UTC)
    line = line.rstrip("\r\n\x00")
    match = _PRI.match(line)
    if not match:
        raise SyslogError("missing <PRI> at the start of the line")
    pri = int(match.group(1))
    if pri > 191:
        raise SyslogError(f"PRI {pri} is out of range (0-191)")
    facility, severity = divmod(pri, 8)
    body = line[match.end() :]
    meta: dict[str, Any] = {"facility": FACILITIES[facility]}
    v5424 = _RFC5424.match(body)
    item = _rfc5424(v5424, meta) if v5424 else _rfc3164(body, meta, now)
    if not item.get("host"):
        item["host"] = peer or "unknown"
    item.update(level=severity, source="syslog", meta=meta)
    return item


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def _rfc5424(m: re.Match[str], meta: dict[str, Any]) -> dict[str, Any]:
    ts = _nil(m.group("ts"))
    try:
        timestamp = datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None
    except ValueError as exc:
        raise SyslogError(f"RFC 5424 timestamp {ts!r} is not RFC 3339") from exc
    rest = m.group("rest")
    if rest.startswith("-"):
        msg = rest[1:]
    elif rest.startswith("["):
        sd: dict[str, dict[str, str]] = {}
        pos = 0
        while pos < len(rest) and rest[pos] == "[":
            element = _SD_ELEMENT.match(rest, pos)
            if element is None:
                raise SyslogError("malformed STRUCTURED-DATA")
            sd[element.group("id")] = {
                p.group("name"): re.sub(r"\\([\"\\\]])", r"\1", p.group("value"))
                for p in _SD_PARAM.finditer(element.group("params"))
            }
            pos = element.end()
        meta["structured_data"] = sd
        msg = rest[pos:]
    else:
        raise SyslogError("RFC 5424 line without STRUCTURED-DATA ('-' or [...])")
    if msg.startswith(" "):
        msg = msg[1:]
    msg = msg.removeprefix("\ufeff")
    procid, msgid = _nil(m.group("procid")), _nil(m.group("msgid"))
    if procid:
        meta["procid"] = procid
    if msgid:
        meta["msgid"] = msgid
    return {
        "timestamp": timestamp,
        "host": _nil(m.group("host")),
        "service": _nil(m.group("app")) or "syslog",
        "message": msg,
    }


def _rfc3164(body: str, meta: dict[str, Any], now: datetime) -> dict[str, Any]:
    timestamp: datetime | None = None
    bsd = _BSD_TS.match(body)
    iso = None if bsd else _ISO_TS.match(body)
    if bsd:
        month = _MONTHS.get(bsd.group("mon"))
        if month is None:
            raise SyslogError(f"unknown month {bsd.group('mon')!r}")
        hh, mm, ss = (int(x) for x in bsd.group("time").split(":"))
        try:
            timestamp = datetime(now.year, month, int(bsd.group("day")), hh, mm, ss, tzinfo=UTC)
        except ValueError as exc:
            raise SyslogError(f"bad RFC 3164 timestamp: {exc}") from exc
        if timestamp - now > timedelta(days=1):
            timestamp = timestamp.replace(year=now.year - 1)
        body = body[bsd.end() :]
    elif iso:
        timestamp = datetime.fromisoformat(iso.group("iso").replace("Z", "+00:00"))
        body = body[iso.end() :]
    host: str | None = None
    if timestamp is not None:
        # After a timestamp comes the host name, unless the sender left it out and the next
        # word is already the tag ("sshd[42]: ...").
        first, _, after = body.partition(" ")
        if first and not _TAG.fullmatch(first + " ") and not first.endswith(":"):
            host, body = first, after
    tag = _TAG.match(body)
    service = "syslog"
    if tag:
        service = tag.group("tag")
        if tag.group("pid"):
            meta["pid"] = tag.group("pid")
        body = body[tag.end() :]
    return {"timestamp": timestamp or now, "host": host, "service": service, "message": body}
