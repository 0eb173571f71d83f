"""One exception tree for DevMesh.

Adapters translate driver errors at the seam (``raise BackendUnavailable(...) from exc``) so
callers handle a handful of meaningful cases instead of every driver's exception zoo, the way
httpx maps socket and h11 errors onto its own ``TransportError`` family.
"""

from __future__ import annotations


class DevMeshError(Exception):
    """Base of every error DevMesh raises on purpose."""


class ConfigError(DevMeshError):
    """Settings are missing, malformed or contradictory (e.g. an unknown database URL scheme)."""


class InvalidInput(DevMeshError, ValueError):
    """Input from a user, a client or a file was rejected; the message says why."""


class InvalidCursor(InvalidInput):
    """A pagination cursor could not be decoded or belongs to another query order."""


class LimitExceeded(InvalidInput):
    """A request is over a configured size limit (body bytes, batch length, page size)."""


class UnsupportedFormat(InvalidInput):
    """Input comes in a format DevMesh does not read (e.g. a protobuf Loki push body)."""


class NotFound(DevMeshError, LookupError):
    """A named object (incident, token, runbook, …) does not exist."""


class AuthError(DevMeshError):
    """The caller is not authenticated or not allowed to do this."""


class BackendError(DevMeshError):
    """A backend (database, graph, vector index, LLM) failed."""

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        super().__init__(message)
        self.backend = backend


class BackendUnavailable(BackendError):
    """A backend cannot be reached right now; the operation may succeed if retried later."""


class TransactionConflict(BackendError):
    """A transaction lost a lock conflict (a deadlock, a lock wait timeout) and was rolled
    back whole; running it again is safe and usually succeeds."""


class SchemaError(BackendError):
    """A backend's schema is newer than this code, or a migration failed."""
