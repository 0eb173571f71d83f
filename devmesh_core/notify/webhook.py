"""A generic webhook notifier: any tool that takes an HTTP POST can receive incident pings.

The body is the incident event as JSON. With a secret, the request carries
``X-DevMesh-Signature: sha256=<hex HMAC-SHA256 of the raw body with the secret>`` so the
receiver can check it came from this DevMesh and was not altered (compare with
:func:`verify_signature`, in constant time).
"""

from __future__ import annotations

import hashlib
import hmac

import httpx

from devmesh_core.detect.models import IncidentEvent
from devmesh_core.notify.base import Notifier

SIGNATURE_HEADER = "X-DevMesh-Signature"
EVENT_HEADER = "X-DevMesh-Event"


def sign(body: bytes, secret: str) -> str:
    """The signature header value of ``body``: ``sha256=<hex digest>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: str, header: str | None) -> bool:
    """Whether ``header`` is the right signature of ``body`` (constant-time comparison)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def event_body(event: IncidentEvent) -> bytes:
    """The JSON document POSTed for an event."""
    return event.model_dump_json(
        exclude={"incident": {"signals": {"__all__": {"event_ids"}}}}
    ).encode()


class WebhookNotifier(Notifier):
    """POSTs each incident event as JSON to ``url``, HMAC-SHA256-signed with ``secret``."""

    def __init__(
        self, url: str, *, secret: str | None = None, name: str = "webhook", timeout: float = 5.0
    ) -> None:
        self.name = name
        self.url = url
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=timeout)

    async def send(self, event: IncidentEvent) -> None:
        body = event_body(event)
        headers = {"Content-Type": "application/json", EVENT_HEADER: event.kind}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        response = await self._client.post(self.url, content=body, headers=headers)
        response.raise_for_status()

    async def aclose(self) -> None:
        await self._client.aclose()
