"""Rate limits shared by every node through Redis: one script per check
(:data:`~replyhq_trio.backends._redis_scripts.RATE_LIMIT`), on the presence's connections."""

from __future__ import annotations

import itertools
import logging

from ..ports import Limit, PresenceUnavailable
from . import _redis_scripts as lua
from .redis_presence import RedisPresence

__all__ = ["RedisRateLimiter"]

log = logging.getLogger("replyhq_trio.limits")


class RedisRateLimiter:
    """:class:`~replyhq_trio.ports.RateLimiter` in Redis: every node counts in the same
    sliding windows (sorted sets under ``ratelimit:``), atomically, on Redis's clock.

    While Redis is away every event is admitted, and the first miss and the recovery
    are logged once each: limits protect the service, they must not take it down.
    """

    def __init__(self, presence: RedisPresence) -> None:
        self._presence = presence
        self._prefix = f"{presence.key_prefix}ratelimit:"
        self._ids = itertools.count()
        self._node = presence.node_id
        self._failing = False

    async def hit(self, limit: Limit, key: str) -> float:
        return await self._check(limit, key, count=True)

    async def wait_time(self, limit: Limit, key: str) -> float:
        return await self._check(limit, key, count=False)

    async def _check(self, limit: Limit, key: str, *, count: bool) -> float:
        args = (
            limit.count,
            max(1, round(limit.window * 1000)),
            f"{self._node}:{next(self._ids)}",
            1 if count else 0,
        )
        try:
            reply = await self._presence.run_script(
                lua.RATE_LIMIT, [f"{self._prefix}{limit.name}:{key}"], args
            )
        except PresenceUnavailable as exc:
            if not self._failing:
                self._failing = True
                log.warning("rate limits are not enforced while Redis is away: %s", exc)
            return 0.0
        if self._failing:
            self._failing = False
            log.info("rate limits are enforced again: Redis answers")
        return int(reply) / 1000
