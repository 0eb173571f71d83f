"""Building and running the Telegram bot in-process with a :class:`Core`.

``build_application(core)`` wires the handlers onto a python-telegram-bot ``Application``
(pointed at ``TelegramSettings.base_url`` when set: a self-hosted Bot API server, or the
fake one in the tests). ``run_telegram(core)`` starts it — long polling by default, a
webhook when ``webhook_url`` is set — publishes the command menu, subscribes the bot to
incident notifications and remediation changes, and runs until cancelled.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any
from urllib.parse import urlsplit

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bots.telegram.bot import TelegramBot
from bots.telegram.notifier import TelegramNotifier
from devmesh_core.errors import ConfigError
from devmesh_core.log import get_logger
from devmesh_core.runtime import Core

log = get_logger(__name__)

BOT_KEY = "devmesh"


def build_application(core: Core) -> Application[Any, Any, Any, Any, Any, Any]:
    """The bot's ``Application`` over ``core`` (not started). Its :class:`TelegramBot` is
    in ``app.bot_data["devmesh"]`` (see :func:`bot_of`)."""
    settings = core.settings.telegram
    if settings.token is None:
        raise ConfigError("DEVMESH_TELEGRAM__TOKEN is not set")
    builder = ApplicationBuilder().token(settings.token.get_secret_value())
    if settings.base_url:
        builder = builder.base_url(settings.base_url.rstrip("/"))
    # Handlers run concurrently so a slow diagnosis never blocks /status for others.
    app = builder.concurrent_updates(True).build()
    bot = TelegramBot(core, settings)
    bot.app = app
    app.bot_data[BOT_KEY] = bot
    commands = {
        "help": bot.cmd_help,
        "start": bot.cmd_help,
        "status": bot.cmd_status,
        "incidents": bot.cmd_incidents,
        "incident": bot.cmd_incident,
        "logs": bot.cmd_logs,
        "search": bot.cmd_search,
        "ask": bot.cmd_ask,
        "runbook": bot.cmd_runbook,
        "runbooks": bot.cmd_runbook,
        "fix": bot.cmd_fix,
        "ack": bot.cmd_ack,
        "resolve": bot.cmd_resolve,
    }
    for name, handler in commands.items():
        app.add_handler(CommandHandler(name, bot.guard(handler)))
    app.add_handler(CallbackQueryHandler(bot.guard(bot.on_callback)))
    app.add_handler(
        MessageHandler(
            filters.TEXT & ~filters.COMMAND, bot.guard(bot.on_text, quiet_in_groups=True)
        )
    )
    app.add_error_handler(_on_error)
    return app


def bot_of(app: Application[Any, Any, Any, Any, Any, Any]) -> TelegramBot:
    """The :class:`TelegramBot` of an application made by :func:`build_application`."""
    bot = app.bot_data[BOT_KEY]
    assert isinstance(bot, TelegramBot)
    return bot


async def _on_error(update: object, context: Any) -> None:
    """Log what a handler raised (the library would otherwise only print it)."""
    log.error("telegram_handler_failed", error=repr(context.error), update=str(update)[:500])
    if isinstance(update, Update) and update.effective_chat is not None:
        try:
            await context.bot.send_message(
                update.effective_chat.id, "Sorry, that failed on my side; it has been logged."
            )
        except Exception as exc:
            log.warning("telegram_error_reply_failed", error=str(exc))


def subscribe(core: Core, bot: TelegramBot) -> TelegramNotifier:
    """Hook the bot into the core: incident notifications (through ``core.notifiers``, the
    hub, when the core has one — it applies rate limits and quiet hours — else straight
    from the incident service) and remediation changes (to edit the request messages)."""
    loop = asyncio.get_running_loop()
    bot.loop = loop
    notifier = TelegramNotifier(bot)
    hub = core.notifiers
    if hub is not None:
        hub.subscribe(notifier)
    elif core.incidents is not None and bot.settings.ping_chat_ids:

        def on_incident(event: Any) -> None:
            asyncio.run_coroutine_threadsafe(notifier.send(event), loop)

        core.incidents.add_listener(on_incident)
    if core.actions is not None:
        core.actions.add_listener(bot.on_action_change)
    return notifier


async def run_telegram(core: Core, *, stop: asyncio.Event | None = None) -> None:
    """Run the bot until cancelled (or until ``stop`` is set): long polling, or the
    webhook when ``DEVMESH_TELEGRAM__WEBHOOK_URL`` is set."""
    app = build_application(core)
    bot = bot_of(app)
    settings = bot.settings
    if not settings.allowed_chat_ids and not settings.allowed_user_ids:
        log.warning(
            "telegram_nobody_allowed",
            hint="set DEVMESH_TELEGRAM__ALLOWED_CHAT_IDS or ALLOWED_USER_IDS",
        )
    async with app:
        await bot.register_commands()
        subscribe(core, bot)
        await app.start()
        webhook: asyncio.Task[None] | None = None
        try:
            if settings.webhook_url:
                webhook = asyncio.create_task(_serve_webhook(app, bot))
            else:
                assert app.updater is not None
                await app.updater.start_polling(drop_pending_updates=False)
            log.info("telegram_started", mode="webhook" if webhook else "polling")
            waiter = asyncio.create_task((stop or asyncio.Event()).wait())
            try:
                await asyncio.wait(
                    [t for t in (waiter, webhook) if t is not None],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                waiter.cancel()
            if webhook is not None and webhook.done():
                # The webhook server ended: raise its error, or (it was told to exit, e.g.
                # by Ctrl-C, which uvicorn handles) stop the bot with it.
                webhook.result()
        finally:
            if webhook is not None:
                webhook.cancel()
                await asyncio.gather(webhook, return_exceptions=True)
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
            await app.stop()
            log.info("telegram_stopped")


async def _serve_webhook(app: Application[Any, Any, Any, Any, Any, Any], bot: TelegramBot) -> None:
    """Receive updates over HTTP: register the webhook with Telegram, then serve its path
    with uvicorn (already a DevMesh dependency), checking Telegram's secret header."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    settings = bot.settings
    assert settings.webhook_url is not None
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    path = urlsplit(settings.webhook_url).path or "/"

    async def receive(request: Request) -> Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if secret is not None and not hmac.compare_digest(given.encode(), secret.encode()):
            log.warning("telegram_webhook_bad_secret", client=str(request.client))
            return Response(status_code=403)
        try:
            payload = await request.json()
        except ValueError:
            return Response(status_code=400)
        update = Update.de_json(payload, app.bot)
        await app.update_queue.put(update)
        return Response(status_code=200)

    web = Starlette(routes=[Route(path, receive, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(
            web,
            host=settings.webhook_listen,
            port=settings.webhook_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    await app.bot.set_webhook(
        url=settings.webhook_url, secret_token=secret, allowed_updates=Update.ALL_TYPES
    )
    try:
        await server.serve()
    finally:
        server.should_exit = True
