"""Rate limits shared through Redis: a user who spreads requests over two frontends gets one budget, not two."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.config import ClusterConfig
from core.engine import Engine
from core.messages import Command, ReplyKind, Request
from core.ratelimit import TENTHS, LocalRateLimits
from core.shared_ratelimit import RedisRateLimits
from core.streams import connect_redis
from tests.conftest import make_config
from tests.support import redis_server as servers
from tests.support.redis_server import RedisServer

redis_server = servers.redis_server  # the session's redis-server fixture


@pytest.fixture
async def limits(redis_server: RedisServer) -> AsyncIterator[tuple[RedisRateLimits, RedisRateLimits]]:
    """Two frontends' views of one cluster's windows: 2 units a minute per user, 3 per library."""
    redis = await connect_redis(ClusterConfig(redis_url=redis_server.url))
    prefix = f"{redis_server.prefix()}:"
    try:
        yield RedisRateLimits(redis, 2, 3, prefix), RedisRateLimits(redis, 2, 3, prefix)
    finally:
        await redis.aclose()


async def test_two_frontends_charge_one_users_budget(limits: tuple[RedisRateLimits, RedisRateLimits]) -> None:
    one, two = limits
    assert await one.charge("alice", "lib", TENTHS) is None
    assert await two.charge("alice", "lib", TENTHS) is None
    full = await one.charge("alice", "lib", TENTHS)
    assert full is not None and full[0] == "user" and 55 < full[1] <= 60
    assert await two.charge("bob", "lib", TENTHS) is None  # bob has his own window; the library has room for 3
    full = await two.charge("carol", "lib", TENTHS)
    assert full is not None and full[0] == "library"


async def test_the_shared_windows_behave_like_the_local_ones(limits: tuple[RedisRateLimits, RedisRateLimits]) -> None:
    shared, _ = limits
    local = LocalRateLimits(2, 3)
    steps = [("charge", 15), ("charge", 10), ("adjust", -10), ("charge", 10), ("charge", 1), ("adjust", 5)]
    for step, weight in steps:
        if step == "charge":
            a, b = await shared.charge("u", "s", weight), await local.charge("u", "s", weight)
            assert (a is None) == (b is None) and (a is None or a[0] == b[0]), (step, weight, a, b)
        else:
            await shared.adjust("u", "s", weight)
            await local.adjust("u", "s", weight)
    assert await shared.charge("u", "s", 1) is not None and await local.charge("u", "s", 1) is not None


async def test_engines_with_a_redis_url_share_rate_limits(
    tmp_path: Path, tiny_model_dir: Path, redis_server: RedisServer
) -> None:
    cluster = ClusterConfig(redis_url=redis_server.url, key_prefix=redis_server.prefix())
    base = make_config(tmp_path / "a", tiny_model_dir, limits={"requests_per_minute": 2})
    config_a = dataclasses.replace(base, cluster=cluster)
    config_b = dataclasses.replace(config_a, data_dir=tmp_path / "b")
    stats = Request(platform="test", space="lib", user="test:alice", command=Command.STATS)
    heavy = dataclasses.replace(stats, command=Command.REMOVE, text="999")  # 0.2 units each, no model needed
    async with Engine.open(config_a, model=False) as a, Engine.open(config_b, model=False) as b:
        kinds = []
        for engine in [a, b] * 6:
            kinds.append((await engine.handle(heavy)).kind)
        assert kinds.count(ReplyKind.BUSY) == 2  # 10 x 0.2 units fit in 2; the 11th and 12th do not
        assert (await a.handle(stats)).kind is ReplyKind.BUSY  # and so is anything else alice asks either
