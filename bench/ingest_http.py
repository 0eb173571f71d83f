"""End-to-end HTTP ingest: a real uvicorn server (``devmesh serve``) and a load client.

    python bench/ingest_http.py [--events 200000] [--batch 1000] [--concurrency 4]
                                [--backend sqlite|mysql]

With --compare-mining it runs the same load with template mining on and off (target: mining
slows ingest by at most 20%); --no-detect serves without the detection loop, which isolates
mining's own cost (the loop reads every stored event back, and does more with templates).
The server runs as a subprocess on a free loopback port with a fresh data dir; the client
pre-serialises the batches (so it measures the server, not JSON encoding in the client) and
keeps ``--concurrency`` requests in flight over keep-alive connections (``http.client`` in
threads: lean, so the load client takes little of the two cores it shares with the server).
The server runs without semantic search (its model load and embedding worker would compete
for the same cores; embedding is measured by bench/vectors.py).
Target: ≥ 20k events/s with batches of 1,000.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synth import make_events, temp_mariadb
from tests.conftest import start_server

# Mining modes: the default (the miner in a child process), the miner inside the server's
# own process, and no mining.
MODES = {
    "process": "with template mining (default, miner process)",
    "inline": "with template mining in the server process",
    "off": "without mining",
}


def start(
    data_dir: str, url: str | None, mode: str, *, detect: bool = True
) -> tuple[subprocess.Popen[bytes], str]:
    """``devmesh serve`` on a fresh data dir (the test suite's starter) in a mining ``mode``,
    never with the embedding model; ``detect=False`` without the detection loop."""
    env = {
        "DEVMESH_LOG_LEVEL": "WARNING",
        "DEVMESH_DETECT__ENABLED": "true" if detect else "false",
        "DEVMESH_MINE_TEMPLATES": "false" if mode == "off" else "true",
        "DEVMESH_MINER_PROCESS": "true" if mode == "process" else "false",
        "DEVMESH_VECTORS_ENABLED": "false",
    }
    if url:
        env["DEVMESH_DATABASE_URL"] = url
    return start_server(Path(data_dir), env=env)


def batch_bodies(events: int, batch: int) -> list[bytes]:
    """``events`` synthetic events in time order, pre-serialised in batches of ``batch`` (so
    the load measures the server, not JSON encoding in the client)."""
    raw = sorted(make_events(events), key=lambda e: e["timestamp"])
    return [orjson.dumps(raw[i : i + batch]) for i in range(0, len(raw), batch)]


def ingest_connection(base: str) -> http.client.HTTPConnection:
    """An open keep-alive connection to ``base`` (``http://host:port``) with TCP_NODELAY: the
    lean load client's connection (shared with bench/scale_out.py, so both load the same way).
    """
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def post_batch(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, Any]:
    """POST one prebuilt JSON batch to ``/ingest/logs``; return the status and decoded answer."""
    conn.request("POST", "/ingest/logs", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, orjson.loads(response.read())


def run_threads(threads: list[threading.Thread]) -> float:
    """Start the load threads, wait for them all; return the elapsed seconds."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def load(base: str, bodies: list[bytes], concurrency: int) -> tuple[float, int, int]:
    """Send every body over ``concurrency`` keep-alive connections; return elapsed, counts.

    A lean client (``http.client``, one thread per connection, TCP_NODELAY) so the client's
    own CPU use stays small: the server and the client share the machine's two cores, and an
    asyncio httpx client measured less than half the server's rate here.
    """
    queue: Queue[bytes] = Queue()
    for body in bodies:
        queue.put(body)
    totals = [0, 0]
    lock = threading.Lock()

    def worker() -> None:
        conn = ingest_connection(base)
        while True:
            try:
                body = queue.get_nowait()
            except Empty:
                break
            status, data = post_batch(conn, body)
            if status != 200:
                raise SystemExit(f"server answered {status}: {data}")
            with lock:
                totals[0] += data["accepted"]
                totals[1] += data["duplicates"]
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    return run_threads(threads), totals[0], totals[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--backend", choices=["sqlite", "mysql"], default="sqlite")
    parser.add_argument("--no-mining", action="store_true", help="serve without template mining")
    parser.add_argument(
        "--compare-mining",
        action="store_true",
        help="run with and without mining and report the slowdown",
    )
    parser.add_argument(
        "--inline-mining",
        action="store_true",
        help="also run with the miner inside the server process (DEVMESH_MINER_PROCESS=false)",
    )
    parser.add_argument(
        "--only-inline", action="store_true", help="run only the in-process miner mode"
    )
    parser.add_argument(
        "--no-detect",
        action="store_true",
        help="serve without the detection loop (isolates mining's own cost: the loop reads "
        "every stored event back and does more with templates than without)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat; the best run is kept")
    args = parser.parse_args()
    bodies = batch_bodies(args.events, args.batch)
    print(
        f"backend={args.backend} events={args.events:,} batch={args.batch} "
        f"concurrency={args.concurrency} detection={'off' if args.no_detect else 'on'}"
    )
    rates: dict[str, float] = {}
    if args.only_inline:
        modes = ["inline"]
    else:
        modes = ["off" if args.no_mining else "process"]
        if args.compare_mining:
            modes = ["process", "off"]
        if args.inline_mining:
            modes.append("inline")
    runs: dict[str, list[float]] = {mode: [] for mode in modes}
    for n in range(args.rounds):
        for mode in modes:
            rate = run_once(args, bodies, mode)
            runs[mode].append(rate)
            rates[mode] = max(rates.get(mode, 0.0), rate)
            print(f"  round {n + 1} {mode:8}: {rate:,.0f} events/s", flush=True)
    for mode, rate in rates.items():
        print(
            f"{MODES[mode]:46}: {rate:,.0f} events/s (target >= 20,000: "
            f"{'ok' if rate >= 20_000 else 'MISSED'})"
        )
    if "off" in rates:
        for mode in ("process", "inline"):
            if mode in rates:
                slowdown = 1 - rates[mode] / rates["off"]
                # Each round runs the modes back to back, so a round's ratio is taken under
                # the same machine conditions; the median of those is steadier than the best.
                paired = statistics.median(
                    1 - on / off for on, off in zip(runs[mode], runs["off"], strict=True)
                )
                print(
                    f"mining ({mode}) slows ingest by {slowdown:.1%} best vs best, "
                    f"{paired:.1%} median of rounds (target <= 20%: "
                    f"{'ok' if max(slowdown, paired) <= 0.20 else 'MISSED'})"
                )


def run_once(args: argparse.Namespace, bodies: list[bytes], mode: str) -> float:
    db = temp_mariadb() if args.backend == "mysql" else nullcontext(None)
    with tempfile.TemporaryDirectory() as tmp, db as url:
        proc, base = start(tmp, url, mode, detect=not args.no_detect)
        try:
            warm = orjson.dumps(make_events(args.batch, seed=99))
            httpx.post(f"{base}/ingest/logs", content=warm, timeout=60).raise_for_status()
            elapsed, accepted, duplicates = load(base, bodies, args.concurrency)
            metrics = httpx.get(f"{base}/metrics", timeout=30).text
            info = httpx.get(f"{base}/info", timeout=10).json()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert accepted + duplicates == args.events, (accepted, duplicates)
    assert info["template_mining"] is (mode != "off")
    if not args.no_detect:
        # A detection loop that falls behind does its work after the load, not during it:
        # the rates of two modes compare fairly only with their backlogs beside them.
        backlog = next(
            (
                f"{sample.value:,.0f}"
                for family in text_string_to_metric_families(metrics)
                for sample in family.samples
                if sample.name == "devmesh_detection_backlog_events"
            ),
            "?",
        )
        print(
            f"  ({mode}: detection had {backlog} events left to examine when the load ended)",
            flush=True,
        )
    return accepted / elapsed


if __name__ == "__main__":
    main()
