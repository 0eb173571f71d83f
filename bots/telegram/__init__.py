"""DevMesh's Telegram bot: chat commands, incident pings and fix approvals over the core.

Entry points: :func:`build_application` (the python-telegram-bot ``Application``) and
:func:`run_telegram` (run it in-process with a ``Core``). See ``bots/telegram/README.md``.
"""

from bots.telegram.app import bot_of, build_application, run_telegram

__all__ = ["bot_of", "build_application", "run_telegram"]
