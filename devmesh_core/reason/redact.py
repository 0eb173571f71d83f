"""Redaction: mask secrets (and optionally personal or network identifiers) in log text
before it reaches an LLM prompt or leaves the machine in a chat message.

Logs leak credentials all the time: a connection string with its password, a curl line with
an ``Authorization`` header, a token in a query string. A local model would not publish
them, but prompts get logged, pasted into issues and, with a remote Ollama, cross the
network. So evidence is redacted first, by patterns for the secret formats that actually
appear in homelab logs.

Each secret becomes ``[REDACTED:kind]`` (``token``, ``password``, ``jwt``, ``aws-key``,
``private-key``, ``email`` …): the sentence keeps its shape, the model still sees *that*
there was a password, and log structure (timestamps, numbers, paths, template ids) stays
intact. Where the key is part of the text (``password=…``, ``Authorization: Bearer …``,
``user:…@`` in a URL) the key is kept and only the value is masked. IP addresses and host
names are masked only when configured (they are usually what the diagnosis is about); they
get a short stable tag (``[REDACTED:ip-3fa2]``) so the model can still tell that two lines
name the same machine.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devmesh_core.config import Settings
    from devmesh_core.reason.settings import ReasonSettings

_Sub = str | Callable[[re.Match[str]], str]

MARK = "[REDACTED:{}]"


def _mark(kind: str) -> str:
    return MARK.format(kind)


# --- secrets, most specific first -------------------------------------------------------

_PEM = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\n]*)",
    re.DOTALL,
)

# scheme://user:password@host — keep the user, mask the password.
_URL_CREDENTIALS = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s:/@\[\]]*:)(?P<pw>[^\s@/\[\]]+)(?=@)"
)

# Authorization / Proxy-Authorization headers: keep the scheme word, mask the credentials.
_AUTH_HEADER = re.compile(
    r"(?P<head>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|token|digest|bot|negotiate|apikey)\s+)?)"
    r"(?P<value>[^\s\"',;]+(?:,\s*[a-z]+=\"[^\"]*\")*)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
_COOKIE = re.compile(r"(?P<head>\b(?:set-)?cookie\s*:\s*)(?P<value>[^\r\n]+)", re.IGNORECASE)

_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")

# Vendor token formats: prefixes make them unambiguous.
_TOKENS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("token", re.compile(r"\bdm_[A-Za-z0-9_-]{20,}")),  # DevMesh API tokens
    ("token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}")),  # GitHub
    ("token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{30,}")),
    ("token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),  # GitLab
    ("token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),  # Slack
    ("token", re.compile(r"\bxapp-\d-[A-Za-z0-9-]{10,}")),
    ("token", re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}")),  # OpenAI/Anthropic
    ("token", re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}")),  # Stripe
    ("token", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),  # Google API key
    ("token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),  # Hugging Face
    ("token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("token", re.compile(r"\bpypi-[A-Za-z0-9_-]{50,}")),
    # Telegram bot token: numeric bot id, colon, 35 url-safe characters.
    ("token", re.compile(r"(?<!\d)\d{8,10}:[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])")),
    # Discord bot token: three base64url parts.
    ("token", re.compile(r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}\b")),
    ("webhook", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+")),
    ("webhook", re.compile(r"https://(?:\w+\.)?discord(?:app)?\.com/api/webhooks/\d+/[\w-]+")),
    ("aws-key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")),
)

# key = value where the key names a secret. The key is kept, the value masked (quoted
# values may contain spaces).
_SECRET_KEY = (
    r"[A-Za-z0-9_.-]*?(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|"
    r"access[_-]?key|private[_-]?key|client[_-]?secret|credentials?|auth[_-]?key|"
    r"session[_-]?(?:id|key)|signing[_-]?key)[A-Za-z0-9_.-]*"
)
_KEY_VALUE = re.compile(
    rf"(?P<head>(?<![A-Za-z0-9])(?P<key>{_SECRET_KEY})[\"']?\s*(?:=|:|=>)\s*)"
    # A 0x… value is a numeric id (ZooKeeper session ids), not a secret.
    r"(?:(?P<q>[\"'])(?P<qvalue>[^\"'\r\n]*)(?P=q)|"
    r"(?P<value>(?!\[REDACTED|0x[0-9a-fA-F]+(?![\w-]))[^\s\"',;&}\])]+))",
    re.IGNORECASE,
)
# A long random-looking string right after a key-like word without '=' ("api key 9f2c…",
# "secret: …" already caught above): hex ≥ 32 or base64 ≥ 24 with digits and letters.
_AFTER_KEYWORD = re.compile(
    r"(?P<head>\b(?:key|token|secret|signature|hmac|salt|password|credential)s?\b\W{1,3})"
    r"(?P<value>(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[A-Za-z])"
    r"(?:[0-9a-fA-F]{32,}|[A-Za-z0-9+/_-]{24,}={0,2}))(?![A-Za-z0-9+/_=-])",
    re.IGNORECASE,
)

# --- identifiers ------------------------------------------------------------------------

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w.]*\d)")
_H = r"[0-9a-fA-F]{1,4}"
_IPV6 = re.compile(
    rf"(?<![\w:])(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,6}}:(?:{_H}(?::{_H}){{0,5}})?|"
    rf"::(?:ffff:)?(?:{_H}(?::{_H}){{0,6}}|\d+\.\d+\.\d+\.\d+))(?![\w:])"
)
_TLDS = (
    "local|lan|home|internal|intranet|corp|localdomain|home\\.arpa|box|test|"
    "com|net|org|io|dev|app|cloud|de|uk|fr|nl|eu|us|ch|at|se|me|info|xyz"
)
_FQDN = re.compile(
    rf"(?<![\w.-])(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{{0,61}}[a-zA-Z0-9])?\.)+(?:{_TLDS})(?![\w.-]*\w)",
    re.IGNORECASE,
)


class Redactor:
    """Masks secrets (always, unless ``redact`` is off) and emails, IPs and host names as
    the settings say. Thread-safe and cheap: build one per process and reuse it.

    ``hosts`` adds known host names (e.g. the fleet's) to mask as whole words when
    ``redact_hostnames`` is on — bare names like ``nas`` cannot be told from words by a
    pattern.
    """

    def __init__(
        self, settings: Settings | ReasonSettings | None = None, *, hosts: Iterable[str] = ()
    ) -> None:
        from devmesh_core.reason.settings import ReasonSettings

        if settings is None:
            reason = ReasonSettings()
        elif isinstance(settings, ReasonSettings):
            reason = settings
        else:
            reason = settings.reason
        self.enabled = reason.redact
        self.emails = reason.redact_emails
        self.ips = reason.redact_ips
        self.hostnames = reason.redact_hostnames
        # Per-instance key: tags are stable within a process, not guessable across them
        # (an IPv4 address has only 2^32 values; a plain hash would be reversible).
        self._key = secrets.token_bytes(16)
        names = sorted({h for h in hosts if h and h.strip()}, key=len, reverse=True)
        self._known_hosts = (
            re.compile(r"(?<![\w.-])(?:" + "|".join(map(re.escape, names)) + r")(?![\w-]|\.\w)")
            if names
            else None
        )

    def _tag(self, kind: str, value: str) -> str:
        digest = hmac.new(self._key, value.lower().encode(), hashlib.sha256).hexdigest()[:4]
        return f"[REDACTED:{kind}-{digest}]"

    def redact(self, text: str) -> str:
        """The text with every secret (and configured identifier) masked."""
        if not self.enabled or not text:
            return text
        out = _PEM.sub(_mark("private-key"), text)
        out = _URL_CREDENTIALS.sub(lambda m: m["head"] + _mark("password"), out)
        out = _AUTH_HEADER.sub(lambda m: m["head"] + _mark("credentials"), out)
        out = _BEARER.sub(lambda m: m["head"] + _mark("token"), out)
        out = _COOKIE.sub(lambda m: m["head"] + _mark("cookie"), out)
        out = _JWT.sub(_mark("jwt"), out)
        for kind, pattern in _TOKENS:
            out = pattern.sub(_mark(kind), out)
        out = _KEY_VALUE.sub(self._key_value, out)
        out = _AFTER_KEYWORD.sub(lambda m: m["head"] + _mark("secret"), out)
        if self.emails:
            out = _EMAIL.sub(_mark("email"), out)
        if self.ips:
            out = _IPV4.sub(lambda m: self._tag("ip", m[0]), out)
            out = _IPV6.sub(lambda m: self._tag("ip", m[0]), out)
        if self.hostnames:
            out = _FQDN.sub(lambda m: self._tag("host", m[0]), out)
            if self._known_hosts is not None:
                out = self._known_hosts.sub(lambda m: self._tag("host", m[0]), out)
        return out

    @staticmethod
    def _key_value(match: re.Match[str]) -> str:
        key = match["key"].lower()
        kind = "password" if ("pass" in key or "pwd" in key) else "secret"
        if match["q"]:
            return f"{match['head']}{match['q']}{_mark(kind)}{match['q']}"
        return match["head"] + _mark(kind)

    def redact_many(self, texts: Iterable[str]) -> list[str]:
        """:meth:`redact` over several texts (one evidence bundle)."""
        return [self.redact(text) for text in texts]
