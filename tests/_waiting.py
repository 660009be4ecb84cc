"""Waiting for something a test cannot be told about by an event: bounded polling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail the test after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but the condition
            await trio.sleep(0.005)


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0) -> None:
    """:func:`wait_until` for a condition that takes a round trip to ask (a request to
    the server, a connection attempt)."""
    with trio.fail_after(timeout):
        while not await check():  # noqa: ASYNC110 - nothing to wait on but the answer
            await trio.sleep(0.02)
