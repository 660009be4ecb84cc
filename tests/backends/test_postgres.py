"""PostgreSQL failure behaviour: a server that is not there, one that goes away and
comes back, calls that time out or are cancelled mid-transaction (no connection leaks,
no transaction left open)."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import trio

from replyhq_trio.backends import AsyncioBridge, PostgresStore, open_store
from replyhq_trio.ports import Sender, Store, StoreUnavailable

from .. import _pg
from .._proxy import TcpProxy


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there any more


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[PostgresStore]:
    async with open_store(pg_url, migrate=True, timeout=2.0) as store:
        assert isinstance(store, PostgresStore)
        yield store


async def test_a_closed_port_is_unavailable_at_once() -> None:
    """No bridge is open here: open_store opens the asyncio loop itself, and the error
    comes out bare (not wrapped in the groups of trio-asyncio's nurseries)."""
    url = f"postgresql://postgres:s3cret@127.0.0.1:{_closed_port()}/replyhq"
    start = trio.current_time()
    with trio.fail_after(5), pytest.raises(StoreUnavailable) as caught:
        async with open_store(url, timeout=3.0):
            pytest.fail("opened a store on a closed port")
    assert trio.current_time() - start < 1.0  # refused: no need to wait for the timeout
    message = str(caught.value)
    assert "\n" not in message
    assert "127.0.0.1" in message
    assert "s3cret" not in message


async def test_a_server_that_never_answers_is_unavailable_within_the_timeout() -> None:
    """A listener that accepts connections and says nothing: the store gives up at its
    timeout instead of hanging."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    held: list[trio.SocketStream] = []

    async def accept_and_stay_silent() -> None:
        while True:
            held.append(await listeners[0].accept())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_and_stay_silent)
        start = trio.current_time()
        with trio.fail_after(5), pytest.raises(StoreUnavailable, match=r"0\.5 s|Timeout"):
            async with open_store(f"postgresql://postgres@127.0.0.1:{port}/x", timeout=0.5):
                pytest.fail("opened a store on a silent server")
        assert 0.4 <= trio.current_time() - start < 1.5
        assert held  # it did connect: the wait was for the server's answer
        nursery.cancel_scope.cancel()
    for stream in held:
        await stream.aclose()
    await listeners[0].aclose()


async def test_a_missing_database_is_unavailable(pg_admin_url: str, bridge: AsyncioBridge) -> None:
    url = _pg.with_database(pg_admin_url, "replyhq_t_does_not_exist")
    with trio.fail_after(5), pytest.raises(StoreUnavailable, match="does_not_exist"):
        async with open_store(url):
            pytest.fail("opened a store on a missing database")


async def test_a_server_that_goes_away_and_comes_back(pg_url: str) -> None:
    target_port = urlsplit(pg_url).port or 5432
    async with trio.open_nursery() as nursery:
        proxy = TcpProxy(nursery, target_port)
        await proxy.up()
        proxied = pg_url.replace(f":{target_port}/", f":{proxy.port}/")
        async with open_store(proxied, migrate=True, timeout=2.0) as store:
            app = (await store.create_app("Acme")).app
            conversation = await store.create_conversation(app.id, "d")

            await proxy.down()
            for _ in range(3):  # every call fails fast, none hangs until the timeout
                start = trio.current_time()
                with pytest.raises(StoreUnavailable):
                    await store.add_message(
                        conversation.id, local_id="l1", body="b", sender=Sender.USER
                    )
                assert trio.current_time() - start < 1.0
            with pytest.raises(StoreUnavailable):
                await store.check()

            await proxy.up()
            with trio.fail_after(10):
                await store.check()  # the pool reconnected
            message, new = await store.add_message(
                conversation.id, local_id="l1", body="b", sender=Sender.USER
            )
            assert new
            assert await store.get_conversation(app.id, conversation.id) is not None
            assert message.conversation_id == conversation.id
        nursery.cancel_scope.cancel()


async def _assert_no_leak(store: PostgresStore, bridge: AsyncioBridge, url: str) -> None:
    """The pool has every connection back, and the server agrees: none active, none
    idle in a transaction."""
    size, idle = store.pool_stats()
    assert 1 <= size <= 10
    assert idle == size
    states = await _pg.activity(bridge, url)
    assert set(states) <= {"idle"}, states
    assert states.get("idle", 0) == size


async def test_a_call_blocked_past_the_timeout_is_unavailable_and_rolled_back(
    pg_url: str, bridge: AsyncioBridge
) -> None:
    async with open_store(pg_url, migrate=True, timeout=0.5) as store:
        assert isinstance(store, PostgresStore)
        conversation = await store.create_conversation((await store.create_app("A")).app.id, "d")
        lock = "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE"
        async with _pg.holding(bridge, pg_url, lock, conversation.id):
            start = trio.current_time()
            with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.5 s"):
                await store.add_message(
                    conversation.id, local_id="l1", body="b", sender=Sender.USER
                )
            assert 0.5 <= trio.current_time() - start < 1.5
        await _assert_no_leak(store, bridge, pg_url)
        assert await store.list_messages(conversation.id, after=None, limit=10) == ([], False)
        _, new = await store.add_message(
            conversation.id, local_id="l1", body="b", sender=Sender.USER
        )
        assert new  # the timed-out attempt left nothing behind; the retry stores it


async def test_cancelled_calls_leak_no_connection(
    pg_store: PostgresStore, pg_url: str, bridge: AsyncioBridge
) -> None:
    """50 calls cancelled while blocked inside their transaction (10, one per pool
    connection) or waiting for a connection (40), then 50 cancelled at random moments:
    the pool gets every connection back, the server shows none active or idle in a
    transaction, nothing half-done was stored, and the store works on."""
    store: Store = pg_store
    conversation = await store.create_conversation((await store.create_app("A")).app.id, "d")
    cancelled = 0

    async def send(local_id: str, deadline: float) -> None:
        nonlocal cancelled
        with trio.move_on_after(deadline) as scope:
            await store.add_message(
                conversation.id, local_id=local_id, body="b", sender=Sender.USER
            )
        cancelled += scope.cancelled_caught

    lock = "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE"
    async with _pg.holding(bridge, pg_url, lock, conversation.id):
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(send, f"blocked-{i}", 0.3)
    assert cancelled == 50
    await _assert_no_leak(pg_store, bridge, pg_url)
    assert await store.list_messages(conversation.id, after=None, limit=10) == ([], False)

    rng = random.Random(7)
    cancelled = completed = 0
    attempt = 0
    with trio.fail_after(60):
        while cancelled < 50:
            before = cancelled
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    attempt += 1
                    nursery.start_soon(send, f"random-{attempt}", rng.uniform(0.0, 0.03))
            completed += 10 - (cancelled - before)
    await _assert_no_leak(pg_store, bridge, pg_url)
    stored, _ = await store.list_messages(conversation.id, after=None, limit=100_000)
    # Each call either committed or rolled back entirely: at least every completed one
    # is there (a call cancelled after its COMMIT went through counts as cancelled).
    assert completed <= len(stored) <= attempt
    assert len({m.local_id for m in stored}) == len(stored)

    _, new = await store.add_message(
        conversation.id, local_id="after", body="b", sender=Sender.USER
    )
    assert new
    start = trio.current_time()
    await pg_store.aclose()
    assert trio.current_time() - start < 1.0
    assert pg_store.pool_stats() == (0, 0)
    assert await _pg.activity(bridge, pg_url) == {}


async def test_a_closed_store_is_unavailable(pg_store: PostgresStore) -> None:
    await pg_store.aclose()
    with pytest.raises(StoreUnavailable, match="not open"):
        await pg_store.check()
