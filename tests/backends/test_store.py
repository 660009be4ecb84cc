"""The Store contract (replyhq_trio/ports.py), against every backend: each test runs
once on SQLite and once on PostgreSQL, each time on a database of its own."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import attrs
import pytest
import trio

from replyhq_trio.backends import AsyncioBridge, open_store, sqlite_path_from_url
from replyhq_trio.ports import (
    Conversation,
    InvalidCursor,
    Message,
    MessageStatus,
    Sender,
    Store,
    StoreError,
    StoreUnavailable,
    UnknownApp,
    UnknownConversation,
    UnknownMessage,
)

from .. import _pg

MESSAGE_ID = re.compile(r"msg_[0-9]{20}")


def _is_utc(moment: object) -> bool:
    return isinstance(moment, datetime) and moment.utcoffset() == timedelta(0)


async def _conversation(store: Store, device_id: str = "device-1") -> Conversation:
    app = (await store.create_app("Acme")).app
    return await store.create_conversation(app.id, device_id)


async def _send(store: Store, conversation: Conversation, local_id: str) -> Message:
    message, new = await store.add_message(
        conversation.id, local_id=local_id, body=f"body {local_id}", sender=Sender.USER
    )
    assert new
    return message


# --- schema --------------------------------------------------------------------------


async def _migration_versions(db_url: str, bridge: AsyncioBridge) -> list[int]:
    sql = "SELECT version FROM schema_migrations ORDER BY version"
    if db_url.startswith("sqlite:"):
        with sqlite3.connect(sqlite_path_from_url(db_url)) as con:
            return [row[0] for row in con.execute(sql)]
    return [row[0] for row in await _pg.fetch(bridge, db_url, sql)]


async def test_migrate_is_idempotent(db_url: str, bridge: AsyncioBridge) -> None:
    async with open_store(db_url, migrate=True) as store:
        await store.migrate()
        await store.create_app("Acme")
    async with open_store(db_url, migrate=True) as store:
        await store.migrate()
        assert await store.count_apps() == 1  # migrating again kept the data
    assert await _migration_versions(db_url, bridge) == [1]


async def test_two_stores_migrate_the_same_database_at_once(
    db_url: str, bridge: AsyncioBridge
) -> None:
    async with open_store(db_url) as first, open_store(db_url) as second:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for store in (first, second, first, second):
                    nursery.start_soon(store.migrate)
        app = (await first.create_app("Acme")).app
        assert await second.count_apps() == 1
        assert await second.create_conversation(app.id, "d") is not None
    assert await _migration_versions(db_url, bridge) == [1]


async def test_check_answers(store: Store) -> None:
    await store.check()


# --- apps and credentials ----------------------------------------------------------


async def test_create_app_returns_its_secrets_once(store: Store) -> None:
    new = await store.create_app("Acme")
    assert re.fullmatch(r"app_[0-9a-f]{16}", new.app.id)
    assert new.app.name == "Acme"
    assert _is_utc(new.app.created_at)
    assert re.fullmatch(r"rk_[A-Za-z0-9_-]{43}", new.api_key)
    assert re.fullmatch(r"rat_[A-Za-z0-9_-]{43}", new.admin_token)
    assert await store.count_apps() == 1
    await store.create_app("Other")
    assert await store.count_apps() == 2


async def test_verify_api_key(store: Store) -> None:
    acme, other = await store.create_app("Acme"), await store.create_app("Other")
    assert await store.verify_api_key(acme.app.id, acme.api_key)
    assert not await store.verify_api_key(acme.app.id, acme.api_key + "x")
    assert not await store.verify_api_key(acme.app.id, "")
    assert not await store.verify_api_key(acme.app.id, other.api_key)  # another app's key
    assert not await store.verify_api_key("app_0000000000000000", acme.api_key)  # no such app
    assert not await store.verify_api_key(acme.app.id, acme.admin_token)  # not a client key


async def test_admin_tokens_create_verify_revoke(store: Store) -> None:
    acme, other = await store.create_app("Acme"), await store.create_app("Other")
    assert await store.verify_admin_token(acme.app.id, acme.admin_token)
    assert not await store.verify_admin_token(other.app.id, acme.admin_token)
    assert not await store.verify_admin_token(acme.app.id, acme.api_key)

    second = await store.create_admin_token(acme.app.id)
    assert re.fullmatch(r"rat_[A-Za-z0-9_-]{43}", second)
    assert second != acme.admin_token
    assert await store.verify_admin_token(acme.app.id, second)

    assert await store.revoke_admin_token(acme.admin_token)
    assert not await store.verify_admin_token(acme.app.id, acme.admin_token)
    assert not await store.revoke_admin_token(acme.admin_token)  # already revoked
    assert not await store.revoke_admin_token("rat_unknown")
    assert await store.verify_admin_token(acme.app.id, second)  # the other one lives on
    assert await store.verify_admin_token(other.app.id, other.admin_token)

    with pytest.raises(UnknownApp):
        await store.create_admin_token("app_0000000000000000")


# --- conversations ------------------------------------------------------------------


async def test_create_and_get_conversation(store: Store) -> None:
    acme, other = (await store.create_app("Acme")).app, (await store.create_app("Other")).app
    conversation = await store.create_conversation(acme.id, "device-1")
    assert re.fullmatch(r"conv_[0-9a-f]{20}", conversation.id)
    assert (conversation.app_id, conversation.device_id) == (acme.id, "device-1")
    assert conversation.created_at == conversation.updated_at
    assert _is_utc(conversation.created_at)
    assert conversation.last_message_id is None

    assert await store.get_conversation(acme.id, conversation.id) == conversation
    assert await store.get_conversation(other.id, conversation.id) is None  # another app's
    assert await store.get_conversation(acme.id, "conv_00000000000000000000") is None
    with pytest.raises(UnknownApp):
        await store.create_conversation("app_0000000000000000", "device-1")


async def test_list_conversations_most_recent_first(store: Store) -> None:
    acme, other = (await store.create_app("Acme")).app, (await store.create_app("Other")).app
    first = await store.create_conversation(acme.id, "d1")
    second = await store.create_conversation(acme.id, "d1")
    third = await store.create_conversation(acme.id, "d2")
    await store.create_conversation(other.id, "d1")

    def ids(conversations: list[Conversation]) -> list[str]:
        return [c.id for c in conversations]

    assert ids(await store.list_conversations(acme.id, "d1")) == [second.id, first.id]
    assert ids(await store.list_conversations(acme.id)) == [third.id, second.id, first.id]

    await _send(store, first, "l1")  # the oldest becomes the most recent
    assert ids(await store.list_conversations(acme.id, "d1")) == [first.id, second.id]
    assert ids(await store.list_conversations(acme.id)) == [first.id, third.id, second.id]
    assert ids(await store.list_conversations(acme.id, limit=2)) == [first.id, third.id]
    assert await store.list_conversations(acme.id, limit=0) == []
    assert await store.list_conversations(acme.id, "nobody") == []

    latest = await store.latest_conversation(acme.id, "d1")
    assert latest is not None
    assert latest.id == first.id
    assert latest.last_message_id is not None
    assert (await store.latest_conversation(acme.id, "d2")) == third
    assert await store.latest_conversation(acme.id, "nobody") is None
    assert await store.latest_conversation(other.id, "d2") is None


# --- messages -----------------------------------------------------------------------


async def test_add_message_then_replay(store: Store) -> None:
    conversation = await _conversation(store)
    message, new = await store.add_message(
        conversation.id, local_id="l1", body="hello", sender=Sender.USER
    )
    assert new
    assert MESSAGE_ID.fullmatch(message.id)
    assert (message.local_id, message.conversation_id, message.body) == (
        "l1",
        conversation.id,
        "hello",
    )
    assert (message.sender, message.status) == (Sender.USER, MessageStatus.SENT)
    assert _is_utc(message.created_at)

    # A retry (even with another body or sender) returns the message stored first.
    replay, new = await store.add_message(
        conversation.id, local_id="l1", body="changed", sender=Sender.AGENT
    )
    assert (replay, new) == (message, False)

    # The same local_id in another conversation is another message.
    elsewhere = await store.create_conversation(conversation.app_id, "device-2")
    other, new = await store.add_message(
        elsewhere.id, local_id="l1", body="hello", sender=Sender.SYSTEM
    )
    assert new
    assert other.id != message.id
    assert other.sender == Sender.SYSTEM

    with pytest.raises(UnknownConversation):
        await store.add_message(
            "conv_00000000000000000000", local_id="x", body="b", sender=Sender.USER
        )


async def test_conversation_follows_its_messages(store: Store) -> None:
    conversation = await _conversation(store)
    first = await _send(store, conversation, "l1")
    after_first = await store.get_conversation(conversation.app_id, conversation.id)
    assert after_first is not None
    assert after_first.last_message_id == first.id
    assert after_first.updated_at == first.created_at
    assert after_first.updated_at >= conversation.created_at
    assert after_first.created_at == conversation.created_at

    second = await _send(store, conversation, "l2")
    await store.add_message(conversation.id, local_id="l1", body="again", sender=Sender.USER)
    after_replay = await store.get_conversation(conversation.app_id, conversation.id)
    assert after_replay is not None
    assert after_replay.last_message_id == second.id  # a replay moves nothing
    assert after_replay.updated_at == second.created_at


async def test_replay_racing_from_many_tasks_stores_one_message(store: Store) -> None:
    conversation = await _conversation(store)
    results: list[tuple[Message, bool]] = []

    async def send() -> None:
        results.append(
            await store.add_message(conversation.id, local_id="same", body="b", sender=Sender.USER)
        )

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(send)
    assert len(results) == 20
    assert sum(new for _, new in results) == 1
    assert len({message for message, _ in results}) == 1
    messages, has_more = await store.list_messages(conversation.id, after=None, limit=50)
    assert [m.id for m in messages] == [results[0][0].id]
    assert not has_more


async def test_ids_sort_in_creation_order_across_conversations(store: Store) -> None:
    app = (await store.create_app("Acme")).app
    conversations = [await store.create_conversation(app.id, f"d{i}") for i in range(3)]
    created = [await _send(store, conversations[i % 3], f"l{i}") for i in range(12)]
    ids = [message.id for message in created]
    assert all(MESSAGE_ID.fullmatch(i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


async def test_list_messages_pages_exactly_at_the_boundaries(store: Store) -> None:
    conversation = await _conversation(store)
    other = await store.create_conversation(conversation.app_id, "device-2")
    m = [await _send(store, conversation, f"l{i}") for i in range(5)]
    await _send(store, other, "elsewhere")  # never shows up in the first conversation

    async def page(after: Message | None, limit: int) -> tuple[list[Message], bool]:
        return await store.list_messages(
            conversation.id, after=None if after is None else after.id, limit=limit
        )

    assert await page(None, 2) == ([m[0], m[1]], True)
    assert await page(m[1], 2) == ([m[2], m[3]], True)
    assert await page(m[3], 2) == ([m[4]], False)
    assert await page(m[2], 2) == ([m[3], m[4]], False)  # the last page ends exactly
    assert await page(m[4], 2) == ([], False)
    assert await page(None, 5) == (m, False)
    assert await page(None, 4) == (m[:4], True)
    assert await page(None, 200) == (m, False)
    assert await page(m[0], 0) == ([], True)
    elsewhere, has_more = await store.list_messages(other.id, after=None, limit=10)
    assert ([e.local_id for e in elsewhere], has_more) == (["elsewhere"], False)
    empty = await store.create_conversation(conversation.app_id, "device-3")
    assert await store.list_messages(empty.id, after=None, limit=10) == ([], False)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "abc",
        "msg_1",
        "msg_" + "0" * 19,
        "msg_" + "0" * 21,
        "msg_0000000000000000000a",
        " msg_00000000000000000001",
        "MSG_00000000000000000001",
        "msg_99999999999999999999",  # well-formed, beyond any 64-bit seq
        "msg_00000000000000000000",  # well-formed, no such message
        "msg_00000000000000009999",
    ],
)
async def test_a_malformed_or_unknown_cursor_is_invalid(store: Store, cursor: str) -> None:
    conversation = await _conversation(store)
    await _send(store, conversation, "l1")
    with pytest.raises(InvalidCursor):
        await store.list_messages(conversation.id, after=cursor, limit=10)


async def test_another_conversations_message_is_an_invalid_cursor(store: Store) -> None:
    conversation = await _conversation(store)
    other = await store.create_conversation(conversation.app_id, "device-2")
    mine = await _send(store, conversation, "l1")
    foreign = await _send(store, other, "l1")
    assert (await store.list_messages(conversation.id, after=mine.id, limit=10)) == ([], False)
    with pytest.raises(InvalidCursor):
        await store.list_messages(conversation.id, after=foreign.id, limit=10)
    with pytest.raises(InvalidCursor):
        await store.list_messages("conv_00000000000000000000", after=mine.id, limit=10)


async def test_status_only_moves_forward(store: Store) -> None:
    conversation = await _conversation(store)
    first = await _send(store, conversation, "l1")
    second = await _send(store, conversation, "l2")

    read, changed = await store.set_status(conversation.id, first.id, MessageStatus.READ)
    assert changed  # sent -> read skips delivered
    assert read.status == MessageStatus.READ
    assert read == attrs.evolve(first, status=MessageStatus.READ)

    back, changed = await store.set_status(conversation.id, first.id, MessageStatus.DELIVERED)
    assert (back.status, changed) == (MessageStatus.READ, False)
    again, changed = await store.set_status(conversation.id, first.id, MessageStatus.READ)
    assert (again.status, changed) == (MessageStatus.READ, False)
    sent, changed = await store.set_status(conversation.id, second.id, MessageStatus.SENT)
    assert (sent.status, changed) == (MessageStatus.SENT, False)

    delivered, changed = await store.set_status(conversation.id, second.id, MessageStatus.DELIVERED)
    assert (delivered.status, changed) == (MessageStatus.DELIVERED, True)
    read, changed = await store.set_status(conversation.id, second.id, MessageStatus.READ)
    assert (read.status, changed) == (MessageStatus.READ, True)

    listed, _ = await store.list_messages(conversation.id, after=None, limit=10)
    assert [m.status for m in listed] == [MessageStatus.READ, MessageStatus.READ]
    replay, new = await store.add_message(
        conversation.id, local_id="l1", body="x", sender=Sender.USER
    )
    assert (replay.status, new) == (MessageStatus.READ, False)


async def test_a_receipt_by_the_messages_own_sender_moves_nothing(store: Store) -> None:
    conversation = await _conversation(store)
    mine = await _send(store, conversation, "l1")  # sent by the user
    answer, _ = await store.add_message(
        conversation.id, local_id="a1", body="hello", sender=Sender.AGENT
    )
    same, changed = await store.set_status(
        conversation.id, mine.id, MessageStatus.READ, by=Sender.USER
    )
    assert (same, changed) == (mine, False)
    read, changed = await store.set_status(
        conversation.id, answer.id, MessageStatus.READ, by=Sender.USER
    )
    assert (read.status, changed) == (MessageStatus.READ, True)
    seen, changed = await store.set_status(
        conversation.id, mine.id, MessageStatus.DELIVERED, by=Sender.AGENT
    )
    assert (seen.status, changed) == (MessageStatus.DELIVERED, True)


@pytest.mark.parametrize("message_id", ["nope", "msg_00000000000000009999", "msg_"])
async def test_set_status_of_an_unknown_message(store: Store, message_id: str) -> None:
    conversation = await _conversation(store)
    await _send(store, conversation, "l1")
    with pytest.raises(UnknownMessage):
        await store.set_status(conversation.id, message_id, MessageStatus.READ)


async def test_set_status_in_another_conversation_is_unknown(store: Store) -> None:
    conversation = await _conversation(store)
    other = await store.create_conversation(conversation.app_id, "device-2")
    message = await _send(store, conversation, "l1")
    with pytest.raises(UnknownMessage):
        await store.set_status(other.id, message.id, MessageStatus.READ)
    listed, _ = await store.list_messages(conversation.id, after=None, limit=10)
    assert listed[0].status == MessageStatus.SENT


async def test_a_reader_syncing_by_cursor_never_misses_a_concurrent_message(db_url: str) -> None:
    """Many tasks on two stores (two nodes, two pools) send to one conversation while a
    reader polls ``after=`` the last id it saw: what it collects is exactly the final
    list, in order. A message committed after the reader saw a later one would sit
    behind its cursor and be missed. (Without the conversation row lock, PostgreSQL
    missed 2-12 of 800 here.)"""
    writers, per_writer = 40, 20
    collected: list[Message] = []
    done = trio.Event()
    async with open_store(db_url, migrate=True) as first, open_store(db_url) as second:
        conversation = await _conversation(first)

        async def writer(store: Store, w: int) -> None:
            for i in range(per_writer):
                await store.add_message(
                    conversation.id, local_id=f"w{w}-{i}", body="b", sender=Sender.USER
                )

        async def reader() -> None:
            cursor: str | None = None
            while True:
                finished = done.is_set()  # read before polling: the last poll sees all
                page, _ = await first.list_messages(conversation.id, after=cursor, limit=7)
                collected.extend(page)
                if page:
                    cursor = page[-1].id
                elif finished:
                    return
                else:
                    await trio.lowlevel.checkpoint()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                async with trio.open_nursery() as writing:
                    for w in range(writers):
                        writing.start_soon(writer, (first, second)[w % 2], w)
                done.set()

        everything, has_more = await second.list_messages(conversation.id, after=None, limit=10_000)
    assert not has_more
    assert len(everything) == writers * per_writer
    assert [m.id for m in collected] == [m.id for m in everything]
    assert [m.id for m in everything] == sorted(m.id for m in everything)


async def test_timestamps_are_utc_aware(store: Store) -> None:
    conversation = await _conversation(store)
    message = await _send(store, conversation, "l1")
    assert message.created_at.tzinfo is not None
    assert message.created_at.astimezone(UTC) == message.created_at


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800"])
async def test_text_a_store_cannot_hold_is_refused_the_same_way_everywhere(
    store: Store, bad: str
) -> None:
    """PostgreSQL text cannot hold U+0000 and no store can encode a lone surrogate:
    both stores refuse such input with a StoreError (not StoreUnavailable), and a
    lookup with such an identifier simply finds nothing."""
    new = await store.create_app("Acme")
    app = new.app
    conversation = await store.create_conversation(app.id, "d")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.add_message(conversation.id, local_id=bad, body="b", sender=Sender.USER),
        lambda: store.add_message(conversation.id, local_id="l", body=bad, sender=Sender.USER),
        lambda: store.create_app(bad),
        lambda: store.create_conversation(app.id, bad),
    ]
    for call in calls:
        with pytest.raises(StoreError) as caught:
            await call()
        assert not isinstance(caught.value, StoreUnavailable)
    assert await store.list_messages(conversation.id, after=None, limit=10) == ([], False)

    assert not await store.verify_api_key(bad, new.api_key)
    assert not await store.verify_api_key(app.id, bad)
    assert not await store.verify_admin_token(bad, new.admin_token)
    assert not await store.verify_admin_token(app.id, bad)
    assert not await store.revoke_admin_token(bad)
    assert await store.get_conversation(bad, conversation.id) is None
    assert await store.get_conversation(app.id, bad) is None
    assert await store.list_conversations(bad) == []
    assert await store.list_conversations(app.id, bad) == []
    assert await store.latest_conversation(app.id, bad) is None
    assert await store.list_messages(bad, after=None, limit=10) == ([], False)
    with pytest.raises(InvalidCursor):
        await store.list_messages(bad, after="msg_00000000000000000001", limit=10)
    with pytest.raises(UnknownMessage):
        await store.set_status(bad, "msg_00000000000000000001", MessageStatus.READ)
    with pytest.raises(UnknownConversation):
        await store.add_message(bad, local_id="l", body="b", sender=Sender.USER)
    with pytest.raises(UnknownApp):
        await store.create_admin_token(bad)
    with pytest.raises(UnknownApp):
        await store.create_conversation(bad, "d")
    assert await store.count_apps() == 1
