"""SignatureMiner: grouping, stable ids across save/reload, merges keep the old id."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from devmesh_core.errors import InvalidInput, NotFound
from devmesh_core.log import configure_logging
from devmesh_core.templates import MinedTemplate, MinerConfig, SignatureMiner, mine_lines
from devmesh_core.templates.grouping import group_sequences, is_variable_column, variable_token
from devmesh_core.templates.miner import STATE_FILE, covers, keeps_enough, token_covers

# Keep structlog off stdout (its unconfigured default) so test output stays readable.
configure_logging("console", "WARNING", stream=sys.stderr)

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]


def _vm_lines() -> list[str]:
    out = []
    for i, state in enumerate(["Started", "Paused", "Resumed", "Stopped"] * 5):
        uuid = f"96abccce-8d1f-4e07-b6d1-4b2ab87e{i:04d}"
        out.append(f"[instance: {uuid}] VM {state} (Lifecycle Event)")
    return out


def test_add_many_keeps_order_and_groups_events() -> None:
    lines = [
        "Invalid user alice from 10.0.0.1",
        "Connection closed by 10.0.0.2 [preauth]",
        *[f"Invalid user {u} from 10.0.0.{i}" for i, u in enumerate(USERS)],
        "Connection closed by 10.0.0.9 [preauth]",
    ]
    results = SignatureMiner().add_many(lines)
    assert len(results) == len(lines)
    assert all(isinstance(r, MinedTemplate) for r in results)
    invalid = {r.template_id for r, line in zip(results, lines, strict=True) if "Invalid" in line}
    closed = {r.template_id for r, line in zip(results, lines, strict=True) if "closed" in line}
    assert len(invalid) == 1 and len(closed) == 1 and invalid != closed
    assert results[0].template == "Invalid user <*> from <*>"
    assert results[1].template == "Connection closed by <*> [preauth]"
    # is_new marks only the first line of each template created by this call
    assert [r.is_new for r in results].count(True) == 2
    assert results[0].is_new and results[1].is_new and not results[-1].is_new
    assert all(r.template_id.startswith("T") for r in results)


def test_one_word_event_types_stay_apart() -> None:
    results = SignatureMiner().add_many(_vm_lines())
    by_state: dict[str, set[str]] = {}
    for r in results:
        by_state.setdefault(r.template.split()[3], set()).add(r.template_id)
    assert set(by_state) == {"Started", "Paused", "Resumed", "Stopped"}
    assert all(len(ids) == 1 for ids in by_state.values())
    assert len({next(iter(ids)) for ids in by_state.values()}) == 4
    assert results[0].template == "[instance: <*>] VM Started (Lifecycle Event)"


def test_word_variable_is_found_from_masked_values_in_the_same_column() -> None:
    lines = [
        "session closed for user root",
        "session closed for user cyrus",
        "session closed for user news",
    ] * 3
    lines += ["session opened for user cyrus by (uid=0)", "session opened for user news by (uid=0)"]
    results = SignatureMiner().add_many(lines)
    assert results[0].template == "session closed for user <*>"
    assert len({r.template_id for r in results[:9]}) == 1
    # "cyrus"/"news" were learned as values, so the "opened" lines form one template too
    assert results[-1].template == "session opened for user <*> by (uid=<*>)"
    assert results[-1].template_id == results[-2].template_id


def test_mine_lines_matches_a_fresh_miner_and_keeps_ids_one_to_one() -> None:
    lines = _vm_lines() + [f"Took {i}.5 seconds to build instance." for i in range(7)]
    offline = mine_lines(lines)
    online = SignatureMiner().add_many(lines)
    assert [r.template_id for r in offline] == [r.template_id for r in online]
    pairs = {(r.template_id, r.template) for r in offline}
    assert len(pairs) == len({r.template_id for r in offline}) == len({r.template for r in offline})


def test_ids_are_stable_across_save_and_reload(tmp_path: Path) -> None:
    lines = _vm_lines() + [f"Invalid user {u} from 10.0.0.{i}" for i, u in enumerate(USERS)]
    with SignatureMiner(tmp_path) as miner:
        first = miner.add_many(lines)
    assert (tmp_path / STATE_FILE).is_file()
    assert not list(tmp_path.glob("*.tmp"))

    reloaded = SignatureMiner(tmp_path)
    assert len(reloaded) == len({r.template_id for r in first})
    again = reloaded.add_many(lines)
    assert [r.template_id for r in again] == [r.template_id for r in first]
    assert not any(r.is_new for r in again)
    paused = "[instance: 11111111-2222-3333-4444-555555555555] VM Paused (Lifecycle Event)"
    single = reloaded.add(paused)
    assert single.template_id == first[1].template_id
    for r in first:
        assert reloaded.template_text(r.template_id) == r.template
    # a genuinely new event gets a new id, which survives the next restart as well
    new = reloaded.add("disk /dev/sda1 is 91% full")
    assert new.is_new
    reloaded.save()
    assert SignatureMiner(tmp_path).template_text(new.template_id) == new.template


def test_over_split_templates_merge_into_the_oldest_id(tmp_path: Path) -> None:
    config = MinerConfig(min_distinct=5, snapshot_interval_s=0)
    miner = SignatureMiner(tmp_path, config)
    ids = [miner.add(f"Accepted publickey for {u} via ssh").template_id for u in USERS[:4]]
    # four plain words are not yet evidence of a variable: four templates
    assert len(set(ids)) == 4
    fifth = miner.add(f"Accepted publickey for {USERS[4]} via ssh")
    # the fifth distinct value merges them all; the oldest id survives
    assert fifth.template_id == ids[0]
    assert fifth.template == "Accepted publickey for <*> via ssh"
    for old in ids:
        assert miner.resolve_id(old) == ids[0]
        assert miner.template_text(old) == "Accepted publickey for <*> via ssh"
    info = {t.template_id: t for t in miner.templates()}
    assert set(ids[1:]) <= set(info[ids[0]].aliases)
    assert info[ids[0]].count == 5
    # later lines and a restart keep using the surviving id; aliases still resolve
    assert miner.add(f"Accepted publickey for {USERS[7]} via ssh").template_id == ids[0]
    reloaded = SignatureMiner(tmp_path, config)
    assert reloaded.resolve_id(ids[3]) == ids[0]
    assert reloaded.add(f"Accepted publickey for {USERS[9]} via ssh").template_id == ids[0]


def test_a_later_batch_that_generalises_keeps_the_earlier_id() -> None:
    miner = SignatureMiner()
    early = miner.add("Failed password for oracle from 10.1.1.1 port 22 ssh2")
    assert early.template == "Failed password for oracle from <*> port <*> ssh2"
    later = miner.add_many(
        [f"Failed password for {u} from 10.1.1.{i} port 22 ssh2" for i, u in enumerate(USERS)]
    )
    assert {r.template_id for r in later} == {early.template_id}
    assert later[0].template == "Failed password for <*> from <*> port <*> ssh2"
    assert miner.template_text(early.template_id) == later[0].template


def test_single_lines_merge_when_drain3_candidate_differs_only_in_values() -> None:
    miner = SignatureMiner()
    a = miner.add("worker w1 finished job j17")
    b = miner.add("worker w2 finished job j18")
    assert b.template_id == a.template_id
    assert b.template == "worker <*> finished job <*>"
    c = miner.add("worker w3 crashed job j19")
    assert c.template_id != a.template_id


def test_periodic_snapshot_and_close_write_state(tmp_path: Path) -> None:
    miner = SignatureMiner(tmp_path, MinerConfig(snapshot_interval_s=0))
    miner.add("cache warmed in 12ms")
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert [t["tokens"] for t in state["templates"]] == [["cache", "warmed", "in", "<*>"]]
    lazy_dir = tmp_path / "lazy"
    lazy = SignatureMiner(lazy_dir, MinerConfig(snapshot_interval_s=3600))
    lazy.add("cache warmed in 12ms")
    assert not (lazy_dir / STATE_FILE).exists()
    lazy.close()
    assert (lazy_dir / STATE_FILE).exists()


def test_corrupt_state_is_reported(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(InvalidInput, match="corrupt"):
        SignatureMiner(tmp_path)
    (tmp_path / STATE_FILE).write_text(json.dumps({"version": 99, "templates": []}))
    with pytest.raises(InvalidInput, match="version"):
        SignatureMiner(tmp_path)


def test_unknown_id_and_bad_arguments() -> None:
    miner = SignatureMiner()
    with pytest.raises(NotFound):
        miner.template_text("Tdoesnotexist")
    with pytest.raises(InvalidInput):
        miner.add_many("one string")
    assert miner.add_many([]) == []
    with pytest.raises(InvalidInput):
        MinerConfig(min_distinct=1)
    empty = miner.add("")
    assert empty.template == "" and miner.add("   ").template_id == empty.template_id


def test_grouping_rules() -> None:
    assert variable_token({"user=guest", "user=<*>"}) == "user=<*>"
    assert variable_token({"'a.example'.", "'b'."}) == "'<*>'."
    assert is_variable_column({"U01", "J14"}, 8)  # every value has a digit
    assert is_variable_column({"rhost=<*>", "rhost=x.y"}, 8)  # a masked value in the slot
    assert not is_variable_column({"(uid=<*>)", "LOGIN(uid=<*>)"}, 8)
    assert not is_variable_column({"Started", "Stopped"}, 8)
    assert is_variable_column({"Started", "Stopped"}, 8, {"Started", "Stopped"})
    assert is_variable_column({f"w{i}x" for i in range(8)}, 8)
    seqs = [("size", "<*>", "B,", "end"), ("size", "<*>", "KB,", "end")]
    groups = group_sequences(seqs, [3, 2])
    assert [g.tokens for g in groups] == [("size", "<*>,", "end")]


def test_token_coverage() -> None:
    assert token_covers("user=<*>", "user=guest")
    assert token_covers("user=<*>", "user=<*>")
    assert not token_covers("user=<*>", "user=")
    assert not token_covers("(<*>)", "<*>")
    assert token_covers("<*>:<*>", "a:b")
    assert covers(("a", "<*>", "c"), ("a", "b", "c"))
    assert not covers(("a", "<*>"), ("a", "b", "c"))


def test_no_catch_all_template_from_lines_that_are_almost_all_values() -> None:
    miner = SignatureMiner()
    task = miner.add("Got assigned task 5")
    for i in range(12):  # one constant-looking word, three values: never widen to <*> <*> <*> <*>
        miner.add(f"r{i}x 0x1 0x2 0x3")
    assert all(t.template != "<*> <*> <*> <*>" for t in miner.templates())
    again = miner.add("Got assigned task 6")
    assert again.template_id == task.template_id
    assert again.template == "Got assigned task <*>"
    assert keeps_enough(("a", "<*>", "c"), ("a", "b", "c"))
    assert not keeps_enough(("<*>", "<*>", "c"), ("a", "b", "c"))
    assert not keeps_enough(("<*>", "<*>"), ("a", "<*>"))
