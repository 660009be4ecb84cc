"""SQLite specifics: group commit (many writes, few transactions, all durable), URLs,
and a file that is locked or cannot be opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from replyhq_trio.backends import SqliteStore, open_store, sqlite_path_from_url
from replyhq_trio.ports import (
    Conversation,
    Message,
    Sender,
    Store,
    StoreUnavailable,
    UnknownConversation,
)


async def _conversations(store: Store, count: int) -> list[Conversation]:
    app = (await store.create_app("Acme")).app
    return [await store.create_conversation(app.id, f"d{i}") for i in range(count)]


async def test_the_store_satisfies_the_protocol(tmp_path: Path) -> None:
    store: Store = SqliteStore(str(tmp_path / "x.db"))  # mypy checks the structure
    async with open_store("sqlite:///:memory:", migrate=True) as opened:
        assert isinstance(opened, SqliteStore)
    await store.aclose()  # never opened: nothing to do


async def test_group_commit_batches_concurrent_writes_and_they_are_durable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "replyhq.db"
    calls = 500
    async with SqliteStore(str(path)) as store:
        await store.migrate()
        conversations = await _conversations(store, 10)
        commits_before = store.commits
        results: list[tuple[Message, bool]] = []

        async def send(i: int) -> None:
            results.append(
                await store.add_message(
                    conversations[i % 10].id, local_id=f"l{i}", body=f"b{i}", sender=Sender.USER
                )
            )

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(calls):
                    nursery.start_soon(send, i)
        transactions = store.commits - commits_before
        assert len(results) == calls
        assert all(new for _, new in results)
        assert len({m.id for m, _ in results}) == calls
        assert transactions <= calls // 10, transactions  # far fewer than one per call
        # each caller got its own message back
        assert sorted(int(m.local_id[1:]) for m, _ in results) == list(range(calls))
        assert all(m.body == "b" + m.local_id[1:] for m, _ in results)

    # Durable: a new connection to the file finds every one of them.
    async with open_store(f"sqlite:///{path}") as reopened:
        total = 0
        for conversation in conversations:
            messages, has_more = await reopened.list_messages(
                conversation.id, after=None, limit=1000
            )
            assert not has_more
            total += len(messages)
            last = await reopened.get_conversation(conversation.app_id, conversation.id)
            assert last is not None
            assert last.last_message_id == messages[-1].id
    assert total == calls
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM messages").fetchone() == (calls,)


async def test_duplicates_inside_one_batch_get_one_message(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'db'}", migrate=True) as store:
        assert isinstance(store, SqliteStore)
        (conversation,) = await _conversations(store, 1)
        results: dict[str, list[tuple[Message, bool]]] = {}
        batched_before, commits_before = store.batched_writes, store.commits

        async def send(local_id: str) -> None:
            outcome = await store.add_message(
                conversation.id, local_id=local_id, body=local_id, sender=Sender.USER
            )
            results.setdefault(local_id, []).append(outcome)

        async with trio.open_nursery() as nursery:
            for i in range(100):
                for _ in range(3):
                    nursery.start_soon(send, f"l{i}")
        assert store.batched_writes - batched_before == 300
        assert store.commits - commits_before <= 10
        for outcomes in results.values():
            assert len(outcomes) == 3
            assert sorted(new for _, new in outcomes) == [False, False, True]
            assert len({message for message, _ in outcomes}) == 1
        messages, _ = await store.list_messages(conversation.id, after=None, limit=1000)
        assert len(messages) == 100


async def test_a_failing_write_in_a_batch_fails_alone(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'db'}", migrate=True) as store:
        (conversation,) = await _conversations(store, 1)
        failures: list[BaseException] = []

        async def send(conversation_id: str, local_id: str) -> None:
            try:
                await store.add_message(
                    conversation_id, local_id=local_id, body="b", sender=Sender.USER
                )
            except UnknownConversation as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for i in range(50):
                target = "conv_00000000000000000000" if i == 25 else conversation.id
                nursery.start_soon(send, target, f"l{i}")
        assert len(failures) == 1
        messages, _ = await store.list_messages(conversation.id, after=None, limit=100)
        assert len(messages) == 49


async def test_a_locked_database_is_unavailable_within_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with open_store(f"sqlite:///{path}", migrate=True, timeout=0.3) as store:
        (conversation,) = await _conversations(store, 1)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            start = trio.current_time()
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.add_message(
                    conversation.id, local_id="l1", body="b", sender=Sender.USER
                )
            assert trio.current_time() - start < 1.5
            other.execute("ROLLBACK")
        finally:
            other.close()
        _, new = await store.add_message(
            conversation.id, local_id="l1", body="b", sender=Sender.USER
        )
        assert new


async def test_wal_and_full_synchronous(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with SqliteStore(str(path)) as store:
        await store.migrate()
        with sqlite3.connect(path) as con:
            assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        own = store._con  # the store's own connection: synchronous is per connection
        assert own is not None
        assert own.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


async def test_a_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'db'}"
    with pytest.raises(StoreUnavailable, match="cannot open SQLite database") as caught:
        async with open_store(url):
            pytest.fail("opened")
    assert "\n" not in str(caught.value)


async def test_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "db"))
    await store.open()
    await store.aclose()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.count_apps()


async def test_relative_and_memory_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite:///data/../relative.db", migrate=False) as store:
        with pytest.raises(StoreUnavailable, match="no such table"):
            await store.count_apps()  # not migrated unless asked
    async with open_store("sqlite:///relative.db", migrate=True) as store:
        await store.create_app("Acme")
    assert (tmp_path / "relative.db").exists()
    async with open_store("sqlite:///:memory:", migrate=True) as store:
        assert await store.count_apps() == 0


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///replyhq.db", "replyhq.db"),
        ("sqlite:///./data/replyhq.db", "./data/replyhq.db"),
        ("sqlite:////var/lib/replyhq.db", "/var/lib/replyhq.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("SQLITE:///x.db", "x.db"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    assert sqlite_path_from_url(url) == path


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/x.db",
        "sqlite:x.db",
        "mysql://localhost/x",
        "replyhq.db",
        "",
        "postgresql:x",
    ],
)
async def test_a_bad_url_is_a_clear_value_error(url: str) -> None:
    with pytest.raises(ValueError, match=r"URL .*(sqlite|postgresql)"):
        async with open_store(url):
            pytest.fail("opened")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:user:s3cret@db.internal/chat",
        "postgres:user:s3cret@db.internal:5432/chat?sslmode=require",
        "mysql://user:s3cret@db.internal/chat",
        "mysql://user@db.internal/chat?password=s3cret&sslmode=require",
    ],
)
async def test_a_bad_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(ValueError, match="URL") as caught:
        async with open_store(url):
            pytest.fail("opened")
    message = str(caught.value)
    assert "s3cret" not in message
    assert "db.internal" in message  # still says which URL
