"""A nursery whose body's exception comes out as itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import trio

__all__ = ["open_unwrapping_nursery"]


@asynccontextmanager
async def open_unwrapping_nursery() -> AsyncIterator[trio.Nursery]:
    """``trio.open_nursery()``, but a lone exception leaves unwrapped.

    For the client's context managers: their background tasks never raise for
    anything the server or the network does (they record it instead), so a lone
    exception is the caller's own, and ``pytest.raises(KeyError)`` around an
    ``async with open_client(...)`` should see the ``KeyError``, not a group of one.
    Several exceptions stay an ``ExceptionGroup``.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        _reraise(group.exceptions[0])


def _reraise(exc: BaseException) -> NoReturn:
    # The finally restores __context__: raising inside the except block would set it
    # to the group, which contains exc (a cycle that hides the real context). As
    # trio-websocket's open_websocket does.
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context
