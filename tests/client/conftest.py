from __future__ import annotations

from functools import partial

import pytest
import trio
import trio_websocket

from ._fake_server import FakeServer


@pytest.fixture
async def server(nursery: trio.Nursery) -> FakeServer:
    """A scripted server on 127.0.0.1 with a kernel-chosen port, for real-socket tests."""
    fake = FakeServer()
    listening: trio_websocket.WebSocketServer = await nursery.start(
        partial(
            trio_websocket.serve_websocket,
            fake.handler,
            "127.0.0.1",
            0,
            None,
            # Frames a test leaves unread must not stop the server from answering a
            # close (trio-websocket's reader waits while its queue is full).
            message_queue_size=1000,
        )
    )
    fake.port = listening.port
    fake.url = f"http://127.0.0.1:{listening.port}"
    return fake
