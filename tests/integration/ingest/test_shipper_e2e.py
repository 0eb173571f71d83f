"""The shipper end to end: real journal files, real ``devmesh serve``, shipper subprocesses."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.journald import EntryMapper, parse_export
from tests.integration.ingest.conftest import (
    ROOT,
    Journal,
    Server,
    assert_exactly_once,
    make_entries,
    ship_once,
    shipper_args,
    shipper_env,
    start_shipper,
    wait_for,
)


def special_entries() -> list[dict[str, str | bytes]]:
    """The quirks: binary (non-UTF-8) and multi-line messages, a message over 4 KiB (journalctl
    prints it as null without --all), no hostname, a container under docker.service."""
    base = make_entries(1000, 5)
    base[0]["MESSAGE"] = b"binary \xff\xfe tail"
    base[1]["MESSAGE"] = "first line\nsecond line"
    base[2]["MESSAGE"] = "L" * 5000
    del base[3]["_HOSTNAME"]
    base[4].update({"_SYSTEMD_UNIT": "docker.service", "CONTAINER_NAME": "grafana"})
    return base


@pytest.mark.parametrize("fmt", ["json", "export"])
def test_ships_a_real_journal_once_and_resumes_after_the_cursor(
    tmp_path: Path, journal: Journal, server: Server, fmt: str
) -> None:
    journal.write(make_entries(0, 60) + special_entries())
    state = tmp_path / "state"
    code, stats = ship_once(
        server,
        state,
        journal,
        "--format",
        fmt,
        "--batch-size",
        "25",
        "--host",
        "shipper-node-" + fmt,
    )
    assert code == 0, stats
    assert stats["read"] == 65 and stats["accepted"] == 65 and stats["rejected"] == 0
    stored = server.journald_events(journal)
    assert_exactly_once(journal, stored)

    messages = {e["message"]: e for e in stored}
    assert "binary \ufffd\ufffd tail" in messages  # invalid UTF-8, replaced
    assert "first line\nsecond line" in messages
    assert "L" * 5000 in messages  # over 4 KiB: would be null without --all
    assert messages["cron entry 1003"]["host"] == "shipper-node-" + fmt  # no _HOSTNAME
    assert messages["L" * 5000]["service"] == "sshd"
    assert any(e["service"] == "grafana" for e in stored)  # CONTAINER_NAME
    first = messages["nginx entry 0"]
    assert first["service"] == "nginx" and first["host"] == "node1"
    assert first["level"] == "CRITICAL" and first["meta"]["priority"] == 0
    assert first["meta"]["unit"] == "nginx.service" and first["meta"]["pid"] == "100"
    assert first["timestamp"] == "2025-10-09T08:53:20.000000Z"
    assert messages["nginx entry 4"]["level"] == "WARNING"
    assert messages["postgresql entry 5"]["level"] == "INFO"

    online = [
        e
        for e in server.events()
        if e["event_type"] == "node_online" and e["host"] == "shipper-node-" + fmt
    ]
    assert len(online) == 1

    # A second run reads only what is new; a third reads nothing.
    journal.write(make_entries(60, 30))
    code, stats = ship_once(server, state, journal, "--format", fmt)
    assert code == 0 and stats["read"] == 30 and stats["accepted"] == 30
    code, stats = ship_once(server, state, journal, "--format", fmt)
    assert code == 0 and stats["read"] == 0
    assert_exactly_once(journal, server.journald_events(journal))


def test_json_and_export_map_a_real_journal_identically(journal: Journal) -> None:
    journal.write(make_entries(0, 40) + special_entries())
    mapper = EntryMapper("fallback")
    json_out = subprocess.run(
        ["journalctl", "--directory", str(journal.directory), "-o", "json", "--all"],
        capture_output=True,
        check=True,
    ).stdout
    export_out = subprocess.run(
        ["journalctl", "--directory", str(journal.directory), "-o", "export", "--all"],
        capture_output=True,
        check=True,
    ).stdout
    sort = orjson.OPT_SORT_KEYS
    from_json = [
        orjson.dumps(mapper.to_event(orjson.loads(line)), option=sort)
        for line in json_out.splitlines()
    ]
    entries, used = parse_export(export_out)
    assert used == len(export_out)
    from_export = [orjson.dumps(mapper.to_event(e), option=sort) for e in entries]
    assert from_json == from_export


def test_413_batches_are_split(
    tmp_path: Path, journal: Journal, server_factory: Callable[..., Server]
) -> None:
    server = server_factory(DEVMESH_MAX_BATCH_EVENTS="7")
    journal.write(make_entries(0, 100))
    code, stats = ship_once(server, tmp_path / "state", journal, "--batch-size", "50")
    assert code == 0
    assert stats["splits"] > 0 and stats["dropped_too_large"] == 0
    assert_exactly_once(journal, server.journald_events(journal))


def test_a_bad_token_stops_with_exit_78_and_commits_nothing(
    tmp_path: Path, journal: Journal, server: Server
) -> None:
    journal.write(make_entries(0, 20))
    state = tmp_path / "state"
    started = time.monotonic()
    code, _ = ship_once(server, state, journal, token="wrong-token")
    assert code == 78
    assert time.monotonic() - started < 30  # surfaced at once, no retry loop
    assert not (state / "cursor.json").exists()
    assert server.journald_events(journal) == []
    # Fixed token: everything arrives.
    assert ship_once(server, state, journal)[0] == 0
    assert_exactly_once(journal, server.journald_events(journal))


def test_a_cursor_journalctl_refuses_is_set_aside(
    tmp_path: Path, journal: Journal, server: Server
) -> None:
    journal.write(make_entries(0, 10))
    state = tmp_path / "state"
    state.mkdir()
    (state / "cursor.json").write_bytes(orjson.dumps({"cursor": "not-a-cursor"}))
    code, stats = ship_once(server, state, journal)
    assert code == 0 and stats["read"] == 10
    assert (state / "cursor.json.bad").exists()
    assert_exactly_once(journal, server.journald_events(journal))


def test_heartbeats_and_clean_stop(tmp_path: Path, journal: Journal, server: Server) -> None:
    journal.write(make_entries(0, 5))

    def node_events() -> list[dict[str, Any]]:
        return [e for e in server.events() if e["host"] == "hb-node"]

    args = shipper_args(
        server,
        tmp_path / "state",
        journal,
        "--follow",
        "--heartbeat-seconds",
        "0.3",
        "--host",
        "hb-node",
    )
    proc = subprocess.Popen(
        args, cwd=ROOT, env=shipper_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: sum(e["event_type"] == "heartbeat" for e in node_events()) >= 2,
            what="two heartbeats",
        )
        # Heartbeats carry the shipper's counters (here: after the 5 entries went out).
        wait_for(
            lambda: any(
                e["event_type"] == "heartbeat" and e["meta"]["shipped"] >= 5 for e in node_events()
            ),
            what="a heartbeat after shipping",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    events = node_events()
    online = [e for e in events if e["event_type"] == "node_online"]
    beats = [e for e in events if e["event_type"] == "heartbeat"]
    assert len(online) == 1 and online[0]["level"] == "INFO"
    assert beats[0]["service"] == "devmesh-shipper"
    assert len({e["source_id"] for e in online + beats}) == len(online) + len(beats)


def test_file_mode_follows_by_polling(tmp_path: Path, journal: Journal, server: Server) -> None:
    """journalctl cannot -f a --file; the shipper re-reads after its cursor instead."""
    journal.write(make_entries(0, 10))
    files = sorted(journal.directory.glob("*.journal"))
    args = [
        a
        for a in shipper_args(server, tmp_path / "state", journal, "--follow")
        if a not in ("--directory", str(journal.directory))
    ]
    for path in files:
        args += ["--file", str(path)]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=shipper_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: len(server.journald_events(journal)) == 10, what="first entries")
        journal.write(make_entries(10, 15))
        wait_for(lambda: len(server.journald_events(journal)) == 25, what="appended entries")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert_exactly_once(journal, server.journald_events(journal))


def test_filters_apply_and_reload_on_sighup(
    tmp_path: Path, journal: Journal, server: Server
) -> None:
    filters = tmp_path / "filters.yaml"
    filters.write_text(
        "min_priority: warning\n"
        "drop_units: [cron]\n"
        "drop_messages: ['entry 1$']\n"
        "units:\n  sshd: {min_priority: debug}\n"
    )
    log = tmp_path / "shipper.log"
    proc = start_shipper(
        server,
        tmp_path / "state",
        journal,
        "--filters",
        str(filters),
        "--batch-seconds",
        "0.2",
        log=log,
    )
    try:
        first = make_entries(0, 40)
        journal.write(first)

        def kept_first(e: dict[str, str | bytes]) -> bool:
            unit = str(e["SYSLOG_IDENTIFIER"])
            if unit == "cron" or str(e["MESSAGE"]).endswith("entry 1"):
                return False
            return unit == "sshd" or int(str(e["PRIORITY"])) <= 4

        expected = {str(e["MESSAGE"]) for e in first if kept_first(e)}
        wait_for(
            lambda: {e["message"] for e in server.journald_events(journal)} == expected,
            what="filtered first batch",
        )

        filters.write_text("drop_units: [nginx]\n")
        proc.send_signal(signal.SIGHUP)  # the shipper is running: it shipped the first batch
        wait_for(lambda: b"filters_reloaded" in log.read_bytes(), what="the reload")
        second = make_entries(40, 40)
        journal.write(second)
        expected |= {str(e["MESSAGE"]) for e in second if e["SYSLOG_IDENTIFIER"] != "nginx"}
        wait_for(
            lambda: {e["message"] for e in server.journald_events(journal)} == expected,
            what="second batch under the new rules",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    stored = server.journald_events(journal)
    assert len(stored) == len(expected)  # and each once


def test_a_broken_filter_file_on_reload_keeps_the_old_rules(
    tmp_path: Path, journal: Journal, server: Server
) -> None:
    filters = tmp_path / "filters.yaml"
    filters.write_text("drop_units: [cron]\n")
    log = tmp_path / "shipper.log"
    proc = start_shipper(
        server,
        tmp_path / "state",
        journal,
        "--filters",
        str(filters),
        "--batch-seconds",
        "0.2",
        log=log,
    )
    try:
        # Before its handler is installed, SIGHUP would end the process (the default action).
        wait_for(lambda: b"shipper_starting" in log.read_bytes(), what="the shipper")
        filters.write_text("drop_messages: ['(']\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: b"filters_reload_failed" in log.read_bytes(), what="the refusal")
        journal.write(make_entries(0, 8))
        wait_for(lambda: len(server.journald_events(journal)) == 6, what="entries minus cron")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_start_at_tail_ships_only_new_entries(
    tmp_path: Path, journal: Journal, server: Server
) -> None:
    """A node's first start with ``start: tail`` skips its history (and remembers where)."""
    journal.write(make_entries(0, 10))
    state = tmp_path / "state"
    code, stats = ship_once(server, state, journal, "--start", "tail")
    assert code == 0 and stats["accepted"] == 0
    assert (state / "cursor.json").exists()  # the tail, committed before anything new
    journal.write(make_entries(10, 5))
    code, stats = ship_once(server, state, journal, "--start", "tail")
    assert code == 0 and stats["accepted"] == 5
    assert sorted(e["message"] for e in server.journald_events(journal)) == sorted(
        str(e["MESSAGE"]) for e in make_entries(10, 5)
    )
