"""The one table of chat commands: names, arguments, descriptions, platforms and who may run them.

Help text, Telegram's command menu, Discord's command registration and the console's parser all read it,
so what a user is told exists is what exists on that platform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from core.messages import Command


class Platform(StrEnum):
    """Where a command can be typed."""

    CONSOLE = "console"
    TELEGRAM = "telegram"
    DISCORD = "discord"


class Who(StrEnum):
    """Who may run a command."""

    ANYONE = "anyone"
    UPLOADER = "only who added it, or an admin"
    ADMIN = "admins make changes"  # anyone may look; changes are for admins


class Style(StrEnum):
    """How a command is invoked."""

    SLASH = "slash"  # /name args
    MESSAGE = "message"  # Discord: Apps menu on a message


@dataclass(frozen=True)
class Option:
    """One argument as a typed option (Discord) and in usage lines."""

    name: str
    description: str  # at most 100 characters
    required: bool = True


@dataclass(frozen=True)
class Entry:
    """One chat command."""

    name: str  # what users type after "/", or a Discord message command's title
    command: Command
    summary: str  # one line of at most 100 characters: help, menus and slash-command descriptions
    usage: Mapping[Platform, str]  # what follows the name, per platform; the platforms it exists on
    hint: Mapping[Platform, str] = field(default_factory=dict)  # how to use it there, after the summary
    options: tuple[Option, ...] = ()  # Discord's typed options, in order
    who: Who = Who.ANYONE
    aliases: tuple[str, ...] = ()
    style: Style = Style.SLASH

    def on(self, platform: str) -> bool:
        """Whether this command exists on a platform."""
        return platform in self.usage

    def line(self, platform: str) -> str:
        """How to type it there: "/search <words>", or "Apps → What sound is this?"."""
        if self.style is Style.MESSAGE:
            return f"Apps → {self.name}"
        return f"/{self.name} {self.usage.get(Platform(platform), '')}".rstrip()

    def about(self, platform: str) -> str:
        """The summary with the platform's hint and who may run it."""
        text = self.summary
        hint = self.hint.get(Platform(platform))
        if hint:
            text += f" ({hint})"
        if self.who is not Who.ANYONE:
            text += f"; {self.who.value}"
        return text


C, T, D = Platform.CONSOLE, Platform.TELEGRAM, Platform.DISCORD

TABLE: tuple[Entry, ...] = (
    Entry(
        "search",
        Command.SEARCH,
        "Find sounds by describing them",
        {C: "<words>", T: "<words>", D: "query [k]"},
        hint={C: "or type the words alone"},
        options=(
            Option("query", "What to listen for, e.g. 'dog barking in the rain'"),
            Option("k", "How many results (1–50)", required=False),
        ),
        aliases=("s",),
    ),
    Entry(
        "add",
        Command.ADD,
        "Add a sound to this library",
        {C: "PATH [description]", T: "[description]", D: "file [description]"},
        hint={T: "as the caption of a voice note or audio file, or in reply to one"},
        options=(Option("file", "An audio file"), Option("description", "What it is (helps text search)", False)),
    ),
    Entry(
        "identify",
        Command.IDENTIFY,
        "What sound is this? Likely labels and the closest sounds here",
        {C: "PATH", T: ""},
        hint={T: "in reply to a voice note or audio file"},
        aliases=("what",),
    ),
    Entry(
        "What sound is this?",
        Command.IDENTIFY,
        "Likely labels and the closest sounds here",
        {D: ""},
        hint={D: "on a message with a voice message or audio file"},
        style=Style.MESSAGE,
    ),
    Entry(
        "similar",
        Command.SIMILAR,
        "Find sounds that sound like another one",
        {C: "PATH", T: "", D: "file"},
        hint={T: "in reply to a voice note or audio file"},
        options=(Option("file", "An audio file"),),
    ),
    Entry(
        "timeline",
        Command.TIMELINE,
        "Which sounds occur when in a long recording: a chart and subtitles",
        {C: "PATH [label, label…]", T: "[label, label…]", D: "file [labels]"},
        hint={
            T: "as the caption of an audio file, a video or a voice note, or in reply to one",
            D: "on an audio file or a video; labels such as 'dog, siren' choose what to listen for",
        },
        options=(
            Option("file", "A long recording or a video"),
            Option("labels", "What to listen for, comma-separated, e.g. 'dog, siren'", required=False),
        ),
    ),
    Entry("play", Command.PLAY, "Send sound n to listen to", {C: "<n>", T: "<n>"}),
    Entry("more", Command.MORE, "More sounds like sound n", {C: "<n>", T: "<n>"}),
    Entry("next", Command.PAGE, "The next page of the last results", {C: ""}, aliases=("n",)),
    Entry(
        "remove",
        Command.REMOVE,
        "Remove a sound",
        {C: "<n>", T: "<n>", D: "id"},
        options=(Option("id", "The sound's number, e.g. 12"),),
        who=Who.UPLOADER,
    ),
    Entry(
        "labels",
        Command.LABELS,
        "This library's own labels for “what sound is this?”",
        {C: "[add|remove <label>]", T: "[add|remove <label>]", D: "[action] [label]"},
        options=(
            Option("action", "add or remove; leave empty to list them", False),
            Option("label", "The label, e.g. 'door slam'", False),
        ),
        who=Who.ADMIN,
    ),
    Entry("stats", Command.STATS, "How big this library is", {C: "", T: "", D: ""}),
    Entry("help", Command.HELP, "What I can do here", {C: "", T: "", D: ""}),
)

# Commands a platform understands but doesn't list (Telegram opens every private chat with /start).
HIDDEN: Mapping[Platform, Mapping[str, Command]] = {T: {"start": Command.START}, C: {"start": Command.START}}

# The first thing to try, in a welcome.
EXAMPLES: Mapping[Platform, str] = {
    C: "/add ~/sounds/rain.wav, then type: rain",
    T: "send me a voice note and I'll tell you what it sounds like, or try /search rain",
    D: "/search rain, or on a voice message: Apps → What sound is this?",
}
GROUP_EXAMPLE = "reply /identify to a voice note, or try /search rain"


def platform_of(name: str) -> Platform | None:
    """The Platform called name, or None (the operator's command line has no chat commands)."""
    try:
        return Platform(name)
    except ValueError:
        return None


def entries(platform: str) -> tuple[Entry, ...]:
    """The commands that exist on a platform, in help order."""
    return tuple(e for e in TABLE if e.on(platform))


def entry(name: str, platform: str) -> Entry:
    """One command by name (or alias) on a platform; KeyError if it doesn't exist there."""
    for found in entries(platform):
        if name == found.name or name in found.aliases:
            return found
    raise KeyError(f"/{name} does not exist on {platform}")


def commands(platform: str) -> dict[str, Command]:
    """Every name and alias a platform understands, hidden ones included, with what it asks the core."""
    known = {name: e.command for e in entries(platform) if e.style is Style.SLASH for name in (e.name, *e.aliases)}
    found = platform_of(platform)
    return known | dict(HIDDEN.get(found, {}) if found else {})


def help_lines(platform: str) -> list[tuple[str, str]]:
    """(how to type it, what it does) for each command of a platform."""
    return [(e.line(platform), e.about(platform)) for e in entries(platform)]


def help_text(platform: str) -> str:
    """The plain-text help of a platform: one command a line, without column alignment."""
    lines = [f"{usage} — {about}" for usage, about in help_lines(platform)]
    return "shira finds sounds by meaning.\n" + "\n".join(lines)


def welcome_text(platform: str, example: str = "") -> str:
    """The plain-text welcome of a platform, with one thing to try."""
    example = example or EXAMPLES.get(platform_of(platform) or C, EXAMPLES[C])
    return f"Hi! I'm shira: I find sounds by meaning. To start, {example}. /help lists everything."


def needs_admin(command: Command, text: str) -> bool:
    """Whether a request changes a library for everyone (or may remove another's sound): adapters look up admins."""
    if command is Command.REMOVE:
        return True
    if command is Command.LABELS:
        return text.split(maxsplit=1)[:1] in (["add"], ["remove"])
    return False
