"""Noise filter: drop journal entries by unit, message regex and priority before shipping.

A homelab journal is mostly noise (timers, cron sessions, DHCP renewals). Dropping it on the
node saves the link, the spool and the store. Rules come from a YAML file so they can be
changed without a restart: the shipper re-reads it on SIGHUP (``systemctl reload``).

Example::

    min_priority: info            # keep info (6) and more severe; 0-7 or a syslog name
    drop_units: [systemd-timesyncd, "user@*"]
    drop_messages: ['^pam_unix\\(cron:session\\)']
    units:                         # per-unit overrides, first matching pattern wins
      sshd:
        min_priority: notice       # replaces the global minimum for this unit
        drop_messages: ['\\[preauth\\]$']   # added to the global patterns
      backup.service:
        min_priority: debug
      noisy-*:
        drop: true

A unit pattern (shell glob) matches the raw ``_SYSTEMD_UNIT`` (``nginx.service``), the same
name without ``.service`` (``nginx``), the ``SYSLOG_IDENTIFIER`` or the service name DevMesh
gives the entry (a container's name, for Docker), so rules read naturally for kernel,
syslog-only and container senders too.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devmesh_core.log import get_logger

log = get_logger(__name__)

PRIORITY_NAMES: dict[str, int] = {
    "emerg": 0,
    "emergency": 0,
    "panic": 0,
    "alert": 1,
    "crit": 2,
    "critical": 2,
    "fatal": 2,
    "err": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "notice": 5,
    "info": 6,
    "informational": 6,
    "debug": 7,
}


class FilterConfigError(ValueError):
    """The filter file is unreadable or wrong; the message says where."""


def parse_priority(value: Any, where: str = "min_priority") -> int:
    """A syslog priority 0-7 or its name (``err``, ``warning``, ``info``…) as an int."""
    if isinstance(value, bool):
        raise FilterConfigError(f"{where}: not a priority: {value!r}")
    if isinstance(value, int) and 0 <= value <= 7:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and 0 <= int(text) <= 7:
            return int(text)
        if text in PRIORITY_NAMES:
            return PRIORITY_NAMES[text]
    raise FilterConfigError(
        f"{where}: not a priority: {value!r} (use 0-7 or emerg, alert, crit, err, warning, "
        "notice, info, debug)"
    )


def _compile_messages(patterns: Any, where: str) -> list[re.Pattern[str]]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list):
        raise FilterConfigError(f"{where} must be a list of regular expressions")
    compiled = []
    for index, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            raise FilterConfigError(f"{where}[{index}] must be a string")
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise FilterConfigError(f"{where}[{index}]: bad regex {pattern!r}: {exc}") from exc
    return compiled


def _join(patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One alternation so a message costs one regex search however many patterns exist."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p.pattern})" for p in patterns))


def _glob_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise FilterConfigError(f"{where} must be a list of unit names or globs")
    return list(value)


@dataclass(frozen=True, slots=True)
class UnitOverride:
    """Rules for units matching ``pattern``: replace the minimum priority, add patterns, or drop."""

    pattern: str
    min_priority: int | None = None
    drop: bool = False
    drop_messages: tuple[re.Pattern[str], ...] = ()


@dataclass(frozen=True, slots=True)
class _Resolved:
    drop: bool
    min_priority: int
    messages: re.Pattern[str] | None


@dataclass(slots=True)
class FilterRules:
    """Compiled rules. :meth:`keep` is called once per journal entry, so it is cached by unit."""

    min_priority: int = 7
    drop_units: tuple[str, ...] = ()
    drop_messages: tuple[re.Pattern[str], ...] = ()
    units: tuple[UnitOverride, ...] = ()
    _cache: dict[tuple[str | None, str | None, str | None], _Resolved] = field(default_factory=dict)

    @property
    def is_noop(self) -> bool:
        """True when nothing can be dropped (the default: ship everything)."""
        return (
            self.min_priority >= 7
            and not self.drop_units
            and not self.drop_messages
            and not self.units
        )

    def _resolve(self, unit: str | None, identifier: str | None, service: str | None) -> _Resolved:
        key = (unit, identifier, service)
        found = self._cache.get(key)
        if found is not None:
            return found
        names = [n for n in (unit, identifier, service) if n]
        if unit and unit.endswith(".service"):
            names.append(unit[: -len(".service")])

        def matches(pattern: str) -> bool:
            return any(fnmatch.fnmatchcase(name, pattern) for name in names)

        drop = any(matches(p) for p in self.drop_units)
        minimum = self.min_priority
        messages = list(self.drop_messages)
        for override in self.units:
            if matches(override.pattern):
                drop = drop or override.drop
                if override.min_priority is not None:
                    minimum = override.min_priority
                messages.extend(override.drop_messages)
                break
        resolved = _Resolved(drop, minimum, _join(messages))
        if len(self._cache) > 10_000:  # unbounded unit names (transient scopes): stay small
            self._cache.clear()
        self._cache[key] = resolved
        return resolved

    def keep(
        self,
        unit: str | None,
        identifier: str | None,
        priority: int,
        message: str,
        service: str | None = None,
    ) -> bool:
        """Whether an entry survives: not a dropped unit, severe enough, no matching pattern.

        ``unit``, ``identifier`` and ``service`` (the name DevMesh shows, e.g. a container's)
        are all candidates for unit patterns.
        """
        rule = self._resolve(unit, identifier, service)
        if rule.drop or priority > rule.min_priority:
            return False
        return rule.messages is None or rule.messages.search(message) is None


def parse_rules(data: Any) -> FilterRules:
    """Compile rules from parsed YAML (``None`` or ``{}`` keeps everything)."""
    if data is None:
        return FilterRules()
    if not isinstance(data, dict):
        raise FilterConfigError("the filter file must be a YAML mapping")
    unknown = sorted(set(data) - {"min_priority", "drop_units", "drop_messages", "units"})
    if unknown:
        raise FilterConfigError(f"unknown filter keys: {', '.join(unknown)}")
    minimum = parse_priority(data["min_priority"]) if "min_priority" in data else 7
    units_raw = data.get("units") or {}
    if not isinstance(units_raw, dict):
        raise FilterConfigError("units must map a unit name or glob to its rules")
    overrides = []
    for pattern, rules in units_raw.items():
        where = f"units.{pattern}"
        rules = rules or {}
        if not isinstance(rules, dict):
            raise FilterConfigError(f"{where} must be a mapping")
        bad = sorted(set(rules) - {"min_priority", "drop", "drop_messages"})
        if bad:
            raise FilterConfigError(f"{where}: unknown keys: {', '.join(bad)}")
        overrides.append(
            UnitOverride(
                pattern=str(pattern),
                min_priority=parse_priority(rules["min_priority"], f"{where}.min_priority")
                if "min_priority" in rules
                else None,
                drop=bool(rules.get("drop", False)),
                drop_messages=tuple(
                    _compile_messages(rules.get("drop_messages"), f"{where}.drop_messages")
                ),
            )
        )
    return FilterRules(
        min_priority=minimum,
        drop_units=tuple(_glob_list(data.get("drop_units"), "drop_units")),
        drop_messages=tuple(_compile_messages(data.get("drop_messages"), "drop_messages")),
        units=tuple(overrides),
    )


def load_rules(path: Path) -> FilterRules:
    """Read and compile a filter file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FilterConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FilterConfigError(f"{path} is not valid YAML: {exc}") from exc
    return parse_rules(data)


class ReloadableFilter:
    """The rules in force, swapped whole on reload so the reader thread never sees a mix.

    A reload that fails (bad YAML, bad regex) keeps the previous rules and logs why: a typo
    in the filter file must not stop shipping or suddenly let all the noise through.
    """

    def __init__(self, path: Path | None, rules: FilterRules | None = None) -> None:
        self.path = path
        self.rules = (
            rules
            if rules is not None
            else (load_rules(path) if path is not None else FilterRules())
        )
        self.reloads = 0

    def reload(self) -> bool:
        """Re-read the file; True when the new rules are in force."""
        if self.path is None:
            return False
        try:
            rules = load_rules(self.path)
        except FilterConfigError as exc:
            log.error(
                "filters_reload_failed",
                path=str(self.path),
                error=str(exc),
                note="keeping the previous rules",
            )
            return False
        self.rules = rules
        self.reloads += 1
        log.info(
            "filters_reloaded",
            path=str(self.path),
            min_priority=rules.min_priority,
            drop_units=len(rules.drop_units),
            drop_messages=len(rules.drop_messages),
            unit_overrides=len(rules.units),
        )
        return True
