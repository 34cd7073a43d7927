"""Rate limits by cost: what each request weighs, and when a refused one may try again."""

from __future__ import annotations

from core.messages import AudioRef, Command, Request
from core.ratelimit import TENTHS, RateLimiter, cost


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
