"""The real PTB Application and a real Engine (tiny CLAP) against the fake Bot API on loopback.

One fake server, engine and adapter are shared by the module; each test uses its own chats and users
so that the tests don't depend on each other's order, except through the `library` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.telegram import create
from adapters.telegram.adapter import LATE, TelegramAdapter
from adapters.telegram.config import TelegramConfig
from adapters.telegram.translate import MENU
from core.config import ConfigError
from core.engine import Engine
from core.inbox import SqliteInbox
from core.messages import Command, Reply, ReplyKind, Request
from tests.conftest import make_config
from tests.fakes.telegram_api import Call, FakeTelegram, StoredFile, group_chat, make_message, private_chat, user
from tests.support.sounds import chirp, encode, noise, tone
from tests.support.telegram_bot import Running, running_bot

pytestmark = pytest.mark.asyncio(loop_scope="module")

Json = dict[str, Any]

ALICE = user(101, "Alice", "alice")
BOB = user(102, "Bob", "bob")
CAROL = user(103, "Carol")
LIBRARY_GROUP = group_chat(-100501, "Field recordings")
RATE_LIMIT = 12  # requests per user per minute in this module's engine


@dataclass(frozen=True)
class Sounds:
    tone_ogg: bytes
    tone2_ogg: bytes
    chirp_mp3: bytes
    noise_wav: bytes


@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> Sounds:
    """Real encodings made with the bundled ffmpeg."""
    d = tmp_path_factory.mktemp("sounds")
    return Sounds(
        tone_ogg=encode(tone(2.0, 440.0), d / "tone.ogg", "ogg").read_bytes(),
        tone2_ogg=encode(tone(1.5, 452.0), d / "tone2.ogg", "ogg").read_bytes(),
        chirp_mp3=encode(chirp(2.5), d / "chirp.mp3", "mp3").read_bytes(),
        noise_wav=encode(noise(1.5, seed=3), d / "noise.wav", "wav").read_bytes(),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> AsyncIterator[Running]:
    config = make_config(
        tmp_path_factory.mktemp("tg-data"), tiny_model_dir, search={"k": 2}, limits={"requests_per_minute": RATE_LIMIT}
    )
    # Telegram's real group limit (20 a minute) would only slow the suite; the limiter itself is real.
    async with FakeTelegram() as fake, running_bot(fake, config, group_messages_per_minute=1000, poll_timeout=5) as on:
        yield on


# ----------------------------------------------------------------- helpers


async def answer(fake: FakeTelegram, to: Json, method: str = "sendMessage", timeout: float = 30.0) -> Call:
    """The bot's reply (of one method) to a message."""

    def replies(call: Call) -> bool:
        params = call.params
        reply = params.get("reply_parameters") or {}
        return params.get("chat_id") == to["chat"]["id"] and reply.get("message_id") == to["message_id"]

    return await fake.wait_for(method, replies, timeout=timeout)


def sample_id(call: Call) -> int:
    found = re.search(r"#(\d+)", call.params["text"])
    assert found, call.params["text"]
    return int(found.group(1))


def keyboard(call: Call) -> list[list[tuple[str, str]]]:
    rows = call.params.get("reply_markup", {}).get("inline_keyboard", [])
    return [[(b["text"], b["callback_data"]) for b in row] for row in rows]


def bot_message(fake: FakeTelegram, call: Call) -> Json:
    """The message the fake created for a sendMessage call (to press its buttons)."""
    for message in reversed(fake.bot_messages(call.params["chat_id"])):
        if message.get("text") == call.params["text"]:
            return message
    raise AssertionError("no such bot message")


def voice_of(fake: FakeTelegram, data: bytes) -> tuple[StoredFile, Json]:
    stored = fake.add_file(data, kind="voice")
    return stored, stored.as_voice(duration=2)


@dataclass(frozen=True)
class Library:
    """Three sounds added in a group chat through the bot."""

    tone_id: int
    chirp_id: int
    noise_id: int
    tone_file: StoredFile
    chirp_file: StoredFile
    replies: tuple[Call, ...]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def library(bot: Running, sounds: Sounds) -> Library:
    """Alice adds a voice note and an MP3 by caption; Bob replies /add to a WAV document."""
    fake = bot.fake
    tone_file, tone_voice = voice_of(fake, sounds.tone_ogg)
    m1 = fake.push_message(LIBRARY_GROUP, ALICE, caption="/add a pure tone", voice=tone_voice)
    r1 = await answer(fake, m1)
    chirp_file = fake.add_file(sounds.chirp_mp3, kind="audio", suffix="mp3")
    m2 = fake.push_message(LIBRARY_GROUP, ALICE, caption="/add rising sweep", audio=chirp_file.as_audio("sweep.mp3", 3))
    r2 = await answer(fake, m2)
    noise_file = fake.add_file(sounds.noise_wav, kind="document", suffix="wav")
    doc = fake.push_message(LIBRARY_GROUP, BOB, document=noise_file.as_document("hiss.wav", "audio/x-wav"))
    m3 = fake.push_message(LIBRARY_GROUP, BOB, "/add white noise", reply_to=doc)
    r3 = await answer(fake, m3)
    return Library(sample_id(r1), sample_id(r2), sample_id(r3), tone_file, chirp_file, (r1, r2, r3))


# ----------------------------------------------------------------- start-up


async def test_start_registers_commands_and_polls(bot: Running) -> None:
    fake = bot.fake
    await fake.wait_for("getUpdates")
    methods = [c.method for c in fake.calls]
    assert methods[0] == "getMe"
    assert methods.index("setMyCommands") < methods.index("deleteWebhook") < methods.index("getUpdates")
    commands = fake.calls_to("setMyCommands")[0].params["commands"]
    assert [c["command"] for c in commands] == [name for name, _ in MENU]
    polls = fake.calls_to("getUpdates")
    assert polls[-1].params["timeout"] == 5
    assert set(polls[-1].params["allowed_updates"]) == {"message", "callback_query", "inline_query"}


# ----------------------------------------------------------------- the group scenario


async def test_group_adds_three_sounds(bot: Running, library: Library) -> None:
    ids = {library.tone_id, library.chirp_id, library.noise_id}
    assert len(ids) == 3
    for call in library.replies:
        assert call.params["parse_mode"] == "HTML"
        assert "✅ Added" in call.params["text"] and " s)." in call.params["text"]
        assert ("▶ Play", f"a:{sample_id(call)}") in keyboard(call)[0]
    assert "hiss" in library.replies[2].params["text"]
    actions = bot.fake.calls_to("sendChatAction", chat_id=LIBRARY_GROUP["id"])
    assert actions and all(a.params["action"] == "upload_voice" for a in actions)
    stats = await bot.engine.handle(Request("telegram", "telegram:-100501", "telegram:1", Command.STATS))
    assert stats.stats is not None and stats.stats.samples == 3 and stats.stats.uploaders == 2


async def test_voice_note_in_a_group_is_answered_with_labels_and_hits_and_plays_on_request(
    bot: Running, library: Library, sounds: Sounds
) -> None:
    fake = bot.fake
    since = fake.mark()
    _, query = voice_of(fake, sounds.tone2_ogg)
    asked = fake.push_message(LIBRARY_GROUP, CAROL, caption="what sound is this?", voice=query)
    text = await answer(fake, asked)
    body = text.params["text"]
    assert "<b>It sounds like</b>" in body and re.search(r"— \d+%", body)
    assert "<b>Closest sounds here</b>" in body
    shown = [int(n) for n in re.findall(r"</b> #(\d+)", body)]
    assert len(shown) == 2 and set(shown) <= {library.tone_id, library.chirp_id, library.noise_id}
    assert keyboard(text)[0] == [("▶ 1", f"a:{shown[0]}"), ("▶ 2", f"a:{shown[1]}")]
    action = fake.calls_to("sendChatAction", since=since)[0]
    assert action.params["action"] == "upload_voice" and fake.calls.index(action) < fake.calls.index(text)

    # In a group the best match is not posted by itself: ▶ sends it, by file_id when Telegram already has it.
    pressed = fake.mark()
    fake.push_callback(CAROL, bot_message(fake, text), f"a:{shown[0]}")
    method = "sendAudio" if shown[0] == library.chirp_id else "sendVoice"
    played = await fake.wait_for(method, since=pressed)
    assert f"#{shown[0]}" in played.params["caption"]
    sent = [c for c in fake.calls[since:] if c.method in ("sendVoice", "sendAudio")]
    assert sent == [played] and played.params["reply_parameters"]["message_id"] != asked["message_id"]
    if shown[0] == library.tone_id:
        assert played.params["voice"] == library.tone_file.file_id and not played.files
    if shown[0] == library.chirp_id:
        assert played.params["audio"] == library.chirp_file.file_id
    if shown[0] == library.noise_id:
        assert played.files["voice"].data[:4] == b"OggS"  # an uploaded OGG/Opus preview


async def test_voice_note_in_a_private_chat_gets_the_best_match_as_audio(bot: Running, sounds: Sounds) -> None:
    fake = bot.fake
    lena = user(112, "Lena")
    chat = private_chat(lena)
    _, mine = voice_of(fake, sounds.tone_ogg)
    added = await answer(fake, fake.push_message(chat, lena, caption="/add my tone", voice=mine))
    _, query = voice_of(fake, sounds.tone2_ogg)
    asked = fake.push_message(chat, lena, voice=query)
    text = await answer(fake, asked)
    assert "<b>Closest sounds here</b>" in text.params["text"]
    played = await answer(fake, asked, "sendVoice")
    assert f"#{sample_id(added)}" in played.params["caption"] and not played.files  # by its stored file_id


async def test_search_pages_and_buttons(bot: Running, library: Library) -> None:
    fake = bot.fake
    asked = fake.push_message(LIBRARY_GROUP, CAROL, "/search tone")
    results = await answer(fake, asked)
    assert results.params["text"].startswith('<b>Results for "tone"</b> · page 1')
    assert re.findall(r"^(\d+)\. ", results.params["text"], re.M) == ["1", "2"]
    rows = keyboard(results)
    assert [t for t, _ in rows[0]] == ["▶ 1", "▶ 2"] and [t for t, _ in rows[1]] == ["≈ 1", "≈ 2"]
    ((next_text, next_data),) = rows[2]
    assert next_text == "Next »" and re.fullmatch(r"p:[0-9a-f]+:1", next_data)
    first_page = {int(d[2:]) for _, d in rows[0]}

    # Next page: the same message is edited in place.
    shown = bot_message(fake, results)
    since = fake.mark()
    pressed = fake.push_callback(CAROL, shown, next_data)
    edit = await fake.wait_for("editMessageText", since=since)
    assert edit.params["message_id"] == shown["message_id"] and "page 2" in edit.params["text"]
    second_page = {int(d[2:]) for _, d in keyboard(edit)[0]}
    assert [t for t, _ in keyboard(edit)[0]] == ["▶ 3"] and [t for t, _ in keyboard(edit)[1]] == ["≈ 3"]
    assert re.findall(r"^(\d+)\. ", edit.params["text"], re.M) == ["3"]  # numbered on from page 1
    assert first_page | second_page == {library.tone_id, library.chirp_id, library.noise_id}
    assert not first_page & second_page
    assert ("« Prev", next_data[:-1] + "0") in keyboard(edit)[-1]
    await fake.wait_for("answerCallbackQuery", lambda c: c.params["callback_query_id"] == pressed, since=since)

    # More like this: a new results message, replying to the one pressed.
    since = fake.mark()
    fake.push_callback(CAROL, shown, f"m:{library.chirp_id}")
    more = await fake.wait_for("sendMessage", since=since)
    assert more.params["reply_parameters"]["message_id"] == shown["message_id"]
    assert f"More like #{library.chirp_id}" in more.params["text"]

    # Play: a voice note by its stored file_id, no upload.
    since = fake.mark()
    fake.push_callback(CAROL, shown, f"a:{library.tone_id}")
    played = await fake.wait_for("sendVoice", since=since)
    assert played.params["voice"] == library.tone_file.file_id and not played.files


async def remembered(bot: Running, sample: int) -> str:
    """The Telegram handle the core keeps for a sample, once the adapter has told it (it does so after sending)."""
    for _ in range(200):
        if found := (await bot.engine.store.file_ids([sample], "telegram")).get(sample):
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no file id for #{sample}")


async def test_adding_a_document_confirms_by_ear_once_then_reuses_the_file_id(bot: Running, sounds: Sounds) -> None:
    fake = bot.fake
    ivy = user(109, "Ivy")
    wav = fake.add_file(sounds.noise_wav, kind="document", suffix="wav")
    m = fake.push_message(private_chat(ivy), ivy, caption="/add hiss", document=wav.as_document("hiss.wav"))
    added_call = await answer(fake, m)
    new_id = sample_id(added_call)
    assert keyboard(added_call)[0][0] == ("▶ Play", f"a:{new_id}")
    # The confirmation carries the sound itself: a document has no file id Telegram can send back as audio.
    first = await answer(fake, m, "sendVoice")
    upload = first.files["voice"]
    assert upload.data[:4] == b"OggS" and len(upload.data) <= 10 * 1024 * 1024
    assert upload.filename == f"{new_id}-hiss.ogg"
    assert f"#{new_id}" in first.params["caption"] and first.params["duration"] == 2
    assert fake.calls.index(added_call) < fake.calls.index(first)
    handle = await remembered(bot, new_id)
    since = fake.mark()
    fake.push_callback(ivy, bot_message(fake, added_call), f"a:{new_id}")
    second = await fake.wait_for("sendVoice", since=since)
    assert not second.files and handle == f"voice:{second.params['voice']}"
    assert fake.files[second.params["voice"]].data == upload.data


async def test_only_the_uploader_or_an_admin_may_remove(bot: Running, sounds: Sounds) -> None:
    fake = bot.fake
    chat = group_chat(-100777, "Removals")
    fake.set_member(chat["id"], CAROL["id"], "administrator")
    ids = []
    for sender, data in ((ALICE, sounds.tone_ogg), (BOB, sounds.tone2_ogg)):
        _, v = voice_of(fake, data)
        ids.append(sample_id(await answer(fake, fake.push_message(chat, sender, caption="/add", voice=v))))
    alices, bobs = ids

    refused = await answer(fake, fake.push_message(chat, BOB, f"/remove {alices}"))
    assert "Only the person who added" in refused.params["text"]
    assert fake.calls_to("getChatMember", chat_id=chat["id"])[-1].params["user_id"] == BOB["id"]

    removed = await answer(fake, fake.push_message(chat, ALICE, f"/remove #{alices}"))
    assert f"Removed #{alices}" in removed.params["text"]

    by_admin = await answer(fake, fake.push_message(chat, CAROL, f"/remove {bobs}"))
    assert f"Removed #{bobs}" in by_admin.params["text"]
    assert fake.calls_to("getChatMember", chat_id=chat["id"])[-1].params["user_id"] == CAROL["id"]

    # The old "Added" message still has a ▶ button for the deleted sample.
    old = next(m for m in fake.bot_messages(chat["id"]) if f"#{alices}" in m.get("text", "") and "Added" in m["text"])
    since = fake.mark()
    pressed = fake.push_callback(ALICE, old, f"a:{alices}")
    alert = await fake.wait_for("answerCallbackQuery", lambda c: c.params["callback_query_id"] == pressed, since=since)
    assert alert.params["show_alert"] is True and f"no sound #{alices}" in alert.params["text"]
    assert not fake.calls_to("sendVoice", since=since)


async def test_inline_query_answers_with_cached_audio(bot: Running, sounds: Sounds) -> None:
    fake = bot.fake
    dave = user(104, "Dave")
    stored, v = voice_of(fake, sounds.tone_ogg)
    added = await answer(fake, fake.push_message(private_chat(dave), dave, caption="/add doorbell", voice=v))
    new_id = sample_id(added)
    since = fake.mark()
    query_id = fake.push_inline(dave, "doorbell")
    answered = await fake.wait_for("answerInlineQuery", lambda c: c.params["inline_query_id"] == query_id, since=since)
    results = answered.params["results"]
    assert answered.params["is_personal"] is True and 1 <= len(results) <= 50
    assert {"type": "voice", "id": str(new_id), "voice_file_id": stored.file_id}.items() <= results[0].items()

    # Someone with no library of their own gets an empty answer with a way to start.
    stranger = user(105, "Erin")
    query_id = fake.push_inline(stranger, "doorbell")
    empty = await fake.wait_for("answerInlineQuery", lambda c: c.params["inline_query_id"] == query_id, since=since)
    assert empty.params["results"] == [] and empty.params["button"]["start_parameter"] == "add"


# ----------------------------------------------------------------- bad input


async def test_bad_inputs_get_clear_replies(bot: Running, sounds: Sounds) -> None:
    fake = bot.fake
    frank = user(106, "Frank")
    chat = private_chat(frank)

    pdf = fake.add_file(b"%PDF-1.4 not audio", kind="document", suffix="pdf")
    m = fake.push_message(chat, frank, document=pdf.as_document("minutes.pdf"))
    assert "doesn't look like an audio file" in (await answer(fake, m)).params["text"]

    big = fake.add_file(sounds.chirp_mp3, kind="audio", file_size=25 * 1024 * 1024, suffix="mp3")
    since = fake.mark()
    m = fake.push_message(chat, frank, caption="/add", audio=big.as_audio("long.mp3"))
    assert "20 MB" in (await answer(fake, m)).params["text"]
    assert not fake.calls_to("getFile", since=since)  # refused before any download

    corrupt = fake.add_file(b"OggS\x00\x02" + bytes(range(256)) * 8, kind="voice")
    m = fake.push_message(chat, frank, voice=corrupt.as_voice(duration=2))
    text = (await answer(fake, m)).params["text"]
    assert text.startswith("⚠️") and "error id" not in text
    assert fake.calls_to("getFile", since=since)[-1].params["file_id"] == corrupt.file_id

    m = fake.push_message(chat, frank, "/search")
    assert "/search thunder" in (await answer(fake, m)).params["text"]

    m = fake.push_message(chat, frank, "/frobnicate")
    assert "I don't know /frobnicate" in (await answer(fake, m)).params["text"]

    # Nothing was lost: every update was acknowledged and the bot still answers.
    last = fake.push_message(chat, frank, "/help")
    assert "shira" in (await answer(fake, last)).params["text"]
    assert len([c for c in fake.calls_to("sendMessage", chat_id=frank["id"])]) == 6


async def test_forbidden_is_logged_and_the_work_is_kept(
    bot: Running, sounds: Sounds, caplog: pytest.LogCaptureFixture
) -> None:
    fake = bot.fake
    chat = group_chat(-100888, "Kicked us")
    fake.fail("sendMessage", when=lambda p: p.get("chat_id") == chat["id"])
    _, v = voice_of(fake, sounds.chirp_mp3)
    with caplog.at_level(logging.WARNING, logger="adapters.telegram"):
        m = fake.push_message(chat, ALICE, caption="/add blocked", voice=v)
        await answer(fake, m)  # the attempt is recorded (and refused with 403)
        other = private_chat(ALICE)
        still = await answer(fake, fake.push_message(other, ALICE, "/help"))
    assert "shira" in still.params["text"]
    assert any("blocked or removed" in r.getMessage() and str(chat["id"]) in r.getMessage() for r in caplog.records)
    stats = await bot.engine.handle(Request("telegram", f"telegram:{chat['id']}", "telegram:1", Command.STATS))
    assert stats.stats is not None and stats.stats.samples == 1  # the addition itself was kept
    retry = await answer(fake, fake.push_message(chat, ALICE, "/stats"))
    assert retry.params["text"].startswith("1 sound, ") and "from 1 person;" in retry.params["text"]  # singular


async def test_telegram_flood_limits_are_honoured(bot: Running) -> None:
    fake = bot.fake
    gina = user(107, "Gina")
    chat = private_chat(gina)
    fake.fail(
        "sendMessage",
        "Too Many Requests: retry after 1",
        code=429,
        retry_after=1,
        when=lambda p: p.get("chat_id") == gina["id"],
    )
    m = fake.push_message(chat, gina, "/help")
    to_gina = lambda c: c.params["chat_id"] == gina["id"]  # noqa: E731
    refused = await fake.wait_for("sendMessage", to_gina)
    delivered = await fake.wait_for("sendMessage", lambda c: to_gina(c) and c is not refused)
    assert delivered.at - refused.at >= 1.0  # waited as long as Telegram asked
    assert "shira" in delivered.params["text"]
    assert delivered.params["reply_parameters"]["message_id"] == m["message_id"]


async def test_rate_limited_user_gets_a_friendly_busy_message(bot: Running) -> None:
    fake = bot.fake
    hank = user(108, "Hank")
    chat = private_chat(hank)
    texts = []
    for n in range(RATE_LIMIT + 1):
        texts.append((await answer(fake, fake.push_message(chat, hank, f"/search rain {n}"))).params["text"])
    assert all(t.startswith("<b>Results for") for t in texts[:RATE_LIMIT])
    assert texts[-1].startswith("⏳") and "too quickly" in texts[-1]
    assert re.search(r"try again in \d+ seconds?\.", texts[-1])  # says when


async def test_send_delivers_a_reply_unprompted(bot: Running) -> None:
    fake = bot.fake
    chat = group_chat(-100555, "Imports")
    fake.push_message(chat, ALICE, "hello everyone")  # the bot stays quiet, but the chat now exists
    await bot.adapter.send("telegram:-100555", Reply(ReplyKind.TEXT, "Bulk import finished: 3 sounds <new>."))
    sent = fake.calls_to("sendMessage", chat_id=chat["id"])[-1]
    assert sent.params["text"] == "Bulk import finished: 3 sounds &lt;new&gt;."
    with pytest.raises(ValueError, match="not a Telegram space"):
        await bot.adapter.send("discord:guild:1", Reply(ReplyKind.TEXT, "x"))


async def test_global_library_is_searched_when_enabled(bot: Running, tmp_path: Path) -> None:
    engine = bot.engine
    global_space = engine.config.search.global_space
    thunder = encode(chirp(1.2, 60.0, 900.0), tmp_path / "thunder.wav", "wav").read_bytes()
    added = await engine.ingest.add(global_space, thunder, "rolling thunder.wav", uploader="operator", source="cli")
    jill = user(110, "Jill")

    # The module's bot has global_library = false: the operator's sample is not offered.
    plain = await answer(bot.fake, bot.fake.push_message(group_chat(-100321), jill, "/search rolling thunder"))
    assert f"#{added.sample_id}" not in plain.params["text"]

    async with FakeTelegram(token="222333:global-token") as fake:
        config = TelegramConfig(
            enabled=True,
            token=fake.token,
            base_url=fake.base_url,
            base_file_url=fake.base_file_url,
            global_library=True,
        )
        adapter = TelegramAdapter(engine, config, poll_timeout=5)
        await adapter.start()
        try:
            chat = group_chat(-100322, "Uses the global library")
            found = await answer(fake, fake.push_message(chat, jill, "/search rolling thunder"))
            assert f"#{added.sample_id}" in found.params["text"]
            since = fake.mark()
            fake.push_callback(jill, bot_message(fake, found), f"a:{added.sample_id}")
            played = await fake.wait_for("sendVoice", since=since)
            assert played.files["voice"].data[:4] == b"OggS"
            file_id = next(m["voice"]["file_id"] for m in fake.bot_messages(chat["id"]) if "voice" in m)

            # Now that Telegram holds the file, inline mode can offer it in any chat.
            query_id = fake.push_inline(user(111, "Kim"), "rolling thunder")
            inline = await fake.wait_for("answerInlineQuery", lambda c: c.params["inline_query_id"] == query_id)
            assert [(r["id"], r["voice_file_id"]) for r in inline.params["results"]] == [
                (str(added.sample_id), file_id)
            ]
        finally:
            await adapter.stop()


async def test_a_missing_or_wrong_token_fails_clearly(bot: Running) -> None:
    with pytest.raises(ConfigError, match="SHIRA_TELEGRAM_TOKEN"):
        create(bot.engine, TelegramConfig(enabled=True))
    async with FakeTelegram() as fake:
        config = TelegramConfig(
            enabled=True, token="111:wrong", base_url=fake.base_url, base_file_url=fake.base_file_url
        )
        adapter = create(bot.engine, config)
        with pytest.raises(ConfigError, match="rejected the bot token") as refused:
            await adapter.start()
        assert "111:wrong" not in str(refused.value) and refused.value.__cause__ is None
        assert not adapter.app.running and not fake.calls  # refused at the door: nothing was recorded


async def test_an_exact_match_leads_the_answer_to_a_voice_note(bot: Running, tmp_path: Path) -> None:
    from tests.test_identify import melody

    fake = bot.fake
    eve = user(107, "Eve")
    chat = private_chat(eve)
    song = fake.add_file(encode(melody(8.0, seed=31), tmp_path / "riff.ogg", "ogg").read_bytes(), kind="voice")
    added = await answer(fake, fake.push_message(chat, eve, caption="/add a riff", voice=song.as_voice(duration=8)))
    riff = sample_id(added)
    clip = encode(melody(8.0, seed=31)[2 * 48_000 : 5 * 48_000], tmp_path / "clip.ogg", "ogg").read_bytes()
    query = fake.add_file(clip, kind="voice")
    text = await answer(fake, fake.push_message(chat, eve, voice=query.as_voice(duration=3)))
    body = text.params["text"]
    assert re.match(rf"<b>That's #{riff} [^,]+, from 0:02", body), body
    assert body.index("That's") < body.index("<b>It sounds like</b>") < body.index("<b>Closest sounds here</b>")


# ----------------------------------------------------------------- the inbox


def inbox_rows(engine: Engine, first: int, last: int) -> dict[int, str]:
    """update_id -> state of the journaled Telegram updates with ids in [first, last]."""
    with contextlib.closing(sqlite3.connect(Path(engine.config.data_dir) / "shira.db")) as db:
        found = db.execute("SELECT key, state FROM inbox WHERE platform = 'telegram'").fetchall()
    return {int(key): state for key, state in found if first <= int(key) <= last}


@contextlib.asynccontextmanager
async def journaling(engine: Engine, fake: FakeTelegram) -> AsyncIterator[TelegramAdapter]:
    """An adapter on its own fake with the engine's inbox, drained and stopped on the way out."""
    config = TelegramConfig(enabled=True, token=fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url)
    async with SqliteInbox.open(Path(engine.config.data_dir) / "shira.db") as inbox:
        adapter = TelegramAdapter(engine, config, group_messages_per_minute=1000, poll_timeout=5, inbox=inbox)
        await adapter.start()
        try:
            yield adapter
        finally:
            await adapter.drain(10)
            await adapter.stop()


async def test_updates_are_journaled_before_getupdates_confirms_them(bot: Running, sounds: Sounds) -> None:
    lena = user(120, "Lena")
    chat = private_chat(lena)
    async with FakeTelegram(token="333444:inbox-token", first_update_id=3001) as fake:
        confirmed: list[tuple[int, dict[int, str]]] = []  # each confirming offset, with the journal as it arrived

        def on_call(call: Call) -> None:
            if call.method == "getUpdates" and call.params.get("offset"):
                confirmed.append((int(call.params["offset"]), inbox_rows(bot.engine, 3001, 3999)))

        fake.observe(on_call)
        async with journaling(bot.engine, fake):
            _, voice = voice_of(fake, sounds.chirp_mp3)
            added = await answer(fake, fake.push_message(chat, lena, caption="/add sweep", voice=voice))
            add_id = fake.pushed[-1]["update_id"]
            since = fake.mark()
            fake.push_callback(lena, bot_message(fake, added), f"m:{sample_id(added)}")  # posts a new message
            press_id = fake.pushed[-1]["update_id"]
            await fake.wait_for("sendMessage", since=since)
            query = fake.push_inline(lena, "sweep")
            await fake.wait_for("answerInlineQuery", lambda c: c.params["inline_query_id"] == query)
            await answer(fake, fake.push_message(chat, lena, "hello, no command here"))  # private text: a search
            search_id = fake.pushed[-1]["update_id"]
            await fake.wait_confirmed(search_id)
        assert "✅ Added" in added.params["text"] and not added.params["text"].startswith(LATE)
    # The add, the press and the search were journaled, the inline query was not; all are answered now.
    kept = (add_id, press_id, search_id)
    assert inbox_rows(bot.engine, 3001, 3999) == dict.fromkeys(kept, "done")
    assert confirmed and all(n in journal for offset, journal in confirmed for n in kept if n < offset)


async def test_a_restart_answers_what_the_inbox_kept_once_and_late(bot: Running, sounds: Sounds) -> None:
    mia = user(121, "Mia")
    chat = private_chat(mia)
    async with FakeTelegram(token="333444:inbox-token", first_update_id=4101) as fake:
        stored, voice = voice_of(fake, sounds.noise_wav)
        earlier = {
            4001: make_message(801, chat, mia, caption="/add hiss", voice=voice),
            4002: make_message(802, chat, mia, "/search hiss"),
            4003: make_message(803, chat, mia, "/help"),
        }
        for message in earlier.values():
            fake.know(message)
        # An earlier run took these on: it committed the /add and was killed before answering it, had not
        # started the search, and had answered /help.
        first = await bot.engine.ingest.add(
            "telegram:121", stored.data, "voice.ogg", uploader="telegram:121", description="hiss"
        )
        async with SqliteInbox.open(Path(bot.engine.config.data_dir) / "shira.db") as inbox:
            kept = {str(n): {"update_id": n, "message": m} for n, m in earlier.items()}
            assert await inbox.record("telegram", kept) == set(kept)
            await inbox.done("telegram", "4003")
        fake.push({"update_id": 4001, "message": earlier[4001]})  # Telegram was never told: it sends the /add again
        async with journaling(bot.engine, fake):
            added = await answer(fake, earlier[4001])
            found = await answer(fake, earlier[4002])
            await fake.wait_confirmed(4001)
        text = added.params["text"]
        assert text.startswith(LATE + "\n") and f"✅ Added <b>voice.ogg</b> as #{first.sample_id}" in text
        assert found.params["text"].startswith(LATE + "\n<b>Results for")
        replies_to = [c.params["reply_parameters"]["message_id"] for c in fake.calls_to("sendMessage")]
        assert sorted(replies_to) == [801, 802]  # once each, and nothing for the answered /help
    assert inbox_rows(bot.engine, 4001, 4999) == {4001: "done", 4002: "done", 4003: "done"}
    stats = await bot.engine.handle(Request("telegram", "telegram:121", "telegram:121", Command.STATS))
    assert stats.stats is not None and stats.stats.samples == 1


async def test_drain_answers_what_is_in_flight_and_leaves_the_rest_for_the_next_start(
    bot: Running, sounds: Sounds
) -> None:
    nina = user(122, "Nina")
    chat = private_chat(nina)
    async with FakeTelegram(token="333444:inbox-token", first_update_id=5001) as fake:
        slow, slow_voice = voice_of(fake, sounds.tone2_ogg)
        stuck, stuck_voice = voice_of(fake, sounds.chirp_mp3)
        let_slow_go = fake.hold("getFile", lambda p: p.get("file_id") == slow.file_id)
        let_stuck_go = fake.hold("getFile", lambda p: p.get("file_id") == stuck.file_id)
        config = TelegramConfig(
            enabled=True, token=fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url
        )
        async with SqliteInbox.open(Path(bot.engine.config.data_dir) / "shira.db") as inbox:
            first = TelegramAdapter(bot.engine, config, group_messages_per_minute=1000, poll_timeout=5, inbox=inbox)
            await first.start()
            m1 = fake.push_message(chat, nina, caption="/add slow", voice=slow_voice)
            m2 = fake.push_message(chat, nina, caption="/add stuck", voice=stuck_voice)
            for held in (slow, stuck):
                await fake.wait_for("getFile", lambda c, f=held: c.params.get("file_id") == f.file_id)  # type: ignore[misc]
            draining = asyncio.create_task(first.drain(1.5))
            let_slow_go.set()  # this one finishes within the drain; the other is still downloading when it ends
            await draining
            await first.stop()
            assert fake.pending == []  # both were confirmed: the inbox has them
            assert len(fake.calls_to("sendMessage")) == 1
            assert not (await answer(fake, m1)).params["text"].startswith(LATE)
            assert inbox_rows(bot.engine, 5001, 5999) == {5001: "done", 5002: "pending"}

            let_stuck_go.set()
            second = TelegramAdapter(bot.engine, config, group_messages_per_minute=1000, poll_timeout=5, inbox=inbox)
            await second.start()
            try:
                late = await answer(fake, m2)
            finally:
                await second.drain(10)
                await second.stop()
        assert late.params["text"].startswith(LATE) and "✅ Added" in late.params["text"]
    assert inbox_rows(bot.engine, 5001, 5999) == {5001: "done", 5002: "done"}
