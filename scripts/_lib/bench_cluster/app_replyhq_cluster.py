"""One node of scripts/bench-cluster on replyhq_trio: the bench app, with Redis behind it.

The contract and settings of ``scripts/_lib/bench/app_replyhq.py`` (``join``, ``echo`` and
``say`` on namespace ``/``, path ``/socket.io/``, ping 25 s / 60 s, 1,000,000-byte
payloads), on a server whose hub broadcasts to the other nodes through
:class:`~replyhq_trio.backends.redis_backplane.RedisBackplane` (the wire format of
``@socket.io/redis-adapter``), wired as ``replyhq_trio.app`` does for ``serve
--redis-url``:

* ``join`` ``{room}``: joins the room, acks ``true``;
* ``echo`` (any arguments): acks with the same arguments;
* ``say`` ``{room, text, t}``: ``hub.emit("/", "msg", payload, to=room, skip=[socket])``,
  delivered here and published once to Redis for the other nodes; no ack.

Run by ``scripts/bench-cluster`` as ``python app_replyhq_cluster.py --port N --redis-url
redis://127.0.0.1:P --key K`` (pinned like the other servers) and stopped with SIGTERM.
It logs at WARNING: every line of its log is reported.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import trio

from replyhq_trio.backends.redis_backplane import RedisBackplane, RedisBackplaneConfig
from replyhq_trio.config import ServerConfig
from replyhq_trio.hub import Hub, Socket
from replyhq_trio.sansio import ProtocolConfig
from replyhq_trio.server import Server, serve_until_signalled

__all__ = ["build_cluster_server", "cluster_config"]


def cluster_config(*, host: str = "127.0.0.1", port: int = 0) -> ServerConfig:
    """scripts/bench's settings (``bench_config`` of ``app_replyhq.py``)."""
    return ServerConfig(
        host=host,
        port=port,
        path="/socket.io/",
        protocol=ProtocolConfig(ping_interval=25.0, ping_timeout=60.0, max_payload=1_000_000),
        # The generator has closed every connection by the time the server is stopped.
        grace_period=2.0,
    )


def build_cluster_server(config: ServerConfig, *, redis_url: str, key: str) -> Server:
    backplane = RedisBackplane(redis_url, config=RedisBackplaneConfig(key=key))
    server = Server(config, hub=Hub(backplane=backplane))
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
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--key", default="socket.io", help="the adapter's channel key")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    server = build_cluster_server(
        cluster_config(host=args.host, port=args.port), redis_url=args.redis_url, key=args.key
    )
    trio.run(serve_until_signalled, server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
