"""Settings of the notifiers (``DEVMESH_NOTIFY__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, field_validator


class ChannelLimits(BaseModel):
    """Flap control of one channel: a rate limit and quiet hours.

    ``quiet_hours`` is ``"HH:MM-HH:MM"`` in UTC (may wrap past midnight, e.g.
    ``"22:00-07:00"``); during it only ``critical`` incidents get through.
    """

    rate_per_hour: int = Field(default=30, ge=1, description="notifications per hour at most")
    quiet_hours: str | None = None

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from devmesh_core.notify.base import parse_quiet_hours

        parse_quiet_hours(value)
        return value.strip()


class WebhookSettings(ChannelLimits):
    """A generic webhook: incident events are POSTed as JSON, signed with HMAC-SHA256."""

    name: str = "webhook"
    url: str
    secret: SecretStr | None = None
    timeout: float = Field(default=5.0, gt=0)


class NotifySettings(BaseModel):
    """Where incident notifications go and how often."""

    webhooks: list[WebhookSettings] = Field(
        default_factory=list,
        description='JSON list, e.g. DEVMESH_NOTIFY__WEBHOOKS=\'[{"url": "https://…", '
        '"secret": "…"}]\'',
    )
    default_rate_per_hour: int = Field(
        default=30, ge=1, description="rate limit of notifiers subscribed without their own"
    )
