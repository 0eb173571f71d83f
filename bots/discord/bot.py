"""The Discord client: scope checks, error replies, redaction, and the bridges from the
core's (threaded, synchronous) listeners into the bot's event loop.

The bot holds no business logic: each command parses its options, calls one core service
(in a worker thread, since the core is synchronous and may take seconds), and formats the
result with :mod:`bots.discord.format`. It runs in the same process as the ``Core`` it is
given, so there is no second copy of the database, index or model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import discord
from discord import app_commands

from bots.discord import format as fmt
from bots.discord.access import Gate, Refused
from bots.discord.state import BotState
from bots.discord.views import ActionButton, action_view
from devmesh_core.errors import (
    AuthError,
    BackendUnavailable,
    ConfigError,
    DevMeshError,
    InvalidInput,
    NotFound,
)
from devmesh_core.log import get_logger

if TYPE_CHECKING:
    from devmesh_core.actions.models import ActionRequest
    from devmesh_core.chat_settings import DiscordSettings
    from devmesh_core.runtime import Core

log = get_logger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def user_message(exc: BaseException) -> str:
    """What a user is told about a failure: the core's reason, never a traceback."""
    if isinstance(exc, NotFound):
        return f"Not found: {exc}"
    if isinstance(exc, AuthError):
        return f"Not allowed: {exc}"
    if isinstance(exc, InvalidInput):
        return f"Invalid input: {exc}"
    if isinstance(exc, BackendUnavailable):
        return f"A backend is unavailable right now, try again later: {exc}"
    if isinstance(exc, DevMeshError):
        return f"DevMesh could not do that: {exc}"
    return "Something went wrong on the DevMesh side; the details are in its log."


class DevMeshTree(app_commands.CommandTree["DevMeshBot"]):
    """Command tree that checks scope and rate limit before any command runs and turns
    every failure into a short ephemeral reply."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        bot = self.client
        if interaction.type is discord.InteractionType.autocomplete:
            # Scope only: each keystroke is an autocomplete request, not worth a budget.
            return interaction.guild_id is not None and (
                not bot.gate.guilds or interaction.guild_id in bot.gate.guilds
            )
        try:
            bot.gate.check(interaction)
        except Refused as exc:
            await bot.refuse(interaction, str(exc))
            return False
        return True

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError, /
    ) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(original, Refused):
            message = str(original)
        elif isinstance(original, app_commands.TransformerError | app_commands.CheckFailure):
            message = f"Invalid input: {original}"
        else:
            message = user_message(original)
        if not isinstance(original, DevMeshError | Refused | app_commands.AppCommandError):
            log.error("discord_command_failed", command=_name(interaction), exc_info=original)
        else:
            log.info("discord_command_refused", command=_name(interaction), reason=message)
        await self.client.refuse(interaction, message)


def _name(interaction: discord.Interaction) -> str | None:
    return interaction.command.qualified_name if interaction.command else None


class DevMeshBot(discord.Client):
    """The DevMesh Discord bot over one ``Core``."""

    def __init__(self, core: Core, *, settings: DiscordSettings | None = None) -> None:
        self.settings: DiscordSettings = settings or core.settings.discord
        intents = discord.Intents.none()
        intents.guilds = True  # channels, threads and roles (approver roles) in the cache
        intents.guild_messages = True  # follow-up questions in incident threads (mentions)
        super().__init__(
            intents=intents,
            application_id=self.settings.application_id,  # type: ignore[arg-type]
        )
        self.core = core
        self.tree = DevMeshTree(self)
        self.gate = Gate(self.settings)
        self.state = BotState(core.settings.data_dir / "discord-state.json")
        self.conversations: dict[int, Any] = {}
        self._redactor: Any = None
        self.synced: list[app_commands.AppCommand] = []
        from bots.discord.notifier import DiscordNotifier

        self.notifier = DiscordNotifier(self)

    # ------------------------------------------------------------------ setup
    async def setup_hook(self) -> None:
        from bots.discord.commands import register

        register(self)
        self.add_dynamic_items(ActionButton)
        if self.core.actions is not None:
            self.core.actions.add_listener(self._action_changed)
        self.notifier.attach()
        if self.settings.sync_commands:
            await self.sync_commands()

    async def sync_commands(self) -> None:
        """Register the slash commands: per allowed guild (visible at once) or globally."""
        if self.settings.allowed_guild_ids:
            for guild_id in self.settings.allowed_guild_ids:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                self.synced += await self.tree.sync(guild=guild)
        else:
            self.synced = await self.tree.sync()
        log.info("discord_commands_synced", count=len(self.synced))

    async def on_ready(self) -> None:
        log.info("discord_ready", user=str(self.user), guilds=len(self.guilds))

    async def on_message(self, message: discord.Message) -> None:
        """Follow-up questions in incident threads (only messages mentioning the bot carry
        their text without the privileged message-content intent)."""
        if message.author.bot:
            return
        await self.notifier.on_thread_message(message)

    # ------------------------------------------------------------------ helpers
    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a synchronous core call in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def redact(self, text: str) -> str:
        """Mask secrets (tokens, passwords, keys…) before text leaves in a message."""
        if self._redactor is None:
            from devmesh_core.reason.redact import Redactor

            self._redactor = Redactor(self.core.settings)
        result: str = self._redactor.redact(text)
        return result

    def clean(self, embed: discord.Embed) -> discord.Embed:
        """Redacted and within Discord's limits."""
        return fmt.clean_embed(embed, self.redact)

    async def refuse(self, interaction: discord.Interaction, message: str) -> None:
        """An ephemeral error reply, whether or not the interaction was answered yet."""
        text = fmt.clip(self.redact(message), fmt.MESSAGE_LIMIT)
        try:
            if interaction.type is discord.InteractionType.autocomplete:
                if not interaction.response.is_done():
                    await interaction.response.autocomplete([])
            elif interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("discord_reply_failed", error=str(exc))

    async def gate_component(self, interaction: discord.Interaction) -> bool:
        """Scope and rate limit for a button press (not routed through the tree)."""
        try:
            self.gate.check(interaction)
        except Refused as exc:
            await self.refuse(interaction, str(exc))
            return False
        return True

    def _threadsafe(self, coro_factory: Callable[[], Any]) -> None:
        """Schedule ``coro_factory()`` on the bot's loop from any thread."""
        loop = getattr(self, "loop", None)
        if loop is None or loop.is_closed() or self.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(coro_factory(), loop)

    # ------------------------------------------------------------------ actions
    def _action_changed(self, request: ActionRequest) -> None:
        """``ActionService`` listener (any thread): refresh the request's message."""
        self._threadsafe(lambda: self.update_action_message(request))

    async def update_action_message(self, request: ActionRequest) -> None:
        """Edit the message showing ``request`` (if this bot posted one) to its new state."""
        where = self.state.action_message(request.id)
        if where is None:
            return
        channel_id, message_id = where
        message = self.get_partial_messageable(channel_id).get_partial_message(message_id)
        try:
            await message.edit(
                embed=self.clean(fmt.action_embed(request)), view=action_view(self, request)
            )
        except discord.HTTPException as exc:
            log.warning("discord_action_edit_failed", request=request.id, error=str(exc))


async def run_discord(core: Core) -> None:
    """Run the bot until cancelled, over an already opened ``Core``.

    Raises ``ConfigError`` when no token is configured.
    """
    settings = core.settings.discord
    if settings.token is None:
        raise ConfigError("no Discord token: set DEVMESH_DISCORD__TOKEN")
    bot = DevMeshBot(core, settings=settings)
    async with bot:
        await bot.start(settings.token.get_secret_value())
