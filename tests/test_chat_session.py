"""A new user's first session on Telegram, scripted, in a private chat and then in a group (issue #11).

Help, ten additions (documents and voice notes), a search paged twice, ▶, "more like this", an inline query and
a removal, with the default rate limits and Telegram's real group limit of 20 messages a minute. Every number,
name and button in the transcript is checked, no limit is met, and no reply that needs no model is slow.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.telegram.translate import MENU
from tests.conftest import make_config
from tests.fakes.telegram_api import Call, FakeTelegram, group_chat, private_chat, user
from tests.support.sounds import chirp, encode, noise, tone
from tests.support.telegram_bot import Running, running_bot
from tests.test_telegram_e2e import answer, bot_message, keyboard

pytestmark = pytest.mark.asyncio(loop_scope="module")

Json = dict[str, Any]
K = 3  # results a page: ten sounds make pages 1–3, 4–6, 7–9 and 10
MODEL_FREE_SECONDS = 1.0  # loose: a reply held back by a flood limit waits three seconds or more
NEWCOMER = user(301, "Tess", "tess")


@dataclass
class Transcript:
    """What was said, what came back and how long it took."""

    lines: list[str] = field(default_factory=list)
    model_free: list[tuple[str, float]] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    def note(self, said: str, reply: Call, pushed: float, needs_model: bool) -> None:
        seconds = reply.at - pushed
        shown = str(reply.params.get("text") or reply.params.get("caption") or reply.method)
        first = re.sub(r"<[^>]+>", "", shown.splitlines()[0])
        self.lines.append(f"{said:<32} → {first[:90]}  ({seconds * 1000:.0f} ms)")
        self.replies.append(shown)
        if not needs_model:
            self.model_free.append((said, seconds))


@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    """Ten sounds: five WAV documents and five OGG voice notes, all named "tone n"."""
    d = tmp_path_factory.mktemp("session-sounds")
    clips = [tone(1.0, 220.0 + 70 * i) for i in range(6)] + [chirp(1.3, 200.0 + 50 * i) for i in range(2)]
    clips += [tone(0.8, 900.0) + noise(0.8, seed=i) * 0.1 for i in range(2)]
    made = []
    for n, clip in enumerate(clips, start=1):
        kind = "wav" if n % 2 else "ogg"
        made.append((kind, encode(clip, d / f"tone {n}.{kind}", kind).read_bytes()))
    return made


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> AsyncIterator[Running]:
    config = make_config(tmp_path_factory.mktemp("session"), tiny_model_dir, search={"k": K})  # default rate limits
    async with FakeTelegram() as fake, running_bot(fake, config, poll_timeout=5) as on:  # 20 messages a minute a group
        yield on


async def say(
    bot: Running, log: Transcript, chat: Json, text: str, needs_model: bool = False, label: str = "", **parts: Any
) -> Call:
    """Send a message as the newcomer and wait for the bot's text reply to it."""
    pushed = time.monotonic()
    message = bot.fake.push_message(chat, NEWCOMER, text or None, **parts)
    reply = await answer(bot.fake, message)
    said = text or str(parts.get("caption"))
    log.note(f"{said} {label}".strip() if label else said, reply, pushed, needs_model)
    return reply


async def press(
    bot: Running, log: Transcript, shown: Call, label: str, method: str, needs_model: bool = False
) -> tuple[Call, str]:
    """Press the button labelled `label` on a bot message; returns the call it caused and the button's data."""
    data = next(d for row in keyboard(shown) for text, d in row if text == label)
    since = bot.fake.mark()
    pushed = time.monotonic()
    bot.fake.push_callback(NEWCOMER, bot_message(bot.fake, shown), data)
    reply = await bot.fake.wait_for(method, lambda c: c.params["chat_id"] == shown.params["chat_id"], since=since)
    log.note(f"[{label}]", reply, pushed, needs_model)
    return reply, data


def ranks(call: Call) -> list[int]:
    return [int(n) for n in re.findall(r"^(\d+)\. ", str(call.params["text"]), re.MULTILINE)]


def shown_ids(call: Call) -> list[int]:
    return [int(n) for n in re.findall(r"</b> #(\d+) ·", str(call.params["text"]))]


def button_row(call: Call, row: int) -> list[str]:
    return [text for text, _ in keyboard(call)[row]]


async def session(bot: Running, sounds: list[tuple[str, bytes]], chat: Json, log: Transcript) -> dict[str, int]:
    """The scripted session in one chat; returns the added sounds' ids by name."""
    fake = bot.fake
    group = chat["type"] != "private"
    helped = await say(bot, log, chat, "/help")
    assert re.findall(r"^/(\w+)", str(helped.params["text"]), re.M) == [name for name, _ in MENU]

    ids: dict[str, int] = {}
    for n, (kind, data) in enumerate(sounds, start=1):
        name = f"tone {n}.{kind}"
        if kind == "wav":
            document = fake.add_file(data, kind="document", suffix="wav").as_document(name, "audio/x-wav")
            added = await say(bot, log, chat, "", True, caption="/add", document=document, label=f"+ {name}")
        else:
            voice = fake.add_file(data, kind="voice").as_voice(duration=1)
            added = await say(bot, log, chat, "", True, caption=f"/add tone {n}", voice=voice, label="+ voice note")
        text = str(added.params["text"])
        found = re.fullmatch(rf"✅ Added <b>{re.escape(name)}</b> as #(\d+) \((\d+\.\d) s\)\.(\n.*)?", text, re.S)
        assert found, text
        ids[name] = int(found.group(1))
        assert keyboard(added)[0] == [("▶ Play", f"a:{ids[name]}"), ("≈ More like this", f"m:{ids[name]}")]
    assert len(set(ids.values())) == 10 and sorted(ids.values()) == list(ids.values())  # new ids, in order
    names = {v: k for k, v in ids.items()}

    results = await say(bot, log, chat, "/search tone", True)
    assert str(results.params["text"]).startswith('<b>Results for "tone"</b> · page 1\n')
    assert ranks(results) == [1, 2, 3] and button_row(results, 0) == ["▶ 1", "▶ 2", "▶ 3"]
    assert button_row(results, 1) == ["≈ 1", "≈ 2", "≈ 3"] and button_row(results, 2) == ["Next »"]
    pages = [shown_ids(results)]
    for page, first in ((2, 4), (3, 7)):
        edit, _ = await press(bot, log, results, "Next »", "editMessageText")
        results = as_edited(results, edit)
        assert str(edit.params["text"]).startswith(f'<b>Results for "tone"</b> · page {page}\n')
        assert ranks(edit) == [first, first + 1, first + 2]
        assert button_row(edit, 0) == [f"▶ {first + i}" for i in range(3)]
        assert button_row(edit, 1) == [f"≈ {first + i}" for i in range(3)]
        assert button_row(edit, 2) == ["« Prev", "Next »"]  # a tenth sound remains for page 4
        pages.append(shown_ids(edit))
    seen = [i for page in pages for i in page]
    assert len(seen) == 9 and len(set(seen)) == 9 and set(seen) <= set(ids.values())
    for line, sample in zip(
        re.findall(r"^\d+\. <b>([^<]+)</b> #(\d+)", str(results.params["text"]), re.M), pages[2], strict=True
    ):
        assert line == (names[sample], str(sample))  # each line's name is that number's sound

    played, _ = await press(bot, log, results, "▶ 7", "sendVoice")
    assert played.params["caption"] == f"▶ #{pages[2][0]} {names[pages[2][0]]}"
    more, _ = await press(bot, log, results, "≈ 8", "sendMessage")
    similar = shown_ids(more)
    assert str(more.params["text"]).startswith(f"<b>More like #{pages[2][1]} {names[pages[2][1]]}</b> · page 1\n")
    assert ranks(more) == [1, 2, 3] and pages[2][1] not in similar and button_row(more, 0) == ["▶ 1", "▶ 2", "▶ 3"]

    if not group:
        since = fake.mark()
        pushed = time.monotonic()
        query = fake.push_inline(NEWCOMER, "tone")
        inline = await fake.wait_for("answerInlineQuery", lambda c: c.params["inline_query_id"] == query, since=since)
        log.note("@shira_test_bot tone", inline, pushed, True)
        offered = [int(r["id"]) for r in inline.params["results"]]
        assert len(offered) == 10 and set(offered) == set(ids.values()) and "button" not in inline.params
        assert {r["type"] for r in inline.params["results"]} == {"voice"}  # every one playable, documents too

    gone = pages[0][0]
    removed = await say(bot, log, chat, f"/remove {gone}")
    assert removed.params["text"] == f"Removed #{gone} {names[gone]}."
    stats = await say(bot, log, chat, "/stats")
    assert str(stats.params["text"]).startswith("9 sounds, ") and "from 1 person;" in str(stats.params["text"])
    return ids


def as_edited(results: Call, edit: Call) -> Call:
    """The results message as it reads after an edit (the same message, new text and buttons)."""
    return Call(
        results.method, {**results.params, "text": edit.params["text"], "reply_markup": edit.params["reply_markup"]}
    )


async def test_a_new_users_first_session_in_private_and_in_a_group(
    bot: Running, sounds: list[tuple[str, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    fake = bot.fake
    private, group = private_chat(NEWCOMER), group_chat(-100901, "Sound club")
    fake.set_member(group["id"], NEWCOMER["id"], "member")
    logs = {"private": Transcript(), "group": Transcript()}
    await session(bot, sounds, private, logs["private"])
    await session(bot, sounds, group, logs["group"])

    with capsys.disabled():
        for where, log in logs.items():
            print(f"\n--- {where} chat")
            print("\n".join(log.lines))
    everything = [r for log in logs.values() for r in log.replies]
    assert not [r for r in everything if "too quickly" in r or "very busy" in r or r.startswith("⏳")]
    slow = [(said, round(s, 2)) for log in logs.values() for said, s in log.model_free if s > MODEL_FREE_SECONDS]
    assert slow == []
    assert (
        len(fake.calls_to("sendMessage", chat_id=group["id"]))
        + len(fake.calls_to("editMessageText", chat_id=group["id"]))
        + len(fake.calls_to("sendVoice", chat_id=group["id"]))
        <= 20
    )  # the group's minute of messages sufficed
    assert not fake.calls_to("sendAudio", chat_id=group["id"])
    assert len(fake.calls_to("sendVoice", chat_id=group["id"])) == 1  # only the ▶ pressed: nothing posted unasked
