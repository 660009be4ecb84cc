"""The embedded store: SQLite from the standard library, on one worker thread.

One connection, one thread at a time: every call runs through
``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)`` (the connection is opened
with ``check_same_thread=False`` because Trio's thread cache may hand the work to a
different OS thread each time; the limiter is what makes that safe). WAL with
``synchronous=FULL``: a transaction is on disk (fsynced) when its COMMIT returns, so a
message is durable before it is acknowledged.

Group commit. Writes that are small and frequent (``add_message``, ``set_status``,
``create_conversation``) are queued and committed in batches
(:class:`~replyhq_trio.backends._batching.GroupCommit`): whenever writes are queued and
no batch is in flight, a committer task takes them all (at most ``max_batch``) and runs
them in ONE transaction on the worker thread, then hands each caller its own result;
writes that queue meanwhile form the next batch, which goes to the thread as soon as
the previous commit returns (while the Trio thread hands out the results of the one
before). Under load a transaction (one fsync) carries as many writes as arrived during
the previous one, and a lone write is not delayed at all. In a batch, the new messages
go in together, in a handful of statements whatever their number (:func:`lite.add_messages`:
one INSERT run per distinct key, in queue order, one SELECT of what it inserted, one
UPDATE per conversation; a duplicate ``local_id`` is stored once, the first in queue
order being the new one); every other write runs in its own SAVEPOINT. A write that
fails on its own (a StoreError such as UnknownConversation, a refused row) fails alone
and the others commit.

SQLite has a single writer, so ``seq`` order is commit order, which is what cursor
sync needs (``Store.list_messages``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar, TypeVarTuple, cast

import trio

from ..ports import (
    App,
    Conversation,
    InvalidCursor,
    Message,
    MessageStatus,
    NewApp,
    Sender,
    StoreUnavailable,
    UnknownApp,
    UnknownConversation,
    UnknownMessage,
)
from . import _sqlite_rows as lite
from ._batching import GroupCommit
from ._common import (
    STATUS_RANK,
    NewMessage,
    hash_secret,
    new_admin_token,
    new_api_key,
    new_app_id,
    new_conversation_id,
    parse_message_id,
    require_text,
    secret_matches,
    storable,
    utc_now,
)
from ._schema import SQLITE_CREATE_MIGRATIONS_TABLE, SQLITE_MIGRATIONS, Migration

__all__ = ["SqliteStore", "sqlite_path_from_url"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


_URL_FORMS = "sqlite:///relative/path, sqlite:////absolute/path or sqlite:///:memory:"


def sqlite_path_from_url(url: str) -> str:
    """The file path in a ``sqlite:`` URL (``:memory:`` for an in-memory database).

    ``sqlite:///relative/path`` (relative to the working directory),
    ``sqlite:////absolute/path`` and ``sqlite:///:memory:``.

    Raises:
        ValueError: not one of these forms.
    """
    scheme, sep, rest = url.partition(":")
    if scheme.lower() != "sqlite" or not sep:
        raise ValueError(f"not a SQLite URL: {url!r} (expected {_URL_FORMS})")
    if not rest.startswith("///") or len(rest) == 3:
        raise ValueError(f"invalid SQLite URL {url!r}: expected {_URL_FORMS}")
    return rest[3:]


def _apply(
    migration: Migration,
    applied: Callable[[sqlite3.Connection], set[int]],
    con: sqlite3.Connection,
) -> None:
    """In a write transaction: ``migration`` and its record, unless already applied."""
    if migration.version in applied(con):
        return
    for statement in migration.statements:
        con.execute(statement)
    con.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (migration.version, migration.name, lite.iso(utc_now())),
    )


class SqliteStore:
    """A :class:`~replyhq_trio.ports.Store` in one SQLite file.

    Args:
        path: a file path, or ``":memory:"``.
        timeout: the longest a call waits, for the worker thread or for another
            process's write lock (SQLite's busy timeout), before StoreUnavailable.
        max_batch: the most writes group-committed in one transaction (1 turns group
            commit off: one transaction per write).

    Use it as ``async with SqliteStore(path) as store:`` (or :func:`open_store`).
    """

    def __init__(self, path: str, *, timeout: float = 5.0, max_batch: int = 1000) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch!r}")
        self._path = path
        self._timeout = timeout
        self._limiter = trio.CapacityLimiter(1)
        self._con: sqlite3.Connection | None = None
        self._lifetime = AsyncExitStack()
        self._writes: GroupCommit[lite.Write, Any] = GroupCommit(
            self._commit_batch,
            max_batch=max_batch,
            timeout=timeout,
            timed_out=self._timed_out,
            name=f"SQLite group commit ({path})",
        )
        #: Write transactions committed (a group-committed batch counts once).
        self.commits = 0

    @property
    def batches(self) -> int:
        """Group-commit batches run so far (one transaction each)."""
        return self._writes.batches

    @property
    def batched_writes(self) -> int:
        """Writes that went through group commit."""
        return self._writes.jobs

    @property
    def path(self) -> str:
        return self._path

    # --- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """Open the connection and set WAL, ``synchronous=FULL``, foreign keys.

        Raises:
            StoreUnavailable: the file cannot be opened (one line, with the path).
        """
        if self._con is not None:
            return
        try:
            with trio.fail_after(self._timeout):
                self._con = await trio.to_thread.run_sync(self._connect, limiter=self._limiter)
        except trio.TooSlowError:
            raise StoreUnavailable(
                f"SQLite database {self._path} did not open within {self._timeout:g} s"
            ) from None
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self._path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(
            self._path,
            timeout=self._timeout,
            isolation_level=None,  # autocommit; transactions are explicit BEGIN/COMMIT
            check_same_thread=False,  # one thread at a time, guarded by the limiter
        )
        try:
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            con.close()
            raise
        return con

    async def aclose(self) -> None:
        """Close the connection once the calls in progress are done (shielded, and
        bounded by the timeout; past it the connection is closed by the garbage
        collector instead). Later calls raise StoreUnavailable."""
        con, self._con = self._con, None
        if con is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(self._timeout):
            await trio.to_thread.run_sync(con.close, limiter=self._limiter)

    async def __aenter__(self) -> Self:
        await self.open()
        try:
            await self._lifetime.enter_async_context(self._writes.running())
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._lifetime.aclose()  # writes in flight finish first (bounded)
        finally:
            await self.aclose()

    # --- running work on the thread -------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        con = self._con
        if con is None:
            raise StoreUnavailable(f"the SQLite store {self._path} is closed")
        return con

    async def _in_thread(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        """Run ``fn`` on the worker thread; sqlite3 errors become store errors. Not
        cancellable once the thread has started (it is bounded by the busy timeout)."""
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise lite.unavailable(exc) from exc

    async def _call(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        """:meth:`_in_thread` within the store's timeout."""
        try:
            with trio.fail_after(self._timeout):
                return await self._in_thread(fn, *args)
        except trio.TooSlowError:
            raise self._timed_out() from None

    def _timed_out(self) -> StoreUnavailable:
        return StoreUnavailable(f"SQLite did not answer within {self._timeout:g} s ({self._path})")

    def _transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """On the worker thread: ``work`` in one write transaction."""
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")  # take the write lock now (busy timeout applies)
        try:
            result = work(con)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        self.commits += 1
        return result

    async def _write_batched(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in a group-committed transaction, in a savepoint of its own; see
        the module docstring."""
        result: _T = await self._writes.submit(work)
        return result

    async def _commit_batch(self, batch: list[lite.Write]) -> list[Any]:
        """Group commit's batch function: the batch in one transaction on the worker
        thread (not cancellable once the thread has started, bounded by the busy
        timeout); a sqlite3 error that is not one job's own fails the whole batch."""
        return await self._in_thread(self._run_batch, batch)

    def _run_batch(self, batch: list[lite.Write]) -> list[Any]:
        """On the worker thread: every write of the batch in one transaction, the new
        messages first (all together), then the other writes in queue order, each in
        its own savepoint.

        A write that raises is rolled back to its savepoint and gets its exception; a
        sqlite3 error other than a constraint violation (I/O, full disk, lock timeout)
        fails the whole batch instead, since the transaction itself may be gone.
        """

        def run_all(con: sqlite3.Connection) -> list[Any]:
            results: list[Any] = [None] * len(batch)
            new = [index for index, job in enumerate(batch) if isinstance(job, NewMessage)]
            if new:
                messages = [cast("NewMessage", batch[index]) for index in new]
                for index, outcome in zip(new, lite.add_messages(con, messages), strict=True):
                    results[index] = outcome
            for index, job in enumerate(batch):
                if not isinstance(job, NewMessage):
                    results[index] = lite.in_savepoint(con, job)
            return results

        return self._transaction(run_all)

    # --- schema -----------------------------------------------------------------------

    async def migrate(self) -> None:
        """Apply the missing migrations, each in its own ``BEGIN IMMEDIATE`` transaction
        (which takes SQLite's write lock, so two processes migrating at once apply each
        step once: the second re-reads the versions under the lock)."""
        await self._call(self._migrate)

    def _migrate(self) -> None:
        def applied(con: sqlite3.Connection) -> set[int]:
            con.execute(SQLITE_CREATE_MIGRATIONS_TABLE)
            return {row[0] for row in con.execute("SELECT version FROM schema_migrations")}

        if {m.version for m in SQLITE_MIGRATIONS} <= self._transaction(applied):
            return
        for migration in SQLITE_MIGRATIONS:
            self._transaction(partial(_apply, migration, applied))

    async def check(self) -> None:
        await self._call(self._check)

    def _check(self) -> None:
        self._connection().execute("SELECT 1").fetchall()

    # --- apps and credentials -----------------------------------------------------

    async def create_app(self, name: str) -> NewApp:
        require_text("name", name)
        app = App(id=new_app_id(), name=name, created_at=utc_now())
        api_key, admin_token = new_api_key(), new_admin_token()

        def work(con: sqlite3.Connection) -> None:
            con.execute(
                "INSERT INTO apps (id, name, api_key_hash, created_at) VALUES (?, ?, ?, ?)",
                (app.id, app.name, hash_secret(api_key), lite.iso(app.created_at)),
            )
            con.execute(
                "INSERT INTO admin_tokens (token_hash, app_id, created_at) VALUES (?, ?, ?)",
                (hash_secret(admin_token), app.id, lite.iso(app.created_at)),
            )

        await self._call(self._transaction, work)
        return NewApp(app=app, api_key=api_key, admin_token=admin_token)

    async def count_apps(self) -> int:
        def work() -> int:
            count: int = self._connection().execute("SELECT count(*) FROM apps").fetchone()[0]
            return count

        return await self._call(work)

    async def verify_api_key(self, app_id: str, api_key: str) -> bool:
        if not storable(app_id):
            return False

        def work() -> str | None:
            row = (
                self._connection()
                .execute("SELECT api_key_hash FROM apps WHERE id = ?", (app_id,))
                .fetchone()
            )
            return None if row is None else str(row[0])

        return secret_matches(api_key, await self._call(work))

    async def create_admin_token(self, app_id: str) -> str:
        if not storable(app_id):
            raise UnknownApp(f"no app {app_id!r}")
        token = new_admin_token()

        def work(con: sqlite3.Connection) -> None:
            if con.execute("SELECT 1 FROM apps WHERE id = ?", (app_id,)).fetchone() is None:
                raise UnknownApp(f"no app {app_id!r}")
            con.execute(
                "INSERT INTO admin_tokens (token_hash, app_id, created_at) VALUES (?, ?, ?)",
                (hash_secret(token), app_id, lite.iso(utc_now())),
            )

        await self._call(self._transaction, work)
        return token

    async def revoke_admin_token(self, token: str) -> bool:
        def work() -> bool:
            cursor = self._connection().execute(
                "UPDATE admin_tokens SET revoked_at = ? "
                "WHERE token_hash = ? AND revoked_at IS NULL",
                (lite.iso(utc_now()), hash_secret(token)),
            )
            return cursor.rowcount == 1

        return await self._call(work)

    async def verify_admin_token(self, app_id: str, token: str) -> bool:
        # Looked up by its hash (the primary key): an index lookup on SHA-256(input)
        # tells a timing attacker nothing about any stored token.
        digest = hash_secret(token)
        if not storable(app_id):
            return False

        def work() -> str | None:
            row = (
                self._connection()
                .execute(
                    "SELECT token_hash FROM admin_tokens "
                    "WHERE token_hash = ? AND app_id = ? AND revoked_at IS NULL",
                    (digest, app_id),
                )
                .fetchone()
            )
            return None if row is None else str(row[0])

        return secret_matches(token, await self._call(work))

    # --- conversations ------------------------------------------------------------

    async def create_conversation(self, app_id: str, device_id: str) -> Conversation:
        if not storable(app_id):
            raise UnknownApp(f"no app {app_id!r}")
        require_text("device_id", device_id)
        now = utc_now()
        conversation = Conversation(
            id=new_conversation_id(),
            app_id=app_id,
            device_id=device_id,
            created_at=now,
            updated_at=now,
            last_message_id=None,
        )

        def work(con: sqlite3.Connection) -> None:
            if con.execute("SELECT 1 FROM apps WHERE id = ?", (app_id,)).fetchone() is None:
                raise UnknownApp(f"no app {app_id!r}")
            con.execute(
                "INSERT INTO conversations (id, app_id, device_id, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (conversation.id, app_id, device_id, lite.iso(now), lite.iso(now)),
            )

        await self._write_batched(work)
        return conversation

    async def get_conversation(self, app_id: str, conversation_id: str) -> Conversation | None:
        if not storable(app_id, conversation_id):
            return None

        def work() -> Conversation | None:
            row = (
                self._connection()
                .execute(
                    f"SELECT {lite.CONVERSATION_COLUMNS} FROM conversations "
                    "WHERE id = ? AND app_id = ?",
                    (conversation_id, app_id),
                )
                .fetchone()
            )
            return None if row is None else lite.conversation(row)

        return await self._call(work)

    async def list_conversations(
        self, app_id: str, device_id: str | None = None, *, limit: int = 200
    ) -> list[Conversation]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit!r}")
        if not storable(app_id, device_id or ""):
            return []

        def work() -> list[Conversation]:
            con = self._connection()
            if device_id is None:
                rows = con.execute(
                    f"SELECT {lite.CONVERSATION_COLUMNS} FROM conversations WHERE app_id = ? "
                    "ORDER BY updated_at DESC, id DESC LIMIT ?",
                    (app_id, limit),
                ).fetchall()
            else:
                rows = con.execute(
                    f"SELECT {lite.CONVERSATION_COLUMNS} FROM conversations "
                    "WHERE app_id = ? AND device_id = ? "
                    "ORDER BY updated_at DESC, id DESC LIMIT ?",
                    (app_id, device_id, limit),
                ).fetchall()
            return [lite.conversation(row) for row in rows]

        return await self._call(work)

    async def latest_conversation(self, app_id: str, device_id: str) -> Conversation | None:
        found = await self.list_conversations(app_id, device_id, limit=1)
        return found[0] if found else None

    # --- messages -------------------------------------------------------------------

    async def add_message(
        self, conversation_id: str, *, local_id: str, body: str, sender: Sender
    ) -> tuple[Message, bool]:
        if not storable(conversation_id):
            raise UnknownConversation(f"no conversation {conversation_id!r}")
        require_text("local_id", local_id)
        require_text("body", body)

        outcome: tuple[Message, bool] = await self._writes.submit(
            NewMessage(conversation_id, local_id, body, sender.value)
        )
        return outcome

    async def list_messages(
        self, conversation_id: str, *, after: str | None, limit: int
    ) -> tuple[list[Message], bool]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit!r}")
        after_seq = 0
        if after is not None:
            parsed = parse_message_id(after)
            if parsed is None:
                raise InvalidCursor(f"{after!r} is not a message id")
            after_seq = parsed
        if not storable(conversation_id):
            if after is not None:
                raise InvalidCursor(f"{after!r} is not a message of {conversation_id!r}")
            return [], False

        def work() -> tuple[list[Message], bool]:
            con = self._connection()
            if after is not None:
                found = con.execute(
                    "SELECT 1 FROM messages WHERE seq = ? AND conversation_id = ?",
                    (after_seq, conversation_id),
                ).fetchone()
                if found is None:
                    raise InvalidCursor(f"{after!r} is not a message of {conversation_id!r}")
            rows = con.execute(
                f"SELECT {lite.MESSAGE_COLUMNS} FROM messages "
                "WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (conversation_id, after_seq, limit + 1),
            ).fetchall()
            return [lite.message(row) for row in rows[:limit]], len(rows) > limit

        return await self._call(work)

    async def set_status(
        self,
        conversation_id: str,
        message_id: str,
        status: MessageStatus,
        *,
        by: Sender | None = None,
    ) -> tuple[Message, bool]:
        seq = parse_message_id(message_id)
        if seq is None or not storable(conversation_id):
            raise UnknownMessage(f"no message {message_id!r} in {conversation_id!r}")

        def work(con: sqlite3.Connection) -> tuple[Message, bool]:
            moved = con.execute(
                f"UPDATE messages SET status = ? "
                f"WHERE seq = ? AND conversation_id = ? AND {lite.STATUS_RANK_SQL} < ? "
                f"AND sender IS NOT ? RETURNING {lite.MESSAGE_COLUMNS}",
                (status.value, seq, conversation_id, STATUS_RANK[status], by and by.value),
            ).fetchall()
            if moved:
                return lite.message(moved[0]), True
            row = con.execute(
                f"SELECT {lite.MESSAGE_COLUMNS} FROM messages"
                " WHERE seq = ? AND conversation_id = ?",
                (seq, conversation_id),
            ).fetchone()
            if row is None:
                raise UnknownMessage(f"no message {message_id!r} in {conversation_id!r}")
            return lite.message(row), False

        return await self._write_batched(work)
