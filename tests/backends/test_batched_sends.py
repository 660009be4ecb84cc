"""Group-committed ``add_message`` in both stores: many concurrent sends give each caller
exactly its own outcome in few transactions; duplicates, unknown conversations and
refused rows inside a batch; callers cancelled or timed out while queued or while their
batch is in flight; PostgreSQL's one-statement batches and its pool without resets."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from replyhq_trio.backends import (
    AsyncioBridge,
    PostgresStore,
    SqliteStore,
    open_store,
    sqlite_path_from_url,
)
from replyhq_trio.backends._common import NewMessage
from replyhq_trio.ports import (
    Conversation,
    Message,
    Sender,
    Store,
    StoreError,
    StoreUnavailable,
    UnknownConversation,
)

from .. import _pg
from .._waiting import wait_until

UNKNOWN = "conv_00000000000000000000"

BatchedStore = SqliteStore | PostgresStore


def _batched(store: Store) -> BatchedStore:
    assert isinstance(store, SqliteStore | PostgresStore)
    return store


async def _conversations(store: Store, count: int) -> list[Conversation]:
    app = (await store.create_app("Acme")).app
    return [await store.create_conversation(app.id, f"d{i}") for i in range(count)]


def _record_queue_order(store: BatchedStore) -> list[NewMessage]:
    """The jobs in the order they join the group-commit queue (``submit`` queues its
    job before its first checkpoint, so the order of the calls is the queue order)."""
    order: list[NewMessage] = []
    writes = store._writes
    submit = writes.submit

    async def recording(job: Any) -> Any:
        if isinstance(job, NewMessage):
            order.append(job)
        return await submit(job)

    writes.submit = recording  # type: ignore[method-assign]
    return order


async def _transactions_that_inserted(db_url: str, bridge: AsyncioBridge) -> int:
    """PostgreSQL: how many transactions inserted the messages there are (each row's
    xmin is the id of the transaction that inserted it)."""
    rows = await _pg.fetch(bridge, db_url, "SELECT count(DISTINCT xmin::text) FROM messages")
    return int(rows[0][0])


@asynccontextmanager
async def _writes_held(
    db_url: str, bridge: AsyncioBridge, conversation_id: str
) -> AsyncIterator[None]:
    """Keep the store's writes waiting for the block: SQLite's write lock, or the
    conversation's row lock, held by another connection."""
    if db_url.startswith("sqlite:"):
        other = sqlite3.connect(sqlite_path_from_url(db_url), isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            yield
            other.execute("ROLLBACK")
        finally:
            other.close()
    else:
        lock = "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE"
        async with _pg.holding(bridge, db_url, lock, conversation_id):
            yield


async def _assert_pool_clean(store: BatchedStore, bridge: AsyncioBridge, db_url: str) -> None:
    """PostgreSQL: every connection back in the pool, none active or idle in a
    transaction on the server."""
    if not isinstance(store, PostgresStore):
        return
    size, idle = store.pool_stats()
    assert idle == size
    states = await _pg.activity(bridge, db_url)
    assert set(states) <= {"idle"}, states


async def test_many_concurrent_sends_each_get_their_own_outcome_in_few_transactions(
    store: Store, db_url: str, bridge: AsyncioBridge
) -> None:
    """500 sends at once over 10 conversations: 100 of them repeat the key of another
    send of the same batch (with another body), one goes to a conversation that does
    not exist. Per key the first send in queue order is new and its body is stored;
    the others get that very message back, not new. Seqs follow queue order."""
    batched = _batched(store)
    conversations = await _conversations(store, 10)
    rng = random.Random(1)
    calls = [(conversations[i % 10].id, f"l{i}", f"body {i}") for i in range(399)]
    calls += [
        (c, local_id, f"again {n}") for n, (c, local_id, _) in enumerate(rng.choices(calls, k=100))
    ]
    calls.append((UNKNOWN, "l0", "nowhere"))
    rng.shuffle(calls)
    order = _record_queue_order(batched)
    batches_before, writes_before = batched.batches, batched.batched_writes
    commits_before = batched.commits if isinstance(batched, SqliteStore) else 0
    outcomes: dict[int, tuple[Message, bool] | StoreError] = {}

    async def send(index: int) -> None:
        conversation_id, local_id, body = calls[index]
        try:
            outcomes[index] = await store.add_message(
                conversation_id, local_id=local_id, body=body, sender=Sender.USER
            )
        except StoreError as exc:
            outcomes[index] = exc

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for index in range(len(calls)):
                nursery.start_soon(send, index)

    assert len(outcomes) == 500
    assert batched.batched_writes - writes_before == 500
    batches = batched.batches - batches_before
    assert batches <= 3, batches  # one, unless the committer started early
    if isinstance(store, PostgresStore):
        assert await _transactions_that_inserted(db_url, bridge) == batches
    elif isinstance(store, SqliteStore):
        assert store.commits - commits_before == batches

    # The expected outcome of each call, from the queue order.
    first: dict[tuple[str, str], NewMessage] = {}
    for job in order:
        first.setdefault((job.conversation_id, job.local_id), job)
    assert len(order) == 500
    created_in_queue_order: list[Message] = []
    by_key: dict[tuple[str, str], Message] = {}
    for index, (conversation_id, local_id, body) in enumerate(calls):
        outcome = outcomes[index]
        if conversation_id == UNKNOWN:
            assert isinstance(outcome, UnknownConversation)
            continue
        assert not isinstance(outcome, StoreError), outcome
        message, created = outcome
        winner = first[conversation_id, local_id]
        assert (message.conversation_id, message.local_id) == (conversation_id, local_id)
        assert message.body == winner.body
        assert created == (body == winner.body)
        assert by_key.setdefault((conversation_id, local_id), message) == message
    for job in order:
        if job.conversation_id != UNKNOWN and first[job.conversation_id, job.local_id] is job:
            created_in_queue_order.append(by_key[job.conversation_id, job.local_id])
    assert len(created_in_queue_order) == 399
    ids = [message.id for message in created_in_queue_order]
    assert ids == sorted(ids)  # seqs drawn in queue order

    for conversation in conversations:
        stored, has_more = await store.list_messages(conversation.id, after=None, limit=1000)
        assert not has_more
        expected = sorted(
            (m for m in by_key.values() if m.conversation_id == conversation.id),
            key=lambda m: m.id,
        )
        assert stored == expected
        now = await store.get_conversation(conversation.app_id, conversation.id)
        assert now is not None
        assert now.last_message_id == stored[-1].id
        assert now.updated_at == stored[-1].created_at
    assert await store.list_messages(UNKNOWN, after=None, limit=10) == ([], False)


async def test_callers_cancelled_while_queued_or_in_flight(
    db_url: str, bridge: AsyncioBridge
) -> None:
    """A batch of 40 is held in flight (a lock held elsewhere) and 20 more sends queue
    behind it; half of each group is cancelled. The cancelled callers return at once;
    once the lock goes, the in-flight batch commits whole (the messages of its
    cancelled callers included), the queued ones that were cancelled are not written,
    and every caller that stayed gets its own new message."""
    async with open_store(db_url, migrate=True) as store:
        batched = _batched(store)
        conversations = await _conversations(store, 4)
        results: dict[str, tuple[Message, bool]] = {}
        left_after: list[float] = []

        async def send(local_id: str, scope: trio.CancelScope | None) -> None:
            conversation = conversations[int(local_id[1:]) % 4]
            with scope or trio.CancelScope():
                results[local_id] = await store.add_message(
                    conversation.id, local_id=local_id, body=local_id, sender=Sender.USER
                )
            if scope is not None and scope.cancelled_caught:
                left_after.append(trio.current_time() - cancelled_at)

        scopes = {f"m{i}": trio.CancelScope() for i in range(0, 60, 2)}
        cancelled_at = 0.0
        batches_before = batched.batches
        async with (
            trio.open_nursery() as nursery,
            _writes_held(db_url, bridge, conversations[0].id),
        ):
            for i in range(40):
                nursery.start_soon(send, f"m{i}", scopes.get(f"m{i}"))
            await wait_until(lambda: batched.batches > batches_before)  # 40 in flight
            for i in range(40, 60):
                nursery.start_soon(send, f"m{i}", scopes.get(f"m{i}"))
            await wait_until(lambda: batched._writes.queued == 20)
            cancelled_at = trio.current_time()
            for scope in scopes.values():
                scope.cancel()
            await wait_until(lambda: len(left_after) == 30)  # while the lock is held
        assert max(left_after) < 0.5
        assert batched.batches - batches_before == 2

        in_flight = {f"m{i}" for i in range(40)}
        stayed = {f"m{i}" for i in range(1, 60, 2)}
        assert set(results) == stayed
        assert all(new for _, new in results.values())
        stored: set[str] = set()
        for conversation in conversations:
            messages, _ = await store.list_messages(conversation.id, after=None, limit=100)
            stored |= {m.local_id for m in messages}
        assert stored == in_flight | stayed  # the cancelled in-flight ones too
        await _assert_pool_clean(batched, bridge, db_url)


async def test_a_held_batch_times_out_for_every_caller(db_url: str, bridge: AsyncioBridge) -> None:
    async with open_store(db_url, migrate=True, timeout=0.5) as store:
        batched = _batched(store)
        (conversation,) = await _conversations(store, 1)
        errors: list[StoreUnavailable] = []

        async def send(local_id: str) -> None:
            with pytest.raises(StoreUnavailable) as caught:
                await store.add_message(
                    conversation.id, local_id=local_id, body="b", sender=Sender.USER
                )
            errors.append(caught.value)

        async with _writes_held(db_url, bridge, conversation.id):
            start = trio.current_time()
            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    for i in range(10):
                        nursery.start_soon(send, f"l{i}")
            assert 0.5 <= trio.current_time() - start < 1.5
        assert len(errors) == 10
        assert len({id(error) for error in errors}) == 10
        await _assert_pool_clean(batched, bridge, db_url)
        assert await store.list_messages(conversation.id, after=None, limit=10) == ([], False)
        _, new = await store.add_message(
            conversation.id, local_id="l1", body="b", sender=Sender.USER
        )
        assert new  # nothing of the timed-out batch was left behind


async def test_a_row_the_database_refuses_fails_alone(store: Store) -> None:
    """A row that breaks the batch's statement (here a sender the schema's CHECK
    refuses, which add_message itself cannot produce): the batch runs again one job at
    a time, and only that job fails."""
    batched = _batched(store)
    (conversation,) = await _conversations(store, 1)
    outcomes: dict[str, object] = {}

    async def send(local_id: str, sender: str) -> None:
        job = NewMessage(conversation.id, local_id, "b", sender)
        try:
            outcomes[local_id] = await batched._writes.submit(job)
        except StoreError as exc:
            outcomes[local_id] = exc

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(send, f"l{i}", "nobody" if i == 7 else "user")
    refused = outcomes.pop("l7")
    assert isinstance(refused, StoreError)
    assert not isinstance(refused, StoreUnavailable)
    assert all(isinstance(o, tuple) and o[1] for o in outcomes.values())
    messages, _ = await store.list_messages(conversation.id, after=None, limit=100)
    assert sorted(m.local_id for m in messages) == sorted(outcomes)


async def test_postgres_a_local_id_too_long_to_index_fails_alone(pg_url: str) -> None:
    async with open_store(pg_url, migrate=True) as store:
        (conversation,) = await _conversations(store, 1)
        too_long = "".join(random.Random(3).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=9000))
        outcomes: dict[str, object] = {}

        async def send(local_id: str) -> None:
            try:
                outcomes[local_id] = await store.add_message(
                    conversation.id, local_id=local_id, body="b", sender=Sender.USER
                )
            except StoreError as exc:
                outcomes[local_id] = exc

        async with trio.open_nursery() as nursery:
            for local_id in ("a", too_long, "b"):
                nursery.start_soon(send, local_id)
        refused = outcomes.pop(too_long)
        assert isinstance(refused, StoreError)
        assert not isinstance(refused, StoreUnavailable)
        assert "index" in str(refused)
        assert all(isinstance(o, tuple) and o[1] for o in outcomes.values())


@pytest.mark.parametrize(
    "text",
    [
        'quotes " and \\ backslashes \\" \\\\u0041',
        "lines\nand\ttabs\r\n and \x01\x1f controls and \x7f",
        "naïve café — 日本語 😀 𝄞 \u2028\u2029 \ufeff",
        "[1, 2] {\"a\": null} 'single' ->> $[0]",
        "x" * 20_000,
    ],
)
async def test_any_text_goes_through_a_batch_unchanged(store: Store, text: str) -> None:
    (conversation,) = await _conversations(store, 1)
    sent: dict[str, Message] = {}

    async def send(local_id: str) -> None:
        message, new = await store.add_message(
            conversation.id, local_id=local_id, body=text, sender=Sender.AGENT
        )
        assert new
        sent[local_id] = message

    key = text[:200]  # a local_id is indexed: PostgreSQL refuses one of many KB
    async with trio.open_nursery() as nursery:
        for local_id in (key, f"{key}-2", "plain"):
            nursery.start_soon(send, local_id)
    for local_id, message in sent.items():
        assert (message.local_id, message.body, message.sender) == (local_id, text, Sender.AGENT)
    stored, _ = await store.list_messages(conversation.id, after=None, limit=10)
    assert sorted(stored, key=lambda m: m.local_id) == sorted(
        sent.values(), key=lambda m: m.local_id
    )
    replay, new = await store.add_message(
        conversation.id, local_id=key, body="other", sender=Sender.USER
    )
    assert (replay, new) == (sent[key], False)


async def test_postgres_pool_connections_are_not_reset_and_keep_no_session_state(
    pg_url: str, bridge: AsyncioBridge
) -> None:
    """The pool skips asyncpg's reset (``SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL``), a round trip and a transaction per call: no connection's
    last statement is that. And nothing needed it: after migrate() (the one unit that
    takes a session-level advisory lock) no connection holds an advisory lock."""
    calls: list[Callable[[Store, Conversation], Awaitable[object]]] = [
        lambda s, c: s.get_conversation(c.app_id, c.id),
        lambda s, c: s.list_messages(c.id, after=None, limit=10),
        lambda s, c: s.add_message(c.id, local_id="x", body="b", sender=Sender.USER),
    ]
    async with open_store(pg_url, migrate=True, pool_min_size=2) as store:
        (conversation,) = await _conversations(store, 1)
        await store.migrate()
        for call in calls:
            await call(store, conversation)
        rows = await _pg.fetch(
            bridge,
            pg_url,
            "SELECT query FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'replyhq-trio'",
        )
        assert rows
        assert not [query for (query,) in rows if "RESET ALL" in query or "UNLISTEN" in query]
        locks = await _pg.fetch(
            bridge,
            pg_url,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        assert locks == [(0,)]
