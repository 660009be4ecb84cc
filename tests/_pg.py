"""PostgreSQL administration for the backend tests: find the server, make and drop a
database per test, look at ``pg_stat_activity``, hold a row lock.

Each helper is one asyncio coroutine run through the bridge, like the store's own units.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import trio

from replyhq_trio.backends import AsyncioBridge, open_asyncio_bridge

#: Where the administration connection goes (trust auth on loopback); override with
#: REPLYHQ_TEST_PG_ADMIN_URL.
ADMIN_URLS = (
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://root@127.0.0.1:5432/test",
)


def admin_url_candidates() -> tuple[str, ...]:
    configured = os.environ.get("REPLYHQ_TEST_PG_ADMIN_URL")
    return (configured,) if configured else ADMIN_URLS


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def _aio_fetch(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    con = await asyncpg.connect(url, timeout=5)
    try:
        return [tuple(row) for row in await con.fetch(sql, *args)]
    finally:
        await con.close()


async def fetch(bridge: AsyncioBridge, url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on a fresh connection to ``url``; its rows as tuples."""
    with trio.fail_after(15):
        return await bridge.run(_aio_fetch, url, sql, *args)


async def probe() -> tuple[str | None, list[str]]:
    """The first administration URL that connects and may create databases, and the
    errors of those that did not."""
    errors: list[str] = []
    async with open_asyncio_bridge() as bridge:
        for url in admin_url_candidates():
            try:
                rows = await fetch(
                    bridge,
                    url,
                    "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user",
                )
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                trio.TooSlowError,
            ) as exc:
                errors.append(f"{url}: {type(exc).__name__}: {exc}")
                continue
            if rows and rows[0][0]:
                return url, errors
            errors.append(f"{url}: this role may not create databases")
    return None, errors


@asynccontextmanager
async def fresh_database(bridge: AsyncioBridge, admin_url: str) -> AsyncIterator[str]:
    """A new, empty database for one test (its URL); dropped afterwards, whatever
    is still connected to it."""
    name = "replyhq_t_" + secrets.token_hex(6)
    await fetch(bridge, admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_url, name)
    finally:
        with trio.CancelScope(shield=True):
            await fetch(bridge, admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def activity(bridge: AsyncioBridge, url: str) -> dict[str, int]:
    """How many of the store's connections (application_name ``replyhq-trio``) to the
    database of ``url`` are in each state (``idle``, ``active``, ``idle in transaction``)."""
    database = urlsplit(url).path.lstrip("/")
    rows = await fetch(
        bridge,
        url,
        "SELECT state, count(*) FROM pg_stat_activity "
        "WHERE datname = $1 AND application_name = 'replyhq-trio' GROUP BY state",
        database,
    )
    return {str(state): int(count) for state, count in rows}


async def _aio_hold(url: str, sql: str, args: tuple[Any, ...], held: Callable[[], None]) -> None:
    con = await asyncpg.connect(url, timeout=5)
    try:
        async with con.transaction():
            await con.execute(sql, *args)
            held()
            await asyncio.sleep(3600)  # until cancelled: then the transaction rolls back
    finally:
        await con.close()


@asynccontextmanager
async def holding(bridge: AsyncioBridge, url: str, sql: str, *args: Any) -> AsyncIterator[None]:
    """Run ``sql`` (e.g. ``SELECT ... FOR UPDATE``) in a transaction on another
    connection and keep that transaction open for the block."""
    held = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.run, _aio_hold, url, sql, args, held.set)
        with trio.fail_after(10):
            await held.wait()
        yield
        nursery.cancel_scope.cancel()
