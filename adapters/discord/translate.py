"""Pure translation from what Discord sends (commands, button clicks, messages) to core Requests."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from adapters.discord.render import parse_button_id
from core.command_table import Platform, commands
from core.files import is_audio_name
from core.messages import AudioRef, Command, Request

PLATFORM = "discord"
VOICE_MESSAGE_FLAG = 1 << 13  # MessageFlags.IS_VOICE_MESSAGE
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
MANAGE_MESSAGES = 1 << 13
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes a bot may upload when Discord does not say
AUDIO_MIME_PREFIXES = ("audio/", "video/")
AUDIO_MIMES = frozenset({"application/ogg", "application/x-ogg"})

SLASH_COMMANDS: Mapping[str, Command] = commands(Platform.DISCORD)  # from the one command table
SETTINGS = frozenset({Command.LABELS})  # change how the library behaves for everyone: Manage Server or the role

Fetch = Callable[[str], Awaitable[bytes]]  # downloads one attachment URL


@dataclass(frozen=True)
class Author:
    """Who invoked the bot, and where."""

    user_id: int
    name: str
    guild_id: int | None = None  # None in a DM
    permissions: int = 0  # resolved channel permissions of the member
    role_ids: tuple[int, ...] = ()
    role_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attachment:
    """The parts of a Discord attachment the adapter uses."""

    filename: str
    url: str
    size: int
    content_type: str | None = None
    duration: float | None = None  # voice messages declare their length


@dataclass(frozen=True)
class Place:
    """Where a plain message was posted, for deciding whether to answer it."""

    is_dm: bool
    channel_id: int
    parent_id: int | None = None  # the parent channel of a thread


def space_of(author: Author) -> str:
    """The library key: the guild's, or the user's own in a DM."""
    if author.guild_id is None:
        return f"{PLATFORM}:dm:{author.user_id}"
    return f"{PLATFORM}:guild:{author.guild_id}"


def user_of(author: Author) -> str:
    """The core's user key."""
    return f"{PLATFORM}:{author.user_id}"


def is_admin(author: Author, command: Command = Command.REMOVE, admin_role: str = "") -> bool:
    """Whether the author counts as an admin for this command.

    In a DM the library is the author's own. In a guild, removing anyone's sound takes Manage Messages; changing
    the library's settings (its labels) takes Manage Server or the configured admin role.
    """
    if author.guild_id is None:
        return True
    if author.permissions & ADMINISTRATOR:
        return True
    if command in SETTINGS:
        return bool(author.permissions & MANAGE_GUILD) or has_role(author, admin_role)
    return bool(author.permissions & MANAGE_MESSAGES)


def has_role(author: Author, role: str) -> bool:
    """Whether the author has a role, given by name (any case) or id; False when no role is given."""
    wanted = role.strip()
    if not wanted:
        return False
    if wanted.isdigit() and int(wanted) in author.role_ids:
        return True
    return wanted.casefold() in (name.casefold() for name in author.role_names)


def may_add(author: Author, add_role: str) -> bool:
    """Whether the author may /add: anyone when no role is configured, and anyone in their own DM library."""
    if not add_role.strip() or author.guild_id is None:
        return True
    return has_role(author, add_role)


def is_audio(attachment: Attachment) -> bool:
    """True for attachments that look like audio (by content type, else by file name)."""
    mime = (attachment.content_type or "").split(";")[0].strip().lower()
    if mime:
        return mime.startswith(AUDIO_MIME_PREFIXES) or mime in AUDIO_MIMES
    return is_audio_name(PurePosixPath(attachment.filename).name)


def not_audio_message(attachment: Attachment) -> str:
    """The friendly answer for an attachment that is not audio."""
    kind = attachment.content_type or "an unknown type"
    return (
        f"“{attachment.filename}” doesn't look like audio ({kind}). "
        "Please attach a sound file such as OGG, MP3, WAV or FLAC."
    )


def first_audio(attachments: Sequence[Attachment]) -> Attachment | None:
    """The first audio attachment, if any."""
    return next((a for a in attachments if is_audio(a)), None)


def audio_ref(attachment: Attachment, fetch: Fetch) -> AudioRef:
    """An AudioRef the core can size-check first and download later."""
    return AudioRef(
        filename=attachment.filename,
        fetch=functools.partial(fetch, attachment.url),
        size=attachment.size,
        duration=attachment.duration,
        mime=attachment.content_type,
    )


def request(
    author: Author, command: Command, global_space: str | None, admin_role: str = "", **fields: object
) -> Request:
    """A Request from this author; the global library is searched too when enabled, but never changed."""
    extra = (global_space,) if global_space and command not in (Command.ADD, Command.REMOVE) else ()
    return Request(
        platform=PLATFORM,
        space=space_of(author),
        user=user_of(author),
        command=command,
        user_name=author.name,
        is_admin=is_admin(author, command, admin_role),
        extra_spaces=extra,
        **fields,  # type: ignore[arg-type]
    )


def slash_request(
    name: str,
    options: Mapping[str, object],
    author: Author,
    fetch: Fetch,
    global_space: str | None = None,
    admin_role: str = "",
) -> Request:
    """A slash command with its options (file options already converted to Attachment) as a Request."""
    command = SLASH_COMMANDS[name]
    if command is Command.LABELS:
        words = (str(options.get("action") or ""), " ".join(str(options.get("label") or "").split()))
        return request(author, command, global_space, admin_role, text=" ".join(w for w in words if w))
    file = options.get("file")
    audio = (audio_ref(file, fetch),) if isinstance(file, Attachment) else ()
    if command is Command.SEARCH:
        k = options.get("k")
        return request(
            author,
            command,
            global_space,
            text=str(options.get("query", "")).strip(),
            k=k if isinstance(k, int) else None,
        )
    if command is Command.ADD:
        return request(author, command, global_space, audio=audio, text=str(options.get("description") or "").strip())
    if command is Command.SIMILAR:
        return request(author, command, global_space, audio=audio)
    if command is Command.TIMELINE:
        labels = " ".join(str(options.get("labels") or "").split())
        return request(author, command, global_space, audio=audio, text=labels)
    if command is Command.REMOVE:
        return request(author, command, global_space, text=str(options.get("id", "")).strip().lstrip("#"))
    return request(author, command, global_space)


def identify_request(
    author: Author, attachments: Sequence[Attachment], fetch: Fetch, global_space: str | None = None
) -> Request | None:
    """ "What sound is this?" for the first audio attachment, or None when there is none."""
    found = first_audio(attachments)
    if found is None:
        return None
    return request(author, Command.IDENTIFY, global_space, audio=(audio_ref(found, fetch),))


def button_request(custom_id: str, author: Author, global_space: str | None = None) -> Request | None:
    """A click on one of our buttons as a Request; None for custom ids that are not ours."""
    parsed = parse_button_id(custom_id)
    if parsed is None:
        return None
    command, arg, page = parsed
    return request(author, command, global_space, text=arg, page=page)


def wants_message(
    flags: int,
    place: Place,
    mentions_bot: bool,
    attachments: Sequence[Attachment],
    watch_channels: Sequence[int] = (),
) -> bool:
    """Whether a plain message should get a "what sound is this?" answer.

    Voice messages (or audio files) in a DM, or in a watched guild channel when they mention the bot.
    Without the message-content intent Discord only delivers attachments in exactly these cases.
    """
    if not (flags & VOICE_MESSAGE_FLAG or first_audio(attachments) is not None):
        return False
    if place.is_dm:
        return True
    if not mentions_bot:
        return False
    return not watch_channels or place.channel_id in watch_channels or place.parent_id in watch_channels


SLASH = "slash"
IDENTIFY = "identify"  # the "What sound is this?" message command
BUTTON = "button"
MESSAGE = "message"  # a voice message or audio file sent to the bot


@dataclass(frozen=True)
class Taken:
    """One interaction or message the bot took on, as the plain data its inbox keeps: enough to translate it
    again after a restart (the same translation as the first time) and to answer it there."""

    kind: str  # SLASH, IDENTIFY, BUTTON or MESSAGE
    author: Author
    upload_limit: int  # bytes an answer may attach
    name: str = ""  # SLASH: the command
    options: Mapping[str, str | int | None] = field(default_factory=dict)  # SLASH: its options, the file aside
    attachments: tuple[Attachment, ...] = ()  # the file option, or the attachments of the message
    custom_id: str = ""  # BUTTON
    application_id: int = 0  # an interaction is answered through its webhook: the application and the token
    token: str = field(default="", repr=False)  # a secret for as long as it lasts (15 minutes): never logged
    ephemeral: bool = False  # the answer is shown to the asker only
    in_place: bool = False  # a page turn edits the message its button is on
    channel_id: int = 0  # MESSAGE: replied to where it was sent
    message_id: int = 0

    @property
    def is_interaction(self) -> bool:
        """Interactions have a token; messages are replied to instead."""
        return self.kind != MESSAGE

    def request(self, fetch: Fetch, global_space: str | None = None, admin_role: str = "") -> Request | None:
        """The request it asks for; None when there is nothing for the core."""
        if self.kind == SLASH:
            options = dict(self.options) | ({"file": self.attachments[0]} if self.attachments else {})
            return slash_request(self.name, options, self.author, fetch, global_space, admin_role)
        if self.kind in (IDENTIFY, MESSAGE):
            return identify_request(self.author, self.attachments, fetch, global_space)
        if self.kind == BUTTON:
            return button_request(self.custom_id, self.author, global_space)
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON object for the inbox."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Taken:
        """Back from to_json; raises KeyError, TypeError or ValueError on anything else."""
        author = dict(data["author"])
        author["role_ids"] = tuple(int(r) for r in author.get("role_ids", ()))
        author["role_names"] = tuple(str(r) for r in author.get("role_names", ()))
        fields = dict(data)
        fields["author"] = Author(**author)
        fields["options"] = dict(data.get("options") or {})
        fields["attachments"] = tuple(Attachment(**a) for a in data.get("attachments") or ())
        return cls(**fields)
