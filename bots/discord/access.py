"""Who may talk to the bot where, and how often.

Discord already authenticates users; what the bot adds is *scope*: commands are answered
only in the configured guilds and channels (a thread counts as its parent channel, so an
incident thread in the ping channel is allowed when the channel is), and each user gets a
small per-minute budget so a stuck client or a curious user cannot keep the core busy
(a diagnosis can take seconds of CPU). Permission to *approve* is not decided here: the
core's ``ActionService`` maps the identity built by :func:`identity_of` to roles.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING

import discord

if TYPE_CHECKING:
    from devmesh_core.actions.models import Identity
    from devmesh_core.chat_settings import DiscordSettings


class Refused(Exception):
    """An interaction the bot will not serve; the message is shown to the user (ephemeral)."""


class RateLimiter:
    """Sliding window: at most ``per_minute`` actions per user in any 60 seconds."""

    def __init__(self, per_minute: int, *, window: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window = window
        self._hits: dict[int, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, user_id: int, now: float | None = None) -> float:
        """Record one action; return 0 when allowed, else seconds until the next is."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(user_id, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return max(hits[0] + self.window - now, 0.1)
            hits.append(now)
            return 0.0


class Gate:
    """Guild/channel scope and rate limit of every interaction and message."""

    def __init__(self, settings: DiscordSettings) -> None:
        self.guilds = frozenset(settings.allowed_guild_ids)
        self.channels = frozenset(settings.allowed_channel_ids)
        self.limiter = RateLimiter(settings.rate_limit_per_minute)

    def channel_allowed(self, channel: object, channel_id: int | None) -> bool:
        """Whether this channel (or the thread's parent) is in scope."""
        if not self.channels:
            return True
        if channel_id in self.channels:
            return True
        parent = getattr(channel, "parent_id", None)
        return parent is not None and parent in self.channels

    def check(self, interaction: discord.Interaction) -> None:
        """Raise :class:`Refused` with a clear reason if this interaction is out of scope."""
        if interaction.guild_id is None:
            raise Refused("DevMesh answers in its server channels only, not in direct messages.")
        if self.guilds and interaction.guild_id not in self.guilds:
            raise Refused("DevMesh is not enabled in this server.")
        if not self.channel_allowed(interaction.channel, interaction.channel_id):
            raise Refused("DevMesh does not answer in this channel; use the incidents channel.")
        wait = self.limiter.check(interaction.user.id)
        if wait:
            raise Refused(f"Slow down: too many requests. Try again in {wait:.0f} s.")

    def message_allowed(self, message: discord.Message, *, own_thread: bool = False) -> bool:
        """Same scope for plain messages (thread follow-ups); rate-limited too.

        ``own_thread``: the channel is a thread the bot opened in the ping channel (its
        parent may not be in the cache, so the channel check cannot see it)."""
        guild_id = message.guild.id if message.guild is not None else None
        if guild_id is None:
            return False
        if self.guilds and guild_id not in self.guilds:
            return False
        if not own_thread and not self.channel_allowed(message.channel, message.channel.id):
            return False
        return self.limiter.check(message.author.id) == 0


def identity_of(user: discord.User | discord.Member) -> Identity:
    """The core identity of a Discord user: ``discord:<id>`` plus their role ids as groups
    (``ActionSettings.roles`` may grant a role to ``discord-role:<id>``)."""
    from devmesh_core.actions.models import Identity

    roles: tuple[str, ...] = ()
    if isinstance(user, discord.Member):
        roles = tuple(str(role.id) for role in user.roles if not role.is_default())
    return Identity(
        platform="discord", user_id=str(user.id), display=user.display_name, groups=roles
    )
