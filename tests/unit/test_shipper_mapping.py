"""journald entry → DevMesh log object: fields, quirks of journalctl's JSON and export output."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from devmesh_core.models import LogEvent
from ingest.config import JournalConfig
from ingest.journald import (
    MAX_MESSAGE_CHARS,
    EntryMapper,
    build_command,
    export_entry,
    field_text,
    iso_from_micros,
    parse_export,
    service_name,
)

CURSOR = "s=90bbd8add84642b2be959bbd4e1aba06;i=1;b=0123;m=1;t=660f2a72021f7;x=40957024880fa3a0"


def entry(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "__CURSOR": CURSOR,
        "__REALTIME_TIMESTAMP": "1760000000123456",
        "__MONOTONIC_TIMESTAMP": "12345",
        "_BOOT_ID": "0123456789abcdef0123456789abcdef",
        "_HOSTNAME": "node1",
        "_SYSTEMD_UNIT": "nginx.service",
        "SYSLOG_IDENTIFIER": "nginx",
        "_PID": "812",
        "_COMM": "nginx",
        "_TRANSPORT": "stdout",
        "SYSLOG_FACILITY": "3",
        "PRIORITY": "3",
        "MESSAGE": "upstream timed out",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def test_field_text_handles_strings_bytes_arrays_and_repeats() -> None:
    assert field_text("x") == "x"
    assert field_text(None) is None
    assert field_text(list(b"caf\xc3\xa9")) == "café"
    assert field_text(list(b"bad \xff byte")) == "bad \ufffd byte"
    assert field_text(b"raw \xfe") == "raw \ufffd"
    assert field_text(["first", "second"]) == "first"  # a field set twice in one entry
    assert field_text([]) == ""
    assert field_text(7) == "7"


def test_maps_the_core_fields() -> None:
    event = EntryMapper("fallback").to_event(entry())
    assert event is not None
    assert event["timestamp"] == "2025-10-09T08:53:20.123456+00:00"
    assert event["source"] == "journald"
    assert event["service"] == "nginx"
    assert event["host"] == "node1"
    assert event["level"] == "ERROR"
    assert event["message"] == "upstream timed out"
    assert event["source_id"] == CURSOR
    assert event["meta"] == {
        "priority": 3,
        "pid": "812",
        "comm": "nginx",
        "transport": "stdout",
        "boot_id": "0123456789abcdef0123456789abcdef",
        "unit": "nginx.service",
        "syslog_identifier": "nginx",
        "syslog_facility": "3",
    }
    # The server accepts it as is, and reads the same instant.
    stored = LogEvent.model_validate(event)
    assert stored.timestamp == datetime(2025, 10, 9, 8, 53, 20, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("priority", "level"),
    [
        ("0", "CRITICAL"),
        ("1", "CRITICAL"),
        ("2", "CRITICAL"),
        ("3", "ERROR"),
        ("4", "WARNING"),
        ("5", "INFO"),
        ("6", "INFO"),
        ("7", "DEBUG"),
        (None, "INFO"),
        ("garbage", "INFO"),
    ],
)
def test_priority_to_level(priority: str | None, level: str) -> None:
    event = EntryMapper("h").to_event(entry(PRIORITY=priority))
    assert event is not None and event["level"] == level
    assert LogEvent.model_validate(event).level.value == level


def test_timestamp_is_exact_across_seconds_and_zero_micros() -> None:
    mapper = EntryMapper("h")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for micros in (
        0,
        1_760_000_000_000_000,
        1_760_000_000_999_999,
        1_760_000_001_000_001,
        1_760_000_000_000_002,
    ):
        got = mapper.timestamp(micros)
        assert datetime.fromisoformat(got) == epoch + timedelta(microseconds=micros)
        assert datetime.fromisoformat(iso_from_micros(micros)) == datetime.fromisoformat(got)
        assert got.endswith(f".{micros % 1_000_000:06d}+00:00")


@pytest.mark.parametrize(
    ("fields", "service"),
    [
        ({}, "nginx"),
        ({"_SYSTEMD_UNIT": "getty@tty1.service"}, "getty@tty1"),
        ({"_SYSTEMD_UNIT": "backup.timer"}, "backup.timer"),
        ({"_SYSTEMD_UNIT": "session-3.scope", "SYSLOG_IDENTIFIER": "sshd"}, "sshd"),
        ({"_SYSTEMD_UNIT": None, "SYSLOG_IDENTIFIER": "kernel"}, "kernel"),
        ({"_SYSTEMD_UNIT": None, "SYSLOG_IDENTIFIER": None, "_COMM": "cron"}, "cron"),
        ({"_SYSTEMD_UNIT": None, "_SYSTEMD_USER_UNIT": "syncthing.service"}, "syncthing"),
        ({"_SYSTEMD_UNIT": "docker.service", "CONTAINER_NAME": "grafana"}, "grafana"),
        ({"_SYSTEMD_UNIT": None, "SYSLOG_IDENTIFIER": None, "_COMM": None}, "unknown"),
    ],
)
def test_service_name(fields: dict[str, Any], service: str) -> None:
    event = EntryMapper("h").to_event(entry(**fields))
    assert event is not None and event["service"] == service
    if service != "unknown":
        assert service_name(entry(**fields)) == service


def test_binary_and_repeated_message() -> None:
    mapper = EntryMapper("h")
    binary = mapper.to_event(entry(MESSAGE=list(b"bin\x01ary \xff end")))
    assert binary is not None and binary["message"] == "bin\x01ary \ufffd end"
    repeated = mapper.to_event(entry(MESSAGE=["one", "two"]))
    assert repeated is not None and repeated["message"] == "one"
    LogEvent.model_validate(binary)


def test_missing_message_and_host_fallback() -> None:
    event = EntryMapper("the-node").to_event(entry(MESSAGE=None, _HOSTNAME=None))
    assert event is not None
    assert event["message"] == ""
    assert event["host"] == "the-node"
    blank = EntryMapper("the-node").to_event(entry(_HOSTNAME="   "))
    assert blank is not None and blank["host"] == "the-node"


def test_long_message_is_truncated_and_said_so() -> None:
    event = EntryMapper("h").to_event(entry(MESSAGE="x" * (MAX_MESSAGE_CHARS + 10)))
    assert event is not None
    assert len(event["message"]) == MAX_MESSAGE_CHARS
    assert event["meta"]["truncated_from_chars"] == MAX_MESSAGE_CHARS + 10
    LogEvent.model_validate(event)


def test_long_names_are_cut_to_what_the_server_takes() -> None:
    event = EntryMapper("h").to_event(entry(_HOSTNAME="h" * 300, _SYSTEMD_UNIT="u" * 300))
    assert event is not None
    assert len(event["host"]) == 255 and len(event["service"]) == 255
    LogEvent.model_validate(event)


def test_trace_ids_are_mapped_when_usable() -> None:
    event = EntryMapper("h").to_event(entry(TRACE_ID=" abc123 ", SPAN_ID="s" * 200))
    assert event is not None
    assert event["trace_id"] == "abc123"
    assert "span_id" not in event


def test_entry_without_cursor_or_time_is_skipped() -> None:
    mapper = EntryMapper("h")
    assert mapper.to_event(entry(__CURSOR=None)) is None
    assert mapper.to_event(entry(__REALTIME_TIMESTAMP="soon")) is None
    assert mapper.skipped == 2


def test_mapping_is_deterministic() -> None:
    """The server's dedup relies on re-read entries giving byte-identical objects."""
    first = orjson.dumps(EntryMapper("a").to_event(entry()))
    again = orjson.dumps(EntryMapper("a").to_event(entry()))
    assert first == again
    one = LogEvent.model_validate_json(first)
    assert one.fingerprint == LogEvent.model_validate_json(again).fingerprint


def _export_bytes(fields: Mapping[str, str | bytes]) -> bytes:
    return export_entry(fields)


def test_parse_export_text_binary_and_incomplete() -> None:
    text = {"__CURSOR": "c1", "__REALTIME_TIMESTAMP": "1", "MESSAGE": "a=b c", "PRIORITY": "6"}
    binary: dict[str, str | bytes] = {
        "__CURSOR": "c2",
        "__REALTIME_TIMESTAMP": "2",
        "MESSAGE": b"x\n\ny \xff",
        "_PID": "4",
    }
    data = _export_bytes(text) + _export_bytes(binary)
    entries, used = parse_export(data)
    assert used == len(data)
    assert entries[0] == text
    assert entries[1]["MESSAGE"] == b"x\n\ny \xff" and entries[1]["_PID"] == "4"
    # A cut in the middle of an entry (the pipe gave part of it): only whole entries count.
    for cut in range(1, len(data)):
        got, used = parse_export(data[:cut])
        assert used <= cut
        assert got == entries[: len(got)]
        rest, _ = parse_export(data[used:])
        assert got + rest == entries


def test_parse_export_length_with_newline_bytes_and_repeats() -> None:
    # A binary length whose first byte is "\n" (10) puts "\n\n" right after the name.
    data = (
        b"__CURSOR=c\nMESSAGE\n" + struct.pack("<Q", 10) + b"0123456789\n" + b"TAG=one\nTAG=two\n\n"
    )
    entries, used = parse_export(data)
    assert used == len(data)
    assert entries == [{"__CURSOR": "c", "MESSAGE": b"0123456789", "TAG": "one"}]
    repeated, _ = parse_export(b"__CURSOR=c\nTAG=one\nTAG=two\n\n")
    assert repeated == [{"__CURSOR": "c", "TAG": "one"}]


def test_export_and_json_give_the_same_object() -> None:
    mapper = EntryMapper("h")
    json_form = entry(MESSAGE=list(b"caf\xc3\xa9 \xff"))
    fields: dict[str, str | bytes] = {k: v for k, v in entry().items() if k != "MESSAGE"}
    fields["MESSAGE"] = b"caf\xc3\xa9 \xff"
    export_form, _ = parse_export(_export_bytes(fields))
    assert orjson.dumps(mapper.to_event(json_form)) == orjson.dumps(mapper.to_event(export_form[0]))


def test_build_command() -> None:
    live = build_command(JournalConfig(), "C", follow=True)
    assert live[:2] == ["journalctl", "-o"] and live[2] == "export"  # the default
    assert "--all" in live  # without it fields over 4 KiB come out as null
    assert "-q" not in live  # it would hide "you cannot see the system journal"
    assert live[live.index("--after-cursor") + 1] == "C"
    assert "-f" in live and "--no-tail" in live
    files = build_command(
        JournalConfig(mode="file", files=(Path("/a.journal"), Path("/b.journal")), format="json"),
        None,
        follow=False,
    )
    assert files[2] == "json"
    assert files.count("--file") == 2 and "-f" not in files and "--after-cursor" not in files
    directory = build_command(
        JournalConfig(mode="directory", directory=Path("/j")), None, follow=True
    )
    assert directory[directory.index("--directory") + 1] == "/j"
