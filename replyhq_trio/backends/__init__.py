"""The stores behind :class:`replyhq_trio.ports.Store`, the presence behind
:class:`replyhq_trio.ports.Presence`, and the asyncio bridge.

``open_store(url)`` picks the implementation from the URL: ``sqlite:`` (the embedded
default, :class:`SqliteStore`) or ``postgresql:`` / ``postgres:``
(:class:`~replyhq_trio.backends.postgres.PostgresStore`, asyncpg on the trio-asyncio
loop). ``open_presence(redis_url)`` gives :class:`MemoryPresence` (one node) without a
URL, :class:`~replyhq_trio.backends.redis_presence.RedisPresence` with one; and
``rate_limiter_for(presence)`` the rate limiter that goes with it. This package
is the only code that imports asyncio, trio-asyncio, asyncpg or redis; the asyncio side
is imported lazily, so a SQLite-only process never loads it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..ports import Presence, RateLimiter, Store
from .memory import MemoryPresence, MemoryRateLimiter
from .sqlite import SqliteStore, sqlite_path_from_url

if TYPE_CHECKING:
    from ._bridge import AsyncioBridge, current_bridge, open_asyncio_bridge
    from .postgres import PostgresStore
    from .redis_limiter import RedisRateLimiter
    from .redis_presence import RedisPresence, RedisPresenceConfig

__all__ = [
    "AsyncioBridge",
    "MemoryPresence",
    "MemoryRateLimiter",
    "PostgresStore",
    "RedisPresence",
    "RedisPresenceConfig",
    "RedisRateLimiter",
    "SqliteStore",
    "current_bridge",
    "open_asyncio_bridge",
    "open_presence",
    "open_store",
    "rate_limiter_for",
    "sqlite_path_from_url",
]

_LAZY = {
    "AsyncioBridge": "._bridge",
    "current_bridge": "._bridge",
    "open_asyncio_bridge": "._bridge",
    "PostgresStore": ".postgres",
    "RedisPresence": ".redis_presence",
    "RedisPresenceConfig": ".redis_presence",
    "RedisRateLimiter": ".redis_limiter",
}

_URL_HELP = "use sqlite:///PATH (relative), sqlite:////PATH (absolute) or postgresql://USER@HOST/DB"


def __getattr__(name: str) -> Any:
    """Import the asyncio side (trio-asyncio patches asyncio's loop policy when it is
    imported) only when something asks for it."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)


def _redacted(url: str) -> str:
    """``url`` without a password (in the userinfo or a ``password=`` query
    parameter), for error messages. Also for malformed URLs: those are the ones that
    end up in a message."""
    url = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", url)
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, sep, credentials = head.partition("://")
    if not sep:  # e.g. postgresql:user:secret@host/db
        scheme, sep, credentials = head.partition(":")
    if ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


@asynccontextmanager
async def open_store(
    url: str,
    *,
    migrate: bool = False,
    timeout: float = 5.0,
    pool_min_size: int = 1,
    pool_max_size: int = 10,
) -> AsyncIterator[Store]:
    """Open the store that ``url`` names, for the duration of the block.

    Args:
        url: ``sqlite:///relative/path``, ``sqlite:////absolute/path``,
            ``sqlite:///:memory:``, or ``postgresql://user[:password]@host[:port]/db``
            (``postgres://`` too).
        migrate: bring the schema up to date after opening (otherwise the schema is
            assumed to be current).
        timeout: the store's timeout: no call waits longer before StoreUnavailable.
        pool_min_size, pool_max_size: the PostgreSQL pool's bounds.

    For PostgreSQL this runs on the asyncio bridge open in the caller's context, or
    opens one for the block when none is (the composition root should open one
    around everything that uses asyncio, so that the process has a single loop).
    Closing is shielded and bounded by the store's close timeout.

    Raises:
        ValueError: the URL is not one of the forms above (a clear message).
        StoreUnavailable: the database cannot be reached or opened (one line).
    """
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        async with SqliteStore(sqlite_path_from_url(url), timeout=timeout) as sqlite_store:
            if migrate:
                await sqlite_store.migrate()
            yield sqlite_store
    elif scheme in ("postgresql", "postgres"):
        if not url.partition(":")[2].startswith("//"):
            raise ValueError(f"invalid PostgreSQL URL {_redacted(url)!r}: {_URL_HELP}")
        from ._bridge import open_asyncio_bridge
        from .postgres import PostgresStore

        async with (
            open_asyncio_bridge() as bridge,
            PostgresStore(
                url,
                timeout=timeout,
                min_size=pool_min_size,
                max_size=pool_max_size,
                bridge=bridge,
            ) as pg_store,
        ):
            if migrate:
                await pg_store.migrate()
            yield pg_store
    else:
        raise ValueError(f"unsupported database URL {_redacted(url)!r}: {_URL_HELP}")


@asynccontextmanager
async def open_presence(
    redis_url: str | None,
    *,
    node_id: str | None = None,
    required: bool = True,
    key_prefix: str = "",
    config: RedisPresenceConfig | None = None,
) -> AsyncIterator[Presence]:
    """Presence and sessions for the duration of the block: this node's own
    (:class:`MemoryPresence`) without ``redis_url``, shared by every node
    (:class:`~replyhq_trio.backends.redis_presence.RedisPresence`) with one. Start its
    ``run`` in a nursery inside the block.

    Args:
        redis_url: ``redis://[user:password@]host[:port][/db]``, or None.
        node_id: this node's id (a fresh one by default).
        required: Redis must answer at start (else PresenceUnavailable); when False an
            unreachable Redis is logged and joined in the background once it answers.
        key_prefix: put before every Redis key.
        config: the Redis presence's timings and sizes.

    Like :func:`open_store`, this runs on the asyncio bridge open in the caller's
    context, or opens one for the block. Closing is shielded and bounded.

    Raises:
        PresenceUnavailable: Redis cannot be reached and ``required`` (one line).
        ValueError: the URL is malformed.
    """
    if redis_url is None:
        yield MemoryPresence(node_id)
        return
    from ._bridge import open_asyncio_bridge
    from .redis_presence import RedisPresence

    async with (
        open_asyncio_bridge() as bridge,
        RedisPresence(
            redis_url,
            node_id=node_id,
            key_prefix=key_prefix,
            config=config,
            required=required,
            bridge=bridge,
        ) as presence,
    ):
        yield presence


def rate_limiter_for(presence: Presence) -> RateLimiter:
    """The rate limiter that goes with ``presence``: shared through the same Redis, or
    this node's own in memory."""
    if type(presence).__name__ == "RedisPresence":  # without importing the asyncio side
        from .redis_limiter import RedisRateLimiter
        from .redis_presence import RedisPresence

        assert isinstance(presence, RedisPresence)
        return RedisRateLimiter(presence)
    return MemoryRateLimiter()
