"""Group commit (replyhq_trio/backends/_batching.py), on its own with a fake batch
function: batches in queue order, one at a time, the next one as soon as the previous
is done; each caller its own outcome; cancellation and timeouts while queued or while
the batch is in flight."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from replyhq_trio.backends._batching import GroupCommit
from replyhq_trio.ports import StoreError, StoreUnavailable, UnknownConversation


class Recorder:
    """A batch function that records its batches, can be held, and fails on demand:
    job ``"unknown"`` gets UnknownConversation, ``"fail"`` fails the whole batch,
    ``"bug"`` raises a plain exception."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.finished: list[list[str]] = []
        self.cancelled: list[list[str]] = []
        self.gate: trio.Event | None = None
        self.started = trio.Event()

    async def __call__(self, jobs: list[str]) -> list[str | Exception]:
        self.batches.append(list(jobs))
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            self.cancelled.append(list(jobs))
            raise
        if "fail" in jobs:
            raise StoreUnavailable("the database went away")
        if "bug" in jobs:
            raise ZeroDivisionError("oops")
        self.finished.append(list(jobs))
        return [
            UnknownConversation(f"no conversation {job!r}") if job == "unknown" else job.upper()
            for job in jobs
        ]


async def _accepting(nursery: trio.Nursery, group: GroupCommit[str, str]) -> GroupCommit[str, str]:
    """``group`` accepting jobs until the test's nursery ends (as a store holds it)."""

    async def hold(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with group.running():
            task_status.started()
            await trio.sleep_forever()

    await nursery.start(hold)
    return group


async def _group(
    nursery: trio.Nursery, recorder: Recorder, *, max_batch: int = 100, timeout: float = 5.0
) -> GroupCommit[str, str]:
    group: GroupCommit[str, str] = GroupCommit(
        recorder,
        max_batch=max_batch,
        timeout=timeout,
        timed_out=lambda: StoreUnavailable(f"did not answer within {timeout:g} s"),
        name="test group commit",
    )
    return await _accepting(nursery, group)


async def test_concurrent_jobs_share_batches_in_queue_order(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    group = await _group(nursery, recorder, max_batch=40)
    results: dict[str, str] = {}
    queued: list[str] = []

    async def submit(job: str) -> None:
        queued.append(job)  # before submit's first checkpoint: this is queue order
        results[job] = await group.submit(job)

    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(submit, f"j{i}")
    assert results == {f"j{i}": f"J{i}" for i in range(100)}
    # All 100 queued before the committer's first step: 40 + 40 + 20, in queue order.
    assert [len(batch) for batch in recorder.batches] == [40, 40, 20]
    assert [job for batch in recorder.batches for job in batch] == queued
    assert (group.batches, group.jobs, group.queued) == (3, 100, 0)


async def test_jobs_queued_during_a_batch_form_the_next_one(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    recorder.gate = trio.Event()
    group = await _group(nursery, recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.submit, "first")
        await recorder.started.wait()
        for i in range(5):
            nursery.start_soon(group.submit, f"later{i}")
        await trio.testing.wait_all_tasks_blocked()
        assert group.queued == 5
        recorder.gate.set()
    assert recorder.batches[0] == ["first"]
    assert sorted(recorder.batches[1]) == [f"later{i}" for i in range(5)]
    assert len(recorder.batches) == 2


async def test_a_lone_job_is_not_delayed(nursery: trio.Nursery) -> None:
    group = await _group(nursery, Recorder())
    start = trio.current_time()
    assert await group.submit("only") == "ONLY"
    assert trio.current_time() - start < 0.1


async def test_one_jobs_error_is_its_own(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    group = await _group(nursery, recorder)
    outcomes: dict[str, object] = {}

    async def submit(job: str) -> None:
        try:
            outcomes[job] = await group.submit(job)
        except StoreError as exc:
            outcomes[job] = exc

    async with trio.open_nursery() as nursery:
        for job in ("a", "unknown", "b"):
            nursery.start_soon(submit, job)
    assert len(recorder.batches) == 1
    assert outcomes["a"] == "A"
    assert outcomes["b"] == "B"
    assert isinstance(outcomes["unknown"], UnknownConversation)


@pytest.mark.parametrize("poison", ["fail", "bug"])
async def test_a_failed_batch_fails_every_caller_with_its_own_error(
    poison: str, nursery: trio.Nursery
) -> None:
    recorder = Recorder()
    group = await _group(nursery, recorder)
    errors: list[BaseException] = []

    async def submit(job: str) -> None:
        with pytest.raises(StoreError) as caught:
            await group.submit(job)
        errors.append(caught.value)

    async with trio.open_nursery() as nursery:
        for job in ("a", poison, "b"):
            nursery.start_soon(submit, job)
    assert len(recorder.batches) == 1
    assert len(errors) == 3
    assert len({id(error) for error in errors}) == 3  # one instance each
    if poison == "fail":
        assert all(type(error) is StoreUnavailable for error in errors)
    else:  # a bug in the batch function: a StoreError, not a crash of the Trio run
        assert all(type(error) is StoreError for error in errors)
        assert all(isinstance(error.__cause__, ZeroDivisionError) for error in errors)
    assert await group.submit("after") == "AFTER"  # the committer goes on


async def test_a_caller_cancelled_while_queued_is_withdrawn(nursery: trio.Nursery) -> None:
    recorder = Recorder()
    recorder.gate = trio.Event()
    group = await _group(nursery, recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.submit, "first")
        await recorder.started.wait()
        with trio.CancelScope() as scope:
            nursery.start_soon(group.submit, "kept")
            scope.cancel()
            await group.submit("withdrawn")  # queued, then cancelled at once
        await trio.testing.wait_all_tasks_blocked()
        assert group.queued == 1
        recorder.gate.set()
    assert recorder.batches == [["first"], ["kept"]]


async def test_a_caller_cancelled_in_flight_leaves_the_batch_to_the_others(
    nursery: trio.Nursery,
) -> None:
    recorder = Recorder()
    recorder.gate = trio.Event()
    group = await _group(nursery, recorder)
    results: dict[str, str] = {}

    async def submit(job: str, scope: trio.CancelScope | None = None) -> None:
        if scope is None:
            results[job] = await group.submit(job)
            return
        with scope:
            results[job] = await group.submit(job)

    leaving = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(submit, "stays")
        nursery.start_soon(submit, "leaves", leaving)
        await recorder.started.wait()
        leaving.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert "leaves" not in results  # it left at once, while the batch is held
        recorder.gate.set()
    assert results == {"stays": "STAYS"}
    assert [sorted(batch) for batch in recorder.finished] == [["leaves", "stays"]]  # whole
    assert recorder.cancelled == []


async def test_a_batch_all_its_callers_left_is_cancelled_before_they_resume(
    nursery: trio.Nursery,
) -> None:
    recorder = Recorder()
    recorder.gate = trio.Event()
    group = await _group(nursery, recorder)
    with trio.move_on_after(0.2):
        async with trio.open_nursery() as nursery:
            for job in ("a", "b", "c"):
                nursery.start_soon(group.submit, job)
    # the last caller to leave waited until the batch had finished cleaning up
    assert [sorted(batch) for batch in recorder.cancelled] == [["a", "b", "c"]]
    assert recorder.finished == []
    recorder.gate.set()
    assert await group.submit("d") == "D"


async def test_callers_past_the_timeout_are_unavailable_and_never_hang(
    nursery: trio.Nursery,
) -> None:
    recorder = Recorder()
    recorder.gate = trio.Event()  # never set: a batch that would hang
    group = await _group(nursery, recorder, timeout=0.3)
    errors: list[StoreUnavailable] = []

    async def submit(job: str) -> None:
        with pytest.raises(StoreUnavailable, match=r"within 0\.3 s") as caught:
            await group.submit(job)
        errors.append(caught.value)

    start = trio.current_time()
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(submit, f"j{i}")
    assert 0.3 <= trio.current_time() - start < 1.0
    assert len(errors) == 10
    assert [sorted(batch) for batch in recorder.cancelled] == [[f"j{i}" for i in range(10)]]


async def test_a_timed_out_caller_gets_what_happened_if_the_batch_ends_meanwhile(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A batch that cannot be interrupted (SQLite's worker thread) and ends while its last
    caller waits for it: the caller gets the batch's own outcome."""

    async def uninterruptible(jobs: list[str]) -> list[str | Exception]:
        with trio.CancelScope(shield=True):
            await trio.sleep(0.4)  # the autojump clock's time: the batch's own length
        return [StoreUnavailable("database is locked") for _ in jobs]

    group: GroupCommit[str, str] = GroupCommit(
        uninterruptible,
        max_batch=10,
        timeout=0.3,
        timed_out=lambda: StoreUnavailable("did not answer"),
        name="test",
    )
    await _accepting(nursery, group)
    with pytest.raises(StoreUnavailable, match="locked"):
        await group.submit("a")


async def test_closing_lets_the_batch_in_flight_finish_and_refuses_later_jobs() -> None:
    recorder = Recorder()
    recorder.gate = trio.Event()
    group: GroupCommit[str, str] = GroupCommit(
        recorder,
        max_batch=10,
        timeout=5.0,
        timed_out=lambda: StoreUnavailable("did not answer"),
        name="test",
    )
    results: dict[str, str] = {}

    async def submit(job: str) -> None:
        results[job] = await group.submit(job)

    async with trio.open_nursery() as nursery, group.running():
        nursery.start_soon(submit, "a")
        await recorder.started.wait()
        recorder.gate.set()  # the close below waits for this batch, not cancels it
    assert results == {"a": "A"}
    assert recorder.cancelled == []
    with pytest.raises(StoreUnavailable, match="not open"):
        await group.submit("b")


async def test_closing_fails_a_batch_that_outlives_the_timeout() -> None:
    recorder = Recorder()
    recorder.gate = trio.Event()  # never set: the batch hangs
    group: GroupCommit[str, str] = GroupCommit(
        recorder,
        max_batch=10,
        timeout=0.2,
        timed_out=lambda: StoreUnavailable("did not answer"),
        name="test",
    )
    errors: list[BaseException] = []

    async def submit(job: str) -> None:
        try:
            await group.submit(job)
        except StoreUnavailable as exc:
            errors.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, group.running():
            nursery.start_soon(submit, "a")
            await recorder.started.wait()
    assert recorder.cancelled == [["a"]]
    assert len(errors) == 1
