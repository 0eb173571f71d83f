"""Level and timestamp detection of the file tail, on lines in the formats seen in /var/log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ingest.tail_detect import IsoFormatter, TimestampParser, detect_level


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("2024-05-01 10:00:00,123 ERROR [main] db.pool: connection refused", "ERROR"),
        ("2024-05-01T10:00:00Z WARN  retrying", "WARNING"),
        ("2024/05/01 10:00:00 [error] 1234#0: *5 open() failed", "ERROR"),
        ("2024/05/01 10:00:00 [warn] 1234#0: low disk", "WARNING"),
        ('time="2024-05-01T10:00:00Z" level=warning msg="slow"', "WARNING"),
        ('{"ts":"2024-05-01T10:00:00Z","level":"debug","msg":"x"}', "DEBUG"),
        ("E0501 10:00:00.123456    7 controller.go:42] sync failed", "ERROR"),
        ("W0501 10:00:00.123456    7 controller.go:42] slow", "WARNING"),
        ("F0501 10:00:00.123456    7 main.go:1] cannot start", "CRITICAL"),
        ("I0501 10:00:00.123456    7 main.go:1] started", "INFO"),
        ("May  1 10:00:00 host app[1]: FATAL out of memory", "CRITICAL"),
        ("CRITICAL disk failed", "CRITICAL"),
        ("SEVERE: java.util.logging says so", "ERROR"),
        ("2024-05-01 10:00:00 INFO request failed with ERROR code 5", "INFO"),
        ("<notice> something", "INFO"),
        ("2024-05-01 10:00:00 TRACE entering", "DEBUG"),
    ],
)
def test_levels_in_common_formats(line: str, level: str) -> None:
    assert detect_level(line) == level


@pytest.mark.parametrize(
    "line",
    [
        "a connection error occurred",
        "Error-prone code path",
        "user INFORMATION updated",
        "warning: lowercase without a marker",
        "Eagle 0501 flew",
        "",
    ],
)
def test_no_level_without_a_level_word(line: str) -> None:
    assert detect_level(line) is None


def micros(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def test_iso_8601_variants() -> None:
    utc = TimestampParser(local=False)
    assert utc.parse("2024-05-01T10:00:00Z started") == micros(
        datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    )
    assert utc.parse("2024-05-01T10:00:00.123456789+02:00 x") == micros(
        datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    )
    assert utc.parse("2024-05-01 10:00:00,123 INFO python logging") == micros(
        datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)
    )
    assert utc.parse("[2024-05-01 10:00:00 -0700] bracketed") == micros(
        datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone(timedelta(hours=-7)))
    )
    assert utc.parse("2024-02-30 10:00:00 not a date") is None


def test_naive_times_are_local_unless_utc() -> None:
    local = TimestampParser(local=True)
    expected = micros(datetime(2024, 5, 1, 10, 0, 0).astimezone())
    assert local.parse("2024-05-01 10:00:00 INFO x") == expected
    assert local.parse("2024/05/01 10:00:00 [error] nginx") == expected


def test_nginx_error_log_and_common_log_format() -> None:
    utc = TimestampParser(local=False)
    assert utc.parse("2024/05/01 10:00:00 [error] 1#0: x") == micros(
        datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    )
    clf = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326'
    assert utc.parse(clf) == micros(
        datetime(2000, 10, 10, 13, 55, 36, tzinfo=timezone(timedelta(hours=-7)))
    )


def test_syslog_and_glog_take_the_current_year_or_the_previous_one() -> None:
    june = datetime(2025, 6, 1, 12, 0, tzinfo=UTC).timestamp()
    parser = TimestampParser(local=False, now=june)
    assert parser.parse("May  1 10:00:00 host sshd[1]: Accepted") == micros(
        datetime(2025, 5, 1, 10, 0, 0, tzinfo=UTC)
    )
    assert parser.parse("I0501 10:00:00.250000 1 main.go:1] started") == micros(
        datetime(2025, 5, 1, 10, 0, 0, 250000, tzinfo=UTC)
    )
    january = datetime(2025, 1, 2, tzinfo=UTC).timestamp()
    parser = TimestampParser(local=False, now=january)
    assert parser.parse("Dec 31 23:59:59 host cron[1]: x") == micros(
        datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)
    )


def test_no_timestamp() -> None:
    parser = TimestampParser()
    for line in (
        "plain text",
        "  at com.example.Foo(Foo.java:1)",
        "10:00:00 only a time",
        "Mayday 1 10:00:00",
    ):
        assert parser.parse(line) is None


def test_iso_formatter_round_trips() -> None:
    fmt = IsoFormatter()
    value = micros(datetime(2024, 5, 1, 10, 0, 0, 42, tzinfo=UTC))
    assert fmt(value) == "2024-05-01T10:00:00.000042+00:00"
    assert datetime.fromisoformat(fmt(value + 1_000_000)) == datetime(
        2024, 5, 1, 10, 0, 1, 42, tzinfo=UTC
    )
