"""A syslog receiver (UDP and TCP) for nodes that forward with rsyslog/syslog-ng.

Lines are parsed as they arrive and handed to ``sink`` (the ingest service) in batches from a
worker thread, so a slow store never blocks the socket. A malformed line is counted and
logged (sampled), never fatal. TCP accepts newline-delimited and octet-counted (RFC 6587)
framing. There is no authentication in syslog: bind it to a trusted network.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devmesh_core.formats.syslog import SyslogError, parse
from devmesh_core.log import get_logger
from devmesh_core.models import IngestReport

MAX_LINE = 64 * 1024


@dataclass(slots=True)
class SyslogStats:
    """Counters since start (read them for health pages and benchmarks)."""

    received: int = 0
    malformed: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0
    failed_batches: int = 0


class SyslogReceiver:
    """Listen on UDP and/or TCP; ``sink(items)`` stores a batch of parsed log objects."""

    def __init__(
        self,
        sink: Callable[[Sequence[dict[str, Any]]], IngestReport],
        *,
        host: str = "127.0.0.1",
        udp_port: int | None = None,
        tcp_port: int | None = None,
        batch_size: int = 1_000,
        flush_interval: float = 0.5,
        max_pending: int = 200_000,
    ) -> None:
        self._sink = sink
        self.host = host
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.stats = SyslogStats()
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._seq = itertools.count()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._log = get_logger(__name__)

    async def start(self) -> None:
        """Bind the sockets (port 0 picks a free one; the bound ports are then in
        ``udp_port``/``tcp_port``) and start the batch flusher."""
        loop = asyncio.get_running_loop()
        if self.udp_port is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            # A larger receive buffer absorbs bursts while the flusher is busy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
            sock.bind((self.host, self.udp_port))
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), sock=sock
            )
            self._udp = transport
            self.udp_port = sock.getsockname()[1]
        if self.tcp_port is not None:
            self._tcp = await asyncio.start_server(
                self._handle_tcp, self.host, self.tcp_port, limit=MAX_LINE + 16
            )
            self.tcp_port = self._tcp.sockets[0].getsockname()[1]
        self._flusher = asyncio.create_task(self._flush_loop())
        self._log.info("syslog_listening", host=self.host, udp=self.udp_port, tcp=self.tcp_port)

    async def stop(self) -> None:
        """Stop listening and store what was received."""
        self._closing = True
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 5)
        self._wake.set()
        if self._flusher is not None:
            await self._flusher

    def feed(self, line: str, peer: str | None) -> None:
        """Parse one line and queue it (called by the protocol handlers)."""
        self.stats.received += 1
        now = datetime.now(UTC)
        try:
            item = parse(line, peer=peer, now=now)
        except SyslogError as exc:
            self.stats.malformed += 1
            if self.stats.malformed <= 10 or self.stats.malformed % 1000 == 0:
                self._log.warning(
                    "syslog_malformed",
                    peer=peer,
                    error=str(exc),
                    line=line[:200],
                    total=self.stats.malformed,
                )
            return
        if len(self._pending) >= self.max_pending:
            self.stats.dropped += 1
            if self.stats.dropped % 1000 == 1:
                self._log.warning("syslog_backlog_full", dropped=self.stats.dropped)
            return
        # Syslog has no id of its own; identical lines in one second are distinct events.
        item["source_id"] = f"syslog:{time.time_ns()}:{next(self._seq)}"
        self._pending.append(item)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            while self._pending:
                batch, self._pending = (
                    self._pending[: self.batch_size],
                    self._pending[self.batch_size :],
                )
                try:
                    report = await loop.run_in_executor(None, self._sink, batch)
                except Exception as exc:  # the store is down: keep the lines, retry later
                    self.stats.failed_batches += 1
                    self._log.warning("syslog_store_failed", error=str(exc), kept=len(batch))
                    self._pending[:0] = batch
                    if self._closing:
                        return
                    await asyncio.sleep(min(5.0, self.flush_interval * 4))
                    continue
                self.stats.stored += report.accepted
                self.stats.duplicates += report.duplicates
                self.stats.rejected += len(report.rejected)
            if self._closing:
                return

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = peer[0] if peer else None
        buffer = b""
        try:
            while not reader.at_eof():
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buffer += chunk
                buffer = self._frames(buffer, address)
            if buffer.strip():
                self.feed(buffer.decode("utf-8", "replace"), address)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _frames(self, buffer: bytes, peer: str | None) -> bytes:
        """Feed every complete frame in ``buffer``; return the incomplete rest."""
        while buffer:
            if buffer[:1].isdigit():  # octet counting: "LEN SP MSG"
                space = buffer.find(b" ", 0, 8)
                if space > 0 and buffer[:space].isdigit():
                    size = int(buffer[:space])
                    end = space + 1 + size
                    if len(buffer) < end:
                        return buffer
                    self.feed(buffer[space + 1 : end].decode("utf-8", "replace"), peer)
                    buffer = buffer[end:]
                    continue
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) > MAX_LINE:  # an unterminated giant line: take it as is
                    self.feed(buffer.decode("utf-8", "replace"), peer)
                    return b""
                return buffer
            line, buffer = buffer[:newline], buffer[newline + 1 :]
            if line.strip():
                self.feed(line.decode("utf-8", "replace"), peer)
        return buffer


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, receiver: SyslogReceiver) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        text = data.decode("utf-8", "replace")
        for line in text.split("\n") if "\n" in text.rstrip("\n") else (text,):
            if line.strip():
                self.receiver.feed(line, str(addr[0]))
