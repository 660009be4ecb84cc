"""Real Socket.IO clients for Trio tests: the official JS client and python-socketio's.

Each peer is a driver process (``js/driver.mjs`` under node, ``py_driver.py`` under this
interpreter) spoken to in JSON lines; ``README.md`` beside this file is the protocol. This
module starts one, routes its replies and notices, and stops it::

    async with open_peer("js") as peer:
        result = await peer.connect("a", url, "/client", {"token": "t"}, WEBSOCKET)
        assert result.connected
        hello = await peer.next_event("a", "hello")
        assert await peer.emit_with_ack("a", "ack-me", 1, b"\\x00") == [1, b"\\x00"]

Binary values are ``bytes`` on this side; the drivers turn them into the library's own
binary type (Buffer, bytes). Every wait is bounded; a driver that dies fails every waiter
with a ``PeerError`` quoting the end of its stderr. ``open_peer("js")`` skips the test when
node is not installed, unless ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from subprocess import PIPE
from typing import Any, Final, Literal, NoReturn

import attrs
import pytest
import trio

__all__ = [
    "CLIENT_DISCONNECT",
    "PEER_KINDS",
    "POLLING",
    "POLLING_UPGRADE",
    "SERVER_DISCONNECT",
    "TRANSPORT_MODES",
    "WEBSOCKET",
    "ConnectResult",
    "Notice",
    "NoticeKind",
    "Peer",
    "PeerError",
    "PeerKind",
    "SocketState",
    "open_peer",
]

PeerKind = Literal["js", "python"]
NoticeKind = Literal["event", "disconnect", "connect_error", "connect", "upgrade"]

PEER_KINDS: Final[tuple[PeerKind, ...]] = ("js", "python")
WEBSOCKET: Final = ("websocket",)
POLLING: Final = ("polling",)
POLLING_UPGRADE: Final = ("polling", "websocket")
#: The three ways a client reaches a server, for ``pytest.mark.parametrize``.
TRANSPORT_MODES: Final[Mapping[str, tuple[str, ...]]] = {
    "websocket": WEBSOCKET,
    "polling": POLLING,
    "upgrade": POLLING_UPGRADE,
}

#: ``Notice.reason`` for the same two disconnects, in each library's words (the other reasons,
#: transport close/error and ping timeout, differ more: see README.md).
SERVER_DISCONNECT: Final[Mapping[PeerKind, str]] = {
    "js": "io server disconnect",
    "python": "server disconnect",
}
CLIENT_DISCONNECT: Final[Mapping[PeerKind, str]] = {
    "js": "io client disconnect",
    "python": "client disconnect",
}

PROTOCOL: Final = 1
HERE: Final = Path(__file__).resolve().parent
JS_DIR: Final = HERE / "js"

READY_TIMEOUT: Final = 15.0  # node or python start, import the library, print "ready"
COMMAND_TIMEOUT: Final = 5.0  # a command the driver answers without waiting on the server
REPLY_SLACK: Final = 2.0  # over a driver-side timeout, for the reply to reach us
EXIT_GRACE: Final = 2.0  # after EOF on stdin, before the driver is terminated
STDERR_TAIL: Final = 16_384


class PeerError(Exception):
    """The driver refused a command (``ok: false``), or died, or broke the protocol."""


@attrs.frozen(kw_only=True)
class ConnectResult:
    """The outcome of ``connect``: connected (``sid``, ``transport``) or refused."""

    connected: bool
    sid: str | None = None
    transport: str | None = None
    #: For a refusal: ``connect_error``'s message and data (the server's ``err.data``).
    message: str | None = None
    data: Any = None


@attrs.frozen(kw_only=True)
class SocketState:
    connected: bool
    sid: str | None
    transport: str | None


@attrs.frozen(kw_only=True)
class Notice:
    """Something the server did, as the client library reported it.

    ``event``: ``name``, ``args`` and ``ack_id`` (not None when the server asked for an ack:
    answer it with ``Peer.ack``). ``disconnect``: ``reason``, in the library's own words.
    ``connect`` / ``connect_error``: a reconnection's outcome (the first outcome is
    ``connect``'s result, never a notice). ``upgrade``: the new ``transport``.
    """

    kind: NoticeKind
    socket: str
    name: str | None = None
    args: list[Any] = attrs.field(factory=list)
    ack_id: int | None = None
    reason: str | None = None
    sid: str | None = None
    transport: str | None = None
    message: str | None = None
    data: Any = None


def to_wire(value: Any) -> Any:
    """Replace every bytes-like value with ``{"$base64": ...}``, recursively."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


def from_wire(value: Any) -> Any:
    """Replace every ``{"$base64": ...}`` with bytes, recursively."""
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$base64"), str):
            return base64.b64decode(value["$base64"], validate=True)
        return {k: from_wire(v) for k, v in value.items()}
    return value


@attrs.define(eq=False)
class _Waiter:
    done: trio.Event = attrs.field(factory=trio.Event)
    reply: dict[str, Any] | None = None


class Peer:
    """One driver process and the client sockets it holds, named by the test.

    Made by ``open_peer``. Methods may be called from several tasks at once; replies are
    matched to commands by id, notices are buffered per socket until ``next_event`` takes
    them, so waiting for one never loses another.
    """

    def __init__(self, kind: PeerKind, process: trio.Process) -> None:
        self.kind: Final = kind
        #: The library's name and version, from the driver's ``ready`` line.
        self.library = ""
        self.version = ""
        self._process = process
        self._send_lock = trio.Lock()
        self._next_id = 1
        self._waiters: dict[int, _Waiter] = {}
        self._notices: dict[str, list[Notice]] = {}
        self._arrived = trio.Event()  # set and replaced on every notice (and on death)
        self._ready = trio.Event()
        self._dead: str | None = None
        self._stderr = bytearray()
        self._stderr_closed = trio.Event()

    # ---- commands

    async def connect(
        self,
        socket: str,
        url: str,
        namespace: str = "/",
        auth: Any = None,
        transports: Sequence[str] = POLLING_UPGRADE,
        *,
        path: str = "/socket.io",
        reconnection: bool = False,
        timeout: float = 5.0,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ConnectResult:
        """Open socket ``socket`` (a new connection) to ``namespace`` at ``url``.

        Returns once the server accepted or refused the namespace. A refusal is a result,
        not an error; ``PeerError("timeout")`` means neither came within ``timeout``. The
        name may be reused once its socket is disconnected. ``auth=None`` sends no payload.
        """
        reply = await self._request(
            {
                "cmd": "connect",
                "socket": socket,
                "url": url,
                "path": path,
                "namespace": namespace,
                "auth": to_wire(auth),
                "transports": list(transports),
                "reconnection": reconnection,
                "timeout_ms": round(timeout * 1000),
                "extraHeaders": dict(extra_headers or {}),
            },
            reply_within=timeout + REPLY_SLACK,
        )
        if reply["result"] == "connect":
            return ConnectResult(connected=True, sid=reply["sid"], transport=reply["transport"])
        return ConnectResult(
            connected=False, message=reply["message"], data=from_wire(reply["data"])
        )

    async def emit(self, socket: str, name: str, *args: Any) -> None:
        """Emit an event; returns once the library took it (not once the server got it)."""
        await self._request({"cmd": "emit", "socket": socket, "name": name, "args": to_wire(args)})

    async def emit_with_ack(
        self,
        socket: str,
        name: str,
        *args: Any,
        timeout: float = 5.0,
    ) -> list[Any]:
        """Emit an event asking for an ack; return the ack's arguments.

        Raises ``PeerError("timeout")`` when the server did not ack within ``timeout``.
        """
        reply = await self._request(
            {
                "cmd": "emit_with_ack",
                "socket": socket,
                "name": name,
                "args": to_wire(args),
                "timeout_ms": round(timeout * 1000),
            },
            reply_within=timeout + REPLY_SLACK,
        )
        result: list[Any] = from_wire(reply["args"])
        return result

    async def ack(self, socket: str, ack_id: int, *args: Any) -> None:
        """Answer the server emit whose notice carried ``ack_id``, with ``args``.

        An ack id is forgotten when its socket disconnects: acking it then fails.
        """
        await self._request(
            {"cmd": "ack", "socket": socket, "ack_id": ack_id, "args": to_wire(args)}
        )

    async def disconnect(self, socket: str) -> None:
        """Disconnect ``socket`` (and stop it reconnecting). Its notices stay buffered."""
        await self._request({"cmd": "disconnect", "socket": socket})

    async def state(self, socket: str) -> SocketState:
        reply = await self._request({"cmd": "state", "socket": socket})
        return SocketState(
            connected=reply["connected"], sid=reply["sid"], transport=reply["transport"]
        )

    async def close_all(self) -> None:
        """Disconnect every socket of this peer and forget their names."""
        await self._request({"cmd": "close_all"})

    # ---- notices

    async def next_event(
        self,
        socket: str,
        name: str | None = None,
        *,
        kind: NoticeKind = "event",
        timeout: float = 5.0,
    ) -> Notice:
        """Take the oldest buffered notice of ``kind`` (and event ``name``) on ``socket``.

        Waits up to ``timeout`` for one (``trio.TooSlowError``, which lists what is
        buffered). Notices that do not match stay buffered, in order.
        """
        if name is not None and kind != "event":
            raise ValueError("name filters events only")
        buffer = self._notices.setdefault(socket, [])
        try:
            with trio.fail_after(timeout):
                while True:
                    for i, notice in enumerate(buffer):
                        if notice.kind == kind and (name is None or notice.name == name):
                            del buffer[i]
                            return notice
                    self._raise_if_dead()
                    await self._arrived.wait()
        except trio.TooSlowError:
            what = f"{kind} {name!r}" if name is not None else kind
            raise trio.TooSlowError(
                f"{self.kind} peer: no {what} on socket {socket!r} within {timeout} s;"
                f" buffered: {buffer!r}"
            ) from None

    def buffered(self, socket: str) -> list[Notice]:
        """The notices of ``socket`` not taken yet, oldest first (a copy)."""
        return list(self._notices.get(socket, []))

    @property
    def stderr(self) -> str:
        """The end of the driver's stderr (the last 16 KiB)."""
        return self._stderr.decode("utf-8", "replace")

    # ---- plumbing

    async def _request(
        self, command: dict[str, Any], *, reply_within: float = COMMAND_TIMEOUT
    ) -> dict[str, Any]:
        self._raise_if_dead()
        command_id = self._next_id
        self._next_id += 1
        waiter = self._waiters[command_id] = _Waiter()
        line = json.dumps({"id": command_id, **command}, separators=(",", ":")) + "\n"
        try:
            with trio.fail_after(reply_within):
                async with self._send_lock:
                    await self._stdin().send_all(line.encode())
                await waiter.done.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerError(self._death_message(f"cannot write to the driver: {exc!r}")) from exc
        finally:
            del self._waiters[command_id]
        reply = waiter.reply
        if reply is None:
            self._raise_if_dead()
            raise AssertionError("unreachable: a waiter woke without a reply")
        if not reply.get("ok"):
            raise PeerError(f"{self.kind} peer: {command['cmd']}: {reply.get('error')}")
        return reply

    def _stdin(self) -> trio.abc.SendStream:
        assert self._process.stdin is not None
        return self._process.stdin

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise TypeError("not an object")
        except (ValueError, TypeError):
            self._die(f"the driver wrote a line that is not a JSON object: {line[:500]!r}")
            return
        if "ok" in message:
            command_id = message.get("id")
            waiter = self._waiters.get(command_id) if isinstance(command_id, int) else None
            if waiter is None:
                if command_id is None:
                    self._die(f"the driver could not read a command: {message.get('error')}")
                return  # the command timed out on our side; its late reply goes nowhere
            waiter.reply = message
            waiter.done.set()
            return
        kind = message.get("kind")
        if kind == "ready":
            self.library = str(message.get("library"))
            self.version = str(message.get("version"))
            if message.get("protocol") != PROTOCOL:
                self._die(f"the driver speaks protocol {message.get('protocol')}, not {PROTOCOL}")
                return
            self._ready.set()
            return
        if kind not in ("event", "disconnect", "connect_error", "connect", "upgrade"):
            self._die(f"the driver wrote an unknown line: {message!r}")
            return
        notice = Notice(
            kind=kind,
            socket=message["socket"],
            name=message.get("name"),
            args=from_wire(message.get("args", [])),
            ack_id=message.get("ack_id"),
            reason=message.get("reason"),
            sid=message.get("sid"),
            transport=message.get("transport"),
            message=message.get("message"),
            data=from_wire(message.get("data")),
        )
        self._notices.setdefault(notice.socket, []).append(notice)
        self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    def _die(self, why: str) -> None:
        """Record the first reason the driver is unusable and wake every waiter."""
        if self._dead is None:
            self._dead = why
        for waiter in self._waiters.values():
            waiter.done.set()
        self._ready.set()
        self._wake()

    def _raise_if_dead(self) -> None:
        if self._dead is not None:
            raise PeerError(self._death_message(self._dead))

    def _death_message(self, why: str) -> str:
        code = self._process.returncode
        tail = self.stderr.strip()[-4000:]
        return f"{self.kind} driver: {why} (exit code {code})" + (
            f"\n--- driver stderr ---\n{tail}" if tail else ""
        )

    async def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        pending = bytearray()
        try:
            async for chunk in self._process.stdout:
                pending += chunk
                while (end := pending.find(b"\n")) >= 0:
                    line = bytes(pending[:end])
                    del pending[: end + 1]
                    if line.strip():
                        self._dispatch(line)
            # EOF: let the exit code and the end of stderr in before failing the waiters.
            with trio.move_on_after(1.0):
                await self._stderr_closed.wait()
                await self._process.wait()
        finally:
            self._die("the driver closed its stdout")

    async def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        try:
            async for chunk in self._process.stderr:
                self._stderr += chunk
                del self._stderr[:-STDERR_TAIL]
        finally:
            self._stderr_closed.set()

    async def _wait_ready(self) -> None:
        with trio.fail_after(READY_TIMEOUT):
            await self._ready.wait()
        self._raise_if_dead()

    async def _stop(self) -> None:
        """EOF on stdin (the driver closes its sockets and exits), then terminate, then kill."""
        process = self._process
        with (
            trio.CancelScope(shield=True),
            suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await self._stdin().aclose()
        for stop in (None, process.terminate, process.kill):
            if stop is not None:
                stop()
            with trio.move_on_after(EXIT_GRACE, shield=True):
                await process.wait()
            if process.returncode is not None:
                return


def _driver_argv(kind: PeerKind) -> list[str]:
    if kind == "python":
        return [sys.executable, str(HERE / "py_driver.py")]
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not installed, and CI=true requires the JS peer", pytrace=False)
        pytest.skip("node is not installed (the JS peer is required when CI=true)")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        raise PeerError(
            "socket.io-client is not installed: run scripts/test, or"
            " npm ci --prefix tests/interop/js"
        )
    return [node, str(JS_DIR / "driver.mjs")]


def _reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the one exception of ``group`` as itself, as if no nursery was around it.

    The test body runs inside the peer's nursery, so what it raises comes out grouped; a
    lone AssertionError, PeerError, Skipped or Cancelled is more useful bare.
    """
    if len(group.exceptions) != 1 or isinstance(group.exceptions[0], BaseExceptionGroup):
        raise group
    exc = group.exceptions[0]
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context  # not the group we are unwrapping
        del exc, context


@asynccontextmanager
async def open_peer(kind: PeerKind) -> AsyncIterator[Peer]:
    """Start a ``kind`` driver; on exit close its sockets and stop it (terminated after 2 s).

    Skips the test when ``kind`` is ``"js"`` and node is missing, unless ``CI=true``.
    """
    argv = _driver_argv(kind)
    process = await trio.lowlevel.open_process(argv, stdin=PIPE, stdout=PIPE, stderr=PIPE)
    peer = Peer(kind, process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer._read_stdout)
            nursery.start_soon(peer._read_stderr)
            try:
                await peer._wait_ready()
                yield peer
            finally:
                await peer._stop()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _reraise_single(group)
