"""Pure Discord translation (events -> Request) and rendering (Reply -> embed, buttons)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import discord
from hypothesis import given
from hypothesis import strategies as st

from adapters.discord.render import (
    MAX_CUSTOM_ID,
    MAX_DESCRIPTION,
    button_id,
    parse_button_id,
    render,
)
from adapters.discord.translate import (
    ADMINISTRATOR,
    BUTTON,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    MESSAGE,
    SLASH,
    VOICE_MESSAGE_FLAG,
    Attachment,
    Author,
    Place,
    Taken,
    button_request,
    identify_request,
    is_admin,
    is_audio,
    may_add,
    slash_request,
    space_of,
    user_of,
    wants_message,
)
from core.messages import Added, AudioFile, Command, Hit, Label, Reply, ReplyKind, SpaceStats, Timeline

GUILD = 42
MEMBER = Author(user_id=7, name="Ann", guild_id=GUILD, permissions=0, role_ids=(900,), role_names=("Sound Adders",))
MOD = Author(user_id=8, name="Mo", guild_id=GUILD, permissions=MANAGE_MESSAGES)
DM_USER = Author(user_id=9, name="Dee")
OGG = Attachment("bark.ogg", "http://127.0.0.1:1/attachments/1/2/bark.ogg", 1234, "audio/ogg")
PNG = Attachment("cat.png", "http://127.0.0.1:1/attachments/1/3/cat.png", 99, "image/png")


class RecordingFetch:
    """Records the URLs it is asked for and returns fixed bytes."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    async def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return url.encode()


def hit(sample_id: int, score: float = 0.5, start: float = 0.0, end: float = 10.0, duration: float = 30.0) -> Hit:
    return Hit(
        sample_id, f"sound {sample_id}", score, start, end, duration, f"discord:guild:{GUILD}", tags=("dog", "bark")
    )


def audio(sample_id: int, title: str = "dog bark") -> AudioFile:
    return AudioFile(sample_id, title, Path(f"/tmp/{sample_id}.ogg"), 3.0)


def ids(rendered_buttons: tuple) -> list[str]:
    return [b.custom_id for b in rendered_buttons]


# spaces, users and permissions


def test_spaces_and_users() -> None:
    assert space_of(MEMBER) == f"discord:guild:{GUILD}"
    assert space_of(DM_USER) == "discord:dm:9"
    assert user_of(MEMBER) == "discord:7"


def test_admin_needs_manage_messages_in_a_guild() -> None:
    assert is_admin(MOD)
    assert is_admin(Author(1, "a", GUILD, ADMINISTRATOR))
    assert not is_admin(MEMBER)
    assert is_admin(Author(1, "a", None, 0))  # a DM library is the user's own; requests only change their space


def test_library_settings_need_manage_server_or_the_admin_role() -> None:
    assert not is_admin(MOD, Command.LABELS)  # Manage Messages moderates sounds, not settings
    assert is_admin(Author(1, "a", GUILD, MANAGE_GUILD), Command.LABELS)
    assert is_admin(MEMBER, Command.LABELS, admin_role="sound adders") and is_admin(MEMBER, Command.LABELS, "900")
    assert not is_admin(MEMBER, Command.LABELS, admin_role="")
    labels = slash_request(
        "labels", {"action": "add", "label": "  door   slam "}, MEMBER, RecordingFetch(), None, "900"
    )
    assert (labels.command, labels.text, labels.is_admin) == (Command.LABELS, "add door slam", True)
    assert slash_request("labels", {}, MOD, RecordingFetch()).text == ""


def test_add_role_by_name_or_id() -> None:
    assert may_add(MEMBER, "")
    assert may_add(MEMBER, "sound adders")
    assert may_add(MEMBER, "900")
    assert not may_add(MEMBER, "DJ")
    assert not may_add(MOD, "Sound Adders")
    assert may_add(DM_USER, "DJ")  # a DM library is the user's own


# attachments


def test_is_audio() -> None:
    assert is_audio(OGG)
    assert is_audio(Attachment("clip.mp4", "u", 1, "video/mp4"))
    assert is_audio(Attachment("x.ogg", "u", 1, "application/ogg"))
    assert is_audio(Attachment("voice-message.ogg", "u", 1, None))
    assert not is_audio(PNG)
    assert not is_audio(Attachment("notes.txt", "u", 1, "text/plain; charset=utf-8"))
    assert not is_audio(Attachment("notes.txt", "u", 1, None))


# slash commands


def test_search_request() -> None:
    req = slash_request("search", {"query": "  dog barking ", "k": 7}, MEMBER, RecordingFetch(), "global")
    assert (req.command, req.text, req.k) == (Command.SEARCH, "dog barking", 7)
    assert (req.platform, req.space, req.user, req.user_name) == (
        "discord",
        f"discord:guild:{GUILD}",
        "discord:7",
        "Ann",
    )
    assert req.extra_spaces == ("global",)
    assert not req.is_admin
    assert slash_request("search", {"query": "x", "k": None}, MEMBER, RecordingFetch()).k is None
    assert slash_request("search", {"query": "x"}, MEMBER, RecordingFetch()).extra_spaces == ()


def test_voice_message_declares_its_duration() -> None:
    voice = Attachment("voice-message.ogg", "u", 10, "audio/ogg", duration=4.5)
    req = identify_request(MEMBER, [voice], RecordingFetch())
    assert req is not None and req.audio[0].duration == 4.5


def test_add_request_downloads_lazily() -> None:
    fetch = RecordingFetch()
    req = slash_request("add", {"file": OGG, "description": " a dog "}, MEMBER, fetch, "global")
    assert (req.command, req.text) == (Command.ADD, "a dog")
    assert req.extra_spaces == ()  # additions never go to the global library
    (ref,) = req.audio
    assert (ref.filename, ref.size, ref.mime) == ("bark.ogg", 1234, "audio/ogg")
    assert fetch.urls == []
    assert asyncio.run(ref.fetch()) == OGG.url.encode()
    assert fetch.urls == [OGG.url]


def test_remove_request() -> None:
    req = slash_request("remove", {"id": " #12 "}, MOD, RecordingFetch(), "global")
    assert (req.command, req.text, req.is_admin, req.extra_spaces) == (Command.REMOVE, "12", True, ())


def test_other_slash_requests() -> None:
    similar = slash_request("similar", {"file": OGG}, DM_USER, RecordingFetch())
    assert (similar.command, similar.space, len(similar.audio)) == (Command.SIMILAR, "discord:dm:9", 1)
    assert slash_request("stats", {}, MEMBER, RecordingFetch()).command is Command.STATS
    assert slash_request("help", {}, MEMBER, RecordingFetch()).command is Command.HELP


def test_identify_takes_first_audio() -> None:
    req = identify_request(MEMBER, [PNG, OGG], RecordingFetch(), "global")
    assert req is not None
    assert (req.command, req.audio[0].filename, req.extra_spaces) == (Command.IDENTIFY, "bark.ogg", ("global",))
    assert identify_request(MEMBER, [PNG], RecordingFetch()) is None
    assert identify_request(MEMBER, [], RecordingFetch()) is None


# buttons


def test_button_requests_round_trip() -> None:
    page = button_request(button_id(Command.PAGE, "ab12cd34", 3), MEMBER)
    assert page is not None and (page.command, page.text, page.page) == (Command.PAGE, "ab12cd34", 3)
    play = button_request(button_id(Command.PLAY, "17"), MEMBER)
    assert play is not None and (play.command, play.text) == (Command.PLAY, "17")
    more = button_request(button_id(Command.MORE, "17"), MEMBER, "global")
    assert more is not None and (more.command, more.extra_spaces) == (Command.MORE, ("global",))


def test_foreign_or_malformed_custom_ids() -> None:
    for custom_id in (
        "",
        "other:page:x:1",
        "shira:remove:1",
        "shira:play:abc",
        "shira:page:abc",
        "shira:page::2",
        "shira:page:q:-1",
        "shira:more: 1",
    ):
        assert parse_button_id(custom_id) is None, custom_id


@given(st.text("abcdef0123456789", min_size=1, max_size=40), st.integers(0, 10_000))
def test_page_ids_parse_back(query_id: str, page: int) -> None:
    assert parse_button_id(button_id(Command.PAGE, query_id, page)) == (Command.PAGE, query_id, page)


# plain messages


def test_wants_message() -> None:
    voice = [Attachment("voice-message.ogg", "u", 10, "audio/ogg")]
    guild = Place(is_dm=False, channel_id=5)
    dm = Place(is_dm=True, channel_id=6)
    assert wants_message(VOICE_MESSAGE_FLAG, dm, False, voice)
    assert wants_message(0, dm, False, voice)  # an audio file in a DM
    assert not wants_message(0, dm, False, [PNG])
    assert not wants_message(VOICE_MESSAGE_FLAG, guild, False, voice)
    assert wants_message(VOICE_MESSAGE_FLAG, guild, True, voice)
    assert not wants_message(VOICE_MESSAGE_FLAG, guild, True, voice, watch_channels=(99,))
    assert wants_message(VOICE_MESSAGE_FLAG, guild, True, voice, watch_channels=(5,))
    assert wants_message(VOICE_MESSAGE_FLAG, Place(False, 11, parent_id=5), True, voice, watch_channels=(5,))
    assert not wants_message(0, guild, True, [PNG])


# rendering


def test_results_embed_and_buttons() -> None:
    hits = (hit(3, 0.91, 2.0, 4.5, 30.0), hit(5, 0.42, 0.0, 3.0, 3.0))
    reply = Reply(
        ReplyKind.RESULTS,
        'Results for "dog":\n...',
        title='Results for "dog"',
        hits=hits,
        query_id="q1",
        page=0,
        has_more=True,
        audio=audio(3),
    )
    out = render(reply)
    assert out.embed is not None and not out.ephemeral
    assert out.embed["title"] == 'Results for "dog"'
    description = out.embed["description"]
    assert "`#3`" in description and "0.91" in description and "2.0–4.5 s of 30.0 s" in description
    assert "`#5`" in description and "0.42" in description and "3.0 s" in description
    assert ids(out.buttons) == ["shira:play:3", "shira:play:5", "shira:more:3", "shira:page:q1:1"]
    assert out.attach == audio(3)
    assert out.embed["footer"]["text"] == "Page 1 · more on the next page"
    assert discord.Embed.from_dict(out.embed).description == description


def test_results_last_page_has_previous_not_next() -> None:
    out = render(Reply(ReplyKind.RESULTS, "Results", hits=(hit(8),), query_id="q1", page=2, has_more=False))
    assert ids(out.buttons) == ["shira:play:8", "shira:more:8", "shira:page:q1:1"]
    assert out.attach is None


def test_empty_results() -> None:
    out = render(Reply(ReplyKind.RESULTS, "Results", query_id="q", page=0))
    assert out.buttons == ()
    assert out.embed is not None and out.embed["description"] == "No matching sounds."


def test_identify_embed() -> None:
    reply = Reply(
        ReplyKind.IDENTIFY,
        "This sounds like:",
        labels=(Label("dog", 0.62), Label("cat", 0.2)),
        hits=(hit(4),),
        query_id="q9",
        has_more=True,
        audio=audio(4),
    )
    out = render(reply)
    assert out.embed is not None
    fields = {f["name"]: f["value"] for f in out.embed["fields"]}
    assert "**dog** — 62%" in fields["Sounds like"]
    assert "`#4`" in fields["Closest samples"]
    assert ids(out.buttons) == ["shira:play:4", "shira:more:4", "shira:page:q9:1"]
    assert out.attach == audio(4)


def test_added_stats_audio_help() -> None:
    added = render(Reply(ReplyKind.ADDED, "Added", added=Added(12, "kick", 1.5, ("drum",), near_duplicates=(hit(2),))))
    assert added.embed is not None and added.embed["title"] == "Added #12"
    assert {f["name"] for f in added.embed["fields"]} == {"Name", "Duration", "Tags", "Very similar to"}
    assert ids(added.buttons) == ["shira:more:12"]
    duplicate = render(Reply(ReplyKind.ADDED, "Already", added=Added(12, "kick", 1.5, duplicate=True)))
    assert duplicate.embed is not None and "Already" in duplicate.embed["title"]

    stats = render(Reply(ReplyKind.STATS, "s", stats=SpaceStats("discord:guild:42", 3, 75.0, 2, 1)))
    assert stats.embed is not None
    assert {f["name"]: f["value"] for f in stats.embed["fields"]}["Samples"] == "3"
    assert "/labels" in stats.embed["footer"]["text"]  # the labels counted are ones Discord users can change

    played = render(Reply(ReplyKind.AUDIO, "#4 dog bark", audio=audio(4)))
    assert played.attach == audio(4) and ids(played.buttons) == ["shira:more:4"]

    helped = render(Reply(ReplyKind.HELP, "shira finds sounds"))
    assert helped.embed is not None and helped.embed["description"].startswith("`/search query [k]` — ")


def test_errors_are_ephemeral_text() -> None:
    out = render(Reply(ReplyKind.ERROR, "There is no sound #99 in this library."))
    assert out.ephemeral and out.embed is None and out.buttons == ()
    assert out.content == "There is no sound #99 in this library."
    assert render(Reply(ReplyKind.BUSY, "Busy")).ephemeral
    with_id = render(Reply(ReplyKind.ERROR, "Sorry", error_id="abcd"))
    assert with_id.content == "Sorry (error id abcd)"
    already = render(Reply(ReplyKind.ERROR, "Sorry (error id abcd).", error_id="abcd"))
    assert already.content.count("abcd") == 1


def test_limits_are_respected() -> None:
    many = tuple(hit(i) for i in range(1, 200))
    out = render(Reply(ReplyKind.RESULTS, "R", hits=many, query_id="x" * 120, has_more=True))
    assert out.embed is not None and len(out.embed["description"]) <= MAX_DESCRIPTION
    assert all(len(b.custom_id) <= MAX_CUSTOM_ID for b in out.buttons)
    assert "shira:page" not in " ".join(ids(out.buttons))  # a too-long query id gets no page button
    assert len(out.buttons) <= 25
    assert len(render(Reply(ReplyKind.ERROR, "x" * 5000)).content) <= 2000


def test_attachment_names_are_safe_keep_letters_and_have_one_suffix() -> None:
    from core.files import attachment_name

    assert attachment_name(4, "../dog bark?!", ".ogg") == "4-dog_bark.ogg"
    assert attachment_name(5, "???", ".mp3") == "5-sound.mp3"
    assert attachment_name(2, "Wind_chime.ogg", ".ogg") == "2-Wind_chime.ogg"
    assert attachment_name(14, "desktop-login.wav", ".ogg") == "14-desktop-login.ogg"
    assert attachment_name(8, "Mangoré.ogg", ".ogg") == "8-Mangoré.ogg"


def test_what_the_inbox_keeps_rebuilds_the_same_request_and_hides_the_token() -> None:
    clip = Attachment("rain.ogg", "https://cdn.example/a/1/rain.ogg", 2048, "audio/ogg", 3.5)
    added = Taken(
        SLASH, MEMBER, 8_000_000, name="add", options={"description": "rain"}, attachments=(clip,),
        application_id=11, token="secret-interaction-token",
    )  # fmt: skip
    again = Taken.from_json(json.loads(json.dumps(added.to_json())))
    assert again == added and "secret-interaction-token" not in repr(again)
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return b"OggS"

    request = again.request(fetch, "global")
    assert request is not None and (request.command, request.text, request.space) == (
        Command.ADD,
        "rain",
        space_of(MEMBER),
    )
    assert request.audio[0].size == 2048 and request.extra_spaces == ()  # the global library is never added to
    asyncio.run(request.audio[0].fetch())
    assert fetched == [clip.url]
    page = Taken(BUTTON, MEMBER, 1, custom_id="shira:page:abc123:2", in_place=True)
    paged = Taken.from_json(page.to_json()).request(fetch, "global")
    assert paged is not None and (paged.command, paged.text, paged.page) == (Command.PAGE, "abc123", 2)
    voice = Taken(MESSAGE, MEMBER, 1, attachments=(clip,), channel_id=5, message_id=6)
    assert not voice.is_interaction and Taken.from_json(voice.to_json()).request(fetch) is not None


def timeline_reply(srt: str = "1\n00:00:01,000 --> 00:00:04,000\ndog\n") -> Reply:
    """A timeline the way the core answers it (its text from core.replies)."""
    from core.replies import timeline
    from core.timeline import Event

    events = (Event("dog", 1.0, 4.0, 0.9), Event("*siren*", 70.0, 75.0, 0.8))
    return timeline(Timeline(185.0, events, "dog at 0:01–0:04; *siren* at 1:10–1:15", b"\x89PNG fake", srt, "WEBVTT"))


def test_timeline_slash_request_and_its_journal() -> None:
    clip = Attachment("walk.mp4", "https://cdn.example/a/1/walk.mp4", 5_000_000, "video/mp4")
    assert is_audio(clip) and is_audio(Attachment("walk.webm", "u", 1)) and is_audio(Attachment("w.mkv", "u", 1))
    taken = Taken(SLASH, MEMBER, 10 * 1024 * 1024, name="timeline", options={"labels": " dog,  siren "},
                  attachments=(clip,), application_id=11, token="t")  # fmt: skip
    request = Taken.from_json(json.loads(json.dumps(taken.to_json()))).request(lambda url: asyncio.sleep(0, b""))
    assert request is not None and (request.command, request.text) == (Command.TIMELINE, "dog, siren")
    assert request.audio[0].size == 5_000_000 and request.audio[0].duration is None  # Discord says no length
    bare = slash_request("timeline", {"file": clip}, MEMBER, lambda url: asyncio.sleep(0, b""))
    assert bare.command is Command.TIMELINE and bare.text == ""


def test_timeline_renders_summary_events_chart_and_subtitles() -> None:
    rendered = render(timeline_reply(), "My walk (1).mp4", 10 * 1024 * 1024)
    assert [name for name, _ in rendered.files] == ["My_walk_1.png", "My_walk_1.srt"]
    assert rendered.files[0][1].startswith(b"\x89PNG") and rendered.files[1][1].startswith(b"1\n00:00:01,000")
    embed = rendered.embed
    assert embed is not None and embed["title"] == "Timeline of 3:05"
    assert embed["image"] == {"url": "attachment://My_walk_1.png"}
    assert embed["description"].startswith("Dog at 0:01–0:04; \\*siren\\* at 1:10–1:15.")  # escaped, capitalised
    assert "1:10–1:15  \\*siren\\* \\(80%\\)" in embed["description"] and not rendered.ephemeral
    # Within the upload limit, the chart goes first; subtitles that don't fit are left out and the footer says so.
    tight = render(timeline_reply("x" * 5000), "walk.mp4", 1000)
    assert [name for name, _ in tight.files] == ["walk.png"]
    assert tight.embed is not None and "too large" in tight.embed["footer"]["text"]
    nothing = render(timeline_reply(), "walk.mp4", 5)
    assert nothing.files == () and nothing.embed is not None and "image" not in nothing.embed
