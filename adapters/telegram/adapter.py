"""The Telegram adapter: its own getUpdates loop, which journals each batch before confirming it, and a
python-telegram-bot Application for the Bot API calls and their rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dtm
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

from telegram import (
    BotCommand,
    CallbackQuery,
    Chat,
    InlineKeyboardMarkup,
    InlineQuery,
    LinkPreviewOptions,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatMemberStatus, ChatType, ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, TelegramError, TimedOut
from telegram.ext import Application, ApplicationBuilder

from adapters.telegram import render
from adapters.telegram.config import TelegramConfig
from adapters.telegram.limits import MessageRateLimiter
from adapters.telegram.timeline import TimelineAnswer
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
from adapters.telegram.webhook import WebhookServer
from core.command_table import needs_admin
from core.config import ConfigError
from core.errors import TooLarge, UserError
from core.messages import AudioFile, Command, Door, Inbox, Reply, Request

log = logging.getLogger(__name__)

PREVIEW_BYTES = 10 * 1024 * 1024  # well inside the 50 MB a bot may upload
ACTION_REPEAT = 4.5  # seconds; Telegram shows a chat action for about five
POLL_TIMEOUT = 10.0  # seconds a getUpdates long poll may wait
GROUP_RATE = 20.0  # messages a minute to one group, Telegram's documented limit
FLOOD_RETRIES = 3  # a 429 "retry after n" is waited out this many times before giving up
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.INLINE_QUERY]
SLOW_COMMANDS = {  # model work: worth a "typing…" (uploads show their own action while they upload)
    Command.ADD: ChatAction.UPLOAD_VOICE,
    Command.IDENTIFY: ChatAction.UPLOAD_VOICE,
    Command.SIMILAR: ChatAction.UPLOAD_VOICE,
    Command.SEARCH: ChatAction.TYPING,
}
BOT_USER = f"{PLATFORM}:bot"  # who the adapter's own requests come from
TOO_BIG = "Telegram only lets bots download files up to 20 MB. Send a shorter or compressed clip."
LATE = "<i>Sorry for the delay — I was restarting.</i>"
KEPT_PRESSES = frozenset({Command.MORE, Command.PLAY})  # button presses that post a new message: worth a replay
RETRY_FIRST = 1.0  # seconds before polling again after a failed getUpdates, doubling up to RETRY_MAX
RETRY_MAX = 30.0


class TelegramAdapter:
    """Polls Telegram inside the engine's lifespan: start() returns once polling, drain() and stop() undo it.

    Every update the bot answers in a chat is journaled in the inbox before the next getUpdates confirms it to
    Telegram, and marked done once answered; at start-up what an earlier run left pending is answered, late.
    """

    name = PLATFORM

    def __init__(
        self,
        door: Door,
        config: TelegramConfig,
        global_space: str = "global",
        group_messages_per_minute: float = GROUP_RATE,
        poll_timeout: float = POLL_TIMEOUT,
        inbox: Inbox | None = None,
    ) -> None:
        if not config.token:
            raise ConfigError("Telegram is enabled but has no token: set SHIRA_TELEGRAM_TOKEN or [telegram] token.")
        if config.webhook_url and not config.webhook_secret:
            raise ConfigError(
                "[telegram] webhook_url needs a webhook_secret (or SHIRA_TELEGRAM_WEBHOOK_SECRET), "
                "so that only Telegram can post updates to it."
            )
        self.door = door
        self.config = config
        self.global_space = global_space
        self.poll_timeout = poll_timeout
        self.inbox = inbox
        self.app: Application = (
            ApplicationBuilder()
            .token(config.token)
            .base_url(config.base_url)
            .base_file_url(config.base_file_url)
            .local_mode(config.local_mode)
            .rate_limiter(MessageRateLimiter(group_max_rate=group_messages_per_minute, max_retries=FLOOD_RETRIES))
            .updater(None)  # the adapter polls itself, so that nothing is confirmed before it is journaled
            # Stopping cancels a long poll mid-flight, which can leave the one default connection checked
            # out; a second one lets the final confirming getUpdates go through.
            .get_updates_connection_pool_size(2)
            .build()
        )
        self.context: BotContext | None = None
        self._offset: int | None = None  # the next getUpdates confirms to Telegram every update below this id
        self._poller: asyncio.Task[None] | None = None
        self._failing_since: float | None = None  # getUpdates has failed since then, with _poll_error
        self._poll_error = ""
        self._accepting: asyncio.Future[bool] | None = None  # a fetched batch being journaled
        self._work: set[asyncio.Task[None]] = set()  # updates being answered
        self._webhook = (
            WebhookServer(config.webhook_url, config.webhook_listen, config.webhook_secret, self._accept_posted)
            if config.webhook_url
            else None
        )

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
        log.info("telegram: %s as @%s", "webhook" if self._webhook else "polling", self.app.bot.username)

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
            reads_all_group_messages=bool(bot.can_read_all_group_messages),
        )
        try:
            await bot.set_my_commands([BotCommand(name, about) for name, about in MENU])
        except TelegramError as exc:
            log.warning("telegram: could not register the command menu: %s", exc)
        if self._webhook is not None:
            await self._replay()
            await self._webhook.start()
            await bot.set_webhook(
                self.config.webhook_url, secret_token=self.config.webhook_secret, allowed_updates=ALLOWED_UPDATES
            )
            return
        await bot.delete_webhook()  # getUpdates is refused while a webhook is set
        await self._replay()
        self._poller = asyncio.create_task(self._poll(), name="telegram-polling")

    async def drain(self, seconds: float) -> None:
        """Stop polling (Telegram keeps what comes meanwhile) and give the updates in hand `seconds` to be answered."""
        if self._webhook is not None:
            self._webhook.close()
        await self._stop_polling()
        await self._finish(seconds)

    def problem(self) -> str | None:
        """Why updates aren't arriving: the poller ended, or getUpdates keeps failing; None when all is well."""
        poller = self._poller
        if poller is None:
            return None  # not started, or stopped on purpose
        if poller.done():
            error = None if poller.cancelled() else poller.exception()
            return f"polling stopped: {type(error).__name__ if error else 'cancelled'}"
        if self._failing_since is not None:
            return f"getUpdates failing for {time.monotonic() - self._failing_since:.0f} s: {self._poll_error}"
        return None

    async def revive(self) -> None:
        """Start the poller again if it has ended; while it is failing it retries by itself, with backoff."""
        if self._poller is not None and self._poller.done():
            log.warning("telegram: starting polling again (%s)", self.problem())
            self._poller = asyncio.create_task(self._poll(), name="telegram-polling")

    async def stop(self) -> None:
        """Stop polling, drop the updates still in hand (the inbox keeps them), and close the connections."""
        if self._webhook is not None:
            await self._webhook.stop()
        await self._stop_polling()
        await self._finish(0)
        await self.app.shutdown()
        await self.app.bot.shutdown()  # closes the HTTP clients even when initialize() failed half-way
        log.info("telegram: stopped")

    # ----------------------------------------------------------------- polling

    async def _poll(self) -> None:
        """Long-poll getUpdates; each batch is journaled before the next call's offset confirms it."""
        delay = RETRY_FIRST
        while True:
            try:
                updates = await self.app.bot.get_updates(
                    offset=self._offset,
                    timeout=dtm.timedelta(seconds=self.poll_timeout),
                    allowed_updates=ALLOWED_UPDATES,
                )
            except TimedOut:
                continue  # a long poll that outlived its read timeout: poll again at once
            except TelegramError as exc:
                log.warning("telegram: getUpdates failed (%s); trying again in %.0f s", _why(exc), delay)
                self._failing(_why(exc))
            except Exception as exc:
                log.exception("telegram: getUpdates failed; trying again in %.0f s", delay)
                self._failing(type(exc).__name__)
            else:
                self._failing_since = None
                # Shielded: a batch once fetched is journaled and started even if stopping cancels the poll.
                self._accepting = asyncio.ensure_future(self._accept(updates))
                if await asyncio.shield(self._accepting):
                    delay = RETRY_FIRST
                    await asyncio.sleep(self.config.poll_interval)
                    continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _failing(self, error: str) -> None:
        """Note a failed getUpdates, for problem()."""
        self._failing_since = self._failing_since or time.monotonic()
        self._poll_error = error

    async def _accept(self, updates: list[Update]) -> bool:
        """Journal a fetched batch and move the offset past it, then start answering what no earlier run took on."""
        if not updates:
            return True
        kept = {str(u.update_id): u for u in updates if self._keeps(u)}
        fresh = set(kept)
        if self.inbox is not None and kept:
            try:
                fresh = await self.inbox.record(PLATFORM, {key: u.to_dict() for key, u in kept.items()})
            except Exception:
                log.exception("telegram: could not journal %d update(s); fetching them again", len(kept))
                return False
        self._offset = updates[-1].update_id + 1
        for update in updates:
            key = str(update.update_id)
            if key in kept and key not in fresh:
                log.info("telegram: update %s came again; an earlier run took it on, the inbox has it", key)
                continue
            self._spawn(self._process(update, key if key in kept else None, late=False))
        return True

    async def _accept_posted(self, data: dict[str, object]) -> bool:
        """Journal and start one update posted to the webhook; False if it could not be journaled."""
        try:
            update = Update.de_json(data, self.app.bot)
        except Exception:
            log.warning("telegram: a posted update can't be read; dropping it", exc_info=True)
            return True  # posting it again would not make it readable
        return await self._accept([update])

    def _keeps(self, update: Update) -> bool:
        """Whether an update goes in the inbox: those the bot answers in a chat.

        Inline queries don't: their answer is a pop-up that Telegram stops taking after a few seconds, long
        before a restart is over. Nor do page turns: the results they page through live in memory only.
        """
        if self.inbox is None or update.inline_query is not None:
            return False
        assert self.context is not None
        result = translate(update, self.context, self._fetcher)
        if update.callback_query is not None:
            return isinstance(result, Request) and result.command in KEPT_PRESSES
        return result is not None

    async def _stop_polling(self) -> None:
        """Stop the long poll, then confirm to Telegram every update fetched so far (all are journaled)."""
        poller, self._poller = self._poller, None
        if poller is None:
            return
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        if self._accepting is not None:
            await asyncio.gather(self._accepting, return_exceptions=True)
        if self._offset is None:
            return
        try:
            await self.app.bot.get_updates(
                offset=self._offset, limit=1, timeout=dtm.timedelta(0), allowed_updates=ALLOWED_UPDATES
            )
        except TelegramError as exc:
            log.warning("telegram: could not confirm the last updates (%s); the inbox knows them", _why(exc))

    async def _replay(self) -> None:
        """Start answering what earlier runs journaled and never answered; those answers say they are late."""
        if self.inbox is None:
            return
        entries = await self.inbox.pending(PLATFORM)
        if entries:
            log.info("telegram: answering %d update(s) left unanswered before the restart", len(entries))
        for entry in entries:
            try:
                update = Update.de_json(dict(entry.payload), self.app.bot)
            except Exception:
                log.warning("telegram: update %s in the inbox can't be read; dropping it", entry.key, exc_info=True)
                await self.inbox.done(PLATFORM, entry.key)
                continue
            self._spawn(self._process(update, entry.key, late=True))

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coroutine, name="telegram-update")
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def _finish(self, seconds: float) -> None:
        """Give the updates in hand `seconds` to be answered, then cancel the rest: they stay pending in the inbox."""
        if not self._work:
            return
        log.info("telegram: answering %d update(s) in hand (up to %.0f s)", len(self._work), seconds)
        _, unfinished = await asyncio.wait(set(self._work), timeout=seconds)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if unfinished:
            log.warning("telegram: %d update(s) not answered in time; the next start answers them", len(unfinished))

    async def send(self, space: str, reply: Reply) -> None:
        """Deliver a reply to a chat unprompted."""
        chat_id = chat_of(space)
        if chat_id is None:
            raise ValueError(f"not a Telegram space: {space}")
        try:
            await self._deliver(chat_id, reply, place=self._place(chat_id < 0))
        except Forbidden as exc:
            log.warning("telegram: can't write to chat %s (%s)", chat_id, exc.message)

    # ----------------------------------------------------------------- updates

    async def _process(self, update: Update, key: str | None, late: bool) -> None:
        """Answer one update; once it is settled, mark it done in the inbox (if it is journaled)."""
        settled = await self._on_update(update, late)
        if key is None or self.inbox is None or not settled:
            return
        try:
            await self.inbox.done(PLATFORM, key)
        except Exception:
            log.exception("telegram: could not mark update %s answered; the next start may answer it again", key)

    async def _on_update(self, update: Update, late: bool) -> bool:
        """Answer one update; False when the network failed, so the answer may never have arrived."""
        chat = update.effective_chat
        chat_id = chat.id if chat is not None else None
        try:
            await self._dispatch(update, late)
        except Forbidden as exc:
            log.warning("telegram: can't write to chat %s, the bot was blocked or removed (%s)", chat_id, exc.message)
        except BadRequest as exc:
            log.warning("telegram: API error in chat %s: %s", chat_id, exc.message)
        except NetworkError as exc:
            log.warning("telegram: network error answering in chat %s (%s); left for the next start", chat_id, exc)
            return False
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
        return True

    async def _dispatch(self, update: Update, late: bool) -> None:
        assert self.context is not None
        result = translate(update, self.context, self._fetcher)
        if isinstance(result, Request) and late:
            result = dataclasses.replace(result, replay=True)
        if update.inline_query is not None:
            await self._answer_inline(update.inline_query, result if isinstance(result, Request) else None)
        elif update.callback_query is not None:
            await self._answer_callback(update.callback_query, result if isinstance(result, Request) else None, late)
        elif update.message is not None and result is not None:
            await self._answer_message(update.message, result, late)

    async def _answer_message(self, message: Message, result: Request | Notice, late: bool) -> None:
        chat_id = message.chat.id
        if isinstance(result, Notice):
            text = render.escape(result.text)
            await self._send_text(chat_id, f"{LATE}\n{text}" if late else text, reply_to=message.message_id)
            return
        request = result
        if request.command is Command.MOVE:  # a service message: nothing to answer
            reply = await self.door.handle(request)
            log.info("telegram: chat %s became %s: %s", request.space, request.text, reply.text)
            return
        if needs_admin(request.command, request.text) and message.from_user is not None:
            request = dataclasses.replace(request, is_admin=await self._is_admin(message.chat, message.from_user.id))
        group = message.chat.type != ChatType.PRIVATE
        if request.command is Command.TIMELINE:  # one progress message, then the chart and the subtitles
            answer = TimelineAnswer(self.app.bot, self.door, chat_id, message.message_id, group, LATE if late else "")
            await answer.run(request)
            return
        async with self._chat_action(chat_id, SLOW_COMMANDS.get(request.command)):
            reply = await self._ask(request, audio=_wants_audio(request, group))
        log.debug("telegram: %s in %s -> %s", request.command, request.space, reply.kind)
        await self._deliver(chat_id, reply, reply_to=message.message_id, late=late, place=self._place(group))

    async def _answer_callback(self, query: CallbackQuery, request: Request | None, late: bool) -> None:
        message = query.message
        if request is None or message is None:
            if not late:
                await query.answer()
            return
        chat_id = message.chat.id
        group = message.chat.type != ChatType.PRIVATE
        reply = await self._ask(request, audio=request.command is Command.PLAY)
        if late:  # the press itself has expired on Telegram's side: answer in the chat
            await self._deliver(chat_id, reply, reply_to=message.message_id, late=True, place=self._place(group))
            return
        if reply.is_error:
            await query.answer(render.alert_text(reply), show_alert=True)
            return
        if request.command == Command.PAGE:
            rendered = render.render(reply, self._place(group))
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
        await self._deliver(chat_id, reply, reply_to=message.message_id, place=self._place(group))

    async def _answer_inline(self, query: InlineQuery, request: Request | None) -> None:
        if request is None:
            await query.answer([], cache_time=0, is_personal=True)
            return
        reply = await self.door.handle(request)
        results = render.inline_results(reply.hits)
        button = render.inline_button(reply, len(results))
        await query.answer(results, cache_time=10, is_personal=True, button=button)

    # ----------------------------------------------------------------- output

    def _place(self, group: bool) -> render.Place:
        """Where a reply goes, as the renderer needs to know it."""
        ctx = self.context
        if ctx is None:
            return render.Place(group=group)
        return render.Place(ctx.username, group, ctx.reads_all_group_messages)

    async def _deliver(
        self,
        chat_id: int,
        reply: Reply,
        reply_to: int | None = None,
        late: bool = False,
        place: render.Place | None = None,
    ) -> None:
        rendered = render.render(reply, place or self._place(chat_id < 0))
        text = rendered.text
        if late:  # the apology leads the answer, or goes first on its own when the answer has no room for it
            if text and len(text) + len(LATE) < render.MAX_TEXT:
                text = f"{LATE}\n{text}"
            else:
                await self._send_text(chat_id, LATE, reply_to=reply_to)
        if text:
            await self._send_text(chat_id, text, rendered.keyboard, reply_to)
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

    async def _ask(self, request: Request, audio: bool = True) -> Reply:
        """Ask the core, saying how large a playable file may be when the reply may send one."""
        return await self.door.handle(dataclasses.replace(request, upload_limit=PREVIEW_BYTES if audio else 0))

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


def _wants_audio(request: Request, group: bool) -> bool:
    """Whether the reply may send a sound: /play; in a private chat, the best match and a new sound's preview."""
    if request.command is Command.PLAY:
        return True
    if group:
        return False  # in groups, sounds are sent when someone presses ▶
    if request.command is Command.ADD:
        return not (request.audio and request.audio[0].platform_file_id)  # Telegram can't send it back by itself
    return request.command is Command.IDENTIFY


def _reply_to(message_id: int | None) -> ReplyParameters | None:
    if message_id is None:
        return None
    return ReplyParameters(message_id, allow_sending_without_reply=True)


def _why(exc: Exception) -> str:
    """What went wrong, never the token (an InvalidToken may quote it)."""
    if isinstance(exc, InvalidToken):
        return "Telegram rejected the bot token"
    return exc.message if isinstance(exc, TelegramError) else str(exc)
