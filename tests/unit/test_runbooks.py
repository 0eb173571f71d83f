"""Runbooks: the bundled set is valid, its triggers fire on the real messages of the
software and (almost) never on ordinary log lines; the linter catches broken runbooks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from devmesh_core.config import Settings
from devmesh_core.errors import ConfigError, InvalidInput
from devmesh_core.models import Level
from devmesh_core.reason.runbooks import (
    Runbook,
    bundled_runbooks_dir,
    lint_runbooks,
    load_configured_runbooks,
    load_runbooks,
    parse_runbook,
    render_params,
    required_substrings,
    runbooks_dir,
)
from devmesh_core.reason.settings import ReasonSettings
from tests.conftest import SHARED_DATA

LOGHUB = SHARED_DATA / "loghub-2k"
SAMPLE_LOGS = Path(__file__).resolve().parents[2] / "devmesh_core" / "data" / "sample_logs.jsonl"
CATALOG_ACTIONS = {
    "restart_unit", "start_unit", "stop_unit", "reload_unit", "restart_container",
    "clear_cache", "rotate_logs", "run_script",
}  # fmt: skip
REQUIRED_IDS = {
    "disk-full", "oom-kill", "service-crash-loop", "certificate-expiry", "dns-failure",
    "db-connection-exhaustion", "nfs-stale-mount", "container-restart-loop", "time-drift",
    "deployment-rollback",
}  # fmt: skip


@pytest.fixture(scope="module")
def bundled() -> list[Runbook]:
    return load_runbooks(bundled_runbooks_dir())


def _fired(runbooks: list[Runbook], message: str, service: str = "app") -> set[str]:
    return {r.id for r in runbooks if r.match(message, service=service, level=Level.ERROR)}


def test_bundled_runbooks_lint_clean(bundled: list[Runbook]) -> None:
    runbooks, problems = lint_runbooks(bundled_runbooks_dir())
    assert problems == []
    assert len(runbooks) >= 10
    assert {r.id for r in runbooks} >= REQUIRED_IDS


def test_every_runbook_is_complete(bundled: list[Runbook]) -> None:
    for runbook in bundled:
        assert runbook.triggers, runbook.id
        assert runbook.actions, runbook.id
        assert runbook.checks, runbook.id
        assert {a.action for a in runbook.actions} <= CATALOG_ACTIONS, runbook.id
        assert "## Diagnose" in runbook.body and "## Fix" in runbook.body, runbook.id
        for trigger in runbook.triggers:
            assert trigger.examples, f"{runbook.id}: trigger {trigger.pattern!r} has no example"


def test_each_trigger_fires_on_its_real_examples(bundled: list[Runbook]) -> None:
    for runbook in bundled:
        for trigger in runbook.triggers:
            for example in trigger.examples:
                assert trigger.matches(example, service="any", level=Level.ERROR), (
                    runbook.id,
                    example,
                )
                assert runbook.id in _fired(bundled, example)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Out of memory: Killed process 812 (jellyfin) total-vm:2345kB", "oom-kill"),
        ("No space left on device", "disk-full"),
        ("nginx.service: Start request repeated too quickly.", "service-crash-loop"),
        ("nginx.service: Failed with result 'exit-code'.", "service-crash-loop"),
        ("connect() failed (111: Connection refused) while connecting to upstream, client: x",
         "upstream-unreachable"),
        ("FATAL:  sorry, too many clients already", "db-connection-exhaustion"),
        ("FATAL:  remaining connection slots are reserved for non-replication superuser",
         "db-connection-exhaustion"),
        ("x509: certificate has expired or is not yet valid", "certificate-expiry"),
        ("certificate has expired", "certificate-expiry"),
        ("Temporary failure in name resolution", "dns-failure"),
        ("SERVFAIL <nas.lan. A IN>", "dns-failure"),
        ("cannot open '/mnt/nas/a': Stale file handle", "nfs-stale-mount"),
        ("System clock wrong by 12.000001 seconds", "time-drift"),
        ("Back-off restarting failed container", "container-restart-loop"),
        ("deployment_failed api: readiness probe failed", "deployment-rollback"),
    ],
)  # fmt: skip
def test_brief_messages_fire_their_runbook(
    bundled: list[Runbook], message: str, expected: str
) -> None:
    assert expected in _fired(bundled, message)


def test_oom_and_crash_loop_do_not_overlap(bundled: list[Runbook]) -> None:
    # systemd reports an OOM kill as a failed result too; it is the OOM runbook's case.
    assert _fired(bundled, "grafana.service: Failed with result 'oom-kill'.") == {"oom-kill"}
    # A clean exit is not a crash.
    assert (
        _fired(bundled, "backup.service: Main process exited, code=exited, status=0/SUCCESS")
        == set()
    )


def test_no_false_fires_on_loghub(bundled: list[Runbook]) -> None:
    """16,000 real lines of eight systems (HDFS, BGL, Linux, OpenSSH, Apache, Spark,
    Zookeeper, OpenStack) contain none of these failures: at most a handful may fire."""
    files = sorted(LOGHUB.glob("*/*_2k.log_structured*.csv"))
    assert len(files) >= 8
    lines = fires = 0
    examples: list[str] = []
    for path in files:
        with path.open(encoding="utf-8", errors="replace", newline="") as handle:
            for row in csv.DictReader(handle):
                lines += 1
                fired = _fired(bundled, row["Content"])
                if fired:
                    fires += 1
                    examples.append(f"{sorted(fired)}: {row['Content'][:120]}")
    assert lines == 16_000
    assert fires <= 5, examples  # measured: 0


def test_the_needle_precheck_never_hides_a_match(bundled: list[Runbook]) -> None:
    """A trigger's needles are a necessary condition: over the bundled triggers' examples,
    the same examples upper-cased, and LogHub's lines, every message the regex matches
    contains one of them (lower-cased), so skipping the regex when none occurs loses no
    fire. Most triggers have needles, or the pre-check would buy nothing."""
    triggers = [t for rb in bundled for t in rb.triggers]
    assert sum(t.needles is not None for t in triggers) >= len(triggers) - 2
    messages = [m for t in triggers for m in t.examples]
    messages += [m.upper() for m in messages]
    for path in sorted(LOGHUB.glob("*/*_2k.log_structured*.csv")):
        with path.open(encoding="utf-8", errors="replace", newline="") as handle:
            messages += [row["Content"] for row in csv.DictReader(handle)]
    hits = 0
    for message in messages:
        lowered = message.lower()
        for trigger in triggers:
            if trigger.regex.search(message) is None:
                continue
            hits += 1
            assert trigger.needles is None or any(n in lowered for n in trigger.needles), (
                trigger.pattern,
                message,
            )
            assert trigger.matches(message, service="x", level=Level.CRITICAL)
    assert hits >= 2 * sum(len(t.examples) for t in triggers)


@pytest.mark.parametrize(
    ("pattern", "needles"),
    [
        ("No space left on device", ("no space left on device",)),
        (r"\bENOSPC\b(?!: System limit)", ("enospc",)),
        (r"error (?:opening|reading) (?:disk|tape)", ("opening", "reading")),  # longest
        (r"Killed process (\d+)+ oom", ("killed process ",)),
        (r"(?:disk|tape)s? full", (" full",)),
        (r"(?:disk|tape) on", ("disk", "tape")),
        (r"[Cc]lock skew", ("lock skew",)),
        (r"a|bcdef", None),  # one branch has no run of three
        (r"(?:xyz)?abcdef", ("abcdef",)),  # an optional group is never required
        (r"\d+\.\d+", None),
        (r"caf\u00e9 crashed", (" crashed",)),  # non-ASCII runs are not used
        (r"(", None),  # does not parse: no pre-check
    ],
)
def test_required_substrings(pattern: str, needles: tuple[str, ...] | None) -> None:
    assert required_substrings(pattern) == needles


def test_non_ascii_messages_skip_the_precheck() -> None:
    """Unicode case folding differs from str.lower() (U+017F matches 's' under IGNORECASE),
    so a non-ASCII message always goes through the regex."""
    runbook = parse_runbook(
        "---\nid: pg\ntitle: Pool\ntriggers:\n  - pattern: 'sorry, too many clients'\n---\nb\n"
    )
    (trigger,) = runbook.triggers
    long_s = "\u017forry, too many clients already"
    assert trigger.regex.search(long_s) is not None
    assert trigger.matches(long_s, service="pg", level=Level.ERROR)
    assert runbook.match(long_s, service="pg", level=Level.ERROR) is trigger


def test_sample_logs_fire_the_right_runbooks(bundled: list[Runbook]) -> None:
    """The project's demo log has a disk-full PostgreSQL and an nginx losing its upstream."""
    fired: dict[str, int] = {}
    for line in SAMPLE_LOGS.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        for runbook_id in _fired(bundled, event["message"], event.get("service", "")):
            fired[runbook_id] = fired.get(runbook_id, 0) + 1
    assert set(fired) == {"disk-full", "upstream-unreachable"}, fired


def test_lint_reports_one_line_per_problem(tmp_path: Path) -> None:
    (tmp_path / "bad-id.md").write_text("---\nid: Bad_ID\ntitle: x\n---\nbody\n")
    (tmp_path / "yaml.md").write_text("---\nid: y\ntitle: a: b: c\n---\n")
    (tmp_path / "nofront.md").write_text("# just markdown\n")
    (tmp_path / "actions.md").write_text(
        "---\nid: acts\ntitle: t\nactions:\n  - action: reboot_host\n"
        "  - action: restart_unit\n    params: {unit: '{svc}', force: true}\n"
        "  - action: restart_container\n---\n"
    )
    (tmp_path / "regex.md").write_text(
        "---\nid: rx\ntitle: t\ntriggers:\n  - pattern: 'foo('\n---\n"
    )
    (tmp_path / "example.md").write_text(
        "---\nid: ex\ntitle: t\ntriggers:\n  - pattern: 'disk full'\n"
        "    examples: ['No space left on device']\n---\n"
    )
    (tmp_path / "dup1.md").write_text("---\nid: same\ntitle: a\n---\n")
    (tmp_path / "dup2.md").write_text("---\nid: same\ntitle: b\n---\n")
    (tmp_path / "README.md").write_text("not a runbook")
    runbooks, problems = lint_runbooks(tmp_path)
    assert [r.id for r in runbooks] == ["same"]
    assert all("\n" not in p for p in problems)
    text = "\n".join(problems)
    assert "lowercase slug" in text
    assert "not valid YAML" in text
    assert "no YAML front matter" in text
    assert "reboot_host" in text and "unknown action" in text
    assert "unknown parameter(s) force" in text
    assert "unknown placeholder(s) {svc}" in text
    assert "restart_container): missing parameter(s) container" in text
    assert "not a valid regular expression" in text
    assert "does not match its example 'No space left on device'" in text
    assert "is also used by" in text
    with pytest.raises(InvalidInput, match="bad runbooks"):
        load_runbooks(tmp_path)


def test_parse_keeps_front_matter_and_body() -> None:
    runbook = parse_runbook(
        "---\nid: x\ntitle: X\nservices: nginx\ntriggers:\n  - pattern: boom\n"
        "    level: warning\n    services: [nginx]\n---\n# X\nbody\n"
    )
    assert runbook.services == ("nginx",)
    assert runbook.body.strip() == "# X\nbody"
    assert runbook.match("BOOM!", service="nginx", level=Level.ERROR) is not None
    assert runbook.match("boom", service="nginx", level=Level.INFO) is None  # below WARNING
    assert runbook.match("boom", service="caddy", level=Level.ERROR) is None


def test_render_params_fills_placeholders() -> None:
    assert render_params({"unit": "{unit}"}, service="nginx") == {"unit": "nginx.service"}
    assert render_params({"unit": "{unit}"}, service="nginx", unit="nginx@a.service") == {
        "unit": "nginx@a.service"
    }
    assert render_params(
        {"script": "rollback-deployment", "args": {"service": "{service}"}}, service="api"
    ) == {"script": "rollback-deployment", "args": {"service": "api"}}
    assert render_params({"cache": "apt"}) == {"cache": "apt"}
    with pytest.raises(InvalidInput, match=r"\{service\}"):
        render_params({"container": "{service}"}, host="web1")


def test_runbook_action_render(bundled: list[Runbook]) -> None:
    oom = next(r for r in bundled if r.id == "oom-kill")
    rendered = [a.render(service="jellyfin", host="nas") for a in oom.actions]
    assert {"unit": "jellyfin.service"} in rendered
    assert {"container": "jellyfin"} in rendered


def test_runbooks_dir_resolution(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert runbooks_dir(settings) == bundled_runbooks_dir()
    own = tmp_path / "runbooks"
    own.mkdir()
    assert runbooks_dir(settings) == own
    assert load_configured_runbooks(settings) == []
    explicit = Settings(data_dir=tmp_path, reason=ReasonSettings(runbooks_dir=tmp_path / "nope"))
    assert runbooks_dir(explicit) == tmp_path / "nope"
    with pytest.raises(ConfigError, match="does not exist"):
        load_configured_runbooks(explicit)
