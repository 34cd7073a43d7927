"""A fake Telegram Bot API server on 127.0.0.1 that records every call python-telegram-bot makes."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import aiohttp
from aiohttp import web

DOWNLOAD_LIMIT = 20 * 1024 * 1024  # what the cloud Bot API lets bots download with getFile

# Parameters that python-telegram-bot sends as raw strings; every other form field is JSON-encoded.
STRING_PARAMS = frozenset(
    {
        "action",
        "audio",
        "callback_query_id",
        "caption",
        "description",
        "document",
        "file_id",
        "inline_message_id",
        "inline_query_id",
        "language_code",
        "next_offset",
        "parse_mode",
        "performer",
        "photo",
        "query",
        "text",
        "title",
        "url",
        "video",
        "voice",
    }
)

Json = dict[str, Any]


@dataclass(frozen=True)
class Upload:
    """A file the client uploaded as a multipart part."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Call:
    """One recorded Bot API call."""

    method: str
    params: Json
    files: dict[str, Upload] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when the server received it


@dataclass(frozen=True)
class StoredFile:
    """A file the server can hand out through getFile and the download route."""

    file_id: str
    file_unique_id: str
    data: bytes
    file_size: int
    file_path: str
    kind: str  # voice, audio, document, video, video_note, photo

    def as_voice(self, duration: int = 1) -> Json:
        """The Voice object a message carries."""
        return {**self._base(), "duration": duration, "mime_type": "audio/ogg"}

    def as_audio(self, file_name: str = "sound.mp3", duration: int = 1, title: str | None = None) -> Json:
        """The Audio object a message carries."""
        audio = {**self._base(), "duration": duration, "file_name": file_name, "mime_type": _mime_for(file_name)}
        if title:
            audio["title"] = title
        return audio

    def as_video(self, file_name: str = "video.mp4", duration: int = 1) -> Json:
        """The Video object a message carries."""
        size = {"width": 64, "height": 48, "duration": duration}
        return {**self._base(), **size, "file_name": file_name, "mime_type": _mime_for(file_name)}

    def as_photo(self) -> list[Json]:
        """The PhotoSize list a message carries (one size: the fake does not scale)."""
        return [{**self._base(), "width": 640, "height": 360}]

    def as_document(self, file_name: str, mime_type: str | None = None) -> Json:
        """The Document object a message carries."""
        return {**self._base(), "file_name": file_name, "mime_type": mime_type or _mime_for(file_name)}

    def _base(self) -> Json:
        return {"file_id": self.file_id, "file_unique_id": self.file_unique_id, "file_size": self.file_size}


@dataclass(frozen=True)
class _Hold:
    """Calls of a method (matching `when`) whose answers wait until `release` is set."""

    method: str
    when: Callable[[Json], bool] | None
    release: asyncio.Event


@dataclass
class _Failure:
    """An error the server answers a method with, a limited number of times."""

    method: str
    code: int
    description: str
    times: int
    when: Callable[[Json], bool] | None
    retry_after: int | None


def _mime_for(file_name: str) -> str:
    ext = file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
    return {
        "mp3": "audio/mpeg",
        "ogg": "audio/ogg",
        "oga": "audio/ogg",
        "opus": "audio/ogg",
        "wav": "audio/x-wav",
        "flac": "audio/flac",
        "m4a": "audio/mp4",
        "mp4": "video/mp4",
        "webm": "video/webm",
        "srt": "application/x-subrip",
        "png": "image/png",
        "txt": "text/plain",
        "pdf": "application/pdf",
    }.get(ext, "application/octet-stream")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def entities_for(text: str) -> list[Json]:
    """Bot-command and mention entities, as Telegram's clients would attach them (UTF-16 offsets)."""
    entities: list[Json] = []
    command = re.match(r"/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
    if command:
        entities.append({"type": "bot_command", "offset": 0, "length": _utf16_len(command.group(0))})
    for mention in re.finditer(r"(?<![\w/])@[A-Za-z0-9_]{5,32}", text):
        entities.append(
            {"type": "mention", "offset": _utf16_len(text[: mention.start()]), "length": _utf16_len(mention.group(0))}
        )
    return entities


def user(user_id: int, first_name: str = "User", username: str | None = None) -> Json:
    """A User object for a human."""
    found: Json = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username:
        found["username"] = username
    return found


def private_chat(of: Json) -> Json:
    """The private chat with a user (its id is the user's id)."""
    return {"id": of["id"], "type": "private", "first_name": of["first_name"]}


def group_chat(chat_id: int, title: str = "Group", kind: str = "supergroup") -> Json:
    """A supergroup chat (or, with kind="group", a basic group)."""
    return {"id": chat_id, "type": kind, "title": title}


def make_message(
    message_id: int,
    chat: Json,
    sender: Json,
    text: str | None = None,
    *,
    caption: str | None = None,
    voice: Json | None = None,
    audio: Json | None = None,
    document: Json | None = None,
    video_note: Json | None = None,
    video: Json | None = None,
    reply_to: Json | None = None,
    service: Json | None = None,
) -> Json:
    """A Message object as a real client would send it, entities included; service adds fields such as
    migrate_to_chat_id to make a service message."""
    message: Json = {"message_id": message_id, "date": int(time.time()), "chat": chat, "from": sender}
    if text is not None:
        message["text"] = text
        if entities := entities_for(text):
            message["entities"] = entities
    if caption is not None:
        message["caption"] = caption
        if entities := entities_for(caption):
            message["caption_entities"] = entities
    media = {"voice": voice, "audio": audio, "document": document, "video_note": video_note, "video": video}
    for key, value in media.items():
        if value is not None:
            message[key] = value
    if reply_to is not None:
        message["reply_to_message"] = reply_to
    return message | (service or {})


class FakeTelegram:
    """The Bot API over HTTP: push updates in, read the recorded calls out."""

    def __init__(
        self,
        token: str = "123456:TEST-token",
        bot_id: int = 4242,
        bot_username: str = "shira_test_bot",
        local_mode: bool = False,
        first_update_id: int = 1,
    ) -> None:
        self.token = token
        self.local_mode = local_mode
        self.bot: Json = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "Shira",
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": True,
        }
        self.calls: list[Call] = []
        self.files: dict[str, StoredFile] = {}
        self.messages: dict[tuple[int, int], Json] = {}  # every message the server knows, by (chat, id)
        self.chats: dict[int, Json] = {}
        self.members: dict[tuple[int, int], str] = {}
        self.confirmed = 0  # every update below this id has been acknowledged by an offset
        self.pushed: list[Json] = []  # every update pushed, in order
        self._updates: list[Json] = []
        self._update_ids = itertools.count(first_update_id)
        self._message_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._failures: list[_Failure] = []
        self._holds: list[_Hold] = []
        self._observers: list[Callable[[Call], None]] = []
        self._changed = asyncio.Condition()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.webhook: Json | None = None  # setWebhook's url and secret_token while one is set
        self.deliveries: list[tuple[int, int]] = []  # (update_id, HTTP status) of every webhook post
        self._delivery: asyncio.Task[None] | None = None

    # lifecycle

    async def start(self) -> FakeTelegram:
        """Serve on 127.0.0.1 with a free port."""
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_download)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Wake any long poll and shut the server down."""
        self._closing = True
        if self._delivery is not None:
            self._delivery.cancel()
            await asyncio.gather(self._delivery, return_exceptions=True)
        for hold in self._holds:
            hold.release.set()
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """What the client's base_url should be (the token is appended)."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """What the client's base_file_url should be (the token is appended)."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    # what tests set up

    def add_file(
        self, data: bytes, kind: str = "voice", file_size: int | None = None, suffix: str = "oga"
    ) -> StoredFile:
        """Register bytes that getFile and the download route will serve; file_size may claim more."""
        n = next(self._file_ids)
        stored = StoredFile(
            file_id=f"{kind[:2].upper()}fakefile{n}",
            file_unique_id=f"uniq{n}",
            data=data,
            file_size=len(data) if file_size is None else file_size,
            file_path=f"{kind}s/file_{n}.{suffix}",
            kind=kind,
        )
        self.files[stored.file_id] = stored
        return stored

    def set_member(self, chat_id: int, user_id: int, status: str) -> None:
        """Set what getChatMember answers: creator, administrator, member, restricted, left or kicked."""
        self.members[(chat_id, user_id)] = status

    def fail(
        self,
        method: str,
        description: str = "Forbidden: bot was blocked by the user",
        code: int = 403,
        times: int = 1,
        when: Callable[[Json], bool] | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next `times` calls of `method` (matching `when`) with an error."""
        self._failures.append(_Failure(method, code, description, times, when, retry_after))

    def hold(self, method: str, when: Callable[[Json], bool] | None = None) -> asyncio.Event:
        """Keep the answers to `method` (matching `when`) waiting until the returned event is set: a slow Telegram.

        Held calls are recorded as they arrive, so tests can wait for them; stopping the server releases them.
        """
        release = asyncio.Event()
        self._holds.append(_Hold(method, when, release))
        return release

    def observe(self, observer: Callable[[Call], None]) -> None:
        """Call observer(call) as each call arrives, before it is answered (a test may act at that very moment)."""
        self._observers.append(observer)

    def know(self, message: Json) -> None:
        """Make a message (and its chat) known without delivering it, as if sent before the test began."""
        self._remember_message(message)

    def push(self, update: Json) -> int:
        """Queue an update for the next getUpdates; its update_id is assigned here unless it brings one."""
        update = {"update_id": next(self._update_ids), **update}
        message = update.get("message")
        if message is not None:
            self._remember_message(message)
        self._updates.append(update)
        self.pushed.append(update)
        asyncio.get_running_loop().create_task(self._notify())
        return update["update_id"]

    def push_message(self, chat: Json, sender: Json, text: str | None = None, **parts: Any) -> Json:
        """Queue a message update built like a real client's (see make_message); returns the message."""
        message = make_message(next(self._message_ids), chat, sender, text, **parts)
        self.push({"message": message})
        return message

    def push_callback(self, sender: Json, message: Json, data: str) -> str:
        """Queue a press on an inline keyboard button of `message`; returns the callback query id."""
        query_id = f"cb{next(self._update_ids)}"
        self.push(
            {
                "callback_query": {
                    "id": query_id,
                    "from": sender,
                    "message": message,
                    "chat_instance": f"ci{message['chat']['id']}",
                    "data": data,
                }
            }
        )
        return query_id

    def push_inline(self, sender: Json, query: str, offset: str = "") -> str:
        """Queue an inline query (they carry no chat); returns its id."""
        query_id = f"iq{next(self._update_ids)}"
        self.push({"inline_query": {"id": query_id, "from": sender, "query": query, "offset": offset}})
        return query_id

    # what tests read back

    def mark(self) -> int:
        """A position in the call log; pass it as `since` to look only at later calls."""
        return len(self.calls)

    def calls_to(self, method: str, since: int = 0, chat_id: int | None = None) -> list[Call]:
        """Recorded calls of one method, optionally to one chat."""
        return [
            c
            for c in self.calls[since:]
            if c.method == method and (chat_id is None or c.params.get("chat_id") == chat_id)
        ]

    async def wait_for(
        self,
        method: str,
        match: Callable[[Call], bool] | None = None,
        since: int = 0,
        timeout: float = 20.0,
    ) -> Call:
        """The first call of `method` after `since` that satisfies `match`, waiting for it if needed."""

        def found() -> Call | None:
            for call in self.calls[since:]:
                if call.method == method and (match is None or match(call)):
                    return call
            return None

        async with asyncio.timeout(timeout):
            async with self._changed:
                while (call := found()) is None:
                    await self._changed.wait()
                return call

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until predicate() is true; it is checked again after every call the server receives."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def wait_confirmed(self, update_id: int, timeout: float = 20.0) -> None:
        """Wait until the client has acknowledged `update_id` with a later getUpdates offset."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                while self.confirmed <= update_id:
                    await self._changed.wait()

    @property
    def pending(self) -> list[Json]:
        """Updates the client has not acknowledged yet."""
        return [u for u in self._updates if u["update_id"] >= self.confirmed]

    def bot_messages(self, chat_id: int) -> list[Json]:
        """Messages the bot sent to a chat, oldest first."""
        return [
            m for (chat, _), m in sorted(self.messages.items()) if chat == chat_id and m["from"]["id"] == self.bot["id"]
        ]

    # HTTP

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params, files = await _read_params(request)
        call = Call(method, params, files)
        self.calls.append(call)
        for observer in self._observers:
            observer(call)
        await self._notify()
        for hold in self._holds:
            if hold.method == method and (hold.when is None or hold.when(params)):
                await hold.release.wait()
        failure = self._failure_for(method, params)
        if failure is not None:
            body: Json = {"ok": False, "error_code": failure.code, "description": failure.description}
            if failure.retry_after is not None:
                body["parameters"] = {"retry_after": failure.retry_after}
            return web.json_response(body, status=failure.code)
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return _error(404, "Not Found: method not found")
        try:
            result = await handler(params, files)
        except _ApiError as exc:
            return _error(exc.code, exc.description)
        return web.json_response({"ok": True, "result": result})

    async def _handle_download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        for stored in self.files.values():
            if stored.file_path == path:
                return web.Response(body=stored.data, content_type="application/octet-stream")
        return web.Response(status=404)

    def _failure_for(self, method: str, params: Json) -> _Failure | None:
        for failure in self._failures:
            if failure.method == method and failure.times > 0 and (failure.when is None or failure.when(params)):
                failure.times -= 1
                return failure
        return None

    # Bot API methods

    async def _api_getMe(self, params: Json, files: dict[str, Upload]) -> Json:
        return self.bot

    async def _api_deleteWebhook(self, params: Json, files: dict[str, Upload]) -> bool:
        self.webhook = None
        return True

    async def _api_setWebhook(self, params: Json, files: dict[str, Upload]) -> bool:
        self.webhook = {"url": params["url"], "secret_token": params.get("secret_token", "")}
        if self._delivery is None or self._delivery.done():
            self._delivery = asyncio.create_task(self._deliver_webhooks())
        await self._notify()
        return True

    async def _deliver_webhooks(self) -> None:
        """Post queued updates to the webhook in order, each until it gets a 2xx, as Telegram does."""
        async with aiohttp.ClientSession() as session:
            while not self._closing:
                async with self._changed:
                    while not (self._updates and self.webhook) and not self._closing:
                        await self._changed.wait()
                if self._closing:
                    return
                hook, update = self.webhook, self._updates[0]
                assert hook is not None
                headers = {"X-Telegram-Bot-Api-Secret-Token": hook["secret_token"]} if hook["secret_token"] else {}
                try:
                    async with session.post(hook["url"], json=update, headers=headers) as response:
                        status = response.status
                except aiohttp.ClientError:
                    status = 0  # nobody listening
                self.deliveries.append((update["update_id"], status))
                if 200 <= status < 300:
                    self._updates.pop(0)
                    self.confirmed = max(self.confirmed, update["update_id"] + 1)
                await self._notify()
                if not 200 <= status < 300:
                    await asyncio.sleep(0.05)

    async def _api_setMyCommands(self, params: Json, files: dict[str, Upload]) -> bool:
        return True

    async def _api_getMyCommands(self, params: Json, files: dict[str, Upload]) -> list[Json]:
        for call in reversed(self.calls):
            if call.method == "setMyCommands":
                return list(call.params.get("commands", []))
        return []

    async def _api_getUpdates(self, params: Json, files: dict[str, Upload]) -> list[Json]:
        if self.webhook is not None:
            raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(params.get("offset", 0) or 0)
        limit = int(params.get("limit", 100) or 100)
        wait = float(params.get("timeout", 0) or 0)
        if offset:
            self.confirmed = max(self.confirmed, offset)
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            await self._notify()
        deadline = asyncio.get_running_loop().time() + wait
        async with self._changed:
            while not self._updates and not self._closing:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    break
        return self._updates[:limit]

    async def _api_sendMessage(self, params: Json, files: dict[str, Upload]) -> Json:
        return self._new_message(params, {"text": params.get("text", "")})

    async def _api_sendVoice(self, params: Json, files: dict[str, Upload]) -> Json:
        stored = self._file_param(params, files, "voice")
        return self._new_message(params, {"voice": stored.as_voice()})

    async def _api_sendAudio(self, params: Json, files: dict[str, Upload]) -> Json:
        stored = self._file_param(params, files, "audio")
        name = files["audio"].filename if "audio" in files else stored.file_path.rsplit("/", 1)[-1]
        return self._new_message(params, {"audio": stored.as_audio(file_name=name, title=params.get("title"))})

    async def _api_sendDocument(self, params: Json, files: dict[str, Upload]) -> Json:
        stored = self._file_param(params, files, "document")
        name = files["document"].filename if "document" in files else stored.file_path.rsplit("/", 1)[-1]
        return self._new_message(params, {"document": stored.as_document(name)})

    async def _api_sendPhoto(self, params: Json, files: dict[str, Upload]) -> Json:
        stored = self._file_param(params, files, "photo")
        return self._new_message(params, {"photo": stored.as_photo()})

    async def _api_sendChatAction(self, params: Json, files: dict[str, Upload]) -> bool:
        self._chat(params)
        return True

    async def _api_getFile(self, params: Json, files: dict[str, Upload]) -> Json:
        stored = self.files.get(str(params.get("file_id")))
        if stored is None:
            raise _ApiError(400, "Bad Request: invalid file_id")
        if stored.file_size > DOWNLOAD_LIMIT and not self.local_mode:
            raise _ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }

    async def _api_answerInlineQuery(self, params: Json, files: dict[str, Upload]) -> bool:
        if len(params.get("results", [])) > 50:
            raise _ApiError(400, "Bad Request: too many inline query results specified")
        return True

    async def _api_answerCallbackQuery(self, params: Json, files: dict[str, Upload]) -> bool:
        return True

    async def _api_editMessageText(self, params: Json, files: dict[str, Upload]) -> Json:
        message = self._existing_message(params)
        markup = params.get("reply_markup")
        _check_text(params, "text", 4096)
        _check_markup(markup)
        if message.get("text") == params.get("text") and message.get("reply_markup") == markup:
            raise _ApiError(400, "Bad Request: message is not modified")
        message["text"] = params.get("text", "")
        message["edit_date"] = int(time.time())
        _set_markup(message, markup)
        return message

    async def _api_editMessageReplyMarkup(self, params: Json, files: dict[str, Upload]) -> Json:
        message = self._existing_message(params)
        _set_markup(message, params.get("reply_markup"))
        return message

    async def _api_getChatMember(self, params: Json, files: dict[str, Upload]) -> Json:
        chat = self._chat(params)
        user_id = int(params["user_id"])
        status = self.members.get((chat["id"], user_id), "member")
        member: Json = {"status": status, "user": {"id": user_id, "is_bot": False, "first_name": "User"}}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update(
                {
                    key: key in ("can_manage_chat", "can_delete_messages")
                    for key in (
                        "can_be_edited",
                        "is_anonymous",
                        "can_manage_chat",
                        "can_delete_messages",
                        "can_manage_video_chats",
                        "can_restrict_members",
                        "can_promote_members",
                        "can_change_info",
                        "can_invite_users",
                        "can_post_stories",
                        "can_edit_stories",
                        "can_delete_stories",
                    )
                }
            )
        elif status == "restricted":
            member.update({"is_member": True, "until_date": 0})
        elif status == "kicked":
            member["until_date"] = 0
        return member

    # helpers

    def _chat(self, params: Json) -> Json:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int) or chat_id not in self.chats:
            raise _ApiError(400, "Bad Request: chat not found")
        return self.chats[chat_id]

    def _remember_message(self, message: Json) -> None:
        chat = message["chat"]
        self.chats.setdefault(chat["id"], chat)
        self.messages[(chat["id"], message["message_id"])] = message
        if "reply_to_message" in message:
            self._remember_message(message["reply_to_message"])

    def _new_message(self, params: Json, content: Json) -> Json:
        chat = self._chat(params)
        _check_text(params, "text", 4096)
        _check_text(params, "caption", 1024)
        _check_markup(params.get("reply_markup"))
        message: Json = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": {k: self.bot[k] for k in ("id", "is_bot", "first_name", "username")},
            **content,
        }
        if params.get("caption"):
            message["caption"] = params["caption"]
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            replied = self.messages.get((chat["id"], reply.get("message_id")))
            if replied is not None:
                message["reply_to_message"] = replied
            elif not reply.get("allow_sending_without_reply"):
                raise _ApiError(400, "Bad Request: message to be replied not found")
        _set_markup(message, params.get("reply_markup"))
        self.messages[(chat["id"], message["message_id"])] = message
        return message

    def _existing_message(self, params: Json) -> Json:
        chat = self._chat(params)
        message = self.messages.get((chat["id"], params.get("message_id")))
        if message is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        return message

    def _file_param(self, params: Json, files: dict[str, Upload], name: str) -> StoredFile:
        if name in files:
            upload = files[name]
            suffix = upload.filename.rsplit(".", 1)[-1] if "." in upload.filename else "bin"
            return self.add_file(upload.data, kind=name, suffix=suffix)
        file_id = params.get(name)
        stored = self.files.get(str(file_id))
        if stored is None:
            raise _ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        if name != "document" and stored.kind != name:
            raise _ApiError(400, f"Bad Request: can't use file of type {stored.kind.title()} as {name.title()}")
        return stored


class _ApiError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


HTML_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "a",
        "code",
        "pre",
        "span",
        "tg-spoiler",
        "tg-emoji",
        "blockquote",
    }
)


class _TelegramHTML(HTMLParser):
    """Checks text the way Telegram's HTML parse mode does: known tags, properly nested."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problem: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_TAGS:
            self.problem = self.problem or f'unsupported start tag "{tag}"'
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.problem = self.problem or f'unmatched end tag "{tag}"'


def _check_text(params: Json, key: str, limit: int) -> None:
    text = params.get(key)
    if not isinstance(text, str):
        return
    if params.get("parse_mode") == "HTML":
        checker = _TelegramHTML()
        checker.feed(text)
        checker.close()
        if checker.problem or checker.open:
            raise _ApiError(400, f"Bad Request: can't parse entities: {checker.problem or 'unclosed tag'}")
        if re.search(r"&(?![a-zA-Z]+;|#\d+;|#x[0-9a-fA-F]+;)", text):
            raise _ApiError(400, "Bad Request: can't parse entities: unescaped &")
        text = re.sub(r"<[^>]+>", "", text)
    if not text.strip() and key == "text":
        raise _ApiError(400, "Bad Request: message text is empty")
    if len(text) > limit:
        raise _ApiError(400, f"Bad Request: {'message' if key == 'text' else 'caption'} is too long")


def _check_markup(markup: Any) -> None:
    if not isinstance(markup, dict):
        return
    for row in markup.get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")


def _error(code: int, description: str) -> web.Response:
    return web.json_response({"ok": False, "error_code": code, "description": description}, status=code)


def _set_markup(message: Json, markup: Any) -> None:
    if isinstance(markup, dict):
        message["reply_markup"] = markup
    else:
        message.pop("reply_markup", None)


def _decode(name: str, value: str) -> Any:
    if name in STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


async def _read_params(request: web.Request) -> tuple[Json, dict[str, Upload]]:
    """Form fields (JSON-decoded where PTB encodes them), uploaded files, or a JSON body."""
    params: Json = {key: _decode(key, value) for key, value in request.query.items()}
    files: dict[str, Upload] = {}
    if request.content_type == "application/json":
        params.update(await request.json())
    elif request.can_read_body:
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files[key] = Upload(value.filename, value.content_type, value.file.read())
            else:
                params[key] = _decode(key, str(value))
    return params, files
