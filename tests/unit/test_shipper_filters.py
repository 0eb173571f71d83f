"""Noise filter: units, regexes, priorities, per-unit overrides, reload (incl. SIGHUP)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from ingest.config import ShipperConfig
from ingest.filters import (
    FilterConfigError,
    FilterRules,
    ReloadableFilter,
    load_rules,
    parse_priority,
    parse_rules,
)
from ingest.shipper import Shipper

RULES = {
    "min_priority": "info",
    "drop_units": ["systemd-timesyncd", "user@*"],
    "drop_messages": [r"^pam_unix\(cron:session\)"],
    "units": {
        "sshd": {"min_priority": "notice", "drop_messages": [r"\[preauth\]$"]},
        "backup*": {"min_priority": "debug"},
        "noisy-*": {"drop": True},
    },
}


def keep(
    rules: FilterRules,
    unit: str | None,
    priority: int,
    message: str = "hello",
    identifier: str | None = None,
    service: str | None = None,
) -> bool:
    return rules.keep(unit, identifier, priority, message, service)


def test_parse_priority() -> None:
    assert parse_priority("err") == 3
    assert parse_priority("WARNING") == 4
    assert parse_priority(" 5 ") == 5
    assert parse_priority(0) == 0
    for bad in (8, -1, "loud", True, None, 2.5):
        with pytest.raises(FilterConfigError):
            parse_priority(bad)


def test_empty_rules_keep_everything() -> None:
    rules = parse_rules(None)
    assert rules.is_noop
    assert keep(rules, "anything.service", 7)
    assert parse_rules({}).is_noop


def test_min_priority() -> None:
    rules = parse_rules({"min_priority": "warning"})
    assert keep(rules, "a.service", 4)
    assert keep(rules, "a.service", 0)
    assert not keep(rules, "a.service", 5)
    assert not keep(rules, "a.service", 7)


def test_drop_units_match_unit_short_name_identifier_and_service() -> None:
    rules = parse_rules(RULES)
    assert not keep(rules, "systemd-timesyncd.service", 3)  # name without .service
    assert not keep(rules, "user@1000.service", 3)  # glob
    assert not keep(rules, None, 3, identifier="systemd-timesyncd")  # syslog identifier
    assert not keep(rules, "docker.service", 3, service="noisy-container")  # container name
    assert keep(rules, "nginx.service", 3)


def test_drop_messages() -> None:
    rules = parse_rules(RULES)
    assert not keep(rules, "cron.service", 6, "pam_unix(cron:session): session opened")
    assert keep(rules, "cron.service", 6, "job failed: pam_unix(cron:session) odd")  # anchored


def test_per_unit_overrides() -> None:
    rules = parse_rules(RULES)
    # sshd: stricter minimum (notice) and an extra pattern on top of the global ones.
    assert not keep(rules, "sshd.service", 6, "Accepted publickey")
    assert keep(rules, "sshd.service", 5, "Accepted publickey")
    assert not keep(rules, "sshd.service", 3, "Connection closed by 1.2.3.4 [preauth]")
    assert not keep(rules, "sshd.service", 3, "pam_unix(cron:session): x")  # global still on
    # backup*: looser minimum (debug), others keep the global one.
    assert keep(rules, "backup-db.service", 7)
    assert not keep(rules, "nginx.service", 7)
    # noisy-*: dropped outright whatever the priority.
    assert not keep(rules, "noisy-thing.service", 0)


def test_first_matching_override_wins() -> None:
    rules = parse_rules({"units": {"web*": {"min_priority": 3}, "webapp": {"min_priority": 7}}})
    assert not keep(rules, "webapp.service", 6)


def test_decisions_are_cached_but_rules_apply_per_message() -> None:
    rules = parse_rules(RULES)
    for _ in range(3):
        assert keep(rules, "sshd.service", 3, "Failed password")
        assert not keep(rules, "sshd.service", 3, "x [preauth]")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([1, 2], "must be a YAML mapping"),
        ({"min_priorty": 3}, "unknown filter keys: min_priorty"),
        ({"drop_messages": ["("]}, "bad regex"),
        ({"drop_units": [""]}, "drop_units"),
        ({"units": {"x": {"min_priority": "loud"}}}, "units.x.min_priority"),
        ({"units": {"x": {"drop_message": ["y"]}}}, "unknown keys: drop_message"),
        ({"units": ["x"]}, "units must map"),
    ],
)
def test_bad_rules_are_refused_with_a_reason(data: object, error: str) -> None:
    with pytest.raises(FilterConfigError, match=error.replace("(", r"\(")):
        parse_rules(data)


def test_load_rules_errors(tmp_path: Path) -> None:
    with pytest.raises(FilterConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_priority: [unclosed\n")
    with pytest.raises(FilterConfigError, match="not valid YAML"):
        load_rules(bad)


def test_reload_swaps_rules_and_keeps_old_ones_on_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "filters.yaml"
    path.write_text("min_priority: err\n")
    live = ReloadableFilter(path)
    assert not keep(live.rules, "a.service", 4)
    path.write_text("min_priority: debug\ndrop_units: [a]\n")
    assert live.reload()
    assert not keep(live.rules, "a.service", 0)
    assert keep(live.rules, "b.service", 7)
    before = live.rules
    path.write_text("drop_messages: ['(']\n")
    assert not live.reload()
    assert live.rules is before
    assert live.reloads == 1
    assert not ReloadableFilter(None).reload()


def test_sighup_asks_the_shipper_to_reload(tmp_path: Path) -> None:
    """The handler only sets a flag; the main loop reloads (no work in a signal handler)."""
    shipper = Shipper(ShipperConfig(state_dir=tmp_path))
    previous = signal.signal(signal.SIGHUP, shipper._on_signal)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert shipper._reload.is_set()
        assert not shipper._stop.is_set()
    finally:
        signal.signal(signal.SIGHUP, previous)
