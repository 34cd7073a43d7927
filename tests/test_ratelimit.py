"""Rate limits by cost: what each request weighs, and when a refused one may try again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from core.files import local_ref
from core.messages import AudioRef, Command, ReplyKind, Request
from core.ratelimit import TENTHS, TIMELINE_BYTES_PER_MINUTE, RateLimiter, cost, timeline_cost
from tests.conftest import make_config
from tests.support.sounds import encode, tone


async def _never() -> bytes:
    raise AssertionError("not downloaded")


def request(command: Command, **kw: object) -> Request:
    return Request("test", "s", "u", command, **kw)  # type: ignore[arg-type]


def test_model_work_costs_a_unit_and_lookups_a_tenth() -> None:
    assert [cost(request(c)) for c in (Command.SEARCH, Command.SIMILAR, Command.IDENTIFY, Command.ADD)] == [10] * 4
    assert [cost(request(c)) for c in (Command.PAGE, Command.PLAY, Command.STATS, Command.LABELS)] == [1] * 4
    assert cost(request(Command.HELP)) == cost(request(Command.START)) == cost(request(Command.REMEMBER)) == 0
    assert cost(request(Command.PLAY, fresh_upload=True)) == 0  # the adapter finishing a paid-for reply
    long = AudioRef("long.wav", _never, duration=5 * 60.0)
    assert cost(request(Command.ADD, audio=(long,))) == 5 * TENTHS  # a unit per started minute
    huge = AudioRef("huge.wav", _never, duration=3600.0)
    assert cost(request(Command.ADD, audio=(huge,))) == 10 * TENTHS


def test_the_window_slides_and_says_when_there_is_room() -> None:
    limiter = RateLimiter(per_minute=2)
    assert limiter.allow("u", 10, now=0.0) and limiter.allow("u", 5, now=10.0)
    assert not limiter.allow("u", 10, now=20.0)
    assert limiter.wait("u", 10, now=20.0) == 40.0  # when the first unit leaves the window
    assert limiter.wait("u", 5, now=20.0) == 0.0  # half a unit still fits
    assert limiter.allow("u", 10, now=60.0)
    assert limiter.allow("other", 20, now=20.0)  # per key
    assert RateLimiter(0).allow("u", 10**6)  # 0 disables
    assert RateLimiter(1).allow("u", 50, now=0.0)  # one request heavier than the budget still goes through alone


def test_a_timeline_costs_a_unit_per_minute_of_audio() -> None:
    forty = AudioRef("walk.mp4", _never, size=900 * 1024 * 1024, duration=40 * 60.0)  # the declared length wins
    assert cost(request(Command.TIMELINE, audio=(forty,))) == 40 * TENTHS == 40 * cost(request(Command.SEARCH))
    assert timeline_cost(40 * 60.0) == 40 * TENTHS and timeline_cost(61.0) == 2 * TENTHS == timeline_cost(120.0)
    assert timeline_cost(0.5) == timeline_cost(60.0) == TENTHS  # at least a unit
    sized = AudioRef("walk.mp4", _never, size=10 * TIMELINE_BYTES_PER_MINUTE)  # no length declared: by its size
    assert cost(request(Command.TIMELINE, audio=(sized,))) == 10 * TENTHS
    assert cost(request(Command.TIMELINE)) == TENTHS  # no file: refused as such, for the price of a look


def test_a_charge_is_settled_up_or_down() -> None:
    limiter = RateLimiter(per_minute=10)
    limiter.spend("u", 30, now=0.0)
    limiter.spend("u", 50, now=1.0)
    limiter.adjust("u", -45, now=2.0)  # charged 50 for what turned out to weigh 5: 40 given back, then 5 more
    assert limiter.wait("u", 65, now=2.0) == 0.0 and limiter.wait("u", 66, now=2.0) > 0
    limiter.adjust("u", 60, now=3.0)  # more than thought
    assert limiter.wait("u", 5, now=3.0) == 0.0 and limiter.wait("u", 6, now=3.0) > 0
    limiter.adjust("u", -1000, now=4.0)  # never below nothing
    assert limiter.wait("u", 100, now=4.0) == 0.0 and limiter.allow("u", 100, now=4.0)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_timeline_is_charged_by_its_decoded_length(tmp_path: Path, tiny_model_dir: Path) -> None:
    from core.engine import Engine

    config = make_config(tmp_path / "data", tiny_model_dir, limits={"requests_per_minute": 3})
    path = encode(tone(5.0, 440.0), tmp_path / "short.wav")
    said_long = dataclasses.replace(local_ref(path), duration=40 * 60.0)  # a platform's claim: 40 minutes
    ask = Request("test", "s", "u", Command.TIMELINE, "a tone", (said_long,))
    async with Engine.open(config, warm_labels=False) as engine:
        first = await engine.handle(ask)  # heavier than the whole budget: it goes through alone...
        assert first.kind is ReplyKind.TIMELINE, first.text
        # ...charged 40 units up front, and settled to the 1 unit its 5 decoded seconds weigh: 2 more units fit.
        searches = [await engine.handle(Request("test", "s", "u", Command.SEARCH, "rain")) for _ in range(2)]
        assert [r.kind for r in searches] == [ReplyKind.RESULTS] * 2
        refused = await engine.handle(ask)  # the budget is spent: a friendly word on when to try again
        assert refused.kind is ReplyKind.BUSY
        assert (
            refused.text.startswith("A timeline costs a request per minute of audio") and "try again in" in refused.text
        )
        other = await engine.handle(dataclasses.replace(ask, user="v"))  # another user's budget is their own
        assert other.kind is ReplyKind.TIMELINE
