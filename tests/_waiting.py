"""Waiting for something a test cannot be told about by an event: bounded polling."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail the test after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but the condition
            await trio.sleep(0.005)
