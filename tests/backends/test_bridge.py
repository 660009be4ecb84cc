"""The asyncio bridge: one loop, reused when nested; one coroutine per call, whose
cleanup has run before a cancelled Trio caller resumes, or the bridge's cancel timeout has
passed; shielded, bounded cleanup; errors nobody awaits are logged."""

from __future__ import annotations

import asyncio

import pytest
import trio

from replyhq_trio.backends import AsyncioBridge, current_bridge, open_asyncio_bridge

from .._waiting import wait_until


async def _answer(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


async def test_nested_bridges_share_one_loop() -> None:
    with pytest.raises(RuntimeError, match="no asyncio bridge is open"):
        current_bridge()
    async with open_asyncio_bridge() as outer:
        assert current_bridge().loop is outer.loop
        async with open_asyncio_bridge() as inner:
            assert inner.loop is outer.loop
            assert await inner.run(_answer, 21) == 42
        assert await outer.run(_answer, 1) == 2  # the inner block did not close the loop


async def test_a_cancelled_call_has_finished_its_cleanup_when_trio_resumes() -> None:
    events: list[str] = []

    async def unit() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.05)  # asyncio cleanup that takes a while (a release)
            events.append("released")

    async with open_asyncio_bridge() as bridge:
        with trio.move_on_after(0.05) as scope:
            await bridge.run(unit)
        events.append("resumed")
    assert scope.cancelled_caught
    assert events == ["released", "resumed"]


async def test_cleanup_runs_in_a_cancelled_scope_and_is_bounded() -> None:
    closed: list[str] = []

    async def close() -> None:
        await asyncio.sleep(0.01)
        closed.append("closed")

    async with open_asyncio_bridge() as bridge:
        with trio.CancelScope() as scope:
            scope.cancel()  # e.g. shutdown: the caller is already cancelled
            assert await bridge.run_cleanup(1.0, close)
        assert closed == ["closed"]
        start = trio.current_time()
        assert not await bridge.run_cleanup(0.1, asyncio.sleep, 10)
        assert trio.current_time() - start < 1.0


async def test_errors_come_out_bare_from_a_bridge_it_opened() -> None:
    async def fail() -> None:
        raise KeyError("from asyncio")

    with pytest.raises(KeyError, match="from asyncio"):
        async with open_asyncio_bridge() as bridge:
            await bridge.run(fail)
    with pytest.raises(ValueError, match="from trio"):
        async with open_asyncio_bridge():
            raise ValueError("from trio")


async def test_a_task_that_does_not_end_when_cancelled_is_waited_for_a_bounded_time() -> None:
    """A cleanup that waits on a peer that never answers: the Trio caller resumes after
    the bridge's cancel timeout, and a second cancellation ends the task."""
    ended: list[str] = []

    async def stuck() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            try:
                await asyncio.shield(asyncio.sleep(10))  # e.g. a close handshake
            finally:
                ended.append("ended")
            raise

    async with open_asyncio_bridge() as opened:
        bridge = AsyncioBridge(opened.loop, cancel_timeout=0.2)
        start = trio.current_time()
        with trio.move_on_after(0.05) as scope:
            await bridge.run(stuck)
        assert scope.cancelled_caught
        assert 0.2 <= trio.current_time() - start < 1.0
        await wait_until(lambda: ended == ["ended"], timeout=1.0)


async def test_errors_that_no_caller_awaits_are_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A library's future that failed after everybody stopped awaiting it (asyncpg leaves
    one when a connection attempt is cancelled at the wrong moment) is logged; it does not
    end the loop and every call on it."""

    async def leave_a_failed_future() -> None:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(ConnectionError("unexpected connection_lost() call"))
        del future  # never retrieved: asyncio reports it to the loop's exception handler

    async with open_asyncio_bridge() as bridge:
        await bridge.run(leave_a_failed_future)
        assert await bridge.run(_answer, 2) == 4
    assert "unexpected connection_lost() call" in caplog.text
