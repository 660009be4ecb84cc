"""The shutdown drill: real clients, a real SIGTERM, figures printed.

Some clients leave as soon as they get ``server:shutdown`` (what an SDK does); the rest
stay, and must be closed cleanly by the server when the grace period ends: a DISCONNECT
for their namespace, then a WebSocket close 1001.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import attrs
import trio

from replyhq_trio.client import ConnectionClosed, Disconnected, open_client

ROOT = Path(__file__).resolve().parents[2]


@attrs.define
class Outcome:
    notice: bool = False
    delay_ms: int | None = None
    how: str = "unknown"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _client(
    url: str, leaves: bool, outcome: Outcome, joined: trio.Semaphore, ready: trio.Event
) -> None:
    async with joined:
        client_cm = open_client(url)
        client = await client_cm.__aenter__()
    try:
        sock = await client.connect("/client")
        ready.set()
        notice = await sock.wait_for("server:shutdown")
        outcome.notice = True
        outcome.delay_ms = notice.args[0]["reconnect_delay_ms"]
        if leaves:
            outcome.how = "left on notice"
            return
        try:
            while True:
                await sock.receive()
        except ConnectionClosed as early:
            outcome.how = f"connection closed {early.code} without DISCONNECT"
        except Disconnected as gone:
            outcome.how = f"DISCONNECT ({gone.reason})"
            with trio.fail_after(5):
                ended = await client.wait_closed()
            outcome.how += f", then close {ended.code}"
    finally:
        await client_cm.__aexit__(None, None, None)


async def drill(clients: int, grace: float, leave_fraction: float) -> int:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = await trio.lowlevel.open_process(
        [
            sys.executable,
            str(ROOT / "scripts" / "_lib" / "drill_server.py"),
            "--port",
            str(port),
            "--grace",
            str(grace),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert server.stderr is not None
    seen = b""
    with trio.fail_after(20):
        while b"listening on" not in seen:
            chunk = await server.stderr.receive_some(4096)
            if not chunk:
                print("the server did not start:", seen.decode(errors="replace"))
                return 1
            seen += chunk

    outcomes = [Outcome() for _ in range(clients)]
    leavers = int(clients * leave_fraction)
    joined = trio.Semaphore(100)  # bounded concurrent handshakes
    async with trio.open_nursery() as nursery:
        readies = []
        started = time.perf_counter()
        for index, outcome in enumerate(outcomes):
            ready = trio.Event()
            readies.append(ready)
            nursery.start_soon(_client, url, index < leavers, outcome, joined, ready)
        with trio.fail_after(60):
            for ready in readies:
                await ready.wait()
        connect_s = time.perf_counter() - started
        print(
            f"{clients} clients connected in {connect_s:.2f} s ({leavers} will leave on the notice)"
        )
        sent_at = time.perf_counter()
        server.send_signal(signal.SIGTERM)
        with trio.fail_after(grace + 30):
            code = await server.wait()
        took = time.perf_counter() - sent_at
    notices = sum(1 for o in outcomes if o.notice)
    delays = sorted(o.delay_ms for o in outcomes if o.delay_ms is not None)
    ways = Counter(o.how for o in outcomes)
    clean = sum(
        count
        for how, count in ways.items()
        if how == "left on notice" or (how.startswith("DISCONNECT") and how.endswith("close 1001"))
    )
    limit = grace + 2
    print(f"exit code: {code}")
    print(f"shutdown took: {took:.2f} s (grace {grace:.0f} s; limit {limit:.0f} s)")
    print(f"drain notice received: {notices}/{clients}")
    if delays:
        print(f"reconnect_delay_ms spread: {delays[0]}..{delays[-1]} ({len(set(delays))} distinct)")
    print("how clients ended:")
    for how, count in ways.most_common():
        print(f"  {count:6d}  {how}")
    print(f"clean endings: {clean}/{clients}")
    ok = code == 0 and took < limit and notices == clients and clean == clients
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--leave-fraction", type=float, default=0.5)
    args = parser.parse_args()
    return trio.run(drill, args.clients, args.grace, args.leave_fraction)


if __name__ == "__main__":
    sys.exit(main())
