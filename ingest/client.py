"""The shipper's HTTP side: ``POST /ingest/logs`` and what each answer means for a batch.

Why ``http.client`` and not httpx: the shipper makes one kind of request on one keep-alive
connection, and on a node every MB and every CPU cycle counts. httpx costs about 6 MB of
RSS more, several times the Python work per request (which also holds the GIL the reader
thread needs), and its Response/Request cycles keep request bodies alive until the cyclic GC
runs — with 600 KB bodies that alone broke the 60 MB budget.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import orjson

from devmesh_core.log import get_logger

log = get_logger(__name__)

_MAX_REJECTION_LOGS = 20


class TransientError(Exception):
    """The server could not take the batch now (down, overloaded, 5xx): retry later."""


class FatalConfigError(Exception):
    """The server refused us for a reason only a person can fix (token, URL)."""


class Poster(Protocol):
    """Sends one body, returns (status, response body). Raises TransientError when unreachable."""

    def post(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` to the ingest endpoint."""

    def close(self) -> None:
        """Drop the connection."""


STALE_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
)
"""What a request on a reused keep-alive connection the server closed meanwhile fails with."""


class KeepAliveConnection:
    """One keep-alive HTTP/1.1 connection to a DevMesh server, reopened as needed.

    The node-side programs (shipper, ``devmesh event``, node agent) all talk to the server
    this way; keeping the connection handling in one place keeps their TLS options, socket
    tuning and reconnect rules the same. A request that fails on a *reused* connection with
    one of ``retry_on`` is sent once more on a fresh one: the server may have closed an idle
    keep-alive connection. Callers only use it for requests that are safe to send twice.
    """

    def __init__(
        self,
        server: str,
        headers: dict[str, str],
        timeout: float,
        *,
        verify_tls: bool = True,
        ca_file: str | None = None,
        retry_on: tuple[type[Exception], ...] = STALE_CONNECTION_ERRORS,
    ) -> None:
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {server!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = headers
        self.retry_on = retry_on
        self._context: ssl.SSLContext | None = None
        if self.https:
            if verify_tls:
                self._context = ssl.create_default_context(cafile=ca_file)
            else:
                self._context = ssl.create_default_context()
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE
        self._conn: http.client.HTTPConnection | None = None
        self._used = False

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._used = False
            self._conn.connect()
            # http.client sends headers and a large body in separate writes; with Nagle on,
            # the body's last segment waits for the server's delayed ACK (~40 ms a request).
            assert self._conn.sock is not None
            self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._conn

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request to ``path`` under the server URL; return (status, response body).

        Connection problems become :class:`TransientError`.
        """
        for attempt in (1, 2):
            reused = self._conn is not None and self._used
            try:
                conn = self._connection()
                conn.request(method, self.base + path, body=body, headers=self.headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt == 1 and reused and isinstance(exc, self.retry_on):
                    continue
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            self._used = True
            if response.will_close:
                self.close()
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover


class HttpPoster(KeepAliveConnection):
    """The shipper's :class:`Poster`: ``POST <server>/ingest/logs`` on a
    :class:`KeepAliveConnection`. Sending a batch twice is harmless (the server dedups), so
    the reconnect retry is safe."""

    INGEST_PATH = "/ingest/logs"

    def __init__(
        self,
        server: str,
        token: str | None,
        timeout: float,
        *,
        verify_tls: bool = True,
        ca_file: str | None = None,
    ) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "devmesh-shipper",
            "Connection": "keep-alive",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        super().__init__(server, headers, timeout, verify_tls=verify_tls, ca_file=ca_file)
        self.path = self.base + self.INGEST_PATH

    def post(self, body: bytes) -> tuple[int, bytes]:
        """POST a JSON body; connection problems become :class:`TransientError`."""
        return self.send("POST", self.INGEST_PATH, body)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The server's verdict on a batch (summed over its parts when it had to be split)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0

    def __add__(self, other: Delivery) -> Delivery:
        return Delivery(
            self.accepted + other.accepted,
            self.duplicates + other.duplicates,
            self.rejected + other.rejected,
            self.dropped + other.dropped,
        )


class IngestClient:
    """Deliver batches and classify the server's answers (see :mod:`ingest.shipper`).

    ``on_request`` is told how long each request took (the shipper's timing stats).
    """

    def __init__(self, poster: Poster, on_request: Callable[[float], None] | None = None) -> None:
        self.poster = poster
        self._on_request = on_request
        self._rejection_logs = 0
        self.splits = 0

    def close(self) -> None:
        """Close the connection."""
        self.poster.close()

    def _post(self, body: bytes) -> tuple[int, bytes]:
        started = time.perf_counter()
        try:
            return self.poster.post(body)
        finally:
            if self._on_request is not None:
                self._on_request(time.perf_counter() - started)

    def deliver(self, body: bytes, count: int) -> Delivery:
        """Send one batch (a JSON array body of ``count`` objects); split it on a whole-batch 4xx.

        Raises :class:`TransientError` (retry later; nothing can be assumed stored — parts
        already accepted are re-sent later and counted as duplicates) or
        :class:`FatalConfigError`.
        """
        status, data = self._post(body)
        if status == 200:
            return self._verdict(data, count, body)
        detail = _detail(data)
        if status in (401, 403):
            raise FatalConfigError(
                f"the server refused the token ({status}: {detail}); check token / token_file"
            )
        if status in (404, 405):
            raise FatalConfigError(
                f"{status} from the ingest endpoint: is `server` the DevMesh API URL? ({detail})"
            )
        if status in (408, 429) or status >= 500:
            raise TransientError(f"server answered {status}: {detail}")
        # 413 or another 4xx for the whole batch: split so one part cannot block the rest.
        if count <= 1:
            log.error(
                "event_refused_dropped",
                status=status,
                detail=detail,
                bytes=len(body),
                preview=body[:300].decode("utf-8", errors="replace"),
            )
            return Delivery(dropped=max(count, 1))
        items = [orjson.dumps(item) for item in orjson.loads(body)]
        middle = len(items) // 2
        self.splits += 1
        log.warning(
            "batch_refused_splitting",
            status=status,
            detail=detail,
            events=len(items),
            bytes=len(body),
        )
        first = self.deliver(b"[" + b",".join(items[:middle]) + b"]", middle)
        return first + self.deliver(b"[" + b",".join(items[middle:]) + b"]", len(items) - middle)

    def _verdict(self, data: bytes, count: int, body: bytes) -> Delivery:
        try:
            answer = orjson.loads(data)
            accepted = int(answer.get("accepted", 0))
            duplicates = int(answer.get("duplicates", 0))
            rejected = list(answer.get("rejected") or [])
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            # A 200 we cannot read is still an acknowledgement: the server took the body.
            log.warning("ingest_answer_unreadable", error=str(exc), events=count)
            return Delivery(accepted=count)
        if rejected and self._rejection_logs < _MAX_REJECTION_LOGS:
            events = None
            with contextlib.suppress(orjson.JSONDecodeError):
                events = orjson.loads(body)
            for item in rejected:
                if self._rejection_logs >= _MAX_REJECTION_LOGS:
                    log.warning("event_rejected_more", note="further rejections only counted")
                    break
                self._rejection_logs += 1
                index = item.get("index") if isinstance(item, dict) else None
                preview = None
                if isinstance(events, list) and isinstance(index, int) and 0 <= index < len(events):
                    preview = orjson.dumps(events[index])[:300].decode("utf-8", errors="replace")
                log.warning(
                    "event_rejected",
                    index=index,
                    error=item.get("error") if isinstance(item, dict) else item,
                    entry=preview,
                )
        return Delivery(accepted, duplicates, len(rejected))


def _detail(data: bytes) -> str:
    try:
        answer = orjson.loads(data)
        if isinstance(answer, dict) and "detail" in answer:
            return str(answer["detail"])[:300]
    except orjson.JSONDecodeError:
        pass
    return data[:300].decode("utf-8", errors="replace")
