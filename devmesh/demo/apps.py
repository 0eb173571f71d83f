"""The demo's tiny real services: an ``inventory`` API and the ``shop`` web tier in front of it.

Each is a real HTTP server in its own process that writes a plain log file the way small
services do (ISO timestamp, level, message), which DevMesh tails like any other log file.
The shop proxies every request to the inventory; when the inventory is gone the shop logs
what nginx or a Python client would (``connect() failed (111: Connection refused)``) and
answers 502 — the symptom in one service, the cause in another.

    python -m devmesh.demo.apps inventory --port 8801 --log /tmp/demo/inventory.log
    python -m devmesh.demo.apps shop --port 8800 --upstream 8801 --log /tmp/demo/shop.log
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

ITEMS = [{"sku": "cable-usb-c", "stock": 41}, {"sku": "ssd-1tb", "stock": 7}]


class LogFile:
    """Appends ``<ISO time> <LEVEL> <service>[pid]: <message>`` lines, flushed per line so a
    tailer sees them at once."""

    def __init__(self, path: Path, service: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._service = service
        self._lock = threading.Lock()

    def write(self, level: str, message: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._lock:
            self._file.write(f"{stamp} {level} {self._service}[{os.getpid()}]: {message}\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file (a writer that only appends a line or two opens it per use)."""
        with self._lock:
            self._file.close()


def _handler(log: LogFile, answer: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            started = time.monotonic()
            status, body = answer(self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            took = (time.monotonic() - started) * 1000
            level = "INFO" if status < 500 else "WARNING"
            log.write(level, f'"GET {self.path}" {status} {took:.1f}ms')

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the stdlib's stderr access log: the service logs to its file."""

    return Handler


def serve_inventory(port: int, log: LogFile) -> None:
    """The upstream: answers ``/items`` and ``/health``."""

    def answer(path: str) -> tuple[int, Any]:
        if path.startswith("/health"):
            return 200, {"status": "ok"}
        return 200, {"items": ITEMS}

    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(log, answer))
    log.write("INFO", f"inventory listening on 127.0.0.1:{port}")
    _serve(server, log)


def serve_shop(port: int, upstream: int, log: LogFile) -> None:
    """The web tier: proxies to the inventory; 502 with an upstream error when it is down."""
    target = f"http://127.0.0.1:{upstream}/items"

    def answer(path: str) -> tuple[int, Any]:
        if path.startswith("/health"):
            return 200, {"status": "ok"}
        try:
            with urllib.request.urlopen(target, timeout=2) as response:
                return 200, json.load(response)
        except urllib.error.URLError as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError):
                log.write(
                    "ERROR",
                    "connect() failed (111: Connection refused) while connecting to upstream, "
                    f'upstream: "{target}"',
                )
            else:
                log.write("ERROR", f'upstream request failed: {reason}, upstream: "{target}"')
            return 502, {"error": "bad gateway"}

    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(log, answer))
    log.write("INFO", f"shop listening on 127.0.0.1:{port}, upstream {target}")
    _serve(server, log)


def _serve(server: ThreadingHTTPServer, log: LogFile) -> None:
    def stop(signum: int, frame: object) -> None:
        log.write("INFO", f"received signal {signum}, shutting down")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("app", choices=["inventory", "shop"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", type=int, help="the inventory's port (shop only)")
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    log = LogFile(args.log, args.app)
    if args.app == "inventory":
        serve_inventory(args.port, log)
    else:
        if args.upstream is None:
            parser.error("shop needs --upstream")
        serve_shop(args.port, args.upstream, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
