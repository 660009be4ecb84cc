"""Backoff, reconnecting, and the server's shutdown delay.

Attempts are driven through the ``connect`` parameter: a failing attempt raises
before any I/O, a successful one is a client over an in-memory transport, so the
autojump clock gives exact times.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from replyhq_trio.client import (
    Backoff,
    Client,
    ConnectFailed,
    ConnectRefused,
    open_client,
    open_client_on,
    run_with_reconnect,
)

from ._fake_server import FakeServer
from ._memory import MemoryTransport


class ScriptedRandom(random.Random):
    """Draws ``fraction`` of every window and records the windows asked for."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction
        self.windows: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.windows.append((a, b))
        return a + (b - a) * self.fraction


def test_backoff_windows_double_up_to_the_cap_and_reset() -> None:
    rng = ScriptedRandom(1.0)
    backoff = Backoff(initial_delay=0.5, max_delay=30.0, rng=rng)
    assert [backoff.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert all(low == 0 for low, _ in rng.windows)
    backoff.reset()
    assert backoff.next_delay() == 0.5
    delays = [backoff.next_delay() for _ in range(5000)]
    assert delays[-1] == 30  # no overflow however long it has been failing


def test_backoff_is_full_jitter() -> None:
    backoff = Backoff(initial_delay=1.0, max_delay=8.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0 <= delay <= 8 for delay in delays)
    assert min(delays[5:]) < 1 < max(delays[5:])  # spread over the whole window


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="initial_delay"):
        Backoff(initial_delay=0)
    with pytest.raises(ValueError, match="initial_delay"):
        Backoff(initial_delay=2, max_delay=1)


#: One attempt: "fail", "refuse", or the server's side of a session.
Step = str | Callable[[MemoryTransport], Awaitable[object]]


class _Stop(Exception):
    """Ends a scripted run (not a ClientError, so it is not retried)."""


class Attempts:
    """A ``connect`` for run_with_reconnect that follows a script of outcomes.

    Each entry is ``"fail"``, ``"refuse"`` or a server script for a session; the
    time of every attempt is recorded. Past the end of the script, it stops.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        script: list[str | Step],
    ) -> None:
        self.nursery = nursery
        self.script = script
        self.times: list[float] = []

    def __call__(self) -> AbstractAsyncContextManager[Client]:
        self.times.append(trio.current_time())
        if len(self.times) > len(self.script):
            raise _Stop
        return self._attempt(self.script[len(self.times) - 1])

    @asynccontextmanager
    async def _attempt(self, step: str | Step) -> AsyncIterator[Client]:
        if step == "fail":
            raise ConnectFailed("scripted failure")
        transport = MemoryTransport()
        if step == "refuse":
            self.nursery.start_soon(_refuse, transport)
        else:
            assert callable(step)
            self.nursery.start_soon(step, transport)
        async with open_client_on(transport) as client:
            yield client


async def _refuse(transport: MemoryTransport) -> None:
    assert await transport.server_recv() == '40/client,{"k":1}'
    transport.server_send('44/client,{"message":"RATE_LIMITED"}')


async def _accept(transport: MemoryTransport) -> None:
    assert await transport.server_recv() == '40/client,{"k":1}'
    transport.server_send('40/client,{"sid":"s"}')


async def _shutdown(transport: MemoryTransport) -> None:
    await _accept(transport)
    transport.server_send(
        '42/client,["server:shutdown",{"message":"bye","reconnect_delay_ms":1234}]'
    )


async def _close(transport: MemoryTransport) -> None:
    await _accept(transport)
    await trio.sleep(10)
    transport.close(1001, "going away")


async def test_backoff_reset_and_exact_shutdown_delay(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rng = ScriptedRandom(0.5)
    attempts = Attempts(nursery, ["fail", "refuse", _shutdown, "fail", _close])
    sessions: list[tuple[float, float]] = []

    async def on_connected(client: Client) -> None:
        started = trio.current_time()
        sock = client.sockets["/client"]
        # A session ends when it sees server:shutdown, or when the connection does.
        await sock.wait_for("server:shutdown")
        sessions.append((started, trio.current_time()))

    with trio.fail_after(1000), pytest.raises(_Stop):
        await run_with_reconnect(
            attempts, {"/client": {"k": 1}}, on_connected, initial_delay=0.5, rng=rng
        )

    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts.times)]
    # fail: U(0, 0.5); refused: U(0, 1); then joined, so the backoff starts again.
    assert gaps[:2] == [0.25, 0.5]
    # The session saw server:shutdown at once: exactly 1.234 s, no jitter on top.
    assert sessions == [(0.75, 0.75)]
    assert gaps[2] == pytest.approx(1.234, abs=1e-9)
    # A failure after a good session backs off from the start again: U(0, 0.5).
    assert gaps[3] == 0.25
    # The last session ended by a close 10 s in, with no shutdown delay: U(0, 0.5).
    assert gaps[4] == pytest.approx(10.25)
    assert rng.windows == [(0, 0.5), (0, 1.0), (0, 0.5), (0, 0.5)]


async def test_gives_up_after_max_attempts(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    rng = ScriptedRandom(1.0)
    attempts = Attempts(nursery, ["fail"] * 10)
    with trio.fail_after(1000), pytest.raises(ConnectFailed):
        await run_with_reconnect(
            attempts,
            {"/client": None},
            _never,
            initial_delay=1,
            max_delay=5,
            max_attempts=5,
            rng=rng,
        )
    assert [b - a for a, b in itertools.pairwise(attempts.times)] == [1, 2, 4, 5]


async def _never(client: Client) -> None:
    pytest.fail("connected")


async def test_errors_of_the_session_itself_propagate(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    attempts = Attempts(nursery, ["refuse", _accept])

    async def on_connected(client: Client) -> None:
        raise KeyError("the session's own bug")

    with trio.fail_after(100), pytest.raises(KeyError):
        await run_with_reconnect(attempts, {"/client": {"k": 1}}, on_connected)
    assert len(attempts.times) == 2


async def test_refusals_count_as_failures(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    attempts = Attempts(nursery, ["refuse"] * 3)
    with trio.fail_after(100), pytest.raises(ConnectRefused):
        await run_with_reconnect(attempts, {"/client": {"k": 1}}, _never, max_attempts=3)


async def test_reconnects_over_real_sockets(server: FakeServer, nursery: trio.Nursery) -> None:
    connected = trio.Event()
    sessions: list[str] = []

    async def on_connected(client: Client) -> None:
        sessions.append(client.sid)
        if len(sessions) == 2:
            connected.set()
        await client.sockets["/client"].wait_for("server:shutdown")

    async def play_server() -> None:
        for index in range(2):
            peer = await server.accept()
            assert await peer.accept_namespace("/client", f"ns-{index}") == {"app_id": "a"}
            if index == 0:
                await peer.send(
                    '42/client,["server:shutdown",{"message":"bye","reconnect_delay_ms":20}]'
                )
                assert await peer.close_code() == 1000

    with trio.fail_after(5):
        nursery.start_soon(play_server)
        async with trio.open_nursery() as clients:
            await clients.start(
                partial(
                    run_with_reconnect,
                    partial(open_client, server.url),
                    {"/client": {"app_id": "a"}},
                    on_connected,
                )
            )
            await connected.wait()
            clients.cancel_scope.cancel()
    assert sessions == ["eio-1", "eio-1"]
