"""Start-up of ``devmesh up`` on a fresh install's embedded defaults.

Runs ``devmesh up`` in a fresh data directory (sample load and its detection included) and
reports, from the moment the command starts:
- healthy: ``/health`` answers 200 (API, store, miner, detectors, graph loop up);
- semantic search ready: ``/search`` answers with hits (the embedding model loaded in the
  worker's thread and the sample's templates embedded);
- graph projected: the embedded FalkorDB started and the sample projected (``/status``
  counts do not show it, so the data dir's graph is read after shutdown instead).
Then stops it with SIGINT and reports the shutdown time.

    python -m bench.startup [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def one_run(graph: bool) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="devmesh-startup-"))
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEVMESH_")}
    env.update(
        {
            "DEVMESH_DATA_DIR": str(data),
            "HF_HUB_OFFLINE": "1",
            "DEVMESH_GRAPH_ENABLED": "true" if graph else "false",
            "DEVMESH_LOG_FORMAT": "json",
        }
    )
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devmesh.cli.main", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    figures: dict[str, float] = {}
    try:
        deadline = started + 180
        while time.monotonic() < deadline and "healthy" not in figures:
            if _get(f"{base}/health")[0] == 200:
                figures["healthy"] = time.monotonic() - started
            time.sleep(0.05)
        while time.monotonic() < deadline and "search" not in figures:
            status, body = _get(f"{base}/search?q=disk%20full&limit=1")
            if status == 200 and b"template_id" in body:
                figures["search"] = time.monotonic() - started
            time.sleep(0.1)
    finally:
        stop_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        figures["shutdown"] = time.monotonic() - stop_at
        figures["exit"] = float(proc.returncode)
        shutil.rmtree(data, ignore_errors=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-graph", action="store_true", help="graph projection off")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    runs = [one_run(not args.no_graph) for _ in range(args.runs)]
    for i, run in enumerate(runs, 1):
        print(
            f"run {i}: healthy {run.get('healthy', float('nan')):.1f} s, semantic search ready "
            f"{run.get('search', float('nan')):.1f} s, shutdown {run['shutdown']:.1f} s, "
            f"exit {run['exit']:.0f}"
        )
    for key, label in (("healthy", "healthy"), ("search", "search ready (model loaded)")):
        values = [r[key] for r in runs if key in r]
        if values:
            print(f"median {label}: {statistics.median(values):.1f} s  (target < 15 s)")


if __name__ == "__main__":
    main()
