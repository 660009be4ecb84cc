"""Group commit, shared by both stores: concurrent writes are queued and committed
together, one batch (one transaction) at a time.

A caller of :meth:`GroupCommit.submit` queues its *job* and waits for its own outcome.
Whenever jobs are queued and no batch is in flight, a committer task takes up to
``max_batch`` of them, in queue order, and hands them to the store's batch
function as one list; that function returns one outcome per job (a value, or the
exception that job's caller gets) or raises a :class:`StoreError` that fails the whole
batch. Jobs queued while a batch is in flight form the next batch, which starts as soon
as the previous one is done: under load a transaction carries as many writes as arrived
during the previous one, while a lone write is not delayed at all.

The committer runs in the nursery of :meth:`GroupCommit.running` (the store holds it
open for its lifetime), not in a caller's task, so that no caller's cancellation can
interrupt a batch that others wait for. When that block ends, the batch in flight and
those queued get up to the timeout to finish; whatever is left then fails with
:class:`StoreUnavailable`, and later calls fail at once.

Cancellation and time limits, for each caller (none waits longer than the store's
timeout, counted from its call, plus the bounded cleanup below):

- cancelled or timed out while its job is still queued: the job is withdrawn, nothing
  is written;
- cancelled or timed out while its batch is in flight: the caller leaves at once
  (``trio.Cancelled``, or :class:`StoreUnavailable`) and the batch goes on for the
  others; the job commits or not with its batch (a retry with the same key finds what
  was). If it was the last caller still waiting for that batch, the batch is cancelled
  (rolled back, or withdrawn if it had not started; SQLite's worker thread, once
  started, runs to its end) and the caller waits, shielded and for at most the
  store's timeout, until the batch has finished cleaning up, as a single un-batched
  call would: connections are back in the pool when it resumes. A timed-out caller
  whose batch ended during that wait gets the batch's own outcome (e.g. SQLite's
  "database is locked") rather than a bare "did not answer";
- a batch that fails as a whole (the store's own time limit on it included) gives
  every one of its callers its own copy of the error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar, cast

import trio

from ..ports import StoreError, StoreUnavailable

__all__ = ["GroupCommit"]

_J = TypeVar("_J")
_R = TypeVar("_R")


class _Batch:
    __slots__ = ("finished", "scope", "waiting")

    def __init__(self, size: int) -> None:
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        self.waiting = size  # callers still waiting for this batch's outcome


class _Entry(Generic[_J, _R]):
    __slots__ = ("batch", "done", "error", "job", "value")

    def __init__(self, job: _J) -> None:
        self.job = job
        self.done = trio.Event()
        self.batch: _Batch | None = None  # set when a committer takes the job
        self.value: _R | None = None
        self.error: BaseException | None = None

    def result(self) -> _R:
        if self.error is not None:
            raise self.error
        return cast("_R", self.value)  # done without an error: the value is set


class _Interrupted(StoreUnavailable):
    """What the callers of a batch cancelled before it finished get (if any waits)."""


def _copy(error: StoreError) -> StoreError:
    """A fresh instance for one caller (tracebacks do not pile up on a shared one)."""
    try:
        copy = type(error)(*error.args)
    except Exception:  # an exception class with an unusual constructor
        return error
    copy.__cause__ = error.__cause__
    copy.__suppress_context__ = True
    return copy


class GroupCommit(Generic[_J, _R]):
    """Jobs of type ``_J`` committed in batches by ``run_batch``; see the module docstring.

    Args:
        run_batch: runs a batch as one transaction; returns one outcome per job, in
            order (a value, or an :class:`Exception` to raise in that job's caller), or
            raises a :class:`StoreError` that fails every job of the batch.
        max_batch: the most jobs in one batch.
        timeout: the longest a caller waits, from the call to its outcome.
        timed_out: the error for a caller past ``timeout``.
        name: the committer task's name (seen in debuggers and profiles).
    """

    def __init__(
        self,
        run_batch: Callable[[list[_J]], Awaitable[list[_R | Exception]]],
        *,
        max_batch: int,
        timeout: float,
        timed_out: Callable[[], StoreUnavailable],
        name: str,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch!r}")
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._timeout = timeout
        self._timed_out = timed_out
        self._name = name
        self._queue: list[_Entry[_J, _R]] = []
        self._committing = False
        self._nursery: trio.Nursery | None = None
        self._idle = trio.Event()  # set whenever no committer runs
        self._idle.set()
        #: Batches run (each one transaction, whether it committed or failed).
        self.batches = 0
        #: Jobs handed to the batch function.
        self.jobs = 0

    @property
    def queued(self) -> int:
        """Jobs waiting for a committer."""
        return len(self._queue)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Accept jobs for the duration of the block (the committer's lifetime)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                yield
            finally:
                self._nursery = None  # no new jobs from here on
                with trio.CancelScope(shield=True), trio.move_on_after(self._timeout):
                    await self._idle.wait()
                nursery.cancel_scope.cancel()
                for entry in self._queue:  # left over when the wait above timed out
                    entry.error = StoreUnavailable("the store closed before this write")
                    entry.done.set()
                self._queue.clear()

    async def submit(self, job: _J) -> _R:
        """Queue ``job``, wait for its batch, and return its outcome (or raise it).

        Raises:
            StoreUnavailable: the store is not open (outside :meth:`running`), or
                the write did not finish within the timeout.
        """
        nursery = self._nursery
        if nursery is None:
            raise StoreUnavailable("the store is not open")
        entry: _Entry[_J, _R] = _Entry(job)
        self._queue.append(entry)
        if not self._committing:
            self._committing = True
            self._idle = trio.Event()
            nursery.start_soon(self._commit_queued, name=self._name)
        try:
            with trio.fail_after(self._timeout):
                await entry.done.wait()
        except trio.TooSlowError:
            await self._abandon(entry)
            if not entry.done.is_set() or isinstance(entry.error, _Interrupted):
                raise self._timed_out() from None
            # Its batch finished while this caller waited for it to clean up (a batch
            # that cannot be interrupted, e.g. on SQLite's thread): what happened is
            # more telling than "too slow".
        except BaseException:  # Cancelled (or KeyboardInterrupt)
            await self._abandon(entry)
            raise
        return entry.result()

    async def _abandon(self, entry: _Entry[_J, _R]) -> None:
        """The caller of ``entry`` stops waiting: withdraw the job if it is still queued;
        if its batch is in flight and nobody else waits for it, cancel the batch and
        wait (shielded, bounded) until it has cleaned up."""
        if entry.done.is_set():
            return
        batch = entry.batch
        if batch is None:
            self._queue.remove(entry)
            return
        batch.waiting -= 1
        if batch.waiting > 0:
            return
        batch.scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(self._timeout):
            await batch.finished.wait()

    async def _commit_queued(self) -> None:
        """The committer: batch after batch, while jobs are queued. Raises nothing but
        ``trio.Cancelled`` (the store is closing then)."""
        try:
            while self._queue:
                entries = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._commit(entries)
        finally:
            self._committing = False
            self._idle.set()

    async def _commit(self, entries: list[_Entry[_J, _R]]) -> None:
        batch = _Batch(len(entries))
        for entry in entries:
            entry.batch = batch
        outcomes: list[_R | Exception] | None = None
        failure: StoreError | None = None
        try:
            with batch.scope:
                self.batches += 1
                self.jobs += len(entries)
                outcomes = await self._run_batch([entry.job for entry in entries])
                if len(outcomes) != len(entries):
                    raise StoreError(
                        f"a batch of {len(entries)} writes returned {len(outcomes)} outcomes"
                    )
        except StoreError as exc:
            outcomes, failure = None, exc
        except Exception as exc:  # a bug: fail the batch, not the whole Trio run
            outcomes = None
            failure = StoreError(f"the batched write failed: {type(exc).__name__}: {exc}")
            failure.__cause__ = exc
        finally:  # also when the run is shutting down (Cancelled goes on up)
            if outcomes is None and failure is None:
                # cancelled: abandoned by all its callers, or the run is ending
                failure = _Interrupted("the batched write was interrupted")
            for index, entry in enumerate(entries):
                if failure is not None:
                    entry.error = _copy(failure)
                else:
                    assert outcomes is not None
                    outcome = outcomes[index]
                    if isinstance(outcome, Exception):
                        entry.error = outcome
                    else:
                        entry.value = outcome
                entry.done.set()
            batch.finished.set()
