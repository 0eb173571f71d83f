"""Arguments of the chat commands: ``key=value`` filters plus free words.

Chat has no option parser and people type fast, so every command takes the same small
grammar: ``/logs service=nginx level=error since=2h timeout`` — known ``key=value`` words are
filters, everything else is the free text (a substring for ``/logs``, the query for
``/search``). Unknown keys are refused with the list of known ones rather than searched
for literally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from devmesh_core.errors import InvalidInput
from devmesh_core.models import Level
from devmesh_core.timeparse import parse_time

FILTER_KEYS = ("service", "host", "level", "since", "until", "trace", "template", "limit")
_ALIASES = {"svc": "service", "s": "service", "h": "host", "l": "level", "n": "limit"}
MAX_LIMIT = 200


@dataclass
class Filters:
    """Parsed filters of ``/logs`` and ``/search``."""

    service: str | None = None
    host: str | None = None
    level: Level | None = None
    since: datetime | None = None
    until: datetime | None = None
    trace_id: str | None = None
    template_id: str | None = None
    limit: int = 50
    words: list[str] = field(default_factory=list)

    @property
    def text(self) -> str | None:
        """The free words joined, or ``None``."""
        return " ".join(self.words) or None


def parse_filters(args: list[str], *, default_limit: int = 50) -> Filters:
    """Split command arguments into filters and free words; ``InvalidInput`` says what is
    wrong (unknown key, bad level, bad time, bad limit)."""
    found = Filters(limit=default_limit)
    for arg in args:
        key, sep, value = arg.partition("=")
        key = _ALIASES.get(key.lower(), key.lower())
        if not sep or not key.isidentifier():
            found.words.append(arg)
            continue
        if key not in FILTER_KEYS:
            raise InvalidInput(f"unknown filter {key!r}; use {', '.join(FILTER_KEYS)}")
        if not value:
            raise InvalidInput(f"{key}= needs a value")
        if key == "service":
            found.service = value
        elif key == "host":
            found.host = value
        elif key == "level":
            try:
                found.level = Level.parse(value)
            except ValueError as exc:
                raise InvalidInput(f"level: {exc}") from exc
        elif key in ("since", "until"):
            try:
                setattr(found, key, parse_time(value))
            except ValueError as exc:
                raise InvalidInput(f"{key}: {exc}") from exc
        elif key == "trace":
            found.trace_id = value
        elif key == "template":
            found.template_id = value
        elif key == "limit":
            if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
                raise InvalidInput(f"limit must be a number from 1 to {MAX_LIMIT}")
            found.limit = int(value)
    return found


def split_params(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Positional words and ``key=value`` parameters (for ``/fix``)."""
    words: list[str] = []
    params: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key:
            params[key] = value
        else:
            words.append(arg)
    return words, params
