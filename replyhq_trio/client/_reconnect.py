"""Reconnecting with exponential backoff, full jitter, and the server's shutdown delay."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, NoReturn

import trio

from ._connection import Client
from ._errors import ClientError, Disconnected

__all__ = ["Backoff", "run_with_reconnect"]


class Backoff:
    """Exponential backoff with full jitter.

    The n-th delay since the last :meth:`reset` (n from 0) is drawn uniformly from
    ``[0, min(max_delay, initial_delay * 2**n)]``: "full jitter" spreads a crowd of
    clients over the whole window, so they do not come back in step.
    """

    def __init__(
        self,
        *,
        initial_delay: float = 0.5,
        max_delay: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial_delay <= max_delay:
            raise ValueError("need 0 < initial_delay <= max_delay")
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        """The next delay, in seconds; each call doubles the window, up to ``max_delay``."""
        # The exponent is capped so that 2.0**n cannot overflow a float.
        cap = min(self.max_delay, self.initial_delay * 2.0 ** min(self._attempt, 64))
        self._attempt += 1
        return self._rng.uniform(0.0, cap)

    def reset(self) -> None:
        """Start again from ``initial_delay`` (after a successful connection)."""
        self._attempt = 0


async def run_with_reconnect(
    connect: Callable[[], AbstractAsyncContextManager[Client]],
    namespaces: Mapping[str, Any],
    on_connected: Callable[[Client], Awaitable[object]],
    *,
    initial_delay: float = 0.5,
    max_delay: float = 30.0,
    max_attempts: int | None = None,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Stay connected: connect, join ``namespaces``, run ``on_connected``, repeat.

    An attempt succeeds when every namespace is joined; the backoff then starts
    again. When the session ends, because ``on_connected`` returned or raised
    :class:`Disconnected` (which includes :class:`ConnectionClosed`, also inside an
    ``ExceptionGroup``), the next attempt waits exactly the ``reconnect_delay_ms`` of
    the session's last ``server:shutdown`` event if there was one (PROTOCOL.md
    section 12: the server spreads those delays itself, so no jitter is added), and
    a :class:`Backoff` delay otherwise. A failed attempt also waits a
    :class:`Backoff` delay. So that a session leaves at once on ``server:shutdown``,
    return from ``on_connected`` when that event arrives.

    Args:
        connect: Opens one connection, e.g. ``functools.partial(open_client, url)``.
        namespaces: Each namespace to join, with its CONNECT auth (or ``None``).
        on_connected: Runs the session; ``client.sockets`` holds the joined namespaces.
        initial_delay: The first backoff window, in seconds.
        max_delay: The largest backoff window.
        max_attempts: Consecutive failed attempts after which the last error is
            raised; ``None`` retries forever.
        rng: The source of jitter (a seeded one in tests).
        task_status: Started after the first successful attempt, for ``nursery.start``.

    Raises:
        ClientError: the last failure, after ``max_attempts`` failed attempts.
        Exception: whatever ``on_connected`` raises other than :class:`Disconnected`.

    Runs until cancelled; cancelling it closes the current connection.
    """
    backoff = Backoff(initial_delay=initial_delay, max_delay=max_delay, rng=rng)
    failures = 0
    started = False
    while True:
        joined = False
        requested: float | None = None
        try:
            async with connect() as client:
                for namespace, auth in namespaces.items():
                    await client.connect(namespace, auth)
                joined = True
                backoff.reset()
                failures = 0
                if not started:
                    started = True
                    task_status.started()
                try:
                    await on_connected(client)
                except* Disconnected:
                    pass  # the session is over; reconnect below
                requested = client.shutdown_delay
        except ClientError:
            if joined:
                raise  # not an attempt that failed: the session's own error
            failures += 1
            if max_attempts is not None and failures >= max_attempts:
                raise
        await trio.sleep(requested if requested is not None else backoff.next_delay())
