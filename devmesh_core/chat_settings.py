"""Settings of the chat front ends (``DEVMESH_DISCORD__*``, ``DEVMESH_TELEGRAM__*``).

They live in the core so that settings enter once; the bots themselves are in ``bots/``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode


def _id_list(value: object) -> object:
    """Accept ``"1,2"`` or ``"1 2"`` (a flat environment variable) as well as a JSON list."""
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        text = value.strip().removeprefix("[").removesuffix("]")
        return [part.strip("\"' ") for part in text.replace(",", " ").split() if part]
    return value


class DiscordSettings(BaseModel):
    """The Discord bot (``DEVMESH_DISCORD__*``): off unless a token is set.

    Access is closed by default where it matters: commands answer only in the listed
    guilds and channels (threads count as their parent channel); with no guild listed the
    bot answers in any guild it was invited to, so keep the application private.
    """

    token: SecretStr | None = None
    application_id: int | None = Field(
        default=None, description="the application's id (Developer Portal → General Information)"
    )
    ping_channel_id: int | None = Field(
        default=None, description="text channel where new incidents are posted (one thread each)"
    )
    allowed_guild_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="guilds the bot answers in; empty = any guild it is in"
    )
    allowed_channel_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="channels the bot answers in; empty = any channel"
    )
    rate_limit_per_minute: int = Field(
        default=20, ge=1, le=600, description="commands and button presses per user per minute"
    )
    sync_commands: bool = Field(
        default=True,
        description="register the slash commands on start (per allowed guild, else globally)",
    )
    diagnose_new_incidents: bool = Field(
        default=True,
        description="run a diagnosis for each new incident and post it in its thread",
    )

    @field_validator("allowed_guild_ids", "allowed_channel_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        return _id_list(value)


class TelegramSettings(BaseModel):
    """The Telegram bot (``DEVMESH_TELEGRAM__*``): off unless a token is set.

    Access is closed by default: with no chat and no user listed the bot answers nobody
    (everyone gets a polite refusal, which is logged). A message is served when its chat is
    in ``allowed_chat_ids`` or its sender is in ``allowed_user_ids``. Approving a
    remediation additionally needs the approver role (``DEVMESH_ACTIONS__ROLES``, key
    ``telegram:<user id>``).
    """

    token: SecretStr | None = None
    base_url: str | None = Field(
        default=None,
        description="Bot API base, e.g. http://127.0.0.1:8081/bot for a self-hosted Bot API "
        "server (the token and method are appended); default api.telegram.org",
    )
    allowed_chat_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="chats (private, group) whose members may use the bot"
    )
    allowed_user_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="users who may use the bot in any chat"
    )
    ping_chat_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="chats that receive incident notifications"
    )
    webhook_url: str | None = Field(
        default=None,
        description="public HTTPS URL Telegram posts updates to; unset = long polling",
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="secret Telegram echoes in X-Telegram-Bot-Api-Secret-Token"
    )
    webhook_listen: str = Field(default="127.0.0.1", description="address the webhook binds")
    webhook_port: int = Field(default=8443, ge=1, le=65535)
    page_size: int = Field(default=10, ge=1, le=50, description="items per page of a list")
    max_messages: int = Field(
        default=3, ge=1, le=20, description="longer answers are sent as a text document"
    )
    remembered_incidents: int = Field(
        default=500, ge=10, le=100_000, description="incidents whose first message is kept"
    )

    @field_validator("allowed_chat_ids", "allowed_user_ids", "ping_chat_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        return _id_list(value)
