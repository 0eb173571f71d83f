"""Node agent: time from approval to execution start, and the agent's idle CPU and RSS.

    python bench/agent.py [--requests 6] [--poll-interval 5] [--idle-seconds 30]

A real ``devmesh serve`` (SQLite, fresh data dir) and a real agent process
(``python -m devmesh.cli.agent``, the light entry point a systemd unit runs) with a fake
``systemctl`` first on its PATH that writes the wall-clock time it was started. Each request
is proposed and approved over the API; the latency is from the approval's answer to the fake
``systemctl`` starting. With pull-based polling the expected mean is about half the poll
interval (plus the request round trip), worst case one interval. Idle cost: the agent's CPU
time (utime+stime from /proc) over ``--idle-seconds`` with nothing to do, and its RSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import start_server

TOKEN = "bench-agent-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="devmesh-bench-agent-"))
    bin_dir = root / "bin"
    bin_dir.mkdir()
    starts = root / "starts"
    fake = bin_dir / "systemctl"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "restart" ]; then date +%s.%N >> "{starts}"; fi\n'
        'if [ "$1" = "is-active" ]; then echo active; fi\n'
    )
    fake.chmod(0o755)
    config = root / "actions.yaml"
    config.write_text(
        "allow:\n  bench1:\n    units: [nginx]\nroles:\n  'web:bob': [admin]\nverify_minutes: 0\n"
    )
    server, base = start_server(
        root / "server",
        env={"DEVMESH_API_TOKENS": TOKEN, "DEVMESH_ACTIONS__CONFIG_FILE": str(config)},
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    agent = subprocess.Popen(
        [sys.executable, "-m", "devmesh.cli.agent", "--server", base, "--token", TOKEN,
         "--host", "bench1", "--config", str(config),
         "--poll-interval", str(args.poll_interval), "--log-level", "WARNING"],
        env=env,
    )  # fmt: skip
    latencies: list[float] = []
    try:
        time.sleep(2.0)  # let the agent import and settle before measuring idle cost
        cpu0, t0 = _proc_cpu_seconds(agent.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_cpu = _proc_cpu_seconds(agent.pid) - cpu0
        idle_wall = time.monotonic() - t0
        idle_rss = _rss_mb(agent.pid)

        with httpx.Client(base_url=base, headers=AUTH, timeout=10) as client:
            for i in range(args.requests):
                made = client.post(
                    "/actions",
                    json={"action": "restart_unit", "params": {"unit": "nginx"},
                          "host": "bench1", "requested_by": "system:bench"},
                )  # fmt: skip
                made.raise_for_status()
                rid = made.json()["id"]
                seen = len(starts.read_text().splitlines()) if starts.exists() else 0
                client.post(
                    f"/actions/{rid}/approve",
                    json={"identity": {"platform": "web", "user_id": "bob"}},
                ).raise_for_status()
                approved_at = time.time()
                deadline = time.monotonic() + args.poll_interval * 3 + 10
                while time.monotonic() < deadline:
                    lines = starts.read_text().splitlines() if starts.exists() else []
                    if len(lines) > seen:
                        latencies.append(float(lines[seen]) - approved_at)
                        break
                    time.sleep(0.01)
                else:
                    raise SystemExit(f"request {i} was not executed in time")
                # desynchronise from the poll phase so the samples spread over the interval
                time.sleep((i * 0.37 * args.poll_interval) % args.poll_interval)
        busy_rss = _rss_mb(agent.pid)
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        server.terminate()
        server.communicate(timeout=30)

    print(f"poll interval {args.poll_interval:.1f} s, {len(latencies)} requests")
    print(
        "approval -> execution start: "
        f"mean {statistics.mean(latencies):.2f} s, median {statistics.median(latencies):.2f} s, "
        f"min {min(latencies):.2f} s, max {max(latencies):.2f} s"
    )
    print(
        f"agent idle: CPU {idle_cpu:.3f} s over {idle_wall:.0f} s "
        f"({100 * idle_cpu / idle_wall:.2f}% of one core), RSS {idle_rss:.1f} MB "
        f"(after executing: {busy_rss:.1f} MB)"
    )


if __name__ == "__main__":
    main()
