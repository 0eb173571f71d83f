"""The server goes away mid-run while the node keeps logging, then comes back."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson

from tests.integration.ingest.conftest import (
    Journal,
    Server,
    assert_exactly_once,
    make_entries,
    start_shipper,
    wait_for,
)


def spooled_events(spool_dir: Path) -> int:
    """Events in the spool, from the file names (``<seq>-<events>.json``)."""
    return sum(int(p.stem.split("-")[1]) for p in spool_dir.glob("*.json"))


def test_server_down_spools_then_drains_everything_in_order(
    tmp_path: Path, journal: Journal, server: Server
) -> None:
    config = tmp_path / "shipper.yaml"
    config.write_text(
        f"server: {server.url}\nretry: {{initial_seconds: 0.2, max_seconds: 1}}\n"
        "batch: {max_events: 20, max_seconds: 0.2, drain_max_events: 100}\n"
    )
    state = tmp_path / "state"
    log = tmp_path / "shipper.log"
    proc = start_shipper(
        server, state, journal, "--config", str(config), "--heartbeat-seconds", "0.5", log=log
    )
    spool_dir = state / "spool"
    try:
        hosts = ["node1", "node2"]  # one journal holding two hosts (a journal-remote target)
        journal.write(make_entries(0, 100, host=hosts[0]) + make_entries(100, 100, host=hosts[1]))
        wait_for(lambda: len(server.journald_events()) == 200, what="the first 200")

        server.stop(kill=True)
        written = 200
        for round_ in range(3):  # the node keeps logging through the outage
            journal.write(make_entries(written, 100, host=hosts[round_ % 2]))
            written += 100
            time.sleep(0.3)
        wait_for(lambda: spooled_events(spool_dir) == 300, what="300 events spooled")
        last = journal.cursors()[-1]
        wait_for(
            lambda: orjson.loads((state / "cursor.json").read_bytes())["cursor"] == last,
            what="the cursor to pass the spooled entries",
        )  # spooled = acknowledged

        server.start()  # same port, same data dir
        journal.write(make_entries(written, 100, host=hosts[0]))
        written += 100
        wait_for(lambda: len(server.journald_events()) == written, what="everything")
        wait_for(lambda: not any(spool_dir.glob("*.json")), what="the spool to empty")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    stored = server.journald_events()
    assert_exactly_once(journal, stored)  # includes arrival in journal order
    for host in hosts:
        mine = sorted((e for e in stored if e["host"] == host), key=lambda e: e["id"])
        numbers = [int(e["message"].rsplit(" ", 1)[1]) for e in mine]
        assert numbers == sorted(numbers), f"{host}: out of order"
    text = log.read_text()
    assert "server_unreachable" in text and "server_reachable_again" in text
    assert "spool_drained" in text
    # Heartbeats resumed after the outage (the server tells silent from offline by them).
    assert any(e["event_type"] == "heartbeat" for e in server.events())
