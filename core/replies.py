"""Build Reply values with a complete plain-text rendering."""

from __future__ import annotations

from core import command_table
from core.messages import Added, AudioFile, ExactMatch, Hit, Label, Reply, ReplyKind, SpaceStats, Timeline

MAX_EVENT_LINES = 20  # events listed in the text; the subtitles have them all


def count(n: int, word: str, plural: str = "") -> str:
    """A number with its noun: "1 sound", "3 sounds", "1 person", "2 people"."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def help_for(platform: str) -> Reply:
    """The help of one platform: only the commands that exist there."""
    return Reply(ReplyKind.HELP, command_table.help_text(platform))


def welcome_for(platform: str) -> Reply:
    """The first answer a new user gets: what this is and one thing to try."""
    return Reply(ReplyKind.WELCOME, command_table.welcome_text(platform))


def clock(seconds: float) -> str:
    """Seconds as m:ss.s."""
    minutes, secs = divmod(max(0.0, seconds), 60)
    return f"{int(minutes)}:{secs:04.1f}"


def hit_line(rank: int, hit: Hit) -> str:
    """One result as a line of text."""
    span = f" @ {clock(hit.start)}-{clock(hit.end)}" if hit.end - hit.start < hit.duration - 0.05 else ""
    tags = f" [{', '.join(hit.tags[:3])}]" if hit.tags else ""
    return f"{rank}. #{hit.sample_id} {hit.name} ({hit.score:.2f}){span}{tags}"


def label_line(label: Label) -> str:
    """One label as a line of text."""
    return f"- {label.label} ({label.score:.0%})"


def results(
    title: str, hits: list[Hit], query_id: str, page: int, k: int, has_more: bool, audio: AudioFile | None
) -> Reply:
    """A page of search results, numbered on from earlier pages."""
    if not hits:
        text = f"{title}:\nNo sounds found." if page == 0 else f"{title}:\nNo more results."
    else:
        lines = [hit_line(page * k + i + 1, h) for i, h in enumerate(hits)]
        more = f"\n(page {page + 1}; more available)" if has_more else ""
        text = f"{title}:\n" + "\n".join(lines) + more
    return Reply(
        ReplyKind.RESULTS,
        text,
        title=title,
        hits=tuple(hits),
        query_id=query_id,
        page=page,
        offset=page * k,
        has_more=has_more,
        audio=audio,
    )


def exact_line(exact: ExactMatch) -> str:
    """The exact identification as a sentence."""
    if exact.offset >= 0:
        where = f"from {clock(exact.offset)}"
    else:
        where = f"starting {clock(-exact.offset)} before it"
    return f"That's #{exact.sample_id} {exact.name}, {where} (confidence {exact.confidence:.0%})."


def identify(
    labels: list[Label],
    hits: list[Hit],
    query_id: str,
    has_more: bool,
    audio: AudioFile | None,
    exact: ExactMatch | None = None,
) -> Reply:
    """The answer to "what sound is this?": the exact match if there is one, then labels, then similar sounds."""
    parts = [exact_line(exact), ""] if exact is not None else []
    parts += ["This sounds like:", *(label_line(label) for label in labels)]
    if hits:
        parts += ["", "Closest sounds in this library:", *(hit_line(i + 1, h) for i, h in enumerate(hits))]
    else:
        parts += ["", "This library has no sounds to compare with yet."]
    return Reply(
        ReplyKind.IDENTIFY,
        "\n".join(parts),
        title="This sounds like",
        labels=tuple(labels),
        exact=exact,
        hits=tuple(hits),
        query_id=query_id,
        has_more=has_more,
        audio=audio,
    )


def added(result: Added, audio: AudioFile | None = None) -> Reply:
    """The answer to an addition, with the sound itself when the platform asked for it."""
    if result.duplicate:
        text = f"Already in the library as #{result.sample_id} ({result.name})."
        return Reply(ReplyKind.ADDED, text, added=result, audio=audio)
    lines = [f"Added #{result.sample_id} {result.name} ({result.duration:.1f} s)."]
    if result.tags:
        lines.append("Tags: " + ", ".join(result.tags))
    if result.same_as is not None:
        same = result.same_as
        lines.append(f"It looks like a recording of #{same.sample_id} {same.name} ({same.confidence:.0%} sure).")
    for near in result.near_duplicates:
        lines.append(f"Very similar to #{near.sample_id} {near.name} ({near.score:.3f}).")
    return Reply(ReplyKind.ADDED, "\n".join(lines), added=result, audio=audio)


def stats(value: SpaceStats, queue_depth: int) -> Reply:
    """Library statistics."""
    text = (
        f"{count(value.samples, 'sound')}, {value.seconds / 60:.1f} minutes, "
        f"from {count(value.uploaders, 'person', 'people')}; {count(value.labels, 'own label')}. "
        f"Queue: {queue_depth} waiting."
    )
    return Reply(ReplyKind.STATS, text, stats=value)


def timeline(value: Timeline) -> Reply:
    """A timeline: its summary, then each event with its times."""
    from core.timeline import clock as at

    lines = [f"Timeline of {at(value.duration)}: {value.summary}."]
    lines += [f"{at(e.start)}–{at(e.end)}  {e.label} ({e.score:.0%})" for e in value.events[:MAX_EVENT_LINES]]
    if len(value.events) > MAX_EVENT_LINES:
        lines.append(f"… and {len(value.events) - MAX_EVENT_LINES} more in the subtitles.")
    return Reply(ReplyKind.TIMELINE, "\n".join(lines), title="Timeline", timeline=value)


def text(message: str) -> Reply:
    """A plain message."""
    return Reply(ReplyKind.TEXT, message)


def error(message: str, error_id: str | None = None) -> Reply:
    """A failure the user should see."""
    return Reply(ReplyKind.ERROR, message, error_id=error_id)


def busy(message: str) -> Reply:
    """The queue is full or the user is rate-limited."""
    return Reply(ReplyKind.BUSY, message)
