"""The Redis presence's units of work on redis-py: each one asyncio coroutine, run once
per call through the bridge (:mod:`._bridge`). The only code of the presence that touches
redis-py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from . import _redis_scripts as lua

__all__ = [
    "Call",
    "describe",
    "pipelined",
    "unit_close",
    "unit_drop_idle_connections",
    "unit_eval",
    "unit_eval_many",
    "unit_hkeys",
    "unit_open",
    "unit_scard",
]

#: One script call: the script, its KEYS, its ARGV.
Call = tuple[lua.Script, Sequence[str], Sequence[str | int]]


async def unit_open(url: str, max_connections: int, timeout: float) -> Redis:
    # One retry inside redis-py, on a fresh connection: a pooled connection may be to a
    # Redis that restarted since it was last used (redis-py notices a closed one only
    # when the loop has read its FIN), and that must not count as an outage. A second
    # failure makes the node go "away" at once and ``run`` reconnects with its own
    # backoff (every scripted call is safe to repeat: the connect and disconnect
    # scripts are idempotent, and a rate limit counted twice only errs toward
    # refusing). No socket timeout either: every call is
    # already bounded on the Trio side (fail_after), and an asyncio timer per read
    # costs about a fifth of a call's CPU through the bridge. The pool is not the
    # bound on concurrency (RedisPresence's slots are): it only must not refuse.
    pool = ConnectionPool.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        decode_responses=True,
    )
    return Redis(connection_pool=pool)


async def unit_close(client: Redis) -> None:
    await client.aclose(close_connection_pool=True)


async def unit_eval(
    client: Redis, script: lua.Script, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:  # Redis restarted since the script was loaded
        await client.script_load(script.source)
        return await client.evalsha(script.sha, len(keys), *keys, *args)


async def pipelined(client: Redis, calls: Sequence[Call]) -> list[Any]:
    # Plain EVALSHA in a pipeline without MULTI: redis-py's own script objects would add
    # a SCRIPT EXISTS round trip to every pipeline.
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    return list(await pipe.execute(raise_on_error=False))


async def unit_eval_many(client: Redis, calls: Sequence[Call]) -> list[Any]:
    """Every call in one round trip; each reply (errors raised, after NOSCRIPT retries)."""
    replies = await pipelined(client, calls)
    unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if unknown:  # those did not run: load their scripts and run them again
        for script in {calls[i][0] for i in unknown}:
            await client.script_load(script.source)
        for i, reply in zip(
            unknown, await pipelined(client, [calls[i] for i in unknown]), strict=True
        ):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def unit_drop_idle_connections(client: Redis) -> None:
    # After an outage the pool's idle connections may be to the server that went away:
    # redis-py notices a closed one only if the loop has already read its FIN.
    await client.connection_pool.disconnect(inuse_connections=False)


async def unit_hkeys(client: Redis, key: str) -> list[str]:
    return [str(field) for field in await client.hkeys(key)]


async def unit_scard(client: Redis, key: str) -> int:
    return int(await client.scard(key))


def describe(url: str) -> str:
    """Where a Redis URL points, without credentials: ``host:port/db`` or the socket."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path or "?"
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"
    except ValueError:
        return "the configured server"
