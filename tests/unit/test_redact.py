"""Redaction: planted canary secrets of every kind never survive; ordinary log text does."""

from __future__ import annotations

import csv
import re
import secrets
import string

import pytest

from devmesh_core.config import Settings
from devmesh_core.reason.redact import Redactor
from devmesh_core.reason.settings import ReasonSettings
from tests.conftest import SHARED_DATA

_ALNUM = string.ascii_letters + string.digits


def _rand(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _hex(n: int) -> str:
    return secrets.token_hex(n // 2)


def _canaries() -> list[tuple[str, str]]:
    """(line containing a secret, the secret). Fresh random values on every run, so the test
    cannot pass by matching known strings."""
    jwt = (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
        + "eyJ"
        + _rand(40, _ALNUM + "-_")
        + "."
        + _rand(43, _ALNUM + "-_")
    )
    pem_body = "\n".join(_rand(64, _ALNUM + "+/") for _ in range(4))
    pw = "Pw" + _rand(14) + "!x"
    return [
        (t := "dm_" + secrets.token_urlsafe(32), f"ingest with token {t} rejected"),
        (t := "ghp_" + _rand(36), f"git clone https://github.com/x/y failed, token={t}"),
        (t := "github_pat_" + _rand(60, _ALNUM + "_"), f"using {t} for the API"),
        (t := "xoxb-" + _rand(12, string.digits) + "-" + _rand(24), f"slack client init {t}"),
        (t := "AKIA" + _rand(16, string.ascii_uppercase + string.digits), f"aws key id {t} used"),
        (t := _rand(40, _ALNUM + "/+"), f"aws_secret_access_key = {t}"),
        (t := "sk-proj-" + _rand(40), f"openai: {t}"),
        (t := "glpat-" + _rand(20), f"runner registered with {t}"),
        (
            t := f"{_rand(9, string.digits)}:AA{_rand(33, _ALNUM + '_-')}",
            f"telegram https://api.telegram.org/bot{t}/getUpdates",
        ),
        (t := jwt, f"session cookie value {t} invalid"),
        (t := jwt, f"Authorization: Bearer {t}"),
        (t := _rand(32), f"GET /api Authorization: Bearer {t} 200"),
        (t := _rand(24), f'curl -H "Authorization: Basic {t}" http://nas.lan'),
        (t := pw, f"db connect password={t} host=db"),
        (t := pw, f"passwd: {t}"),
        (t := pw, f'{{"user": "bob", "password": "{t}"}}'),
        (t := pw, f"MYSQL_ROOT_PASSWORD={t}"),
        (t := pw, f"client_secret: '{t}'"),
        (t := "my secret " + _rand(8), f'secret="{t}" loaded'),
        (t := pw, f"postgres://app:{t}@db.lan:5432/app connection failed"),
        (t := pw, f"mqtt://homeassistant:{t}@192.168.1.5:1883"),
        (t := _hex(40), f"api key {t}"),
        (t := _hex(64), f"webhook signature {t} mismatch"),
        (t := _rand(30), f"X-Api-Key: {t}"),
        (t := "AIza" + _rand(35, _ALNUM + "_-"), f"maps key {t}"),
        (t := "hf_" + _rand(34), f"hub token {t}"),
        (
            t := pem_body,
            f"-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n-----END RSA PRIVATE KEY-----",
        ),
        (t := pem_body, f"key=-----BEGIN OPENSSH PRIVATE KEY-----\n{pem_body}"),
        (t := "cookie" + _rand(20), f"Cookie: sessionid={t}; csrftoken=abc"),
        (
            t := "https://hooks.slack.com/services/T0"
            + _rand(8)
            + "/B0"
            + _rand(8)
            + "/"
            + _rand(24),
            f"notify via {t}",
        ),
    ]


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(ReasonSettings())


def test_no_canary_survives(redactor: Redactor) -> None:
    canaries = _canaries()
    for secret, line in canaries:
        out = redactor.redact(line)
        assert secret not in out, f"leaked in {out!r}"
        for piece in re.split(r"[\s/+]", secret):
            if len(piece) >= 12:
                assert piece not in out, f"part of the secret leaked in {out!r}"
        assert "[REDACTED:" in out
    # All of them at once, as in one evidence bundle.
    bundle = redactor.redact("\n".join(line for _, line in canaries))
    assert not [s for s, _ in canaries if s in bundle]


def test_shape_is_kept(redactor: Redactor) -> None:
    assert redactor.redact("db connect password=hunter2 host=db") == (
        "db connect password=[REDACTED:password] host=db"
    )
    assert redactor.redact("postgres://app:hunter2@db.lan:5432/app") == (
        "postgres://app:[REDACTED:password]@db.lan:5432/app"
    )
    assert redactor.redact("Authorization: Bearer abcdefghijklmnop") == (
        "Authorization: Bearer [REDACTED:credentials]"
    )
    assert redactor.redact('{"password": "a b c"}') == '{"password": "[REDACTED:password]"}'
    assert redactor.redact("mail bob@example.org failed") == "mail [REDACTED:email] failed"
    # Idempotent: redacting twice changes nothing more.
    once = redactor.redact("\n".join(line for _, line in _canaries()))
    assert redactor.redact(once) == once


@pytest.mark.parametrize(
    "line",
    [
        "2024-05-01T10:00:00.123456Z nginx[812]: 192.168.1.20 - - GET /index.html 200 512",
        "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
        "blk_38865049064139660 terminating",
        "Out of memory: Killed process 3391 (java) total-vm:8012345kB, anon-rss:6234512kB",
        'could not write to file "pg_wal/xlogtemp.141": No space left on device',
        "template 3f9a2c1b7e4d5a60 matched 42 times; see /var/log/nginx/error.log:1234",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 deployed by ci",
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 pulled",
        "Failed password for root from 10.0.0.5 port 22 ssh2",
        "Accepted publickey for bob from 10.0.0.5 port 50022 ssh2: RSA SHA256:abcdefgh",
        "pam_unix(sshd:session): session opened for user bob by (uid=0)",
        "nginx.service: Failed with result 'exit-code'.",
        "token bucket refilled: 42 tokens available",
        "key 17 not found in cache, loading",
        "connect() failed (111: Connection refused) while connecting to upstream, "
        'upstream: "http://127.0.0.1:8080/"',
        "GET /api/v1/items?page=2&limit=50 HTTP/1.1 200",
    ],
)
def test_ordinary_text_is_not_mangled(redactor: Redactor, line: str) -> None:
    assert redactor.redact(line) == line


def test_loghub_lines_mostly_untouched(redactor: Redactor) -> None:
    """Real log lines of eight systems: redaction (secrets and emails) changes almost none."""
    changed: list[tuple[str, str]] = []
    total = 0
    for path in sorted((SHARED_DATA / "loghub-2k").glob("*/*_2k.log_structured*.csv")):
        with path.open(encoding="utf-8", errors="replace", newline="") as handle:
            for row in csv.DictReader(handle):
                total += 1
                out = redactor.redact(row["Content"])
                if out != row["Content"]:
                    changed.append((row["Content"][:100], out[:100]))
    assert total == 16_000
    assert len(changed) <= 16, changed  # 0.1 %


def test_identifiers_only_when_configured() -> None:
    line = "ping from 192.168.1.20 to nas.lan (fe80::1ff:fe23:4567:890a) by admin@example.org"
    plain = Redactor(ReasonSettings(redact_emails=False)).redact(line)
    assert plain == line
    masked = Redactor(
        ReasonSettings(redact_ips=True, redact_hostnames=True), hosts=["nas", "web1"]
    ).redact(line + "; web1 and nas are up; version 1.2.3")
    for value in ("192.168.1.20", "nas.lan", "fe80::1ff:fe23:4567:890a", "admin@example.org"):
        assert value not in masked
    assert " web1 " not in masked and " nas " not in masked
    assert "version 1.2.3" in masked  # three parts are not an address
    # The same address gets the same tag, so the model can still correlate lines.
    redactor = Redactor(ReasonSettings(redact_ips=True))
    a, b = redactor.redact("from 10.0.0.5"), redactor.redact("to 10.0.0.5")
    assert a.split()[-1] == b.split()[-1] and a.split()[-1].startswith("[REDACTED:ip-")
    assert "10:32:45" in redactor.redact("at 10:32:45 from 10.0.0.5")


def test_settings_forms_and_switch_off() -> None:
    line = "password=hunter2"
    assert Redactor(Settings()).redact(line) == "password=[REDACTED:password]"
    assert Redactor().redact(line) == "password=[REDACTED:password]"
    assert Redactor(ReasonSettings(redact=False)).redact(line) == line
    assert Redactor().redact_many([line, "ok"]) == ["password=[REDACTED:password]", "ok"]
