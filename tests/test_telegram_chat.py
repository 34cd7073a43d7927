"""The chat experience on Telegram (issue #11), through the real PTB Application and the fake Bot API.

The module's bot runs with Telegram's real group limit (20 messages a minute) and the default rate limits, so
what costs a group or a user its budget is what a real deployment would see.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.telegram.adapter import TelegramAdapter
from adapters.telegram.config import TelegramConfig
from adapters.telegram.translate import MENU
from core.engine import Engine
from core.messages import Command, Request
from tests.conftest import make_config
from tests.fakes.telegram_api import Call, FakeTelegram, group_chat, private_chat, user
from tests.support.sounds import chirp, encode, noise, tone
from tests.support.telegram_bot import Running, running_bot
from tests.test_telegram_e2e import answer, bot_message, keyboard, remembered, voice_of

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = user(201, "Ada", "ada")
MEMBER = user(202, "Max")
LABEL_CAP = 3
# A file name can't hold a "/" (only its last part is kept), so links come in through the words of a search.
HOSTILE = "<b>*b*<i> _i_ ~~x~~ ||s|| > `c` @everyone [a](evil.example) & co.wav"
HOSTILE_QUERY = "everyone [click](https://evil.example) <b>&"


@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    d = tmp_path_factory.mktemp("chat-sounds")
    clips = [tone(1.0, 300.0 + 90 * i) for i in range(4)] + [chirp(1.2), noise(1.0, seed=5)]
    return [encode(c, d / f"s{i}.ogg", "ogg").read_bytes() for i, c in enumerate(clips)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> AsyncIterator[Running]:
    data = tmp_path_factory.mktemp("tg-chat")
    config = make_config(data, tiny_model_dir, search={"k": 2}, limits={"labels_per_library": LABEL_CAP})
    async with FakeTelegram() as fake, running_bot(fake, config, poll_timeout=5) as on:  # Telegram's own 20 a minute
        yield on


def text_of(call: Call) -> str:
    return str(call.params["text"])


def listed_commands(help_text: str) -> list[str]:
    """The commands a help text lists, one a line."""
    return re.findall(r"^/(\w+)", help_text, re.MULTILINE)


async def stats_text(fake: FakeTelegram, chat: dict[str, object], sender: dict[str, object]) -> str:
    return text_of(await answer(fake, fake.push_message(chat, sender, "/stats")))


# ----------------------------------------------------------------- help, /start and the menu


async def test_help_lists_exactly_the_telegram_commands_the_menu_registers(bot: Running) -> None:
    fake = bot.fake
    menu = [c["command"] for c in fake.calls_to("setMyCommands")[0].params["commands"]]
    assert menu == [name for name, _ in MENU] and "identify" in menu
    mia = user(203, "Mia")
    private = text_of(await answer(fake, fake.push_message(private_chat(mia), mia, "/help")))
    assert listed_commands(private) == menu  # the same commands, in the same order
    assert "PATH" not in private and "/next" not in private  # no console syntax
    assert not re.search(r"\S {2,}\S", private)  # no columns aligned with spaces
    assert "/identify — What sound is this?" in private and "@shira_test_bot thunder" in private

    group = group_chat(-100610, "Help group")
    in_group = text_of(await answer(fake, fake.push_message(group, mia, "/help")))
    assert listed_commands(in_group) == menu
    # Privacy mode is on (getMe says so): the group help says what reaches the bot.
    assert "replies to my messages" in in_group and "mention @shira_test_bot" in in_group
    assert "reply /identify" in in_group and "@shira_test_bot thunder" not in in_group


async def test_start_welcomes_with_one_example_instead_of_repeating_help(bot: Running) -> None:
    fake = bot.fake
    nia = user(204, "Nia")
    welcome = text_of(await answer(fake, fake.push_message(private_chat(nia), nia, "/start")))
    helped = text_of(await answer(fake, fake.push_message(private_chat(nia), nia, "/help")))
    assert welcome.startswith("Hi! I'm shira") and "/search rain" in welcome and welcome != helped
    assert len(listed_commands(welcome)) == 0
    in_group = text_of(await answer(fake, fake.push_message(group_chat(-100611), nia, "/start")))
    assert "reply /identify to a voice note" in in_group


# ----------------------------------------------------------------- budgets


async def test_chat_actions_and_admin_lookups_do_not_spend_the_groups_message_budget(
    bot: Running, sounds: list[bytes]
) -> None:
    fake = bot.fake
    chat = group_chat(-100620, "Busy group")
    fake.set_member(chat["id"], ADMIN["id"], "administrator")
    _, v = voice_of(fake, sounds[0])
    await answer(fake, fake.push_message(chat, ADMIN, caption="/add low tone", voice=v))
    waits = []
    asks = [f"/search tone {n}" for n in range(7)] + [f"/labels add label {n}" for n in range(3)] + ["/stats"] * 3
    for text in asks:
        pushed = time.monotonic()
        reply = await answer(fake, fake.push_message(chat, ADMIN, text))
        waits.append(reply.at - pushed)
    actions = fake.calls_to("sendChatAction", chat_id=chat["id"])
    lookups = fake.calls_to("getChatMember", chat_id=chat["id"])
    messages = fake.calls_to("sendMessage", chat_id=chat["id"])
    assert len(actions) >= 8 and len(lookups) == 3 and len(messages) == 14
    assert len(actions) + len(lookups) + len(messages) > 20  # more than a group's budget, were they all counted
    print("group waits:", " ".join(f"{w:.2f}" for w in waits))
    assert max(waits) < 1.0, waits  # a counted chat action would have held replies back ~3 s each


async def test_paging_and_playing_do_not_use_up_a_users_limit(bot: Running, sounds: list[bytes]) -> None:
    fake = bot.fake
    olga = user(205, "Olga")
    chat = private_chat(olga)
    for n, data in enumerate(sounds[:3]):
        _, v = voice_of(fake, data)
        await answer(fake, fake.push_message(chat, olga, caption=f"/add clip {n}", voice=v))
    results = await answer(fake, fake.push_message(chat, olga, "/search tone"))
    shown = bot_message(fake, results)
    next_data = keyboard(results)[-1][-1][1]
    since = fake.mark()
    presses = [next_data if n % 2 == 0 else next_data[:-1] + "0" for n in range(40)]  # next, previous, next...
    presses += [keyboard(results)[0][0][1]] * 5  # and ▶ 1 five times
    for data in presses:  # 45 in all: more than the 30 a minute a user may send, were they counted as searches
        pressed = fake.push_callback(olga, shown, data)
        await fake.wait_for("answerCallbackQuery", lambda c, p=pressed: c.params["callback_query_id"] == p)  # type: ignore[misc]
    await fake.wait_for("sendVoice", lambda c: c.params["chat_id"] == olga["id"], since=since)
    alerts = [c for c in fake.calls_to("answerCallbackQuery", since=since) if c.params.get("show_alert")]
    assert alerts == []
    again = await answer(fake, fake.push_message(chat, olga, "/search chirp"))
    assert text_of(again).startswith("<b>Results for")


# ----------------------------------------------------------------- names


async def test_voice_notes_are_named_from_their_words_or_the_chat_and_date(bot: Running, sounds: list[bytes]) -> None:
    fake = bot.fake
    pia = user(206, "Pia")
    chat = private_chat(pia)
    _, v = voice_of(fake, sounds[1])
    named = text_of(await answer(fake, fake.push_message(chat, pia, caption="/add door creak", voice=v)))
    assert "<b>door creak.ogg</b>" in named
    _, v = voice_of(fake, sounds[2])
    dated = text_of(await answer(fake, fake.push_message(chat, pia, caption="/add", voice=v)))
    assert re.search(r"<b>Voice note, Pia, \d{4}-\d\d-\d\d \d\d:\d\d\.ogg</b>", dated), dated
    _, v = voice_of(fake, sounds[3])
    note = fake.push_message(chat, pia, voice=v)
    await answer(fake, note)  # a bare voice note in private: "what sound is this?"
    replied = text_of(await answer(fake, fake.push_message(chat, pia, "/add squeaky hinge", reply_to=note)))
    assert "<b>squeaky hinge.ogg</b>" in replied and "voice.ogg" not in named + dated + replied


async def test_hostile_names_are_escaped(bot: Running, sounds: list[bytes]) -> None:
    fake = bot.fake
    quinn = user(207, "Quinn")
    chat = private_chat(quinn)
    document = fake.add_file(sounds[4], kind="document", suffix="ogg").as_document(HOSTILE, "audio/ogg")
    added = await answer(fake, fake.push_message(chat, quinn, caption="/add <i>", document=document))
    shown = text_of(added)  # the fake answers 400 to HTML Telegram can't parse: getting here proves it parsed
    assert "&lt;b&gt;*b*&lt;i&gt;" in shown and "&amp; co.wav" in shown and "<b>*b*" not in shown
    found = await answer(fake, fake.push_message(chat, quinn, f"/search {HOSTILE_QUERY}"))
    assert text_of(found).startswith('<b>Results for "everyone [click](https://evil.example) &lt;b&gt;&amp;"</b>')
    assert "&lt;b&gt;*b*&lt;i&gt; _i_" in text_of(found)
    played = await fake.wait_for("sendVoice", lambda c: c.params["chat_id"] == quinn["id"])
    assert HOSTILE in played.params["caption"] and "parse_mode" not in played.params  # plain text, shown as is


# ----------------------------------------------------------------- inline mode


async def test_inline_mode_offers_sounds_telegram_has_not_seen_yet(bot: Running, sounds: list[bytes]) -> None:
    fake, engine = bot.fake, bot.engine
    rosa = user(208, "Rosa")
    old = await engine.ingest.add(f"telegram:{rosa['id']}", sounds[5], "old hiss.ogg", uploader="telegram:208")
    since = fake.mark()
    query = fake.push_inline(rosa, "old hiss")
    answered = await fake.wait_for("answerInlineQuery", lambda c: c.params["inline_query_id"] == query, since=since)
    button = answered.params["button"]
    assert answered.params["results"] == []  # Telegram holds no file of it yet...
    assert button["start_parameter"] == f"play-{old.sample_id}"  # ...but the library isn't empty
    assert button["text"] == f"Found 1 sound: tap to play #{old.sample_id} in our chat"

    # The button opens the private chat with /start play-N: the bot sends it once, and Telegram keeps a file id.
    opened = fake.push_message(private_chat(rosa), rosa, f"/start play-{old.sample_id}")
    played = await answer(fake, opened, "sendVoice")
    assert played.files["voice"].data[:4] == b"OggS" and f"#{old.sample_id}" in played.params["caption"]
    await remembered(bot, old.sample_id)
    query = fake.push_inline(rosa, "old hiss")
    again = await fake.wait_for("answerInlineQuery", lambda c: c.params["inline_query_id"] == query)
    assert [r["id"] for r in again.params["results"]] == [str(old.sample_id)] and "button" not in again.params


# ----------------------------------------------------------------- community controls


async def test_labels_are_for_admins_and_capped(bot: Running) -> None:
    fake = bot.fake
    chat = group_chat(-100630, "Label club")
    fake.set_member(chat["id"], ADMIN["id"], "administrator")
    refused = text_of(await answer(fake, fake.push_message(chat, MEMBER, "/labels add siren")))
    assert "Only an admin" in refused
    for n in range(LABEL_CAP):
        added = text_of(await answer(fake, fake.push_message(chat, ADMIN, f"/labels add siren {n}")))
        assert "Added the label" in added
    full = text_of(await answer(fake, fake.push_message(chat, ADMIN, "/labels add one too many")))
    assert f"{LABEL_CAP} labels" in full
    listed = text_of(await answer(fake, fake.push_message(chat, MEMBER, "/labels")))  # anyone may look
    assert listed == "This library's labels: siren 0, siren 1, siren 2"
    assert [c.params["user_id"] for c in fake.calls_to("getChatMember", chat_id=chat["id"])] == [MEMBER["id"]] + [
        ADMIN["id"]
    ] * (LABEL_CAP + 1)  # looked up only for changes


async def test_a_group_that_becomes_a_supergroup_keeps_its_library(bot: Running, sounds: list[bytes]) -> None:
    fake = bot.fake
    old = group_chat(-4001, "Small group", kind="group")
    new = group_chat(-1004001, "Small group")
    for data in sounds[:2]:
        _, v = voice_of(fake, data)
        await answer(fake, fake.push_message(old, ADMIN, caption="/add", voice=v))
    since = fake.mark()
    # Telegram sends both service messages (the old group's last, the supergroup's first), maybe more than once.
    fake.push_message(old, ADMIN, service={"migrate_to_chat_id": new["id"]})
    fake.push_message(new, ADMIN, service={"migrate_from_chat_id": old["id"]})
    for _ in range(250):  # updates are handled concurrently: wait for the move itself
        if await bot.engine.store.count(f"telegram:{new['id']}") == 2:
            break
        await asyncio.sleep(0.02)
    assert (await stats_text(fake, new, ADMIN)).startswith("2 sounds")
    found = text_of(await answer(fake, fake.push_message(new, ADMIN, "/search tone")))
    assert found.count("</b> #") == 2
    assert (await stats_text(fake, old, ADMIN)).startswith("0 sounds")
    assert len(fake.calls_to("sendMessage", since=since)) == 3  # the three answers above; none to service messages
    stats = await bot.engine.handle(Request("telegram", f"telegram:{old['id']}", "telegram:1", Command.STATS))
    assert stats.stats is not None and stats.stats.samples == 0


# ----------------------------------------------------------------- restarts


async def test_paging_buttons_outlive_a_restart(tmp_path: Path, tiny_model_dir: Path, sounds: list[bytes]) -> None:
    config = make_config(tmp_path / "data", tiny_model_dir, search={"k": 2})
    sara = user(209, "Sara")
    async with FakeTelegram() as fake:
        telegram = TelegramConfig(
            enabled=True, token=fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url
        )
        async with Engine.open(config) as engine:
            for n, data in enumerate(sounds[:3]):
                await engine.ingest.add("telegram:209", data, f"tone {n}.ogg", uploader="telegram:209")
            adapter = TelegramAdapter(engine, telegram, poll_timeout=1)
            await adapter.start()
            try:
                results = await answer(fake, fake.push_message(private_chat(sara), sara, "/search tone"))
            finally:
                await adapter.stop()
        shown, next_data = bot_message(fake, results), keyboard(results)[-1][-1][1]
        first_page = re.findall(r"#(\d+)", text_of(results))
        async with Engine.open(config) as engine:  # a new process: nothing in memory
            adapter = TelegramAdapter(engine, telegram, poll_timeout=1)
            await adapter.start()
            try:
                since = fake.mark()
                pressed = fake.push_callback(sara, shown, next_data)
                edit = await fake.wait_for("editMessageText", since=since)
                done = await fake.wait_for(
                    "answerCallbackQuery", lambda c: c.params["callback_query_id"] == pressed, since=since
                )
            finally:
                await adapter.stop()
    assert not done.params.get("show_alert"), done.params  # not "That search has expired"
    assert "page 2" in text_of(edit) and re.findall(r"^(\d+)\. ", text_of(edit), re.M) == ["3"]
    assert not set(re.findall(r"#(\d+)", text_of(edit))) & set(first_page)
