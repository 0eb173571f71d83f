"""Incident detection bench: BGL alert bursts, and the scripted outage scenario.

Both run the product's pipeline, as in the server: events are shipped in batches (at most
50 events or 2 s of log time, the shipper's defaults) through ``services.ingest`` with the
real template miner into a real SQLite store in a scratch data dir, and after each batch
the detection loop's ``DetectionRunner`` makes one pass over what was stored (reading the
rows back, with their mined template ids), with the batch's last log time as the clock.

BGL (``../shared/data/loghub-2k/BGL``): service = the BGL component, host = the node, level
FATAL → CRITICAL, SEVERE → ERROR (the store's own aliases). Ground truth: lines whose
``Label`` is not ``-`` are alerts; an *alert burst* is the alert lines of one category
(label) within a window of ``--window`` seconds (default 3600) from the burst's first line.

* recall = bursts detected / bursts, where a burst is detected when at least one of its
  alert lines is named (``event_ids``) by a signal kept in an incident's timeline;
* precision = incidents whose signals name at least one alert line / incidents opened.

The scenario (a database dies → clients log connection refused → web 502s) must yield
exactly one incident, origin ``postgres``, opened within 60 s of the first signal.

Run: ``.venv/bin/python -m bench.detect`` (``--set field=value`` overrides a
``DetectSettings`` field, for trying variants; the figures to report use none).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devmesh_core import services
from devmesh_core.config import Settings
from devmesh_core.detect.loop import DetectionRunner, build_detector, incident_service
from devmesh_core.detect.models import Incident, Signal
from devmesh_core.detect.replay import SCENARIO_DEPENDENCIES, outage_scenario
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.log import configure_logging
from devmesh_core.runtime import Core

BGL = Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub-2k" / "BGL"
BATCH_EVENTS = 50  # ingest/config.py batch_max_events default
BATCH_SECONDS = 2.0  # ingest/config.py batch_max_seconds default


@dataclass
class Burst:
    """Alert lines of one category within a window from the first."""

    label: str
    lines: list[int]
    start: float


@dataclass
class PipelineResult:
    """What a pipeline replay produced: incidents (any state), every signal raised, and
    the stored row id → the producer's ``source_id`` (to map evidence back to lines)."""

    incidents: list[Incident]
    signals: list[Signal]
    source_of: dict[int, str]
    templates: int
    seconds: float
    template_of: dict[str, str] = field(default_factory=dict)
    passes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _timestamp(row: Mapping[str, str]) -> datetime:
    """Epoch seconds of the ``Timestamp`` column plus the microseconds of ``Time``."""
    micros = row["Time"].rsplit(".", 1)[-1]
    base = datetime.fromtimestamp(int(row["Timestamp"]), UTC)
    return base + timedelta(microseconds=int(micros) if micros.isdigit() else 0)


def load_bgl(path: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The BGL lines as API ingest items (``source_id`` = ``bgl:<LineId>``) and the alert
    label by source id."""
    items: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    with (path / "BGL_2k.log_structured_corrected.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            source_id = f"bgl:{row['LineId']}"
            items.append(
                {
                    "timestamp": _timestamp(row).isoformat(),
                    "service": row["Component"] or "unknown",
                    "host": row["Node"] or "unknown",
                    "level": row["Level"],
                    "message": row["Content"],
                    "source_id": source_id,
                }
            )
            if row["Label"] != "-":
                labels[source_id] = row["Label"]
    items.sort(key=lambda i: i["timestamp"])
    return items, labels


def bursts_of(
    items: Sequence[Mapping[str, Any]], labels: Mapping[str, str], window: float
) -> list[Burst]:
    """Alert lines of one category within ``window`` seconds of the burst's first line."""
    open_bursts: dict[str, Burst] = {}
    done: list[Burst] = []
    for item in items:
        label = labels.get(item["source_id"])
        if label is None:
            continue
        ts = datetime.fromisoformat(item["timestamp"]).timestamp()
        burst = open_bursts.get(label)
        if burst is not None and ts - burst.start <= window:
            burst.lines.append(int(item["source_id"].split(":")[1]))
            continue
        if burst is not None:
            done.append(burst)
        open_bursts[label] = Burst(label, [int(item["source_id"].split(":")[1])], ts)
    done.extend(open_bursts.values())
    return sorted(done, key=lambda b: b.start)


def shipping_batches(items: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Group items as the shipper sends them: at most 50 events or 2 s of log time."""
    batch: list[dict[str, Any]] = []
    first = 0.0
    for item in items:
        ts = datetime.fromisoformat(item["timestamp"]).timestamp()
        if batch and (len(batch) >= BATCH_EVENTS or ts - first > BATCH_SECONDS):
            yield batch
            batch = []
        if not batch:
            first = ts
        batch.append(item)
    if batch:
        yield batch


def run_pipeline(
    items: Sequence[dict[str, Any]],
    detect: DetectSettings,
    *,
    dependencies: Mapping[str, Sequence[str]] | None = None,
) -> PipelineResult:
    """Ship ``items`` (time order) through ingest + miner + store + detection passes in a
    scratch data dir; see the module docstring."""
    deps = {k: set(v) for k, v in (dependencies or {}).items()}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=Path(tmp),
            vectors_enabled=False,
            detect=detect,
        )
        core = Core.open(settings, vectors=False)
        miner = services.open_miner(settings, core.store)
        core.miner = miner
        try:
            runner = DetectionRunner(core, build_detector(core, lambda s: deps.get(s, set())))
            runner.watermark = 0  # replay from the first stored event
            started = time.perf_counter()
            passes = 0
            last: datetime | None = None
            for batch in shipping_batches(items):
                report = services.ingest(core.store, batch, default_source="bench", miner=miner)
                if report.rejected:
                    raise SystemExit(f"rejected: {report.rejected[:3]}")
                last = datetime.fromisoformat(batch[-1]["timestamp"])
                runner.run_pass(now=last)
                passes += 1
            elapsed = time.perf_counter() - started
            store: Any = core.store
            rows = store.run(
                lambda cur: (
                    cur.execute("SELECT id, source_id, template_id FROM logs"),
                    cur.fetchall(),
                )[1],
                write=False,
            )
            return PipelineResult(
                incidents=incident_service(core).list(limit=1_000),
                signals=list(runner.detector.signals),
                source_of={int(i): str(s) for i, s, _ in rows},
                template_of={str(s): str(t) for _, s, t in rows},
                templates=core.store.template_count(),
                seconds=elapsed,
                passes=passes,
            )
        finally:
            if miner is not None:
                miner.close()
            core.close()


def score_bgl(
    result: PipelineResult,
    items: Sequence[dict[str, Any]],
    labels: Mapping[str, str],
    window: float,
) -> dict[str, Any]:
    """Recall over alert bursts and precision over incidents (see the module docstring)."""
    bursts = bursts_of(items, labels, window)
    flagged: set[int] = set()
    true_incidents = 0
    false_kinds: Counter[str] = Counter()
    for incident in result.incidents:
        named = {result.source_of.get(i, "") for s in incident.signals for i in s.event_ids}
        alerts = {int(n.split(":")[1]) for n in named if n in labels}
        flagged |= alerts
        true_incidents += bool(alerts)
        if not alerts:
            false_kinds[incident.signals[0].kind if incident.signals else "?"] += 1
    detected = [b for b in bursts if flagged & set(b.lines)]
    missed = [b for b in bursts if not flagged & set(b.lines)]
    opened = len(result.incidents)
    return {
        "lines": len(items),
        "alert_lines": len(labels),
        "bursts": len(bursts),
        "bursts_detected": len(detected),
        "recall": len(detected) / len(bursts) if bursts else 0.0,
        "incidents": opened,
        "incidents_with_alerts": true_incidents,
        "precision": true_incidents / opened if opened else 0.0,
        "false_incidents_by_first_signal": dict(false_kinds),
        "signals": len(result.signals),
        "signals_by_kind": dict(Counter(s.kind for s in result.signals)),
        "templates": result.templates,
        "passes": result.passes,
        "replay_seconds": round(result.seconds, 2),
        "missed": [f"{b.label}@line{b.lines[0]}({len(b.lines)})" for b in missed],
    }


def bgl(detect: DetectSettings, window: float) -> dict[str, Any]:
    """Replay BGL through the pipeline and score it."""
    items, labels = load_bgl(BGL)
    return score_bgl(run_pipeline(items, detect), items, labels, window)


def scenario(detect: DetectSettings) -> dict[str, Any]:
    """The outage scenario through the pipeline: incidents, origin, time to opening."""
    events, outage = outage_scenario(datetime(2026, 1, 1, tzinfo=UTC))
    items = [
        {
            "timestamp": e.timestamp.isoformat(),
            "service": e.service,
            "host": e.host,
            "level": e.level.value,
            "message": e.message,
            "source_id": f"scenario:{e.id}",
            **({"event_type": e.event_type} if e.event_type else {}),
        }
        for e in sorted(events, key=lambda e: (e.timestamp, e.id))
    ]
    result = run_pipeline(items, detect, dependencies=SCENARIO_DEPENDENCIES)
    first_signal = min((s.at for s in result.signals), default=None)
    incident = result.incidents[0] if result.incidents else None
    return {
        "incidents": len(result.incidents),
        "origin": incident.origin_service if incident else None,
        "services": incident.services if incident else [],
        "opened_after_first_signal_s": (
            (incident.opened_at - first_signal) / timedelta(seconds=1)
            if incident and first_signal
            else None
        ),
        "opened_after_outage_s": (
            (incident.opened_at - outage) / timedelta(seconds=1) if incident else None
        ),
        "signals": len(result.signals),
    }


def _overrides(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--window", type=float, default=3600, help="seconds of a burst")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="DetectSettings override"
    )
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--no-scenario", action="store_true")
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    overrides = _overrides(args.set)
    detect = DetectSettings(**overrides)
    b = bgl(detect, args.window)
    label = f"overrides {overrides}" if overrides else "default settings"
    if args.json:
        print(json.dumps(b))
    print(
        f"BGL 2k replay through ingest+miner+store+detection ({b['lines']} lines, "
        f"{b['templates']} templates, {b['alert_lines']} alert lines, {b['bursts']} alert "
        f"bursts, window {args.window:g}s, {label})"
    )
    print(f"  recall    {b['recall']:.3f}  ({b['bursts_detected']}/{b['bursts']} bursts)")
    print(
        f"  precision {b['precision']:.3f}  ({b['incidents_with_alerts']}/{b['incidents']} "
        "incidents name an alert line)"
    )
    print(f"  signals {b['signals']} {b['signals_by_kind']}")
    false_kinds = b["false_incidents_by_first_signal"]
    print(f"  incidents without an alert line, by first signal: {false_kinds}")
    print(f"  {b['passes']} ingest batches + passes, {b['replay_seconds']}s")
    print(f"  missed bursts: {', '.join(b['missed']) or 'none'}")
    if args.no_scenario:
        return
    s = scenario(detect)
    ok = (
        s["incidents"] == 1
        and s["origin"] == "postgres"
        and s["opened_after_first_signal_s"] is not None
        and s["opened_after_first_signal_s"] <= 60
    )
    print("Outage scenario through the same pipeline (postgres dies → api refused → web 502)")
    print(f"  incidents {s['incidents']}, origin {s['origin']}, services {s['services']}")
    print(
        f"  opened {s['opened_after_first_signal_s']}s after the first signal "
        f"({s['opened_after_outage_s']}s after the outage); {s['signals']} signals "
        f"-> {'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
