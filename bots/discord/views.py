"""Buttons: log paging (in memory) and remediation Confirm/Cancel (persistent).

Confirm/Cancel must keep working after a restart and must not trust anything the client
sends back, so each button's ``custom_id`` is ``devmesh:<data>`` where ``<data>`` is the
core's signed short callback (``ActionService.sign_callback``) naming the request and the
decision. ``ActionButton`` is a :class:`discord.ui.DynamicItem`: discord.py rebuilds it from
the ``custom_id`` of any pressed button, with no view kept in memory, and the core verifies
the signature before anything happens. Log paging is a plain view with a timeout: losing
it on a restart only means running ``/logs`` again.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bots.discord import format as fmt
from devmesh_core.errors import AuthError, DevMeshError, InvalidInput, NotFound
from devmesh_core.log import get_logger

if TYPE_CHECKING:
    from bots.discord.bot import DevMeshBot
    from devmesh_core.actions.models import ActionRequest
    from devmesh_core.store.base import LogQuery

log = get_logger(__name__)

CUSTOM_ID_PREFIX = "devmesh:"
LOGS_PAGE = 10


def _bot(interaction: discord.Interaction) -> DevMeshBot:
    from bots.discord.bot import DevMeshBot

    client = interaction.client
    assert isinstance(client, DevMeshBot)
    return client


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"devmesh:(?P<data>.{1,92})"
):
    """Confirm or Cancel of one action request; the decision is inside the signed data."""

    def __init__(
        self, data: str, *, label: str = "", style: discord.ButtonStyle | None = None
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label or "…",
                style=style or discord.ButtonStyle.secondary,
                custom_id=CUSTOM_ID_PREFIX + data,
            )
        )
        self.data = data

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ActionButton:
        return cls(match["data"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = _bot(interaction)
        if not await bot.gate_component(interaction):
            return
        actions = bot.core.actions
        if actions is None:
            await bot.refuse(interaction, "Remediation is not enabled on this DevMesh.")
            return
        try:
            request_id, decision = actions.verify_callback(self.data)
        except AuthError:
            await bot.refuse(interaction, "This button is not valid (it was altered or is stale).")
            return
        from bots.discord.access import identity_of

        who = identity_of(interaction.user)
        try:
            if decision == "approve":
                request = await bot.call(actions.approve, request_id, who)
            else:
                request = await bot.call(actions.reject, request_id, who, "cancelled in Discord")
        except AuthError as exc:
            await bot.refuse(interaction, f"You cannot do that: {exc}")
            return
        except (InvalidInput, NotFound) as exc:
            await bot.refuse(interaction, f"Not done: {exc}")
            try:
                current = await bot.call(actions.get, request_id)
            except DevMeshError:
                return
            await bot.update_action_message(current)
            return
        log.info("discord_action_decision", request=request_id, decision=decision, by=who.key)
        await interaction.response.edit_message(
            embed=bot.clean(fmt.action_embed(request)), view=action_view(bot, request)
        )


def action_view(bot: DevMeshBot, request: ActionRequest) -> discord.ui.View | None:
    """Confirm/Cancel while the request is pending; no buttons once it is decided."""
    actions = bot.core.actions
    if request.status != "pending" or actions is None:
        return None
    view = discord.ui.View(timeout=None)
    high = request.risk == "high"
    confirm = "Confirm" + (
        f" ({len(request.approvals) + 1}/{request.approvals_needed})"
        if request.approvals_needed > 1
        else ""
    )
    view.add_item(
        ActionButton(
            actions.sign_callback(request.id, "approve"),
            label=confirm,
            style=discord.ButtonStyle.danger if high else discord.ButtonStyle.success,
        )
    )
    view.add_item(
        ActionButton(
            actions.sign_callback(request.id, "reject"),
            label="Cancel",
            style=discord.ButtonStyle.secondary,
        )
    )
    return view


class LogPager(discord.ui.View):
    """Older/newer pages of a ``/logs`` result (keyset cursors kept in memory)."""

    def __init__(self, bot: DevMeshBot, query: LogQuery, filters: str) -> None:
        super().__init__(timeout=900)
        self.bot = bot
        self.query = query
        self.filters = filters
        self.cursors: list[str | None] = [None]  # cursor of each page seen
        self.page = 0
        self.next: str | None = None

    async def render(self) -> discord.Embed:
        """Load the current page and return its embed (buttons updated)."""
        from dataclasses import replace

        query = replace(self.query, cursor=self.cursors[self.page], limit=LOGS_PAGE)
        page = await self.bot.call(self.bot.core.store.query, query)
        self.next = page.next
        self.newer.disabled = self.page == 0
        self.older.disabled = page.next is None
        return self.bot.clean(
            fmt.logs_embed(
                page.events, filters=self.filters, page=self.page + 1, more=page.next is not None
            )
        )

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return await self.bot.gate_component(interaction)

    @discord.ui.button(label="◀ Newer", style=discord.ButtonStyle.secondary)
    async def newer(
        self, interaction: discord.Interaction, _button: discord.ui.Button[Any]
    ) -> None:
        self.page = max(self.page - 1, 0)
        await interaction.response.edit_message(embed=await self.render(), view=self)

    @discord.ui.button(label="Older ▶", style=discord.ButtonStyle.secondary)
    async def older(
        self, interaction: discord.Interaction, _button: discord.ui.Button[Any]
    ) -> None:
        if self.next is not None:
            if self.page + 1 >= len(self.cursors):
                self.cursors.append(self.next)
            self.page += 1
        await interaction.response.edit_message(embed=await self.render(), view=self)
