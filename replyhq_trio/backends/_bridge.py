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

A cancelled call waits for its task's cleanup, but not without end: the task gets
:data:`CANCEL_TIMEOUT` seconds to finish, then it is cancelled once more and left to the
loop. The units of work make their cleanup shorter than that (they terminate a
connection rather than wait for a silent server); the deadline is what keeps a Trio
caller, and a shutdown, from hanging on one that does not.

Only ``replyhq_trio/backends`` imports asyncio or its libraries (tests/test_layers.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import trio
import trio_asyncio

__all__ = ["CANCEL_TIMEOUT", "AsyncioBridge", "current_bridge", "open_asyncio_bridge"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

log = logging.getLogger("replyhq_trio.backends")

#: The longest a cancelled :meth:`AsyncioBridge.run` waits for its task to finish.
CANCEL_TIMEOUT = 1.0


async def _call(
    fn: Callable[_P, Coroutine[Any, Any, _T]], *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    # fn is called inside the task, so that whatever it does before its first await
    # runs in asyncio's context, as it would under aio_as_trio.
    return await fn(*args, **kwargs)


class AsyncioBridge:
    """A handle on the trio-asyncio loop; hand it to whatever needs asyncio.

    The loop is held explicitly (not looked up in a context variable at each call), so
    a task started outside the ``open_asyncio_bridge`` block can still use it while
    the block is open.

    Args:
        loop: the trio-asyncio loop.
        cancel_timeout: how long a cancelled :meth:`run` waits for its task to finish.
    """

    __slots__ = ("_abandoned", "_cancel_timeout", "_loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, cancel_timeout: float = CANCEL_TIMEOUT
    ) -> None:
        self._loop = loop
        self._cancel_timeout = cancel_timeout
        # Tasks a cancelled run() stopped waiting for: the loop holds tasks only weakly.
        self._abandoned: set[asyncio.Task[Any]] = set()

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
        released, transactions rolled back) before raising ``trio.Cancelled``, but for
        at most ``cancel_timeout`` seconds: then the task is cancelled a second time
        (which ends waits in cleanup code) and left to finish on the loop, logged, while
        this raises ``trio.Cancelled``. If the task finishes anyway (it was past its
        last await), its result is returned and the cancellation is delivered at the
        caller's next checkpoint.
        """
        coro = _call(fn, *args, **kwargs)
        try:
            task = self._loop.create_task(coro)
        except BaseException:  # the loop is closed
            coro.close()
            raise
        finished = trio.Event()
        task.add_done_callback(lambda _: finished.set())
        try:
            await finished.wait()
        except trio.Cancelled:
            task.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(self._cancel_timeout):
                await finished.wait()
            if not task.done():
                self._abandon(task, fn)
                raise
            if task.cancelled():
                raise
        return task.result()

    def _abandon(self, task: asyncio.Task[Any], fn: Callable[..., object]) -> None:
        log.warning(
            "%s did not finish within %g s of its cancellation; no longer waiting for it",
            getattr(fn, "__qualname__", fn),
            self._cancel_timeout,
        )
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        # Retrieved, so that it does not reach the loop's exception handler as "never
        # retrieved"; nobody waits for it any more, so it is only logged.
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("an abandoned asyncio task failed", exc_info=error)

    async def run_cleanup(
        self,
        timeout: float,
        fn: Callable[_P, Coroutine[Any, Any, object]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> bool:
        """Run an asyncio cleanup (``pool.close()``, ``client.aclose()``) shielded from
        cancellation, for at most ``timeout`` seconds (and then, cancelled, at most the
        bridge's ``cancel_timeout`` more); return whether it finished in time.

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
    groups of trio-asyncio's internal nurseries. What reaches the loop's exception
    handler is logged (:func:`_log_loop_error`).
    """
    running = trio_asyncio.current_loop.get()
    if running is not None:
        yield AsyncioBridge(running)
        return
    sole: BaseException | None = None
    try:
        async with trio_asyncio.open_loop() as loop:
            loop.set_exception_handler(_log_loop_error)
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


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: log, as plain asyncio does.

    trio-asyncio's own raises the error in the loop's nursery, which ends the loop and
    every call on it: the whole server. What reaches the handler belongs to no caller (a
    call's errors come back through :meth:`AsyncioBridge.run`): a library's future that
    nobody awaits any more, such as the one asyncpg leaves when a connection attempt is
    cancelled between the TCP connect and the TLS negotiation and the socket then
    closes, which a pool reconnecting to a silent server does now and then."""
    error = context.get("exception")
    log.error(
        "asyncio: %s",
        context.get("message") or "unhandled error in the asyncio loop",
        exc_info=error if isinstance(error, BaseException) else None,
    )


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested one-member groups, or None if there are more."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        if len(found.exceptions) != 1:
            return None
        found = found.exceptions[0]
    return found
