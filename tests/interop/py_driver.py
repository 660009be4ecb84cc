"""The python-socketio client (``socketio.AsyncClient``), driven by JSON lines.

Run by ``tests/interop/_peers.py`` as ``python tests/interop/py_driver.py``; the JS twin is
``tests/interop/js/driver.mjs`` and speaks the same protocol. ``tests/interop/README.md`` is
the full reference; in short (protocol 1):

stdin (commands), one JSON object per line, each with an ``id`` chosen by the test::

    {"id":1,"cmd":"connect","socket":"a","url":"http://127.0.0.1:8000","path":"/socket.io",
     "namespace":"/client","auth":{...}|null,"transports":["websocket"]|["polling"]|
     ["polling","websocket"],"reconnection":false,"timeout_ms":5000,"extraHeaders":{...}}
    {"id":2,"cmd":"emit","socket":"a","name":"echo","args":[...]}
    {"id":3,"cmd":"emit_with_ack","socket":"a","name":"ack-me","args":[...],"timeout_ms":5000}
    {"id":4,"cmd":"ack","socket":"a","ack_id":1,"args":[...]}
    {"id":5,"cmd":"disconnect","socket":"a"}
    {"id":6,"cmd":"state","socket":"a"}
    {"id":7,"cmd":"close_all"}

stdout, one JSON object per line:

- first line: ``{"kind":"ready","peer":"python","library":"python-socketio",
  "version":"5.18.1","protocol":1}``
- replies, exactly one per command, in any order: ``{"id":..,"ok":true,...}`` or
  ``{"id":..,"ok":false,"error":".."}``. ``connect`` answers ``{"result":"connect","sid",
  "transport"}`` or ``{"result":"connect_error","message","data"}``; ``emit_with_ack``
  answers ``{"args":[...]}`` (error ``"timeout"`` when no ack came); ``state`` answers
  ``{"connected","sid","transport"}``.
- notices: ``{"kind":"event","socket","name","args","ack_id"}``, ``{"kind":"disconnect",
  "socket","reason"}``, ``{"kind":"connect","socket","sid","transport"}`` and
  ``{"kind":"connect_error","socket","message","data"}`` (only for outcomes after the one
  that answered ``connect``: reconnections), ``{"kind":"upgrade","socket","transport"}``.

Binary values travel as ``{"$base64": ".."}`` both ways (``bytes`` inside this process). EOF
on stdin closes every socket and exits. Each socket name is its own ``AsyncClient`` (one
Engine.IO connection) connected to one namespace.

asyncio is fine here: this is a separate process, the Python peer under test conditions,
never imported by the product or by the Trio tests.

python-socketio limits worked around here:

- A catch-all handler is not told whether the server asked for an ack: its return value
  *is* the ack (sent only when the packet had an id). We learn the id by overriding the
  private ``AsyncClient._handle_event(namespace, id, data)``; ``_check_library`` fails fast
  if that signature ever changes.
- ``AsyncClient`` needs aiohttp for every transport (the ``asyncio-client`` extra);
  ``_check_library`` says so instead of a confusing connect error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import importlib.metadata
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import socketio

PROTOCOL = 1

# Whether the event being dispatched in this task asked for an ack (see _Client).
_ack_requested: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "_ack_requested", default=False
)


class _Client(socketio.AsyncClient):  # type: ignore[misc]
    """``AsyncClient`` that tells its catch-all handler whether an ack was asked for."""

    async def _handle_event(self, namespace: str | None, id: int | None, data: list[Any]) -> None:
        # python-socketio awaits the handler inside this call, in the same task, so the
        # context variable is visible to it (and to nothing else).
        token = _ack_requested.set(id is not None)
        try:
            await super()._handle_event(namespace, id, data)
        finally:
            _ack_requested.reset(token)


class CommandError(Exception):
    """A command the driver refuses; its message is the reply's ``error``."""


def _check_library() -> None:
    params = list(inspect.signature(socketio.AsyncClient._handle_event).parameters)
    if params != ["self", "namespace", "id", "data"]:
        sys.exit(f"py_driver: AsyncClient._handle_event{params} changed; update _Client")
    if importlib.util.find_spec("aiohttp") is None:
        sys.exit(
            "py_driver: aiohttp is not installed, and socketio.AsyncClient needs it for"
            " every transport: install python-socketio[asyncio-client]"
        )


_tasks: set[asyncio.Task[Any]] = set()


def _background(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Start ``coro`` as a task kept alive until done (asyncio holds tasks weakly)."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


def _write(obj: dict[str, Any]) -> None:
    # One line per object, flushed at once; a blocking write keeps the library's order.
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


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


def _error_info(data: tuple[Any, ...]) -> dict[str, Any]:
    # A CONNECT_ERROR packet arrives as one {"message", "data"?} dict; a transport failure as
    # one string (or python-engineio's decoded error body).
    if len(data) == 1 and isinstance(data[0], dict) and "message" in data[0]:
        return {"message": str(data[0]["message"]), "data": to_wire(data[0].get("data"))}
    if not data:
        return {"message": "", "data": None}
    return {"message": str(data[0]), "data": to_wire(list(data[1:]) or None)}


def _need(cmd: dict[str, Any], key: str, kind: type) -> Any:
    value = cmd.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CommandError(f"field {key} must be {kind.__name__}")
    return value


@dataclass(eq=False)
class _Socket:
    name: str
    namespace: str
    client: _Client
    upgrade_mode: bool
    # The first connect outcome is the connect command's reply, written by the handler that
    # learns it (so it precedes the events the server sends next); later ones are notices.
    respond: Callable[[dict[str, Any]], None] | None
    acks: dict[int, asyncio.Future[list[Any] | None]] = field(default_factory=dict)
    next_ack: int = 1
    # Set while the namespace is disconnected (by on_disconnect), cleared by on_connect.
    down: asyncio.Event = field(default_factory=asyncio.Event)

    def transport(self) -> str | None:
        name = self.client.transport()
        return name if isinstance(name, str) else None

    def sid(self) -> str | None:
        sid = self.client.get_sid(self.namespace)
        return sid if isinstance(sid, str) else None

    def drop_acks(self) -> None:
        """An ack cannot outlive its session: release every waiting handler unanswered."""
        for fut in self.acks.values():
            if not fut.done():
                fut.set_result(None)
        self.acks.clear()

    def connected(self) -> bool:
        # Not client.connected: connect() sets it only after its own wait, a moment after
        # the namespace is usable (and the reply written).
        return self.client.eio.state == "connected" and self.namespace in self.client.namespaces

    def first_outcome(self, reply: dict[str, Any]) -> bool:
        """Write ``reply`` as the connect command's reply if none was written yet."""
        respond, self.respond = self.respond, None
        if respond is None:
            return False
        respond({"ok": True, **reply})
        return True

    async def close(self) -> None:
        """Disconnect, stop reconnecting, release waiting handlers.

        Returns once the library reported the disconnect: python-engineio then waits for its
        read loop, which over polling means the long-poll in flight (up to the server's
        pingInterval), so that part of the teardown goes on in the background.
        """
        self.respond = None
        self.drop_acks()
        was_connected = self.connected()
        shutdown = _background(self.client.shutdown())
        if was_connected:
            down = asyncio.ensure_future(self.down.wait())
            await asyncio.wait([shutdown, down], return_when=asyncio.FIRST_COMPLETED)
            down.cancel()
        else:
            await shutdown

    def install_handlers(self) -> None:
        ns = self.namespace

        async def on_connect() -> None:
            self.down.clear()
            info = {"sid": self.sid(), "transport": self.transport()}
            if not self.first_outcome({"result": "connect", **info}):
                _write({"kind": "connect", "socket": self.name, **info})
            if self.upgrade_mode and info["transport"] == "websocket":
                # python-engineio upgrades inside connect(), before the namespace connects;
                # reported after the connect like the JS client's later upgrade.
                _write({"kind": "upgrade", "socket": self.name, "transport": "websocket"})

        async def on_connect_error(*data: Any) -> None:
            info = _error_info(data)
            if not self.first_outcome({"result": "connect_error", **info}):
                _write({"kind": "connect_error", "socket": self.name, **info})

        async def on_disconnect(reason: str = "") -> None:
            self.down.set()
            self.drop_acks()
            _write({"kind": "disconnect", "socket": self.name, "reason": str(reason)})

        async def on_any(event: str, *args: Any) -> Any:
            if not _ack_requested.get():
                _write(
                    {
                        "kind": "event",
                        "socket": self.name,
                        "name": event,
                        "args": to_wire(args),
                        "ack_id": None,
                    }
                )
                return None
            ack_id = self.next_ack
            self.next_ack += 1
            fut: asyncio.Future[list[Any] | None] = asyncio.get_running_loop().create_future()
            self.acks[ack_id] = fut
            _write(
                {
                    "kind": "event",
                    "socket": self.name,
                    "name": event,
                    "args": to_wire(args),
                    "ack_id": ack_id,
                }
            )
            answer = await fut
            # A tuple is sent as that many arguments; None means the session ended first.
            return None if answer is None else tuple(answer)

        self.client.on("connect", on_connect, namespace=ns)
        self.client.on("connect_error", on_connect_error, namespace=ns)
        self.client.on("disconnect", on_disconnect, namespace=ns)
        self.client.on("*", on_any, namespace=ns)


class Driver:
    def __init__(self) -> None:
        self.sockets: dict[str, _Socket] = {}

    def _socket(self, cmd: dict[str, Any]) -> _Socket:
        name = _need(cmd, "socket", str)
        sock = self.sockets.get(name)
        if sock is None:
            raise CommandError(f"unknown socket {json.dumps(name)}")
        return sock

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any] | None:
        """Run one command; return its reply's fields, or None if it already replied."""
        match cmd.get("cmd"):
            case "connect":
                return await self.connect(cmd)
            case "emit":
                sock = self._socket(cmd)
                args = from_wire(_need(cmd, "args", list))
                await sock.client.emit(
                    _need(cmd, "name", str), tuple(args), namespace=sock.namespace
                )
                return {}
            case "emit_with_ack":
                return await self.emit_with_ack(cmd)
            case "ack":
                sock = self._socket(cmd)
                ack_id = _need(cmd, "ack_id", int)
                fut = sock.acks.pop(ack_id, None)
                if fut is None:
                    raise CommandError(f"unknown ack_id {ack_id}")
                fut.set_result(from_wire(_need(cmd, "args", list)))
                return {}
            case "disconnect":
                await self._socket(cmd).close()
                return {}
            case "state":
                sock = self._socket(cmd)
                return {
                    "connected": sock.connected(),
                    "sid": sock.sid(),
                    "transport": sock.transport(),
                }
            case "close_all":
                await self.close_all()
                return {}
            case other:
                raise CommandError(f"unknown cmd {json.dumps(other)}")

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any] | None:
        name = _need(cmd, "socket", str)
        url = _need(cmd, "url", str)
        transports = cmd.get("transports") or ["polling", "websocket"]
        timeout = float(cmd.get("timeout_ms", 5000)) / 1000
        old = self.sockets.pop(name, None)
        if old is not None:
            if old.connected():
                self.sockets[name] = old
                raise CommandError(f"socket {json.dumps(name)} is connected")
            await old.close()
        client = _Client(
            reconnection=bool(cmd.get("reconnection", False)),
            handle_sigint=False,
            request_timeout=timeout,
        )
        sock = _Socket(
            name=name,
            namespace=cmd.get("namespace") or "/",
            client=client,
            upgrade_mode=transports[:1] == ["polling"] and "websocket" in transports,
            respond=lambda reply: _write({**reply, "id": cmd.get("id")}),
        )
        sock.install_handlers()
        self.sockets[name] = sock
        try:
            # wait_timeout bounds the namespace CONNECT; the outer bound the whole handshake.
            async with asyncio.timeout(timeout):
                await client.connect(
                    url,
                    headers=cmd.get("extraHeaders") or {},
                    auth=cmd.get("auth"),
                    transports=transports,
                    namespaces=[sock.namespace],
                    socketio_path=cmd.get("path") or "/socket.io",
                    wait=True,
                    wait_timeout=timeout,
                )
        except (TimeoutError, socketio.exceptions.ConnectionError):
            if sock.respond is not None:  # neither connect nor connect_error came
                await sock.close()
                raise CommandError("timeout") from None
        return None  # the connect or connect_error handler replied

    async def emit_with_ack(self, cmd: dict[str, Any]) -> dict[str, Any]:
        sock = self._socket(cmd)
        args = from_wire(_need(cmd, "args", list))
        timeout = float(cmd.get("timeout_ms", 5000)) / 1000
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def on_ack(*ack_args: Any) -> None:
            # The callback gets the ack's arguments as they came: unlike call(), no
            # unpacking of a single argument and no None for zero arguments.
            if not fut.done():
                fut.set_result(list(ack_args))

        await sock.client.emit(
            _need(cmd, "name", str), tuple(args), namespace=sock.namespace, callback=on_ack
        )
        try:
            async with asyncio.timeout(timeout):
                return {"args": to_wire(await fut)}
        except TimeoutError:
            raise CommandError("timeout") from None

    async def close_all(self) -> None:
        socks = list(self.sockets.values())
        self.sockets.clear()
        for sock in socks:
            await sock.close()

    async def run_command(self, line: bytes) -> None:
        try:
            cmd = json.loads(line)
        except ValueError as exc:
            _write({"id": None, "ok": False, "error": f"bad JSON: {exc}"})
            return
        if not isinstance(cmd, dict):
            _write({"id": None, "ok": False, "error": "a command is a JSON object"})
            return
        try:
            fields = await self.handle(cmd)
            if fields is None:
                return
            reply = {"ok": True, **fields}
        except CommandError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # the boundary: any library failure becomes the reply
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        _write({**reply, "id": cmd.get("id")})


async def main() -> None:
    _check_library()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    driver = Driver()
    _write(
        {
            "kind": "ready",
            "peer": "python",
            "library": "python-socketio",
            "version": importlib.metadata.version("python-socketio"),
            "protocol": PROTOCOL,
        }
    )
    while line := await reader.readline():
        if line.strip():
            _background(driver.run_command(line))
    # EOF: the test is done with us. Close every socket (each returns once disconnected),
    # give the teardowns a moment (over polling, python-engineio waits out the long-poll in
    # flight), and leave well inside the 2 s the wrapper allows; asyncio.run cancels the rest.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await driver.close_all()
    if _tasks:
        await asyncio.wait(list(_tasks), timeout=0.5)


if __name__ == "__main__":
    asyncio.run(main())
