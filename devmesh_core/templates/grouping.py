"""Batch grouping of masked log lines by their longest common pattern (Brain-style).

Drain compares each new line with a few existing templates and merges when "enough" tokens
agree, so it merges event types that differ in one word (``VM Started`` / ``VM Stopped``) and
splits one event type whose variable is a plain word (``user cyrus`` / ``user news``). With a
whole batch in hand we can do better, following the idea of Brain (Yu et al., "Brain: Log
Parsing with Bidirectional Parallel Tree", IEEE TSC 2023):

1. Lines of equal token count are compared position by position. For every line, the tokens
   whose (position, token) frequency is the most common one among its tokens form its
   *longest common pattern*; lines with the same pattern form a group. Constant words of one
   event type occur exactly as often as the event, so they share a frequency; variables occur
   less often, words shared with other events more often. A group whose pattern strictly
   contains another group's pattern is folded into it (a variable value that happens to
   occur exactly as often as the constants must not split its lines off).
2. Every other position of a group is a column. A column is a *variable* when the evidence
   says so: it has many distinct values (``min_distinct``), every value contains a digit, some
   value is a masked value (``<*>``) once common punctuation is stripped, or every value was
   seen as a variable elsewhere in the batch (a learned vocabulary). Otherwise the column is
   a constant that distinguishes event types, and the group is split on it (the column with
   the fewest values first) and the sub-groups are examined again. A unit word that varies
   right after a masked number ("16.0 B" / "1.2 KB") joins the number's value.

Only counts, sets and sorting are involved, so a batch costs about one pass over its tokens.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from devmesh_core.templates.masking import WILDCARD

# Punctuation at which a variable's common prefix may end / its common suffix may begin, so a
# variable keeps the constant framing it shares ("uid=<*>", "'<*>'.", "(<*>)") but never
# half a word.
_PREFIX_END = frozenset("=:([{'\",/#@ ")
_SUFFIX_START = frozenset(")]}'\",:;.=/")
# A unit word written after a number ("16.0 KB"); when it varies it belongs to the value.
_UNIT = re.compile(
    r"(?:[KMGTPE]i?B|[kKMGTP]|B|bytes?|bits?|[mun]?s|µs|secs?|seconds?|mins?|minutes?|h|hours?"
    r"|days?)[,;:.)\]]*"
)

Tokens = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Group:
    """One template found in a batch: its tokens and the indices of its member sequences."""

    tokens: Tokens
    members: tuple[int, ...]


def variable_affixes(values: Iterable[str]) -> tuple[str, str]:
    """Common constant prefix and suffix of a variable column's values, cut at punctuation.

    ``{"user=guest", "user=<*>"}`` gives ``("user=", "")`` so the column renders as
    ``user=<*>``, like the ground truth writes it.
    """
    vals = list(values)
    if not vals:
        return "", ""
    first = vals[0]
    shortest = min(len(v) for v in vals)
    p = 0
    while p < shortest and all(v[p] == first[p] for v in vals):
        p += 1
    while p > 0 and first[p - 1] not in _PREFIX_END:
        p -= 1
    prefix = first[:p]
    room = shortest - p
    s = 0
    while s < room and all(v[-1 - s] == first[-1 - s] for v in vals):
        s += 1
    suffix = first[len(first) - s :] if s else ""
    k = 0
    while k < len(suffix) and suffix[k] not in _SUFFIX_START:
        k += 1
    return prefix, suffix[k:]


def variable_token(values: Iterable[str]) -> str:
    """The template token for a variable column (``<*>`` with its shared framing)."""
    prefix, suffix = variable_affixes(values)
    return prefix + WILDCARD + suffix


def is_variable_column(
    values: Collection[str], min_distinct: int, vocabulary: Collection[str] = ()
) -> bool:
    """Decide whether differing values at one position are a variable (see module doc)."""
    if len(values) < 2:
        return False
    if len(values) >= min_distinct:
        return True
    if all(any(ch.isdigit() for ch in v) for v in values):
        return True
    prefix, suffix = variable_affixes(values)
    end = len(suffix)
    for v in values:
        if v[len(prefix) : len(v) - end] == WILDCARD:
            return True
    return bool(vocabulary) and all(v == WILDCARD or v in vocabulary for v in values)


def _merge_specific_keys(
    groups: dict[tuple[tuple[int, str], ...], list[int]],
    counts: Sequence[int],
) -> dict[tuple[tuple[int, str], ...], list[int]]:
    """Fold a group into a group whose pattern is its own minus one token.

    A variable value can occur exactly as often as the constants by coincidence and then
    lands in the pattern, splitting its lines off their event type; the column rules split
    the merged group again where the extra token really is a constant.
    """
    weight = {key: sum(counts[i] for i in members) for key, members in groups.items()}
    out = dict(groups)
    for key in sorted(groups, key=len, reverse=True):
        if key not in out or len(key) < 2:
            continue
        best: tuple[tuple[int, str], ...] | None = None
        for k in range(len(key)):
            smaller = key[:k] + key[k + 1 :]
            if smaller in out and (best is None or weight[smaller] > weight[best]):
                best = smaller
        if best is not None:
            out[best].extend(out.pop(key))
            weight[best] += weight[key]
    return out


def _column(seqs: Sequence[Tokens], members: Sequence[int], p: int) -> set[str]:
    return {seqs[i][p] for i in members}


def group_sequences(
    seqs: Sequence[Tokens],
    counts: Sequence[int],
    *,
    min_distinct: int = 8,
    vocabulary: Collection[str] = (),
    learned: set[str] | None = None,
) -> list[Group]:
    """Group distinct masked token sequences (with their line counts) into templates.

    ``vocabulary`` holds values known to be variables from earlier batches; values learned
    in this batch are added to ``learned`` when given, so an online miner can keep them.
    Groups come back ordered by their first member; identical templates are merged.
    """
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(seqs):
        by_len[len(s)].append(i)

    plan: list[tuple[list[int], list[int]]] = []
    key_tokens: set[str] = set()
    for length, idxs in by_len.items():
        freq: list[dict[str, int]] = [defaultdict(int) for _ in range(length)]
        for i in idxs:
            c = counts[i]
            for p, tok in enumerate(seqs[i]):
                freq[p][tok] += c
        groups: dict[tuple[tuple[int, str], ...], list[int]] = defaultdict(list)
        for i in idxs:
            s = seqs[i]
            fs = [freq[p][tok] for p, tok in enumerate(s)]
            if fs:
                tally = Counter(fs)
                root = max(tally.items(), key=lambda kv: (kv[1], kv[0]))[0]
            else:
                root = 0
            key = tuple((p, tok) for p, (tok, f) in enumerate(zip(s, fs, strict=True)) if f == root)
            groups[key].append(i)
        groups = _merge_specific_keys(groups, counts)
        for key, members in groups.items():
            key_pos = {p for p, _ in key}
            key_tokens.update(tok for _, tok in key)
            plan.append((members, [p for p in range(length) if p not in key_pos]))

    # Values of clearly variable columns form a vocabulary for the weaker cases.
    vocab: set[str] = set(vocabulary)
    found: set[str] = set()
    for members, cand in plan:
        for p in cand:
            values = _column(seqs, members, p)
            if is_variable_column(values, min_distinct):
                found.update(v for v in values if WILDCARD not in v)
    found -= key_tokens
    vocab |= found
    if learned is not None:
        learned |= found

    out: dict[Tokens, list[int]] = {}
    stack = [(members, cand) for members, cand in reversed(plan)]
    while stack:
        members, cand = stack.pop()
        variables: list[tuple[int, set[str]]] = []
        units: list[int] = []
        split: tuple[int, int] | None = None
        for p in cand:
            values = _column(seqs, members, p)
            if len(values) < 2:
                continue
            if (
                p > 0
                and all(_UNIT.fullmatch(v) for v in values)
                and all(seqs[i][p - 1] == WILDCARD for i in members)
            ):
                variables.append((p, values))
                units.append(p)
            elif is_variable_column(values, min_distinct, vocab):
                variables.append((p, values))
            elif split is None or len(values) < split[0]:
                split = (len(values), p)
        if split is not None:
            sp = split[1]
            parts: dict[str, list[int]] = {}
            for i in members:
                parts.setdefault(seqs[i][sp], []).append(i)
            rest = [p for p in cand if p != sp]
            stack.extend((part, rest) for part in reversed(parts.values()))
            continue
        toks = list(seqs[members[0]])
        for p, values in variables:
            toks[p] = variable_token(values)
        for p in units:
            toks[p - 1] = ""
        template = tuple(t for t in toks if t)
        out.setdefault(template, []).extend(members)

    groups_out = [Group(tokens, tuple(sorted(members))) for tokens, members in out.items()]
    groups_out.sort(key=lambda g: g.members[0])
    return groups_out
