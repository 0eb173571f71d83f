"""Benchmark template embeddings and semantic search (real model, real Qdrant local mode).

    .venv/bin/python bench/vectors.py [--data /work/shared/data/loghub-2k] [--filler 10000]
                                      [--queries 60] [--dir DIR] [--json OUT]

1. **Embed each template once.** Every LogHub-2k ``Content`` line is ingested through
   ``devmesh_core.services.ingest`` with a real ``SignatureMiner`` into a temp SQLite store,
   then the ``EmbeddingWorker`` runs. The same lines are ingested a second time (shifted by
   a day, so they are new events of the same templates) and the worker runs again. The
   number of texts the model encoded must equal the number of distinct templates: nothing
   embedded twice, nothing per line. Exits 1 if not.
2. **Embedding speed**: templates/s of those worker runs (batch 32, one torch thread).
3. **Search latency at 10k+ points** in local mode: ``--filler`` random unit vectors (with
   payloads like real ones) are added to the same index as the real templates — random
   384-dim vectors score near 0 against any query, so results stay the real templates
   while every search scans all points. Reported: the query embedding alone, the index
   search alone (DevMesh's in-memory mirror vs Qdrant local mode's own search, unfiltered
   and filtered by service), and end to end (``search_templates``: embed + index + store,
   3 examples per hit). Target: p50 < 50 ms. Also: upsert rate to the local folder, a
   refresh pass over 10k points, and reopening the folder (with and without the mirror).

Figures are from a shared 2-core machine: other load moves them; the JSON keeps them all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from devmesh_core import services
from devmesh_core.log import configure_logging
from devmesh_core.store import open_store
from devmesh_core.templates.evaluation import load_loghub_dir
from devmesh_core.templates.miner import SignatureMiner
from devmesh_core.vectors import (
    EmbeddingWorker,
    SentenceTransformerEmbedder,
    VectorFilter,
    VectorPoint,
    search_templates,
)
from devmesh_core.vectors.qdrant_local import QdrantLocalIndex

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub-2k"
START = datetime(2026, 5, 1, tzinfo=UTC)
QUERIES = [
    "disk is full",
    "connection refused",
    "authentication failure",
    "out of memory",
    "timeout waiting for response",
    "block received from datanode",
    "user logged in",
    "kernel error detected",
    "task finished",
    "session closed",
    "permission denied",
    "failed to start service",
]


def _pct(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
    }


def _time(fn: Callable[[int], object], n: int) -> dict[str, float]:
    fn(0)  # warm-up
    samples = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1000)
    return _pct(samples)


def _events(name: str, contents: list[str], shift: timedelta) -> list[dict[str, Any]]:
    return [
        {
            "timestamp": (START + shift + timedelta(seconds=i)).isoformat(),
            "service": name.lower(),
            "host": f"{name.lower()}-1",
            "message": line,
        }
        for i, line in enumerate(contents)
        if line.strip()
    ]


def bench(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], bool]:
    logs = load_loghub_dir(args.data)
    if not logs:
        raise SystemExit(f"no LogHub *_structured*.csv under {args.data}")
    lines = sum(len(log.contents) for log in logs)
    store = open_store(f"sqlite:///{work / 'devmesh.db'}")
    miner = SignatureMiner(work / "miner")
    embedder = SentenceTransformerEmbedder()
    index = QdrantLocalIndex(work / "vectors", dim=embedder.dim)
    worker = EmbeddingWorker(store, index, embedder)
    out: dict[str, Any] = {"systems": [log.name for log in logs], "lines_per_pass": lines}

    start = time.perf_counter()
    embedder.load()
    out["model_load_s"] = round(time.perf_counter() - start, 1)

    passes = []
    embed_seconds = 0.0
    for n, shift in enumerate((timedelta(0), timedelta(days=1)), start=1):
        start = time.perf_counter()
        stored = 0
        for log in logs:
            report = services.ingest(store, _events(log.name, log.contents, shift), miner=miner)
            stored += report.accepted
        ingest_s = time.perf_counter() - start
        start = time.perf_counter()
        embedded = worker.run_once()
        took = time.perf_counter() - start
        embed_seconds += took
        passes.append(
            {
                "pass": n,
                "events_stored": stored,
                "ingest_s": round(ingest_s, 2),
                "templates_after": store.template_count(),
                "embedded_this_pass": embedded,
                "embed_s": round(took, 2),
            }
        )
    refresh = worker.refresh()  # what merges changed after embedding, if anything
    distinct = store.template_count()
    encoded = embedder.texts_encoded
    out["passes"] = passes
    out["distinct_templates"] = distinct
    out["texts_encoded"] = encoded
    out["index_points"] = index.count()
    out["refresh"] = {
        "deleted": refresh.deleted,
        "reembedded": refresh.reembedded,
        "updated": refresh.updated,
    }
    once = encoded == distinct == index.count() and passes[1]["embedded_this_pass"] == 0
    out["each_template_embedded_once"] = once
    out["templates_per_s"] = round(encoded / embed_seconds, 1) if embed_seconds else None

    # ------------------------------------------------------------------ search latency
    rng = np.random.default_rng(42)
    filler = rng.standard_normal((args.filler, embedder.dim)).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    services_ = [log.name.lower() for log in logs]
    start = time.perf_counter()
    for lo in range(0, args.filler, 500):
        index.upsert(
            [
                VectorPoint(
                    f"F{i}",
                    filler[i],
                    {
                        "template": f"filler {i}",
                        "services": [services_[i % len(services_)]],
                        "hosts": ["filler"],
                        "max_level": 20,
                        "count": 1,
                    },
                )
                for i in range(lo, min(lo + 500, args.filler))
            ]
        )
    out["filler_upsert_points_per_s"] = round(args.filler / (time.perf_counter() - start), 1)
    out["points_searched"] = index.count()
    start = time.perf_counter()
    worker.refresh()  # filler points have no template_id: scanned, left alone
    out["refresh_s"] = round(time.perf_counter() - start, 2)

    queries = [embedder.embed_one(q) for q in QUERIES]
    n = args.queries
    out["query_embedding"] = _time(lambda i: embedder.embed_one(QUERIES[i % len(QUERIES)]), n)
    by_service = VectorFilter(equals={"services": "hdfs"})
    latency: dict[str, Any] = {
        "mirror_unfiltered": _time(lambda i: index.search(queries[i % len(queries)], limit=30), n),
        "mirror_by_service": _time(
            lambda i: index.search(queries[i % len(queries)], limit=30, filter=by_service), n
        ),
    }
    latency["end_to_end"] = _time(
        lambda i: search_templates(store, index, embedder, QUERIES[i % len(QUERIES)]), n
    )
    latency["end_to_end_by_service"] = _time(
        lambda i: search_templates(
            store, index, embedder, QUERIES[i % len(QUERIES)], service="hdfs"
        ),
        n,
    )
    top = search_templates(store, index, embedder, "disk is full", limit=3, examples=0)
    out["sample_hits"] = [[round(h.score, 3), h.template.template] for h in top]
    index.close()

    start = time.perf_counter()
    QdrantLocalIndex(work / "vectors", dim=embedder.dim).close()
    out["reopen_with_mirror_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    plain = QdrantLocalIndex(work / "vectors", dim=embedder.dim, memory_search=False)
    out["reopen_s"] = round(time.perf_counter() - start, 2)
    few = max(10, n // 3)  # Qdrant's own filtered search is slow: fewer samples
    latency["qdrant_unfiltered"] = _time(
        lambda i: plain.search(queries[i % len(queries)], limit=30), few
    )
    latency["qdrant_by_service"] = _time(
        lambda i: plain.search(queries[i % len(queries)], limit=30, filter=by_service), few
    )
    plain.close()
    out["search"] = latency
    miner.close()
    store.close()
    return out, once


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--filler", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model loads by path; never try the hub
    configure_logging("console", "WARNING")
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        out, ok = bench(args, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="devmesh-bench-vectors-") as tmp:
            out, ok = bench(args, Path(tmp))
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if not ok:
        print(
            f"FAIL: {out['texts_encoded']} texts encoded for {out['distinct_templates']} "
            "distinct templates",
            file=sys.stderr,
        )
        return 1
    p50 = out["search"]["mirror_by_service"]["p50_ms"]
    print(
        f"OK: {out['distinct_templates']} templates embedded once each "
        f"({out['templates_per_s']}/s); filtered index search p50 {p50} ms "
        f"over {out['points_searched']} points",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
