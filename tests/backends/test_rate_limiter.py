"""The rate limiters behind :class:`replyhq_trio.ports.RateLimiter`: sliding windows in
memory (on Trio's clock, driven here by the autojump clock) and in the real Redis (on
Redis's clock, shared by every node)."""

from __future__ import annotations

import logging

import attrs
import pytest
import trio
import trio.testing

from replyhq_trio.backends import (
    AsyncioBridge,
    MemoryRateLimiter,
    RedisPresence,
    rate_limiter_for,
)
from replyhq_trio.ports import Limit, RateLimiter

from .. import _redis
from .._waiting import wait_for, wait_until
from ._presence import FAST, new_session, open_cluster

MINUTE = Limit("message", 3, 60.0)


# --- in memory, on the autojump clock ------------------------------------------------------


async def test_memory_admits_the_count_then_says_when_to_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = MemoryRateLimiter()
    start = trio.current_time()
    assert [await limiter.hit(MINUTE, "a:d") for _ in range(3)] == [0.0, 0.0, 0.0]
    await trio.sleep(10)
    wait = await limiter.hit(MINUTE, "a:d")
    assert wait == pytest.approx(50.0)  # the first event leaves the window at 60 s
    assert await limiter.wait_time(MINUTE, "a:d") == pytest.approx(50.0)
    await trio.sleep(wait - 0.001)
    assert await limiter.hit(MINUTE, "a:d") > 0  # not a moment early
    await trio.sleep(0.001)
    assert await limiter.hit(MINUTE, "a:d") == 0.0
    assert trio.current_time() - start == pytest.approx(60.0)


async def test_memory_window_slides_and_refusals_are_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = MemoryRateLimiter()
    two = Limit("typing", 2, 60.0)
    assert await limiter.hit(two, "k") == 0.0  # t=0
    await trio.sleep(30)
    assert await limiter.hit(two, "k") == 0.0  # t=30
    for _ in range(100):  # a flood of refusals moves nothing
        assert await limiter.hit(two, "k") == pytest.approx(30.0)
    await trio.sleep(31)  # t=61: the t=0 event left, the t=30 one is still in
    assert await limiter.hit(two, "k") == 0.0
    assert await limiter.hit(two, "k") == pytest.approx(29.0)  # until t=90


async def test_memory_wait_time_counts_nothing(autojump_clock: trio.testing.MockClock) -> None:
    limiter = MemoryRateLimiter()
    for _ in range(10):
        assert await limiter.wait_time(MINUTE, "k") == 0.0
    assert [await limiter.hit(MINUTE, "k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limiter.wait_time(MINUTE, "k") == pytest.approx(60.0)


async def test_memory_keys_and_limits_are_independent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = MemoryRateLimiter()
    for _ in range(3):
        assert await limiter.hit(MINUTE, "a:one") == 0.0
    assert await limiter.hit(MINUTE, "a:one") > 0
    assert await limiter.hit(MINUTE, "a:two") == 0.0
    assert await limiter.hit(Limit("typing", 3, 60.0), "a:one") == 0.0


async def test_memory_forgets_windows_that_emptied(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = MemoryRateLimiter()
    for index in range(5000):
        await limiter.hit(MINUTE, f"device-{index}")
    assert len(limiter) == 5000
    await trio.sleep(61)
    for index in range(5000):  # other devices now: the old windows are swept meanwhile
        await limiter.hit(MINUTE, f"other-{index}")
    assert len(limiter) <= 5000 + 1024


async def test_memory_follows_a_reconfigured_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = MemoryRateLimiter()
    for _ in range(3):
        await limiter.hit(MINUTE, "k")
    assert await limiter.hit(Limit("message", 5, 60.0), "k") == 0.0


# --- in Redis: shared by every node ---------------------------------------------------------


async def test_redis_nodes_share_one_limit(redis_url: str, bridge: AsyncioBridge) -> None:
    # Two nodes, each with its own connections: 40 events at once against a limit of 25
    # admit exactly 25, whichever node counted them.
    limit = Limit("message", 25, 60.0)
    async with open_cluster(redis_url) as cluster:
        limiters = [rate_limiter_for((await cluster.add()).presence) for _ in range(2)]
        outcomes: list[float] = []

        async def hit(limiter: RateLimiter) -> None:
            outcomes.append(await limiter.hit(limit, "app:device"))

        async with trio.open_nursery() as nursery:
            for index in range(40):
                nursery.start_soon(hit, limiters[index % 2])
        assert sum(1 for wait in outcomes if wait == 0.0) == 25
        refused = [wait for wait in outcomes if wait > 0]
        assert len(refused) == 15
        assert all(0 < wait <= 60.0 for wait in refused)
        for limiter in limiters:  # both see the full window now, and count nothing
            assert 0 < await limiter.wait_time(limit, "app:device") <= 60.0
        assert await limiters[0].hit(limit, "app:other") == 0.0

        keys = await cluster.keys()
        assert {"ratelimit:message:app:device", "ratelimit:message:app:other"} <= keys
        async with _redis.RespClient.connect(redis_url) as redis:
            key = f"{cluster.prefix}ratelimit:message:app:device"
            assert await redis.call("ZCARD", key) == 25
            assert 0 < await redis.call("PTTL", key) <= 60_000  # gone a window after


async def test_redis_window_slides_on_redis_clock(redis_url: str, bridge: AsyncioBridge) -> None:
    limit = Limit("typing", 2, 0.3)
    async with open_cluster(redis_url) as cluster:
        limiter = rate_limiter_for((await cluster.add()).presence)
        assert await limiter.hit(limit, "k") == 0.0
        assert await limiter.hit(limit, "k") == 0.0
        wait = await limiter.hit(limit, "k")
        assert 0 < wait <= 0.3

        async def admitted() -> bool:
            return await limiter.wait_time(limit, "k") == 0.0

        # A window later (bounded polling: Redis's clock cannot be mocked).
        await wait_for(admitted, timeout=5)
        assert await limiter.hit(limit, "k") == 0.0


async def test_redis_away_admits_everything_and_says_so(
    redis_server_binary: str, bridge: AsyncioBridge, caplog: pytest.LogCaptureFixture
) -> None:
    limit = Limit("message", 1, 60.0)
    caplog.set_level(logging.INFO, "replyhq_trio.limits")
    async with _redis.private_redis() as server, open_cluster(server.url) as cluster:
        node = await cluster.add()
        limiter = rate_limiter_for(node.presence)
        assert isinstance(node.presence, RedisPresence)
        assert await limiter.hit(limit, "k") == 0.0
        assert await limiter.hit(limit, "k") > 0
        await server.stop()

        await wait_until(lambda: not node.redis.connected, timeout=10)
        for _ in range(5):  # no Redis, no limit (and no wait for one)
            with trio.fail_after(1):
                assert await limiter.hit(limit, "k") == 0.0
        warnings = [r for r in caplog.records if "not enforced" in r.getMessage()]
        assert len(warnings) == 1

        await server.start()  # empty: the earlier window is gone with it

        await wait_until(lambda: node.redis.connected, timeout=10)
        assert await limiter.hit(limit, "k") == 0.0
        assert await limiter.hit(limit, "k") > 0
        assert any("enforced again" in r.getMessage() for r in caplog.records)


async def test_without_redis_the_limiter_is_the_nodes_own() -> None:
    async with open_cluster(None) as cluster:
        limiter = rate_limiter_for((await cluster.add()).presence)
        assert isinstance(limiter, MemoryRateLimiter)


async def test_a_quick_redis_restart_is_not_an_outage(
    redis_server_binary: str, bridge: AsyncioBridge, caplog: pytest.LogCaptureFixture
) -> None:
    # Pooled connections opened before a restart are to a server that is gone; the first
    # use of each must not fail a call (nor take presence or the limits "away").
    caplog.set_level(logging.WARNING, "replyhq_trio")
    quiet = attrs.evolve(FAST, heartbeat_interval=2.5, node_ttl=3.0, reap_interval=5.0)
    limit = Limit("message", 1000, 60.0)
    async with _redis.private_redis() as server, open_cluster(server.url) as cluster:
        node = await cluster.add(config=quiet)
        limiter = rate_limiter_for(node.presence)
        sessions = [new_session(node, f"d{index}") for index in range(16)]
        async with trio.open_nursery() as nursery:  # sixteen pooled connections in use
            for session in sessions:
                nursery.start_soon(node.presence.connect, session)
        await server.stop()
        await server.start()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for index, session in enumerate(sessions):
                    nursery.start_soon(limiter.hit, limit, f"k{index}")
                    nursery.start_soon(node.presence.disconnect, session)
            await wait_until(lambda: node.redis.connected, timeout=5)
        assert not [r for r in caplog.records if "not enforced" in r.getMessage()]
        assert not [r for r in caplog.records if "unavailable" in r.getMessage()]
