"""The bench application on replyhq_trio: ``join``, ``echo`` and ``say`` on namespace ``/``.

The same contract as ``app_python_socketio.py``:

* ``join`` ``{room}``: joins the room, acks ``true``;
* ``echo`` (any arguments): acks with the same arguments;
* ``say`` ``{room, text, t}``: emits ``msg`` with the payload to the room except the
  sender; no ack.

Run by ``scripts/bench`` as ``python app_replyhq.py --port N`` (pinned to core 0) and
stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import trio

from replyhq_trio.config import ServerConfig
from replyhq_trio.hub import Hub, Socket
from replyhq_trio.sansio import ProtocolConfig
from replyhq_trio.server import Server, serve_until_signalled

__all__ = ["bench_config", "build_bench_server"]


def bench_config(*, host: str = "127.0.0.1", port: int = 0) -> ServerConfig:
    """The baseline's settings: ping 25 s / 60 s, 1,000,000-byte payloads, ``/socket.io/``."""
    return ServerConfig(
        host=host,
        port=port,
        path="/socket.io/",
        protocol=ProtocolConfig(ping_interval=25.0, ping_timeout=60.0, max_payload=1_000_000),
        # The generator has closed every connection by the time the server is stopped.
        grace_period=2.0,
    )


def build_bench_server(config: ServerConfig, *, hub: Hub | None = None) -> Server:
    """The bench app's handlers on a new server (on ``hub`` when given: scripts/bench-cluster
    passes one with a Redis backplane)."""
    server = Server(config, hub=hub)
    hub = server.hub
    main = server.namespace("/")

    @main.on("join")
    async def join(socket: Socket, args: tuple[Any, ...]) -> bool:
        socket.join(str(args[0]["room"]))
        return True

    @main.on("echo")
    async def echo(socket: Socket, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args

    @main.on("say")
    async def say(socket: Socket, args: tuple[Any, ...]) -> None:
        payload = args[0]
        await hub.emit("/", "msg", payload, to=str(payload["room"]), skip=[socket])

    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    server = build_bench_server(bench_config(host=args.host, port=args.port))
    trio.run(serve_until_signalled, server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
