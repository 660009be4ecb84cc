"""Run the conformance application until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys

import trio

from replyhq_trio.server import serve_until_signalled
from replyhq_trio.testing.conformance import build_conformance_server, conformance_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    server = build_conformance_server(conformance_config(host=args.host, port=args.port))
    trio.run(serve_until_signalled, server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
