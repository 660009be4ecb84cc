"""The PostgreSQL store's connections: the pool, handing connections back after a cut-short
statement (or terminating them), and the schema's migrations; each is an asyncio
coroutine run once through the bridge (see :mod:`.postgres`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import asyncpg
import asyncpg.exceptions as pg_errors

from ._schema import (
    POSTGRES_CREATE_MIGRATIONS_TABLE,
    POSTGRES_MIGRATION_LOCK,
    POSTGRES_MIGRATIONS,
)

# Errors that mean "the database is not there right now", not "this request is wrong".
UNAVAILABLE: tuple[type[BaseException], ...] = (
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
CLEANUP_TIMEOUT = 0.5


# --- units of work: each is one asyncio coroutine, run once per call ---------------------


def terminate(con: asyncpg.Connection) -> None:
    # A proxy already back in the pool (or closed) refuses with InterfaceError: then it
    # is no longer this unit's to end.
    with suppress(asyncpg.InterfaceError):
        con.terminate()


class Connections:
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
        in at most :data:`CLEANUP_TIMEOUT`; when that runs out it terminates the
        connection. If this task is cancelled again meanwhile (asyncpg's release is
        shielded and would go on alone), the connection is terminated at once.
        """
        con = await self.pool.acquire(timeout=self.timeout)
        try:
            yield con
        finally:
            try:
                await self.pool.release(con, timeout=CLEANUP_TIMEOUT)
            except Exception:
                # Released or not, the block's own outcome is what the caller needs; a
                # release that failed has terminated the connection (or will, at its
                # deadline), and this makes it now.
                terminate(con)
            except BaseException:
                terminate(con)
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


async def keep_session(con: asyncpg.Connection) -> None:
    """The pool's reset of a connection that comes back: nothing more than asyncpg's
    own part, which always runs first (it rolls back a transaction left open and drops
    listeners, without a round trip when there is none).

    The default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` on every release: a round trip and a transaction (a commit in
    ``pg_stat_database``) per call. No unit of work here leaves any of that behind:
    none uses SET, LISTEN or cursors, and :func:`unit_migrate`, the only one that takes
    a session-level advisory lock, releases it or terminates the connection."""


async def unit_create_pool(dsn: str, min_size: int, max_size: int, timeout: float) -> asyncpg.Pool:
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
        reset=keep_session,
        server_settings={"application_name": "replyhq-trio"},
    )


async def unit_close_pool(pool: asyncpg.Pool) -> None:
    # A connection's close that timed out (TimeoutError is an OSError) or failed is no
    # error here: pool.close() has terminated every connection on its way out.
    with suppress(OSError, asyncpg.InterfaceError, asyncpg.PostgresError):
        await pool.close()


async def unit_terminate_pool(pool: asyncpg.Pool) -> None:
    pool.terminate()


async def unit_check(pool: Connections) -> None:
    await pool.fetchval("SELECT 1")


async def unit_migrate(pool: Connections) -> None:
    # The whole migration may take the migration timeout, a statement too (DDL, or the
    # wait for another process's lock), rather than the store's command_timeout.
    limit = pool.timeout
    async with pool.acquire() as con:
        # Serialise migrate() across processes. The lock belongs to the session, and the
        # pool does not reset sessions (keep_session): it is released below, or the
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
            await unlock_or_terminate(con)
            raise
        except BaseException:
            # Cancelled, timed out or cut off: the session is in an unknown state.
            con.terminate()
            raise
        await unlock_or_terminate(con)


async def unlock_or_terminate(con: asyncpg.Connection) -> None:
    """Release the migration lock, or end the session that holds it (which releases it
    too) when that does not work: the migration's own outcome is what counts."""
    try:
        await con.execute("SELECT pg_advisory_unlock($1)", POSTGRES_MIGRATION_LOCK)
    except Exception:
        con.terminate()
    except BaseException:
        con.terminate()
        raise
