"""Running a server inside a test, on a free port of 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from replyhq_trio.server import Server


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[int]:
    """Serve until the block ends, then shut the server down gracefully; yields the port."""
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(server.serve)
        try:
            yield port
        finally:
            server.shutdown()
