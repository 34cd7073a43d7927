"""The Telegram adapter: a python-telegram-bot Application that passes updates to the engine and renders replies."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dtm
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

from telegram import (
    BotCommand,
    CallbackQuery,
    Chat,
    InlineKeyboardMarkup,
    InlineQuery,
    InlineQueryResultsButton,
    LinkPreviewOptions,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatMemberStatus, ChatType, ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, ContextTypes, TypeHandler, Updater
from telegram.request import HTTPXRequest

from adapters.telegram import render
from adapters.telegram.config import TelegramConfig
from adapters.telegram.translate import (
    MENU,
    PLATFORM,
    BotContext,
    Notice,
    chat_of,
    file_handle,
    parse_file_handle,
    space_of,
    translate,
)
from core.config import ConfigError
from core.errors import TooLarge, UserError
from core.messages import AudioFile, Command, Door, Reply, ReplyKind, Request

log = logging.getLogger(__name__)

PREVIEW_BYTES = 10 * 1024 * 1024  # well inside the 50 MB a bot may upload
ACTION_REPEAT = 4.5  # seconds; Telegram shows a chat action for about five
POLL_TIMEOUT = 10.0  # seconds a getUpdates long poll may wait
GROUP_RATE = 20.0  # messages a minute to one group, Telegram's documented limit
FLOOD_RETRIES = 3  # a 429 "retry after n" is waited out this many times before giving up
POLL_GRACE = 40.0  # seconds past a long poll with no getUpdates at all: PTB's retries wait at most 30 s
STOP_POLLER_SECONDS = 5.0  # how long a revive waits for a silent old poller to stop
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.INLINE_QUERY]
ADMIN_COMMANDS = frozenset({Command.REMOVE, Command.LABELS})
SLOW_COMMANDS = {
    Command.ADD: ChatAction.UPLOAD_VOICE,
    Command.IDENTIFY: ChatAction.UPLOAD_VOICE,
    Command.SIMILAR: ChatAction.UPLOAD_VOICE,
    Command.PLAY: ChatAction.UPLOAD_VOICE,
    Command.SEARCH: ChatAction.TYPING,
    Command.MORE: ChatAction.TYPING,
}
BOT_USER = f"{PLATFORM}:bot"  # who the adapter's own requests come from
TOO_BIG = "Telegram only lets bots download files up to 20 MB. Send a shorter or compressed clip."


class PollWatch(HTTPXRequest):
    """The getUpdates connection, noting how the long polls go: when one last succeeded, and failures since."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.in_flight = 0
        self.last_seen = time.monotonic()  # the last poll that ended, or when watching began
        self.failing_since: float | None = None
        self.error = ""
        self.given_up = False  # the last failure is one PTB's polling loop stops on (a rejected token)

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        """One HTTP exchange on this connection, noted: a 200 is a poll that worked, anything else a failure."""
        self.in_flight += 1
        try:
            code, payload = await super().do_request(*args, **kwargs)
        except TelegramError as exc:  # the network: PTB retries these
            self._failed(exc.message, given_up=False)
            raise
        finally:
            self.in_flight -= 1
            self.last_seen = time.monotonic()
        if code == HTTPStatus.OK:
            self.failing_since, self.error, self.given_up = None, "", False
        else:  # PTB's polling loop stops for good on the InvalidToken that a 401 or 404 becomes
            self._failed(_description(payload, code), given_up=code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.NOT_FOUND))
        return code, payload

    def _failed(self, error: str, given_up: bool) -> None:
        self.failing_since = self.failing_since or time.monotonic()
        self.error, self.given_up = error, given_up

    def quiet(self) -> float:
        """Seconds since a poll last ended, 0 while one is in flight."""
        return 0.0 if self.in_flight else time.monotonic() - self.last_seen


class TelegramAdapter:
    """Runs a PTB Application inside the engine's lifespan: start() returns once polling, stop() undoes it."""

    name = PLATFORM

    def __init__(
        self,
        door: Door,
        config: TelegramConfig,
        global_space: str = "global",
        group_messages_per_minute: float = GROUP_RATE,
        poll_timeout: float = POLL_TIMEOUT,
        poll_grace: float = POLL_GRACE,
    ) -> None:
        if not config.token:
            raise ConfigError("Telegram is enabled but has no token: set SHIRA_TELEGRAM_TOKEN or [telegram] token.")
        self.door = door
        self.config = config
        self.global_space = global_space
        self.poll_timeout = poll_timeout
        self.poll_grace = poll_grace  # a poll's timeout plus this with no getUpdates at all: polling has stopped
        # Stopping cancels a long poll mid-flight, which can leave the one default connection checked
        # out; a second one lets the final "mark updates as read" getUpdates go through.
        self.polls = PollWatch(connection_pool_size=2)
        self.app: Application = (
            ApplicationBuilder()
            .token(config.token)
            .base_url(config.base_url)
            .base_file_url(config.base_file_url)
            .local_mode(config.local_mode)
            .rate_limiter(AIORateLimiter(group_max_rate=group_messages_per_minute, max_retries=FLOOD_RETRIES))
            .concurrent_updates(True)
            .get_updates_request(self.polls)
            .build()
        )
        self._serving = False
        self.app.add_handler(TypeHandler(Update, self._on_update))
        self.app.add_error_handler(self._on_error)
        self.context: BotContext | None = None

    # ----------------------------------------------------------------- lifespan

    async def start(self) -> None:
        """Log in (getMe), register the command menu, and start polling in the background."""
        try:
            await self._start()
        except BaseException as exc:
            await self.stop()  # release the HTTP clients of a half-started application
            if isinstance(exc, InvalidToken):  # its message quotes the token; never pass that on
                raise ConfigError("Telegram rejected the bot token; check SHIRA_TELEGRAM_TOKEN.") from None
            raise
        log.info("telegram: polling as @%s", self.app.bot.username)

    async def _start(self) -> None:
        await self.app.initialize()
        bot = self.app.bot
        global_space = self.global_space
        self.context = BotContext(
            bot_id=bot.id,
            username=bot.username,
            local_mode=self.config.local_mode,
            extra_spaces=(global_space,) if self.config.global_library else (),
            global_space=global_space,
        )
        try:
            await bot.set_my_commands([BotCommand(name, about) for name, about in MENU])
        except TelegramError as exc:
            log.warning("telegram: could not register the command menu: %s", exc)
        await self.app.start()
        await self._start_polling()
        self._serving = True

    async def _start_polling(self) -> None:
        assert self.app.updater is not None
        await self.app.updater.start_polling(
            poll_interval=self.config.poll_interval,
            timeout=dtm.timedelta(seconds=self.poll_timeout),
            allowed_updates=ALLOWED_UPDATES,
        )

    def problem(self) -> str | None:
        """Why updates aren't arriving: polling stopped or failing, or None (also when not started)."""
        polls = self.polls
        if not self._serving:
            return None
        if polls.given_up:
            return f"polling stopped: {polls.error}"
        if polls.failing_since is not None:
            return f"getUpdates failing for {time.monotonic() - polls.failing_since:.0f} s: {polls.error}"
        if polls.quiet() > self.poll_timeout + self.poll_grace:
            return f"no getUpdates for {polls.quiet():.0f} s"
        return None

    async def revive(self) -> None:
        """Start polling again if PTB's polling loop has stopped; while it is retrying by itself, leave it be.

        A fresh Updater: one whose loop died of a rejected token re-raises that from stop() and keeps its stop
        event set, which would end a restarted loop at once.
        """
        polls = self.polls
        if not self._serving or not (polls.given_up or polls.quiet() > self.poll_timeout + self.poll_grace):
            return
        log.warning("telegram: starting polling again (%s)", self.problem())
        old = self.app.updater
        if old is not None and old.running:
            try:
                await asyncio.wait_for(old.stop(), STOP_POLLER_SECONDS)
            except Exception as exc:  # it ended with the error that stopped it, or won't stop: leave it
                log.info("telegram: the old poller ended with %s", type(exc).__name__)
        updater = Updater(self.app.bot, self.app.update_queue)
        await updater.initialize()
        self.app.updater = updater
        polls.given_up, polls.last_seen = False, time.monotonic()
        await self._start_polling()

    async def stop(self) -> None:
        """Stop polling, finish the updates in hand, and close the connections."""
        self._serving = False
        if self.app.updater is not None and self.app.updater.running:
            try:
                await self.app.updater.stop()
            except TelegramError as exc:  # the poller had already stopped on this error (a rejected token)
                log.info("telegram: the poller had stopped with %s", type(exc).__name__)
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()
        await self.app.bot.shutdown()  # closes the HTTP clients even when initialize() failed half-way
        log.info("telegram: stopped")

    async def send(self, space: str, reply: Reply) -> None:
        """Deliver a reply to a chat unprompted."""
        chat_id = chat_of(space)
        if chat_id is None:
            raise ValueError(f"not a Telegram space: {space}")
        try:
            await self._deliver(chat_id, reply)
        except Forbidden as exc:
            log.warning("telegram: can't write to chat %s (%s)", chat_id, exc.message)

    # ----------------------------------------------------------------- updates

    async def _on_update(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        chat_id = chat.id if chat is not None else None
        try:
            await self._dispatch(update)
        except Forbidden as exc:
            log.warning("telegram: can't write to chat %s, the bot was blocked or removed (%s)", chat_id, exc.message)
        except TelegramError as exc:
            log.warning("telegram: API error in chat %s: %s", chat_id, exc.message)
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("telegram: update %s failed (error id %s)", update.update_id, error_id)
            if chat_id is not None:
                with contextlib.suppress(TelegramError):
                    await self.app.bot.send_message(
                        chat_id, f"Sorry, something went wrong on my side (error id {error_id})."
                    )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram: unhandled error for %r", update, exc_info=context.error)

    async def _dispatch(self, update: Update) -> None:
        assert self.context is not None
        result = translate(update, self.context, self._fetcher)
        if update.inline_query is not None:
            await self._answer_inline(update.inline_query, result if isinstance(result, Request) else None)
        elif update.callback_query is not None:
            await self._answer_callback(update.callback_query, result if isinstance(result, Request) else None)
        elif update.message is not None and result is not None:
            await self._answer_message(update.message, result)

    async def _answer_message(self, message: Message, result: Request | Notice) -> None:
        chat_id = message.chat.id
        if isinstance(result, Notice):
            await self._send_text(chat_id, render.escape(result.text), reply_to=message.message_id)
            return
        request = result
        if request.command in ADMIN_COMMANDS and message.from_user is not None:
            request = dataclasses.replace(request, is_admin=await self._is_admin(message.chat, message.from_user.id))
        async with self._chat_action(chat_id, SLOW_COMMANDS.get(request.command)):
            reply = await self._ask(request)
        log.debug("telegram: %s in %s -> %s", request.command, request.space, reply.kind)
        await self._deliver(chat_id, reply, reply_to=message.message_id)

    async def _answer_callback(self, query: CallbackQuery, request: Request | None) -> None:
        message = query.message
        if request is None or message is None:
            await query.answer()
            return
        chat_id = message.chat.id
        reply = await self._ask(request)
        if reply.is_error:
            await query.answer(render.alert_text(reply), show_alert=True)
            return
        if request.command == Command.PAGE:
            rendered = render.render(reply, self._username())
            try:
                await self.app.bot.edit_message_text(
                    rendered.text or render.escape(reply.text),
                    chat_id=chat_id,
                    message_id=message.message_id,
                    parse_mode=ParseMode.HTML,
                    reply_markup=rendered.keyboard,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                )
            except BadRequest as exc:
                if "not modified" not in exc.message.lower():
                    raise
            await query.answer()
            return
        await query.answer()
        await self._deliver(chat_id, reply, reply_to=message.message_id)

    async def _answer_inline(self, query: InlineQuery, request: Request | None) -> None:
        if request is None:
            await query.answer([], cache_time=0, is_personal=True)
            return
        reply = await self.door.handle(request)
        results = render.inline_results(reply.hits)
        button = None
        if reply.kind == ReplyKind.BUSY:
            button = InlineQueryResultsButton("Busy, try again in a moment", start_parameter="help")
        elif not results:
            button = InlineQueryResultsButton("No sounds yet: add some in a private chat", start_parameter="add")
        await query.answer(results, cache_time=10, is_personal=True, button=button)

    # ----------------------------------------------------------------- output

    def _username(self) -> str:
        return self.context.username if self.context is not None else ""

    async def _deliver(self, chat_id: int, reply: Reply, reply_to: int | None = None) -> None:
        rendered = render.render(reply, self._username())
        if rendered.text:
            await self._send_text(chat_id, rendered.text, rendered.keyboard, reply_to)
        if rendered.audio is not None:
            await self._send_audio(chat_id, rendered.audio, reply_to)

    async def _send_text(
        self,
        chat_id: int,
        html: str,
        keyboard: InlineKeyboardMarkup | None = None,
        reply_to: int | None = None,
    ) -> None:
        await self.app.bot.send_message(
            chat_id,
            html,
            parse_mode=ParseMode.HTML,
            reply_markup=keyboard,
            reply_parameters=_reply_to(reply_to),
            link_preview_options=LinkPreviewOptions(is_disabled=True),
        )

    async def _send_audio(self, chat_id: int, audio: AudioFile, reply_to: int | None = None) -> None:
        """Send a sample by its stored file_id, or upload an OGG/Opus preview and remember the new file_id."""
        bot = self.app.bot
        caption = render.audio_caption(audio)
        if audio.platform_file_id:
            kind, file_id = parse_file_handle(audio.platform_file_id)
            try:
                if kind == "voice":
                    await bot.send_voice(chat_id, file_id, caption=caption, reply_parameters=_reply_to(reply_to))
                else:
                    await bot.send_audio(chat_id, file_id, caption=caption, reply_parameters=_reply_to(reply_to))
                return
            except BadRequest as exc:
                log.info("telegram: stored file_id for #%d refused (%s); uploading", audio.sample_id, exc.message)
        if audio.preview is None or audio.platform_file_id:
            audio = await self._fresh_preview(chat_id, audio)
        if audio.preview is None:
            await self._send_text(chat_id, "I couldn't prepare that sound to send, sorry.", reply_to=reply_to)
            return
        async with self._chat_action(chat_id, ChatAction.UPLOAD_VOICE):
            data = await asyncio.to_thread(audio.preview.read_bytes)
            sent = await bot.send_voice(
                chat_id,
                data,
                caption=caption,
                duration=dtm.timedelta(seconds=round(audio.duration)),
                filename=audio.filename,
                reply_parameters=_reply_to(reply_to),
            )
        if sent.voice is not None:
            handle = file_handle("voice", sent.voice.file_id)
            await self.door.handle(self._request(chat_id, Command.REMEMBER, text=str(audio.sample_id), file_id=handle))

    async def _fresh_preview(self, chat_id: int, audio: AudioFile) -> AudioFile:
        """Ask the core for an uploadable preview of a sample whose stored handle Telegram refused."""
        reply = await self._ask(self._request(chat_id, Command.PLAY, text=str(audio.sample_id), fresh_upload=True))
        if reply.audio is None:
            log.info("telegram: no preview of #%d: %s", audio.sample_id, reply.text)
            return audio
        return reply.audio

    def _request(self, chat_id: int, command: Command, **fields: object) -> Request:
        """A request of the adapter's own (not a user's) about a chat, such as remembering a file id."""
        extra = self.context.extra_spaces if self.context is not None else ()
        return Request(PLATFORM, space_of(chat_id), BOT_USER, command, extra_spaces=extra, **fields)  # type: ignore[arg-type]

    async def _ask(self, request: Request) -> Reply:
        """Ask the core, saying how large a playable file may be."""
        return await self.door.handle(dataclasses.replace(request, upload_limit=PREVIEW_BYTES))

    @contextlib.asynccontextmanager
    async def _chat_action(self, chat_id: int, action: str | None) -> AsyncIterator[None]:
        """Show "typing…" or "sending a voice message…" while the body runs."""
        if action is None:
            yield
            return
        await self._send_action(chat_id, action)
        repeat = asyncio.create_task(self._repeat_action(chat_id, action))
        try:
            yield
        finally:
            repeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await repeat

    async def _repeat_action(self, chat_id: int, action: str) -> None:
        while True:
            await asyncio.sleep(ACTION_REPEAT)
            await self._send_action(chat_id, action)

    async def _send_action(self, chat_id: int, action: str) -> None:
        try:
            await self.app.bot.send_chat_action(chat_id, action)
        except TelegramError as exc:
            log.debug("telegram: chat action in %s failed: %s", chat_id, exc.message)

    # ----------------------------------------------------------------- platform look-ups

    async def _is_admin(self, chat: Chat, user_id: int) -> bool:
        """A private chat's user owns that library; in groups, creators and administrators are admins."""
        if chat.type == ChatType.PRIVATE:
            return True
        try:
            member = await self.app.bot.get_chat_member(chat.id, user_id)
        except TelegramError as exc:
            log.warning("telegram: getChatMember(%s, %s) failed: %s", chat.id, user_id, exc.message)
            return False
        return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)

    def _fetcher(self, file_id: str) -> Callable[[], Awaitable[bytes]]:
        """A download of one file that the core calls only after checking the declared size."""

        async def fetch() -> bytes:
            try:
                file = await self.app.bot.get_file(file_id)
                return bytes(await file.download_as_bytearray())
            except BadRequest as exc:
                if "too big" in exc.message.lower():
                    raise TooLarge(TOO_BIG) from exc
                raise UserError("I couldn't download that file from Telegram; please send it again.") from exc

        return fetch


def _description(payload: bytes, code: int) -> str:
    """The Bot API's description of a failed call, or its HTTP status."""
    try:
        return str(json.loads(payload)["description"])[:200]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {code}"


def _reply_to(message_id: int | None) -> ReplyParameters | None:
    if message_id is None:
        return None
    return ReplyParameters(message_id, allow_sending_without_reply=True)
