"""SIGTERM and SIGINT on a real server process: a graceful exit 0, and a second signal
that ends the process at once."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

from .._raw import open_websocket

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "scripts" / "_lib" / "conformance_server.py"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _start(port: int) -> trio.Process:
    """Start the server and wait for its "listening" log line."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(SERVER), "--port", str(port), "--log-level", "INFO"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(15):
        while b"listening on" not in seen:
            chunk = await process.stderr.receive_some(4096)
            assert chunk, f"the server exited: {seen.decode(errors='replace')}"
            seen += chunk
    return process


async def test_sigterm_without_clients_exits_0_at_once() -> None:
    port = _free_port()
    process = await _start(port)
    with trio.fail_after(5):
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0


async def test_sigint_with_a_client_waits_for_it_and_a_second_signal_exits_at_once() -> None:
    port = _free_port()
    process = await _start(port)
    with trio.fail_after(10):
        async with open_websocket(port, "/socket.io/?EIO=4&transport=websocket") as ws:
            await ws.receive()
            await ws.send_text("40")
            await ws.receive_skipping_pings()
            process.send_signal(signal.SIGINT)
            await ws.send_text("3")  # still served: the grace period (10 s) runs
            with trio.move_on_after(0.3):
                await process.wait()
            assert process.returncode is None
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 128 + signal.SIGTERM
