"""Accuracy metrics for template mining on LogHub-style labelled data.

Used by ``bench/parsing.py`` and the accuracy regression test so both score the miner the
same way. Definitions follow LogPAI's benchmark (Zhu et al., ICSE-SEIP 2019) and Loghub-2.0
(Jiang et al., ISSTA 2024):

* Group Accuracy (GA): a line is correct when the set of lines the parser grouped with it is
  exactly the set of lines that share its ground-truth template.
* Parsing Accuracy (PA): share of lines whose produced template equals the ground truth after
  both are put in the canonical form of :func:`canonical_template`. That form is Loghub-2.0's
  post-processing of templates (the rules of Khan et al., ICSE 2022: DS, DG, WV, DV, CV and
  collapsing of ``<*>`` joined by ``:`` ``#`` ``/`` ``@`` ``.``), applied to both sides so a
  template is not penalised for writing one variable as two adjacent ones. ``<*> <*>``
  (two variables separated by a space) is *not* collapsed, as in Loghub-2.0.
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devmesh_core.errors import InvalidInput

WILDCARD = "<*>"

# Characters that separate the "words" the guideline rules look at (kept in the output).
_TOKEN_SPLIT = re.compile(r"""(\s|,|!|;|:|=|\||"|'|\[|\]|\(|\)|\{|\}|\.|-|\+|@|#|\$|%|&)""")
_DIGITS = re.compile(r"\d+")
_GLUED = re.compile(r"[^\s/]*<\*>[^\s/]*")
_PAIR_JOINERS = (":", "#", "/", "@", ".")


def canonical_template(template: str) -> str:
    """Put a template in Loghub-2.0's canonical form so equal templates compare equal.

    Rules, in order: squeeze whitespace (DS); a word made only of digits is a variable (DG);
    a word that contains a variable is a variable (WV, except ``<*>/<*>``); variables joined by
    ``.`` or written back to back are one (DV, CV); ``#<*>`` framed by spaces is ``<*>``;
    variables joined by ``:`` ``#`` ``/`` ``@`` ``.`` are one; quoted variables are bare.
    """
    text = re.sub(r"\s+", " ", template.strip())
    parts = _TOKEN_SPLIT.split(text)
    for i, part in enumerate(parts):
        if not part:
            continue
        is_number = _DIGITS.fullmatch(part) is not None
        glued = part not in (WILDCARD, "<*>/<*>") and _GLUED.fullmatch(part) is not None
        if is_number or (WILDCARD in part and glued):
            parts[i] = WILDCARD
    text = "".join(parts)
    text = _squeeze(text, "<*>.<*>")
    text = _squeeze(text, "<*><*>")
    text = _squeeze(text, " #<*># ", " <*> ")
    text = _squeeze(text, " #<*> ", " <*> ")
    for joiner in _PAIR_JOINERS:
        text = _squeeze(text, f"<*>{joiner}<*>")
    text = _squeeze(text, ' "<*>" ', " <*> ")
    text = _squeeze(text, " '<*>' ", " <*> ")
    return _squeeze(text, "<*><*>")


def _squeeze(text: str, pattern: str, replacement: str = WILDCARD) -> str:
    while pattern in text:
        text = text.replace(pattern, replacement)
    return text


def group_accuracy(truth: Sequence[Hashable], predicted: Sequence[Hashable]) -> float:
    """Share of lines whose predicted group is exactly their ground-truth group."""
    _check_lengths(truth, predicted)
    if not truth:
        return 0.0
    by_pred: dict[Hashable, list[int]] = defaultdict(list)
    for i, p in enumerate(predicted):
        by_pred[p].append(i)
    truth_sizes = Counter(truth)
    correct = 0
    for members in by_pred.values():
        labels = {truth[i] for i in members}
        if len(labels) == 1:
            (label,) = labels
            if truth_sizes[label] == len(members):
                correct += len(members)
    return correct / len(truth)


def parsing_accuracy(
    truth: Sequence[str], predicted: Sequence[str], *, canonical: bool = True
) -> float:
    """Share of lines whose template equals the ground truth (both in canonical form)."""
    _check_lengths(truth, predicted)
    if not truth:
        return 0.0
    cache: dict[str, str] = {}

    def norm(t: str) -> str:
        if not canonical:
            return " ".join(t.split())
        got = cache.get(t)
        if got is None:
            got = canonical_template(t)
            cache[t] = got
        return got

    return sum(norm(t) == norm(p) for t, p in zip(truth, predicted, strict=True)) / len(truth)


def _check_lengths(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise InvalidInput(f"ground truth has {len(a)} lines but the parser gave {len(b)}")


@dataclass(frozen=True)
class LabelledLog:
    """One labelled system of a LogHub-2k style directory."""

    name: str
    contents: list[str]
    event_ids: list[str]
    templates: list[str]


def load_loghub_dir(root: Path) -> list[LabelledLog]:
    """Load every ``<S>/<S>_2k.log_structured_corrected.csv`` (or ``_structured.csv``) under root.

    Reads the ``Content``, ``EventId`` and ``EventTemplate`` columns; systems are sorted by name.
    """
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory")
    logs: list[LabelledLog] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        candidates = sorted(sub.glob("*_structured_corrected.csv")) or sorted(
            sub.glob("*_structured.csv")
        )
        if not candidates:
            continue
        with candidates[0].open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if rows and not {"Content", "EventTemplate"} <= rows[0].keys():
            raise InvalidInput(f"{candidates[0]} lacks Content/EventTemplate columns")
        logs.append(
            LabelledLog(
                name=sub.name,
                contents=[r["Content"] for r in rows],
                event_ids=[r.get("EventId") or r["EventTemplate"] for r in rows],
                templates=[r["EventTemplate"] for r in rows],
            )
        )
    return logs
