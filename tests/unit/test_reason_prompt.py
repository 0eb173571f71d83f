"""The compact prompt a small local model gets: short, bounded, draft first.

Measured with Qwen2.5-Coder-1.5B on two cores (``bench/triage.py --llamacpp``), every
prompt token costs ~40 ms and every answer token ~0.1-0.2 s, so these tests pin the
bounds that keep a diagnosis near 30 s: few evidence items, sample events folded into
their templates, a schema without free-text lists, and the format in the (cached) system
prompt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devmesh_core.reason.diagnose import _with_draft, rule_diagnosis
from devmesh_core.reason.prompt import (
    ANSWER_CITED,
    COMPACT_EVIDENCE,
    build_prompt,
    output_schema,
    select_evidence,
    system_prompt,
)
from devmesh_core.reason.redact import Redactor
from devmesh_core.reason.retrieval import EvidenceBundle, Retriever
from tests.evals.harness import CASES_DIR, load_case, loaded_core

CASE = load_case(CASES_DIR / "oom-killed-dependency")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvidenceBundle]:
    with loaded_core(CASE, tmp_path_factory.mktemp("prompt")) as core:
        retriever = Retriever(core)
        scope = retriever.scope(CASE.question, since=CASE.since, until=CASE.until)
        yield retriever.retrieve(scope)


def test_compact_selection_leads_with_the_draft_and_folds_samples(
    bundle: EvidenceBundle,
) -> None:
    draft = rule_diagnosis(bundle)
    shown = select_evidence(bundle, draft, limit=COMPACT_EVIDENCE)
    ids = [e.id for e in shown]
    assert len(ids) <= COMPACT_EVIDENCE and len(set(ids)) == len(ids)
    cited_templates = [e.id for e in draft.evidence if e.kind == "template"]
    assert cited_templates and ids[: len(cited_templates)] == cited_templates
    # A sample event is not shown next to its template; service summaries are not items.
    samples = {f"event:{s.id}" for a in bundle.activities for s in a.samples[:1]}
    assert not samples & set(ids)
    assert all(e.kind != "service" for e in shown)


def test_compact_prompt_quotes_samples_and_moves_the_format_to_the_system_prompt(
    bundle: EvidenceBundle, tmp_path: Path
) -> None:
    from devmesh_core.config import Settings

    draft = rule_diagnosis(bundle)
    shown = select_evidence(bundle, draft, limit=COMPACT_EVIDENCE)
    redactor = Redactor(Settings(data_dir=tmp_path))
    prompt = build_prompt(bundle, redactor, hints=draft, evidence=shown, compact=True)
    assert "Answer as JSON" not in prompt and "Answer as JSON" in system_prompt(compact=True)
    assert "Draft by the rule-based analysis" in prompt and "Origin: postgres" in prompt
    # The template line quotes the concrete sample, not only the <*> pattern.
    assert "Killed process 23141 (postgres)" in prompt
    assert len(prompt) < 3_500  # about 800 tokens with the system prompt


def test_compact_schema_is_small_and_ordered(bundle: EvidenceBundle) -> None:
    ids = [e.id for e in bundle.evidence[:5]]
    schema = output_schema(bundle, ids, compact=True)
    props = schema["properties"]
    assert list(props) == ["origin_service", "evidence_ids", "root_cause", "confidence"]
    assert schema["required"] == list(props)
    assert props["evidence_ids"]["items"]["enum"] == ids
    assert props["evidence_ids"]["maxItems"] == ANSWER_CITED
    assert props["root_cause"]["maxLength"] <= 240
    assert schema["additionalProperties"] is False


def test_draft_facts_follow_a_confirming_answer_only(bundle: EvidenceBundle) -> None:
    draft = rule_diagnosis(bundle)
    confirmed = _with_draft("The OOM killer killed PostgreSQL.", "postgres", draft)
    assert confirmed.startswith("The OOM killer killed PostgreSQL.")
    assert draft.root_cause in confirmed
    # A correction (another origin) stands alone; a copy of the draft is not doubled.
    assert _with_draft("jellyfin crashed.", "jellyfin", draft) == "jellyfin crashed."
    assert _with_draft(draft.root_cause, "postgres", draft) == draft.root_cause
