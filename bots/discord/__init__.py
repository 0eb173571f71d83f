"""The DevMesh Discord bot: slash commands, incident pings with threads, and remediation
buttons over ``devmesh_core`` (see README.md in this folder)."""

from bots.discord.bot import DevMeshBot, run_discord

__all__ = ["DevMeshBot", "run_discord"]
