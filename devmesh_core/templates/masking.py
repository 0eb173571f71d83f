"""Generic masking and tokenising of log messages before template mining.

Template miners group lines by their constant words, so anything that is obviously a value —
an address, a number, an id, a timestamp — is replaced by the wildcard ``<*>`` before the
miner sees it. Otherwise every distinct IP or request id looks like a new "word" and one event
type splits into many templates (Drain's classic failure on real logs).

The rules are deliberately *generic*: they describe value shapes found in logs of any system
(IP/MAC addresses, UUIDs, hex, paths, URLs, host names, dates, durations and sizes, numbers),
never words or layouts of one product. They follow the conventions of the LogPAI / Loghub-2.0
ground truth (Khan et al., "Guidelines for Assessing the Accuracy of Log Message Template
Identification Techniques", ICSE 2022): a variable swallows the whole delimiter-bounded word it
sits in (``blk_-42`` is one value), a unit glued to a number is part of the value (``10ms``),
a unit separated by a space is a word of its own (``2048 MB``).

Speed matters because masking runs on every ingested line: values that may contain spaces
(timestamps, an HTTP request target) are handled on the whole line behind cheap guards, and
everything else is decided per whitespace token through a cache, so the common constant words
cost one dictionary lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from devmesh_core.errors import InvalidInput

WILDCARD = "<*>"

_MONTHS = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
_DAYS = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*\.?"
_TIME = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?"
_TZ = r"(?:\s?(?:Z|UTC|GMT|[A-Z]{3,4}|[+-]\d{2}:?\d{2})(?![A-Za-z0-9]))?"
# A masked value may not touch letters or digits: a number glued to letters is part of a
# bigger word (``ssh2``, ``tty2``, ``PSR0`` are constants, not numbers).
_L = r"(?<![A-Za-z0-9])"
_R = r"(?![A-Za-z0-9])"
_GTLD = r"com|net|org|edu|gov|mil|info|biz|local|lan|internal|arpa"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"

#: Values that may contain spaces; applied to the whole line, earlier rules first.
SPAN_RULES: tuple[tuple[str, str], ...] = (
    # "Fri Jun 17 07:07:00 2005", "Jul 1, 08:16:53 PDT", "Sat, 1 Jun 2024 10:00:00 +0200"
    (
        "date_text",
        rf"(?:{_DAYS},?\s+)?{_MONTHS}\s+\d{{1,2}},?\s+{_TIME}{_TZ}(?:\s+\d{{4}}{_R})?"
        rf"|(?:{_DAYS},?\s+)?\d{{1,2}}\s+{_MONTHS}\s+\d{{4}}\s+{_TIME}{_TZ}"
        rf"|{_L}\d{{1,2}}/{_MONTHS}/\d{{4}}(?::{_TIME})?(?:\s[+-]\d{{4}})?{_R}",
    ),
    # "2017-05-16 05:00:00", "2024-01-02T03:04:05.678Z", "2005/06/03"
    ("date_iso", rf"{_L}\d{{4}}[-/]\d{{1,2}}[-/]\d{{1,2}}(?:[T\s_]{_TIME}{_TZ})?{_R}"),
    # HTTP request target and protocol: one value, as in access-log ground truths
    ("http_request", r"(?<=\s)/[^\s\"']*\sHTTP/\d(?:\.\d)?(?=[\s\"']|$)"),
)
# Cheap pre-checks: a span rule only runs on lines its guard finds something in.
_SPAN_GUARDS: dict[str, re.Pattern[str]] = {
    "date_text": re.compile(r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"),
    "date_iso": re.compile(r"[-/]\d{1,2}[-/]\d"),
    "http_request": re.compile(r" HTTP/\d"),
}

#: Values inside one whitespace token, tried in order (composite shapes before their parts).
TOKEN_RULES: tuple[tuple[str, str], ...] = (
    ("url", r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>\[\]()]*[^\s\"'<>\[\]().,;:]"),
    ("email", rf"\b[\w.+\-]+@{_LABEL}(?:\.{_LABEL})+\b"),
    ("time", rf"{_L}{_TIME}{_R}"),
    (
        "uuid",
        r"(?<![A-Za-z0-9])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
        r"-[0-9a-fA-F]{12}(?![A-Za-z0-9])",
    ),
    # MAC addresses and other long colon/dash separated byte strings
    ("mac", rf"{_L}[0-9A-Fa-f]{{2}}(?:[:\-][0-9A-Fa-f]{{2}}){{5,}}{_R}"),
    # IPv4, with the leading slash of Java's InetSocketAddress; a port stays a separate value
    ("ipv4", r"/?(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)"),
    # IPv6, full or compressed
    (
        "ipv6",
        r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}(?![\w:])"
        r"|(?<![\w:])(?:[0-9a-fA-F]{1,4}:){1,6}:(?:[0-9a-fA-F]{1,4}:?){0,6}(?![\w:])"
        r"|(?<![\w:])::(?:ffff:)?(?:[0-9a-fA-F]{1,4}:?){1,7}(?![\w:])",
    ),
    # absolute or ./relative file paths
    ("path", r"(?<![\w/.\-])\.{0,2}/+[\w.\-@~+%=$#]+(?:/+[\w.\-@~+%=$#]+)*/*"),
    # Windows paths: C:\dir\file, \\server\share\file
    ("win_path", r"[A-Za-z]:\\[^\s\"'<>|*?]*|\\\\[\w.\-$]+\\[^\s\"'<>|*?]*"),
    # host names: dotted labels ending in a generic TLD; or in a country code after a
    # com/net/org/edu/gov/ac/co label; or 3+ labels, with a digit or dash, and a country code
    # (so property names such as "mapred.task.id" stay constant)
    (
        "hostname",
        rf"(?:{_LABEL}\.)+(?:{_GTLD}){_R}(?![.\-])"
        rf"|(?:{_LABEL}\.)*(?:com|net|org|edu|gov|ac|co)\.[a-z]{{2}}{_R}(?![.\-])"
        rf"|(?=[\w.\-]*[\d\-])(?:{_LABEL}\.){{2,}}[a-z]{{2}}{_R}(?![.\-])",
    ),
    # 0x-prefixed hex, or a long hex run (hashes, ids, addresses)
    ("hex", rf"{_L}0[xX][0-9a-fA-F]+{_R}|{_L}[0-9a-fA-F]{{8,}}{_R}"),
    # number with a glued unit (10ms, 2.5s, 126MB, 64k, 0.5GiB) and dimensions (80x25)
    (
        "quantity",
        rf"{_L}[-+]?\d+(?:\.\d+)?(?:[kKmMgGtTpP]i?[bB]?|[bB]|bytes|ms|us|µs|ns|sec|secs|s|min|h|d)"
        rf"{_R}|{_L}\d+(?:x\d+)+{_R}",
    ),
    # version strings: v1.2.3, 2.6.5-1.358
    ("version", rf"{_L}v?\d+(?:\.\d+)+(?:[-_]\d+(?:\.\d+)*)*{_R}"),
    # plain numbers, signed or decimal
    ("number", rf"{_L}[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?{_R}"),
)

#: Whole words the Loghub guideline treats as values: booleans and well-known user names.
DEFAULT_VALUE_WORDS: tuple[str, ...] = ("true", "false", "null", "root", "admin")

# A "word" in the guideline's sense: no whitespace, no delimiter, never across "/" (so
# "PS/<*>" keeps its constant part) and not part of a wildcard.
_WORD = r"[^\s,!;:=|\"'\[\](){}.\-+@#$%&/<>*]"
_GLUED = re.compile(rf"{_WORD}+<\*>{_WORD}*|<\*>{_WORD}+")
# "<*><*>", "<*>.<*>" and value lists "<*>,<*>" are one value
_ADJACENT = re.compile(r"<\*>(?:[.,]?<\*>)+")


@dataclass(frozen=True)
class MaskingConfig:
    """Which value shapes to mask. The defaults are the generic set used for every source.

    ``extra_token_rules`` lets an operator add shapes of their own (say, a ticket-id format)
    without editing code; they run before the built-in ones and, like them, only start
    where no letter or digit precedes. ``disabled`` names rules to skip (including
    ``value_word``). ``cache_size`` bounds the per-token memo (entries).
    """

    span_rules: tuple[tuple[str, str], ...] = SPAN_RULES
    token_rules: tuple[tuple[str, str], ...] = TOKEN_RULES
    extra_token_rules: tuple[tuple[str, str], ...] = ()
    value_words: tuple[str, ...] = DEFAULT_VALUE_WORDS
    disabled: frozenset[str] = frozenset()
    cache_size: int = 200_000


def _compile(name: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidInput(f"masking rule {name!r} is not a valid regex: {exc}") from exc


class Masker:
    """Replace variable-looking parts of a message with ``<*>`` and split it into tokens.

    Stateless apart from a bounded memo of token results, so one instance can serve a whole
    process; not thread-safe while the memo is being filled (use one per thread).
    """

    def __init__(self, config: MaskingConfig | None = None) -> None:
        self.config = config or MaskingConfig()
        off = self.config.disabled
        self._span: list[tuple[re.Pattern[str] | None, re.Pattern[str]]] = [
            (_SPAN_GUARDS.get(name), _compile(name, pattern))
            for name, pattern in self.config.span_rules
            if name not in off
        ]
        rules = [
            (name, pattern)
            for name, pattern in (*self.config.extra_token_rules, *self.config.token_rules)
            if name not in off
        ]
        if self.config.value_words and "value_word" not in off:
            words = "|".join(re.escape(w) for w in self.config.value_words)
            rules.append(("value_word", rf"(?<![\w\-./])(?i:{words})(?![\w\-/])"))
        for name, pattern in rules:
            _compile(name, pattern)
        self.rule_names: tuple[str, ...] = tuple(n for n, _ in rules)
        # Plain digit runs are masked whole by the "number" rule (and by nothing else first
        # unless an operator added rules of their own), so tokenize() may skip the regex.
        self._digits_fast = "number" in self.rule_names and not self.config.extra_token_rules
        # Every built-in rule starts where no letter or digit precedes; saying so once lets
        # the engine reject positions inside words before trying the alternatives.
        body = "|".join(f"(?:{p.replace(_L, '')})" for _, p in rules)
        self._token_regex = re.compile(rf"{_L}(?:{body})")
        self._cache: dict[str, str] = {}

    def mask_token(self, token: str) -> str:
        """Mask one whitespace-free token (memoised)."""
        got = self._cache.get(token)
        if got is not None:
            return got
        masked = self._token_regex.sub(WILDCARD, token)
        if WILDCARD in masked:
            masked = _GLUED.sub(WILDCARD, masked)
            masked = _ADJACENT.sub(WILDCARD, masked)
        if len(self._cache) >= self.config.cache_size:
            self._cache.clear()
        self._cache[token] = masked
        return masked

    def _mask_spans(self, message: str) -> str:
        for guard, regex in self._span:
            if guard is None or guard.search(message):
                message = regex.sub(WILDCARD, message)
        return message

    def tokenize(self, message: str) -> list[str]:
        """Mask ``message`` and split it on whitespace into the tokens the miner compares."""
        cache = self._cache
        digits = self._digits_fast
        out: list[str] = []
        for token in self._mask_spans(message).split():
            got = cache.get(token)
            if got is None:
                # A bare number is always one value: no regex, and no cache entry for it
                # (counters and ids would crowd the cache of constant words out).
                got = (
                    WILDCARD
                    if digits and token.isascii() and token.isdigit()
                    else (self.mask_token(token))
                )
            out.append(got)
        return out

    def mask(self, message: str) -> str:
        """Return ``message`` masked, with whitespace runs squeezed to one space."""
        return " ".join(self.tokenize(message))

    def tokenize_many(self, messages: Iterable[str]) -> list[list[str]]:
        """Tokenise a batch; identical messages are masked once."""
        seen: dict[str, list[str]] = {}
        out: list[list[str]] = []
        for message in messages:
            tokens = seen.get(message)
            if tokens is None:
                tokens = self.tokenize(message)
                seen[message] = tokens
            out.append(tokens)
        return out


def join_tokens(tokens: Sequence[str]) -> str:
    """Render tokens as a template string (single spaces, empty tokens dropped)."""
    return " ".join(t for t in tokens if t)
