"""GA/PA metrics and the Loghub-2.0 canonical template form used by the accuracy test."""

from __future__ import annotations

from pathlib import Path

import pytest

from devmesh_core.errors import InvalidInput
from devmesh_core.templates.evaluation import (
    canonical_template,
    group_accuracy,
    load_loghub_dir,
    parsing_accuracy,
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Received connection request <*>:<*>", "Received connection request <*>"),
        ("block blk_<*> of size 42", "block <*> of size <*>"),
        ("PacketResponder <*><*> for", "PacketResponder <*> for"),
        ("mod_jk child init <*> <*>", "mod_jk child init <*> <*>"),  # spaced: kept apart
        ("host '<*>' did", "host <*> did"),
        ("  two   spaces ", "two spaces"),
        ("intellimouse PS/<*>", "intellimouse PS/<*>"),
        ("version <*>.<*>.<*>", "version <*>"),
    ],
)
def test_canonical_template(template: str, expected: str) -> None:
    assert canonical_template(template) == expected
    assert canonical_template(expected) == expected


def test_group_accuracy_counts_exact_groups_only() -> None:
    truth = ["a", "a", "b", "b", "c"]
    assert group_accuracy(truth, [1, 1, 2, 2, 3]) == 1.0
    # b is split in two and c is merged into a: no line is in its exact group
    assert group_accuracy(truth, [1, 1, 2, 4, 1]) == 0.0
    assert group_accuracy(truth, [1, 1, 2, 2, 2]) == pytest.approx(2 / 5)
    with pytest.raises(InvalidInput):
        group_accuracy(truth, [1])


def test_parsing_accuracy_uses_canonical_form_on_both_sides() -> None:
    truth = ["from <*>:<*>", "size <*>", "x <*>"]
    pred = ["from <*>", "size 12", "x y"]
    assert parsing_accuracy(truth, pred) == pytest.approx(2 / 3)
    assert parsing_accuracy(truth, pred, canonical=False) == 0.0


def test_load_loghub_dir(tmp_path: Path) -> None:
    sys_dir = tmp_path / "Demo"
    sys_dir.mkdir()
    (sys_dir / "Demo_2k.log_structured_corrected.csv").write_text(
        'LineId,Content,EventId,EventTemplate\n1,"a 1",E1,a <*>\n2,b,E2,b\n', encoding="utf-8"
    )
    (tmp_path / "README.md").write_text("not a system")
    (logs,) = load_loghub_dir(tmp_path)
    assert logs.name == "Demo"
    assert logs.contents == ["a 1", "b"]
    assert logs.templates == ["a <*>", "b"]
    with pytest.raises(InvalidInput):
        load_loghub_dir(tmp_path / "missing")
