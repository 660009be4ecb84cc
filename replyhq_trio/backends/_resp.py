"""RESP2, the Redis protocol, for the backplane's own connections: a sans-IO reader and
writer, and a Trio connection that speaks it.

The backplane publishes and subscribes on connections of its own, in Trio, rather than
through redis-py on the asyncio bridge: every message would otherwise cross the bridge
(50-150 µs each) and go through redis-py's parser (150-300 µs a call here), and a
subscriber whose reconnection is in our own hands is one that cannot go deaf unseen.
Only what pub/sub needs is here: commands out, replies and pushes in.
"""

from __future__ import annotations

import collections
import ssl
from collections.abc import Sequence
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

import attrs
import trio

__all__ = [
    "FAILURES",
    "Address",
    "Reply",
    "RespConnection",
    "RespError",
    "RespReader",
    "encode_command",
    "first_failure",
    "parse_redis_url",
]

#: A decoded reply: bytes for bulk strings, str for simple strings, int, None for a nil,
#: a list for an array, :class:`RespError` for an error reply.
Reply: TypeAlias = "bytes | str | int | list[Reply] | RespError | None"

#: The largest bulk string or array accepted (a broadcast is well under it).
_MAX_BULK = 512 * 1024 * 1024
_MAX_LINE = 64 * 1024


class RespError(Exception):
    """An error reply (``-ERR ...``), or a stream that is not RESP."""


#: What a lost, refused or silent Redis connection raises.
FAILURES = (OSError, RespError, trio.EndOfChannel, trio.BrokenResourceError, trio.TooSlowError)


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first failure of a group (nurseries group what they raise), for a log line."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _bulk(part: bytes | str | int | float) -> bytes:
    if isinstance(part, bytes):
        data = part
    elif isinstance(part, str):
        data = part.encode()
    else:
        data = repr(part).encode() if isinstance(part, float) else str(part).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def encode_command(*parts: bytes | str | int | float) -> bytes:
    """One command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(parts) + b"".join(_bulk(part) for part in parts)


class RespReader:
    """Turns bytes from Redis into replies, however they were split."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0

    def feed(self, data: bytes | bytearray) -> None:
        if self._position:
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += data

    def replies(self) -> list[Reply]:
        """Every reply complete so far (a partial one stays buffered)."""
        out: list[Reply] = []
        while True:
            parsed = self._parse(self._position)
            if parsed is None:
                return out
            reply, self._position = parsed
            out.append(reply)

    def _line(self, start: int) -> tuple[bytes, int] | None:
        end = self._buffer.find(b"\r\n", start)
        if end < 0:
            if len(self._buffer) - start > _MAX_LINE:
                raise RespError("a RESP line too long")
            return None
        return bytes(self._buffer[start:end]), end + 2

    def _parse(self, start: int) -> tuple[Reply, int] | None:
        if start >= len(self._buffer):
            return None
        line = self._line(start + 1)
        if line is None:
            return None
        text, position = line
        kind = self._buffer[start]
        if kind == 0x2B:  # + simple string
            return text.decode("utf-8", "replace"), position
        if kind == 0x2D:  # - error
            return RespError(text.decode("utf-8", "replace")), position
        if kind == 0x3A:  # : integer
            return int(text), position
        if kind == 0x24:  # $ bulk string
            size = int(text)
            if size < 0:
                return None if size == -1 else self._bad(text), position
            if size > _MAX_BULK:
                raise RespError("a RESP bulk string too large")
            end = position + size
            if len(self._buffer) < end + 2:
                return None
            return bytes(self._buffer[position:end]), end + 2
        if kind == 0x2A:  # * array
            count = int(text)
            if count < 0:
                return None if count == -1 else self._bad(text), position
            if count > _MAX_BULK:
                raise RespError("a RESP array too large")
            items: list[Reply] = []
            for _ in range(count):
                parsed = self._parse(position)
                if parsed is None:
                    return None
                item, position = parsed
                items.append(item)
            return items, position
        raise RespError(f"not RESP: a reply starting with {bytes([kind])!r}")

    @staticmethod
    def _bad(text: bytes) -> None:
        raise RespError(f"not RESP: a negative length {text!r}")


@attrs.frozen(kw_only=True)
class Address:
    """Where a Redis server is and how to sign in, from a ``redis://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str | None = None
    tls: bool = False
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    def describe(self) -> str:
        """Where, without credentials."""
        return self.unix_path or f"{self.host}:{self.port}"


def parse_redis_url(url: str) -> Address:
    """``redis://[user:password@]host[:port][/db]``, ``rediss://...`` or ``unix://path``.

    Raises:
        ValueError: not such a URL (the message never quotes the password).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected redis://, rediss:// or unix://")
    try:
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            return Address(unix_path=parts.path, username=username, password=password)
        return Address(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            tls=parts.scheme == "rediss",
            username=username,
            password=password,
        )
    except ValueError:
        raise ValueError("a malformed Redis URL (host or port)") from None


class RespConnection:
    """One connection to Redis: commands written, replies and pushes read, in order.

    Not shared between tasks: one task reads (:meth:`read`), and commands are written with
    :meth:`send` from the task that owns it too.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._reader = RespReader()
        self._ready: collections.deque[Reply] = collections.deque()

    @classmethod
    async def open(cls, address: Address, *, name: str | None = None) -> RespConnection:
        """Connect and sign in (AUTH), naming the connection (CLIENT SETNAME) if asked.

        Raises:
            OSError: cannot connect.
            RespError: Redis refused the credentials.
        """
        stream: trio.abc.Stream
        if address.unix_path is not None:
            stream = await trio.open_unix_socket(address.unix_path)
        elif address.tls:
            stream = await trio.open_ssl_over_tcp_stream(
                address.host, address.port, ssl_context=ssl.create_default_context()
            )
        else:
            stream = await trio.open_tcp_stream(address.host, address.port)
        connection = cls(stream)
        try:
            commands: list[Sequence[bytes | str]] = []
            if address.password is not None:
                if address.username is not None:
                    commands.append(("AUTH", address.username, address.password))
                else:
                    commands.append(("AUTH", address.password))
            if name is not None:
                commands.append(("CLIENT", "SETNAME", name))
            if commands:
                await connection.send(b"".join(encode_command(*c) for c in commands))
                for _ in commands:
                    reply = await connection.read()
                    if isinstance(reply, RespError):
                        raise RespError(f"Redis refused the connection's set-up: {reply}")
        except BaseException:
            await connection.aclose()
            raise
        return connection

    async def send(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def read(self) -> Reply:
        """The next reply or push.

        Raises:
            trio.EndOfChannel: Redis closed the connection.
        """
        while not self._ready:
            data = await self._stream.receive_some(65536)
            if not data:
                raise trio.EndOfChannel("Redis closed the connection")
            self._reader.feed(data)
            self._ready.extend(self._reader.replies())
        return self._ready.popleft()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self._stream.aclose()
