"""PostgreSQL behind a network partition: the connection stays open and nothing comes
back (no reset). Every call gives up within the store's timeout plus a bounded cleanup,
closing the store is bounded, and once the network is back the store works again with
no connection leaked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest
import trio

from replyhq_trio.backends import AsyncioBridge, PostgresStore
from replyhq_trio.ports import MessageStatus, Sender, StoreUnavailable

from .. import _pg
from .._proxy import StallProxy, open_stall_proxy
from .._waiting import wait_for, wait_until

TIMEOUT = 1.0
CLOSE_TIMEOUT = 2.0
#: What a call may take beyond its timeout: letting go of the connection it held.
MARGIN = 1.5


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[StallProxy]:
    async with open_stall_proxy(urlsplit(pg_url).port or 5432) as opened:
        yield opened


def _through(url: str, proxy: StallProxy) -> str:
    port = urlsplit(url).port or 5432
    return url.replace(f":{port}/", f":{proxy.port}/")


def _store(
    url: str,
    proxy: StallProxy,
    bridge: AsyncioBridge,
    *,
    close_timeout: float = CLOSE_TIMEOUT,
    **sizes: int,
) -> PostgresStore:
    return PostgresStore(
        _through(url, proxy), timeout=TIMEOUT, close_timeout=close_timeout, bridge=bridge, **sizes
    )


async def _gives_up_in_time(call: Callable[[], Awaitable[object]]) -> float:
    """Run ``call``, which must raise StoreUnavailable within the timeout plus the
    margin; how long it took."""
    start = trio.current_time()
    with trio.fail_after(TIMEOUT + 10), pytest.raises(StoreUnavailable):
        await call()
    elapsed = trio.current_time() - start
    assert elapsed < TIMEOUT + MARGIN, elapsed
    return elapsed


async def _no_leak(store: PostgresStore, bridge: AsyncioBridge, url: str) -> None:
    """Bounded polling until the pool has every connection back and the server sees
    exactly those, idle (connections terminated during the partition end on the server
    once the network passes their close on)."""
    await wait_until(lambda: store.pool_stats()[1] == store.pool_stats()[0] >= 1)

    async def settled() -> bool:
        states = await _pg.activity(bridge, url)
        assert set(states) <= {"idle"}, states  # nothing active, no transaction open
        return bool(states == {"idle": store.pool_stats()[0]})

    await wait_for(settled)
    size, idle = store.pool_stats()
    assert idle == size


async def _sessions_end(bridge: AsyncioBridge, url: str) -> None:
    """Bounded polling until the server has no session of the store left (each ends once
    the network passes on the close, or the reset, of its connection)."""

    async def ended() -> bool:
        return not await _pg.activity(bridge, url)

    await wait_for(ended)


async def _recovers(store: PostgresStore) -> None:
    with trio.fail_after(10):
        while True:
            try:
                await store.check()
            except StoreUnavailable:
                continue  # a connection of the pool still reconnecting: the next one is tried
            return


async def test_every_call_gives_up_in_time_while_partitioned_and_works_after(
    pg_url: str, proxy: StallProxy, bridge: AsyncioBridge
) -> None:
    async with _store(pg_url, proxy, bridge) as store:
        await store.migrate()
        conversation = await store.create_conversation((await store.create_app("A")).app.id, "d")
        sent, _ = await store.add_message(
            conversation.id, local_id="before", body="b", sender=Sender.USER
        )

        proxy.stall()
        await _gives_up_in_time(store.check)
        await _gives_up_in_time(lambda: store.list_messages(conversation.id, after=None, limit=10))
        await _gives_up_in_time(
            lambda: store.add_message(
                conversation.id, local_id="during", body="b", sender=Sender.USER
            )
        )
        await _gives_up_in_time(
            lambda: store.set_status(
                conversation.id, sent.id, MessageStatus.DELIVERED, by=Sender.AGENT
            )
        )

        proxy.resume()
        await _recovers(store)
        await _no_leak(store, bridge, pg_url)
        # A write that gave up may or may not have reached the server: its retry, with the
        # same key, stores it once either way.
        for local_id in ("during", "after"):
            await store.add_message(
                conversation.id, local_id=local_id, body="b", sender=Sender.USER
            )
        stored, _ = await store.list_messages(conversation.id, after=None, limit=10)
        assert sorted(m.local_id for m in stored) == ["after", "before", "during"]


async def test_more_calls_than_connections_all_give_up_in_time(
    pg_url: str, proxy: StallProxy, bridge: AsyncioBridge
) -> None:
    """Twice as many calls as the pool has connections: those that wait for a connection
    give up within the timeout too."""
    async with _store(pg_url, proxy, bridge, min_size=3, max_size=3) as store:
        await store.migrate()
        conversation = await store.create_conversation((await store.create_app("A")).app.id, "d")

        proxy.stall()
        elapsed: list[float] = []

        async def call(make: Callable[[], Awaitable[object]]) -> None:
            elapsed.append(await _gives_up_in_time(make))

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(call, store.check)
                nursery.start_soon(
                    call,
                    lambda: store.get_conversation(conversation.app_id, conversation.id),
                )
                nursery.start_soon(
                    call,
                    lambda i=i: store.add_message(
                        conversation.id, local_id=f"l{i}", body="b", sender=Sender.USER
                    ),
                )
        assert len(elapsed) == 9

        proxy.resume()
        await _recovers(store)
        await _no_leak(store, bridge, pg_url)


async def test_closing_while_partitioned_is_bounded(
    pg_url: str, proxy: StallProxy, bridge: AsyncioBridge
) -> None:
    """Idle connections (whose close the server never acknowledges) and calls in
    flight: closing takes the close timeout at most, and the calls give up in time on
    their own (the close timeout is longer than theirs: not ended by the close)."""
    close_timeout = TIMEOUT + MARGIN + 1.5
    store = _store(pg_url, proxy, bridge, close_timeout=close_timeout, min_size=3)
    async with store:
        await store.migrate()
        conversation = await store.create_conversation((await store.create_app("A")).app.id, "d")

        proxy.stall()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_gives_up_in_time, store.check)
            nursery.start_soon(
                _gives_up_in_time,
                lambda: store.add_message(
                    conversation.id, local_id="l", body="b", sender=Sender.USER
                ),
            )
            await wait_until(lambda: store.pool_stats()[1] <= store.pool_stats()[0] - 2)
            start = trio.current_time()
            with trio.fail_after(close_timeout + 10):
                await store.aclose()
            assert trio.current_time() - start < close_timeout + 1.0
            assert store.pool_stats() == (0, 0)
        with pytest.raises(StoreUnavailable, match="not open"):
            await store.check()

    proxy.resume()
    await _sessions_end(bridge, pg_url)


async def test_leaving_the_store_while_partitioned_is_bounded(
    pg_url: str, proxy: StallProxy, bridge: AsyncioBridge
) -> None:
    """The whole exit, as a shutdown does it, with a write in flight: the write gets up to
    the timeout, then the pool up to the close timeout."""
    outcome: list[StoreUnavailable] = []
    async with trio.open_nursery() as nursery:
        async with _store(pg_url, proxy, bridge, min_size=2) as store:
            await store.migrate()
            app = (await store.create_app("A")).app
            conversation = await store.create_conversation(app.id, "d")

            async def write() -> None:
                try:
                    await store.add_message(
                        conversation.id, local_id="l", body="b", sender=Sender.USER
                    )
                except StoreUnavailable as exc:
                    outcome.append(exc)

            proxy.stall()
            nursery.start_soon(write)
            await wait_until(lambda: store.batched_writes == 1)
            start = trio.current_time()
        assert trio.current_time() - start < TIMEOUT + CLOSE_TIMEOUT + 1.0
    assert len(outcome) == 1
    assert store.pool_stats() == (0, 0)
    proxy.resume()
    await _sessions_end(bridge, pg_url)
