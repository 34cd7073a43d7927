"""/timeline on Telegram: the real PTB Application and a real Engine (tiny CLAP) against the fake Bot API.

A video comes with /timeline as its caption, or is replied to with /timeline; one progress message is sent and
edited, then becomes the summary, and the chart (a photo) and the subtitles (a .srt document) follow.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from adapters.telegram.adapter import LATE, TelegramAdapter
from adapters.telegram.translate import MENU
from core.cues import parse_srt
from core.inbox import SqliteInbox
from tests.conftest import make_config
from tests.fakes.telegram_api import Call, FakeTelegram, StoredFile, group_chat, make_message, private_chat, user
from tests.support.sounds import SR, noise, tone, video
from tests.support.telegram_bot import Running, running_bot, telegram_config
from tests.test_telegram_e2e import answer

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.timeout(300)]

Json = dict[str, object]
MAX_SECONDS = 20.0  # the module's [timeline] max_seconds
MAX_BYTES = 4 * 1024 * 1024  # and max_bytes
SECONDS = 18  # the programme's length


def programme(seconds: float = SECONDS) -> np.ndarray:
    """A tone, noise and silence, in thirds."""
    third = seconds / 3
    return np.concatenate([tone(third, 880.0), noise(third, seed=4), np.zeros(int(third * SR), np.float32)])


@dataclass
class World:
    bot: Running
    mp4: bytes
    data_dir: Path

    @property
    def fake(self) -> FakeTelegram:
        return self.bot.fake

    def video(self, file_size: int | None = None, duration: int = SECONDS) -> tuple[StoredFile, Json]:
        """The programme as a Telegram video, and the Video object a message carries."""
        stored = self.fake.add_file(self.mp4, kind="video", suffix="mp4", file_size=file_size)
        return stored, stored.as_video("walk.mp4", duration=duration)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("tg-timeline")
    mp4 = video(programme(), tmp / "walk.mp4").read_bytes()
    config = make_config(
        tmp / "data", tiny_model_dir, timeline={"max_seconds": MAX_SECONDS, "max_bytes": MAX_BYTES, "chart_rows": 4}
    )
    async with FakeTelegram() as fake, running_bot(fake, config, group_messages_per_minute=1000, poll_timeout=5) as on:
        yield World(on, mp4, tmp / "data")


def texts(calls: list[Call]) -> list[str]:
    return [str(c.params["text"]) for c in calls]


async def delivered(fake: FakeTelegram, asked: Json, since: int) -> tuple[Call, list[str], Call]:
    """The progress message's texts (sent, then each edit) and the photo, once the .srt document has arrived."""
    document = await answer(fake, asked, "sendDocument", timeout=120)
    chat_id = asked["chat"]["id"]  # type: ignore[index]
    (progress,) = [c for c in fake.calls_to("sendMessage", since, chat_id) if "Analysing" in str(c.params["text"])]
    edits = fake.calls_to("editMessageText", since, chat_id)
    (photo,) = fake.calls_to("sendPhoto", since, chat_id)
    return photo, texts([progress, *edits]), document


def check_files(photo: Call, document: Call) -> list[tuple[float, float, str]]:
    """The chart decodes and is captioned with the summary; the subtitles parse back; returns the cues."""
    with Image.open(io.BytesIO(photo.files["photo"].data)) as chart:
        chart.load()
        assert chart.format == "PNG" and chart.width >= 200
    assert str(photo.params["caption"]).startswith(f"Timeline of 0:{SECONDS}: ")
    upload = document.files["document"]
    assert upload.filename == "walk.srt"
    cues = parse_srt(upload.data.decode("utf-8"))
    assert all(0 <= start < end <= SECONDS + 0.01 for start, end, _ in cues)
    return cues


async def test_timeline_is_in_the_menu() -> None:
    assert "timeline" in dict(MENU)


async def test_a_video_captioned_timeline_gets_progress_then_the_chart_and_the_subtitles(world: World) -> None:
    fake, ann = world.fake, user(301, "Ann")
    since = fake.mark()
    _, clip = world.video()
    asked = fake.push_message(private_chat(ann), ann, caption="/timeline a tone, noise", video=clip)
    photo, shown, document = await delivered(fake, asked, since)
    first, *progress, final = shown
    assert first == f"Analysing… 0:00 of 0:{SECONDS}"  # Telegram declares a video's length
    assert progress and all(text.startswith("Analysing… 0:") and text.endswith(f"of 0:{SECONDS}") for text in progress)
    assert final.startswith(f"<b>Timeline of 0:{SECONDS}: ")
    cues = check_files(photo, document)
    assert {label for _, _, label in cues} <= {"a tone", "noise"}


async def test_a_reply_to_a_video_in_a_group_works_the_same(world: World) -> None:
    fake, bo = world.fake, user(302, "Bo")
    group = group_chat(-100701, "Walks")
    _, clip = world.video()
    posted = make_message(9001, group, user(303, "Cy"), caption="our walk", video=clip)
    fake.know(posted)
    since = fake.mark()
    asked = fake.push_message(group, bo, "/timeline", reply_to=posted)
    photo, shown, document = await delivered(fake, asked, since)
    assert len(shown) >= 3 and shown[-1].startswith("<b>Timeline of")
    check_files(photo, document)


async def test_too_big_too_large_and_too_long_get_a_friendly_answer(world: World) -> None:
    fake, di = world.fake, user(304, "Di")
    chat = private_chat(di)
    cases = (
        (world.video(file_size=25 * 1024 * 1024), "Telegram only lets bots download files up to 20 MB"),
        (world.video(file_size=MAX_BYTES + 1), "the limit is 4 MB"),  # the timeline's own [timeline] max_bytes
        (world.video(duration=45), "That sound lasts 45 s; the limit is 20 s"),  # as declared: nothing downloaded
    )
    for (stored, clip), expected in cases:
        since = fake.mark()
        fake.push_message(chat, di, caption="/timeline", video=clip)
        await fake.wait_until(
            lambda e=expected, s=since: any(e in str(c.params.get("text")) for c in fake.calls[s:]), 60
        )
        assert not [c for c in fake.calls_to("getFile") if c.params.get("file_id") == stored.file_id]
    assert not fake.calls_to("sendPhoto", 0, chat["id"]) and not fake.calls_to("sendDocument", 0, chat["id"])


async def test_a_timeline_left_by_a_restart_is_answered_late(world: World) -> None:
    fake, eve = world.fake, user(305, "Eve")
    _, clip = world.video()
    asked = make_message(9101, private_chat(eve), eve, caption="/timeline", video=clip)
    fake.know(asked)
    update = {"update_id": 990001, "message": asked}
    since = fake.mark()
    async with SqliteInbox.open(world.data_dir / "shira.db") as inbox:
        await inbox.record("telegram", {"990001": update})  # journaled by a run that stopped before answering
        late = TelegramAdapter(world.bot.engine, telegram_config(fake), poll_timeout=5, inbox=inbox)
        await world.bot.adapter.stop()  # one poller at a time on the fake
        await late.start()
        try:
            photo, shown, document = await delivered(fake, asked, since)
        finally:
            await late.drain(10)
            await late.stop()
        assert all(text.startswith(LATE) for text in shown)
        check_files(photo, document)
        assert [e.key for e in await inbox.pending("telegram")] == []
