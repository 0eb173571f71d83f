"""Node shipper bench: throughput and RSS from a real journal to a real server, and a crash loop.

    .venv/bin/python bench/shipper.py                       # 200k entries, throughput
    .venv/bin/python bench/shipper.py --batch-size 2000     # another batch size
    .venv/bin/python bench/shipper.py --crash-cycles 100    # kill -9 loop, exactly-once verdict

Throughput mode runs four measurements on the same journal (made once with
systemd-journal-remote under bench/out/, so cursors are real):

1. ``journalctl -o json --all`` alone into /dev/null: the floor set by journalctl;
2. the shipper into a null sink (an HTTP server that only parses and counts): the shipper's
   own capacity, without the DevMesh server's ingest cost;
3. the server alone: the same batches POSTed directly (no shipper, no journalctl);
4. the shipper into the real server (``devmesh serve``, SQLite): the end-to-end figure.

Shipper RSS is its own peak (``ru_maxrss`` at exit, cross-checked with /proc VmHWM while it
runs); journalctl is a separate process and not counted.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.journald import write_journal  # noqa: E402
from tests.conftest import ServeProcess, free_port  # noqa: E402

PYTHON = str(ROOT / ".venv" / "bin" / "python")
DEVMESH = str(ROOT / ".venv" / "bin" / "devmesh")
OUT = ROOT / "bench" / "out"
TOKEN = "bench-token"
UNITS = [
    "nginx",
    "postgresql",
    "sshd",
    "dockerd",
    "cron",
    "systemd-networkd",
    "kubelet",
    "node-exporter",
    "grafana",
    "prometheus",
]


# -- helpers -----------------------------------------------------------------------------------


def entries(start: int, count: int, host: str = "node1") -> Any:
    """Synthetic but journal-shaped entries: units, priorities, PIDs, a few binary messages."""
    base = 1_760_000_000_000_000
    rng = random.Random(start)
    for i in range(start, start + count):
        unit = UNITS[i % len(UNITS)]
        fields: dict[str, str | bytes] = {
            "__REALTIME_TIMESTAMP": str(base + i * 1000),
            "__MONOTONIC_TIMESTAMP": str(1_000_000 + i * 1000),
            "_BOOT_ID": "6d1d3c1b2a9e4f0e8c7b6a5f4e3d2c1b",
            "_MACHINE_ID": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "_HOSTNAME": host,
            "_SYSTEMD_UNIT": f"{unit}.service",
            "SYSLOG_IDENTIFIER": unit,
            "_COMM": unit[:15],
            "_PID": str(1000 + i % 97),
            "_UID": "0",
            "_TRANSPORT": "journal" if i % 3 else "stdout",
            "SYSLOG_FACILITY": "3",
            "PRIORITY": str(rng.choice("6666666543")),
            "MESSAGE": f"{unit}[{i}]: request id={i:08x} took {rng.randint(1, 900)} ms "
            f"path=/api/v1/items/{i % 313} status={rng.choice([200, 200, 404, 500])}",
        }
        if i % 1000 == 7:
            fields["MESSAGE"] = b"binary \xff\xfe payload " + str(i).encode()
        yield fields


def make_journal(directory: Path, count: int) -> Path:
    """A journal directory with ``count`` entries (reused if already built)."""
    marker = directory / f".complete-{count}"
    if marker.exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    started = time.perf_counter()
    write_journal(directory / "bench.journal", entries(0, count))
    marker.touch()
    print(
        f"  built {count} entries with systemd-journal-remote in "
        f"{time.perf_counter() - started:.1f}s -> {directory}"
    )
    return directory


class Server(ServeProcess):
    """``devmesh serve`` as a subprocess on a fresh data dir (or an existing one)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, token=TOKEN, port=port)


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    count = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        items = orjson.loads(body)
        _SinkHandler.count += len(items)
        reply = orjson.dumps({"accepted": len(items), "duplicates": 0, "rejected": []})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


def run_null_sink(port: int) -> None:
    """Hidden mode: an HTTP server that parses and counts bodies, nothing else."""
    ThreadingHTTPServer(("127.0.0.1", port), _SinkHandler).serve_forever()


def start_null_sink() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([PYTHON, __file__, "--null-sink", str(port)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("null sink did not start")


def ship_cmd(url: str, state: Path, *options: str) -> list[str]:
    """``devmesh ship`` to ``url`` with the bench token and state dir, plus ``options``."""
    return [
        PYTHON,
        "-m",
        "devmesh.cli.ship",
        "--server",
        url,
        "--token",
        TOKEN,
        "--state-dir",
        str(state),
        *options,
    ]


def shipper_cmd(
    url: str, state: Path, journal: Path, batch: int, *, follow: bool, fmt: str = "json"
) -> list[str]:
    return ship_cmd(
        url,
        state,
        "--directory",
        str(journal),
        "--start",
        "head",
        "--batch-size",
        str(batch),
        "--batch-seconds",
        "0.5",
        "--heartbeat-seconds",
        "5",
        "--follow" if follow else "--no-follow",
        "--format",
        fmt,
    )


def run_shipper(url: str, state: Path, journal: Path, batch: int, fmt: str) -> dict[str, Any]:
    """Run the shipper to completion; return its ``shipper_done`` figures (+ sampled VmHWM)."""
    return run_to_done(shipper_cmd(url, state, journal, batch, follow=False, fmt=fmt), state)


def run_to_done(cmd: list[str], state: Path) -> dict[str, Any]:
    """Run a ``devmesh.cli.ship`` command from a clean ``state`` dir to its exit; return its
    ``shipper_done`` report with ``wall_seconds`` and the sampled peak RSS (``vmhwm_mb``).

    Shared by the journald and file tail benches, so both measure the same way.
    """
    shutil.rmtree(state, ignore_errors=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hwm = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm[0] = max(hwm[0], int(line.split()[1]) / 1024)
            except OSError:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    done = None
    for line in err.splitlines():
        if b"shipper_done" in line:
            try:
                done = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
    if proc.returncode != 0 or done is None:
        sys.stderr.write(err.decode(errors="replace")[-3000:])
        raise RuntimeError(f"shipper failed with {proc.returncode}")
    done["wall_seconds"] = wall
    done["vmhwm_mb"] = hwm[0]
    return dict(done)


def journal_bodies(journal: Path, batch: int) -> list[bytes]:
    """The batches the shipper would send, prebuilt (for the server-alone measurement)."""
    from ingest.journald import EntryMapper

    mapper = EntryMapper("bench")
    out = subprocess.run(
        ["journalctl", "--directory", str(journal), "-o", "json", "--all"],
        capture_output=True,
        check=True,
    ).stdout
    events = [orjson.dumps(mapper.to_event(orjson.loads(line))) for line in out.splitlines()]
    return [b"[" + b",".join(events[i : i + batch]) + b"]" for i in range(0, len(events), batch)]


# -- modes -------------------------------------------------------------------------------------


def throughput(args: argparse.Namespace) -> None:
    work = OUT / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(
        f"journal: {args.entries} entries; load average {os.getloadavg()} on "
        f"{os.cpu_count()} cores (a shared machine: figures vary run to run)"
    )
    journal = make_journal(OUT / f"journal-{args.entries}", args.entries)

    for fmt in args.format:
        started = time.perf_counter()
        subprocess.run(
            ["journalctl", "--directory", str(journal), "-o", fmt, "--all"],
            stdout=subprocess.DEVNULL,
            check=True,
        )
        jc = time.perf_counter() - started
        print(f"\n1. journalctl -o {fmt} alone: {args.entries / jc:>9,.0f} entries/s ({jc:.2f}s)")

    for fmt in args.format:
        for batch in args.batch_size:
            sink, url = start_null_sink()
            try:
                done = run_shipper(url, work / "state-null", journal, batch, fmt)
            finally:
                sink.terminate()
                sink.wait()
            _report(f"2. shipper -o {fmt} -> null sink (batch {batch}):", done, args.entries)

    bodies = journal_bodies(journal, args.batch_size[0])
    server = Server(work / "data-alone").start()
    try:
        client = httpx.Client(
            base_url=server.url,
            timeout=120,
            headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
        )
        started = time.perf_counter()
        for body in bodies:
            client.post("/ingest/logs", content=body).raise_for_status()
        alone = time.perf_counter() - started
    finally:
        server.stop()
    print(
        f"\n3. server alone (batch {args.batch_size[0]}, POST prebuilt): "
        f"{args.entries / alone:>9,.0f} entries/s ({alone:.2f}s)"
    )

    for fmt in args.format:
        for batch in args.batch_size:
            server = Server(work / f"data-{fmt}-{batch}").start()
            try:
                done = run_shipper(server.url, work / "state-real", journal, batch, fmt)
                stored = server.get("/info")["counts"]["events"]
            finally:
                server.stop()
            _report(f"4. shipper -o {fmt} -> devmesh serve (batch {batch}):", done, args.entries)
            print(f"   stored: {stored} events (journal entries + the shipper's node events)")


def _report(title: str, done: dict[str, Any], count: int) -> None:
    rate = count / done["wall_seconds"]
    rss = max(done["max_rss_mb"], done["vmhwm_mb"])
    print(f"\n{title}")
    print(
        f"   {rate:>9,.0f} entries/s wall incl. startup ({done['wall_seconds']:.2f}s); "
        f"{done['rate_per_second']:,.0f}/s in the loop; shipper RSS peak {rss:.1f} MB "
        f"(ru_maxrss {done['max_rss_mb']:.1f}, VmHWM {done['vmhwm_mb']:.1f}) "
        f"{'OK' if rss < 60 else 'OVER 60 MB'}"
    )
    print(
        f"   reader thread: waiting on journalctl {done['reader_read_seconds']:.2f}s, "
        f"parse+filter+map+encode {done['reader_parse_seconds']:.2f}s, "
        f"blocked on a full queue {done['reader_put_wait_seconds']:.2f}s"
    )
    per = 1e6 / count
    print(
        f"   CPU: shipper {done['cpu_seconds']:.2f}s = {done['cpu_seconds'] * per:.0f} us/entry"
        f" (one free core: ~{count / max(done['cpu_seconds'], 1e-9):,.0f} entries/s), "
        f"journalctl {done['journalctl_cpu_seconds']:.2f}s = "
        f"{done['journalctl_cpu_seconds'] * per:.0f} us/entry"
    )
    print(
        f"   sender thread: HTTP (server time + transfer) {done['http_seconds']:.2f}s over "
        f"{done['requests']} requests, cursor commits {done['commit_seconds']:.2f}s "
        f"({done['cursor_commits']}), waiting for the reader {done['wait_seconds']:.2f}s"
    )


def crash_loop(args: argparse.Namespace) -> int:
    """kill -9 the shipper at random moments while the journal grows (and, in a few cycles,
    while the server is down and the shipper spools); then check the store."""
    work = OUT / "crash"
    shutil.rmtree(work, ignore_errors=True)
    journal = work / "journal"
    journal.mkdir(parents=True)
    state = work / "state"
    log = work / "shipper.log"
    config = work / "shipper.yaml"
    rng = random.Random(args.seed)
    written = args.initial
    write_journal(journal / "node.journal", entries(0, written))
    server = Server(work / "data").start()
    outages = set(rng.sample(range(1, args.crash_cycles), max(1, args.crash_cycles // 20)))
    kills = 0
    started = time.perf_counter()
    try:
        for cycle in range(args.crash_cycles):
            config.write_text(
                f"cursor_commit_seconds: {rng.choice([0, 0.5, 1.0])}\n"
                "retry: {initial_seconds: 0.05, max_seconds: 0.2}\n"
            )
            if cycle in outages:
                server.stop(kill=True)
            starts = log.read_bytes().count(b"shipper_starting") if log.exists() else 0
            with log.open("ab") as err:
                proc = subprocess.Popen(
                    [
                        *shipper_cmd(
                            server.url,
                            state,
                            journal,
                            rng.choice([5, 20, 50, 200]),
                            follow=True,
                            fmt=rng.choice(args.format),
                        ),
                        "--config",
                        str(config),
                        "--batch-seconds",
                        "0.1",
                    ],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            if rng.random() < 0.8:  # time the kill from start-up done, or kill during it
                deadline = time.monotonic() + 30
                while (
                    log.read_bytes().count(b"shipper_starting") <= starts
                    and time.monotonic() < deadline
                    and proc.poll() is None
                ):
                    time.sleep(0.02)
            stop_at = time.monotonic() + rng.uniform(0.05, args.max_run)
            more = rng.randint(0, args.append)  # the journal grows, as on a live node
            if more:
                time.sleep(rng.uniform(0, 0.3))
                write_journal(
                    journal / "node.journal",
                    entries(written, more, host=rng.choice(["node1", "node2"])),
                )
                written += more
            time.sleep(max(0.0, stop_at - time.monotonic()))
            proc.send_signal(signal.SIGKILL)
            if proc.wait() != -signal.SIGKILL:
                print(f"  cycle {cycle}: the shipper had exited on its own ({proc.returncode})")
            kills += 1
            if cycle in outages:
                server.start()
            if (cycle + 1) % 10 == 0:
                print(
                    f"  {cycle + 1} kill -9 cycles ({len([o for o in outages if o <= cycle])}"
                    f" during a server outage), {written} entries written, "
                    f"{server.get('/info')['counts']['events']} events stored"
                )
        final = subprocess.run(
            [
                *shipper_cmd(server.url, state, journal, 500, follow=False, fmt=args.format[0]),
                "--config",
                str(config),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=600,
        )
        if final.returncode != 0:
            sys.stderr.write(final.stderr.decode(errors="replace")[-3000:])
        events = server.events()
    finally:
        server.stop()
    print(f"  {time.perf_counter() - started:.0f}s; seed {args.seed}")
    return verdict(journal, events, kills)


def verdict(journal: Path, events: list[dict[str, Any]], kills: int) -> int:
    out = subprocess.run(
        ["journalctl", "--directory", str(journal), "-o", "json", "--all"],
        capture_output=True,
        check=True,
    ).stdout
    cursors = [orjson.loads(line)["__CURSOR"] for line in out.splitlines()]
    shipped = [e for e in events if e["source"] == "journald"]
    ids = [e["source_id"] for e in shipped]
    missing = set(cursors) - set(ids)
    extra = set(ids) - set(cursors)
    dupes = len(ids) - len(set(ids))
    by_id = sorted(shipped, key=lambda e: e["id"])
    seq = [int(e["source_id"].split(";")[1][2:], 16) for e in by_id]
    in_order = all(a < b for a, b in itertools.pairwise(seq))
    ok = not missing and not extra and not dupes and len(ids) == len(cursors)
    print(
        f"\ncrash loop: {kills} kill -9 cycles; journal {len(cursors)} entries; "
        f"store {len(ids)} journald events; missing {len(missing)}, duplicated {dupes}, "
        f"unknown {len(extra)}; arrival order {'kept' if in_order else 'NOT kept'}"
    )
    print(f"VERDICT: {'EXACTLY ONCE' if ok else 'FAILED'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1000])
    parser.add_argument(
        "--format", nargs="+", default=["json", "export"], choices=["json", "export"]
    )
    parser.add_argument("--crash-cycles", type=int, default=0)
    parser.add_argument("--initial", type=int, default=20_000, help="crash mode: first entries")
    parser.add_argument(
        "--append",
        type=int,
        default=500,
        help="crash mode: up to this many entries appended per cycle",
    )
    parser.add_argument(
        "--max-run",
        type=float,
        default=1.0,
        help="crash mode: longest run before the kill (seconds)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--null-sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.null_sink:
        run_null_sink(args.null_sink)
        return 0
    if args.crash_cycles:
        return crash_loop(args)
    throughput(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
