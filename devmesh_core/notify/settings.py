"""Settings of the notifiers (``DEVMESH_NOTIFY__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, field_validator


class ChannelLimits(BaseModel):
    """Flap control of one channel: a rate limit and quiet hours.

    ``quiet_hours`` is ``"HH:MM-HH:MM"`` on the wall clock of ``timezone`` (may wrap past
    midnight, e.g. ``"22:00-07:00"``); during it only ``critical`` incidents get through.
    People sleep in local time, so the zone is an IANA name (``"Europe/Berlin"``) and
    daylight-saving changes are followed; ``None`` = the hub's zone (``NotifySettings``).
    """

    rate_per_hour: int = Field(default=30, ge=1, description="notifications per hour at most")
    quiet_hours: str | None = None
    timezone: str | None = Field(
        default=None, description="IANA zone of quiet_hours (default: notify.timezone)"
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from devmesh_core.errors import ConfigError
        from devmesh_core.notify.base import parse_timezone

        try:
            parse_timezone(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return value.strip()

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from devmesh_core.errors import ConfigError
        from devmesh_core.notify.base import parse_quiet_hours

        try:
            parse_quiet_hours(value)
        except ConfigError as exc:  # pydantic reports ValueErrors as validation errors
            raise ValueError(str(exc)) from exc
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
    default_quiet_hours: str | None = Field(
        default=None,
        description="quiet hours (HH:MM-HH:MM) of notifiers subscribed without their own "
        "limits, e.g. the chat bots; only critical incidents get through then",
    )
    timezone: str = Field(
        default="UTC",
        description="IANA time zone quiet hours are read in (e.g. Europe/Berlin) unless a "
        "channel names its own",
    )

    @field_validator("default_quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        return ChannelLimits._quiet(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return ChannelLimits._zone(value) or "UTC"
