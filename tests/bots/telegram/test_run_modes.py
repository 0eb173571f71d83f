"""How the bot runs: the webhook mode (setWebhook with a secret, updates POSTed to the
bot's own HTTP endpoint, wrong secrets refused) and the ``devmesh telegram`` command as a
real subprocess polling the fake Bot API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from bots.telegram.app import run_telegram
from devmesh_core.runtime import Core
from tests.bots.telegram.conftest import CHAT, OPERATOR, TOKEN
from tests.bots.telegram.fake_telegram import FakeTelegram, message_update
from tests.conftest import free_port


async def _post(url: str, body: dict[str, object], secret: str) -> int:
    """POST an update to the webhook, retrying while its server is still starting."""
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient() as client:
        while True:
            try:
                response = await client.post(
                    url, json=body, headers={"X-Telegram-Bot-Api-Secret-Token": secret}
                )
                return response.status_code
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def test_webhook_mode_checks_the_secret(core: Core, fake: FakeTelegram) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    core.settings.telegram = core.settings.telegram.model_copy(
        update={
            "webhook_url": url,
            "webhook_port": port,
            "webhook_secret": SecretStr("s3cret-token"),
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_telegram(core, stop=stop))
    try:
        (hook,) = await fake.wait_for("setWebhook")
        assert hook.params["url"] == url
        assert hook.params["secret_token"] == "s3cret-token"
        assert not fake.of("getUpdates") and not fake.of("deleteWebhook")

        update = {"update_id": 1, **message_update("/help", chat_id=CHAT, user_id=OPERATOR)}
        assert await _post(url, update, "wrong") == 403
        await asyncio.sleep(0.3)
        assert not fake.of("sendMessage")

        assert await _post(url, update, "s3cret-token") == 200
        (sent,) = await fake.wait_for("sendMessage")
        assert sent.params["chat_id"] == str(CHAT) and "DevMesh triage bot" in sent.params["text"]
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
    assert task.exception() is None


async def test_devmesh_telegram_command_polls_and_answers(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    env = {
        **os.environ,
        "DEVMESH_DATA_DIR": str(tmp_path / "data"),
        "DEVMESH_LOG_FORMAT": "json",
        "DEVMESH_TELEGRAM__TOKEN": TOKEN,
        "DEVMESH_TELEGRAM__BASE_URL": fake.base_url,
        "DEVMESH_TELEGRAM__ALLOWED_CHAT_IDS": f"{CHAT}",
        "DEVMESH_REASON__USE_GRAPH": "false",
        "DEVMESH_DETECT__USE_GRAPH": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devmesh.cli.main",
        "telegram",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await fake.wait_for("setMyCommands", within=60)
        fake.push_update(message_update("/runbook disk", chat_id=CHAT, user_id=OPERATOR))
        (sent,) = await fake.wait_for("sendMessage", within=30)
        # The bundled runbooks are loaded by the command: "disk" finds the disk-full one.
        assert "disk-full" in sent.params["text"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            output, _ = await proc.communicate()
    assert proc.returncode == 0, output.decode()[-2000:]
    assert b"telegram_stopped" in output
