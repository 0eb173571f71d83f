"""A small fake Ollama server: real HTTP on 127.0.0.1 speaking the parts of Ollama's API
the ``ollama`` client uses (``/api/chat`` streamed and not, ``/api/tags``, ``/api/show``).

No Ollama can be installed here; this lets the adapter run with the real client, real
sockets and real timeouts. Each request body is recorded for the tests to inspect.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class FakeOllama:
    """Behaviour knobs and what was asked."""

    answer: str = '{"root_cause": "disk full", "confidence": 0.9}'
    chunks: list[str] = field(default_factory=lambda: ["The disk ", "is ", "full."])
    delay: float = 0.0  # seconds before answering /api/chat
    chunk_delay: float = 0.0  # seconds between streamed chunks
    status: int = 200  # HTTP status of /api/chat
    error: str = ""  # body {"error": ...} when status != 200
    stream_error: str = ""  # an {"error": ...} line in the middle of a stream
    models: tuple[str, ...] = ("qwen2.5:7b-instruct",)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _handler(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/api/tags":
                self._json(200, {"models": [{"name": m, "model": m} for m in fake.models]})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/api/show":
                self._json(200, {"modelfile": "", "details": {"family": "qwen2"}})
                return
            if self.path != "/api/chat":
                self._json(404, {"error": "not found"})
                return
            fake.requests.append(body)
            if body.get("model") not in fake.models:
                self._json(404, {"error": f"model '{body.get('model')}' not found"})
                return
            time.sleep(fake.delay)
            if fake.status != 200:
                self._json(fake.status, {"error": fake.error or "internal error"})
                return
            base = {"model": body["model"], "created_at": _now()}
            if not body.get("stream", True):
                self._json(
                    200,
                    {
                        **base,
                        "message": {"role": "assistant", "content": fake.answer},
                        "done": True,
                        "done_reason": "stop",
                        "eval_count": 12,
                    },
                )
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def send(obj: dict[str, Any]) -> None:
                data = (json.dumps(obj) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            try:
                for index, chunk in enumerate(fake.chunks):
                    if fake.stream_error and index == 1:
                        send({"error": fake.stream_error})
                        break
                    send(
                        {**base, "message": {"role": "assistant", "content": chunk}, "done": False}
                    )
                    time.sleep(fake.chunk_delay)
                else:
                    send(
                        {
                            **base,
                            "message": {"role": "assistant", "content": ""},
                            "done": True,
                            "done_reason": "stop",
                        }
                    )
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

    return Handler


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    fake = FakeOllama()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
