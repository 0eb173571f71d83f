"""The compact prompt a small local model gets: short, bounded, draft first.

Measured with Qwen2.5-Coder-1.5B on two cores (``bench/triage.py --llamacpp``), every
prompt token costs ~15-40 ms and every answer token ~0.1 s, so these tests pin the
bounds that keep a diagnosis near 30 s: few evidence items, sample events folded into
their templates, no steady background, a draft that does not repeat the evidence lines, a
schema without free-text lists, and the format in the (cached) system prompt; and what
made the model's own root cause right: the draft before the evidence, the origin's own
lines early, and the shape of the answer as the prompt's last line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devmesh_core.reason.diagnose import _with_draft, rule_diagnosis
from devmesh_core.reason.prompt import (
    ANSWER_CITED,
    COMPACT_ASK,
    COMPACT_ASK_DEPLOYED,
    COMPACT_EVIDENCE,
    PROMPT_MIN_SCORE,
    _clip,
    _steady_ids,
    build_prompt,
    output_schema,
    select_evidence,
    system_prompt,
)
from devmesh_core.reason.redact import Redactor
from devmesh_core.reason.retrieval import EvidenceBundle, Retriever
from tests.evals.harness import CASES_DIR, Case, load_case, loaded_core

CASE = load_case(CASES_DIR / "oom-killed-dependency")
DEPLOY_CASE = load_case(CASES_DIR / "bad-deployment")


def _retrieve(case: Case, tmp: Path) -> Iterator[EvidenceBundle]:
    with loaded_core(case, tmp) as core:
        retriever = Retriever(core)
        scope = retriever.scope(case.question, since=case.since, until=case.until)
        yield retriever.retrieve(scope)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvidenceBundle]:
    yield from _retrieve(CASE, tmp_path_factory.mktemp("prompt"))


@pytest.fixture(scope="module")
def deploy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvidenceBundle]:
    yield from _retrieve(DEPLOY_CASE, tmp_path_factory.mktemp("deploy"))


@pytest.fixture
def redactor(tmp_path: Path) -> Redactor:
    from devmesh_core.config import Settings

    return Redactor(Settings(data_dir=tmp_path))


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
    bundle: EvidenceBundle, redactor: Redactor
) -> None:
    draft = rule_diagnosis(bundle)
    shown = select_evidence(bundle, draft, limit=COMPACT_EVIDENCE)
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
    # Evidence first: asked for the origin first, a 1.5B model names the service the
    # question is about.
    assert list(props) == ["evidence_ids", "origin_service", "root_cause", "confidence"]
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


def test_steady_background_is_not_shown(bundle: EvidenceBundle) -> None:
    # The case's LogHub sshd noise ranks above the score floor but runs at its baseline
    # rate: it explains nothing and costs ~40 tokens a line.
    steady = _steady_ids(bundle)
    ranked_noise = [e.id for e in bundle.evidence if e.id in steady and e.score >= 0.5]
    assert ranked_noise, "the case should carry steady background above the score floor"
    assert PROMPT_MIN_SCORE == 0.5
    draft = rule_diagnosis(bundle)
    shown = {e.id for e in select_evidence(bundle, draft, limit=50)}
    assert not shown & set(ranked_noise)
    # What a conversation kept or the draft cites is shown even when steady.
    kept = select_evidence(bundle, draft, keep=ranked_noise[:1], limit=50)
    assert kept[0].id == ranked_noise[0]


def test_the_origins_own_lines_follow_the_draft(bundle: EvidenceBundle) -> None:
    draft = rule_diagnosis(bundle)
    assert draft.origin_service == "postgres"
    shown = select_evidence(bundle, draft, limit=COMPACT_EVIDENCE)
    cited = {e.id for e in draft.evidence}
    after = [e.service == "postgres" for e in shown if e.id not in cited]
    assert after[0] and after == sorted(after, reverse=True)  # postgres's lines lead the rest
    assert any("was terminated by signal" in e.text for e in shown)


def test_compact_prompt_leads_with_the_draft_and_ends_with_the_answer_shape(
    bundle: EvidenceBundle, redactor: Redactor
) -> None:
    draft = rule_diagnosis(bundle)
    shown = select_evidence(bundle, draft, limit=COMPACT_EVIDENCE)
    prompt = build_prompt(bundle, redactor, hints=draft, evidence=shown, compact=True)
    lines = prompt.split("\n")
    heads = [line.split(":", 1)[0].split(" (", 1)[0] for line in lines[:6]]
    assert heads == [
        "Question",
        "Window",
        "Named",
        "Draft by the rule-based analysis",
        "Depends on",
        "Warnings/errors per service",
    ]
    assert lines[-1] == COMPACT_ASK  # no deployment among this case's evidence
    # Log lines are quoted with single quotes: nothing for a small model to escape.
    assert '"' not in prompt and "'oom-kill'" in prompt
    full = build_prompt(bundle, redactor, hints=draft, evidence=shown).split("\n")
    assert full[-2].startswith("Draft by the rule-based") and "Answer as JSON" in full[-1]


def test_draft_quotes_samples_once_without_counts(
    bundle: EvidenceBundle, redactor: Redactor
) -> None:
    draft = rule_diagnosis(bundle)
    assert "Also: “" in draft.root_cause and "<*>" in draft.root_cause
    shown = select_evidence(bundle, draft, limit=COMPACT_EVIDENCE)
    prompt = build_prompt(bundle, redactor, hints=draft, evidence=shown, compact=True)
    line = next(x for x in prompt.split("\n") if x.startswith("Draft by"))
    # The quoted template became its sample; the further quotes and the counts, which the
    # evidence lines below repeat, are gone; the rest of the draft stays.
    assert "Distinguishing error: “" in line and "oom-kill" in line
    assert "<*>" not in line and "Also:" not in line and "x in the window" not in line
    assert "Symptoms downstream: jellyfin, nginx." in line
    assert len(line) < len(draft.root_cause)


def test_a_deployment_the_draft_blames_leads_the_answer_shape(
    deploy_bundle: EvidenceBundle, bundle: EvidenceBundle, redactor: Redactor
) -> None:
    draft = rule_diagnosis(deploy_bundle)
    assert any(e.kind == "deployment" for e in draft.evidence)
    shown = select_evidence(deploy_bundle, draft, limit=COMPACT_EVIDENCE)
    prompt = build_prompt(deploy_bundle, redactor, hints=draft, evidence=shown, compact=True)
    last = prompt.split("\n")[-1]
    assert COMPACT_ASK_DEPLOYED in last and last != COMPACT_ASK
    assert "version 2.4.0" in prompt  # the draft's deployment sentence stays
    # Without a deployment in the draft the shape is the plain one.
    other = rule_diagnosis(bundle)
    shown = select_evidence(bundle, other, limit=COMPACT_EVIDENCE)
    plain = build_prompt(bundle, redactor, hints=other, evidence=shown, compact=True)
    assert plain.split("\n")[-1] == COMPACT_ASK


@pytest.mark.parametrize("limit", [40, 80, 200])
def test_clip_keeps_the_head_and_the_tail(limit: int) -> None:
    line = (
        "Error fetching data: Cannot connect to host api.home.example.org:443 ssl:True "
        "[SSLCertVerificationError: (1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
        "failed: certificate has expired (_ssl.c:1006)')]"
    )
    clipped = _clip(line, limit)
    assert len(clipped) <= limit and "…" in clipped
    assert clipped.startswith("Error") and line.endswith(clipped.split("…", 1)[1])
    assert _clip("short", limit) == "short"
    assert len(_clip("x" * 300, limit)) == limit
