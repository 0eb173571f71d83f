"""Syslog receiver over real UDP and TCP sockets into a real store, and through `devmesh serve`."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from devmesh_core import services
from devmesh_core.formats.syslog import SyslogError, parse
from devmesh_core.receivers.syslog import SyslogReceiver
from devmesh_core.store import LogQuery, open_store
from tests.conftest import free_port, start_server

LINES = [
    "<34>1 2026-11-23T10:00:00.123456Z web01 nginx 812 - - upstream timed out",
    '<165>1 2026-11-23T10:00:01Z db01 postgres - ID7 [meta@1 q="a\\"b"] checkpoint done',
    "<13>Nov 23 10:00:02 gw sshd[4242]: Accepted publickey for admin",
    "<11>2026-11-23T10:00:03+01:00 nas smartd[1]: Device sda: 8 Currently unreadable sectors",
]


def test_parser_fields() -> None:
    first = parse(LINES[0])
    assert (first["host"], first["service"], first["level"], first["message"]) == (
        "web01",
        "nginx",
        2,
        "upstream timed out",
    )
    assert first["meta"] == {"facility": "auth", "procid": "812"}
    second = parse(LINES[1])
    assert second["meta"]["structured_data"] == {"meta@1": {"q": 'a"b'}}
    bsd = parse(LINES[2])
    assert (bsd["host"], bsd["service"], bsd["meta"]["pid"]) == ("gw", "sshd", "4242")
    for bad in ("no pri here", "<999>1 - - - - - - x", "<13>1 notatime h a - - - x"):
        with pytest.raises(SyslogError):
            parse(bad)


async def _run(
    tmp_path: Path, sender: Callable[[SyslogReceiver], Awaitable[None]]
) -> tuple[SyslogReceiver, list[str]]:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    receiver = SyslogReceiver(
        lambda items: services.ingest(store, items, default_source="syslog"),
        udp_port=0,
        tcp_port=0,
        flush_interval=0.05,
    )
    await receiver.start()
    try:
        await sender(receiver)
        deadline = time.monotonic() + 10
        while receiver.stats.stored + receiver.stats.malformed < receiver.stats.received or (
            receiver.stats.received == 0
        ):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        await receiver.stop()
    messages = [e.message for e in store.query(LogQuery(limit=100, order="asc")).events]
    store.close()
    return receiver, messages


async def test_udp_and_tcp_framings(tmp_path: Path) -> None:
    async def send(receiver: SyslogReceiver) -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for line in LINES[:2]:
            udp.sendto(line.encode(), ("127.0.0.1", receiver.udp_port or 0))
        udp.sendto(b"garbage without pri", ("127.0.0.1", receiver.udp_port or 0))
        udp.close()
        _reader, writer = await asyncio.open_connection("127.0.0.1", receiver.tcp_port)
        octet = LINES[3].encode()
        writer.write(LINES[2].encode() + b"\n" + str(len(octet)).encode() + b" " + octet)
        writer.write(b"<14>1 2026-11-23T10:00:04Z h app - - - line with\nembedded newline\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    receiver, messages = await _run(tmp_path, send)
    assert receiver.stats.malformed == 2  # the garbage datagram and "embedded newline"
    assert receiver.stats.stored == 5
    assert "upstream timed out" in messages
    assert "Device sda: 8 Currently unreadable sectors" in messages
    assert "line with" in messages


async def test_identical_lines_in_one_second_are_all_kept(tmp_path: Path) -> None:
    async def send(receiver: SyslogReceiver) -> None:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(5):
            udp.sendto(
                b"<11>Nov 23 10:00:02 gw app: connection refused",
                ("127.0.0.1", receiver.udp_port or 0),
            )
        udp.close()

    _, messages = await _run(tmp_path, send)
    assert messages.count("connection refused") == 5


def test_through_devmesh_serve(tmp_path: Path) -> None:
    udp_port = free_port()
    proc, base = start_server(tmp_path, env={"DEVMESH_SYSLOG_UDP_PORT": str(udp_port)})
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(LINES[2].encode(), ("127.0.0.1", udp_port))
        sock.sendto(b"\xff\xfe not syslog", ("127.0.0.1", udp_port))
        sock.close()
        deadline = time.monotonic() + 15
        info: dict[str, object] = {}
        while time.monotonic() < deadline:
            info = httpx.get(f"{base}/info", timeout=5).json()
            stats = info["syslog"]
            assert isinstance(stats, dict)
            if stats["stored"] == 1 and stats["malformed"] == 1:
                break
            time.sleep(0.1)
        events = httpx.get(f"{base}/query/logs", params={"service": "sshd"}).json()["events"]
        assert [e["message"] for e in events] == ["Accepted publickey for admin"]
        assert events[0]["source"] == "syslog" and events[0]["host"] == "gw"
        assert events[0]["template_id"]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
