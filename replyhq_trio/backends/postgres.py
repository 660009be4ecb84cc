"""The production store: PostgreSQL through an asyncpg pool, across the asyncio bridge.

Every method is ONE asyncio coroutine (a ``unit_`` function of :mod:`._postgres_queries` or
:mod:`._postgres_pool`: acquire, queries, release) called once through
:meth:`AsyncioBridge.run`, inside a Trio ``fail_after(timeout)``. A cancellation or timeout
therefore reaches asyncpg as one ``CancelledError`` inside the coroutine: asyncpg cancels
the query on the server, the transaction (explicit, or the statement's own) rolls back,
:meth:`._postgres_pool.Connections.acquire` gives the connection back, and only then does
the Trio caller resume (DEPS-FINDINGS.md, section 2). Most units are a single statement, so
a single round trip; the pool does not reset connections on release
(:func:`._postgres_pool.keep_session`), which would cost a second round trip and a second
transaction per call.

Every wait is bounded, also when the server goes silent (a network partition: the
connection stays open and nothing comes back). Waiting for a connection is bounded by the
call's timeout, every statement by the store's (asyncpg's ``command_timeout``, which also
bounds asyncpg's cancel request and a connection's close), and giving a connection back
after a cancelled statement by :data:`._postgres_pool.CLEANUP_TIMEOUT`: the connection
returns to the pool only once the server has acknowledged the cancel and rolled back,
otherwise it is terminated (closed at once, without a word to the server, which ends the
session and its transaction). A call therefore gives up within its timeout plus
:data:`._postgres_pool.CLEANUP_TIMEOUT`, and closing the store within ``close_timeout``.

Group commit. ``add_message`` calls are queued and committed in batches
(:class:`~replyhq_trio.backends._batching.GroupCommit`: one batch in flight at a time, at
most ``max_batch`` calls, the next batch taken as soon as the previous one is done): a
batch is one unit of work of ONE statement (``_postgres_queries.ADD_MESSAGES``), hence one
transaction and one commit, whatever its size. Each caller gets its own outcome: a
duplicate ``(conversation_id, local_id)`` in a batch is stored once (the first in queue
order is new, the others replay it), a call into an unknown conversation gets
UnknownConversation alone, and a row that breaks the statement makes the batch retry its
calls one by one so that it fails alone. A caller cancelled or timed out while its batch is
in flight leaves at once and the batch goes on for the others (it is cancelled, and rolled
back, only when none of its callers still waits).

Errors: the server or the network being away (refused, reset, shut down, too many
connections, out of resources, timed out) is :class:`StoreUnavailable`; the pool drops
broken connections and opens new ones on the next acquire, so calls succeed again as soon
as the server is back. Any other database error is a :class:`StoreError`.

Ordering: a message's ``seq`` comes from an identity sequence, drawn by the INSERT while
the transaction holds the conversation's row lock (``FOR NO KEY UPDATE``, the lock an
UPDATE takes, on every conversation of the batch, in id order so that two batches, from two
nodes, cannot deadlock). The lock is taken inside the statement, before any row of that
conversation reaches the INSERT, and held until the statement commits. Sends to one
conversation are thus serialised from the draw to the commit, so a message committed later
always has a larger ``seq`` than any already visible in that conversation, and a client
syncing ``after=`` the last id it saw cannot miss one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar
from urllib.parse import urlsplit

import asyncpg
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
from . import _postgres_pool as pg
from . import _postgres_queries as queries
from ._batching import GroupCommit
from ._bridge import AsyncioBridge, current_bridge
from ._common import (
    NewMessage,
    first_of_each,
    hash_secret,
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

__all__ = ["PostgresStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _describe(dsn: str) -> str:
    """Where a DSN points, without its credentials: ``host:port/database``."""
    try:
        parts = urlsplit(dsn)
        database = parts.path.lstrip("/") or parts.username or "?"
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}/{database}"
    except ValueError:
        return "the configured server"


# --- the store ----------------------------------------------------------------------------


class PostgresStore:
    """A :class:`~replyhq_trio.ports.Store` in PostgreSQL.

    Args:
        dsn: ``postgresql://user:password@host:port/database`` (or ``postgres://``).
        timeout: the longest any call waits (for a pool connection, a new connection,
            the server's answers) before it raises StoreUnavailable, after at most
            :data:`._postgres_pool.CLEANUP_TIMEOUT` more to let go of the connection it held;
            also each statement's limit on the asyncio side (asyncpg's ``command_timeout``).
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
                    pg.unit_create_pool, self._dsn, self._min_size, self._max_size, self._timeout
                )
        except trio.TooSlowError:
            raise StoreUnavailable(
                f"PostgreSQL at {self._where} did not answer within {self._timeout:g} s"
            ) from None
        except ValueError as exc:  # asyncpg's ClientConfigurationError is one too
            raise ValueError(f"invalid PostgreSQL URL ({self._where}): {exc}") from exc
        except (*pg.UNAVAILABLE, asyncpg.PostgresError) as exc:
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
        if not await self._bridge.run_cleanup(self._close_timeout, pg.unit_close_pool, pool):
            await self._bridge.run_cleanup(1.0, pg.unit_terminate_pool, pool)

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
        unit: Callable[Concatenate[pg.Connections, _P], Coroutine[Any, Any, _T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        return await self._call_within(self._timeout, unit, *args, **kwargs)

    async def _call_within(
        self,
        timeout: float,
        unit: Callable[Concatenate[pg.Connections, _P], Coroutine[Any, Any, _T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run one unit of work on the pool, within ``timeout`` (plus the cleanup of a
        unit cut short: at most :data:`._postgres_pool.CLEANUP_TIMEOUT`), translating errors."""
        pool, bridge = self._pool, self._bridge
        if pool is None or bridge is None:
            raise StoreUnavailable(f"the PostgreSQL store ({self._where}) is not open")
        try:
            with trio.fail_after(timeout):
                return await bridge.run(unit, pg.Connections(pool, timeout), *args, **kwargs)
        except (trio.TooSlowError, TimeoutError):
            # TimeoutError: asyncpg's own limits (a statement, a connection, the pool)
            # ran out first, on the asyncio side of the same deadline.
            raise self._timed_out(timeout) from None
        except StoreError:
            raise
        except pg.UNAVAILABLE as exc:
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
        await self._call_within(self._migrate_timeout, pg.unit_migrate)

    async def check(self) -> None:
        await self._call(pg.unit_check)

    # --- apps and credentials -----------------------------------------------------

    async def create_app(self, name: str) -> NewApp:
        require_text("name", name)
        app_id, api_key, admin_token = new_app_id(), new_api_key(), new_admin_token()
        created_at = await self._call(
            queries.unit_create_app, app_id, name, hash_secret(api_key), hash_secret(admin_token)
        )
        return NewApp(
            app=App(id=app_id, name=name, created_at=created_at),
            api_key=api_key,
            admin_token=admin_token,
        )

    async def count_apps(self) -> int:
        return await self._call(queries.unit_count_apps)

    async def verify_api_key(self, app_id: str, api_key: str) -> bool:
        if not storable(app_id):
            return False
        return secret_matches(api_key, await self._call(queries.unit_api_key_hash, app_id))

    async def create_admin_token(self, app_id: str) -> str:
        if not storable(app_id):
            raise UnknownApp(f"no app {app_id!r}")
        token = new_admin_token()
        await self._call(queries.unit_create_admin_token, app_id, hash_secret(token))
        return token

    async def revoke_admin_token(self, token: str) -> bool:
        return await self._call(queries.unit_revoke_admin_token, hash_secret(token))

    async def verify_admin_token(self, app_id: str, token: str) -> bool:
        # Looked up by its hash (the primary key): an index lookup on SHA-256(input)
        # tells a timing attacker nothing about any stored token.
        if not storable(app_id):
            return False
        found = await self._call(queries.unit_live_admin_token, app_id, hash_secret(token))
        return secret_matches(token, found)

    # --- conversations ------------------------------------------------------------

    async def create_conversation(self, app_id: str, device_id: str) -> Conversation:
        if not storable(app_id):
            raise UnknownApp(f"no app {app_id!r}")
        require_text("device_id", device_id)
        return await self._call(
            queries.unit_create_conversation, new_conversation_id(), app_id, device_id
        )

    async def get_conversation(self, app_id: str, conversation_id: str) -> Conversation | None:
        if not storable(app_id, conversation_id):
            return None
        return await self._call(queries.unit_get_conversation, app_id, conversation_id)

    async def list_conversations(
        self, app_id: str, device_id: str | None = None, *, limit: int = 200
    ) -> list[Conversation]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit!r}")
        if not storable(app_id, device_id or ""):
            return []
        return await self._call(queries.unit_list_conversations, app_id, device_id, limit)

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
        outcomes = await self._call(queries.unit_add_messages, unique)
        results: list[tuple[Message, bool] | Exception] = []
        replayed: set[int] = set()
        for slot in slots:
            outcome = outcomes[slot]
            if isinstance(outcome, StoreError):
                # each caller its own instance
                results.append(outcome if slot not in replayed else type(outcome)(*outcome.args))
            else:
                row, created = outcome
                results.append((queries.message(row), created and slot not in replayed))
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
        return await self._call(
            queries.unit_list_messages, conversation_id, after, after_seq, limit
        )

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
            queries.unit_set_status,
            conversation_id,
            seq,
            status,
            by and by.value,
        )
