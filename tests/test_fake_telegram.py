"""The fake Bot API behaves like the real one where the adapter depends on it, driven by PTB's own Bot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden

from tests.fakes.telegram_api import FakeTelegram, entities_for, group_chat, private_chat, user


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url) as client:
        yield client


async def test_get_me_and_recorded_params(fake: FakeTelegram, bot: Bot) -> None:
    assert bot.username == fake.bot["username"]
    alice = user(7, "Alice")
    fake.push_message(private_chat(alice), alice, "hi")
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("next", callback_data="p:abc:1")]])
    sent = await bot.send_message(7, "123", reply_markup=keyboard)
    call = fake.calls_to("sendMessage")[-1]
    assert call.params["chat_id"] == 7
    assert call.params["text"] == "123"  # a string field is not JSON-decoded
    assert call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "p:abc:1"
    assert sent.reply_markup == keyboard
    assert [c.method for c in fake.calls] == ["getMe", "sendMessage"]


async def test_get_updates_long_polls_and_confirms(fake: FakeTelegram, bot: Bot) -> None:
    assert await bot.get_updates(timeout=0) == ()
    waiting = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.05)
    alice = user(7, "Alice")
    update_id = fake.push_message(group_chat(-100), alice, "/search@shira_test_bot rain")["message_id"]
    updates = await asyncio.wait_for(waiting, 5)
    assert len(updates) == 1 and updates[0].message is not None
    assert updates[0].message.text == "/search@shira_test_bot rain"
    assert updates[0].message.entities[0].type == "bot_command"
    assert update_id == updates[0].message.message_id
    # Updates stay until a later offset acknowledges them.
    again = await bot.get_updates(timeout=0)
    assert [u.update_id for u in again] == [updates[0].update_id]
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == ()
    await fake.wait_confirmed(updates[0].update_id, timeout=1)


async def test_files_download_and_size_limit(fake: FakeTelegram, bot: Bot) -> None:
    small = fake.add_file(b"OggS-bytes", kind="voice")
    file = await bot.get_file(small.file_id)
    assert bytes(await file.download_as_bytearray()) == b"OggS-bytes"
    big = fake.add_file(b"x", kind="audio", file_size=21 * 1024 * 1024)
    with pytest.raises(BadRequest, match="(?i)too big"):
        await bot.get_file(big.file_id)


async def test_uploads_become_reusable_file_ids(fake: FakeTelegram, bot: Bot) -> None:
    alice = user(7, "Alice")
    fake.push_message(private_chat(alice), alice, "hi")
    sent = await bot.send_voice(7, voice=b"OggS-upload", caption="a sound")
    upload = fake.calls_to("sendVoice")[-1].files["voice"]
    assert upload.data == b"OggS-upload"
    assert sent.voice is not None and fake.files[sent.voice.file_id].data == b"OggS-upload"
    again = await bot.send_voice(7, voice=sent.voice.file_id)
    assert again.voice is not None and again.voice.file_id == sent.voice.file_id
    with pytest.raises(BadRequest, match="(?i)voice as audio"):
        await bot.send_audio(7, audio=sent.voice.file_id)


async def test_configured_failures(fake: FakeTelegram, bot: Bot) -> None:
    alice = user(7, "Alice")
    fake.push_message(private_chat(alice), alice, "hi")
    fake.fail("sendMessage", when=lambda params: params["chat_id"] == 7)
    with pytest.raises(Forbidden, match="blocked"):
        await bot.send_message(7, "first")
    assert (await bot.send_message(7, "second")).text == "second"
    with pytest.raises(BadRequest, match="(?i)chat not found"):
        await bot.send_message(99, "nobody")


async def test_chat_members(fake: FakeTelegram, bot: Bot) -> None:
    fake.push_message(group_chat(-100), user(7), "hi")
    fake.set_member(-100, 8, "administrator")
    fake.set_member(-100, 9, "creator")
    assert (await bot.get_chat_member(-100, 7)).status == "member"
    assert (await bot.get_chat_member(-100, 8)).status == "administrator"
    assert (await bot.get_chat_member(-100, 9)).status == "creator"


def test_entities_use_utf16_offsets() -> None:
    text = "🎵 @shira_test_bot what is this"
    (mention,) = entities_for(text)
    assert mention == {"type": "mention", "offset": 3, "length": 15}


async def test_html_length_and_button_checks(fake: FakeTelegram, bot: Bot) -> None:
    alice = user(7, "Alice")
    fake.push_message(private_chat(alice), alice, "hi")
    assert (await bot.send_message(7, "<b>ok</b> &amp; <i>fine</i>", parse_mode="HTML")).text
    for bad in ("<b>open", "<div>x</div>", "fish & chips", "<b><i>x</b></i>"):
        with pytest.raises(BadRequest, match="(?i)can't parse entities"):
            await bot.send_message(7, bad, parse_mode="HTML")
    assert (await bot.send_message(7, "fish & chips")).text  # plain text needs no escaping
    with pytest.raises(BadRequest, match="(?i)too long"):
        await bot.send_message(7, "x" * 4097)
    too_long = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="p:" + "q" * 63)]])
    with pytest.raises(BadRequest, match="(?i)button_data_invalid"):
        await bot.send_message(7, "buttons", reply_markup=too_long)
