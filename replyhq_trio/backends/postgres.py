"""The production store: PostgreSQL through an asyncpg pool, across the asyncio bridge.

Every method is ONE asyncio coroutine (a ``_unit`` function below: acquire, queries,
release) called once through :meth:`AsyncioBridge.run`, inside a Trio
``fail_after(timeout)``. A cancellation or timeout therefore reaches asyncpg as one
``CancelledError`` inside the coroutine: asyncpg cancels the query on the server, the
transaction (explicit, or the statement's own) rolls back, :meth:`_Connections.acquire`
gives the connection back, and only then does the Trio caller resume (DEPS-FINDINGS.md,
section 2). Most units are a single statement, so a single round trip; the pool does
not reset connections on release (:func:`_keep_session`), which would cost a second
round trip and a second transaction per call.

Every wait is bounded, also when the server goes silent (a network partition: the
connection stays open and nothing comes back). Waiting for a connection is bounded by
the call's timeout, every statement by the store's (asyncpg's ``command_timeout``, which
also bounds asyncpg's cancel request and a connection's close), and giving a connection
back after a cancelled statement by :data:`_CLEANUP_TIMEOUT`: the connection returns to
the pool only once the server has acknowledged the cancel and rolled back, otherwise it
is terminated (closed at once, without a word to the server, which ends the session and
its transaction). A call therefore gives up within its timeout plus
:data:`_CLEANUP_TIMEOUT`, and closing the store within ``close_timeout``.

Group commit. ``add_message`` calls are queued and committed in batches
(:class:`~replyhq_trio.backends._batching.GroupCommit`: one batch in flight at a time,
at most ``max_batch`` calls, the next batch taken as soon as the previous one is done):
a batch is one unit of work of ONE statement (``_ADD_MESSAGES``), hence one
transaction and one commit, whatever its size. Each caller gets its own outcome: a
duplicate ``(conversation_id, local_id)`` in a batch is stored once (the first in
queue order is new, the others replay it), a call into an unknown conversation gets
UnknownConversation alone, and a row that breaks the statement makes the batch retry
its calls one by one so that it fails alone. A caller cancelled or timed out while
its batch is in flight leaves at once and the batch goes on for the others (it is
cancelled, and rolled back, only when none of its callers still waits).

Errors: the server or the network being away (refused, reset, shut down, too many
connections, out of resources, timed out) is :class:`StoreUnavailable`; the pool drops
broken connections and opens new ones on the next acquire, so calls succeed again as
soon as the server is back. Any other database error is a :class:`StoreError`.

Ordering: a message's ``seq`` comes from an identity sequence, drawn by the INSERT
while the transaction holds the conversation's row lock (``FOR NO KEY UPDATE``, the
lock an UPDATE takes, on every conversation of the batch, in id order so that two
batches, from two nodes, cannot deadlock). The lock is taken inside the statement,
before any row of that conversation reaches the INSERT, and held until the statement
commits. Sends to one conversation are thus serialised from the draw to the commit, so
a message committed later always has a larger ``seq`` than any already visible in
that conversation, and a client syncing ``after=`` the last id it saw cannot miss one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import datetime
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar
from urllib.parse import urlsplit

import asyncpg
import asyncpg.exceptions as pg_errors
import trio

from ..ports import (
    App,
    Conversation,
    InvalidCursor,
    Message,
    MessageStatus,
    NewApp,
    Sender,
    StoreError,
    StoreUnavailable,
    UnknownApp,
    UnknownConversation,
    UnknownMessage,
)
from ._batching import GroupCommit
from ._bridge import AsyncioBridge, current_bridge
from ._common import (
    STATUS_RANK,
    NewMessage,
    conversation_value,
    first_of_each,
    hash_secret,
    message_id,
    message_value,
    new_admin_token,
    new_api_key,
    new_app_id,
    new_conversation_id,
    one_line,
    parse_message_id,
    require_text,
    secret_matches,
    storable,
)
from ._schema import (
    POSTGRES_CREATE_MIGRATIONS_TABLE,
    POSTGRES_MIGRATION_LOCK,
    POSTGRES_MIGRATIONS,
)

__all__ = ["PostgresStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Errors that mean "the database is not there right now", not "this request is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError (asyncpg's connect timeout) too
    asyncpg.InterfaceError,  # connection closed underneath, pool closing
    pg_errors.PostgresConnectionError,  # class 08
    pg_errors.InsufficientResourcesError,  # class 53: too many connections, disk full
    pg_errors.OperatorInterventionError,  # class 57: shutdown, cannot connect now
    pg_errors.TransactionRollbackError,  # class 40: deadlock, serialization (retryable)
    pg_errors.ReadOnlySQLTransactionError,  # a standby, e.g. during a failover
    pg_errors.InvalidAuthorizationSpecificationError,  # class 28: at (re)connection
    pg_errors.InvalidCatalogNameError,  # the database is gone
)

#: The longest a unit of work waits, once cancelled or timed out, for the server to
#: acknowledge the cancel of its statement and roll back; a server that answers does it in
#: a round trip or two, so a longer wait means it is not answering and the connection is
#: terminated instead.
_CLEANUP_TIMEOUT = 0.5

_MESSAGE_COLUMNS = "seq, local_id, conversation_id, body, sender, status, created_at"
_CONVERSATION_COLUMNS = "id, app_id, device_id, created_at, updated_at, last_message_seq"
_STATUS_RANK_SQL = "CASE status WHEN 'sent' THEN 0 WHEN 'delivered' THEN 1 ELSE 2 END"


def _describe(dsn: str) -> str:
    """Where a DSN points, without its credentials: ``host:port/database``."""
    try:
        parts = urlsplit(dsn)
        database = parts.path.lstrip("/") or parts.username or "?"
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}/{database}"
    except ValueError:
        return "the configured server"


def _message(row: Any) -> Message:
    return message_value(
        seq=row["seq"],
        local_id=row["local_id"],
        conversation_id=row["conversation_id"],
        body=row["body"],
        sender=row["sender"],
        status=row["status"],
        created_at=row["created_at"],
    )


def _conversation(row: Any) -> Conversation:
    return conversation_value(
        id=row["id"],
        app_id=row["app_id"],
        device_id=row["device_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_message_seq=row["last_message_seq"],
    )


# --- units of work: each is one asyncio coroutine, run once per call ---------------------


def _terminate(con: asyncpg.Connection) -> None:
    # A proxy already back in the pool (or closed) refuses with InterfaceError: then it
    # is no longer this unit's to end.
    with suppress(asyncpg.InterfaceError):
        con.terminate()


class _Connections:
    """The pool as a unit of work sees it: connections that come within ``timeout`` and
    go back in a known state, or are terminated.

    There is no ``Pool.fetchval`` and the like here on purpose: asyncpg's own ones
    release through ``Pool.acquire()``'s exit without a timeout, which waits for as long
    as a silent server keeps a cancelled statement unacknowledged.
    """

    __slots__ = ("pool", "timeout")

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for the block, waited for at most ``timeout``.

        On the way out, asyncpg's release finishes what the block left: it waits for the
        server's answer to the cancel of a statement cut short (asyncpg sends the cancel
        request as the statement is cancelled) and rolls back a transaction left open,
        in at most :data:`_CLEANUP_TIMEOUT`; when that runs out it terminates the
        connection. If this task is cancelled again meanwhile (asyncpg's release is
        shielded and would go on alone), the connection is terminated at once.
        """
        con = await self.pool.acquire(timeout=self.timeout)
        try:
            yield con
        finally:
            try:
                await self.pool.release(con, timeout=_CLEANUP_TIMEOUT)
            except Exception:
                # Released or not, the block's own outcome is what the caller needs; a
                # release that failed has terminated the connection (or will, at its
                # deadline), and this makes it now.
                _terminate(con)
            except BaseException:
                _terminate(con)
                raise

    async def fetch(self, query: str, *args: object) -> list[Any]:
        async with self.acquire() as con:
            rows: list[Any] = await con.fetch(query, *args)
            return rows

    async def fetchrow(self, query: str, *args: object) -> Any:
        async with self.acquire() as con:
            return await con.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: object) -> Any:
        async with self.acquire() as con:
            return await con.fetchval(query, *args)


async def _keep_session(con: asyncpg.Connection) -> None:
    """The pool's reset of a connection that comes back: nothing more than asyncpg's
    own part, which always runs first (it rolls back a transaction left open and drops
    listeners, without a round trip when there is none).

    The default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` on every release: a round trip and a transaction (a commit in
    ``pg_stat_database``) per call. No unit of work here leaves any of that behind:
    none uses SET, LISTEN or cursors, and :func:`_unit_migrate`, the only one that takes
    a session-level advisory lock, releases it or terminates the connection."""


async def _unit_create_pool(dsn: str, min_size: int, max_size: int, timeout: float) -> asyncpg.Pool:
    # A pool whose initialisation fails or is cancelled terminates the connections it
    # opened (asyncpg's Pool._async__init__).
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,  # connecting
        # Every statement, and also what asyncpg does on its own: a cancel request, a
        # connection's close (at pool.close(), or of one idle too long).
        command_timeout=timeout,
        reset=_keep_session,
        server_settings={"application_name": "replyhq-trio"},
    )


async def _unit_close_pool(pool: asyncpg.Pool) -> None:
    # A connection's close that timed out (TimeoutError is an OSError) or failed is no
    # error here: pool.close() has terminated every connection on its way out.
    with suppress(OSError, asyncpg.InterfaceError, asyncpg.PostgresError):
        await pool.close()


async def _unit_terminate_pool(pool: asyncpg.Pool) -> None:
    pool.terminate()


async def _unit_check(pool: _Connections) -> None:
    await pool.fetchval("SELECT 1")


async def _unit_migrate(pool: _Connections) -> None:
    # The whole migration may take the migration timeout, a statement too (DDL, or the
    # wait for another process's lock), rather than the store's command_timeout.
    limit = pool.timeout
    async with pool.acquire() as con:
        # Serialise migrate() across processes. The lock belongs to the session, and the
        # pool does not reset sessions (_keep_session): it is released below, or the
        # connection is terminated (which ends the session and releases it).
        try:
            await con.execute("SELECT pg_advisory_lock($1)", POSTGRES_MIGRATION_LOCK, timeout=limit)
            await con.execute(POSTGRES_CREATE_MIGRATIONS_TABLE, timeout=limit)
            applied = {
                row[0]
                for row in await con.fetch("SELECT version FROM schema_migrations", timeout=limit)
            }
            for migration in POSTGRES_MIGRATIONS:
                if migration.version in applied:
                    continue
                # Not ``async with con.transaction()``: its exit would roll back after a
                # cancellation too, first waiting (up to the command_timeout) for the
                # server to acknowledge the cancel. Terminating, below, rolls back as
                # surely (COMMIT was never sent) without waiting for anything.
                transaction = con.transaction()
                await transaction.start()
                try:
                    for statement in migration.statements:
                        await con.execute(statement, timeout=limit)
                    await con.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                        timeout=limit,
                    )
                except asyncpg.PostgresError:
                    await transaction.rollback()  # the server answered: it is in step
                    raise
                await transaction.commit()
        except asyncpg.PostgresError:
            # The server refused a statement and answered: the session is in step (the
            # migration's transaction rolled back), so the lock can be given back.
            await _unlock_or_terminate(con)
            raise
        except BaseException:
            # Cancelled, timed out or cut off: the session is in an unknown state.
            con.terminate()
            raise
        await _unlock_or_terminate(con)


async def _unlock_or_terminate(con: asyncpg.Connection) -> None:
    """Release the migration lock, or end the session that holds it (which releases it
    too) when that does not work: the migration's own outcome is what counts."""
    try:
        await con.execute("SELECT pg_advisory_unlock($1)", POSTGRES_MIGRATION_LOCK)
    except Exception:
        con.terminate()
    except BaseException:
        con.terminate()
        raise


# One statement, so one implicit transaction: nothing to roll back (no round trip to
# wait for) when the call is cut short.
_CREATE_APP = """
WITH app AS (
    INSERT INTO apps (id, name, api_key_hash) VALUES ($1, $2, $3) RETURNING id, created_at
), token AS (
    INSERT INTO admin_tokens (token_hash, app_id, created_at)
    SELECT $4, id, created_at FROM app
)
SELECT created_at FROM app
"""


async def _unit_create_app(
    pool: _Connections, app_id: str, name: str, key_hash: str, token_hash: str
) -> datetime:
    created_at: datetime = await pool.fetchval(_CREATE_APP, app_id, name, key_hash, token_hash)
    return created_at


async def _unit_count_apps(pool: _Connections) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM apps")
    return count


async def _unit_api_key_hash(pool: _Connections, app_id: str) -> str | None:
    found: str | None = await pool.fetchval("SELECT api_key_hash FROM apps WHERE id = $1", app_id)
    return found


async def _unit_create_admin_token(pool: _Connections, app_id: str, token_hash: str) -> None:
    created = await pool.fetchval(
        "INSERT INTO admin_tokens (token_hash, app_id) "
        "SELECT $1, id FROM apps WHERE id = $2 RETURNING true",
        token_hash,
        app_id,
    )
    if created is None:
        raise UnknownApp(f"no app {app_id!r}")


async def _unit_revoke_admin_token(pool: _Connections, token_hash: str) -> bool:
    revoked = await pool.fetchval(
        "UPDATE admin_tokens SET revoked_at = clock_timestamp() "
        "WHERE token_hash = $1 AND revoked_at IS NULL RETURNING true",
        token_hash,
    )
    return revoked is not None


async def _unit_live_admin_token(pool: _Connections, app_id: str, token_hash: str) -> str | None:
    found: str | None = await pool.fetchval(
        "SELECT token_hash FROM admin_tokens "
        "WHERE token_hash = $1 AND app_id = $2 AND revoked_at IS NULL",
        token_hash,
        app_id,
    )
    return found


async def _unit_create_conversation(
    pool: _Connections, conversation_id: str, app_id: str, device_id: str
) -> Conversation:
    row = await pool.fetchrow(
        "WITH now AS (SELECT clock_timestamp() AS t) "
        "INSERT INTO conversations (id, app_id, device_id, created_at, updated_at) "
        "SELECT $1, apps.id, $3, now.t, now.t FROM apps, now WHERE apps.id = $2 "
        f"RETURNING {_CONVERSATION_COLUMNS}",
        conversation_id,
        app_id,
        device_id,
    )
    if row is None:
        raise UnknownApp(f"no app {app_id!r}")
    return _conversation(row)


async def _unit_get_conversation(
    pool: _Connections, app_id: str, conversation_id: str
) -> Conversation | None:
    row = await pool.fetchrow(
        f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND app_id = $2",
        conversation_id,
        app_id,
    )
    return None if row is None else _conversation(row)


async def _unit_list_conversations(
    pool: _Connections, app_id: str, device_id: str | None, limit: int
) -> list[Conversation]:
    if device_id is None:
        rows = await pool.fetch(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE app_id = $1 "
            "ORDER BY updated_at DESC, id DESC LIMIT $2",
            app_id,
            limit,
        )
    else:
        rows = await pool.fetch(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations "
            "WHERE app_id = $1 AND device_id = $2 ORDER BY updated_at DESC, id DESC LIMIT $3",
            app_id,
            device_id,
            limit,
        )
    return [_conversation(row) for row in rows]


# One statement, so one implicit transaction (one commit, no BEGIN or COMMIT round
# trips) for a whole batch of add_message calls: lock the conversations (in id order),
# insert the messages (seqs drawn in queue order, under the locks), move each
# conversation's updated_at and last_message_seq once. $1-$4: the jobs (the first of
# each key, in queue order); $5: their distinct conversation ids. Returns the inserted
# rows, then one row per conversation that exists (seq NULL). Replays are not read back
# here: joining the batch with all of ``messages`` invites a plan that scans the table
# (a generic plan cached while it was small), slower with every batch; they are read by
# key, separately, when there are any. See the module docstring.
_ADD_MESSAGES = f"""
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
        WITH ORDINALITY AS b (conversation_id, local_id, body, sender, position)
),
locked AS MATERIALIZED (
    SELECT id FROM conversations WHERE id = ANY ($5::text[]) ORDER BY id FOR NO KEY UPDATE
),
inserted AS (
    INSERT INTO messages (conversation_id, local_id, body, sender, created_at)
    SELECT b.conversation_id, b.local_id, b.body, b.sender, clock_timestamp()
    FROM batch AS b
    WHERE b.conversation_id IN (SELECT id FROM locked)
    ORDER BY b.position
    ON CONFLICT (conversation_id, local_id) DO NOTHING
    RETURNING {_MESSAGE_COLUMNS}
),
latest AS (
    UPDATE conversations AS c
    SET updated_at = last.created_at, last_message_seq = last.seq
    FROM (
        SELECT DISTINCT ON (conversation_id) conversation_id, seq, created_at
        FROM inserted
        ORDER BY conversation_id, seq DESC
    ) AS last
    WHERE c.id = last.conversation_id AND c.id = ANY ($5::text[])
)
SELECT {_MESSAGE_COLUMNS} FROM inserted
UNION ALL
SELECT NULL, NULL, id, NULL, NULL, NULL, NULL FROM locked
"""

# The messages already stored under some keys (a superset: filtered by the caller).
_FIND_MESSAGES = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages "
    "WHERE conversation_id = ANY ($1::text[]) AND local_id = ANY ($2::text[])"
)

#: What the batch function gets back for each job: the stored row and whether this job
#: created it, or the error for that job alone.
_Outcome = tuple[Any, bool] | StoreError


async def _add_messages(con: asyncpg.Connection, jobs: list[NewMessage]) -> list[_Outcome]:
    """The batch statement for ``jobs`` (distinct keys), then, only if some of them
    were already stored (replays), one more to read those."""
    conversation_ids = [job.conversation_id for job in jobs]
    rows = await con.fetch(
        _ADD_MESSAGES,
        conversation_ids,
        [job.local_id for job in jobs],
        [job.body for job in jobs],
        [job.sender for job in jobs],
        sorted(set(conversation_ids)),
    )
    known: set[str] = set()
    found: dict[tuple[str, str], tuple[Any, bool]] = {}
    for row in rows:
        if row["seq"] is None:
            known.add(row["conversation_id"])
        else:
            found[row["conversation_id"], row["local_id"]] = (row, True)
    # In a known conversation and not inserted: the key was taken, by a message that
    # committed before the INSERT (a replay). It is read in a statement of its own:
    # the batch statement's snapshot may predate it (taken before the lock waits).
    replays = {
        (job.conversation_id, job.local_id)
        for job in jobs
        if job.conversation_id in known and (job.conversation_id, job.local_id) not in found
    }
    if replays:
        for row in await con.fetch(
            _FIND_MESSAGES,
            sorted({conversation_id for conversation_id, _ in replays}),
            sorted({local_id for _, local_id in replays}),
        ):
            key = (row["conversation_id"], row["local_id"])
            if key in replays:
                found[key] = (row, False)
    outcomes: list[_Outcome] = []
    for job in jobs:
        outcome = found.get((job.conversation_id, job.local_id))
        if outcome is not None:
            outcomes.append(outcome)
        elif job.conversation_id not in known:
            outcomes.append(UnknownConversation(f"no conversation {job.conversation_id!r}"))
        else:  # cannot happen: the INSERT neither stored it nor met a conflict
            outcomes.append(StoreError(f"message {job.local_id!r} was neither stored nor found"))
    return outcomes


async def _unit_add_messages(pool: _Connections, jobs: list[NewMessage]) -> list[_Outcome]:
    async with pool.acquire() as con:
        try:
            return await _add_messages(con, jobs)
        except asyncpg.PostgresError as exc:
            if len(jobs) == 1 or isinstance(exc, _UNAVAILABLE):
                raise
        # One job broke the whole statement (e.g. a local_id too long for the unique
        # index): run them one by one, so that it fails alone.
        outcomes: list[_Outcome] = []
        for job in jobs:
            try:
                outcomes.extend(await _add_messages(con, [job]))
            except asyncpg.PostgresError as exc:
                if isinstance(exc, _UNAVAILABLE):
                    raise
                outcomes.append(StoreError(f"PostgreSQL rejected a statement: {one_line(exc)}"))
        return outcomes


# One statement: the cursor's check and the page. No row: the cursor is not a message of
# the conversation; one row of NULLs: an empty page.
_LIST_MESSAGES = f"""
SELECT {", ".join("m." + c for c in _MESSAGE_COLUMNS.split(", "))}
FROM (
    SELECT WHERE $4::boolean
        OR EXISTS (SELECT FROM messages WHERE seq = $2 AND conversation_id = $1)
) AS cursor
LEFT JOIN LATERAL (
    SELECT {_MESSAGE_COLUMNS} FROM messages
    WHERE conversation_id = $1 AND seq > $2
    ORDER BY seq
    LIMIT $3
) AS m ON true
ORDER BY m.seq
"""


async def _unit_list_messages(
    pool: _Connections, conversation_id: str, after: str | None, after_seq: int, limit: int
) -> tuple[list[Message], bool]:
    rows = await pool.fetch(_LIST_MESSAGES, conversation_id, after_seq, limit + 1, after is None)
    if not rows:
        raise InvalidCursor(f"{after!r} is not a message of {conversation_id!r}")
    if rows[0]["seq"] is None:
        return [], False
    return [_message(row) for row in rows[:limit]], len(rows) > limit


# One statement: the move forward, or (when the status is already there or beyond) the
# message as it is.
_SET_STATUS = f"""
WITH moved AS (
    UPDATE messages SET status = $3
    WHERE seq = $1 AND conversation_id = $2 AND {_STATUS_RANK_SQL} < $4
        AND sender IS DISTINCT FROM $5::text
    RETURNING {_MESSAGE_COLUMNS}
)
SELECT true AS changed, {_MESSAGE_COLUMNS} FROM moved
UNION ALL
SELECT false, {_MESSAGE_COLUMNS} FROM messages
WHERE seq = $1 AND conversation_id = $2 AND NOT EXISTS (SELECT FROM moved)
"""


async def _unit_set_status(
    pool: _Connections,
    conversation_id: str,
    seq: int,
    status: MessageStatus,
    by: str | None,
) -> tuple[Message, bool]:
    rank = STATUS_RANK[status]
    async with pool.acquire() as con:
        row = await con.fetchrow(_SET_STATUS, seq, conversation_id, status.value, rank, by)
        unchanged = row is not None and not row["changed"] and row["sender"] != by
        if unchanged and STATUS_RANK[MessageStatus(row["status"])] < rank:
            # Another transaction moved it past ``status`` while the UPDATE waited for
            # it: this statement's snapshot shows it from before. Read it as it is now.
            row = await con.fetchrow(
                f"SELECT false AS changed, {_MESSAGE_COLUMNS} FROM messages "
                "WHERE seq = $1 AND conversation_id = $2",
                seq,
                conversation_id,
            )
    if row is None:
        raise UnknownMessage(f"no message {message_id(seq)!r} in {conversation_id!r}")
    return _message(row), bool(row["changed"])


# --- the store ----------------------------------------------------------------------------


class PostgresStore:
    """A :class:`~replyhq_trio.ports.Store` in PostgreSQL.

    Args:
        dsn: ``postgresql://user:password@host:port/database`` (or ``postgres://``).
        timeout: the longest any call waits (for a pool connection, a new connection,
            the server's answers) before it raises StoreUnavailable, after at most
            :data:`_CLEANUP_TIMEOUT` more to let go of the connection it held; also each
            statement's limit on the asyncio side (asyncpg's ``command_timeout``).
        min_size, max_size: the pool's connection floor and ceiling.
        migrate_timeout: the longest :meth:`migrate` takes (it may wait for another
            process's migration).
        close_timeout: the longest :meth:`aclose` waits for calls in flight and for
            the connections to close before it terminates them.
        max_batch: the most ``add_message`` calls group-committed in one statement
            (batches run one at a time: 1 makes every call a statement of its own, one
            after the other).
        bridge: the asyncio bridge to run on; by default the one open in the context
            that calls :meth:`open` (``open_asyncio_bridge()``).

    Use it as ``async with PostgresStore(dsn) as store:`` inside an open bridge (or
    through :func:`open_store`, which opens one when none is).
    """

    def __init__(
        self,
        dsn: str,
        *,
        timeout: float = 5.0,
        min_size: int = 1,
        max_size: int = 10,
        migrate_timeout: float = 60.0,
        close_timeout: float = 5.0,
        max_batch: int = 500,
        bridge: AsyncioBridge | None = None,
    ) -> None:
        if timeout <= 0 or migrate_timeout <= 0 or close_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch!r}")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(f"need 0 <= min_size <= max_size, 1 <= max_size: {min_size, max_size}")
        self._dsn = dsn
        self._where = _describe(dsn)
        self._timeout = timeout
        self._min_size = min_size
        self._max_size = max_size
        self._migrate_timeout = migrate_timeout
        self._close_timeout = close_timeout
        self._bridge = bridge
        self._pool: asyncpg.Pool | None = None
        self._lifetime = AsyncExitStack()
        self._writes: GroupCommit[NewMessage, tuple[Message, bool]] = GroupCommit(
            self._add_batch,
            max_batch=max_batch,
            timeout=timeout,
            timed_out=self._timed_out,
            name=f"PostgreSQL group commit ({self._where})",
        )

    @property
    def where(self) -> str:
        """``host:port/database``, for messages (no credentials)."""
        return self._where

    @property
    def batches(self) -> int:
        """Group-committed ``add_message`` batches run so far (one statement, one
        transaction each)."""
        return self._writes.batches

    @property
    def batched_writes(self) -> int:
        """``add_message`` calls that went through group commit."""
        return self._writes.jobs

    def pool_stats(self) -> tuple[int, int]:
        """``(connections, idle connections)`` of the pool now (``(0, 0)`` when closed)."""
        pool = self._pool
        if pool is None:
            return 0, 0
        return int(pool.get_size()), int(pool.get_idle_size())

    # --- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool (``min_size`` connections, at once).

        Raises:
            StoreUnavailable: the server cannot be reached, refuses us, or the database
                does not exist (one line, naming host, port and database).
            ValueError: the DSN is malformed.
            RuntimeError: no asyncio bridge is open.
        """
        if self._pool is not None:
            return
        if self._bridge is None:
            self._bridge = current_bridge()
        try:
            with trio.fail_after(self._timeout):
                self._pool = await self._bridge.run(
                    _unit_create_pool, self._dsn, self._min_size, self._max_size, self._timeout
                )
        except trio.TooSlowError:
            raise StoreUnavailable(
                f"PostgreSQL at {self._where} did not answer within {self._timeout:g} s"
            ) from None
        except ValueError as exc:  # asyncpg's ClientConfigurationError is one too
            raise ValueError(f"invalid PostgreSQL URL ({self._where}): {exc}") from exc
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {self._where}: {one_line(exc)}"
            ) from exc

    async def aclose(self) -> None:
        """Close the pool: wait (shielded, at most ``close_timeout``) for connections in
        use to come back and for each to close (each close is bounded by ``timeout``
        too), then terminate whatever is left. Later calls raise StoreUnavailable."""
        pool, self._pool = self._pool, None
        if pool is None or self._bridge is None:
            return
        if not await self._bridge.run_cleanup(self._close_timeout, _unit_close_pool, pool):
            await self._bridge.run_cleanup(1.0, _unit_terminate_pool, pool)

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

    async def _call(
        self,
        unit: Callable[Concatenate[_Connections, _P], Coroutine[Any, Any, _T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        return await self._call_within(self._timeout, unit, *args, **kwargs)

    async def _call_within(
        self,
        timeout: float,
        unit: Callable[Concatenate[_Connections, _P], Coroutine[Any, Any, _T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run one unit of work on the pool, within ``timeout`` (plus the cleanup of a
        unit cut short: at most :data:`_CLEANUP_TIMEOUT`), translating errors."""
        pool, bridge = self._pool, self._bridge
        if pool is None or bridge is None:
            raise StoreUnavailable(f"the PostgreSQL store ({self._where}) is not open")
        try:
            with trio.fail_after(timeout):
                return await bridge.run(unit, _Connections(pool, timeout), *args, **kwargs)
        except (trio.TooSlowError, TimeoutError):
            # TimeoutError: asyncpg's own limits (a statement, a connection, the pool)
            # ran out first, on the asyncio side of the same deadline.
            raise self._timed_out(timeout) from None
        except StoreError:
            raise
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"PostgreSQL at {self._where} is unavailable: {one_line(exc)}"
            ) from exc
        except asyncio.CancelledError as exc:
            # Not our cancellation (that arrives as trio.Cancelled): the asyncio loop is
            # shutting down underneath the call.
            raise StoreUnavailable(f"the asyncio loop stopped during a call: {exc!r}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"PostgreSQL rejected a statement: {one_line(exc)}") from exc

    def _timed_out(self, timeout: float | None = None) -> StoreUnavailable:
        waited = self._timeout if timeout is None else timeout
        return StoreUnavailable(f"PostgreSQL at {self._where} did not answer within {waited:g} s")

    # --- schema -----------------------------------------------------------------------

    async def migrate(self) -> None:
        """Apply the missing migrations, one transaction each, under an advisory lock
        (two processes migrating at once apply each step once)."""
        await self._call_within(self._migrate_timeout, _unit_migrate)

    async def check(self) -> None:
        await self._call(_unit_check)

    # --- apps and credentials -----------------------------------------------------

    async def create_app(self, name: str) -> NewApp:
        require_text("name", name)
        app_id, api_key, admin_token = new_app_id(), new_api_key(), new_admin_token()
        created_at = await self._call(
            _unit_create_app, app_id, name, hash_secret(api_key), hash_secret(admin_token)
        )
        return NewApp(
            app=App(id=app_id, name=name, created_at=created_at),
            api_key=api_key,
            admin_token=admin_token,
        )

    async def count_apps(self) -> int:
        return await self._call(_unit_count_apps)

    async def verify_api_key(self, app_id: str, api_key: str) -> bool:
        if not storable(app_id):
            return False
        return secret_matches(api_key, await self._call(_unit_api_key_hash, app_id))

    async def create_admin_token(self, app_id: str) -> str:
        if not storable(app_id):
            raise UnknownApp(f"no app {app_id!r}")
        token = new_admin_token()
        await self._call(_unit_create_admin_token, app_id, hash_secret(token))
        return token

    async def revoke_admin_token(self, token: str) -> bool:
        return await self._call(_unit_revoke_admin_token, hash_secret(token))

    async def verify_admin_token(self, app_id: str, token: str) -> bool:
        # Looked up by its hash (the primary key): an index lookup on SHA-256(input)
        # tells a timing attacker nothing about any stored token.
        if not storable(app_id):
            return False
        found = await self._call(_unit_live_admin_token, app_id, hash_secret(token))
        return secret_matches(token, found)

    # --- conversations ------------------------------------------------------------

    async def create_conversation(self, app_id: str, device_id: str) -> Conversation:
        if not storable(app_id):
            raise UnknownApp(f"no app {app_id!r}")
        require_text("device_id", device_id)
        return await self._call(_unit_create_conversation, new_conversation_id(), app_id, device_id)

    async def get_conversation(self, app_id: str, conversation_id: str) -> Conversation | None:
        if not storable(app_id, conversation_id):
            return None
        return await self._call(_unit_get_conversation, app_id, conversation_id)

    async def list_conversations(
        self, app_id: str, device_id: str | None = None, *, limit: int = 200
    ) -> list[Conversation]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit!r}")
        if not storable(app_id, device_id or ""):
            return []
        return await self._call(_unit_list_conversations, app_id, device_id, limit)

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
        if self._pool is None:
            raise StoreUnavailable(f"the PostgreSQL store ({self._where}) is not open")
        return await self._writes.submit(NewMessage(conversation_id, local_id, body, sender.value))

    async def _add_batch(self, jobs: list[NewMessage]) -> list[tuple[Message, bool] | Exception]:
        """Group commit's batch function: the jobs in one unit of work (one statement),
        within the store's timeout; each job's outcome, duplicates included."""
        unique, slots = first_of_each(jobs)
        outcomes = await self._call(_unit_add_messages, unique)
        results: list[tuple[Message, bool] | Exception] = []
        replayed: set[int] = set()
        for slot in slots:
            outcome = outcomes[slot]
            if isinstance(outcome, StoreError):
                # each caller its own instance
                results.append(outcome if slot not in replayed else type(outcome)(*outcome.args))
            else:
                row, created = outcome
                results.append((_message(row), created and slot not in replayed))
            replayed.add(slot)
        return results

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
        return await self._call(_unit_list_messages, conversation_id, after, after_seq, limit)

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
        return await self._call(
            _unit_set_status,
            conversation_id,
            seq,
            status,
            by and by.value,
        )
