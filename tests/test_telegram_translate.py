"""Pure Telegram translation (Update -> Request) and rendering (Reply -> HTML + keyboard), no server."""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from telegram import InlineQueryResultCachedAudio, InlineQueryResultCachedVoice, Update

from adapters.telegram import render
from adapters.telegram.translate import (
    MENU,
    BotContext,
    Notice,
    chat_of,
    file_handle,
    parse_file_handle,
    space_of,
    translate,
    user_of,
)
from core.messages import Added, AudioFile, Command, Hit, Label, Reply, ReplyKind, Request, Timeline
from tests.fakes.telegram_api import group_chat, make_message, private_chat, user

BOT_ID = 4242
CTX = BotContext(bot_id=BOT_ID, username="shira_test_bot")
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "Shira", "username": "shira_test_bot"}
ALICE = user(7, "Alice", "alice")
BOB = user(8, "Bob")
GROUP = group_chat(-1001, "Sound club")
MB = 1024 * 1024

_ids = itertools.count(1)
fetched: list[str] = []


def fetcher(file_id: str) -> Callable[[], Awaitable[bytes]]:
    async def fetch() -> bytes:
        fetched.append(file_id)
        return f"bytes of {file_id}".encode()

    return fetch


def voice(file_id: str = "VOICE1", size: int = 3000, duration: int = 2) -> dict[str, Any]:
    return {"file_id": file_id, "file_unique_id": "u" + file_id, "file_size": size, "duration": duration}


def audio_file(file_id: str = "AUDIO1", size: int = 50_000, name: str = "rain.mp3") -> dict[str, Any]:
    return {
        "file_id": file_id,
        "file_unique_id": "u" + file_id,
        "file_size": size,
        "duration": 3,
        "file_name": name,
        "mime_type": "audio/mpeg",
    }


def document(file_id: str = "DOC1", name: str = "notes.pdf", mime: str | None = "application/pdf", size: int = 900):
    doc: dict[str, Any] = {"file_id": file_id, "file_unique_id": "u" + file_id, "file_name": name, "file_size": size}
    if mime:
        doc["mime_type"] = mime
    return doc


def message(chat: dict[str, Any], sender: dict[str, Any], text: str | None = None, **parts: Any) -> dict[str, Any]:
    return make_message(next(_ids), chat, sender, text, **parts)


def from_message(msg: dict[str, Any], ctx: BotContext = CTX) -> Request | Notice | None:
    return translate(Update.de_json({"update_id": next(_ids), "message": msg}, None), ctx, fetcher)


def request_of(msg: dict[str, Any], ctx: BotContext = CTX) -> Request:
    result = from_message(msg, ctx)
    assert isinstance(result, Request), result
    return result


def notice_of(msg: dict[str, Any], ctx: BotContext = CTX) -> str:
    result = from_message(msg, ctx)
    assert isinstance(result, Notice), result
    return result.text


# ----------------------------------------------------------------- "what sound is this?"


async def test_private_voice_note_is_identified() -> None:
    request = request_of(message(private_chat(ALICE), ALICE, voice=voice("V9", size=1234, duration=4)))
    assert request.command == Command.IDENTIFY
    assert (request.platform, request.space, request.user) == ("telegram", "telegram:7", "telegram:7")
    (ref,) = request.audio
    assert (ref.size, ref.duration, ref.mime) == (1234, 4.0, "audio/ogg")
    assert re.fullmatch(r"Voice note, Alice, \d{4}-\d\d-\d\d \d\d:\d\d\.ogg", ref.filename), ref.filename
    assert ref.platform_file_id == "voice:V9"
    assert await ref.fetch() == b"bytes of V9" and fetched[-1] == "V9"


def test_group_voice_is_ignored_unless_addressed() -> None:
    assert from_message(message(GROUP, ALICE, voice=voice())) is None
    assert from_message(message(GROUP, ALICE, caption="listen to my dog", voice=voice())) is None


@pytest.mark.parametrize("caption", ["what sound is this?", "What's that noise", "what is this", "identify pls"])
def test_group_caption_question_addresses_the_bot(caption: str) -> None:
    request = request_of(message(GROUP, ALICE, caption=caption, voice=voice("V2")))
    assert request.command == Command.IDENTIFY and request.space == "telegram:-1001"
    assert request.audio[0].platform_file_id == "voice:V2"


def test_group_voice_replying_to_the_bot() -> None:
    bot_said = message(GROUP, BOT_USER, "Results")
    request = request_of(message(GROUP, ALICE, voice=voice("V3"), reply_to=bot_said))
    assert request.command == Command.IDENTIFY and request.audio[0].platform_file_id == "voice:V3"


def test_group_mention_asks_about_the_replied_sound() -> None:
    theirs = message(GROUP, BOB, voice=voice("V4"))
    request = request_of(message(GROUP, ALICE, "@shira_test_bot ?", reply_to=theirs))
    assert request.command == Command.IDENTIFY and request.audio[0].platform_file_id == "voice:V4"
    asking = request_of(message(GROUP, ALICE, "what sound is this", reply_to=theirs))
    assert asking.command == Command.IDENTIFY


def test_group_question_without_audio_explains() -> None:
    assert "voice note" in notice_of(message(GROUP, ALICE, "@shira_test_bot what sound is this"))
    assert from_message(message(GROUP, ALICE, "what sound is this")) is None  # just chatting


def test_group_mention_with_words_searches() -> None:
    request = request_of(message(GROUP, ALICE, "@shira_test_bot thunder and rain"))
    assert (request.command, request.text) == (Command.SEARCH, "thunder and rain")
    assert request_of(message(GROUP, ALICE, "@shira_test_bot")).command == Command.HELP
    assert from_message(message(GROUP, ALICE, "@someone_else thunder")) is None


def test_group_reply_to_bot_with_words_searches() -> None:
    bot_said = message(GROUP, BOT_USER, "Results")
    request = request_of(message(GROUP, ALICE, "more rain", reply_to=bot_said))
    assert (request.command, request.text) == (Command.SEARCH, "more rain")


def test_private_text_searches_and_audio_documents_count() -> None:
    request = request_of(message(private_chat(ALICE), ALICE, "dog barking"))
    assert (request.command, request.text) == (Command.SEARCH, "dog barking")
    doc = request_of(message(private_chat(ALICE), ALICE, document=document("D1", "take.wav", None)))
    assert doc.command == Command.IDENTIFY and doc.audio[0].filename == "take.wav"
    assert doc.audio[0].platform_file_id is None  # documents are not sent back as playable audio
    note = {"file_id": "N1", "file_unique_id": "uN1", "length": 240, "duration": 3, "file_size": 5000}
    video = request_of(message(private_chat(ALICE), ALICE, video_note=note))
    assert video.command == Command.IDENTIFY and video.audio[0].duration == 3.0


def test_messages_from_bots_are_ignored() -> None:
    other_bot = {"id": 99, "is_bot": True, "first_name": "Other"}
    assert from_message(message(GROUP, other_bot, "/search rain")) is None


def test_configured_global_library_is_searched_too() -> None:
    ctx = BotContext(bot_id=BOT_ID, username="shira_test_bot", extra_spaces=("global",))
    assert request_of(message(GROUP, ALICE, "/search rain"), ctx).extra_spaces == ("global",)
    assert request_of(message(GROUP, ALICE, "/search rain")).extra_spaces == ()


# ----------------------------------------------------------------- commands


def test_add_as_caption_or_reply() -> None:
    request = request_of(message(GROUP, ALICE, caption="/add heavy rain on a tin roof", audio=audio_file("A1")))
    assert (request.command, request.text, request.user_name) == (Command.ADD, "heavy rain on a tin roof", "Alice")
    assert request.audio[0].platform_file_id == "audio:A1" and request.audio[0].filename == "rain.mp3"
    theirs = message(GROUP, BOB, document=document("D2", "kick.flac", "audio/flac"))
    reply = request_of(message(GROUP, ALICE, "/add@shira_test_bot", reply_to=theirs))
    assert (reply.command, reply.text, reply.audio[0].filename) == (Command.ADD, "", "kick.flac")


def test_add_problems_are_explained() -> None:
    assert "/add" in notice_of(message(GROUP, ALICE, "/add"))
    assert "notes.pdf" in notice_of(message(GROUP, ALICE, caption="/add", document=document()))
    big = audio_file("BIG", size=25 * MB)
    text = notice_of(message(GROUP, ALICE, caption="/add", audio=big))
    assert "20 MB" in text and "25.0 MB" in text


def test_local_mode_lifts_the_download_limit() -> None:
    ctx = BotContext(bot_id=BOT_ID, username="shira_test_bot", local_mode=True)
    request = request_of(message(GROUP, ALICE, caption="/add", audio=audio_file("BIG", size=25 * MB)), ctx)
    assert request.command == Command.ADD and request.audio[0].size == 25 * MB


def test_search_commands() -> None:
    assert request_of(message(GROUP, ALICE, "/search  thunder ")).text == "thunder"
    assert request_of(message(GROUP, ALICE, "/search@shira_test_bot rain")).text == "rain"
    assert from_message(message(GROUP, ALICE, "/search@other_bot rain")) is None
    assert "/search thunder" in notice_of(message(GROUP, ALICE, "/search"))
    similar = request_of(message(private_chat(ALICE), ALICE, caption="/search", voice=voice("V5")))
    assert similar.command == Command.SIMILAR and similar.audio[0].platform_file_id == "voice:V5"


@pytest.mark.parametrize("command", ["remove", "play", "more"])
def test_commands_with_a_sample_id(command: str) -> None:
    assert request_of(message(GROUP, ALICE, f"/{command} 12")).text == "12"
    assert request_of(message(GROUP, ALICE, f"/{command} #12")).text == "12"
    assert f"/{command} 12" in notice_of(message(GROUP, ALICE, f"/{command} twelve"))
    assert f"/{command} 12" in notice_of(message(GROUP, ALICE, f"/{command} ²"))


@pytest.mark.parametrize(
    ("text", "command"), [("/stats", Command.STATS), ("/help", Command.HELP), ("/start", Command.START)]
)
def test_simple_commands(text: str, command: Command) -> None:
    request = request_of(message(GROUP, ALICE, text))
    assert (request.command, request.space, request.is_admin) == (command, "telegram:-1001", False)


def test_unknown_commands() -> None:
    assert "/frobnicate" in notice_of(message(private_chat(ALICE), ALICE, "/frobnicate"))
    assert "/help" in notice_of(message(GROUP, ALICE, "/frobnicate@shira_test_bot"))
    assert from_message(message(GROUP, ALICE, "/frobnicate")) is None  # likely another bot's


def test_menu_commands_are_all_understood() -> None:
    for name, about in MENU:
        assert 1 <= len(about) <= 256 and name.islower()
        result = from_message(message(private_chat(ALICE), ALICE, f"/{name} 3"))
        assert result is not None and "don't know" not in getattr(result, "text", "")


# ----------------------------------------------------------------- callbacks and inline


def callback(data: str, chat: dict[str, Any] = GROUP) -> Request | None:
    shown = message(chat, BOT_USER, "Results")
    pressed = {"id": "cb", "from": ALICE, "message": shown, "chat_instance": "x", "data": data}
    update = {"update_id": next(_ids), "callback_query": pressed}
    return translate(Update.de_json(update, None), CTX, fetcher)  # type: ignore[return-value]


def test_callbacks() -> None:
    page = callback("p:ab12cd34:2")
    assert page is not None
    assert (page.command, page.text, page.page, page.space) == (Command.PAGE, "ab12cd34", 2, "telegram:-1001")
    more = callback("m:15")
    assert more is not None and (more.command, more.text, more.user) == (Command.MORE, "15", "telegram:7")
    play = callback("a:15")
    assert play is not None and (play.command, play.text) == (Command.PLAY, "15")
    for junk in ("", "x:1", "a:abc", "p:nopage", "p:q:x"):
        assert callback(junk) is None


def inline(query: str, ctx: BotContext = CTX) -> Request | None:
    update = {"update_id": next(_ids), "inline_query": {"id": "iq", "from": ALICE, "query": query, "offset": ""}}
    return translate(Update.de_json(update, None), ctx, fetcher)  # type: ignore[return-value]


def test_inline_queries_search_global_and_private_libraries() -> None:
    request = inline(" thunder ")
    assert request is not None
    assert (request.command, request.text, request.space) == (Command.SEARCH, "thunder", "telegram:7")
    assert request.extra_spaces == ("global",) and request.k == 50
    assert inline("   ") is None


def test_keys_and_handles() -> None:
    assert space_of(-100) == "telegram:-100" and chat_of("telegram:-100") == -100
    assert chat_of("discord:guild:1") is None and chat_of("telegram:x") is None
    assert user_of(7) == "telegram:7"
    assert parse_file_handle(file_handle("voice", "AwAC:x")) == ("voice", "AwAC:x")
    assert parse_file_handle("BQACAgI") == ("audio", "BQACAgI")


# ----------------------------------------------------------------- rendering


def hit(sample_id: int, name: str = "rain", score: float = 0.5, file_id: str | None = None) -> Hit:
    return Hit(sample_id, name, score, 1.0, 3.0, 4.0, "telegram:-1001", ("weather",), platform_file_id=file_id)


def buttons(rendered: render.Rendered) -> list[list[tuple[str, str]]]:
    assert rendered.keyboard is not None
    return [[(b.text, str(b.callback_data)) for b in row] for row in rendered.keyboard.inline_keyboard]


def test_results_render_with_a_paginated_keyboard() -> None:
    hits = (hit(3, "<b>rain</b>"), hit(9))
    reply = Reply(
        ReplyKind.RESULTS,
        'Results for "rain":\n...',
        title='Results for "rain"',
        hits=hits,
        query_id="q1",
        page=1,
        offset=2,
        has_more=True,
    )
    rendered = render.render(reply)
    assert rendered.text is not None
    assert rendered.text.startswith('<b>Results for "rain"</b> · page 2\n3. ')  # the title, not the text's first line
    assert "\n4. <b>rain</b> #9" in rendered.text
    assert "&lt;b&gt;rain&lt;/b&gt;" in rendered.text and "#3" in rendered.text and "0:01–0:03" in rendered.text
    assert buttons(rendered) == [
        [("▶ 3", "a:3"), ("▶ 4", "a:9")],
        [("≈ 3", "m:3"), ("≈ 4", "m:9")],
        [("« Prev", "p:q1:0"), ("Next »", "p:q1:2")],
    ]
    assert rendered.audio is None


def test_long_query_ids_drop_only_the_paging_buttons() -> None:
    reply = Reply(ReplyKind.RESULTS, "Results", hits=(hit(1),), query_id="q" * 70, has_more=True)
    assert buttons(render.render(reply)) == [[("▶ 1", "a:1")], [("≈ 1", "m:1")]]


def test_identify_renders_labels_hits_and_audio() -> None:
    audio = AudioFile(3, "rain", Path("x.ogg"), 4.0)
    labels = (Label("rain", 0.62), Label("wind", 0.2))
    reply = Reply(ReplyKind.IDENTIFY, "This sounds like:", labels=labels, hits=(hit(3),), audio=audio)
    rendered = render.render(reply)
    assert rendered.text is not None and "rain — 62%" in rendered.text and "#3" in rendered.text
    assert rendered.audio == audio and buttons(rendered)[0] == [("▶ 1", "a:3")]
    empty = render.render(Reply(ReplyKind.IDENTIFY, "This sounds like:", labels=(Label("rain", 0.6),)))
    assert empty.text is not None and "/add" in empty.text and empty.keyboard is None


def test_added_renders_id_duration_tags_and_duplicates() -> None:
    new = render.render(Reply(ReplyKind.ADDED, "Added", added=Added(12, "kick", 1.25, ("drum", "kick"))))
    assert new.text is not None and "#12" in new.text and "1.2 s" in new.text and "drum, kick" in new.text
    assert buttons(new) == [[("▶ Play", "a:12"), ("≈ More like this", "m:12")]]
    again = Added(5, "kick", 1.0, duplicate=True, near_duplicates=(hit(4, "kick2", 0.99),))
    dup = render.render(Reply(ReplyKind.ADDED, "Already", added=again))
    assert dup.text is not None and "already in this library as #5" in dup.text and "#4 kick2 (0.99)" in dup.text


def test_busy_error_help_and_audio() -> None:
    busy = render.render(Reply(ReplyKind.BUSY, "You're sending requests too quickly; try again in 20 s."))
    assert busy.text is not None and busy.text.startswith("⏳") and "20 s" in busy.text
    assert render.render(Reply(ReplyKind.BUSY, "")).text == "⏳ " + render.BUSY_TEXT
    error = render.render(Reply(ReplyKind.ERROR, "There is no sound #4 <here>."))
    assert error.text == "⚠️ There is no sound #4 &lt;here&gt;."
    helped = render.render(Reply(ReplyKind.HELP, "shira finds sounds"), render.Place("shira_test_bot"))
    assert helped.text is not None and "@shira_test_bot thunder" in helped.text
    audio = AudioFile(2, "dog", Path("x.ogg"), 1.0, "voice:V1")
    played = render.render(Reply(ReplyKind.AUDIO, "#2 dog", audio=audio))
    assert played.text is None and played.audio == audio


def test_inline_results_use_cached_files_only() -> None:
    hits = (hit(1, file_id="voice:V1"), hit(2), hit(3, file_id="audio:A3"), hit(1, file_id="voice:V1"))
    results = render.inline_results(hits)
    assert [type(r) for r in results] == [InlineQueryResultCachedVoice, InlineQueryResultCachedAudio]
    assert results[0].voice_file_id == "V1" and results[1].audio_file_id == "A3"  # type: ignore[attr-defined]
    many = tuple(hit(i, file_id=f"voice:V{i}") for i in range(80))
    assert len(render.inline_results(many)) == 50


names = st.text(min_size=1, max_size=300)


@given(
    hits=st.lists(st.builds(hit, st.integers(1, 10**12), names, st.floats(-1, 1)), max_size=50),
    query_id=st.text(max_size=80),
    page=st.integers(0, 10**6),
    has_more=st.booleans(),
)
def test_any_results_fit_telegram_limits(hits: list[Hit], query_id: str, page: int, has_more: bool) -> None:
    reply = Reply(
        ReplyKind.RESULTS, "Results\n", hits=tuple(hits), query_id=query_id or None, page=page, has_more=has_more
    )
    rendered = render.render(reply)
    assert rendered.text is not None and 0 < len(rendered.text) <= render.MAX_TEXT
    if rendered.keyboard is not None:
        for row in rendered.keyboard.inline_keyboard:
            for button in row:
                assert len(str(button.callback_data).encode()) <= 64


def test_long_plain_replies_are_clipped_without_breaking_entities() -> None:
    rendered = render.render(Reply(ReplyKind.TEXT, "<>&" * 3000))
    assert rendered.text is not None and len(rendered.text) <= render.MAX_TEXT
    assert rendered.text.endswith("…") and re.search(r"&[a-z]*…$", rendered.text) is None


# ----------------------------------------------------------------- /timeline


def video(file_id: str = "VID1", size: int = 5 * MB, duration: int = 2400, name: str = "walk.mp4") -> dict[str, Any]:
    return {
        "file_id": file_id, "file_unique_id": "u" + file_id, "file_size": size, "duration": duration,
        "width": 64, "height": 48, "file_name": name, "mime_type": "video/mp4",
    }  # fmt: skip


def test_timeline_as_a_video_caption_or_in_reply_to_one() -> None:
    request = request_of(message(private_chat(ALICE), ALICE, caption="/timeline dog, siren", video=video()))
    assert (request.command, request.text) == (Command.TIMELINE, "dog, siren")
    (ref,) = request.audio
    assert (ref.filename, ref.size, ref.duration, ref.mime) == ("walk.mp4", 5 * MB, 2400.0, "video/mp4")
    assert ref.platform_file_id is None  # a video is not sent back as a sound
    theirs = message(GROUP, BOB, caption="our walk", video=video("VID2"))
    replied = request_of(message(GROUP, ALICE, "/timeline", reply_to=theirs))
    assert replied.command is Command.TIMELINE and replied.space == "telegram:-1001" and replied.text == ""
    for kind, part in (("voice", voice()), ("audio", audio_file()), ("video_note", voice("VN1") | {"length": 240})):
        asked = request_of(message(private_chat(ALICE), ALICE, caption="/timeline", **{kind: part}))
        assert asked.command is Command.TIMELINE and asked.audio


def test_timeline_without_a_file_or_too_big_to_download_is_explained() -> None:
    assert "/timeline as the caption" in notice_of(message(private_chat(ALICE), ALICE, "/timeline"))
    big = notice_of(message(private_chat(ALICE), ALICE, caption="/timeline", video=video(size=25 * MB)))
    assert "25.0 MB" in big and "up to 20 MB" in big
    local = BotContext(bot_id=BOT_ID, username="shira_test_bot", local_mode=True)  # a local Bot API server
    assert request_of(message(private_chat(ALICE), ALICE, caption="/timeline", video=video(size=25 * MB)), local)


def test_timeline_answer_text_and_caption() -> None:
    from adapters.telegram.timeline import answer_text, photo_caption
    from core.replies import error, timeline
    from core.timeline import Event

    events = (Event("dog <3", 1.0, 4.0, 0.9),)
    reply = timeline(Timeline(185.0, events, "dog <3 at 0:01–0:04", b"\x89PNG", "1\n", "WEBVTT"))
    text = answer_text(reply)
    assert text.startswith("<b>Timeline of 3:05: dog &lt;3 at 0:01–0:04.</b>\n0:01–0:04  dog &lt;3 (90%)")
    assert photo_caption(reply) == "Timeline of 3:05: dog <3 at 0:01–0:04."  # a caption without parse mode
    assert answer_text(error("That sound lasts 45 s; the limit is 20 s.")).startswith("⚠️ That sound lasts")
    long = timeline(Timeline(60.0, (), "x" * 2000, b"", "", ""))
    assert len(photo_caption(long)) == render.MAX_CAPTION and len(answer_text(long)) <= render.MAX_TEXT
