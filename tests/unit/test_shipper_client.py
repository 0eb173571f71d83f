"""What each server answer means for a batch, the HTTP connection, and the backoff."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import orjson
import pytest

from ingest.client import (
    Delivery,
    FatalConfigError,
    HttpPoster,
    IngestClient,
    TransientError,
)
from ingest.shipper import Backoff


class FakePoster:
    """Answers from a function of the posted events; records every body."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.bodies: list[list[dict[str, Any]]] = []

    def post(self, body: bytes) -> tuple[int, bytes]:
        events = orjson.loads(body)
        self.bodies.append(events)
        status, reply = self.answer(events)
        return status, orjson.dumps(reply)

    def close(self) -> None:
        pass


def batch(n: int) -> tuple[bytes, int]:
    return orjson.dumps([{"n": i} for i in range(n)]), n


def test_accepted_duplicates_and_individual_rejections() -> None:
    poster = FakePoster(
        lambda events: (
            200,
            {
                "accepted": len(events) - 2,
                "duplicates": 1,
                "rejected": [{"index": 3, "error": "timestamp: Field required"}],
            },
        )
    )
    timings: list[float] = []
    delivery = IngestClient(poster, timings.append).deliver(*batch(10))
    assert delivery == Delivery(accepted=8, duplicates=1, rejected=1)
    assert len(poster.bodies) == 1 and len(timings) == 1


def test_413_splits_until_the_server_takes_each_part() -> None:
    poster = FakePoster(
        lambda events: (
            (413, {"detail": "too big"})
            if len(events) > 3
            else (200, {"accepted": len(events), "duplicates": 0, "rejected": []})
        )
    )
    client = IngestClient(poster)
    assert client.deliver(*batch(10)) == Delivery(accepted=10)
    sent = [e["n"] for body in poster.bodies if len(body) <= 3 for e in body]
    assert sent == list(range(10))  # every event once, in order
    assert client.splits >= 3


def test_one_event_the_server_refuses_is_dropped_not_retried_forever() -> None:
    def answer(events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        if any(e["n"] == 5 for e in events):
            return 422, {"detail": "body must be a JSON array"}
        return 200, {"accepted": len(events), "duplicates": 0, "rejected": []}

    delivery = IngestClient(FakePoster(answer)).deliver(*batch(8))
    assert delivery.accepted == 7 and delivery.dropped == 1


@pytest.mark.parametrize("status", [401, 403, 404, 405])
def test_config_errors_are_fatal(status: int) -> None:
    with pytest.raises(FatalConfigError):
        IngestClient(FakePoster(lambda e: (status, {"detail": "no"}))).deliver(*batch(3))


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_server_trouble_is_transient(status: int) -> None:
    with pytest.raises(TransientError, match=str(status)):
        IngestClient(FakePoster(lambda e: (status, {"detail": "busy"}))).deliver(*batch(3))


def test_an_unreadable_200_still_acknowledges() -> None:
    class Odd(FakePoster):
        def post(self, body: bytes) -> tuple[int, bytes]:
            return 200, b"OK"

    assert IngestClient(Odd(None)).deliver(*batch(4)) == Delivery(accepted=4)


# -- the real HTTP connection -------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str | None, int]]] = []
    drop_after_reply: ClassVar[bool] = False

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["content-length"]))
        _Handler.seen.append((self.path, self.headers.get("authorization"), len(data)))
        reply = orjson.dumps({"accepted": len(orjson.loads(data)), "duplicates": 0, "rejected": []})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        # Like a server closing an idle keep-alive connection: no "Connection: close" sent.
        self.close_connection = _Handler.drop_after_reply

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    _Handler.seen = []
    _Handler.drop_after_reply = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/prefix/"
    server.shutdown()
    server.server_close()


def test_http_poster_posts_with_token_and_reuses_the_connection(http_server: str) -> None:
    poster = HttpPoster(http_server, "secret", 5)
    for n in (1, 2, 3):
        status, data = poster.post(orjson.dumps([{}] * n))
        assert status == 200 and orjson.loads(data)["accepted"] == n
    assert [s[0] for s in _Handler.seen] == ["/prefix/ingest/logs"] * 3
    assert {s[1] for s in _Handler.seen} == {"Bearer secret"}
    poster.close()


def test_http_poster_retries_once_on_a_closed_keepalive(http_server: str) -> None:
    _Handler.drop_after_reply = True
    poster = HttpPoster(http_server, None, 5)
    for _ in range(3):
        assert poster.post(b"[{}]")[0] == 200
    assert len(_Handler.seen) == 3
    assert _Handler.seen[0][1] is None


def test_http_poster_unreachable_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransientError):
        HttpPoster(f"http://127.0.0.1:{port}", None, 2).post(b"[]")


def test_http_poster_rejects_non_http_urls() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpPoster("ftp://x", None, 1)


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(0.5, 8.0)
    assert backoff.ready(0.0)
    delays = [backoff.failed(100.0) for _ in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert not backoff.ready(100.0)
    assert backoff.ready(100.0 + 8.0)
    backoff.succeeded()
    assert backoff.ready(0.0) and backoff.failures == 0
