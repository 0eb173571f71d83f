"""Runbooks: Markdown files with YAML front matter that say what a failure looks like
(trigger patterns), what to check, and which typed actions may fix it.

They are data, not code: the detectors use their triggers, retrieval cites them, the
diagnosis follows them and the action layer only proposes actions a runbook allows (and then
re-validates them against the catalog and the allowlist).

Front matter (between ``---`` lines at the top)::

    id: disk-full                   # slug, unique across the directory
    title: Disk full
    services: [postgres, nginx]     # services it covers; empty = any
    templates: ["No space left on device"]   # template texts (or fragments) it covers
    triggers:                       # log patterns that open an incident with this runbook
      - pattern: 'No space left on device'
        level: ERROR                # minimum level (optional)
        severity: high
        examples:                   # real messages it must fire on (checked by the linter)
          - 'write error: No space left on device'
    actions:                        # actions it allows, with parameters
      - action: clear_cache
        params: {cache: apt}
        note: frees the package cache   # when/why (shown to people and the model)
    checks: ['df -h shows < 90 % used']
    risk: low
    tags: [storage]

Action names must be in the action catalog and their parameter names must be the
action's; values may use the placeholders ``{service}``, ``{host}`` and ``{unit}``
(:func:`render_params` fills them from the incident). ``devmesh runbooks lint`` checks all
of this, including that every trigger fires on each of its examples.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from devmesh_core.errors import InvalidInput
from devmesh_core.models import Level

if TYPE_CHECKING:
    from devmesh_core.config import Settings

Severity = Literal["low", "medium", "high", "critical"]
Risk = Literal["low", "high"]

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


class RunbookTrigger(BaseModel):
    """A log pattern that, seen in an event, opens (or joins) an incident with the runbook."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str = Field(description="regular expression searched in the message, any case")
    level: Level | None = Field(default=None, description="minimum level of a matching event")
    services: tuple[str, ...] = Field(default=(), description="only these services; empty=any")
    severity: Severity = "medium"
    examples: tuple[str, ...] = Field(
        default=(), description="real messages the pattern must match (checked by lint)"
    )

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return Level.parse(value) if isinstance(value, str | int) else value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern {value!r} is not a valid regular expression: {exc}") from exc
        return value

    @cached_property
    def regex(self) -> re.Pattern[str]:
        """The compiled, case-insensitive pattern."""
        return re.compile(self.pattern, re.IGNORECASE)

    @cached_property
    def needles(self) -> tuple[str, ...] | None:
        """Lower-case strings one of which every match contains (``None``: not known).

        Detection tries every trigger on every stored event; most messages contain none of
        these words, and ``in`` on a lower-cased message is far cheaper than a
        case-insensitive regex search (measured ~150 µs per event for the bundled runbooks).
        """
        return required_substrings(self.pattern)

    def matches(
        self, message: str, *, service: str, level: Level, lowered: str | None = None
    ) -> bool:
        """Whether an event with this message, service and level fires the trigger.

        ``lowered``: ``message.lower()`` when the message is ASCII, computed once by a
        caller that tries many triggers (the needle pre-check applies only then: for ASCII
        text, lower-casing agrees with the regex's case-insensitive matching).
        """
        if self.services and service not in self.services:
            return False
        if self.level is not None and level.rank < self.level.rank:
            return False
        needles = self.needles
        if needles is not None:
            if lowered is None and message.isascii():
                lowered = message.lower()
            if lowered is not None and not any(n in lowered for n in needles):
                return False
        return self.regex.search(message) is not None


_MIN_NEEDLE = 3


def required_substrings(pattern: str) -> tuple[str, ...] | None:
    """Lower-case ASCII strings of which any match of ``pattern`` contains at least one, read
    off its parse tree (literal runs, groups, repeats of at least one, alternations whose
    every branch has one); ``None`` when no such set is found. Conservative: a part it does
    not understand only ends the current literal run."""
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser as sre  # type: ignore[attr-defined]

        tree = sre.parse(pattern)
    except Exception:
        return None

    def needles(items: Any) -> frozenset[str] | None:
        best: frozenset[str] | None = None

        def offer(found: frozenset[str] | None) -> None:
            nonlocal best
            if not found or any(len(n) < _MIN_NEEDLE or not n.isascii() for n in found):
                return
            if best is None or (min(map(len, found)), -len(found)) > (
                min(map(len, best)),
                -len(best),
            ):
                best = found

        run: list[str] = []
        for op, av in items:
            if op is c.LITERAL and av < 128:
                run.append(chr(av))
                continue
            offer(frozenset({"".join(run).lower()}))
            run = []
            if op is c.SUBPATTERN:
                offer(needles(av[-1]))
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and av[0] >= 1:
                offer(needles(av[2]))
            elif op is c.ATOMIC_GROUP:
                offer(needles(av))
            elif op is c.BRANCH:
                branches = [needles(branch) for branch in av[1]]
                if all(b is not None for b in branches):
                    offer(frozenset().union(*branches))  # type: ignore[arg-type]
        offer(frozenset({"".join(run).lower()}))
        return best

    found = needles(tree)
    return tuple(sorted(found)) if found else None


class RunbookAction(BaseModel):
    """An action a runbook allows: a catalog action name and its parameters. Parameter
    values may name the incident's context as ``{service}``, ``{host}`` or ``{unit}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    risk: Risk | None = Field(default=None, description="overrides the catalog's risk upwards")
    note: str = Field(default="", description="when and why to use it (for people and the LLM)")

    def render(
        self, *, service: str | None = None, host: str | None = None, unit: str | None = None
    ) -> dict[str, Any]:
        """The parameters with ``{service}``/``{host}``/``{unit}`` filled in (see
        :func:`render_params`)."""
        return render_params(self.params, service=service, host=host, unit=unit)


class Runbook(BaseModel):
    """One runbook: its front matter plus the Markdown body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    title: str
    services: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    triggers: tuple[RunbookTrigger, ...] = ()
    actions: tuple[RunbookAction, ...] = ()
    checks: tuple[str, ...] = Field(default=(), description="what to verify after a fix")
    risk: Risk = "low"
    tags: tuple[str, ...] = ()
    body: str = ""
    path: Path | None = None

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"id {value!r} must be a lowercase slug (a-z, 0-9, -)")
        return value

    @field_validator("services", "templates", "checks", "tags", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    def match(
        self, message: str, *, service: str, level: Level, lowered: str | None = None
    ) -> RunbookTrigger | None:
        """The first trigger this event fires, if any (``lowered``: see
        :meth:`RunbookTrigger.matches`)."""
        if lowered is None and message.isascii():
            lowered = message.lower()
        for trigger in self.triggers:
            if trigger.matches(message, service=service, level=level, lowered=lowered):
                return trigger
        return None

    @property
    def text(self) -> str:
        """Title, coverage and body as one text: what gets embedded and shown."""
        head = [f"# {self.title}"]
        if self.services:
            head.append("Services: " + ", ".join(self.services))
        if self.templates:
            head.append("Looks like: " + "; ".join(self.templates))
        return "\n".join(head) + "\n\n" + self.body.strip()


PLACEHOLDERS = frozenset({"service", "host", "unit"})
"""Names a runbook action's parameter values may refer to as ``{name}``."""


def render_params(
    params: Mapping[str, Any],
    *,
    service: str | None = None,
    host: str | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    """Fill the placeholders of runbook action parameters from an incident's context.

    ``{unit}`` defaults to the service's systemd unit (``<service>.service``) when no unit
    is known. A placeholder without a value raises ``InvalidInput`` (the action cannot be
    proposed for this incident), never leaves a literal ``{service}`` in a command.
    """
    values = {
        "service": service,
        "host": host,
        "unit": unit or (f"{service}.service" if service else None),
    }
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str) and "{" in value:
            missing = [n for n in _placeholders(value) if values.get(n) is None]
            if missing:
                raise InvalidInput(
                    f"parameter {key!r} needs {', '.join('{' + n + '}' for n in missing)}, "
                    "which this incident does not name"
                )
            out[key] = value.format_map({k: v for k, v in values.items() if v is not None})
        elif isinstance(value, Mapping):
            out[key] = render_params(value, service=service, host=host, unit=unit)
        else:
            out[key] = value
    return out


def _placeholders(value: str) -> list[str]:
    """Field names of a ``str.format`` template (``ValueError`` if malformed)."""
    return [field for _, field, _, _ in string.Formatter().parse(value) if field is not None]


def _strings(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Every string value of (nested) parameters with its dotted key."""
    found: list[tuple[str, str]] = []
    for key, value in params.items():
        if isinstance(value, str):
            found.append((prefix + str(key), value))
        elif isinstance(value, Mapping):
            found.extend(_strings(value, f"{prefix}{key}."))
    return found


def _action_problems(runbook: Runbook) -> list[str]:
    """What is wrong with a runbook's actions: unknown action, wrong parameter names, bad
    placeholders. The catalog is the ACTIONS layer's; a runbook may only ask for what it
    can run."""
    from devmesh_core.actions.catalog import CATALOG

    problems: list[str] = []
    for index, item in enumerate(runbook.actions):
        where = f"actions.{index} ({item.action})"
        entry = CATALOG.get(item.action)
        if entry is None:
            problems.append(
                f"{where}: unknown action; the catalog has {', '.join(sorted(CATALOG))}"
            )
            continue
        fields = entry.params.model_fields
        required = {name for name, info in fields.items() if info.is_required()}
        unknown = sorted(set(item.params) - set(fields))
        missing = sorted(required - set(item.params))
        if unknown:
            problems.append(f"{where}: unknown parameter(s) {', '.join(unknown)}")
        if missing:
            problems.append(f"{where}: missing parameter(s) {', '.join(missing)}")
        for key, value in _strings(item.params):
            try:
                names = _placeholders(value)
            except ValueError as exc:
                problems.append(f"{where}: parameter {key!r}: {exc}")
                continue
            bad = sorted(set(names) - PLACEHOLDERS)
            if bad:
                problems.append(
                    f"{where}: parameter {key!r} uses unknown placeholder(s) "
                    f"{', '.join('{' + b + '}' for b in bad)} (use {{service}}, {{host}}, "
                    "{unit})"
                )
    return problems


def _trigger_problems(runbook: Runbook) -> list[str]:
    """Examples a trigger does not match (a pattern that drifted from the real message)."""
    problems: list[str] = []
    for index, trigger in enumerate(runbook.triggers):
        for example in trigger.examples:
            if trigger.regex.search(example) is None:
                problems.append(
                    f"triggers.{index}: pattern {trigger.pattern!r} does not match its "
                    f"example {example!r}"
                )
    return problems


def parse_runbook(text: str, path: Path | None = None) -> Runbook:
    """Parse one runbook file's text; ``InvalidInput`` names the file and every problem."""
    where = str(path) if path is not None else "runbook"
    found = _FRONT.match(text)
    if found is None:
        raise InvalidInput(f"{where}: no YAML front matter (a '---' block at the top)")
    try:
        front = yaml.safe_load(found.group(1))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{where}: front matter is not valid YAML: {exc}") from exc
    if not isinstance(front, dict):
        raise InvalidInput(f"{where}: front matter must be a mapping")
    try:
        return Runbook(**front, body=text[found.end() :], path=path)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'runbook'}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors(include_url=False)
        )
        raise InvalidInput(f"{where}: {problems}") from exc


def lint_runbooks(directory: Path) -> tuple[list[Runbook], list[str]]:
    """Every runbook that parses, and one problem line per file that does not (plus ids
    used twice). ``devmesh runbooks lint`` prints the problems."""
    runbooks: list[Runbook] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    if not directory.is_dir():
        return [], [f"{directory}: not a directory"]
    for path in sorted(directory.glob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        try:
            runbook = parse_runbook(path.read_text(encoding="utf-8"), path)
        except (InvalidInput, OSError, UnicodeDecodeError) as exc:
            # One line per problem (YAML errors span several lines).
            problems.append(re.sub(r"\s*\n\s*", " ", str(exc)).strip())
            continue
        if runbook.id in seen:
            problems.append(f"{path}: id {runbook.id!r} is also used by {seen[runbook.id]}")
            continue
        deeper = _action_problems(runbook) + _trigger_problems(runbook)
        if deeper:
            problems.extend(f"{path}: {problem}" for problem in deeper)
            continue
        seen[runbook.id] = path
        runbooks.append(runbook)
    return runbooks, problems


def load_runbooks(directory: Path) -> list[Runbook]:
    """All runbooks of a directory; ``InvalidInput`` listing every problem if any is bad
    (a broken runbook must be fixed, not silently skipped)."""
    runbooks, problems = lint_runbooks(directory)
    if problems:
        raise InvalidInput("bad runbooks: " + " | ".join(problems))
    return runbooks


def bundled_runbooks_dir() -> Path:
    """The ``runbooks/`` folder shipped beside the package (the source checkout)."""
    return Path(__file__).resolve().parents[2] / "runbooks"


def runbooks_dir(settings: Settings) -> Path:
    """The runbook folder in force: ``reason.runbooks_dir`` if set, else
    ``<data_dir>/runbooks`` if that exists (the user's own), else the bundled set."""
    configured = settings.reason.runbooks_dir
    if configured is not None:
        return Path(configured).expanduser()
    own = settings.data_dir / "runbooks"
    if own.is_dir():
        return own
    return bundled_runbooks_dir()


def load_configured_runbooks(settings: Settings) -> list[Runbook]:
    """The runbooks of :func:`runbooks_dir`; ``InvalidInput`` if any is broken (run
    ``devmesh runbooks lint``), ``ConfigError`` if a configured folder does not exist."""
    from devmesh_core.errors import ConfigError

    directory = runbooks_dir(settings)
    if not directory.is_dir():
        raise ConfigError(f"runbooks directory {directory} does not exist")
    return load_runbooks(directory)
