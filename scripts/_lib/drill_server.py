"""A minimal server for the shutdown drill: a /client namespace and a drain hook that
tells every socket to reconnect later, each after its own delay in a window."""

from __future__ import annotations

import argparse
import logging
import sys

import trio

from replyhq_trio.config import ServerConfig
from replyhq_trio.server import Server, serve_until_signalled


def build(port: int, grace: float, window_ms: int) -> Server:
    server = Server(ServerConfig(port=port, grace_period=grace, max_connections=100_000))
    server.namespace("/client")

    @server.on_drain
    async def announce() -> None:
        sockets = server.hub.sockets("/client")
        for index, socket in enumerate(sockets):
            # Spread over the window so that the clients do not all come back at once.
            delay = window_ms * index // max(1, len(sockets))
            await socket.emit(
                "server:shutdown",
                {"message": "Server is shutting down", "reconnect_delay_ms": delay},
            )

    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--window-ms", type=int, default=5000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    trio.run(serve_until_signalled, build(args.port, args.grace, args.window_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
