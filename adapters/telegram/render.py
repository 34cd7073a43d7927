"""Pure rendering of core replies as Telegram HTML, inline keyboards and inline query results."""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQueryResult,
    InlineQueryResultCachedAudio,
    InlineQueryResultCachedVoice,
    InlineQueryResultsButton,
)

from adapters.telegram.translate import INLINE_RESULTS, parse_file_handle
from core.command_table import GROUP_EXAMPLE, Platform, help_lines, welcome_text
from core.messages import Added, AudioFile, Hit, Label, Reply, ReplyKind
from core.replies import count, exact_line

log = logging.getLogger(__name__)

MAX_TEXT = 4096  # Telegram's limit on a message's text
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64  # bytes
MAX_ALERT = 200  # characters in an answerCallbackQuery alert
MAX_NAME = 80

BUSY_TEXT = "I'm busy right now. Please try again in a moment."

PRIVATE_TIPS = (
    "Send me a voice note or an audio file and I'll tell you what it sounds like.",
    "Type @{username} thunder in any chat to share a sound from this chat's library.",
)
# Telegram's privacy mode (on by default) decides what a bot sees in a group.
GROUP_PRIVACY_ON = (
    "In groups I see only commands, replies to my messages and messages that mention @{username}. "
    "To ask about a voice note, reply /identify to it, or mention me in its caption. "
    "(As a group admin, or with privacy mode off in @BotFather, I'd also answer a caption “what sound is this?”.)"
)
GROUP_PRIVACY_OFF = (
    "I read this group's messages: a voice note captioned “what sound is this?” is enough. "
    "In a group I send sounds only when you press ▶."
)


@dataclass(frozen=True)
class Place:
    """Where a reply is shown: the bot's username, and whether it's a group (and what the bot sees there)."""

    username: str = ""
    group: bool = False
    reads_all: bool = False  # privacy mode off: every group message reaches the bot


@dataclass(frozen=True)
class Rendered:
    """A reply as Telegram payloads: an HTML message (if any) and audio to send after it."""

    text: str | None
    keyboard: InlineKeyboardMarkup | None = None
    audio: AudioFile | None = None


def callback_data(*parts: object) -> str | None:
    """Join parts with ':'; None when the result exceeds Telegram's 64-byte limit."""
    data = ":".join(str(p) for p in parts)
    if len(data.encode("utf-8")) > MAX_CALLBACK_DATA:
        log.warning("callback data too long to attach (%d bytes)", len(data.encode("utf-8")))
        return None
    return data


def play_data(sample_id: int) -> str | None:
    """Callback data for "play this sample"."""
    return callback_data("a", sample_id)


def more_data(sample_id: int) -> str | None:
    """Callback data for "more like this sample"."""
    return callback_data("m", sample_id)


def page_data(query_id: str, page: int) -> str | None:
    """Callback data for "show page n of this query"."""
    return callback_data("p", query_id, page)


def escape(text: str) -> str:
    """Escape text for Telegram's HTML parse mode."""
    return html.escape(text, quote=False)


def clip(escaped: str, limit: int = MAX_TEXT) -> str:
    """Cut escaped text (no tags) to the limit without leaving half an entity such as "&am"."""
    if len(escaped) <= limit:
        return escaped
    return re.sub(r"&[^;\s]*$", "", escaped[: limit - 1]) + "…"


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def clock(seconds: float) -> str:
    """m:ss for a time offset."""
    whole = max(0, int(round(seconds)))
    return f"{whole // 60}:{whole % 60:02d}"


def hit_line(number: int, hit: Hit) -> str:
    """One ranked hit: number, name, id, score and the matching span."""
    span = f"{clock(hit.start)}–{clock(hit.end)}"
    line = f"{number}. <b>{escape(_short(hit.name))}</b> #{hit.sample_id} · {hit.score:.2f} · {span}"
    if hit.tags:
        line += f"\n    <i>{escape(', '.join(hit.tags))}</i>"
    return line


def label_line(label: Label) -> str:
    """One zero-shot label with its probability."""
    return f"• {escape(label.label)} — {label.score * 100:.0f}%"


def _fit(head: list[str], lines: list[str], tail: list[str]) -> str:
    """Join as many lines as fit in one message."""
    kept: list[str] = []
    budget = MAX_TEXT - len("\n".join(head + tail)) - 8
    for line in lines:
        if len(line) + 1 > budget:
            kept.append("…")
            break
        kept.append(line)
        budget -= len(line) + 1
    return "\n".join(head + kept + tail)


def _button(text: str, data: str | None) -> InlineKeyboardButton | None:
    return InlineKeyboardButton(text, callback_data=data) if data is not None else None


def _row(buttons: list[InlineKeyboardButton | None]) -> list[InlineKeyboardButton]:
    return [b for b in buttons if b is not None]


def hits_keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    """▶ play hit N, ≈ more like hit N (numbered on from earlier pages), and previous/next page."""
    numbered = list(enumerate(reply.hits, reply.offset + 1))
    rows = [
        _row([_button(f"▶ {n}", play_data(h.sample_id)) for n, h in numbered]),
        _row([_button(f"≈ {n}", more_data(h.sample_id)) for n, h in numbered]),
    ]
    if reply.query_id:
        rows.append(
            _row(
                [
                    _button("« Prev", page_data(reply.query_id, reply.page - 1)) if reply.page > 0 else None,
                    _button("Next »", page_data(reply.query_id, reply.page + 1)) if reply.has_more else None,
                ]
            )
        )
    rows = [r for r in rows if r]
    return InlineKeyboardMarkup(rows) if rows else None


def render_results(reply: Reply) -> Rendered:
    """Ranked hits with a paginated keyboard."""
    title = f"<b>{escape(reply.title[:200] or 'Results')}</b>"
    if not reply.hits:
        empty = "No sounds found." if reply.page == 0 else "No more results."
        return Rendered(_fit([title], [escape(empty)], []))
    if reply.page or reply.has_more:
        title += f" · page {reply.page + 1}"
    lines = [hit_line(n, h) for n, h in enumerate(reply.hits, reply.offset + 1)]  # numbered like the buttons
    # No audio: in a busy group the ▶ buttons play on demand instead of posting a file per search.
    return Rendered(_fit([title], lines, []), hits_keyboard(reply))


def render_identify(reply: Reply, place: Place) -> Rendered:
    """Labels for "what sound is this?", the closest samples, and (not in groups: ▶ plays it) the best match."""
    head: list[str] = [f"<b>{escape(exact_line(reply.exact))}</b>", ""] if reply.exact is not None else []
    if reply.labels:
        head += ["<b>It sounds like</b>", *[label_line(label) for label in reply.labels]]
    lines: list[str] = []
    if reply.hits:
        lines = ["", "<b>Closest sounds here</b>", *[hit_line(n, h) for n, h in enumerate(reply.hits, 1)]]
    else:
        lines = ["", "No similar sounds in this library yet. Add some with /add."]
    if not head:
        head = ["<b>What I heard</b>"]
    audio = None if place.group else reply.audio
    return Rendered(_fit(head, lines, []), hits_keyboard(reply) if reply.hits else None, audio)


def render_added(added: Added, audio: AudioFile | None = None) -> Rendered:
    """The new sample's id, duration, tags, any duplicate notice, and its preview if Telegram doesn't have it."""
    name = f"<b>{escape(_short(added.name))}</b>"
    if added.duplicate:
        lines = [f"That exact file is already in this library as #{added.sample_id} {name}."]
    else:
        lines = [f"✅ Added {name} as #{added.sample_id} ({added.duration:.1f} s)."]
        if added.tags:
            lines.append(f"Tags: <i>{escape(', '.join(added.tags))}</i>")
    if added.near_duplicates:
        lines.append("⚠️ Very close to:")
        lines += [f"  #{h.sample_id} {escape(_short(h.name))} ({h.score:.2f})" for h in added.near_duplicates]
    play = _button("▶ Play", play_data(added.sample_id))
    more = _button("≈ More like this", more_data(added.sample_id))
    keyboard = InlineKeyboardMarkup([_row([play, more])])
    confirm = audio if audio is not None and audio.preview is not None and not audio.platform_file_id else None
    return Rendered(_fit([], lines, []), keyboard, confirm)


def render_help(place: Place) -> Rendered:
    """The commands that exist on Telegram, one a line, then what works in this kind of chat."""
    head = ["<b>shira finds sounds by meaning.</b>"]
    lines = [f"{escape(usage)} — {escape(about)}" for usage, about in help_lines(Platform.TELEGRAM)]
    name = escape(place.username or "this_bot")
    if place.group:
        tips = [GROUP_PRIVACY_OFF if place.reads_all else GROUP_PRIVACY_ON.format(username=name)]
    else:
        tips = [tip.format(username=name) for tip in PRIVATE_TIPS]
    return Rendered(_fit(head, lines, ["", *tips]))


def render_welcome(place: Place) -> Rendered:
    """Hello, and one thing to try in this kind of chat."""
    example = GROUP_EXAMPLE if place.group else ""
    return Rendered(escape(welcome_text(Platform.TELEGRAM, example)))


def render(reply: Reply, place: Place | None = None) -> Rendered:
    """Any core reply as Telegram payloads."""
    place = place or Place()
    if reply.kind == ReplyKind.RESULTS:
        return render_results(reply)
    if reply.kind == ReplyKind.IDENTIFY:
        return render_identify(reply, place)
    if reply.kind == ReplyKind.ADDED and reply.added is not None:
        return render_added(reply.added, None if place.group else reply.audio)
    if reply.kind == ReplyKind.AUDIO and reply.audio is not None:
        return Rendered(None, None, reply.audio)
    if reply.kind == ReplyKind.BUSY:
        return Rendered("⏳ " + escape(reply.text or BUSY_TEXT))
    if reply.kind == ReplyKind.HELP:
        return render_help(place)
    if reply.kind == ReplyKind.WELCOME:
        return render_welcome(place)
    text = escape(reply.text) if reply.text else "Done."
    if reply.kind == ReplyKind.ERROR:
        text = "⚠️ " + text
    return Rendered(clip(text))


def audio_caption(audio: AudioFile) -> str:
    """The caption under a played sample."""
    return f"▶ #{audio.sample_id} {_short(audio.title)}"[:MAX_CAPTION]


def alert_text(reply: Reply) -> str:
    """A short plain-text version of a reply for a callback-query alert."""
    text = reply.text or (BUSY_TEXT if reply.kind == ReplyKind.BUSY else "Something went wrong.")
    return text if len(text) <= MAX_ALERT else text[: MAX_ALERT - 1] + "…"


def inline_results(hits: tuple[Hit, ...]) -> list[InlineQueryResult]:
    """Cached voice/audio results for the hits that have a Telegram file_id, at most 50."""
    results: list[InlineQueryResult] = []
    seen: set[int] = set()
    for hit in hits:
        if hit.platform_file_id is None or hit.sample_id in seen:
            continue
        seen.add(hit.sample_id)
        kind, file_id = parse_file_handle(hit.platform_file_id)
        result_id = str(hit.sample_id)
        caption = f"#{hit.sample_id} {_short(hit.name)}"
        if kind == "voice":
            results.append(InlineQueryResultCachedVoice(result_id, file_id, _short(hit.name), caption=caption))
        else:
            results.append(InlineQueryResultCachedAudio(result_id, file_id, caption=caption))
        if len(results) == INLINE_RESULTS:
            break
    return results


def inline_button(reply: Reply, offered: int) -> InlineQueryResultsButton | None:
    """The button above inline results: it never says a library is empty when its sounds just weren't sent yet."""
    if reply.kind == ReplyKind.BUSY:
        return InlineQueryResultsButton("Busy, try again in a moment", start_parameter="help")
    unsent = list(dict.fromkeys(h.sample_id for h in reply.hits if h.platform_file_id is None))
    if unsent:
        found = count(len(unsent), "more sound") if offered else "Found " + count(len(unsent), "sound")
        text = f"{found}: tap to play #{unsent[0]} in our chat"
        return InlineQueryResultsButton(text[:64], start_parameter=f"play-{unsent[0]}")
    if not offered:
        return InlineQueryResultsButton("No sounds yet: add some in a private chat", start_parameter="add")
    return None
