"""/timeline on Discord: the real discord.py client and a real Engine (tiny CLAP) against the fake Discord.

A video goes in as the slash command's attachment; the deferred answer is edited with progress, then becomes the
summary with the chart and the subtitles attached. Too large, too long and over-budget files get a friendly word.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from adapters.discord import create
from adapters.discord.adapter import LATE, DiscordAdapter
from core.config import Config
from core.cues import parse_srt
from core.engine import Engine
from core.inbox import SqliteInbox
from tests.conftest import make_config
from tests.fakes.discord_api import Call, FakeDiscord, user_payload
from tests.support.sounds import SR, noise, tone, video

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.timeout(300)]

MAX_SECONDS = 20.0  # the module's [timeline] max_seconds
MAX_BYTES = 4 * 1024 * 1024  # and max_bytes
BUDGET = 3  # requests a minute per user: a search is 1, a timeline a unit per minute of audio


def programme(seconds: float = 18.0) -> np.ndarray:
    """A tone, noise and silence, in thirds."""
    third = seconds / 3
    return np.concatenate([tone(third, 880.0), noise(third, seed=4), np.zeros(int(third * SR), np.float32)])


@dataclass
class World:
    fake: FakeDiscord
    engine: Engine
    config: Config
    adapter: DiscordAdapter
    inbox: SqliteInbox
    mp4: bytes
    webm: bytes


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("discord-timeline")
    mp4 = video(programme(), tmp / "walk.mp4").read_bytes()
    webm = video(programme(), tmp / "walk.webm").read_bytes()
    async with FakeDiscord() as fake:
        config = make_config(
            tmp / "data",
            tiny_model_dir,
            limits={"requests_per_minute": BUDGET},
            timeline={"max_seconds": MAX_SECONDS, "max_bytes": MAX_BYTES, "chart_rows": 4},
            discord=fake.section(),
        )
        async with Engine.open(config) as engine, SqliteInbox.open(Path(config.data_dir) / "shira.db") as inbox:
            adapter = create(engine, config.discord, inbox=inbox)
            await adapter.start()
            world = World(fake, engine, config, adapter, inbox, mp4, webm)
            try:
                yield world
            finally:
                await world.adapter.stop()  # a restart test may have replaced it


def user(world: World, name: str) -> dict[str, Any]:
    """A new user, with a fresh rate-limit budget."""
    return user_payload(world.fake.new_id(), name)


def patches(fake: FakeDiscord, interaction: dict[str, Any]) -> list[Call]:
    """The edits of an interaction's deferred answer, in order."""
    return [
        c
        for c in fake.interaction_calls(interaction)
        if c.method == "PATCH" and c.path.endswith("/@original") and c.status == 200
    ]


def answered(fake: FakeDiscord, interaction: dict[str, Any]) -> bool:
    """The final answer: an edit that isn't progress, or an ephemeral follow-up."""
    calls = fake.interaction_calls(interaction)
    follow_up = any(c.method == "POST" and c.path.startswith("/webhooks/") for c in calls)
    edits = [str((c.body or {}).get("content") or "") for c in patches(fake, interaction)]
    return follow_up or any(not text.startswith("Analysing") for text in edits)


async def timeline(
    world: World, who: dict[str, Any], filename: str, data: bytes, labels: str = "", size: int | None = None
) -> dict[str, Any]:
    """Run /timeline on an attachment and wait for its answer; returns the interaction."""
    fake = world.fake
    mime = "video/webm" if filename.endswith(".webm") else "video/mp4"
    file = fake.add_attachment(filename, data, mime, size=size)
    interaction = fake.slash("timeline", who, {"labels": labels} if labels else None, attachments={"file": file})
    await fake.dispatch("INTERACTION_CREATE", interaction)
    await fake.wait_until(lambda: answered(fake, interaction), 120)
    return interaction


def error_text(fake: FakeDiscord, interaction: dict[str, Any]) -> str:
    """The ephemeral follow-up an error becomes."""
    (follow_up,) = [c for c in fake.interaction_calls(interaction) if c.method == "POST" and "/webhooks/" in c.path]
    return str(follow_up.body["content"])


def check_answer(final: Call, stem: str) -> list[tuple[float, float, str]]:
    """The chart decodes, the subtitles parse back, and the embed shows the chart; returns the cues."""
    files = {f.filename: f.data for f in final.files}
    assert set(files) == {f"{stem}.png", f"{stem}.srt"}
    with Image.open(io.BytesIO(files[f"{stem}.png"])) as chart:
        chart.load()
        assert chart.format == "PNG" and chart.width >= 200 and chart.height >= 50
    cues = parse_srt(files[f"{stem}.srt"].decode("utf-8"))
    assert all(0 <= start < end <= 18.0 + 0.01 for start, end, _ in cues)
    (embed,) = final.body["embeds"]
    assert embed["title"] == "Timeline of 0:18"
    assert embed["image"]["url"] == f"attachment://{stem}.png"
    return cues


async def test_timeline_is_registered_with_a_file_and_labels(world: World) -> None:
    fake = world.fake
    (synced,) = fake.find("PUT", rf"/applications/{fake.app_id}/guilds/{fake.guild_id}/commands", status=200)
    (registered,) = [c for c in synced.body if c["name"] == "timeline"]
    options = {o["name"]: o for o in registered["options"]}
    assert options["file"]["type"] == 11 and options["file"]["required"]
    assert options["labels"]["type"] == 3 and not options["labels"].get("required")


async def test_a_video_gets_progress_edits_then_the_chart_and_the_subtitles(world: World) -> None:
    fake = world.fake
    interaction = await timeline(world, user(world, "ann"), "walk.mp4", world.mp4, "a tone, noise")
    calls = fake.interaction_calls(interaction)
    assert calls[0].path.endswith("/callback") and calls[0].body["type"] == 5  # deferred: "thinking…"
    *progress, final = patches(fake, interaction)
    assert progress, "no progress edit"
    assert all(c.body["content"].startswith("Analysing… 0:") and not c.files for c in progress)
    assert progress[0].body["content"] == "Analysing… 0:18 so far"  # Discord declares no length for a video
    assert not final.body.get("content")  # the progress line is gone
    cues = check_answer(final, "walk")
    assert {label for _, _, label in cues} <= {"a tone", "noise"}


async def test_a_webm_video_works_the_same(world: World) -> None:
    interaction = await timeline(world, user(world, "bea"), "walk.webm", world.webm)
    check_answer(patches(world.fake, interaction)[-1], "walk")


async def test_too_large_and_too_long_files_get_a_friendly_answer(world: World, tmp_path: Path) -> None:
    fake = world.fake
    big = await timeline(world, user(world, "cy"), "big.mp4", world.mp4, size=MAX_BYTES + 1)
    assert "the limit is 4 MB" in error_text(fake, big)
    assert not fake.downloads or not any(d.endswith("/big.mp4") for d in fake.downloads)  # refused before download
    long = video(programme(26.0), tmp_path / "long.mp4").read_bytes()
    too_long = await timeline(world, user(world, "di"), "long.mp4", long)
    assert "longer than the 20 s limit" in error_text(fake, too_long)


async def test_a_timeline_spends_the_budget_by_its_length(world: World) -> None:
    # 18 s of video: a unit (a started minute), settled once decoded, whatever its size suggested up front.
    fake, eve = world.fake, user(world, "eve")
    await timeline(world, eve, "walk.mp4", world.mp4)
    search = fake.slash("search", eve, {"query": "rain"})
    await fake.dispatch("INTERACTION_CREATE", search)
    await fake.wait_until(lambda: bool(patches(fake, search)), 60)
    # 1 + 1 of 3 units spent: a second timeline fits, a third does not.
    await timeline(world, eve, "walk.mp4", world.mp4)
    refused = await timeline(world, eve, "walk.mp4", world.mp4)
    assert "A timeline costs a request per minute of audio" in error_text(fake, refused)


async def test_an_answer_that_outlives_its_token_is_posted_in_the_channel(world: World) -> None:
    fake, gil = world.fake, user(world, "gil")
    file = fake.add_attachment("late.mp4", world.mp4, "video/mp4")
    interaction = fake.slash("timeline", gil, attachments={"file": file})

    def lapse(call: Call) -> None:  # the token lapses at the first progress edit: a very long recording
        if call.method == "PATCH" and interaction["token"] in call.path:
            fake.expire(interaction)

    fake.observe(lapse)
    posts = rf"/channels/{fake.channel_id}/messages"
    before = len(fake.find("POST", posts))
    await fake.dispatch("INTERACTION_CREATE", interaction)
    (posted,) = (await fake.wait_for("POST", posts, count=before + 1, timeout=120))[before:]
    assert [c.status for c in patches(fake, interaction)] == []  # every edit was refused: 401
    assert posted.body["content"] == f"<@{gil['id']}>"  # named, and not pinged (no allowed mentions)
    assert posted.body["allowed_mentions"]["parse"] == []
    check_answer(posted, "late")


async def test_a_timeline_left_by_a_restart_is_answered_with_progress(world: World) -> None:
    fake, ann = world.fake, user(world, "fay")
    release = fake.hold_download("kept.mp4")
    file = fake.add_attachment("kept.mp4", world.mp4, "video/mp4")
    interaction = fake.slash("timeline", ann, attachments={"file": file})
    first = create(world.engine, world.config.discord, inbox=world.inbox)
    await world.adapter.stop()  # one bot at a time on the fake gateway
    await first.start()
    try:
        await fake.dispatch("INTERACTION_CREATE", interaction)
        await fake.wait_until(lambda: any(d.endswith("/kept.mp4") for d in fake.downloads))
    finally:
        await first.drain(0)
        await first.stop()
    assert [c.path.rsplit("/", 1)[1] for c in fake.interaction_calls(interaction)] == ["callback"]
    release.set()
    world.adapter = create(world.engine, world.config.discord, inbox=world.inbox)
    await world.adapter.start()
    await fake.wait_until(lambda: answered(fake, interaction), 120)
    *progress, final = patches(fake, interaction)
    assert progress and all(c.body["content"].startswith("Analysing…") for c in progress)
    assert final.body["content"] == LATE
    check_answer(final, "kept")
