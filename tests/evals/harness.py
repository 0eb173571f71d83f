"""The triage eval harness: scenario folders in, a scored diagnosis per scenario out.

A case folder holds ``case.yaml`` (the question, the window, what a good answer must say and
cite), ``logs.jsonl`` (log objects as ``devmesh import`` takes them), optionally
``events.jsonl`` (node events such as deployments) and ``topology.yaml`` (declared
dependencies). Two conveniences keep the files readable:

* a log object may carry ``"repeat": N`` and ``"every": "30s"``: it stands for N events
  that far apart (``{n}`` in the message becomes the repetition number) — a burst of 120
  identical proxy errors is one line, not 120;
* ``background`` in ``case.yaml`` lays real LogHub lines (``../shared/data/loghub-2k``)
  evenly over the baseline and the window, as the noise every real fleet has.

``case.yaml`` keys: ``question``, ``since``/``until`` (ISO), optional ``service``,
``host``, ``runbooks`` (a folder of case runbooks; default the bundled ones), and the
expectations: ``must_mention`` (terms the root cause must contain, case-insensitive; an
entry may be a list of alternatives), ``must_cite`` (message or template substrings some
cited evidence must contain; alternatives as lists) and ``origin`` (expected origin
service, optional).
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from devmesh_core import services
from devmesh_core.config import Settings
from devmesh_core.models import to_utc
from devmesh_core.reason.models import Diagnosis
from devmesh_core.runtime import Core
from devmesh_core.store import open_store
from devmesh_core.timeparse import parse_duration

CASES_DIR = Path(__file__).resolve().parent / "cases"
LOGHUB_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "loghub-2k"
_LEVEL_HINT = re.compile(r"fail|error|denied|invalid|refused|unable|cannot", re.IGNORECASE)
_COMPONENT = re.compile(r"^([A-Za-z_.-]+)")


@dataclass(slots=True)
class Case:
    """One scenario and its expectations."""

    name: str
    path: Path
    question: str
    since: datetime
    until: datetime
    must_mention: list[list[str]]
    must_cite: list[list[str]]
    origin: str | None = None
    service: str | None = None
    host: str | None = None
    background: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    """How one diagnosis scored against its case."""

    case: str
    passed: bool
    problems: list[str]
    diagnosis: Diagnosis | None
    latency_ms: float


def _alternatives(values: Any) -> list[list[str]]:
    out: list[list[str]] = []
    for value in values or []:
        out.append([str(v) for v in value] if isinstance(value, list) else [str(value)])
    return out


def load_case(path: Path) -> Case:
    """Read a case folder's ``case.yaml``."""
    spec = yaml.safe_load((path / "case.yaml").read_text(encoding="utf-8"))
    return Case(
        name=path.name,
        path=path,
        question=str(spec["question"]),
        since=to_utc(datetime.fromisoformat(str(spec["since"]).replace("Z", "+00:00"))),
        until=to_utc(datetime.fromisoformat(str(spec["until"]).replace("Z", "+00:00"))),
        must_mention=_alternatives(spec.get("must_mention")),
        must_cite=_alternatives(spec.get("must_cite")),
        origin=spec.get("origin"),
        service=spec.get("service"),
        host=spec.get("host"),
        background=list(spec.get("background") or []),
        raw=spec,
    )


def all_cases(root: Path = CASES_DIR) -> list[Case]:
    """Every case folder under ``root``, by name."""
    return [load_case(p) for p in sorted(root.iterdir()) if (p / "case.yaml").is_file()]


def expand(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Log objects with ``repeat``/``every`` unrolled into single events."""
    for item in items:
        repeat = int(item.pop("repeat", 1))
        every = parse_duration(str(item.pop("every", "1s")))
        start = to_utc(datetime.fromisoformat(str(item["timestamp"]).replace("Z", "+00:00")))
        for n in range(repeat):
            out = dict(item)
            out["timestamp"] = (start + every * n).isoformat()
            out["message"] = str(item["message"]).replace("{n}", str(n + 1))
            yield out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def background_events(case: Case, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """LogHub lines spread evenly over ``[start, end)`` as the case's background."""
    out: list[dict[str, Any]] = []
    for spec in case.background:
        source = str(spec["source"])
        lines = int(spec.get("lines", 200))
        host = str(spec.get("host", source.lower()))
        rows = _loghub_rows(source)[:lines]
        if not rows:
            continue
        step = (end - start) / len(rows)
        for i, (component, level, content) in enumerate(rows):
            service = str(spec.get("service") or component)
            out.append(
                {
                    "timestamp": (start + step * i).isoformat(),
                    "service": service,
                    "host": host,
                    "level": level,
                    "message": content,
                    "source": f"loghub-{source.lower()}",
                }
            )
    return out


def _loghub_rows(source: str) -> list[tuple[str, str, str]]:
    """(component, level, content) of a LogHub 2k structured file."""
    path = LOGHUB_DIR / source / f"{source}_2k.log_structured_corrected.csv"
    if not path.is_file():
        return []
    rows: list[tuple[str, str, str]] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        for row in csv.DictReader(handle):
            content = (row.get("Content") or "").strip()
            if not content:
                continue
            found = _COMPONENT.match(row.get("Component") or source.lower())
            component = (found.group(1) if found else source.lower()).lower() or source.lower()
            raw_level = (row.get("Level") or "").strip().lower()
            level = {
                "error": "ERROR",
                "warn": "WARNING",
                "warning": "WARNING",
                "notice": "INFO",
                "info": "INFO",
                "fatal": "CRITICAL",
            }.get(raw_level)
            if level is None:
                level = "WARNING" if _LEVEL_HINT.search(content) else "INFO"
            rows.append((component, level, content))
    return rows


def case_events(case: Case, baseline_factor: float) -> list[dict[str, Any]]:
    """Every event of a case: its logs and node events (unrolled) plus the background."""
    items = [*_jsonl(case.path / "logs.jsonl"), *_jsonl(case.path / "events.jsonl")]
    events = list(expand(items))
    start = case.since - (case.until - case.since) * baseline_factor
    events.extend(background_events(case, start, case.until))
    return events


def case_settings(
    case: Case, data_dir: Path, *, vectors: bool = False, llm: str = "none"
) -> Settings:
    """Settings for running one case in its own data directory."""
    topology = case.path / "topology.yaml"
    runbooks = case.raw.get("runbooks")
    reason: dict[str, Any] = {"use_graph": False, "llm": llm}
    if runbooks:
        reason["runbooks_dir"] = str((case.path / str(runbooks)).resolve())
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'devmesh.db'}",
        vectors_enabled=vectors,
        topology_file=topology if topology.is_file() else None,
        reason=reason,  # type: ignore[arg-type]
    )


@contextmanager
def loaded_core(
    case: Case, data_dir: Path, *, vectors: bool = False, llm: str = "none"
) -> Iterator[Core]:
    """A :class:`Core` over a fresh store holding the case's events (templates mined;
    vectors embedded when on), closed afterwards."""
    settings = case_settings(case, data_dir, vectors=vectors, llm=llm)
    settings.ensure_data_dir()
    store = open_store(settings.effective_database_url)
    miner = services.open_miner(settings, store)
    try:
        events = case_events(case, settings.reason.baseline_factor)
        report = services.ingest(store, events, default_source="eval", miner=miner)
        if report.rejected:
            raise ValueError(f"{case.name}: rejected events: {report.rejected[:3]}")
    finally:
        if miner is not None:
            miner.close()
    store.close()
    core = Core.open(settings, vectors=vectors)
    try:
        if vectors and core.vector_index is not None and core.embedder is not None:
            from devmesh_core.vectors import EmbeddingWorker

            EmbeddingWorker(core.store, core.vector_index, core.embedder).run_once()
        yield core
    finally:
        core.close()


def score(case: Case, diagnosis: Diagnosis) -> list[str]:
    """What the diagnosis got wrong against the case (empty = pass)."""
    problems: list[str] = []
    text = diagnosis.root_cause.lower()
    for options in case.must_mention:
        if not any(o.lower() in text for o in options):
            problems.append(f"root cause does not mention {' or '.join(options)!r}")
    cited = [e.text.lower() for e in diagnosis.evidence]
    for options in case.must_cite:
        if not any(o.lower() in t for o in options for t in cited):
            problems.append(f"no cited evidence contains {' or '.join(options)!r}")
    if case.origin is not None and diagnosis.origin_service != case.origin:
        problems.append(f"origin {diagnosis.origin_service!r}, expected {case.origin!r}")
    return problems


def run_case(case: Case, core: Core, *, llm: str | None = None) -> Outcome:
    """Ask the case's question against a loaded core and score the answer."""
    from devmesh_core.reason import ask

    started = time.perf_counter()
    diagnosis = ask(
        core,
        case.question,
        service=case.service,
        host=case.host,
        since=case.since,
        until=case.until,
        llm=llm,
    )
    latency = (time.perf_counter() - started) * 1000
    problems = score(case, diagnosis)
    return Outcome(case.name, not problems, problems, diagnosis, latency)


def keyword_baseline(case: Case, core: Core) -> Outcome:
    """The naive answer to compare with: the most frequent error line of the noisiest
    service in the window, as the root cause."""
    from devmesh_core.models import Level
    from devmesh_core.reason.models import Evidence
    from devmesh_core.store.base import LogQuery

    started = time.perf_counter()
    counts: dict[str, int] = {}
    lines: dict[tuple[str, str], list[Any]] = {}
    cursor = None
    while True:
        page = core.store.query(
            LogQuery(
                level=Level.ERROR,
                start_time=case.since,
                end_time=case.until,
                limit=5_000,
                cursor=cursor,
            )
        )
        for ev in page.events:
            counts[ev.service] = counts.get(ev.service, 0) + 1
            lines.setdefault((ev.service, ev.template_id or ev.message), []).append(ev)
        if page.next is None:
            break
        cursor = page.next
    if counts:
        noisiest = max(counts, key=lambda s: (counts[s], s))
        (_, _), events = max(
            ((k, v) for k, v in lines.items() if k[0] == noisiest), key=lambda kv: len(kv[1])
        )
        ev = events[0]
        diagnosis = Diagnosis(
            question=case.question,
            root_cause=f"{noisiest}: {ev.message}",
            confidence=0.3,
            origin_service=noisiest,
            evidence=[Evidence(id=f"event:{ev.id}", kind="event", text=ev.message)],
            backend="keyword",
        )
    else:
        diagnosis = Diagnosis(question=case.question, root_cause="no errors", confidence=0.0)
    latency = (time.perf_counter() - started) * 1000
    problems = score(case, diagnosis)
    return Outcome(case.name, not problems, problems, diagnosis, latency)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]
