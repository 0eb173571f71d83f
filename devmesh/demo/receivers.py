"""The demo's two helpers on the outside of DevMesh: a webhook receiver and a load generator.

:class:`WebhookReceiver` is what a user's own endpoint would be: a small HTTP server that
takes DevMesh's incident pings and checks their ``X-DevMesh-Signature`` (HMAC-SHA256 of the
body with the shared secret) before believing them. :class:`LoadGenerator` plays the shop's
users: a few requests a second, each outcome kept, so the demo can show the 502s start at
the chaos trigger and stop after the fix.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devmesh_core.notify.webhook import EVENT_HEADER, SIGNATURE_HEADER, verify_signature


@dataclass(frozen=True, slots=True)
class Ping:
    """One webhook delivery: the event kind, the incident it is about, whether its signature
    was right, and when it arrived."""

    kind: str
    incident_id: str | None
    title: str
    verified: bool
    received_at: datetime
    body: dict[str, Any]


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that records DevMesh's webhook pings (see the module
    docstring). Pings with a bad or missing signature are recorded as unverified and
    answered 401, as a real receiver should refuse them."""

    def __init__(self, secret: str, *, port: int = 0) -> None:
        self.secret = secret
        self.pings: list[Ping] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                verified = verify_signature(
                    body, receiver.secret, self.headers.get(SIGNATURE_HEADER)
                )
                try:
                    data = json.loads(body)
                except ValueError:
                    data = {}
                incident = data.get("incident") if isinstance(data, dict) else None
                incident = incident if isinstance(incident, dict) else {}
                ping = Ping(
                    kind=str(data.get("kind") or self.headers.get(EVENT_HEADER) or "?"),
                    incident_id=incident.get("id"),
                    title=str(incident.get("title") or ""),
                    verified=verified,
                    received_at=datetime.now(UTC),
                    body=data if isinstance(data, dict) else {},
                )
                with receiver._cond:
                    receiver.pings.append(ping)
                    receiver._cond.notify_all()
                self.send_response(204 if verified else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the demo prints what arrived."""

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/devmesh-webhook"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def wait_for(self, kind: str, incident_id: str | None, timeout: float) -> Ping | None:
        """The first ping of ``kind`` about ``incident_id`` (any incident if ``None``),
        waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ping in self.pings:
                    if ping.kind == kind and incident_id in (None, ping.incident_id):
                        return ping
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True, slots=True)
class Hit:
    """One request of the load generator: when (monotonic) and the status (0 = no answer)."""

    at: float
    status: int


class LoadGenerator:
    """GETs ``url`` every ``interval`` seconds in a daemon thread, keeping the outcomes."""

    def __init__(self, url: str, *, interval: float = 0.25, keep: int = 5_000) -> None:
        self.url = url
        self.interval = interval
        self.hits: deque[Hit] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-load", daemon=True)

    def start(self) -> None:
        """Start sending."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=3) as response:
                    response.read()
                    status = int(response.status)
            except urllib.error.HTTPError as exc:
                status = int(exc.code)
            except (urllib.error.URLError, OSError):
                status = 0
            with self._lock:
                self.hits.append(Hit(started, status))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def counts(self, since: float = 0.0) -> dict[str, int]:
        """Outcomes since ``since`` (monotonic): ``{"200": n, "502": m, ...}``."""
        out: dict[str, int] = {}
        with self._lock:
            for hit in self.hits:
                if hit.at >= since:
                    key = str(hit.status) if hit.status else "no answer"
                    out[key] = out.get(key, 0) + 1
        return out

    def ok_streak(self, since: float = 0.0) -> int:
        """How many of the latest requests since ``since`` in a row answered 200."""
        streak = 0
        with self._lock:
            for hit in reversed(self.hits):
                if hit.at < since or hit.status != 200:
                    break
                streak += 1
        return streak

    def stop(self) -> None:
        """Stop sending (waits for the request in flight)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
