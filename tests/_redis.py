"""Redis for the presence tests: find the server, talk to it from Trio without asyncio
(a minimal RESP client: inspection, clean-up, MONITOR), and run a private
``redis-server`` that a test can stop, freeze and restart.

The presence itself goes through redis-py on the asyncio bridge; these helpers stay
out of that path on purpose, so that what they observe does not depend on it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

from ._waiting import wait_for

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def url_candidate() -> str:
    return os.environ.get("REPLYHQ_TEST_REDIS_URL") or DEFAULT_URL


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


class RespError(Exception):
    """An error reply."""


class RespClient:
    """One connection, commands in, parsed replies out (RESP2)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[RespClient]:
        host, port = address(url)
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(host, port)
        try:
            yield cls(stream)
        finally:
            await stream.aclose()

    async def call(self, *args: str | int | bytes) -> Any:
        await self.send(*args)
        with trio.fail_after(10):
            return await self.reply()

    async def send(self, *args: str | int | bytes) -> None:
        out = bytearray(b"*%d\r\n" % len(args))
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out += b"$%d\r\n%s\r\n" % (len(data), data)
        await self._stream.send_all(bytes(out))

    async def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                return line
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self._buffer += chunk

    async def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size + 2:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[: size + 2]
        return data

    async def reply(self) -> Any:
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else (await self._exactly(size)).decode()
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [await self.reply() for _ in range(count)]
        raise ConnectionError(f"unexpected reply {line!r}")


async def probe(url: str) -> str | None:
    """None if Redis answers PING at ``url``, else why not."""
    try:
        async with RespClient.connect(url) as client:
            answer = await client.call("PING")
    except (OSError, trio.TooSlowError, ConnectionError, RespError) as exc:
        return f"{url}: {type(exc).__name__}: {exc}"
    return None if answer == "PONG" else f"{url}: PING answered {answer!r}"


async def keys(url: str, prefix: str) -> set[str]:
    found: set[str] = set()
    async with RespClient.connect(url) as client:
        cursor = "0"
        while True:
            cursor, batch = await client.call("SCAN", cursor, "MATCH", f"{prefix}*", "COUNT", 1000)
            found.update(batch)
            if cursor == "0":
                return found


async def delete_prefix(url: str, prefix: str) -> None:
    found = await keys(url, prefix)
    if found:
        async with RespClient.connect(url) as client:
            await client.call("UNLINK", *sorted(found))


def new_prefix() -> str:
    return f"replyhq_t_{secrets.token_hex(5)}:"


# --- MONITOR ----------------------------------------------------------------------------

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_CLIENT = re.compile(r"^\S+ \[\d+ ([^\]]+)\] ")


@attrs.frozen
class Monitored:
    """A command as MONITOR shows it, in the order Redis ran it."""

    client: str  # "lua" for a command run by a script
    args: tuple[str, ...]

    @property
    def from_script(self) -> bool:
        return self.client == "lua"


def _unquote(text: str) -> str:
    # MONITOR escapes with sdscatrepr; the tests only read ASCII ids, keys and shas.
    return re.sub(r"\\(.)", r"\1", text)


def parse_monitor_line(line: str) -> Monitored | None:
    head = _CLIENT.match(line)
    if head is None:
        return None  # "OK", the answer to MONITOR itself
    return Monitored(head.group(1), tuple(_unquote(a) for a in _QUOTED.findall(line)))


class Monitor:
    """What Redis runs while the block is open, in order. The raw stream is kept and
    parsed on demand (``commands``): MONITOR sends a line per command, scripts' own
    included, and parsing them as they come costs more CPU than the code under test."""

    def __init__(self) -> None:
        self._raw = bytearray()
        self._start = 0  # where ``commands`` begins (after ``clear``)
        self._mark = b""
        self._seen = trio.Event()

    async def _collect(self, stream: trio.SocketStream, ready: trio.Event) -> None:
        await stream.send_all(b"*1\r\n$7\r\nMONITOR\r\n")
        ready.set()
        while True:
            chunk = await stream.receive_some(1 << 20)
            if not chunk:
                raise ConnectionError("Redis closed the MONITOR connection")
            tail = len(self._raw) - len(self._mark)
            self._raw += chunk
            if self._mark and self._raw.find(self._mark, max(tail, 0)) >= 0:
                self._seen.set()

    async def flush(self, url: str) -> None:
        """Return once every command that ran before this call has been collected: a
        marker sent after them comes back through MONITOR after them."""
        self._mark = f"monitor-mark-{secrets.token_hex(4)}".encode()
        self._seen = trio.Event()
        async with RespClient.connect(url) as client:
            await client.call("ECHO", self._mark)
        with trio.fail_after(10):
            await self._seen.wait()

    def clear(self) -> None:
        self._start = len(self._raw)

    def commands(self, *, containing: str = "") -> list[Monitored]:
        """The commands run so far (those whose line contains ``containing``), markers
        left out."""
        needle = containing.encode()
        found = []
        for line in bytes(self._raw[self._start :]).split(b"\r\n"):
            if needle in line and b"monitor-mark-" not in line:
                command = parse_monitor_line(line.decode("utf-8", "replace").lstrip("+"))
                if command is not None:
                    found.append(command)
        return found


@asynccontextmanager
async def monitoring(url: str) -> AsyncIterator[Monitor]:
    monitor = Monitor()
    host, port = address(url)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, port)
    async with stream, trio.open_nursery() as nursery:
        ready = trio.Event()
        nursery.start_soon(monitor._collect, stream, ready)
        await ready.wait()
        await monitor.flush(url)  # MONITOR is on before the block starts
        yield monitor
        nursery.cancel_scope.cancel()


# --- a private redis-server ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port: int = probe_socket.getsockname()[1]
    return port


class PrivateRedis:
    """A ``redis-server`` of the test's own (no persistence), stopped by its PID."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: trio.Process | None = None

    @property
    def running(self) -> bool:
        return self._process is not None

    async def start(self) -> None:
        assert self._process is None
        binary = shutil.which("redis-server")
        assert binary is not None
        self._process = await trio.lowlevel.open_process(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

        async def answers() -> bool:
            return await probe(self.url) is None

        await wait_for(answers, timeout=5)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
            return
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a black hole)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)


@asynccontextmanager
async def private_redis() -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:  # the tests ask for redis_server_binary
        raise RuntimeError("redis-server is not installed: the outage tests need it")
    server = PrivateRedis(free_port())
    await server.start()
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await server.stop()
