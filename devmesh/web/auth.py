"""Who may see the status page: local users, signed session cookies, CSRF tokens and
one-time login links.

Why files and not store tables: the page's users are a handful of people on one server,
managed from its shell (``devmesh ui user add``); keeping them in ``data_dir/users.json``
(written atomically, mode 0600) needs no schema version and works before the store is up.
Passwords are hashed with argon2id (``argon2-cffi``); the file never holds a password.

Sessions are cookies signed with a secret generated once into ``data_dir/web-secret.key``
(0600): the server keeps no session table, and a cookie cannot be forged or altered without
the key. Each session carries a fingerprint of the user's password hash, so changing a
password (or removing the user) ends their sessions, and a random CSRF token that every
POST must echo back.

One-time login links (``devmesh ui link NAME``) let a bot hand someone a way in without a
password: the token is random, only its SHA-256 is stored, it expires after minutes and the
first use burns it (under a file lock, so two server processes cannot both accept it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import BaseModel

from devmesh_core.errors import AuthError, InvalidInput, NotFound
from devmesh_core.log import get_logger
from ingest.cursor import atomic_write

log = get_logger(__name__)

Role = Literal["viewer", "approver"]
ROLES: tuple[Role, ...] = ("viewer", "approver")

USERS_FILE = "users.json"
LINKS_FILE = "web-login-links.json"
SECRET_FILE = "web-secret.key"
LOCK_FILE = ".web-auth.lock"

SESSION_COOKIE = "devmesh_session"
SESSION_MAX_AGE = 12 * 3600
"""Seconds a session cookie is accepted after it was issued (a working day)."""
LINK_TTL = timedelta(minutes=10)
MAX_LINK_TTL = timedelta(hours=24)

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def check_name(name: str) -> str:
    """A user name as the page and the action layer's identity keys accept it."""
    if not _NAME.match(name):
        raise InvalidInput(
            "a user name is 1-64 characters of letters, digits and _ . @ - (no spaces)"
        )
    return name


def _now() -> datetime:
    return datetime.now(UTC)


class WebUser(BaseModel):
    """A page user as stored in ``users.json`` (``password_hash`` is argon2id)."""

    name: str
    role: Role
    password_hash: str
    created_at: datetime

    @property
    def can_approve(self) -> bool:
        """Whether the page offers this user Approve/Reject (the action layer decides)."""
        return self.role == "approver"

    @property
    def fingerprint(self) -> str:
        """Short digest of the password hash: sessions made before a password change stop
        matching it."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Session:
    """What a session cookie carries: the user (``None`` before login) and the CSRF token."""

    user: str | None
    csrf: str
    fingerprint: str = ""


class WebAuth:
    """Users, sessions and login links of one data directory. Thread-safe; several server
    processes over one data dir are safe too (changes are made under a file lock)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._hasher = PasswordHasher()  # argon2id with the library's current parameters
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        self._lock = threading.RLock()
        self._serializer: URLSafeTimedSerializer | None = None

    # -- files -----------------------------------------------------------------------------
    @property
    def users_path(self) -> Path:
        return self.data_dir / USERS_FILE

    @property
    def links_path(self) -> Path:
        return self.data_dir / LINKS_FILE

    def _ensure_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock for a read-modify-write of the auth files (threads and processes)."""
        self._ensure_dir()
        with self._lock:
            fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError as exc:
            raise AuthError(f"{path} is not valid JSON: {exc}") from exc
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        atomic_write(path, orjson.dumps(data, option=orjson.OPT_INDENT_2), mode=0o600)

    # -- users -----------------------------------------------------------------------------
    def users(self) -> list[WebUser]:
        """Every user, by name."""
        raw = self._read(self.users_path).get("users", {})
        return sorted((WebUser.model_validate(v) for v in raw.values()), key=lambda u: u.name)

    def get(self, name: str) -> WebUser | None:
        """The user with this name, if any (read fresh: CLI changes apply at once)."""
        raw = self._read(self.users_path).get("users", {}).get(name)
        return WebUser.model_validate(raw) if raw is not None else None

    def add(self, name: str, password: str, role: Role, *, replace: bool = False) -> WebUser:
        """Create a user (or, with ``replace``, set an existing user's password and role)."""
        check_name(name)
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise InvalidInput("a password needs at least 8 characters")
        user = WebUser(
            name=name, role=role, password_hash=self._hasher.hash(password), created_at=_now()
        )
        with self._locked():
            data = self._read(self.users_path)
            users = data.setdefault("users", {})
            if name in users and not replace:
                raise InvalidInput(f"user {name!r} exists (use --replace to change it)")
            users[name] = user.model_dump(mode="json")
            self._write(self.users_path, data)
        log.info("web_user_saved", user=name, role=role)
        return user

    def remove(self, name: str) -> None:
        """Delete a user; their sessions stop working on their next request."""
        with self._locked():
            data = self._read(self.users_path)
            if data.get("users", {}).pop(name, None) is None:
                raise NotFound(f"no user {name!r}")
            self._write(self.users_path, data)

    def authenticate(self, name: str, password: str) -> WebUser | None:
        """The user if the password is right, else ``None``. An unknown name costs the same
        hashing time as a wrong password, so timing does not reveal which names exist."""
        user = self.get(name) if _NAME.match(name) else None
        try:
            self._hasher.verify(user.password_hash if user else self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        if self._hasher.check_needs_rehash(user.password_hash):
            with contextlib.suppress(InvalidInput):
                user = self.add(name, password, user.role, replace=True)
        return user

    # -- sessions --------------------------------------------------------------------------
    def secret(self) -> bytes:
        """The signing key, generated once (0600) on first use."""
        self._ensure_dir()
        path = self.data_dir / SECRET_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_text().strip()
            if len(key) < 32:
                raise AuthError(f"{path} is too short to be a session key") from None
            return key.encode()
        key = secrets.token_hex(32)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key.encode()

    def _signer(self) -> URLSafeTimedSerializer:
        with self._lock:
            if self._serializer is None:
                self._serializer = URLSafeTimedSerializer(self.secret(), salt="devmesh-web")
            return self._serializer

    def new_session(self, user: WebUser | None) -> Session:
        """A fresh session (new CSRF token) for ``user`` or for an anonymous visitor."""
        return Session(
            user=user.name if user else None,
            csrf=secrets.token_urlsafe(24),
            fingerprint=user.fingerprint if user else "",
        )

    def dump_session(self, session: Session) -> str:
        """The signed cookie value."""
        return self._signer().dumps(
            {"u": session.user, "c": session.csrf, "f": session.fingerprint}
        )

    def load_session(self, cookie: str | None) -> Session | None:
        """The session in a cookie, or ``None`` if it is missing, forged or too old."""
        if not cookie:
            return None
        try:
            data = self._signer().loads(cookie, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        user = data.get("u")
        return Session(
            user=user if isinstance(user, str) else None,
            csrf=data["c"],
            fingerprint=str(data.get("f") or ""),
        )

    def session_user(self, session: Session | None) -> WebUser | None:
        """The logged-in user of a session, if they still exist with the same password."""
        if session is None or session.user is None:
            return None
        user = self.get(session.user)
        if user is None or not hmac.compare_digest(
            user.fingerprint.encode(), session.fingerprint.encode()
        ):
            return None
        return user

    # -- one-time login links ----------------------------------------------------------------
    def create_link(self, name: str, ttl: timedelta = LINK_TTL) -> tuple[str, datetime]:
        """A single-use login token for an existing user and when it expires."""
        if self.get(name) is None:
            raise NotFound(f"no user {name!r}")
        if not timedelta(seconds=10) <= ttl <= MAX_LINK_TTL:
            raise InvalidInput("a login link lives between 10 seconds and 24 hours")
        token = secrets.token_urlsafe(32)
        expires = _now() + ttl
        with self._locked():
            links = self._pruned(self._read(self.links_path))
            links[_digest(token)] = {"user": name, "expires": expires.isoformat()}
            self._write(self.links_path, links)
        return token, expires

    def consume_link(self, token: str) -> WebUser:
        """The user a link was made for; the link is burned. ``AuthError`` if unknown,
        already used or expired."""
        key = _digest(token)
        with self._locked():
            links = self._read(self.links_path)
            entry = links.pop(key, None)
            self._write(self.links_path, self._pruned(links))
        if entry is None:
            raise AuthError("this login link is unknown or was already used")
        if datetime.fromisoformat(entry["expires"]) <= _now():
            raise AuthError("this login link has expired")
        user = self.get(str(entry["user"]))
        if user is None:
            raise AuthError("the user of this login link no longer exists")
        return user

    @staticmethod
    def _pruned(links: dict[str, Any]) -> dict[str, Any]:
        now = _now()
        return {
            k: v
            for k, v in links.items()
            if isinstance(v, dict) and datetime.fromisoformat(str(v.get("expires"))) > now
        }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_ok(session: Session | None, sent: str | None) -> bool:
    """Whether a POST echoed its session's CSRF token."""
    if session is None or not sent:
        return False
    return hmac.compare_digest(session.csrf.encode(), sent.encode())


class LoginThrottle:
    """Failed logins per user name and per client address within a sliding window.

    Past ``limit`` failures in ``window`` seconds for the name or the address, a login is
    refused before the password is even hashed (:meth:`retry_after` > 0), which stops
    password guessing and keeps argon2's deliberate cost from being an easy way to load the
    server. Per address as well as per name: one client cannot spread its guesses over many
    names, and guesses at one name from many addresses still run into the name's limit. A
    right password clears the name's count. In memory, per server process.
    """

    def __init__(
        self,
        *,
        limit: int = 5,
        window: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, name: str, address: str) -> float:
        """Seconds until this name and address may try again (0: now)."""
        with self._lock:
            now = self._clock()
            wait = 0.0
            for key in (f"user:{name.lower()}", f"addr:{address}"):
                times = self._recent(key, now)
                if len(times) >= self.limit:
                    wait = max(wait, self.window - (now - times[-self.limit]))
            return wait

    def failed(self, name: str, address: str) -> None:
        """Count a wrong password (or unknown name) for both keys."""
        with self._lock:
            now = self._clock()
            if len(self._failures) >= self._max_keys:  # bound memory under a spray
                for key in list(self._failures):
                    self._recent(key, now)
                if len(self._failures) >= self._max_keys:
                    self._failures.clear()
            for key in (f"user:{name.lower()}", f"addr:{address}"):
                self._recent(key, now)
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, name: str) -> None:
        """A right password: the name's failures are forgotten (the address's are not)."""
        with self._lock:
            self._failures.pop(f"user:{name.lower()}", None)
