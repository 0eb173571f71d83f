"""File tail bench: lines/s from a plain log file to a real server, and the shipper's RSS.

    .venv/bin/python bench/tail.py                    # 200k lines, batch 1,000
    .venv/bin/python bench/tail.py --lines 50000 --batch-size 5000

Makes one application log under bench/out/tail/ (ISO-timestamped lines, lines without a
timestamp, and Python tracebacks joined into multi-line events), then runs
``python -m devmesh.cli.ship --path ... --no-follow`` to completion twice:

1. into a null sink (an HTTP server that only parses and counts): the tail's own capacity;
2. into the real server (``devmesh serve``, SQLite): the end-to-end figure, checked against
   the store's event count.

Figures: physical lines/s and events/s over the shipper's wall time (process start to exit,
Python start-up included), its peak RSS (VmHWM, sampled and from its own exit report), and
where its time went (reader read/parse, HTTP, queue waits, read-time stamp writes).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shipper import Server, run_to_done, ship_cmd, start_null_sink  # noqa: E402

OUT = ROOT / "bench" / "out" / "tail"


def make_log(path: Path, lines: int, seed: int = 7) -> tuple[int, int]:
    """Write the application log; return (physical lines, logical events)."""
    rng = random.Random(seed)
    written = events = 0
    base = 1_735_689_600  # 2025-01-01T00:00:00Z
    with path.open("w", encoding="utf-8") as out:
        while written < lines:
            i = events
            second = base + i // 50
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            kind = rng.random()
            if kind < 0.05 and lines - written >= 4:
                out.write(
                    f"{stamp}.{i % 1000:03d}Z ERROR worker {i % 17} crashed on job {i}\n"
                    "Traceback (most recent call last):\n"
                    f'  File "/srv/app/jobs.py", line {100 + i % 50}, in run\n'
                    f"KeyError: 'job-{i}'\n"
                )
                written += 4
            elif kind < 0.15:
                out.write(f"plain progress line {i}: {rng.randint(0, 100)}% done\n")
                written += 1
            else:
                level = rng.choice(["INFO", "INFO", "INFO", "DEBUG", "WARN"])
                out.write(
                    f"{stamp}.{i % 1000:03d}Z {level} [http-{i % 8}] GET /api/items/"
                    f"{i % 313} status={rng.choice([200, 200, 404])} "
                    f"took={rng.randint(1, 900)}ms id={i:08x}\n"
                )
                written += 1
            events += 1
    return written, events


def run_shipper(url: str, state: Path, log: Path, batch: int) -> dict[str, Any]:
    """Run the tail to the end of the file; return its ``shipper_done`` report (+ VmHWM)."""
    cmd = ship_cmd(
        url,
        state,
        "--path",
        str(log),
        "--service",
        "bench-app",
        "--host",
        "bench-node",
        "--batch-size",
        str(batch),
        "--batch-seconds",
        "0.5",
        "--heartbeat-seconds",
        "60",
        "--multiline-timeout",
        "0.2",
        "--no-follow",
    )
    return run_to_done(cmd, state)


def report(title: str, done: dict[str, Any], lines: int, events: int) -> None:
    wall = done["wall_seconds"]
    loop = done["elapsed_seconds"]
    print(title)
    print(
        f"   {lines / wall:,.0f} lines/s, {events / wall:,.0f} events/s over {wall:.2f} s "
        f"wall (process start to exit); {lines / loop:,.0f} lines/s over the "
        f"{loop:.2f} s shipping loop"
    )
    print(
        f"   accepted {done['accepted']:,}, duplicates {done['duplicates']:,}, "
        f"requests {done['requests']:,}, peak RSS {done['max_rss_mb']:.1f} MB "
        f"(sampled VmHWM {done['vmhwm_mb']:.1f} MB), cpu {done['cpu_seconds']:.2f} s"
    )
    print(
        f"   reader: read {done['reader_read_seconds']:.2f} s, parse+encode "
        f"{done['reader_parse_seconds']:.2f} s, waiting for queue room "
        f"{done['reader_put_wait_seconds']:.2f} s; sender: http {done['http_seconds']:.2f} s, "
        f"waiting for chunks {done['wait_seconds']:.2f} s; stamp writes "
        f"{done.get('tail_stamp_writes', 0)}, checkpoint commits {done['cursor_commits']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--skip-null", action="store_true", help="only the real server")
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    log = OUT / "app.log"
    lines, events = make_log(log, args.lines)
    print(f"log: {lines:,} lines, {events:,} events, {log.stat().st_size / 1e6:.1f} MB")

    if not args.skip_null:
        sink, url = start_null_sink()
        try:
            done = run_shipper(url, OUT / "state-null", log, args.batch_size)
        finally:
            sink.terminate()
            sink.wait(timeout=10)
        report(f"1. tail -> null sink (batch {args.batch_size}):", done, lines, events)

    server = Server(OUT / "data").start()
    try:
        done = run_shipper(server.url, OUT / "state-server", log, args.batch_size)
        stored = int(server.get("/info")["counts"]["events"])
    finally:
        server.stop()
    report(f"2. tail -> real server (batch {args.batch_size}):", done, lines, events)
    # The shipper's node_online/heartbeat events are stored too.
    file_events = stored - done["heartbeats"]
    print(f"   store: {stored:,} events ({file_events:,} from the file, expected {events:,})")
    return 0 if file_events == events else 1


if __name__ == "__main__":
    sys.exit(main())
