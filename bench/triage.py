"""Benchmark triage answers: every eval scenario through every available backend.

    .venv/bin/python bench/triage.py [--ollama http://127.0.0.1:11434 --ollama-model TAG]
                                     [--llamacpp /path/model.gguf] [--no-vectors]
                                     [--cases NAME ...] [--json OUT]

For each scenario folder under ``tests/evals/cases`` a fresh SQLite store is loaded (the
scenario's logs and events plus its LogHub background, templates mined, and — unless
``--no-vectors`` — template vectors embedded into a local Qdrant index with the packaged
all-MiniLM-L6-v2), then the question is asked through:

* ``none`` — the deterministic rule-based diagnosis (always);
* ``ollama`` — when ``--ollama`` (or ``DEVMESH_REASON__OLLAMA_URL``) names a server;
* ``llamacpp`` — when ``--llamacpp`` names a GGUF file (needs ``llama-cpp-python``);
* ``keyword`` — the baseline to beat: the most frequent ERROR line of the noisiest service.

Printed per backend: pass rate, p50/p95 latency of ``ask`` (after one warm-up question,
so imports are not counted), fallbacks and invented ids dropped, and the failing cases
with what they missed. Targets for ``none``: pass rate >= 75 %, p50 < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.evals.harness import (
    Case,
    Outcome,
    all_cases,
    keyword_baseline,
    loaded_core,
    percentile,
    run_case,
)


def _backends(args: argparse.Namespace) -> list[tuple[str, str]]:
    out = [("none", "none")]
    url = args.ollama or os.environ.get("DEVMESH_REASON__OLLAMA_URL")
    if url:
        host = url.split("://", 1)[-1].rstrip("/")
        out.append(("ollama", f"ollama://{host}/{args.ollama_model}"))
    if args.llamacpp:
        out.append(("llamacpp", f"llamacpp://{Path(args.llamacpp).resolve()}"))
    return out


def _summary(name: str, outcomes: list[Outcome]) -> dict[str, Any]:
    latencies = [o.latency_ms for o in outcomes]
    passed = sum(o.passed for o in outcomes)
    fallbacks = sum(1 for o in outcomes if o.diagnosis and o.diagnosis.fallback_reason)
    dropped = sum(o.diagnosis.dropped_evidence_ids for o in outcomes if o.diagnosis)
    return {
        "backend": name,
        "cases": len(outcomes),
        "passed": passed,
        "pass_rate": round(passed / len(outcomes), 3) if outcomes else 0.0,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "fallbacks": fallbacks,
        "dropped_ids": dropped,
        "failures": {o.case: o.problems for o in outcomes if not o.passed},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ollama", help="Ollama base URL, e.g. http://127.0.0.1:11434")
    parser.add_argument("--ollama-model", default="qwen2.5:7b-instruct")
    parser.add_argument("--llamacpp", help="path of a GGUF model for llama.cpp")
    parser.add_argument("--no-vectors", action="store_true", help="skip embeddings")
    parser.add_argument("--cases", nargs="*", help="only these case names")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    cases: list[Case] = [c for c in all_cases() if not args.cases or c.name in args.cases]
    backends = _backends(args)
    results: dict[str, list[Outcome]] = {name: [] for name, _ in backends}
    results["keyword"] = []
    vectors = not args.no_vectors
    with tempfile.TemporaryDirectory(prefix="devmesh-triage-") as tmp:
        for i, case in enumerate(cases):
            with loaded_core(case, Path(tmp) / case.name, vectors=vectors) as core:
                for name, spec in backends:
                    if i == 0:
                        run_case(case, core, llm=spec)  # warm-up: imports, model load
                    outcome = run_case(case, core, llm=spec)
                    results[name].append(outcome)
                    mark = "pass" if outcome.passed else "FAIL"
                    print(
                        f"{case.name:34} {name:9} {mark} {outcome.latency_ms:8.1f} ms", flush=True
                    )
                results["keyword"].append(keyword_baseline(case, core))

    summaries = [_summary(name, outcomes) for name, outcomes in results.items()]
    print(f"\n{len(cases)} cases, vectors {'on' if vectors else 'off'}, graph off")
    print(f"{'backend':10} {'pass':>9} {'rate':>6} {'p50 ms':>8} {'p95 ms':>8} {'fallbacks':>9}")
    for s in summaries:
        print(
            f"{s['backend']:10} {s['passed']:>4}/{s['cases']:<4} {s['pass_rate']:>6.0%} "
            f"{s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} {s['fallbacks']:>9}"
        )
    for s in summaries:
        for case_name, problems in s["failures"].items():
            print(f"  {s['backend']} failed {case_name}: {'; '.join(problems)}")
    if args.json:
        args.json.write_text(json.dumps({"vectors": vectors, "backends": summaries}, indent=2))
    none = summaries[0]
    ok = none["pass_rate"] >= 0.75 and none["p50_ms"] < 1000
    print(f"\ntargets (none: pass >= 75 %, p50 < 1 s): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
