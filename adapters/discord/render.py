"""Pure rendering of core Replies as Discord embeds and button rows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from adapters.timeline import clock, output_name
from core.command_table import EXAMPLES, Platform, help_lines, welcome_text
from core.messages import AudioFile, Command, Hit, Reply, ReplyKind
from core.replies import exact_line

BUTTON_PREFIX = "shira"
BUTTON_ID_PATTERN = rf"{BUTTON_PREFIX}:(?P<command>page|more|play):(?P<arg>[^\s]+)"
MAX_CUSTOM_ID = 100
MAX_PLAY_BUTTONS = 10
MAX_DESCRIPTION = 4096
MAX_FIELD = 1024
MAX_TITLE = 256

PRIMARY = 1
SECONDARY = 2

MARKDOWN = re.compile(r"([\\*_~|`>\[\]()<])")  # what Discord would read as formatting, a link or a mention
MENTION = re.compile(r"@(everyone|here)", re.IGNORECASE)
LINK = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(//)")

COLOURS = {
    ReplyKind.RESULTS: 0x5865F2,
    ReplyKind.IDENTIFY: 0xEB459E,
    ReplyKind.ADDED: 0x57F287,
    ReplyKind.REMOVED: 0x99AAB5,
    ReplyKind.STATS: 0x5865F2,
    ReplyKind.HELP: 0x5865F2,
    ReplyKind.WELCOME: 0x57F287,
    ReplyKind.AUDIO: 0xFEE75C,
    ReplyKind.TIMELINE: 0x3BA55C,
}


@dataclass(frozen=True)
class Button:
    """One button: what it says and the custom id sent back when clicked."""

    label: str
    custom_id: str
    style: int = SECONDARY


@dataclass(frozen=True)
class Rendered:
    """A reply in Discord's terms: text, an embed (as a dict), buttons and the sample to attach."""

    content: str = ""
    embed: dict[str, Any] | None = None
    buttons: tuple[Button, ...] = ()
    ephemeral: bool = False  # errors are only shown to the person who asked
    attach: AudioFile | None = None  # the sample to attach as a playable preview
    files: tuple[tuple[str, bytes], ...] = ()  # further files to upload (a timeline's chart and subtitles), by name


def button_id(command: Command, arg: str, page: int | None = None) -> str:
    """The custom id for a button: shira:<command>:<arg>[:<page>]."""
    base = f"{BUTTON_PREFIX}:{command.value}:{arg}"
    return base if page is None else f"{base}:{page}"


def parse_button_id(custom_id: str) -> tuple[Command, str, int] | None:
    """Command, argument and page from one of our custom ids; None for anything else."""
    match = re.fullmatch(BUTTON_ID_PATTERN, custom_id)
    if match is None:
        return None
    command, arg = Command(match["command"]), match["arg"]
    if command is not Command.PAGE:
        return (command, arg, 0) if arg.isdigit() else None
    query_id, _, page = arg.rpartition(":")
    if not query_id or not page.isdigit():
        return None
    return command, query_id, int(page)


def escape(text: str) -> str:
    """User text shown as typed: no bold, spoilers, code, quotes, masked or bare links, mentions or pings."""
    text = MARKDOWN.sub(r"\\\1", text)
    text = LINK.sub(r"\1\\:\2", text)
    return MENTION.sub("@\u200b\\1", text)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return (cut[:-1] if cut.endswith("\\") and not cut.endswith("\\\\") else cut) + "…"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else f"{int(value // 60)}:{value % 60:04.1f}"


def _span(hit: Hit) -> str:
    if hit.end - hit.start >= hit.duration - 0.05:
        return _seconds(hit.duration)
    return f"{hit.start:.1f}–{hit.end:.1f} s of {_seconds(hit.duration)}"


def hit_line(position: int, hit: Hit) -> str:
    """One hit: position, id, name, score, matching time span and tags."""
    line = f"**{position}.** `#{hit.sample_id}` **{escape(_clip(hit.name, 80))}** — {hit.score:.2f} · {_span(hit)}"
    if hit.tags:
        line += f"\n  {escape(', '.join(hit.tags[:5]))}"
    return line


def _hits_text(hits: tuple[Hit, ...], limit: int, offset: int = 0) -> str:
    lines: list[str] = []
    for position, hit in enumerate(hits, start=offset + 1):
        line = hit_line(position, hit)
        if sum(len(x) + 1 for x in lines) + len(line) > limit:
            break
        lines.append(line)
    return "\n".join(lines)


def _hit_buttons(reply: Reply) -> tuple[Button, ...]:
    buttons = [
        Button(f"▶ {position}", button_id(Command.PLAY, str(hit.sample_id)))
        for position, hit in enumerate(reply.hits[:MAX_PLAY_BUTTONS], start=reply.offset + 1)
    ]
    if reply.hits:
        top = reply.hits[0].sample_id
        buttons.append(Button(f"More like #{top}", button_id(Command.MORE, str(top)), PRIMARY))
    if reply.query_id and reply.page > 0:
        buttons.append(Button("◀ Previous", button_id(Command.PAGE, reply.query_id, reply.page - 1)))
    if reply.query_id and reply.has_more:
        buttons.append(Button("Next page ▶", button_id(Command.PAGE, reply.query_id, reply.page + 1), PRIMARY))
    return tuple(b for b in buttons if len(b.custom_id) <= MAX_CUSTOM_ID)


def _embed(
    reply: Reply, title: str, description: str = "", fields: list[dict[str, Any]] | None = None, footer: str = ""
) -> dict[str, Any]:
    embed: dict[str, Any] = {"title": _clip(title, MAX_TITLE), "color": COLOURS.get(reply.kind, 0)}
    if description:
        embed["description"] = _clip(description, MAX_DESCRIPTION)
    if fields:
        embed["fields"] = [f | {"value": _clip(f["value"], MAX_FIELD)} for f in fields if f["value"]]
    if footer:
        embed["footer"] = {"text": footer}
    return embed


def _field(name: str, value: str, inline: bool = False) -> dict[str, Any]:
    return {"name": name, "value": value, "inline": inline}


def _results(reply: Reply) -> Rendered:
    footer = f"Page {reply.page + 1}" + (" · more on the next page" if reply.has_more else "")
    description = _hits_text(reply.hits, MAX_DESCRIPTION, reply.offset) or "No matching sounds."
    embed = _embed(reply, escape(reply.title) or "Search results", description, footer=footer)
    return Rendered(embed=embed, buttons=_hit_buttons(reply), attach=reply.audio)


def _identify(reply: Reply) -> Rendered:
    labels = "\n".join(f"**{escape(label.label)}** — {label.score:.0%}" for label in reply.labels) or "No idea, sorry."
    fields = [_field("Sounds like", labels), _field("Closest samples", _hits_text(reply.hits, MAX_FIELD))]
    exact = exact_line(reply.exact) if reply.exact is not None else ""
    embed = _embed(reply, "What sound is this?", exact, fields=fields)
    return Rendered(embed=embed, buttons=_hit_buttons(reply), attach=reply.audio)


def _added(reply: Reply) -> Rendered:
    added = reply.added
    if added is None:
        return Rendered(content=reply.text)
    title = f"Already in the library: #{added.sample_id}" if added.duplicate else f"Added #{added.sample_id}"
    fields = [_field("Name", escape(_clip(added.name, 200)), True), _field("Duration", _seconds(added.duration), True)]
    if added.tags:
        fields.append(_field("Tags", escape(", ".join(added.tags)), True))
    if added.near_duplicates:
        fields.append(_field("Very similar to", _hits_text(added.near_duplicates, MAX_FIELD)))
    buttons = (Button("More like this", button_id(Command.MORE, str(added.sample_id)), PRIMARY),)
    return Rendered(embed=_embed(reply, title, fields=fields), buttons=buttons)


def _stats(reply: Reply) -> Rendered:
    stats = reply.stats
    if stats is None:
        return Rendered(embed=_embed(reply, "Library", reply.text))
    fields = [
        _field("Samples", str(stats.samples), True),
        _field("Audio", _seconds(stats.seconds), True),
        _field("Uploaders", str(stats.uploaders), True),
        _field("Own labels", str(stats.labels), True),
    ]
    return Rendered(embed=_embed(reply, "Library", fields=fields, footer="/labels lists them; admins change them"))


def _audio(reply: Reply) -> Rendered:
    audio = reply.audio
    if audio is None:
        return Rendered(content=reply.text)
    embed = _embed(reply, f"#{audio.sample_id} {escape(audio.title)}", _seconds(audio.duration))
    buttons = (Button("More like this", button_id(Command.MORE, str(audio.sample_id)), PRIMARY),)
    return Rendered(embed=embed, buttons=buttons, attach=audio)


def _timeline(reply: Reply, filename: str, upload_limit: int) -> Rendered:
    """A timeline: the summary and its events, the chart inside the embed, the chart and the subtitles as files
    (those that fit the upload limit, the chart first)."""
    timeline = reply.timeline
    if timeline is None:
        return Rendered(content=_clip(escape(reply.text), 2000))
    png, srt = output_name(filename, ".png"), output_name(filename, ".srt")
    files = within(((png, timeline.png), (srt, timeline.srt.encode("utf-8"))), upload_limit)
    _, _, events = reply.text.partition("\n")  # after the summary line: one line per event
    summary = escape(timeline.summary[:1].upper() + timeline.summary[1:]) + "."
    embed = _embed(reply, f"Timeline of {clock(timeline.duration)}", f"{summary}\n\n{escape(events)}".strip())
    names = [name for name, _ in files]
    if png in names:
        embed["image"] = {"url": f"attachment://{png}"}
    footer = f"{srt}: subtitles any video player shows" if srt in names else "The subtitles are too large to send here"
    embed["footer"] = {"text": footer}
    return Rendered(embed=embed, files=files)


def within(files: tuple[tuple[str, bytes], ...], limit: int) -> tuple[tuple[str, bytes], ...]:
    """The files, in order, that fit together in `limit` bytes (0: all of them)."""
    kept, total = [], 0
    for name, data in files:
        if limit and total + len(data) > limit:
            continue
        kept.append((name, data))
        total += len(data)
    return tuple(kept)


def help_embed() -> dict[str, Any]:
    """Every command that exists on Discord, from the one command table."""
    lines = [f"`{usage}` — {about}" for usage, about in help_lines(Platform.DISCORD)]  # the table's own words
    return {
        "title": "shira finds sounds by meaning",
        "description": _clip("\n".join(lines), MAX_DESCRIPTION),
        "color": COLOURS[ReplyKind.HELP],
        "footer": {"text": f"Try {EXAMPLES[Platform.DISCORD]}"},
    }


def welcome_embed() -> dict[str, Any]:
    """Hello, and one thing to try."""
    return {
        "title": "Hi! I'm shira",
        "description": welcome_text(Platform.DISCORD),
        "color": COLOURS[ReplyKind.WELCOME],
    }


def render(reply: Reply, filename: str = "", upload_limit: int = 0) -> Rendered:
    """The Discord form of a reply; a timeline's files are named after the upload (filename) and kept within
    upload_limit bytes (0: no limit)."""
    if reply.is_error:
        text = escape(reply.text)
        if reply.error_id and reply.error_id not in text:
            text += f" (error id {reply.error_id})"
        return Rendered(content=_clip(text, 2000), ephemeral=True)
    if reply.kind is ReplyKind.HELP:
        return Rendered(embed=help_embed())
    if reply.kind is ReplyKind.WELCOME:
        return Rendered(embed=welcome_embed())
    if reply.kind is ReplyKind.RESULTS:
        return _results(reply)
    if reply.kind is ReplyKind.IDENTIFY:
        return _identify(reply)
    if reply.kind is ReplyKind.ADDED:
        return _added(reply)
    if reply.kind is ReplyKind.STATS:
        return _stats(reply)
    if reply.kind is ReplyKind.AUDIO:
        return _audio(reply)
    if reply.kind is ReplyKind.TIMELINE:
        return _timeline(reply, filename, upload_limit)
    if reply.kind is ReplyKind.REMOVED:
        return Rendered(embed=_embed(reply, "Removed", escape(reply.text)))
    return Rendered(content=_clip(escape(reply.text), 2000))


def error(text: str) -> Rendered:
    """An ephemeral error the adapter found itself (before asking the core); it may quote a file name."""
    return Rendered(content=_clip(escape(text), 2000), ephemeral=True)
