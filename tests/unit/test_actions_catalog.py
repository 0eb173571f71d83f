"""The action catalog: typed parameters, the allowlist, and argv plans (no shell, ever).

Property-based tests (hypothesis) throw arbitrary text at every name-taking parameter: what
gets through must be a plain name that cannot act as a shell word, an option or a path.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmesh_core.actions.catalog import (
    CATALOG,
    catalog_specs,
    normalize_unit,
    plan,
    validate_action,
)
from devmesh_core.actions.settings import ActionSettings, ScriptParam, ScriptSpec
from devmesh_core.errors import InvalidInput

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@:-]*")
SHELL_META = set(" \t\n\r;&|$`<>()\\'\"*?[]{}!#~/=")


def _settings(**extra: object) -> ActionSettings:
    data: dict[str, object] = {
        "allow": {
            "web1": {
                "units": ["nginx", "app-*"],
                "containers": ["redis"],
                "caches": ["thumbs"],
                "logs": ["app"],
                "scripts": ["flush-queue"],
            }
        },
        "caches": {"thumbs": "/var/cache/thumbs"},
        "logs": {"app": ["/var/log/app/app.log"]},
        "scripts_dir": "/opt/devmesh/scripts",
        "scripts": {
            "flush-queue": {
                "params": {
                    "queue": {"type": "choice", "choices": ["mail", "jobs"], "required": True},
                    "limit": {"type": "int", "minimum": 1, "maximum": 100},
                }
            }
        },
    }
    data.update(extra)
    return ActionSettings.model_validate(data)


def test_catalog_has_every_action_with_risk_defaults() -> None:
    specs = {s.name: s for s in catalog_specs()}
    assert set(specs) == {
        "restart_unit", "start_unit", "stop_unit", "reload_unit", "restart_container",
        "clear_cache", "rotate_logs", "run_script",
    }  # fmt: skip
    assert specs["stop_unit"].risk == "high"
    assert specs["run_script"].risk == "high"
    assert specs["restart_unit"].risk == "low"
    overridden = {
        s.name: s.risk for s in catalog_specs(ActionSettings(risk={"restart_unit": "high"}))
    }
    assert overridden["restart_unit"] == "high"


def test_unit_gets_service_suffix_and_summary() -> None:
    done = validate_action("restart_unit", {"unit": "nginx"}, "web1", _settings())
    assert done.params == {"unit": "nginx.service"}
    assert done.summary == "restart unit nginx.service on web1"
    assert done.risk == "low"
    assert validate_action("reload_unit", {"unit": "app-worker.service"}, "web1", _settings())


@pytest.mark.parametrize(
    ("action", "params", "reason"),
    [
        ("shutdown_host", {}, "not in catalog"),
        ("restart_unit", {"unit": "nginx; rm -rf /"}, "bad parameter"),
        ("restart_unit", {"unit": "$(reboot)"}, "bad parameter"),
        ("restart_unit", {"unit": "-H evil"}, "bad parameter"),
        ("restart_unit", {"unit": "../../etc/passwd"}, "bad parameter"),
        ("restart_unit", {"unit": "nginx", "extra": "x"}, "bad parameter"),
        ("restart_unit", {"unit": 5}, "bad parameter"),
        ("restart_unit", {"unit": "sshd"}, "not allowlisted"),
        ("restart_container", {"container": "postgres"}, "not allowlisted"),
        ("clear_cache", {"cache": "/var/cache/thumbs"}, "bad parameter"),
        ("clear_cache", {"cache": "other"}, "not allowlisted"),
        ("rotate_logs", {"target": "syslog"}, "not allowlisted"),
        ("run_script", {"script": "../bin/sh"}, "bad parameter"),
        ("run_script", {"script": "rm"}, "not allowlisted"),
        ("run_script", {"script": "flush-queue", "args": {"queue": "all"}}, "bad parameter"),
        ("run_script", {"script": "flush-queue", "args": {}}, "bad parameter"),
        ("run_script", {"script": "flush-queue", "args": {"queue": "mail", "x": 1}}, "bad "),
        ("run_script", {"script": "flush-queue", "args": {"queue": "mail", "limit": 0}}, "bad"),
        ("run_script", {"script": "flush-queue", "args": {"queue": "mail", "limit": "5"}}, "bad"),
    ],
)
def test_refusals_name_their_reason(action: str, params: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_action(action, params, "web1", _settings())
    assert str(caught.value).startswith(reason)


def test_unknown_host_has_nothing_allowlisted() -> None:
    with pytest.raises(InvalidInput, match="not allowlisted"):
        validate_action("restart_unit", {"unit": "nginx"}, "db9", _settings())


def test_star_host_and_per_host_actions() -> None:
    cfg = _settings(allow={"*": {"units": ["chrony"]}, "web1": {"units": ["nginx"],
                    "actions": ["restart_unit"]}})  # fmt: skip
    assert validate_action("restart_unit", {"unit": "chrony"}, "db2", cfg)
    assert validate_action("restart_unit", {"unit": "chrony"}, "web1", cfg)
    with pytest.raises(InvalidInput, match="not allowed on host"):
        validate_action("stop_unit", {"unit": "nginx"}, "web1", cfg)


def test_script_risk_and_args_render_as_single_argv_words() -> None:
    cfg = _settings()
    done = validate_action(
        "run_script", {"script": "flush-queue", "args": {"queue": "mail", "limit": 5}}, "web1", cfg
    )
    assert done.risk == "high"
    todo = plan(done, cfg)
    assert todo.argv == ["/opt/devmesh/scripts/flush-queue", "--limit=5", "--queue=mail"]


def test_plans_are_argv_lists_with_tools_from_path() -> None:
    cfg = _settings()
    found = {"systemctl": "/usr/bin/systemctl", "docker": "/usr/bin/docker"}
    unit = plan(validate_action("stop_unit", {"unit": "nginx"}, "web1", cfg), cfg, which=found.get)
    assert unit.argv == ["/usr/bin/systemctl", "stop", "nginx.service"]
    assert unit.verify == ["/usr/bin/systemctl", "is-active", "nginx.service"]
    box = plan(
        validate_action("restart_container", {"container": "redis"}, "web1", cfg), cfg,
        which=found.get,
    )  # fmt: skip
    assert box.argv == ["/usr/bin/docker", "restart", "redis"]
    cache = plan(validate_action("clear_cache", {"cache": "thumbs"}, "web1", cfg), cfg)
    assert cache.argv is None and cache.paths == ["/var/cache/thumbs"]
    nothing: dict[str, str] = {}
    with pytest.raises(InvalidInput, match="systemctl is not on PATH"):
        plan(validate_action("start_unit", {"unit": "nginx"}, "web1", cfg), cfg, which=nothing.get)


def test_script_symlink_escape_is_refused(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "evil").symlink_to("/bin/sh")
    cfg = ActionSettings(
        allow={"h": {"scripts": ["evil"]}},  # type: ignore[dict-item]
        scripts_dir=scripts,
        scripts={"evil": ScriptSpec()},
    )
    done = validate_action("run_script", {"script": "evil"}, "h", cfg)
    with pytest.raises(InvalidInput, match="resolves outside"):
        plan(done, cfg)


# -- properties ---------------------------------------------------------------------------
names = st.text(alphabet=string.printable + "äß€\x00", max_size=40)


@given(names)
def test_property_unit_names_are_safe_words(text: str) -> None:
    try:
        unit = normalize_unit(text)
    except ValueError:
        return
    assert SAFE_NAME.fullmatch(unit)
    assert not (set(unit) & SHELL_META)
    assert not unit.startswith("-")
    assert unit.endswith((".service", ".socket", ".timer", ".target", ".mount", ".path"))


@given(names)
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
def test_property_only_allowlisted_units_pass(text: str) -> None:
    cfg = _settings(allow={"web1": {"units": ["nginx"]}})
    try:
        done = validate_action("restart_unit", {"unit": text}, "web1", cfg)
    except InvalidInput:
        return
    assert text in ("nginx", "nginx.service")
    assert done.params == {"unit": "nginx.service"}


@given(st.sampled_from(["restart_container", "clear_cache", "rotate_logs", "run_script"]), names)
def test_property_names_never_carry_paths_or_shell(action: str, text: str) -> None:
    key = {"restart_container": "container", "clear_cache": "cache",
           "rotate_logs": "target", "run_script": "script"}[action]  # fmt: skip
    try:
        done = validate_action(action, {key: text}, "web1", _settings(), check_allow=False)
    except InvalidInput:
        return
    value = done.params[key]
    assert value == text
    assert not (set(value) & SHELL_META)
    assert not value.startswith(("-", "."))


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=1, max_size=3))
def test_property_unknown_parameters_are_refused(extra: dict[str, str]) -> None:
    params: dict[str, object] = {"unit": "nginx", **{f"x{k}": v for k, v in extra.items()}}
    with pytest.raises(InvalidInput, match="bad parameter"):
        validate_action("restart_unit", params, "web1", _settings())


@given(st.text(max_size=30))
def test_property_script_str_args_match_their_pattern(text: str) -> None:
    cfg = ActionSettings(
        allow={"h": {"scripts": ["s"]}},  # type: ignore[dict-item]
        scripts_dir=Path("/opt/s"),
        scripts={"s": ScriptSpec(params={"name": ScriptParam()})},
    )
    try:
        done = validate_action("run_script", {"script": "s", "args": {"name": text}}, "h", cfg)
    except InvalidInput:
        return
    assert re.fullmatch(ScriptParam().pattern, text)
    argv = plan(done, cfg).argv
    assert argv is not None and argv[1] == f"--name={text}" and len(argv) == 2


@given(st.sampled_from(sorted(CATALOG)), st.integers() | st.none() | st.booleans())
def test_property_non_string_names_are_refused(action: str, value: object) -> None:
    key = {"restart_container": "container", "clear_cache": "cache", "rotate_logs": "target",
           "run_script": "script"}.get(action, "unit")  # fmt: skip
    with pytest.raises(InvalidInput, match="bad parameter"):
        validate_action(action, {key: value}, "web1", _settings())
