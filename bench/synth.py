"""Deterministic synthetic homelab events for the benchmarks (no external data needed)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pymysql

SERVICES = [f"svc-{i:02d}" for i in range(50)]
HOSTS = [f"node-{i:02d}" for i in range(20)]
# As in a homelab: most services live on one to three nodes; a few (sshd, kernel, systemd,
# the container runtime, …) run everywhere.
_AFFINITY = random.Random(0)
SERVICE_HOSTS = {
    service: HOSTS if i < 5 else _AFFINITY.sample(HOSTS, _AFFINITY.randint(1, 3))
    for i, service in enumerate(SERVICES)
}
LEVELS = ["DEBUG"] * 10 + ["INFO"] * 70 + ["WARNING"] * 12 + ["ERROR"] * 7 + ["CRITICAL"]
TEMPLATES = [
    "GET /api/v1/items/{n} 200 {ms}ms",
    "connection from 10.0.{a}.{b} port {port} accepted",
    "worker {n} finished job {uuid} in {ms} ms",
    "could not connect to upstream 10.0.{a}.{b}:{port}: Connection refused",
    "disk usage on /dev/sda{a} at {pct}%",
    "checkpoint complete: wrote {n} buffers",
    "user session {uuid} expired after {ms} s",
    "cache miss for key user:{n}:profile",
]


def make_events(
    count: int, *, seed: int = 1, start: datetime | None = None
) -> list[dict[str, Any]]:
    """``count`` event dicts spread over 30 days, 50 services, 20 hosts, a realistic level mix."""
    rng = random.Random(seed)
    t0 = start or datetime(2026, 10, 1, tzinfo=UTC)
    span = 30 * 86400 * 1_000_000
    out = []
    for i in range(count):
        tpl = TEMPLATES[rng.randrange(len(TEMPLATES))]
        message = tpl.format(
            n=rng.randrange(100_000),
            ms=rng.randrange(5000),
            a=rng.randrange(256),
            b=rng.randrange(256),
            port=rng.randrange(1024, 65535),
            pct=rng.randrange(100),
            uuid=uuid.UUID(int=rng.getrandbits(128)),
        )
        service = SERVICES[rng.randrange(len(SERVICES))]
        event: dict[str, Any] = {
            "timestamp": (t0 + timedelta(microseconds=rng.randrange(span))).isoformat(),
            "source": "bench",
            "service": service,
            "host": rng.choice(SERVICE_HOSTS[service]),
            "level": LEVELS[rng.randrange(len(LEVELS))],
            "message": message,
        }
        if i % 5 == 0:
            event["trace_id"] = f"{rng.getrandbits(64):016x}"
        if i % 3 == 0:
            event["meta"] = {"pid": rng.randrange(1, 65535), "unit": event["service"] + ".service"}
        out.append(event)
    return out


@contextmanager
def temp_mariadb(host: str = "127.0.0.1", port: int = 3306, user: str = "root") -> Iterator[str]:
    """A throwaway database on the MariaDB server; yields its URL and drops it afterwards."""
    name = f"devmesh_bench_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=host, port=port, user=user, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield f"mysql://{user}@{host}:{port}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (pct in 0..100)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
