"""The process's asyncio loop, and the one way Trio code calls into it.

asyncpg and redis-py are asyncio libraries; they run on a trio-asyncio loop that the
composition root opens once, around everything that uses them
(``async with open_asyncio_bridge():``). Inside it, :meth:`AsyncioBridge.run` calls ONE
asyncio coroutine function and waits for it. Every unit of work is one such coroutine:
acquire, transaction, queries and release all happen inside it, under asyncio's own
cancellation rules. Trio code never holds an asyncio async context manager
(``async with aio_as_trio(pool.acquire())``): when a cancellation reaches its
``__aexit__``, trio-asyncio cancels the exit coroutine before it runs, and the pool
connection leaks or the transaction stays aborted (DEPS-FINDINGS.md, section 2).

Only ``replyhq_trio/backends`` imports asyncio or its libraries (tests/test_layers.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import trio
import trio_asyncio

__all__ = ["AsyncioBridge", "current_bridge", "open_asyncio_bridge"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class AsyncioBridge:
    """A handle on the trio-asyncio loop; hand it to whatever needs asyncio.

    The loop is held explicitly (not looked up in a context variable at each call), so
    a task started outside the ``open_asyncio_bridge`` block can still use it while
    the block is open.
    """

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    async def run(
        self,
        fn: Callable[_P, Coroutine[Any, Any, _T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run ``fn(*args, **kwargs)`` as one asyncio task on the loop and return its result.

        Cancellation: cancelling the calling Trio scope throws one
        ``asyncio.CancelledError`` into the task, and this waits until the task has
        finished (its ``finally`` and ``async with`` exits have run: connections
        released, transactions rolled back) before raising ``trio.Cancelled``. If the
        task finishes anyway (it was past its last await), its result is returned and
        the cancellation is delivered at the caller's next checkpoint.
        """
        result: _T = await trio_asyncio.aio_as_trio(fn, loop=self._loop)(*args, **kwargs)
        return result

    async def run_cleanup(
        self,
        timeout: float,
        fn: Callable[_P, Coroutine[Any, Any, object]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> bool:
        """Run an asyncio cleanup (``pool.close()``, ``client.aclose()``) shielded from
        cancellation, for at most ``timeout`` seconds; return whether it finished.

        A cleanup started in an already-cancelled scope would be cancelled before it
        ran, which is how connections leak (DEPS-FINDINGS.md, section 1): the shield
        prevents that, and the deadline inside the shield keeps it bounded. When it
        returns False the caller falls back to something that cannot block
        (``pool.terminate()``).
        """
        with trio.CancelScope(shield=True), trio.move_on_after(timeout) as deadline:
            await self.run(fn, *args, **kwargs)
        return not deadline.cancelled_caught


def current_bridge() -> AsyncioBridge:
    """The bridge of the loop running in this Trio context.

    Raises:
        RuntimeError: no ``open_asyncio_bridge()`` block is open here.
    """
    loop = trio_asyncio.current_loop.get()
    if loop is None:
        raise RuntimeError(
            "no asyncio bridge is open here: wrap the caller in "
            "`async with replyhq_trio.backends.open_asyncio_bridge():`"
        )
    return AsyncioBridge(loop)


@asynccontextmanager
async def open_asyncio_bridge() -> AsyncIterator[AsyncioBridge]:
    """Open the process's asyncio loop on top of Trio for the duration of the block.

    Nested use (a loop is already running in this context) reuses that loop and leaves
    its lifetime to whoever opened it. On exit, asyncio tasks still running on a loop
    opened here are cancelled and waited for (trio-asyncio's ``open_loop`` does it);
    close pools and clients before that, with :meth:`AsyncioBridge.run_cleanup`. An
    exception raised in the block comes out as itself, not wrapped in the exception
    groups of trio-asyncio's internal nurseries.
    """
    running = trio_asyncio.current_loop.get()
    if running is not None:
        yield AsyncioBridge(running)
        return
    sole: BaseException | None = None
    try:
        async with trio_asyncio.open_loop() as loop:
            yield AsyncioBridge(loop)
    except BaseExceptionGroup as group:
        # open_loop runs the block inside two nurseries, which wrap whatever the block
        # raises in nested one-member groups. Give the caller its own exception back
        # (raised outside the handler, so it does not carry the group as context).
        sole = _sole_exception(group)
        if sole is None:
            raise
    if sole is not None:
        raise sole


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested one-member groups, or None if there are more."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        if len(found.exceptions) != 1:
            return None
        found = found.exceptions[0]
    return found
