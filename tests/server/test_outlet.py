"""The write path: direct sends, partial writes, the backlog and its bound, failure."""

from __future__ import annotations

import socket

import trio

from replyhq_trio.transport import Outlet


def _small_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A connected pair with tiny kernel buffers, so backlogs appear quickly."""
    left, right = trio.socket.socketpair()
    for sock in (left, right):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return left, right


async def _read_exactly(sock: trio.socket.SocketType, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await sock.recv(65536)
        assert chunk, "the writer side closed early"
        data += chunk
    return bytes(data)


async def test_small_writes_go_straight_to_the_socket() -> None:
    left, right = _small_pair()
    with left, right, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            outlet = Outlet(left, nursery, max_backlog=1 << 20, on_failure=lambda: None)
            outlet.write(b"hello ")
            outlet.writev([b"wor", b"ld"])
            assert outlet.backlog_bytes == 0
            assert await _read_exactly(right, 11) == b"hello world"


async def test_what_the_kernel_refuses_is_kept_in_order_and_drained() -> None:
    left, right = _small_pair()
    payloads = [bytes([i]) * 50_000 for i in range(8)]
    with left, right, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            outlet = Outlet(left, nursery, max_backlog=1 << 30, on_failure=lambda: None)
            for payload in payloads:
                outlet.write(payload)  # each one overflows the tiny buffer: partial writes
            assert outlet.backlog_bytes > 0
            outlet.writev([b"tail-", b"end"])
            received = await _read_exactly(right, sum(map(len, payloads)) + 8)
            await outlet.drain()
            assert outlet.backlog_bytes == 0
    assert received == b"".join(payloads) + b"tail-end"


async def test_an_emit_waits_for_room_and_a_reader_makes_room() -> None:
    left, right = _small_pair()
    with left, right, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            outlet = Outlet(left, nursery, max_backlog=10_000, on_failure=lambda: None)
            outlet.write(b"x" * 200_000)
            assert outlet.over_limit
            waited = trio.Event()

            async def waiter() -> None:
                await outlet.wait_for_room()
                waited.set()

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not waited.is_set()
            await _read_exactly(right, 200_000)
            await waited.wait()
            assert not outlet.over_limit


async def test_a_dead_peer_is_reported_once_and_later_writes_are_dropped() -> None:
    left, right = _small_pair()
    failures: list[str] = []
    with left, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            outlet = Outlet(
                left, nursery, max_backlog=1 << 20, on_failure=lambda: failures.append("x")
            )
            right.close()
            for _ in range(3):
                outlet.write(b"into the void" * 1000)
            await trio.testing.wait_all_tasks_blocked()
            assert failures == ["x"]
            assert outlet.closed
            outlet.write(b"dropped")
            assert outlet.backlog_bytes == 0


async def test_close_releases_waiters() -> None:
    left, right = _small_pair()
    with left, right, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            outlet = Outlet(left, nursery, max_backlog=10, on_failure=lambda: None)
            outlet.write(b"y" * 100_000)
            nursery.start_soon(outlet.wait_for_room)
            nursery.start_soon(outlet.drain)
            await trio.testing.wait_all_tasks_blocked()
            outlet.close()
