"""Syslog over UDP into a real ``devmesh serve``: the highest send rate with no loss.

    python bench/syslog_udp.py [--messages 50000] [--rates 5000,10000,20000,40000]

For each rate a fresh server (SQLite, template mining on) receives ``--messages`` RFC 5424
lines paced at that rate from one sender on the same machine; the figure is whether every
line was received and stored (UDP has no retransmission, so loss is the failure mode).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import free_port, start_server


def run(rate: int, messages: int) -> tuple[int, int, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_server(
            Path(tmp), env={"DEVMESH_SYSLOG_UDP_PORT": str(port), "DEVMESH_LOG_LEVEL": "WARNING"}
        )
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            started = time.perf_counter()
            for i in range(messages):
                line = (
                    f"<30>1 2026-11-23T10:00:00.{i % 1_000_000:06d}Z node{i % 20} "
                    f"app{i % 50} {i} - - request {i} served in {i % 977} ms"
                )
                sock.sendto(line.encode(), ("127.0.0.1", port))
                if i % 100 == 99:  # pace in small bursts
                    ahead = started + (i + 1) / rate - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
            sent_in = time.perf_counter() - started
            deadline = time.monotonic() + 120
            stats: dict[str, int] = {}
            while time.monotonic() < deadline:
                stats = httpx.get(f"{base}/info", timeout=10).json()["syslog"]
                if stats["stored"] + stats["malformed"] >= messages:
                    break
                time.sleep(0.5)
                again = httpx.get(f"{base}/info", timeout=10).json()["syslog"]
                if again["received"] == stats["received"] and again["stored"] >= again["received"]:
                    stats = again
                    break
        finally:
            proc.terminate()
            proc.communicate(timeout=60)
    return stats.get("received", 0), stats.get("stored", 0), messages / sent_in


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rates", default="5000,10000,20000,40000")
    args = parser.parse_args()
    best = 0
    for rate in (int(r) for r in args.rates.split(",")):
        received, stored, actual = run(rate, args.messages)
        lost = args.messages - received
        print(
            f"target {rate:>7,}/s (sent at {actual:>9,.0f}/s): received {received:,}, "
            f"stored {stored:,}, lost {lost:,}"
        )
        if lost == 0 and stored == args.messages:
            best = max(best, rate)
    print(f"highest rate with no loss: {best:,} messages/s")


if __name__ == "__main__":
    main()
