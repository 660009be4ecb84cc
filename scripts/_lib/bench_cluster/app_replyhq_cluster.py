"""One node of scripts/bench-cluster on replyhq_trio: the bench app, with Redis behind it.

The app of ``scripts/_lib/bench/app_replyhq.py`` (its ``bench_config`` and
``build_bench_server``: ``join``, ``echo`` and ``say`` on namespace ``/``, path
``/socket.io/``, ping 25 s / 60 s, 1,000,000-byte payloads), on a server whose hub
broadcasts to the other nodes through
:class:`~replyhq_trio.backends.redis_backplane.RedisBackplane` (the wire format of
``@socket.io/redis-adapter``), wired as ``replyhq_trio.app`` does for ``serve
--redis-url``: ``say`` ``{room, text, t}`` is delivered here and published once to Redis
for the other nodes.

Run by ``scripts/bench-cluster`` as ``python app_replyhq_cluster.py --port N --redis-url
redis://127.0.0.1:P --key K`` (pinned like the other servers) and stopped with SIGTERM.
It logs at WARNING: every line of its log is reported.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from replyhq_trio.backends.redis_backplane import RedisBackplane, RedisBackplaneConfig
from replyhq_trio.config import ServerConfig
from replyhq_trio.hub import Hub
from replyhq_trio.server import Server, serve_until_signalled

# scripts/bench's app, loaded by path (a script beside its runner, not a package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from app_replyhq import bench_config, build_bench_server

__all__ = ["build_cluster_server"]


def build_cluster_server(config: ServerConfig, *, redis_url: str, key: str) -> Server:
    backplane = RedisBackplane(redis_url, config=RedisBackplaneConfig(key=key))
    return build_bench_server(config, hub=Hub(backplane=backplane))


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
        bench_config(host=args.host, port=args.port), redis_url=args.redis_url, key=args.key
    )
    trio.run(serve_until_signalled, server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
