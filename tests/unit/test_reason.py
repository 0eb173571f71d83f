"""Unit tests of reasoning's pure parts: entity resolution, distinguishing-template scoring,
validation of a model's cited ids, and runbook action filling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devmesh_core.reason.diagnose import AnswerError, fill_placeholders, parse_answer
from devmesh_core.reason.diagnose import proposed_actions as make_actions
from devmesh_core.reason.models import Evidence
from devmesh_core.reason.prompt import output_schema
from devmesh_core.reason.retrieval import (
    EvidenceBundle,
    Scope,
    distinct_score,
    mentioned_services,
    message_shape,
    resolve_entities,
)
from devmesh_core.reason.runbooks import Runbook, RunbookAction

KNOWN = ["nginx", "postgres", "jellyfin", "pihole-FTL", "redis", "api", "db1", "web1"]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("why is nginx failing?", ["nginx"]),
        ("why is ngnix failing?", ["nginx"]),  # a typo
        ("postgresql keeps dying", ["postgres"]),  # the package's name for it
        ("is nginx.service down because of postgres?", ["nginx", "postgres"]),
        ("what happened on db1?", ["db1"]),
        ("pihole broke DNS", ["pihole-FTL"]),
        ("why is everything slow?", []),
    ],
)
def test_resolve_entities(question: str, expected: list[str]) -> None:
    assert sorted(resolve_entities(question, KNOWN)) == sorted(expected)


def test_resolve_entities_ranks_exact_matches_first() -> None:
    assert resolve_entities("postgres or postgresq?", ["postgres", "postgresql"])[0] == "postgres"


def test_mentioned_services_finds_units_processes_and_hosts_in_messages() -> None:
    known = {"postgres", "nginx", "api"}
    assert mentioned_services("Out of memory: Killed process 42 (postgres)", known) == {"postgres"}
    assert mentioned_services("postgresql@15-main.service: Failed", known) == {"postgres"}
    assert mentioned_services("nginx.service: Main process exited", known) == {"nginx"}
    assert mentioned_services("rapid growth of apis", known) == set()  # not a word match


def test_distinct_score_ignores_steady_noise_and_rewards_what_changed() -> None:
    hour, four_hours = 3600.0, 4 * 3600.0
    steady = distinct_score(100, 400, hour, four_hours)  # same rate as the baseline
    new = distinct_score(3, 0, hour, four_hours)
    burst = distinct_score(100, 0, hour, four_hours)
    doubled = distinct_score(200, 400, hour, four_hours)
    assert steady == 0.0
    assert distinct_score(50, 400, hour, four_hours) == 0.0  # quieter than usual
    assert 0 < new < burst
    assert 0 < doubled < burst
    assert distinct_score(0, 0, hour, four_hours) == 0.0
    # Level weighs in: the same change as a warning scores less than as an error.
    assert distinct_score(10, 0, hour, four_hours, 30) < distinct_score(10, 0, hour, four_hours, 40)


def test_a_frequent_symptom_does_not_drown_a_rare_new_cause_by_volume_alone() -> None:
    hour, four_hours = 3600.0, 4 * 3600.0
    rare = distinct_score(2, 0, hour, four_hours)
    frequent = distinct_score(150, 0, hour, four_hours)
    assert frequent / rare < 10  # volume counts, but logarithmically


def test_message_shape_masks_numbers_and_addresses() -> None:
    a = message_shape("connect to 10.0.0.12:5432 failed after 3000ms (pid 42)")
    b = message_shape("connect to 10.0.0.13:5432 failed after 12ms (pid 7)")
    assert a == b == "connect to <IP> failed after <N>ms (pid <N>)"


def _bundle(ids: list[str]) -> EvidenceBundle:
    now = datetime(2025, 3, 14, 12, tzinfo=UTC)
    scope = Scope("why?", now - timedelta(hours=1), now, now - timedelta(hours=5))
    evidence = [Evidence(id=i, kind="event", text=f"text of {i}") for i in ids]
    return EvidenceBundle(
        scope=scope,
        activities=[],
        services={},
        dependencies={},
        runbooks=[],
        fixes=[],
        deployments=[],
        past_incidents=[],
        silent_hosts=[],
        evidence=evidence,
        known_services={"postgres", "nginx"},
    )


def test_parse_answer_drops_and_counts_invented_ids() -> None:
    bundle = _bundle(["event:1", "template:abc"])
    raw = (
        '{"root_cause": "postgres was killed by the OOM killer", "confidence": 0.8, '
        '"evidence_ids": ["event:1", "event:999", "incident:INC-77", "template:abc", 5], '
        '"next_steps": ["add memory"], "origin_service": "postgres"}'
    )
    answer, dropped = parse_answer(raw, bundle)
    assert answer["evidence_ids"] == ["event:1", "template:abc"]
    assert dropped == 3
    assert answer["origin_service"] == "postgres"


def test_parse_answer_rejects_answers_that_cite_nothing_real() -> None:
    bundle = _bundle(["event:1"])
    with pytest.raises(AnswerError, match="no cited id"):
        parse_answer(
            '{"root_cause": "something broke somewhere", "confidence": 1, '
            '"evidence_ids": ["event:2"], "next_steps": []}',
            bundle,
        )
    with pytest.raises(AnswerError, match="not valid JSON"):
        parse_answer("The root cause is postgres.", bundle)
    with pytest.raises(AnswerError, match="root_cause"):
        parse_answer('{"evidence_ids": ["event:1"]}', bundle)


def test_parse_answer_ignores_unknown_services_and_clamps_confidence() -> None:
    answer, dropped = parse_answer(
        '```json\n{"root_cause": "the database ran out of disk", "confidence": 7, '
        '"evidence_ids": ["event:1"], "next_steps": ["rm -rf / --no-preserve-root"], '
        '"origin_service": "made-up"}\n```',
        _bundle(["event:1"]),
    )
    assert dropped == 0
    assert answer["confidence"] == 1.0
    assert answer["origin_service"] is None
    # Steps are data for a person to read; nothing here executes them.
    assert answer["next_steps"] == ["rm -rf / --no-preserve-root"]


def test_output_schema_is_bounded_to_the_bundle() -> None:
    schema = output_schema(_bundle(["event:1", "event:2"]))
    props = schema["properties"]
    assert props["evidence_ids"]["items"]["enum"] == ["event:1", "event:2"]
    assert props["evidence_ids"]["maxItems"] <= 8
    assert props["next_steps"]["maxItems"] <= 5
    assert props["next_steps"]["items"]["maxLength"] <= 240
    assert props["root_cause"]["maxLength"] <= 600
    assert schema["additionalProperties"] is False


def test_proposed_actions_fill_placeholders_and_skip_unfillable_ones() -> None:
    runbook = Runbook(
        id="svc",
        title="Service",
        actions=(
            RunbookAction(action="restart_unit", params={"unit": "{unit}"}),
            RunbookAction(action="clear_cache", params={"cache": "apt"}),
            RunbookAction(action="run_script", params={"script": "{volume}"}),
        ),
    )
    actions = make_actions(runbook, "nginx", "web1")
    assert [(a.action, a.params, a.host) for a in actions] == [
        ("restart_unit", {"unit": "nginx.service"}, "web1"),
        ("clear_cache", {"cache": "apt"}, "web1"),
    ]
    assert all(a.runbook_id == "svc" for a in actions)
    assert make_actions(None, "nginx", "web1") == []
    assert fill_placeholders({"a": ["{host}"]}, {"host": "h"}) == {"a": ["h"]}
