"""The Telegram bot's handlers: thin — parse the chat input, call one core service (in a
worker thread, since the core services are synchronous), format the answer as HTML.

Everything that decides anything (who may approve, whether an incident may be resolved,
what a fix does) lives in ``devmesh_core``; this module maps Telegram's shapes onto it:
chat and user ids onto access checks and :class:`Identity`, inline buttons onto signed
callback data, message ids onto incident threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatType, ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

from bots.telegram.formatting import MESSAGE_LIMIT, Formatter, pack, to_plain, utf16_len
from bots.telegram.parsing import parse_filters, split_params
from bots.telegram.state import LRU, MessageMap, Pages
from devmesh_core.errors import AuthError, BackendError, DevMeshError, InvalidInput, NotFound
from devmesh_core.log import get_logger

if TYPE_CHECKING:
    from devmesh_core.chat_settings import TelegramSettings
    from devmesh_core.runtime import Core

log = get_logger(__name__)

# (command, description) as registered with setMyCommands: the menu Telegram shows.
COMMANDS: list[tuple[str, str]] = [
    ("status", "Fleet status: hosts, open incidents, noisiest services"),
    ("incidents", "Incidents (active by default; or open, resolved…)"),
    ("incident", "One incident in full: /incident INC-42"),
    ("logs", "Recent logs: /logs service=nginx level=error since=1h text"),
    ("search", "Search logs by meaning: /search disk is full"),
    ("ask", "Ask about the fleet or an incident: /ask why is nginx failing"),
    ("runbook", "Runbooks: /runbook or /runbook disk-full"),
    ("fix", "Request a fix: /fix INC-42 or /fix ACTION HOST key=value"),
    ("ack", "Acknowledge an incident: /ack INC-42"),
    ("resolve", "Resolve an incident: /resolve INC-42 [note]"),
    ("help", "What this bot can do"),
]

HELP = """<b>DevMesh triage bot</b>
/status — hosts online, open incidents, services with most errors
/incidents [active|open|acknowledged|mitigated|resolved] — incident list
/incident ID — one incident: timeline, suspected origin, diagnosis
/logs [service=… host=… level=… since=1h until=… limit=50] [text] — recent events
/search words [service=… level=… since=…] — find log signatures by meaning
/ask question — diagnosis with cited evidence (reply to an incident message to ask about it)
/runbook [id or words] — runbooks and their allowed fixes
/fix ID — propose the fixes an incident's diagnosis suggests
/fix ACTION HOST key=value … [incident=ID] — propose a fix; approvers confirm with the buttons
/ack ID, /resolve ID [note] — incident lifecycle

In a private chat any plain message is a question; in a group, reply to an incident message.
"""

REFUSAL = (
    "Sorry, this bot only answers the chats and people it was set up for. "
    "Ask the DevMesh admin to add this chat (id {chat}) or your user id ({user})."
)
PAGE_PREFIX = "pg:"
_INCIDENT_ID = re.compile(r"^(?:inc-)?\d+$", re.IGNORECASE)
_REQUEST_ID = re.compile(r"^A-[0-9a-z]+$", re.IGNORECASE)

Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


class TelegramBot:
    """The bot's state and handlers over one :class:`Core`. ``build_application`` makes one
    per ``Application`` and registers its methods as handlers."""

    def __init__(self, core: Core, settings: TelegramSettings | None = None) -> None:
        self.core = core
        self.settings = settings or core.settings.telegram
        self.fmt = Formatter(_redactor(core))
        data_dir: Path = core.settings.data_dir
        self.messages = MessageMap(
            data_dir / "telegram" / "messages.json", limit=self.settings.remembered_incidents
        )
        self.pages = Pages()
        # Conversations (reason.Conversation) per chat and incident; bounded, in memory.
        self.conversations: LRU[Any] = LRU(200)
        self.app: Any = None  # the Application, set by build_application
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- access ----------------------------------------------------------------------
    def allowed(self, chat_id: int | None, user_id: int | None) -> bool:
        """Whether this chat or this person may use the bot (see TelegramSettings)."""
        if chat_id is not None and chat_id in self.settings.allowed_chat_ids:
            return True
        return user_id is not None and user_id in self.settings.allowed_user_ids

    def guard(self, handler: Handler, *, quiet_in_groups: bool = False) -> Handler:
        """Wrap a handler: refuse strangers politely (and log them), and turn the core's
        errors into a short answer instead of a silent failure. ``quiet_in_groups`` only
        logs strangers' plain messages in groups (a refusal per message would be spam)."""

        async def wrapped(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            chat = update.effective_chat
            user = update.effective_user
            chat_id = chat.id if chat else None
            user_id = user.id if user else None
            if not self.allowed(chat_id, user_id):
                log.warning(
                    "telegram_refused",
                    chat_id=chat_id,
                    user_id=user_id,
                    username=user.username if user else None,
                )
                text = REFUSAL.format(chat=chat_id, user=user_id)
                if quiet_in_groups and chat is not None and chat.type != ChatType.PRIVATE:
                    return
                if update.callback_query is not None:
                    await update.callback_query.answer(text[:200], show_alert=True)
                elif chat_id is not None:
                    await self.send_html(chat_id, self.fmt.t(text))
                return
            try:
                await handler(update, context)
            except (InvalidInput, NotFound, AuthError) as exc:
                await self._say_error(update, str(exc))
            except BackendError as exc:
                log.warning("telegram_backend_error", error=str(exc))
                await self._say_error(update, f"a backend is unavailable: {exc}")
            except DevMeshError as exc:
                await self._say_error(update, str(exc))

        return wrapped

    async def _say_error(self, update: Update, text: str) -> None:
        if update.callback_query is not None:
            await update.callback_query.answer(text[:200], show_alert=True)
        elif update.effective_chat is not None:
            await self.send_html(update.effective_chat.id, "⚠️ " + self.fmt.t(text, 1000))

    # -- sending ---------------------------------------------------------------------
    async def send_html(
        self,
        chat_id: int,
        text: str,
        *,
        reply_to: int | None = None,
        keyboard: InlineKeyboardMarkup | None = None,
    ) -> int:
        """Send one HTML message (already under the limit); return its message id."""
        message = await self.app.bot.send_message(
            chat_id,
            text,
            parse_mode=ParseMode.HTML,
            link_preview_options=LinkPreviewOptions(is_disabled=True),
            reply_parameters=(
                ReplyParameters(reply_to, allow_sending_without_reply=True)
                if reply_to is not None
                else None
            ),
            reply_markup=keyboard,
        )
        return int(message.message_id)

    async def send_blocks(
        self,
        chat_id: int,
        blocks: list[str],
        *,
        reply_to: int | None = None,
        keyboard: InlineKeyboardMarkup | None = None,
        filename: str = "devmesh.txt",
    ) -> int:
        """Send an answer: split under 4,096 characters, or — when that would take more than
        ``max_messages`` messages — as a text document. Returns the first message's id."""
        messages = pack(blocks)
        if len(messages) > self.settings.max_messages:
            body = "\n".join(to_plain(block) for block in blocks)
            caption = (
                f"{to_plain(blocks[0])[:200]}\n(long answer: {len(messages)} messages' worth,"
                " sent as a file)"
            )
            sent = await self.app.bot.send_document(
                chat_id,
                document=io.BytesIO(body.encode("utf-8")),
                filename=filename,
                caption=caption,
                reply_parameters=(
                    ReplyParameters(reply_to, allow_sending_without_reply=True)
                    if reply_to is not None
                    else None
                ),
                reply_markup=keyboard,
            )
            return int(sent.message_id)
        first: int | None = None
        for n, text in enumerate(messages):
            last = n == len(messages) - 1
            sent_id = await self.send_html(
                chat_id, text, reply_to=reply_to, keyboard=keyboard if last else None
            )
            first = first or sent_id
        assert first is not None
        return first

    async def send_paged(self, chat_id: int, header: str, items: list[str], empty: str) -> None:
        """A list as pages of at most ``page_size`` items (and under the message limit),
        with next/previous buttons when there is more than one page."""
        if not items:
            await self.send_html(chat_id, f"{header}\n{self.fmt.t(empty)}")
            return
        pages = paginate(header, items, self.settings.page_size)
        if len(pages) == 1:
            await self.send_html(chat_id, pages[0])
            return
        key = self.pages.add(chat_id, pages)
        await self.send_html(chat_id, pages[0], keyboard=page_keyboard(key, 0, len(pages)))

    async def edit_html(
        self, chat_id: int, message_id: int, text: str, keyboard: InlineKeyboardMarkup | None
    ) -> None:
        """Edit a message; "not modified" (same text twice) is not an error."""
        try:
            await self.app.bot.edit_message_text(
                text,
                chat_id=chat_id,
                message_id=message_id,
                parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                reply_markup=keyboard,
            )
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise

    # -- commands --------------------------------------------------------------------
    async def cmd_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.send_html(_chat_id(update), HELP)

    async def cmd_status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        from devmesh_core.detect.status import fleet_status

        fleet = await asyncio.to_thread(fleet_status, self.core)
        await self.send_blocks(_chat_id(update), self.fmt.status(fleet))

    async def cmd_logs(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        from devmesh_core.store import LogQuery

        found = parse_filters(list(context.args or []))
        query = LogQuery(
            service=found.service,
            host=found.host,
            level=found.level,
            start_time=found.since,
            end_time=found.until,
            text=found.text,
            trace_id=found.trace_id,
            template_id=found.template_id,
            limit=found.limit,
        )
        page = await asyncio.to_thread(self.core.store.query, query)
        items = [self.fmt.event(event) for event in page.events]
        more = " (more available: narrow the filters)" if page.next else ""
        header = f"<b>Logs</b> — {len(items)} newest event(s){more}"
        await self.send_paged(_chat_id(update), header, items, "no events match")

    async def cmd_search(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        found = parse_filters(list(context.args or []), default_limit=20)
        if not found.text:
            raise InvalidInput("say what to look for, e.g. /search disk is full")
        chat_id = _chat_id(update)
        core = self.core
        if core.vector_index is not None and core.embedder is not None:
            from devmesh_core.vectors import search_templates

            hits = await asyncio.to_thread(
                search_templates,
                core.store,
                core.vector_index,
                core.embedder,
                found.text,
                limit=min(found.limit, 50),
                service=found.service,
                host=found.host,
                level=found.level,
                since=found.since,
                until=found.until,
                examples=1,
            )
            header = f"<b>Search</b> {self.fmt.t(found.text, 200)} — {len(hits)} signature(s)"
            items = [self.fmt.search_hit(hit) for hit in hits]
            await self.send_paged(chat_id, header, items, "nothing similar found")
            return
        # Semantic search is off (no vector index): fall back to a substring search.
        from devmesh_core.store import LogQuery

        query = LogQuery(
            service=found.service,
            host=found.host,
            level=found.level,
            start_time=found.since,
            end_time=found.until,
            text=found.text,
            limit=found.limit,
        )
        page = await asyncio.to_thread(core.store.query, query)
        header = (
            f"<b>Search</b> {self.fmt.t(found.text, 200)} — semantic search is off here, "
            f"{len(page.events)} event(s) containing the words"
        )
        items = [self.fmt.event(event) for event in page.events]
        await self.send_paged(chat_id, header, items, "no events contain these words")

    async def cmd_runbook(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat_id = _chat_id(update)
        runbooks = await asyncio.to_thread(self._runbooks)
        words = " ".join(context.args or []).strip().lower()
        if words:
            exact = [rb for rb in runbooks if rb.id == words]
            if exact:
                await self.send_blocks(
                    chat_id, self.fmt.runbook(exact[0]), filename=f"{exact[0].id}.md"
                )
                return
            runbooks = [
                rb
                for rb in runbooks
                if words in rb.id
                or words in rb.title.lower()
                or any(words in tag.lower() for tag in rb.tags)
                or any(words in s.lower() for s in rb.services)
            ]
            if len(runbooks) == 1:
                await self.send_blocks(
                    chat_id, self.fmt.runbook(runbooks[0]), filename=f"{runbooks[0].id}.md"
                )
                return
        header = f"<b>Runbooks</b> ({len(runbooks)}) — /runbook ID shows one"
        items = [self.fmt.runbook_line(rb) for rb in runbooks]
        await self.send_paged(chat_id, header, items, "no runbook matches")

    def _runbooks(self) -> list[Any]:
        """The core's runbooks, or (when it carries none) those of the configured folder;
        broken files are skipped with a warning (``devmesh runbooks lint`` reports them)."""
        if self.core.runbooks:
            return list(self.core.runbooks)
        from devmesh_core.reason.runbooks import lint_runbooks, runbooks_dir

        found, problems = lint_runbooks(runbooks_dir(self.core.settings))
        if problems:
            log.warning("telegram_runbooks_skipped", problems=problems[:5])
        return list(found)

    def _incidents(self) -> Any:
        if self.core.incidents is None:
            raise BackendError("incident tracking is not running in this process")
        return self.core.incidents

    async def cmd_incidents(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        args = list(context.args or [])
        state = args[0].lower() if args else "active"
        if state == "all":
            state_arg: str | None = None
        else:
            state_arg = state
        incidents = await asyncio.to_thread(self._incidents().list, state_arg, limit=100)
        header = f"<b>Incidents</b> ({self.fmt.t(state)}) — {len(incidents)}"
        items = [self.fmt.incident_line(incident) for incident in incidents]
        await self.send_paged(_chat_id(update), header, items, f"no {state} incidents")

    async def cmd_incident(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        args = list(context.args or [])
        incident_id = args[0] if args else self._replied_incident(update)
        if not incident_id:
            raise InvalidInput("which incident? e.g. /incident INC-42")
        incident = await asyncio.to_thread(self._incidents().get, incident_id)
        await self.send_blocks(
            _chat_id(update), self.fmt.incident(incident), filename=f"{incident.id}.txt"
        )

    async def cmd_ack(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._transition(update, context, "acknowledge")

    async def cmd_resolve(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._transition(update, context, "resolve")

    async def _transition(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, verb: str
    ) -> None:
        args = list(context.args or [])
        incident_id = args[0] if args and _INCIDENT_ID.match(args[0]) else None
        rest = args[1:] if incident_id else args
        incident_id = incident_id or self._replied_incident(update)
        if not incident_id:
            raise InvalidInput(
                f"which incident? e.g. /{'ack' if verb == 'acknowledge' else verb} INC-42"
            )
        by = _who(update)
        service = self._incidents()
        if verb == "acknowledge":
            incident = await asyncio.to_thread(service.acknowledge, incident_id, by)
        else:
            note = " ".join(rest) or None
            incident = await asyncio.to_thread(service.resolve, incident_id, by, note)
        await self.send_html(
            _chat_id(update),
            f"{self.fmt.t(incident.id)} is now <b>{incident.state}</b> (by {self.fmt.t(by, 100)})",
        )

    # -- remediation -----------------------------------------------------------------
    def _actions(self) -> Any:
        if self.core.actions is None:
            raise BackendError("remediation is not running in this process")
        return self.core.actions

    def identity(self, update: Update) -> Any:
        """The core :class:`Identity` of the person behind an update."""
        from devmesh_core.actions.models import Identity

        user = update.effective_user
        if user is None:
            raise AuthError("no user on this update")
        return Identity(platform="telegram", user_id=str(user.id), display=user.full_name)

    def action_keyboard(self, request: Any) -> InlineKeyboardMarkup | None:
        """Confirm/Cancel buttons for a pending request, with signed callback data."""
        if request.status != "pending":
            return None
        actions = self._actions()
        return InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(
                        "✅ Confirm", callback_data=actions.sign_callback(request.id, "approve")
                    ),
                    InlineKeyboardButton(
                        "✖️ Cancel", callback_data=actions.sign_callback(request.id, "reject")
                    ),
                ]
            ]
        )

    async def post_request(self, chat_id: int, request: Any, reply_to: int | None = None) -> int:
        """Show a remediation request with its buttons and remember where it is shown."""
        message_id = await self.send_blocks(
            chat_id,
            self.fmt.action(request),
            reply_to=reply_to,
            keyboard=self.action_keyboard(request),
        )
        self.messages.remember_request(request.id, chat_id, message_id)
        return message_id

    async def cmd_fix(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat_id = _chat_id(update)
        actions = self._actions()
        words, params = split_params(list(context.args or []))
        identity = self.identity(update)
        if not words and not params:
            pending = await asyncio.to_thread(actions.pending)
            if not pending:
                await self.send_html(
                    chat_id,
                    "No fix is waiting for approval.\n"
                    "Use /fix INC-42 or /fix ACTION HOST key=value … [incident=INC-42].",
                )
            for request in pending[:10]:
                await self.post_request(chat_id, request)
            return
        if len(words) == 1 and _REQUEST_ID.match(words[0]) and not params:
            request = await asyncio.to_thread(actions.get, words[0])
            await self.post_request(chat_id, request)
            return
        if len(words) == 1 and _INCIDENT_ID.match(words[0]) and not params:
            await self._fix_incident(update, words[0], identity)
            return
        if len(words) != 2:
            catalog = await asyncio.to_thread(actions.catalog)
            names = ", ".join(spec.name for spec in catalog) or "none configured"
            raise InvalidInput(
                "use /fix INC-42, or /fix ACTION HOST key=value … (actions: " + names + ")"
            )
        action, host = words
        incident_id = params.pop("incident", None) or self._replied_incident(update)
        request = await asyncio.to_thread(
            functools.partial(
                actions.propose,
                action,
                dict(params),
                host=host,
                incident_id=incident_id,
                requested_by=identity,
            )
        )
        await self.post_request(chat_id, request)

    async def _fix_incident(self, update: Update, incident_id: str, identity: Any) -> None:
        chat_id = _chat_id(update)
        incident = await asyncio.to_thread(self._incidents().get, incident_id)
        proposals = list((incident.diagnosis or {}).get("proposed_actions") or [])
        if not proposals:
            raise InvalidInput(
                f"{incident.id} has no proposed fix yet: /ask about it first, or name one: "
                "/fix ACTION HOST key=value"
            )
        actions = self._actions()
        for proposal in proposals:
            host = proposal.get("host") or incident.origin_host
            try:
                request = await asyncio.to_thread(
                    functools.partial(
                        actions.propose,
                        str(proposal.get("action", "")),
                        dict(proposal.get("params") or {}),
                        host=host or "",
                        incident_id=incident.id,
                        requested_by=identity,
                    )
                )
            except InvalidInput as exc:
                await self.send_html(
                    chat_id,
                    f"⚠️ {self.fmt.t(proposal.get('action', '?'))} not proposed: "
                    f"{self.fmt.t(exc, 500)}",
                )
                continue
            await self.post_request(chat_id, request)

    async def on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A button press: a page turn (``pg:``) or a signed Confirm/Cancel."""
        query = update.callback_query
        assert query is not None
        data = query.data or ""
        if data.startswith(PAGE_PREFIX):
            await self._turn_page(update, data)
            return
        actions = self._actions()
        try:
            request_id, decision = actions.verify_callback(data)
        except (AuthError, InvalidInput) as exc:
            log.warning(
                "telegram_forged_callback",
                user_id=update.effective_user.id if update.effective_user else None,
                error=str(exc),
            )
            await query.answer("This button is not valid (forged or outdated).", show_alert=True)
            return
        identity = self.identity(update)
        request = await asyncio.to_thread(actions.get, request_id)
        if decision == "approve":
            allowed, why = await asyncio.to_thread(actions.can_approve, identity, request)
            if not allowed:
                log.warning("telegram_approval_refused", user=identity.key, reason=why)
                await query.answer(f"Not allowed: {why}"[:200], show_alert=True)
                if request.status != "pending":  # expired or decided: show it, drop buttons
                    self._remember_button_message(update, request.id)
                    await self.show_request(request)
                return
        try:
            if decision == "approve":
                request = await asyncio.to_thread(actions.approve, request_id, identity)
            else:
                request = await asyncio.to_thread(
                    actions.reject, request_id, identity, f"cancelled in Telegram by {_who(update)}"
                )
        except AuthError as exc:
            await query.answer(f"Not allowed: {exc}"[:200], show_alert=True)
            return
        except InvalidInput as exc:
            await query.answer(str(exc)[:200], show_alert=True)
            current = await asyncio.to_thread(actions.get, request_id)
            await self.show_request(current)
            return
        if request.status == "pending":
            needed = request.approvals_needed - len(request.approvals)
            await query.answer(f"Approval recorded; {needed} more approver(s) needed.")
        else:
            await query.answer(f"{request.id}: {request.status}")
        self._remember_button_message(update, request.id)
        await self.show_request(request)

    def _remember_button_message(self, update: Update, request_id: str) -> None:
        """The message a button was pressed under shows this request (it may predate the
        map, e.g. after the map forgot it)."""
        query = update.callback_query
        message = query.message if query is not None else None
        if message is not None:
            self.messages.remember_request(request_id, message.chat.id, message.message_id)

    async def show_request(self, request: Any) -> None:
        """Edit every message showing this request with where it stands now (buttons go
        away once it is no longer pending)."""
        text = pack(self.fmt.action(request), MESSAGE_LIMIT)[0]
        keyboard = self.action_keyboard(request)
        for chat_id, message_id in self.messages.request_messages(request.id):
            try:
                await self.edit_html(chat_id, message_id, text, keyboard)
            except TelegramError as exc:
                log.warning("telegram_edit_failed", chat_id=chat_id, error=str(exc))

    def on_action_change(self, request: Any) -> None:
        """ActionService listener (any thread): edit the request's messages on the bot's
        loop with the new status (approved → running → succeeded, expired…)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        if self.messages.request_messages(request.id):
            asyncio.run_coroutine_threadsafe(self.show_request(request), loop)
        elif request.status == "pending" and str(request.requested_by).startswith("system:"):
            # Proposed by the diagnosis, not from a chat: ask the ping chats to decide.
            asyncio.run_coroutine_threadsafe(self.announce_request(request), loop)

    async def announce_request(self, request: Any) -> None:
        """Post a system-proposed request to every ping chat, in its incident's thread."""
        for chat_id in self.settings.ping_chat_ids:
            reply_to = (
                self.messages.first_message(request.incident_id, chat_id)
                if request.incident_id
                else None
            )
            try:
                await self.post_request(chat_id, request, reply_to=reply_to)
            except TelegramError as exc:
                log.warning("telegram_request_post_failed", chat_id=chat_id, error=str(exc))

    async def _turn_page(self, update: Update, data: str) -> None:
        query = update.callback_query
        assert query is not None
        _, key, number = ([*data.split(":"), "", ""])[:3]
        chat_id = _chat_id(update)
        pages = self.pages.get(key, chat_id)
        if pages is None or not number.isdigit() or int(number) >= len(pages):
            await query.answer("These results expired; run the command again.", show_alert=True)
            return
        n = int(number)
        await query.answer()
        message = query.message
        if message is not None:
            await self.edit_html(
                chat_id, message.message_id, pages[n], page_keyboard(key, n, len(pages))
            )

    # -- questions -------------------------------------------------------------------
    async def cmd_ask(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        args = list(context.args or [])
        incident_id = None
        if args and _INCIDENT_ID.match(args[0]) and args[0].lower().startswith("inc-"):
            incident_id, args = args[0], args[1:]
        question = " ".join(args).strip()
        if not question:
            raise InvalidInput("ask a question, e.g. /ask why is nginx returning 502")
        await self.answer(update, question, incident_id or self._replied_incident(update))

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A plain message: a question in a private chat, or in a group when it replies to
        an incident message (other group chatter is ignored)."""
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None or not message.text:
            return
        incident_id = self._replied_incident(update)
        if chat.type != ChatType.PRIVATE and incident_id is None:
            return
        await self.answer(update, message.text.strip(), incident_id)

    async def answer(self, update: Update, question: str, incident_id: str | None) -> None:
        """Run the diagnosis in a worker thread and post it, continuing this chat's
        conversation about the same incident (follow-ups reuse its evidence)."""
        from devmesh_core.reason.ask import ask
        from devmesh_core.reason.conversation import Conversation

        chat_id = _chat_id(update)
        key = f"{chat_id}:{incident_id or ''}"
        conversation = self.conversations.get(key)
        if conversation is None:
            conversation = Conversation()
            self.conversations.put(key, conversation)
        # A follow-up inherits the conversation's incident, window and evidence; naming the
        # incident again would make ``ask`` start over.
        scope_incident = incident_id if len(conversation) == 0 else None
        with contextlib.suppress(TelegramError):
            await self.app.bot.send_chat_action(chat_id, ChatAction.TYPING)
        diagnosis = await asyncio.to_thread(
            lambda: ask(self.core, question, incident_id=scope_incident, conversation=conversation)
        )
        reply_to = update.effective_message.message_id if update.effective_message else None
        head = f"🔎 <b>{self.fmt.t(question, 200)}</b>"
        if incident_id:
            head += f" ({self.fmt.t(incident_id)})"
        await self.send_blocks(
            chat_id,
            [head, *self.fmt.diagnosis(diagnosis)],
            reply_to=reply_to,
            filename="diagnosis.txt",
        )

    def _replied_incident(self, update: Update) -> str | None:
        """The incident a message replies to (a bot message announcing it), if any."""
        message = update.effective_message
        if message is None or message.reply_to_message is None:
            return None
        return self.messages.incident_of(message.chat.id, message.reply_to_message.message_id)

    # -- lifecycle -------------------------------------------------------------------
    async def register_commands(self) -> None:
        """Publish the command menu (setMyCommands)."""
        await self.app.bot.set_my_commands([BotCommand(c, d) for c, d in COMMANDS])


def paginate(header: str, items: list[str], page_size: int) -> list[str]:
    """Pages of at most ``page_size`` items each, each page under the message limit (with
    room for the header and the page counter)."""
    budget = MESSAGE_LIMIT - utf16_len(header) - 40
    pages: list[list[str]] = [[]]
    size = 0
    for item in items:
        item_size = utf16_len(item) + 1
        current = pages[-1]
        if current and (len(current) >= page_size or size + item_size > budget):
            pages.append([])
            size = 0
        pages[-1].append(item)
        size += item_size
    total = len(pages)
    return [
        "\n".join([header + (f" · page {n + 1}/{total}" if total > 1 else ""), *page])
        for n, page in enumerate(pages)
    ]


def page_keyboard(key: str, n: int, total: int) -> InlineKeyboardMarkup:
    """« previous / n of total / next » buttons (data ``pg:<key>:<page>``)."""
    row = []
    if n > 0:
        row.append(InlineKeyboardButton("« previous", callback_data=f"{PAGE_PREFIX}{key}:{n - 1}"))
    row.append(InlineKeyboardButton(f"{n + 1}/{total}", callback_data=f"{PAGE_PREFIX}{key}:{n}"))
    if n + 1 < total:
        row.append(InlineKeyboardButton("next »", callback_data=f"{PAGE_PREFIX}{key}:{n + 1}"))
    return InlineKeyboardMarkup([row])


def _chat_id(update: Update) -> int:
    chat = update.effective_chat
    if chat is None:
        raise InvalidInput("no chat on this update")
    return int(chat.id)


def _who(update: Update) -> str:
    """How a person is recorded on an incident: ``telegram:<id>`` plus their name."""
    user = update.effective_user
    if user is None:
        return "telegram:unknown"
    return f"telegram:{user.id} ({user.full_name})"


def _redactor(core: Core) -> Callable[[str], str] | None:
    """Mask secrets (tokens, passwords, keys) in everything the bot sends. Host names, IPs
    and e-mails stay visible: operators need them, and the chats are access-controlled."""
    try:
        from devmesh_core.reason.redact import Redactor
    except ImportError:  # pragma: no cover - the reasoning package is part of the core
        return None
    reason = core.settings.reason.model_copy(
        update={"redact_emails": False, "redact_ips": False, "redact_hostnames": False}
    )
    redactor = Redactor(reason)
    return redactor.redact
