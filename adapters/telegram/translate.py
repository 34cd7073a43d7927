"""Pure translation from Telegram updates to core requests; no network I/O happens here."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from telegram import CallbackQuery, InlineQuery, Message, MessageEntity, TelegramObject, Update
from telegram.constants import ChatType

from core.command_table import Platform, commands, entries
from core.files import is_audio_name
from core.messages import AudioRef, Command, Request
from core.phrases import asks_what_sound

PLATFORM = "telegram"
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile on the cloud Bot API refuses bigger files
INLINE_RESULTS = 50  # Telegram's cap on results per inline answer

REUSABLE_KINDS = frozenset({"voice", "audio"})  # file_ids the bot can send back as playable audio

Fetcher = Callable[[str], Callable[[], Awaitable[bytes]]]  # file_id -> a download the core may call


@dataclass(frozen=True)
class BotContext:
    """What translation needs to know about the bot and its configuration."""

    bot_id: int
    username: str
    local_mode: bool = False
    extra_spaces: tuple[str, ...] = ()  # e.g. ("global",) when the config enables the global library
    global_space: str = "global"  # always searched by inline queries
    reads_all_group_messages: bool = False  # getMe's can_read_all_group_messages: privacy mode is off


@dataclass(frozen=True)
class Notice:
    """A reply the adapter gives by itself, without asking the core (usage hints, refusals)."""

    text: str


@dataclass(frozen=True)
class Attachment:
    """An attached file as Telegram describes it."""

    kind: str  # voice, audio, video, video_note, document
    file_id: str
    filename: str
    size: int | None
    mime: str | None
    is_audio: bool
    duration: float | None = None


USAGE = {
    Command.ADD: "Send /add as the caption of a voice note or audio file, or reply /add to one. "
    "Words after /add become its description.",
    Command.SEARCH: "Tell me what to look for, for example: /search thunder",
    Command.IDENTIFY: "Send /identify as the caption of a voice note or audio file, or reply /identify to one.",
    Command.REMOVE: "Tell me which sample to remove, for example: /remove 12",
    Command.PLAY: "Tell me which sample to play, for example: /play 12",
    Command.MORE: "Tell me which sample to match, for example: /more 12",
    Command.TIMELINE: "Send /timeline as the caption of an audio file, a video or a voice note, or reply /timeline "
    "to one. Words after it choose what to listen for, for example: /timeline dog, siren",
}

COMMANDS: dict[str, Command] = commands(Platform.TELEGRAM)

# What setMyCommands registers, in menu order: every command the help lists, and nothing else.
MENU: tuple[tuple[str, str], ...] = tuple((e.name, e.summary) for e in entries(Platform.TELEGRAM))

PLAY_LINK = re.compile(r"play-(\d{1,12})")  # t.me/<bot>?start=play-12 plays sound 12 in the private chat


def space_of(chat_id: int) -> str:
    """The library key of a chat (a private chat's id is the user's id)."""
    return f"{PLATFORM}:{chat_id}"


def chat_of(space: str) -> int | None:
    """The chat id behind a Telegram library key, or None for other keys."""
    prefix = f"{PLATFORM}:"
    if not space.startswith(prefix):
        return None
    try:
        return int(space[len(prefix) :])
    except ValueError:
        return None


def user_of(user_id: int) -> str:
    """The core's user id for a Telegram user."""
    return f"{PLATFORM}:{user_id}"


def file_handle(kind: str, file_id: str) -> str:
    """The opaque handle stored in the core: the file_id plus how to send it back."""
    return f"{kind}:{file_id}"


def parse_file_handle(handle: str) -> tuple[str, str]:
    """(kind, file_id) from a stored handle; a bare file_id counts as audio."""
    kind, sep, file_id = handle.partition(":")
    if sep and kind in REUSABLE_KINDS:
        return kind, file_id
    return "audio", handle


def recording_name(message: Message, kind: str, words: str = "") -> str:
    """A name for a voice or video note, which has none: the words that came with it, else who and when."""
    if not words:
        words = _without_command(message.caption or "")
    if not words:
        chat = message.chat
        where = chat.title or (message.from_user.first_name if message.from_user else "") or "Telegram"
        when = message.date.strftime("%Y-%m-%d %H:%M")
        words = f"{'Voice note' if kind == 'voice' else 'Video note'}, {where}, {when}"
    return f"{' '.join(words.split())[:100]}.{'ogg' if kind == 'voice' else 'mp4'}"


def _without_command(caption: str) -> str:
    """A caption without a leading /command or a "what sound is this?" question."""
    text = re.sub(r"^/\w+(@\w+)?", "", caption.strip()).strip()
    return "" if asks_what_sound(text) else re.sub(r"@\w+", "", text).strip()


def attachment_of(message: Message | None) -> Attachment | None:
    """The voice note, audio file, video, video note or document a message carries, if any."""
    if message is None:
        return None
    if message.voice is not None:
        v = message.voice
        mime = v.mime_type or "audio/ogg"
        return Attachment("voice", v.file_id, recording_name(message, "voice"), v.file_size, mime, True, _seconds(v))
    if message.audio is not None:
        a = message.audio
        return Attachment("audio", a.file_id, a.file_name or "audio.mp3", a.file_size, a.mime_type, True, _seconds(a))
    if message.video is not None:
        w = message.video
        name = w.file_name or "video.mp4"
        return Attachment("video", w.file_id, name, w.file_size, w.mime_type or "video/mp4", True, _seconds(w))
    if message.video_note is not None:
        n = message.video_note
        name = recording_name(message, "video_note")
        return Attachment("video_note", n.file_id, name, n.file_size, "video/mp4", True, _seconds(n))
    if message.document is not None:
        d = message.document
        name = d.file_name or "file"
        return Attachment("document", d.file_id, name, d.file_size, d.mime_type, _looks_like_audio(name, d.mime_type))
    return None


def _seconds(media: TelegramObject) -> float | None:
    """A declared duration; read from the wire form to avoid PTB's int/timedelta deprecation warning."""
    value = media.to_dict().get("duration")
    return float(value) if isinstance(value, int | float) else None


def _looks_like_audio(name: str, mime: str | None) -> bool:
    if mime and (mime.startswith("audio/") or mime.startswith("video/")):
        return True
    return is_audio_name(name)


def audio_ref(attachment: Attachment, ctx: BotContext, fetcher: Fetcher) -> AudioRef | Notice:
    """An AudioRef the core can download, or a Notice explaining why this file can't be used."""
    if not attachment.is_audio:
        return Notice(
            f"“{attachment.filename}” doesn't look like an audio file. "
            "Send a voice note, an audio file or an audio document."
        )
    if not ctx.local_mode and attachment.size is not None and attachment.size > DOWNLOAD_LIMIT:
        return Notice(
            f"That file is {attachment.size / (1024 * 1024):.1f} MB, but Telegram only lets bots download files "
            "up to 20 MB. Send a shorter or compressed clip."
        )
    reusable = file_handle(attachment.kind, attachment.file_id) if attachment.kind in REUSABLE_KINDS else None
    return AudioRef(
        filename=attachment.filename,
        fetch=fetcher(attachment.file_id),
        size=attachment.size,
        duration=attachment.duration,
        mime=attachment.mime,
        platform_file_id=reusable,
    )


def translate(update: Update, ctx: BotContext, fetcher: Fetcher) -> Request | Notice | None:
    """Map any update to a Request, a Notice to send back, or None when the bot should stay quiet."""
    if update.message is not None:
        return translate_message(update.message, ctx, fetcher)
    if update.callback_query is not None:
        return translate_callback(update.callback_query, ctx)
    if update.inline_query is not None:
        return translate_inline(update.inline_query, ctx)
    return None


@dataclass(frozen=True)
class _Invocation:
    """A command at the start of a message."""

    name: str
    args: str
    target: str  # the bot named after '@', or ""


def _command(message: Message) -> _Invocation | None:
    """The command a message starts with, if any."""
    text = message.text or message.caption or ""
    entities = message.entities or message.caption_entities
    if not entities or entities[0].type != MessageEntity.BOT_COMMAND or entities[0].offset != 0:
        return None
    parsed = message.parse_entities() if message.text else message.parse_caption_entities()
    token = parsed[entities[0]]
    name, _, target = token[1:].partition("@")
    return _Invocation(name.lower(), text[len(token) :].strip(), target.lower())


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _mentions_bot(message: Message, ctx: BotContext) -> bool:
    parsed = message.parse_entities() if message.text else message.parse_caption_entities()
    for entity, value in parsed.items():
        if entity.type == MessageEntity.MENTION and value[1:].lower() == ctx.username.lower():
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == ctx.bot_id:
            return True
    return False


def _without_mention(text: str, ctx: BotContext) -> str:
    return re.sub(rf"@{re.escape(ctx.username)}\b", " ", text, flags=re.IGNORECASE).strip()


def _request(message: Message, ctx: BotContext, command: Command, text: str = "", **extra: object) -> Request:
    sender = message.from_user
    assert sender is not None
    return Request(
        platform=PLATFORM,
        space=space_of(message.chat.id),
        user=user_of(sender.id),
        command=command,
        text=text,
        user_name=sender.full_name,
        extra_spaces=ctx.extra_spaces,
        **extra,  # type: ignore[arg-type]
    )


def _with_audio(
    message: Message, ctx: BotContext, fetcher: Fetcher, command: Command, attachment: Attachment, text: str = ""
) -> Request | Notice:
    ref = audio_ref(attachment, ctx, fetcher)
    if isinstance(ref, Notice):
        return ref
    return _request(message, ctx, command, text, audio=(ref,))


def translate_message(message: Message, ctx: BotContext, fetcher: Fetcher) -> Request | Notice | None:
    """A message: a command, a question about a sound, a plain-text search, or nothing for the bot."""
    sender = message.from_user
    if message.migrate_to_chat_id or message.migrate_from_chat_id:
        return _migration(message, ctx)
    if sender is None or sender.is_bot:
        return None
    private = message.chat.type == ChatType.PRIVATE
    reply = message.reply_to_message
    replies_to_bot = reply is not None and reply.from_user is not None and reply.from_user.id == ctx.bot_id
    here = attachment_of(message)
    replied = None if replies_to_bot else attachment_of(reply)

    invocation = _command(message)
    if invocation is not None:
        if invocation.target and invocation.target != ctx.username.lower():
            return None  # a command for another bot
        return _translate_command(message, ctx, fetcher, invocation, here or replied, private)

    text = (message.text or message.caption or "").strip()
    asking = asks_what_sound(text)
    if not private:
        addressed = replies_to_bot or _mentions_bot(message, ctx) or (asking and (here or replied) is not None)
        if not addressed:
            return None
        text = _without_mention(text, ctx)
    # In a group the question is about the replied-to sound; in private, only when asked or wordless.
    attachment = here or (replied if not private or asking or not text else None)
    if attachment is not None:
        return _with_audio(message, ctx, fetcher, Command.IDENTIFY, attachment)
    if asking and not private:
        return Notice(USAGE[Command.IDENTIFY])
    if text:
        return _request(message, ctx, Command.SEARCH, text)
    if private:
        return None
    return _request(message, ctx, Command.HELP)


def _migration(message: Message, ctx: BotContext) -> Request:
    """A group became a supergroup: its library moves to the new chat id (both service messages say so)."""
    if message.migrate_to_chat_id:
        old, new = message.chat.id, message.migrate_to_chat_id
    else:
        old, new = int(message.migrate_from_chat_id or 0), message.chat.id
    sender = message.from_user
    return Request(
        platform=PLATFORM,
        space=space_of(old),
        user=user_of(sender.id) if sender is not None else f"{PLATFORM}:bot",
        command=Command.MOVE,
        text=space_of(new),
        is_admin=True,  # Telegram itself sends these service messages; no user can forge one
    )


def _translate_command(
    message: Message,
    ctx: BotContext,
    fetcher: Fetcher,
    invocation: _Invocation,
    attachment: Attachment | None,
    private: bool,
) -> Request | Notice | None:
    args = invocation.args
    command = COMMANDS.get(invocation.name)
    if command is None:
        if private or invocation.target:
            return Notice(f"I don't know /{invocation.name}. Try /help to see what I can do.")
        return None  # in a group, an unknown bare command is probably for another bot
    if command == Command.ADD:
        if attachment is None:
            return Notice(USAGE[Command.ADD])
        if args and attachment.kind in ("voice", "video_note"):  # "/add door creak" names the recording
            attachment = dataclasses.replace(attachment, filename=recording_name(message, attachment.kind, args))
        return _with_audio(message, ctx, fetcher, Command.ADD, attachment, args)
    if command == Command.START and private and (link := PLAY_LINK.fullmatch(args)):
        play = _request(message, ctx, Command.PLAY, link.group(1))  # from an inline answer, which searches global
        return dataclasses.replace(play, extra_spaces=tuple(dict.fromkeys((ctx.global_space, *ctx.extra_spaces))))
    if command in (Command.IDENTIFY, Command.SIMILAR):
        if attachment is None:
            return Notice(USAGE[Command.IDENTIFY])
        return _with_audio(message, ctx, fetcher, command, attachment)
    if command == Command.TIMELINE:
        if attachment is None:
            return Notice(USAGE[Command.TIMELINE])
        return _with_audio(message, ctx, fetcher, command, attachment, args)
    if command == Command.SEARCH:
        if args:
            return _request(message, ctx, Command.SEARCH, args)
        if attachment is not None:
            return _with_audio(message, ctx, fetcher, Command.SIMILAR, attachment)
        return Notice(USAGE[Command.SEARCH])
    if command in (Command.REMOVE, Command.PLAY, Command.MORE):
        sample = args.lstrip("#").strip()
        if not _is_id(sample):
            return Notice(USAGE[command])
        return _request(message, ctx, command, sample)
    return _request(message, ctx, command, args)


def translate_callback(query: CallbackQuery, ctx: BotContext) -> Request | None:
    """A keyboard press: "p:<query_id>:<page>" next page, "m:<id>" more like this, "a:<id>" play."""
    message = query.message
    if message is None or not query.data:
        return None
    kind, _, rest = query.data.partition(":")
    base = {
        "platform": PLATFORM,
        "space": space_of(message.chat.id),
        "user": user_of(query.from_user.id),
        "user_name": query.from_user.full_name,
        "extra_spaces": ctx.extra_spaces,
    }
    if kind == "p":
        query_id, _, page = rest.rpartition(":")
        if query_id and _is_id(page):
            return Request(command=Command.PAGE, text=query_id, page=int(page), **base)  # type: ignore[arg-type]
    elif kind in ("m", "a") and _is_id(rest):
        command = Command.MORE if kind == "m" else Command.PLAY
        return Request(command=command, text=rest, **base)  # type: ignore[arg-type]
    return None


def translate_inline(query: InlineQuery, ctx: BotContext) -> Request | None:
    """An inline query searches the global library and the user's private-chat library."""
    text = query.query.strip()
    if not text:
        return None
    return Request(
        platform=PLATFORM,
        space=space_of(query.from_user.id),
        user=user_of(query.from_user.id),
        command=Command.SEARCH,
        text=text,
        user_name=query.from_user.full_name,
        k=INLINE_RESULTS,
        extra_spaces=tuple(dict.fromkeys((ctx.global_space, *ctx.extra_spaces))),
    )
