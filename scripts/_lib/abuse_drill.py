"""The abuse drill: hostile input against a real server while well-behaved clients chat.

Starts ``python -m replyhq_trio serve`` on SQLite in a temporary directory, creates an app
and connects GOOD clients to ``/client``, each its own device and its own loopback source
address (127.0.1.N), so that per-IP limits never touch them. Each sends one
``message:send`` every 2 s and times the ack and its own ``message:new`` echo.

Phases: quiet (the good clients alone), hostile (HOSTILE connections from 127.0.0.1 and
127.0.2.N run attacks in rounds: frames of protocol/vectors mutated, over WebSocket and
polling; oversized payloads; 11 attachments; 10,000 levels of JSON; event floods;
connection floods; half-open handshakes; slowloris), after (the good clients alone again,
then the server's RSS is polled until it is back within 20 % of the quiet level). Then
every acked message is looked up through REST (stored exactly once), the server gets
SIGTERM, and its log is scanned for errors and tracebacks.

PASS needs: the server never exited before SIGTERM, no error/critical/Traceback line in
its log, /healthz and /readyz 200 at the end, no good message lost, every acked message
stored exactly once, no good client refused or disconnected, RSS after / quiet <= 1.20,
exit 0 within 15 s of SIGTERM. Exit code 0 on PASS, 1 on FAIL.

Every client is hand-written here on raw Trio streams (the project's ``open_client`` cannot
bind a local address): Engine.IO v4 over a direct WebSocket with the sans-IO core's framing
and Socket.IO decoder, and HTTP/1.1 through h11. The attackers run in a second process (this
script with ``--hostile-worker``), so that their CPU never delays the event loop on which
the good clients' latencies are measured; the report gives both processes' worst loop lag.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import errno
import functools
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import orjson
import trio

from replyhq_trio.sansio import ProtocolConfig, ProtocolError
from replyhq_trio.sansio.socketio import SocketPacketType, decode_fields
from replyhq_trio.sansio.websocket import (
    CloseReceived,
    FrameDecoder,
    Opcode,
    PingReceived,
    Role,
    encode_frame,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "protocol" / "vectors"
DEFAULT_JSON = ROOT / ".artifacts" / "abuse-drill.json"
KEPT_LOG = ROOT / ".artifacts" / "abuse-drill-server.log"

EIO_PATH = "/v1/socket.io/"
NAMESPACE = "/client"
MAX_PAYLOAD = 1_000_000
#: The decoder's limits: the server's defaults (what it sends stays within them).
LIMITS = ProtocolConfig()

SEND_INTERVAL = 2.0  # a good client's message:send cadence, seconds
ACK_DEADLINE = 15.0  # a good message not acked by then is lost
ECHO_GRACE = 10.0  # at the end: how long acked messages may wait for their message:new
RSS_LIMIT = 1.20  # RSS after / quiet
SETTLE_LIMIT = 30.0  # seconds of RSS polling after the after-phase
EXIT_LIMIT = 15.0  # seconds from SIGTERM to exit (grace 10 s + close)
STOP_WAIT = 30.0  # then SIGKILL

HEALTH_IP = "127.0.3.1"
#: Where the hostile connections come from. The server allows 10 /client CONNECTs a
#: minute per IP: connection floods spend 127.0.0.1's, event floods get addresses of their
#: own (so that some of them get far enough to flood), the rest share four more.
CONNECT_FLOOD_IPS = ("127.0.0.1",)
EVENT_FLOOD_IPS = ("127.0.2.11", "127.0.2.12", "127.0.2.13", "127.0.2.14")
HOSTILE_IPS = ("127.0.2.1", "127.0.2.2", "127.0.2.3", "127.0.2.4")

Json = dict[str, Any]
PHASES = ("quiet", "hostile", "after")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def good_ip(index: int) -> str:
    """Each good client's own source address: 127.0.1.1-254, then 127.1.x.y."""
    if index < 254:
        return f"127.0.1.{index + 1}"
    return f"127.1.{index // 254}.{index % 254 + 1}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def read_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def read_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency_summary(seconds: Sequence[float]) -> Json:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "count": len(seconds),
        "p50_ms": ms(percentile(seconds, 0.50)),
        "p95_ms": ms(percentile(seconds, 0.95)),
        "max_ms": ms(max(seconds) if seconds else None),
    }


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


# --- HTTP -----------------------------------------------------------------------------------


class ServerClosed(Exception):
    """The server closed the connection before it answered."""


class Refused(Exception):
    """An HTTP answer other than the one expected (a WebSocket upgrade refused, a 429)."""

    def __init__(self, what: str, status: int) -> None:
        super().__init__(f"{what}: HTTP {status}")
        self.what = what
        self.status = status


def outcome(exc: BaseException) -> str:
    """What an exception says about the server's reaction, as a short counter key."""
    found = [leaf for leaf in leaves(exc) if not isinstance(leaf, trio.Cancelled)]
    leaf = found[0] if found else exc
    if isinstance(leaf, Refused):
        return f"{leaf.what} http {leaf.status}"
    if isinstance(leaf, ServerClosed):
        return f"end: closed by server ({leaf})"
    if isinstance(leaf, trio.BrokenResourceError | ConnectionResetError | BrokenPipeError):
        return "end: reset by server"
    if isinstance(leaf, trio.TooSlowError):
        return "timeout: the server did not answer in time"
    if isinstance(leaf, ConnectionRefusedError):
        return "TCP connect refused"
    if isinstance(leaf, OSError):
        if leaf.errno is None:
            return f"OS error: {leaf}"[:100]
        return f"OS error {errno.errorcode.get(leaf.errno, leaf.errno)}"
    if isinstance(leaf, ProtocolError | h11.ProtocolError):
        return f"SERVER SENT INVALID DATA: {leaf}"[:120]
    return f"unexpected {type(leaf).__name__}: {leaf}"[:120]


@dataclass
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def connect(port: int, local: str) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port, local_address=local)


async def http(
    port: int,
    local: str,
    method: str,
    target: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Response:
    """One HTTP/1.1 request on a new connection from ``local``; raises on timeout."""
    with trio.fail_after(timeout):
        stream = await connect(port, local)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            all_headers = [("Host", f"127.0.0.1:{port}"), ("Connection", "close"), *headers]
            if body is not None:
                all_headers.append(("Content-Length", str(len(body))))
            out = conn.send(h11.Request(method=method, target=target, headers=all_headers))
            wire = out or b""
            if body:
                wire += conn.send(h11.Data(data=body)) or b""
            wire += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(wire)
            status = 0
            chunks: list[bytes] = []
            eof = False
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError:
                    if eof:  # h11 on a connection closed before the answer ended
                        raise ServerClosed("closed in the middle of its answer") from None
                    raise
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data and status == 0:
                        raise ServerClosed("no HTTP answer")
                    eof = not data
                    conn.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif event is h11.PAUSED or isinstance(
                    event, h11.EndOfMessage | h11.ConnectionClosed
                ):
                    break
            if status == 0:
                raise ServerClosed("no HTTP answer")
            return Response(status, b"".join(chunks))


async def read_head(stream: trio.SocketStream, data: bytes = b"") -> tuple[int, bytes]:
    """Read an HTTP response head: its status and the bytes after it."""
    buffer = bytearray(data)
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > 65536:
            raise ServerClosed("an HTTP head over 64 KiB")
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ServerClosed("no HTTP answer" if not buffer else "half an HTTP answer")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    return int(parts[1]), rest


def device_headers(app: Json, device: str) -> list[tuple[str, str]]:
    return [
        ("X-App-Id", app["app_id"]),
        ("X-Device-Id", device),
        ("X-Api-Key", app["api_key"]),
        ("Content-Type", "application/json"),
    ]


# --- WebSocket, Engine.IO and Socket.IO -----------------------------------------------------


class RawWS:
    """A client WebSocket on a stream: masked frames out, the core's decoder in."""

    def __init__(self, stream: trio.SocketStream, rest: bytes) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(role=Role.CLIENT, max_message_size=4 * MAX_PAYLOAD)
        self.decoder.receive_data(rest)
        self.lock = trio.Lock()
        self.close_code: int | None = None
        self.eof = False
        self.reset = False

    @property
    def closed(self) -> bool:
        return self.close_code is not None or self.eof or self.reset

    async def send_raw(self, data: bytes) -> None:
        async with self.lock:
            await self.stream.send_all(data)

    async def send(self, opcode: Opcode, payload: bytes, *, fin: bool = True) -> None:
        await self.send_raw(encode_frame(opcode, payload, fin=fin, mask=os.urandom(4)))

    async def send_text(self, text: str) -> None:
        await self.send(Opcode.TEXT, text.encode())

    async def post(self, opcode: Opcode, payload: bytes, *, fin: bool = True) -> bool:
        """:meth:`send`, False instead of an exception when the connection is gone."""
        return await self.post_raw(encode_frame(opcode, payload, fin=fin, mask=os.urandom(4)))

    async def post_raw(self, data: bytes) -> bool:
        try:
            await self.send_raw(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if not self.closed:
                self.reset = True
            return False
        return True

    async def receive(self) -> str | bytes | None:
        """The next message; None once the server closed (close frame or EOF)."""
        while True:
            for event in self.decoder.events():
                if isinstance(event, str | bytes):
                    return event
                if isinstance(event, PingReceived):
                    await self.send(Opcode.PONG, event.payload)
                elif isinstance(event, CloseReceived):
                    self.close_code = event.code
                    return None
            if self.closed:
                return None
            data = await self.stream.receive_some(65536)
            if not data:
                self.eof = True
                return None
            self.decoder.receive_data(data)

    async def aclose(self) -> None:
        try:
            if not self.closed:
                with (
                    trio.move_on_after(0.5),
                    contextlib.suppress(
                        trio.BrokenResourceError, trio.ClosedResourceError, OSError
                    ),
                ):
                    await self.send(Opcode.CLOSE, struct.pack("!H", 1000))
        finally:
            await trio.aclose_forcefully(self.stream)


async def open_ws(port: int, local: str, timeout: float = 10.0) -> RawWS:
    """A WebSocket to the Engine.IO endpoint from ``local``; raises Refused unless 101."""
    with trio.fail_after(timeout):
        stream = await connect(port, local)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {EIO_PATH}?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await stream.send_all(request.encode())
        with trio.fail_after(timeout):
            status, rest = await read_head(stream)
        if status != 101:
            raise Refused("upgrade", status)
        return RawWS(stream, rest)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


class Pending:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: list[Any] | None = None


class Sio:
    """Engine.IO v4 and Socket.IO on ``/client`` over a :class:`RawWS`.

    :meth:`run_reader` answers pings, resolves acks and hands events to ``on_event``;
    with ``notes``, it also counts what the server said (CONNECT_ERROR codes, error
    acks and events, DISCONNECT) for the hostile side's report.
    """

    def __init__(
        self,
        ws: RawWS,
        *,
        on_event: Callable[[str, list[Any]], None] | None = None,
        notes: Counter[str] | None = None,
    ) -> None:
        self.ws = ws
        self.on_event = on_event
        self.notes = notes
        self.acks: dict[int, Pending] = {}
        self.next_id = 1
        self.connect_done = trio.Event()
        self.connect_error: str | None = None
        self.disconnected = trio.Event()
        self.ended = trio.Event()
        self.end_reason = ""

    def _note(self, what: str, count: int = 1) -> None:
        if self.notes is not None:
            self.notes[what] += count

    async def open(self, timeout: float = 10.0) -> Json:
        with trio.fail_after(timeout):
            first = await self.ws.receive()
        if not isinstance(first, str) or not first.startswith("0"):
            raise ServerClosed(f"no Engine.IO open packet ({first!r:.40})")
        packet: Json = orjson.loads(first[1:])
        return packet

    async def run_reader(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message is None:
                    if self.ws.close_code is not None:
                        self.end_reason = f"ws close {self.ws.close_code}"
                    else:
                        self.end_reason = "closed by server (EOF)"
                    return
                if isinstance(message, bytes):
                    continue
                if message == "2":
                    await self.ws.send_text("3")
                elif message[:1] == "1":
                    self.end_reason = "Engine.IO close packet"
                    return
                elif message[:1] == "4":
                    self._packet(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if not self.ws.closed:
                self.ws.reset = True
            self.end_reason = self.end_reason or "connection reset"
        finally:
            self._end()

    def _end(self) -> None:
        self.ended.set()
        if not self.connect_done.is_set():
            self.connect_error = self.connect_error or f"connection ended ({self.end_reason})"
            self.connect_done.set()
        for pending in self.acks.values():
            pending.done.set()

    def _packet(self, text: str) -> None:
        kind, _namespace, data, ack_id, _count = decode_fields(text, LIMITS, 1)
        if kind is SocketPacketType.EVENT and isinstance(data, list) and data:
            name = str(data[0])
            args = data[1:]
            if name == "error" and args and isinstance(args[0], dict):
                self._note(f"error event {args[0].get('code')}")
            else:
                self._note(f"event {name}")
            if self.on_event is not None:
                self.on_event(name, args)
        elif kind is SocketPacketType.ACK and ack_id is not None:
            pending = self.acks.pop(ack_id, None)
            if pending is not None:
                pending.reply = data if isinstance(data, list) else [data]
                pending.done.set()
                return
            ack = data[0] if isinstance(data, list) and data else data
            if isinstance(ack, dict) and ack.get("success") is True:
                self._note("ack success")
            elif isinstance(ack, dict):
                self._note(f"ack error {ack.get('error')}")
            else:
                self._note("ack (other)")
        elif kind is SocketPacketType.CONNECT:
            self._note("CONNECT accepted")
            self.connect_done.set()
        elif kind is SocketPacketType.CONNECT_ERROR:
            message = data.get("message") if isinstance(data, dict) else data
            self.connect_error = str(message)
            self._note(f"CONNECT_ERROR {message}")
            self.connect_done.set()
        elif kind is SocketPacketType.DISCONNECT:
            self._note("DISCONNECT by server")
            self.end_reason = "DISCONNECT by server"
            self.disconnected.set()

    async def connect(self, auth: Json, timeout: float = 10.0) -> str | None:
        """CONNECT ``/client``: None when accepted, else why not."""
        await self.ws.send_text(f"40{NAMESPACE}," + orjson.dumps(auth).decode())
        with trio.move_on_after(timeout):
            await self.connect_done.wait()
        if not self.connect_done.is_set():
            return f"no CONNECT reply within {timeout:.0f} s"
        return self.connect_error

    async def emit(self, event: str, payload: Any, *, ack: bool) -> None:
        ack_id = ""
        if ack:
            ack_id = str(self.next_id)
            self.next_id += 1
        data = orjson.dumps([event, payload]).decode()
        await self.ws.send_text(f"42{NAMESPACE},{ack_id}{data}")

    async def call(self, event: str, payload: Any, timeout: float) -> list[Any] | None:
        """Emit with an ack and wait for it: its arguments, or None (timeout, closed)."""
        ack_id = self.next_id
        self.next_id += 1
        pending = Pending()
        self.acks[ack_id] = pending
        try:
            data = orjson.dumps([event, payload]).decode()
            await self.ws.send_text(f"42{NAMESPACE},{ack_id}{data}")
            with trio.move_on_after(timeout):
                await pending.done.wait()
        finally:
            self.acks.pop(ack_id, None)
        return pending.reply


async def first_of(*events: trio.Event) -> None:
    """Wait until any of ``events`` is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)


# --- good clients ---------------------------------------------------------------------------


@dataclass
class Sent:
    phase: str
    sent: float
    acked: float | None = None
    echoed: float | None = None
    message_id: str | None = None
    error: str | None = None


class GoodClient:
    """One device on its own source address, one message every SEND_INTERVAL seconds."""

    def __init__(self, drill: Drill, index: int) -> None:
        self.drill = drill
        self.ip = good_ip(index)
        self.device = f"good-{index:04d}"
        self.conversation: str | None = None
        self.sent: dict[str, Sent] = {}
        self.seq = 0
        self.ready = trio.Event()
        self.connected = False
        self.failures: list[str] = []
        self.disconnects: list[str] = []
        self.errors: Counter[str] = Counter()
        self.stored: Counter[str] | None = None

    @property
    def auth(self) -> Json:
        app = self.drill.app
        return {"app_id": app["app_id"], "device_id": self.device, "api_key": app["api_key"]}

    def on_event(self, name: str, args: list[Any]) -> None:
        payload = args[0] if args and isinstance(args[0], dict) else {}
        if name == "message:new":
            local_id = payload.get("local_id")
            entry = self.sent.get(local_id) if isinstance(local_id, str) else None
            if entry is not None and entry.echoed is None:
                entry.echoed = trio.current_time()
        elif name == "error":
            self.errors[str(payload.get("code"))] += 1

    async def run(self) -> None:
        drill = self.drill
        try:
            reply = await http(
                drill.port,
                self.ip,
                "POST",
                "/v1/conversations",
                headers=device_headers(drill.app, self.device),
                body=b"{}",
            )
            if reply.status != 201:
                self.failures.append(f"POST /v1/conversations: HTTP {reply.status}")
                return
            self.conversation = str(reply.json()["id"])
            sessions = 0
            while not drill.stop_sending.is_set() and sessions < 5:
                sessions += 1
                try:
                    await self.session()
                except Exception as exc:
                    self.failures.append(f"session: {outcome(exc)}")
                if not drill.stop_sending.is_set():
                    with trio.move_on_after(1.0):
                        await drill.stop_sending.wait()
        except Exception as exc:
            self.failures.append(f"setup: {outcome(exc)}")
        finally:
            self.ready.set()

    async def session(self) -> None:
        ws = await open_ws(self.drill.port, self.ip)
        try:
            sio = Sio(ws, on_event=self.on_event)
            await sio.open()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sio.run_reader)
                refusal = await sio.connect(self.auth)
                if refusal is not None:
                    self.failures.append(f"CONNECT refused: {refusal}")
                    nursery.cancel_scope.cancel()
                    return
                joined = await sio.call(
                    "conversation:join", {"conversation_id": self.conversation}, 10.0
                )
                ack = joined[0] if joined else None
                if not (isinstance(ack, dict) and ack.get("success") is True):
                    self.failures.append(f"conversation:join answered {ack!r:.80}")
                self.connected = True
                self.ready.set()
                await self.chat(sio)
                if not sio.ended.is_set() and not sio.disconnected.is_set():
                    await self.wait_for_echoes(sio)
                if sio.ended.is_set() or sio.disconnected.is_set():
                    self.disconnects.append(sio.end_reason)
                nursery.cancel_scope.cancel()
        finally:
            await ws.aclose()

    async def chat(self, sio: Sio) -> None:
        drill = self.drill
        next_at = trio.current_time() + drill.rng.uniform(0, SEND_INTERVAL)
        async with trio.open_nursery() as senders:
            while True:
                with trio.move_on_at(next_at):
                    await first_of(drill.stop_sending, sio.ended, sio.disconnected)
                if drill.stop_sending.is_set() or sio.ended.is_set() or sio.disconnected.is_set():
                    break
                senders.start_soon(self.send_one, sio)
                next_at = max(next_at + SEND_INTERVAL, trio.current_time())

    async def send_one(self, sio: Sio) -> None:
        self.seq += 1
        local_id = f"{self.device}-{self.seq}"
        entry = Sent(phase=self.drill.phase, sent=trio.current_time())
        self.sent[local_id] = entry
        payload = {
            "conversation_id": self.conversation,
            "body": f"hello {self.seq} from {self.device}",
            "local_id": local_id,
        }
        try:
            reply = await sio.call("message:send", payload, ACK_DEADLINE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            entry.error = "send failed: connection gone"
            return
        if reply is None:
            if sio.ended.is_set() or sio.disconnected.is_set():
                entry.error = "no ack: connection ended"
            else:
                entry.error = f"no ack within {ACK_DEADLINE:.0f} s"
            return
        ack = reply[0] if reply else None
        if isinstance(ack, dict) and ack.get("success") is True:
            entry.acked = trio.current_time()
            message = ack.get("message")
            if isinstance(message, dict):
                entry.message_id = str(message.get("id"))
        else:
            error = ack.get("error") if isinstance(ack, dict) else ack
            entry.error = f"ack error {error}"

    async def wait_for_echoes(self, sio: Sio) -> None:
        deadline = trio.current_time() + ECHO_GRACE
        while trio.current_time() < deadline and not sio.ended.is_set():
            if all(e.echoed is not None for e in self.sent.values() if e.acked is not None):
                return
            await trio.sleep(0.1)

    async def verify(self) -> None:
        """How many times each local_id is stored, read back page by page through REST."""
        if self.conversation is None:
            return
        counts: Counter[str] = Counter()
        after: str | None = None
        for _ in range(500):
            target = f"/v1/conversations/{self.conversation}/messages?limit=200"
            if after is not None:
                target += f"&after={after}"
            reply = await http(
                self.drill.port,
                self.ip,
                "GET",
                target,
                headers=device_headers(self.drill.app, self.device),
            )
            if reply.status != 200:
                self.failures.append(f"GET messages: HTTP {reply.status}")
                return
            page = reply.json()
            messages = page.get("messages") or []
            for message in messages:
                counts[str(message.get("local_id"))] += 1
            if not page.get("has_more") or not messages:
                break
            after = str(messages[-1]["id"])
        self.stored = counts


# --- the hostile side: corpus and mutations -------------------------------------------------


def _wire(parts: list[Json]) -> bytes:
    out = b""
    for part in parts:
        if "hex" in part:
            out += bytes.fromhex(part["hex"])
        else:
            out += bytes.fromhex(part["repeat_hex"]) * min(int(part["count"]), 2 * MAX_PAYLOAD)
    return out


class Corpus:
    """Frames, polling bodies and raw WebSocket bytes from protocol/vectors, and mutants."""

    def __init__(self, app: Json, rng: random.Random) -> None:
        self.rng = rng
        self.frames: list[bytes] = []  # Engine.IO text packets
        self.binaries: list[bytes] = []  # binary messages
        self.bodies: list[bytes] = []  # long-polling bodies
        self.wire: list[bytes] = []  # masked client WebSocket frames

        def load(name: str) -> Json:
            data: Json = json.loads((VECTORS / name).read_text())
            return data

        for vector in load("engineio-packets.json")["vectors"]:
            if "frame" in vector:
                self.frames.append(vector["frame"].encode())
            if "frame_base64" in vector:
                self.binaries.append(base64.b64decode(vector["frame_base64"]))
        for name in ("socketio-packets.json", "replyhq-events.json"):
            for vector in load(name)["vectors"]:
                self.frames.append(b"4" + vector["text"].encode())
                for attachment in vector.get("attachments") or []:
                    self.binaries.append(base64.b64decode(attachment))
        for vector in load("engineio-payloads.json")["vectors"]:
            self.bodies.append(vector["body"].encode())
        for vector in load("websocket-frames.json")["decode"]:
            if vector.get("role") == "server":
                self.wire.append(_wire(vector["bytes"]))
        for vector in load("invalid.json")["vectors"]:
            layer = vector["layer"]
            if layer == "engineio-packet" and isinstance(vector["input"], str):
                self.frames.append(vector["input"].encode())
            elif layer == "socketio-packet" and isinstance(vector["input"], str):
                self.frames.append(b"4" + vector["input"].encode())
            elif layer == "engineio-payload" and isinstance(vector["input"], str):
                self.bodies.append(vector["input"].encode())
            elif layer == "websocket" and vector.get("role") == "server":
                self.wire.append(_wire(vector["input"]))
        # Packets that pass the codecs and reach the chat, with real credentials.
        auth = {"app_id": app["app_id"], "device_id": "hostile-fuzz", "api_key": app["api_key"]}
        send = {"conversation_id": "conv_x", "body": "hi", "local_id": "l-1"}
        self.frames += [
            f"40{NAMESPACE},{json.dumps(auth)}".encode(),
            f"42{NAMESPACE},1{json.dumps(['message:send', send])}".encode(),
            f"42{NAMESPACE},{json.dumps(['typing:start', {'conversation_id': 'x'}])}".encode(),
            b"42/client,2" + json.dumps(["conversation:join", {"conversation_id": "y"}]).encode(),
            f"42{NAMESPACE},3{json.dumps(['message:read', {'conversation_id': 'x'}])}".encode(),
            f"41{NAMESPACE},".encode(),
            b"40/admin," + json.dumps({"app_id": app["app_id"], "admin_token": "x"}).encode(),
        ]

    def mutate(self, data: bytes, pool: Sequence[bytes]) -> bytes:
        rng = self.rng
        out = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(6)
            if op == 0 and out:  # flip bytes
                for _ in range(rng.randint(1, 4)):
                    out[rng.randrange(len(out))] ^= rng.randint(1, 255)
            elif op == 1 and out:  # truncate
                del out[rng.randrange(len(out)) :]
            elif op == 2:  # splice with another item
                other = rng.choice(pool)
                cut = rng.randint(0, len(out))
                out = out[:cut] + other[rng.randint(0, len(other)) :]
            elif op == 3:  # insert random bytes
                cut = rng.randint(0, len(out))
                out[cut:cut] = os.urandom(rng.randint(1, 8))
            elif op == 4 and out:  # repeat a slice
                start = rng.randrange(len(out))
                piece = out[start : start + rng.randint(1, 16)]
                out[start:start] = piece * rng.randint(2, 50)
            elif op == 5:  # a special character somewhere
                cut = rng.randint(0, len(out))
                out[cut:cut] = rng.choice(SPECIALS)
        return bytes(out)

    def frame(self) -> bytes:
        return self.mutate(self.rng.choice(self.frames), self.frames)

    def binary(self) -> bytes:
        return self.mutate(self.rng.choice(self.binaries or [b"\x00"]), self.binaries or [b""])

    def body(self) -> bytes:
        if self.rng.random() < 0.5:
            body = b"\x1e".join(self.rng.choice(self.frames) for _ in range(self.rng.randint(1, 6)))
        else:
            body = self.rng.choice(self.bodies)
        return self.mutate(body, self.bodies + self.frames)

    def raw_frame(self) -> bytes:
        return self.mutate(self.rng.choice(self.wire), self.wire)


# --- the hostile side: attacks --------------------------------------------------------------

SPECIALS = (b"\x1e", b"\x00", b"[", b"{", b'"', b",", b"-", b"9" * 20, b"\xff")
KINDS = (
    "ws_mutated",
    "polling_mutated",
    "oversize_ws",
    "oversize_polling",
    "binary_attachments",
    "deep_json",
    "event_flood",
    "connect_flood",
    "half_open",
    "slowloris",
)
ROUND_LIMIT = {
    "ws_mutated": 15.0,
    "polling_mutated": 15.0,
    "oversize_ws": 10.0,
    "oversize_polling": 10.0,
    "binary_attachments": 10.0,
    "deep_json": 10.0,
    "event_flood": 25.0,
    "connect_flood": 15.0,
    "half_open": 35.0,
    "slowloris": 35.0,
}
HOLD = 30.0  # half-open and slowloris connections are held at most this long
FLOOD_EVENTS = 3000  # per event-flood connection: 2000 message:send, 1000 typing:start
CONNECT_FLOOD = 24  # connection attempts per connect-flood round


def held_for(seconds: float) -> str:
    for limit, label in ((1, "<1 s"), (5, "1-5 s"), (15, "5-15 s"), (30, "15-30 s")):
        if seconds < limit:
            return label
    return ">=30 s"


class Hostile:
    """The attackers: ``clients`` workers, each running one attack after another."""

    def __init__(self, port: int, app: Json, seed: int, kinds: Sequence[str]) -> None:
        self.port = port
        self.app = app
        self.rng = random.Random(seed)
        self.corpus = Corpus(app, self.rng)
        self.kinds = tuple(kinds)
        self.loop_lag = 0.0
        # Big frames are masked once (with one mask): masking a megabyte costs ~10 ms,
        # and a hundred of them at once would stall this process, not the server.
        mask = os.urandom(4)
        fragments = [
            encode_frame(
                Opcode.TEXT if number == 0 else Opcode.CONTINUATION,
                b"4" * 262_144,
                fin=number == 4,
                mask=mask,
            )
            for number in range(5)
        ]
        self.fragments = fragments
        self.big_binary = encode_frame(Opcode.BINARY, b"\x00" * (MAX_PAYLOAD + 1), mask=mask)
        self.obs: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
        self.variants: Counter[str] = Counter()
        self.flood_conversations: dict[int, str] = {}
        self.seq = 0
        self.attacks: dict[str, Callable[[int, str], Awaitable[None]]] = {
            kind: getattr(self, kind) for kind in KINDS
        }

    def note(self, kind: str, what: str, count: int = 1) -> None:
        self.obs[kind][what] += count

    async def watch_loop_lag(self) -> None:
        while True:
            planned = trio.current_time() + 0.01
            await trio.sleep_until(planned)
            self.loop_lag = max(self.loop_lag, trio.current_time() - planned)

    def variant(self, kind: str, count: int) -> int:
        self.variants[kind] += 1
        return self.variants[kind] % count

    def auth(self, device: str) -> Json:
        return {"app_id": self.app["app_id"], "device_id": device, "api_key": self.app["api_key"]}

    async def worker(self, index: int, until: float) -> None:
        round_no = 0
        while trio.current_time() < until - 0.5:
            kind = self.kinds[(index + round_no) % len(self.kinds)]
            round_no += 1
            ips = {"connect_flood": CONNECT_FLOOD_IPS, "event_flood": EVENT_FLOOD_IPS}
            pool = ips.get(kind, HOSTILE_IPS)
            ip = pool[(index + round_no) % len(pool)]
            self.note(kind, "rounds")
            deadline = min(until, trio.current_time() + ROUND_LIMIT[kind])
            with trio.move_on_at(deadline) as scope:
                try:
                    await self.attacks[kind](index, ip)
                except* Exception as group:
                    self.note(kind, outcome(group))
            if scope.cancelled_caught:
                cut = "at its time limit" if deadline < until else "at the end of the phase"
                self.note(kind, f"round cut {cut}")
            await trio.sleep(self.rng.uniform(0.05, 0.25))

    def note_end(self, kind: str, ws: RawWS) -> None:
        if ws.close_code is not None:
            self.note(kind, f"end: ws close {ws.close_code}")
        elif ws.eof:
            self.note(kind, "end: closed by server (EOF, no close frame)")
        elif ws.reset:
            self.note(kind, "end: reset by server")
        else:
            self.note(kind, "end: still open, closed by the drill")

    @contextlib.asynccontextmanager
    async def ws(self, kind: str, ip: str, device: str | None) -> AsyncIterator[Sio]:
        """A WebSocket from ``ip`` with its reader running, CONNECTed as ``device`` if given."""
        self.note(kind, "connections")
        ws = await open_ws(self.port, ip)
        try:
            sio = Sio(ws, notes=self.obs[kind])
            await sio.open(timeout=5.0)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sio.run_reader)
                if device is not None:
                    await sio.connect(self.auth(device), timeout=5.0)
                yield sio
                nursery.cancel_scope.cancel()
        finally:
            self.note_end(kind, ws)
            await ws.aclose()

    async def wait_end(self, sio: Sio, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await sio.ended.wait()

    # polling

    async def polling_open(self, kind: str, ip: str) -> str | None:
        self.note(kind, "connections")
        reply = await http(self.port, ip, "GET", f"{EIO_PATH}?EIO=4&transport=polling", timeout=5.0)
        if reply.status != 200:
            self.note(kind, f"handshake http {reply.status}")
            return None
        first = reply.body.decode(errors="replace").split("\x1e")[0]
        if not first.startswith("0"):
            self.note(kind, "handshake without an open packet")
            return None
        return str(orjson.loads(first[1:])["sid"])

    async def polling_post(self, kind: str, ip: str, sid: str, body: bytes) -> int:
        self.note(kind, "connections")
        reply = await http(
            self.port,
            ip,
            "POST",
            f"{EIO_PATH}?EIO=4&transport=polling&sid={sid}",
            headers=[("Content-Type", "text/plain;charset=UTF-8")],
            body=body,
            timeout=5.0,
        )
        self.note(kind, f"POST http {reply.status}")
        return reply.status

    async def polling_get(self, kind: str, ip: str, sid: str, wait: float) -> None:
        """One GET, held at most ``wait`` seconds; notes what the server sent."""
        self.note(kind, "connections")
        try:
            reply = await http(
                self.port, ip, "GET", f"{EIO_PATH}?EIO=4&transport=polling&sid={sid}", timeout=wait
            )
        except trio.TooSlowError:
            self.note(kind, "GET held (nothing to send)")
            return
        if reply.status == 400:
            self.note(kind, "end: session closed by server (GET http 400)")
            return
        if reply.status != 200:
            self.note(kind, f"GET http {reply.status}")
            return
        for packet in reply.body.decode(errors="replace").split("\x1e"):
            if packet == "1":
                self.note(kind, "end: Engine.IO close packet")
            elif packet.startswith("40"):
                self.note(kind, "CONNECT accepted")
            elif packet.startswith("44"):
                try:
                    _, _, data, _, _ = decode_fields(packet, LIMITS, 1)
                    message = data.get("message") if isinstance(data, dict) else data
                except ProtocolError:
                    message = "?"
                self.note(kind, f"CONNECT_ERROR {message}")
            elif packet.startswith("41"):
                self.note(kind, "DISCONNECT by server")

    async def polling_close(self, ip: str, sid: str) -> None:
        with trio.move_on_after(2.0), contextlib.suppress(Exception):
            await http(
                self.port,
                ip,
                "POST",
                f"{EIO_PATH}?EIO=4&transport=polling&sid={sid}",
                headers=[("Content-Type", "text/plain;charset=UTF-8")],
                body=b"1",
                timeout=2.0,
            )

    async def raw_post(
        self, kind: str, ip: str, sid: str, *, head_extra: str, body_size: int, wait: float
    ) -> None:
        """A POST whose body is streamed in 64 KiB chunks while the answer is read."""
        self.note(kind, "connections")
        stream = await connect(self.port, ip)
        async with stream:
            head = (
                f"POST {EIO_PATH}?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{self.port}\r\nContent-Type: text/plain;charset=UTF-8\r\n"
                f"{head_extra}Connection: close\r\n\r\n"
            )
            await stream.send_all(head.encode())
            chunked = "chunked" in head_extra
            sent = trio.Event()

            async def send_body() -> None:
                chunk = b"4" + b"a" * 65535
                left = body_size
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while left > 0:
                        piece = chunk[: min(left, len(chunk))]
                        left -= len(piece)
                        if chunked:
                            piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                        await stream.send_all(piece)
                    if chunked:
                        await stream.send_all(b"0\r\n\r\n")
                sent.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_body)
                try:
                    with trio.fail_after(wait):
                        status, _ = await read_head(stream)
                    self.note(kind, f"oversize POST http {status}")
                except ServerClosed:
                    self.note(kind, "oversize POST: closed without an answer")
                except trio.BrokenResourceError:
                    self.note(kind, "oversize POST: reset without an answer")
                except trio.TooSlowError:
                    self.note(kind, f"oversize POST: no answer within {wait:.0f} s")
                nursery.cancel_scope.cancel()
            self.note(kind, "body fully sent" if sent.is_set() else "body cut short by server")

    # the attacks, one round each

    async def ws_mutated(self, index: int, ip: str) -> None:
        kind = "ws_mutated"
        for _ in range(4):
            device = f"hostile-{index}" if self.rng.random() < 0.5 else None
            async with self.ws(kind, ip, device) as sio:
                for _ in range(30):
                    if sio.ws.closed:
                        break
                    pick = self.rng.random()
                    if pick < 0.1:
                        ok = await sio.ws.post_raw(self.corpus.raw_frame())
                    elif pick < 0.25:
                        ok = await sio.ws.post(Opcode.BINARY, self.corpus.binary())
                    else:
                        ok = await sio.ws.post(Opcode.TEXT, self.corpus.frame())
                    self.note(kind, "mutated frames sent")
                    if not ok:
                        break
                    await trio.sleep(0.02)
                await self.wait_end(sio, 2.0)

    async def polling_mutated(self, index: int, ip: str) -> None:
        kind = "polling_mutated"
        for _ in range(3):
            sid = await self.polling_open(kind, ip)
            if sid is None:
                return
            try:
                if self.rng.random() < 0.5:
                    auth = orjson.dumps(self.auth(f"hostile-{index}")).decode()
                    await self.polling_post(kind, ip, sid, f"40{NAMESPACE},{auth}".encode())
                    await self.polling_get(kind, ip, sid, 3.0)
                for _ in range(15):
                    self.note(kind, "mutated bodies sent")
                    if await self.polling_post(kind, ip, sid, self.corpus.body()) != 200:
                        break
                await self.polling_get(kind, ip, sid, 2.0)
            finally:
                await self.polling_close(ip, sid)

    async def oversize_ws(self, index: int, ip: str) -> None:
        kind = "oversize_ws"
        variant = self.variant(kind, 3)
        async with self.ws(kind, ip, None) as sio:
            if variant == 0:
                self.note(kind, "sent: a frame header announcing 2,000,000 bytes")
                header = struct.pack("!BBQ", 0x81, 0x80 | 127, 2_000_000) + os.urandom(4)
                await sio.ws.post_raw(header + b"a" * 65536)
            elif variant == 1:
                self.note(kind, "sent: 5 fragments of 262,144 bytes")
                for fragment in self.fragments:
                    if not await sio.ws.post_raw(fragment):
                        break
            else:
                self.note(kind, "sent: one binary message of 1,000,001 bytes")
                await sio.ws.post_raw(self.big_binary)
            await self.wait_end(sio, 3.0)

    async def oversize_polling(self, index: int, ip: str) -> None:
        kind = "oversize_polling"
        variant = self.variant(kind, 3)
        sid = await self.polling_open(kind, ip)
        if sid is None:
            return
        try:
            if variant == 0:
                self.note(kind, "sent: a body of 1,000,001 bytes")
                size = MAX_PAYLOAD + 1
                await self.raw_post(
                    kind,
                    ip,
                    sid,
                    head_extra=f"Content-Length: {size}\r\n",
                    body_size=size,
                    wait=8.0,
                )
            elif variant == 1:
                self.note(kind, "sent: Content-Length 50,000,000 and 64 KiB of it")
                await self.raw_post(
                    kind,
                    ip,
                    sid,
                    head_extra="Content-Length: 50000000\r\n",
                    body_size=65536,
                    wait=5.0,
                )
            else:
                self.note(kind, "sent: 1,100,000 bytes chunked")
                await self.raw_post(
                    kind,
                    ip,
                    sid,
                    head_extra="Transfer-Encoding: chunked\r\n",
                    body_size=1_100_000,
                    wait=8.0,
                )
            await self.polling_get(kind, ip, sid, 2.0)
        finally:
            await self.polling_close(ip, sid)

    async def binary_attachments(self, index: int, ip: str) -> None:
        kind = "binary_attachments"
        async with self.ws(kind, ip, f"hostile-{index}") as sio:
            files = [{"_placeholder": True, "num": number} for number in range(11)]
            payload = {"conversation_id": "conv_x", "body": "x", "local_id": "x", "files": files}
            text = f"4511-{NAMESPACE}," + orjson.dumps(["message:send", payload]).decode()
            ok = await sio.ws.post(Opcode.TEXT, text.encode())
            for _ in range(11):
                if not ok:
                    break
                ok = await sio.ws.post(Opcode.BINARY, os.urandom(16))
            await self.wait_end(sio, 3.0)

    async def deep_json(self, index: int, ip: str) -> None:
        kind = "deep_json"
        variant = self.variant(kind, 3)
        objects = variant == 1
        nested = '{"a":' * 10_000 + "1" + "}" * 10_000 if objects else "[" * 10_000 + "]" * 10_000
        packet = f'42{NAMESPACE},["message:send",{nested}]'.encode()
        if variant < 2:
            async with self.ws(kind, ip, f"hostile-{index}") as sio:
                self.note(kind, "sent over WebSocket")
                await sio.ws.post(Opcode.TEXT, packet)
                await self.wait_end(sio, 3.0)
            return
        sid = await self.polling_open(kind, ip)
        if sid is None:
            return
        try:
            self.note(kind, "sent over polling")
            await self.polling_post(kind, ip, sid, packet)
            await self.polling_get(kind, ip, sid, 2.0)
        finally:
            await self.polling_close(ip, sid)

    async def flood_conversation(self, index: int, ip: str) -> str:
        conversation = self.flood_conversations.get(index)
        if conversation is not None:
            return conversation
        kind = "event_flood"
        reply = await http(
            self.port,
            ip,
            "POST",
            "/v1/conversations",
            headers=device_headers(self.app, f"hostile-{index}"),
            body=b"{}",
            timeout=5.0,
        )
        self.note(kind, f"REST POST /v1/conversations http {reply.status}")
        if reply.status != 201:
            return "conv_unknown"
        conversation = str(reply.json()["id"])
        self.flood_conversations[index] = conversation
        return conversation

    async def event_flood(self, index: int, ip: str) -> None:
        kind = "event_flood"
        # message:send only, typing:start only, or both (2:1): each limit on its own too
        variant = self.variant(kind, 3)
        conversation = await self.flood_conversation(index, ip)
        async with self.ws(kind, ip, f"hostile-{index}") as sio:
            if sio.connect_error is not None:
                return
            label = ("message:send", "typing:start", "both")[variant]
            self.note(kind, f"flood connections ({label})")
            self.note(kind, "flood connections")
            sent = 0
            try:
                for number in range(FLOOD_EVENTS):
                    if sio.ended.is_set() or sio.disconnected.is_set():
                        break
                    if variant == 1 or (variant == 2 and number % 3 == 2):
                        await sio.emit("typing:start", {"conversation_id": conversation}, ack=False)
                    else:
                        self.seq += 1
                        message = {
                            "conversation_id": conversation,
                            "body": f"flood {number}",
                            "local_id": f"flood-{index}-{self.seq}",
                        }
                        await sio.emit("message:send", message, ack=True)
                    sent += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.note(kind, "send failed: connection gone")
            finally:
                self.note(kind, "events sent", sent)
            with trio.move_on_after(5.0):
                await first_of(sio.ended, sio.disconnected)
            if sio.disconnected.is_set() or sio.ended.is_set():
                self.note(kind, f"flood connections ended by the server ({label})")

    async def connect_flood(self, index: int, ip: str) -> None:
        kind = "connect_flood"
        device = f"hostile-cf-{index}"

        async def over_websocket() -> None:
            async with self.ws(kind, ip, device) as sio:
                await self.wait_end(sio, 2.0)

        async def over_polling() -> None:
            sid = await self.polling_open(kind, ip)
            if sid is None:
                return
            try:
                auth = orjson.dumps(self.auth(device)).decode()
                await self.polling_post(kind, ip, sid, f"40{NAMESPACE},{auth}".encode())
                await self.polling_get(kind, ip, sid, 3.0)
            finally:
                await self.polling_close(ip, sid)

        async def attempt(websocket: bool) -> None:
            try:
                await (over_websocket() if websocket else over_polling())
            except* Exception as group:
                self.note(kind, outcome(group))

        async with trio.open_nursery() as nursery:
            for number in range(CONNECT_FLOOD):
                self.note(kind, "attempts")
                nursery.start_soon(attempt, number % 2 == 0)
                await trio.sleep(0.01)

    async def half_open(self, index: int, ip: str) -> None:
        kind = "half_open"
        variant = self.variant(kind, 3)
        labels = ("TCP only, nothing sent", "half an HTTP request", "WebSocket, then silence")
        self.note(kind, f"sent: {labels[variant]}")
        self.note(kind, "connections")
        stream = await connect(self.port, ip)
        started = trio.current_time()
        ended = "end: still open at the end of the round, closed by the drill"
        try:
            rest = b""
            if variant == 1:
                await stream.send_all(
                    f"GET {EIO_PATH}?EIO=4&transport=polling HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{self.port}\r\n".encode()
                )
            elif variant == 2:
                key = base64.b64encode(os.urandom(16)).decode()
                await stream.send_all(
                    f"GET {EIO_PATH}?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                status, rest = await read_head(stream)
                if status != 101:
                    ended = f"upgrade http {status}"
                    return
            with trio.move_on_after(HOLD):
                answered = bool(rest)
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        elapsed = held_for(trio.current_time() - started)
                        ended = f"end: closed by server after {elapsed}"
                        return
                    if not answered and variant < 2:
                        answered = True
                        self.note(kind, f"answered {data[:12]!r} [{labels[variant]}]")
            ended = f"end: still open after {HOLD:.0f} s, closed by the drill"
        except (trio.BrokenResourceError, ConnectionResetError):
            ended = f"end: reset by server after {held_for(trio.current_time() - started)}"
        finally:
            self.note(kind, f"{ended} [{labels[variant]}]")
            await trio.aclose_forcefully(stream)

    async def slowloris(self, index: int, ip: str) -> None:
        kind = "slowloris"
        self.note(kind, "connections")
        stream = await connect(self.port, ip)
        request = (
            f"GET {EIO_PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-Slow: {'a' * 200}\r\n\r\n"
        ).encode()
        started = trio.current_time()
        closed = trio.Event()
        answer: list[bytes] = []
        ended = "end: still open at the end of the round, closed by the drill"
        sent = 0

        async def read() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    answer.append(data)
            closed.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                with trio.move_on_after(HOLD):
                    for byte in request:
                        if closed.is_set():
                            break
                        try:
                            await stream.send_all(bytes([byte]))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            break
                        sent += 1
                        with trio.move_on_after(1.0):
                            await closed.wait()
                    with trio.move_on_at(started + HOLD):
                        await closed.wait()
                elapsed = held_for(trio.current_time() - started)
                if answer:
                    status = answer[0].split(b" ", 2)[1:2]
                    code = status[0].decode(errors="replace") if status else "?"
                    ended = f"end: server answered http {code} after {elapsed}"
                elif closed.is_set():
                    ended = f"end: closed by server after {elapsed}"
                else:
                    ended = f"end: still open after {HOLD:.0f} s, closed by the drill"
                nursery.cancel_scope.cancel()
        finally:
            self.note(kind, "bytes trickled", sent)
            self.note(kind, ended)
            await trio.aclose_forcefully(stream)


# --- the server -----------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when this process ends, however it ends."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def wait_exit(process: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait at most ``seconds`` for the process to exit (in a thread: Popen.wait)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        await trio.to_thread.run_sync(functools.partial(process.wait, timeout=seconds))


class StartFailed(Exception):
    pass


def scan_log(path: Path) -> Json:
    """Error/critical lines and tracebacks in the server's log, and its warnings by message."""
    errors: list[str] = []
    tracebacks = 0
    warnings: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        level = ""
        message = line
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                level = str(record.get("level", "")).lower()
                message = str(record.get("message", ""))
        if level:
            levels[level] += 1
        if "Traceback" in line:
            tracebacks += 1
        if level in ("error", "critical") or "Traceback" in line:
            errors.append(line[:400])
        elif level == "warning":
            warnings[message[:100]] += 1
    return {
        "lines": len(lines),
        "levels": dict(levels),
        "error_lines": len(errors),
        "tracebacks": tracebacks,
        "examples": errors[:10],
        "warnings_top": dict(warnings.most_common(8)),
    }


# --- the drill ------------------------------------------------------------------------------


@dataclass
class Options:
    quiet_seconds: float
    hostile_seconds: float
    after_seconds: float
    good_clients: int
    hostile_clients: int
    json_path: Path
    port: int | None
    keep_log: bool
    seed: int
    kinds: tuple[str, ...] = KINDS


@dataclass
class Drill:
    options: Options
    workdir: Path
    rng: random.Random
    port: int = 0
    app: Json = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = Path()
    phase: str = "setup"
    stop_sending: trio.Event = field(default_factory=trio.Event)
    rss_peak: dict[str, int] = field(default_factory=dict)
    rss_samples: list[tuple[float, str, int]] = field(default_factory=list)
    cpu_at: dict[str, tuple[float, float | None, float]] = field(default_factory=dict)
    health: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    died_at: str | None = None
    metrics: dict[str, Json] = field(default_factory=dict)
    loop_lag: dict[str, float] = field(default_factory=dict)
    exit_before_sigterm: int | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def set_phase(self, phase: str) -> None:
        now = time.monotonic()
        cpu = read_cpu_seconds(self.pid) if self.process is not None else None
        self.cpu_at[phase] = (now, cpu, time.process_time())
        self.phase = phase
        log(f"-- phase: {phase}")

    # the process

    async def start_server(self) -> None:
        """Start the server and wait for /healthz 200; three tries (files may be changing)."""
        problems: list[str] = []
        for attempt in range(1, 4):
            self.port = self.options.port or free_port()
            self.log_path = self.workdir / f"server-{attempt}.log"
            database = self.workdir / "drill.db"
            cmd = [sys.executable, "-m", "replyhq_trio", "serve", "--port", str(self.port)]
            cmd += ["--database-url", f"sqlite:///{database}", "--log-format", "json"]
            with self.log_path.open("wb") as log_file:
                # Popen from this (the main) thread: PR_SET_PDEATHSIG follows the thread
                # that spawned, and trio's worker threads come and go.
                self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,  # only the demo app's credentials
                    stderr=log_file,
                    cwd=self.workdir,
                    env=dict(os.environ, PYTHONUNBUFFERED="1"),
                    process_group=0,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - no other thread yet
                )
            deadline = trio.current_time() + 30.0
            while trio.current_time() < deadline:
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(Exception):
                    reply = await http(self.port, HEALTH_IP, "GET", "/healthz", timeout=1.0)
                    if reply.status == 200:
                        log(f"server pid {self.pid} on 127.0.0.1:{self.port} (try {attempt})")
                        return
                await trio.sleep(0.1)
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-8:])
            problems.append(f"try {attempt}: exit {self.process.poll()}\n{tail}")
            await self.stop_server(grace=5.0)
            log(f"the server did not start (try {attempt}); retrying in 5 s")
            await trio.sleep(5.0)
        raise StartFailed("\n".join(problems))

    async def create_app(self) -> None:
        database = self.workdir / "drill.db"
        cmd = [sys.executable, "-m", "replyhq_trio", "apps", "create", "--name", "abuse-drill"]
        cmd += ["--json", "--database-url", f"sqlite:///{database}"]
        for attempt in range(3):
            with trio.fail_after(60):
                done = await trio.run_process(
                    cmd, capture_stdout=True, capture_stderr=True, check=False, cwd=self.workdir
                )
            if done.returncode == 0:
                self.app = json.loads(done.stdout.decode().strip().splitlines()[-1])
                return
            log(f"apps create failed (try {attempt + 1}): {done.stderr.decode().strip()[-300:]}")
            await trio.sleep(3.0)
        raise StartFailed("apps create failed three times")

    async def stop_server(self, grace: float = STOP_WAIT) -> tuple[int | None, float]:
        """SIGTERM by PID, wait up to ``grace`` s, then SIGKILL: exit code and seconds taken."""
        process = self.process
        if process is None:
            return None, 0.0
        started = time.monotonic()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            await wait_exit(process, grace)
            if process.poll() is None:
                log(f"the server did not exit within {grace:.0f} s of SIGTERM: SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await wait_exit(process, 10.0)
        return process.poll(), time.monotonic() - started

    # background watchers

    async def sample_rss(self) -> None:
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                if self.died_at is None:
                    self.died_at = self.phase
                    self.exit_before_sigterm = self.process.poll()
                    log(f"THE SERVER EXITED during {self.phase}: {self.exit_before_sigterm}")
                return
            kib = read_rss_kib(self.pid)
            if kib is not None:
                self.rss_samples.append((trio.current_time(), self.phase, kib))
                self.rss_peak[self.phase] = max(self.rss_peak.get(self.phase, 0), kib)
            await trio.sleep(0.25)

    async def watch_loop_lag(self) -> None:
        """How late this process's own event loop wakes up (its latencies include it)."""
        while True:
            planned = trio.current_time() + 0.01
            await trio.sleep_until(planned)
            lag = trio.current_time() - planned
            self.loop_lag[self.phase] = max(self.loop_lag.get(self.phase, 0.0), lag)

    async def probe_health(self) -> None:
        while True:
            phase = self.phase
            started = trio.current_time()
            try:
                reply = await http(self.port, HEALTH_IP, "GET", "/healthz", timeout=5.0)
                status = str(reply.status)
            except Exception as exc:
                status = outcome(exc)
            self.health.setdefault(phase, []).append((status, trio.current_time() - started))
            await trio.sleep(2.0)

    async def scrape(self, phase: str) -> None:
        """The server's own view at the end of a phase, from /metrics."""
        try:
            reply = await http(self.port, HEALTH_IP, "GET", "/metrics", timeout=10.0)
        except Exception as exc:
            self.metrics[phase] = {"error": outcome(exc)}
            return
        wanted = {
            "replyhq_live_connections": "live_connections",
            "replyhq_process_open_fds": "open_fds",
            "replyhq_rate_limited_total": "rate_limited",
            "replyhq_disconnections_total": "disconnections",
            "replyhq_messages_stored_total": "messages_stored",
            "replyhq_slow_consumer_disconnects_total": "slow_consumer_disconnects",
        }
        values: Json = {}
        for line in reply.body.decode(errors="replace").splitlines():
            name, _, rest = line.partition("{")
            if line.startswith("#") or not rest:
                name, _, rest = line.partition(" ")
                labels, value = "", rest
            else:
                labels, _, value = rest.rpartition("} ")
            key = wanted.get(name.strip())
            if key is None:
                continue
            with contextlib.suppress(ValueError):
                number = float(value)
                if not number:
                    continue
                label = ",".join(
                    part.split("=")[1].strip('"') for part in labels.split(",") if "=" in part
                )
                if key in ("open_fds", "slow_consumer_disconnects"):
                    values[key] = number
                else:
                    group = values.setdefault(key, {})
                    group[label or "total"] = group.get(label or "total", 0) + number
        self.metrics[phase] = values

    async def health_now(self) -> dict[str, str]:
        answers: dict[str, str] = {}
        for route in ("/healthz", "/readyz"):
            try:
                reply = await http(self.port, HEALTH_IP, "GET", route, timeout=5.0)
                answers[route] = str(reply.status)
            except Exception as exc:
                answers[route] = outcome(exc)
        return answers

    # the run

    async def run_hostile(self) -> Json:
        """The hostile phase, in a process of its own: its CPU must not delay the good
        clients' event loop (their latencies are measured here)."""
        options = self.options
        out_path = self.workdir / "hostile-out.json"
        config_path = self.workdir / "hostile-config.json"
        config = {
            "port": self.port,
            "app": self.app,
            "seed": options.seed,
            "kinds": list(options.kinds),
            "clients": options.hostile_clients,
            "seconds": options.hostile_seconds,
            "out": str(out_path),
        }
        config_path.write_text(json.dumps(config))
        err_path = self.workdir / "hostile.err"
        code: int | None = None
        with err_path.open("wb") as err, trio.move_on_after(options.hostile_seconds + 60):
            done = await trio.run_process(
                [sys.executable, __file__, "--hostile-worker", str(config_path)],
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            code = done.returncode
        try:
            result: Json = json.loads(out_path.read_text())
        except (OSError, ValueError):
            tail = err_path.read_text(errors="replace")[-2000:]
            log(f"the hostile process failed (exit {code}):\n{tail}")
            result = {"obs": {}, "error": f"exit {code}: {tail[-300:]}"}
        return result

    async def run(self) -> Json:
        options = self.options
        await self.start_server()
        await self.create_app()
        hostile: Json = {}
        clients = [GoodClient(self, index) for index in range(options.good_clients)]
        settle: Json = {}
        rss_quiet = 0
        async with trio.open_nursery() as watchers:
            watchers.start_soon(self.sample_rss)
            watchers.start_soon(self.probe_health)
            watchers.start_soon(self.watch_loop_lag)
            with trio.move_on_after(
                options.quiet_seconds + options.hostile_seconds + options.after_seconds + 300
            ):
                async with trio.open_nursery() as good:
                    for client in clients:
                        good.start_soon(client.run)
                        await trio.sleep(0.02)
                    with trio.move_on_after(60):
                        for client in clients:
                            await client.ready.wait()
                    connected = sum(1 for c in clients if c.connected)
                    log(f"{connected}/{len(clients)} good clients connected")

                    self.set_phase("quiet")
                    await trio.sleep(options.quiet_seconds)
                    rss_quiet = read_rss_kib(self.pid) or 0
                    await self.scrape("quiet")

                    self.set_phase("hostile")
                    hostile = await self.run_hostile()
                    await self.scrape("hostile")

                    self.set_phase("after")
                    await trio.sleep(options.after_seconds)
                    settle = await self.settle(rss_quiet)
                    await self.scrape("after")
                    self.set_phase("drain")
                    self.stop_sending.set()
            self.set_phase("verify")
            with trio.move_on_after(120):
                limiter = trio.Semaphore(10)

                async def verify(client: GoodClient) -> None:
                    async with limiter:
                        try:
                            await client.verify()
                        except Exception as exc:
                            client.failures.append(f"verify: {outcome(exc)}")

                async with trio.open_nursery() as checks:
                    for client in clients:
                        checks.start_soon(verify, client)
            health_end = await self.health_now()
            watchers.cancel_scope.cancel()
        alive = self.process is not None and self.process.poll() is None
        if not alive and self.died_at is None:
            self.died_at = self.phase
            self.exit_before_sigterm = self.process.poll() if self.process else None
        cpu_end = (time.monotonic(), read_cpu_seconds(self.pid), time.process_time())
        exit_code, exit_seconds = await self.stop_server()
        return {
            "clients": clients,
            "hostile": hostile,
            "rss_quiet": rss_quiet,
            "settle": settle,
            "health_end": health_end,
            "exit_code": exit_code,
            "exit_seconds": exit_seconds,
            "cpu_end": cpu_end,
        }

    async def settle(self, rss_quiet: int) -> Json:
        """Poll RSS (once a second, at most SETTLE_LIMIT s) until within the limit."""
        self.set_phase("settle")
        started = trio.current_time()
        kib = read_rss_kib(self.pid)
        while (
            kib is not None
            and kib > rss_quiet * RSS_LIMIT
            and trio.current_time() - started < SETTLE_LIMIT
        ):
            await trio.sleep(1.0)
            kib = read_rss_kib(self.pid)
        # None: the process is gone
        return {"rss_after": kib, "seconds": round(trio.current_time() - started, 1)}


# --- the report -----------------------------------------------------------------------------


def good_report(clients: list[GoodClient]) -> Json:
    phases: Json = {}
    everything = [entry for client in clients for entry in client.sent.values()]
    for phase in (*PHASES, "total"):
        entries = [
            e
            for e in everything
            if phase in ("total", e.phase) or (phase == "after" and e.phase == "settle")
        ]
        acked = [e for e in entries if e.acked is not None]
        echoed = [e for e in entries if e.echoed is not None]
        lost = [e for e in entries if e.acked is None or e.echoed is None]
        errors = Counter(e.error or "acked, no message:new" for e in lost)
        phases[phase] = {
            "sent": len(entries),
            "acked": len(acked),
            "echoed": len(echoed),
            "lost": len(lost),
            "lost_why": dict(errors),
            "ack": latency_summary([e.acked - e.sent for e in acked if e.acked is not None]),
            "echo": latency_summary([e.echoed - e.sent for e in echoed if e.echoed is not None]),
        }
    checked = missing = duplicated = 0
    unverified = 0
    for client in clients:
        for local_id, entry in client.sent.items():
            if entry.acked is None:
                continue
            if client.stored is None:
                unverified += 1
                continue
            checked += 1
            count = client.stored.get(local_id, 0)
            if count == 0:
                missing += 1
            elif count > 1:
                duplicated += 1
    stored_unacked = sum(
        1
        for client in clients
        if client.stored is not None
        for local_id, entry in client.sent.items()
        if entry.acked is None and client.stored.get(local_id, 0) > 0
    )
    failures = Counter(f for client in clients for f in client.failures)
    disconnects = Counter(d for client in clients for d in client.disconnects)
    error_events: Counter[str] = Counter()
    for client in clients:
        error_events.update(client.errors)
    return {
        "clients": len(clients),
        "connected": sum(1 for c in clients if c.connected),
        "failures": dict(failures),
        "disconnects": dict(disconnects),
        "error_events": dict(error_events),
        "phases": phases,
        "stored": {
            "acked_checked": checked,
            "exactly_once": checked - missing - duplicated,
            "missing": missing,
            "duplicated": duplicated,
            "unverified": unverified,
            "stored_without_ack": stored_unacked,
        },
    }


def hostile_report(hostile: Json) -> Json:
    kinds: Json = {}
    observed = {kind: Counter(hostile.get("obs", {}).get(kind, {})) for kind in KINDS}
    for kind, notes in observed.items():
        closed = sum(
            n
            for key, n in notes.items()
            if key.startswith("end:") and "still open" not in key and "drill" not in key
        )
        kinds[kind] = {
            "rounds": notes["rounds"],
            "connections": notes["connections"],
            "closed_by_server": closed,
            "http_429": sum(n for key, n in notes.items() if key.endswith("http 429")),
            "rate_limited": sum(n for key, n in notes.items() if "RATE_LIMITED" in key),
            "disconnects": notes["DISCONNECT by server"],
            "outcomes": dict(notes.most_common()),
        }
    every: Counter[str] = Counter()
    for notes in observed.values():
        every.update(notes)
    flood = observed["event_flood"]
    limits = {
        "message_rate_limited_acks": flood["ack error RATE_LIMITED"],
        "typing_rate_limited_errors": flood["error event RATE_LIMITED"],
        "flood_connections": flood["flood connections"],
        "flood_connections_disconnected": flood["DISCONNECT by server"],
        "connect_rate_limited": every["CONNECT_ERROR RATE_LIMITED"],
        "too_many_connections": every["CONNECT_ERROR TOO_MANY_CONNECTIONS"],
        "http_429": sum(n for key, n in every.items() if key.endswith("http 429")),
        "server_sent_invalid_data": sum(n for key, n in every.items() if "INVALID DATA" in key),
        "unexpected_exceptions": sum(n for key, n in every.items() if key.startswith("unexpected")),
    }
    return {
        "kinds": kinds,
        "limits": limits,
        "process": {
            "error": hostile.get("error"),
            "cpu_percent": hostile.get("cpu_percent"),
            "loop_lag_max_ms": hostile.get("loop_lag_max_ms"),
        },
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def build_report(drill: Drill, result: Json, log_scan: Json) -> Json:
    options = drill.options
    clients: list[GoodClient] = result["clients"]
    good = good_report(clients)
    hostile = hostile_report(result["hostile"])
    quiet, during = good["phases"]["quiet"], good["phases"]["hostile"]
    rss_quiet = result["rss_quiet"]
    rss_after = result["settle"].get("rss_after")
    rss = {
        "quiet_kib": rss_quiet,
        "peak_hostile_kib": drill.rss_peak.get("hostile"),
        "after_kib": rss_after,
        "after_over_quiet": ratio(rss_after, rss_quiet),
        "peak_over_quiet": ratio(drill.rss_peak.get("hostile"), rss_quiet),
        "settle_seconds": result["settle"].get("seconds"),
    }
    health: Json = {}
    for phase, probes in drill.health.items():
        health[phase] = {
            "probes": len(probes),
            "failed": sum(1 for status, _ in probes if status != "200"),
            "max_ms": round(max(t for _, t in probes) * 1000, 1) if probes else None,
        }
    cpu: Json = {}
    drill_cpu: Json = {}
    marks = [*drill.cpu_at.items(), ("end", result["cpu_end"])]
    for (phase, (t0, c0, d0)), (_, (t1, c1, d1)) in itertools.pairwise(marks):
        if phase in PHASES and t1 > t0:
            if c0 is not None and c1 is not None:
                cpu[phase] = round(100 * (c1 - c0) / (t1 - t0), 1)
            drill_cpu[phase] = round(100 * (d1 - d0) / (t1 - t0), 1)

    checks: list[Json] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    crashed = drill.died_at is not None
    check(
        "server stayed up",
        not crashed,
        f"exited during {drill.died_at} with {drill.exit_before_sigterm}" if crashed else "yes",
    )
    errors = log_scan["error_lines"]
    check(
        "no error/critical/Traceback in the log",
        errors == 0,
        f"{errors} lines ({log_scan['tracebacks']} with Traceback)",
    )
    health_end = result["health_end"]
    check(
        "/healthz and /readyz 200 at the end",
        health_end.get("/healthz") == "200" and health_end.get("/readyz") == "200",
        f"/healthz {health_end.get('/healthz')}, /readyz {health_end.get('/readyz')}",
    )
    total = good["phases"]["total"]
    check(
        "no good message lost",
        total["lost"] == 0 and total["sent"] > 0,
        f"{total['lost']} lost of {total['sent']} ({total['lost_why']})",
    )
    stored = good["stored"]
    check(
        "every acked message stored exactly once",
        stored["exactly_once"] == total["acked"] and stored["unverified"] == 0,
        f"{stored['exactly_once']}/{total['acked']} (missing {stored['missing']}, "
        f"duplicated {stored['duplicated']}, unverified {stored['unverified']})",
    )
    check(
        "good clients connected and never dropped",
        good["connected"] == good["clients"] and not good["disconnects"] and not good["failures"],
        f"{good['connected']}/{good['clients']} connected; disconnects {good['disconnects'] or 0}; "
        f"failures {good['failures'] or 0}",
    )
    after_ratio = rss["after_over_quiet"]
    check(
        f"RSS after / quiet <= {RSS_LIMIT:.2f}",
        after_ratio is not None and after_ratio <= RSS_LIMIT,
        f"{after_ratio}",
    )
    exit_code, exit_seconds = result["exit_code"], result["exit_seconds"]
    check(
        f"exit 0 within {EXIT_LIMIT:.0f} s of SIGTERM",
        exit_code == 0 and exit_seconds <= EXIT_LIMIT,
        f"exit {exit_code} after {exit_seconds:.1f} s",
    )
    reasons = [f"{c['check']}: {c['detail']}" for c in checks if not c["ok"]]
    return {
        "options": {
            "quiet_seconds": options.quiet_seconds,
            "hostile_seconds": options.hostile_seconds,
            "after_seconds": options.after_seconds,
            "good_clients": options.good_clients,
            "hostile_clients": options.hostile_clients,
            "kinds": list(options.kinds),
            "seed": options.seed,
        },
        "server": {
            "pid": drill.pid,
            "port": drill.port,
            "crashes": (drill.died_at is not None) + log_scan["error_lines"],
            "died_during": drill.died_at,
            "exit_before_sigterm": drill.exit_before_sigterm,
            "health_end": health_end,
            "health_probes": health,
            "cpu_percent": cpu,
            "drill_cpu_percent": drill_cpu,
            "drill_loop_lag_max_ms": {
                phase: round(lag * 1000, 1)
                for phase, lag in drill.loop_lag.items()
                if phase in PHASES
            },
            "exit_code": exit_code,
            "exit_seconds": round(exit_seconds, 2),
            "log": log_scan,
        },
        "good": good,
        "latency_ratio_hostile_over_quiet": {
            "ack_p50": ratio(during["ack"]["p50_ms"], quiet["ack"]["p50_ms"]),
            "ack_p95": ratio(during["ack"]["p95_ms"], quiet["ack"]["p95_ms"]),
            "echo_p50": ratio(during["echo"]["p50_ms"], quiet["echo"]["p50_ms"]),
            "echo_p95": ratio(during["echo"]["p95_ms"], quiet["echo"]["p95_ms"]),
        },
        "rss": rss,
        "rss_timeline": [
            {"t": round(t - drill.rss_samples[0][0], 1), "phase": phase, "kib": kib}
            for t, phase, kib in drill.rss_samples[::4]
        ],
        "server_metrics": drill.metrics,
        "hostile": hostile,
        "checks": checks,
        "result": "FAIL" if reasons else "PASS",
        "reasons": reasons,
    }


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def format_report(report: Json) -> str:
    out: list[str] = []
    opts = report["options"]
    server = report["server"]
    out.append(
        f"abuse drill: {opts['good_clients']} good clients, {opts['hostile_clients']} hostile "
        f"connections; quiet {opts['quiet_seconds']:g} s, hostile {opts['hostile_seconds']:g} s, "
        f"after {opts['after_seconds']:g} s (seed {opts['seed']})"
    )
    out.append("")
    out.append("server")
    scan = server["log"]
    died = server["died_during"]
    out.append(
        f"  crashes                              {server['crashes']} (exited before SIGTERM: "
        f"{'during ' + died if died else 'no'}; error/critical/Traceback log lines: "
        f"{scan['error_lines']})"
    )
    out.append(f"  server log                           {scan['lines']} lines, {scan['levels']}")
    health = server["health_end"]
    out.append(f"  /healthz, /readyz at the end         {health['/healthz']}, {health['/readyz']}")
    for phase in PHASES:
        probes = server["health_probes"].get(phase)
        if probes:
            out.append(
                f"  /healthz probes during {phase:<8}      {probes['probes'] - probes['failed']}/"
                f"{probes['probes']} answered 200, slowest {probes['max_ms']} ms"
            )
    cpu = server["cpu_percent"]
    cpu_text = ", ".join(f"{p} {v:g} %" for p, v in cpu.items())
    out.append(f"  server CPU (one core = 100 %)        {cpu_text}")
    cpu_text = ", ".join(f"{p} {v:g} %" for p, v in server["drill_cpu_percent"].items())
    out.append(f"  good-client process CPU              {cpu_text} ({os.cpu_count()} cores)")
    lags = ", ".join(f"{p} {v:g} ms" for p, v in server["drill_loop_lag_max_ms"].items())
    out.append(f"  good-client process worst loop lag   {lags}")
    out.append(
        f"  after SIGTERM                        exit {server['exit_code']} "
        f"in {server['exit_seconds']:.1f} s"
    )
    out.append("")
    good = report["good"]
    out.append(
        f"good clients: {good['connected']}/{good['clients']} connected, disconnects "
        f"{good['disconnects'] or 'none'}, failures {good['failures'] or 'none'}"
    )
    head = f"  {'':30}" + "".join(f"{p:>20}" for p in (*PHASES, "total"))
    out.append(head)
    phases = good["phases"]
    for label, key in (("sent", "sent"), ("acked", "acked"), ("echoed (message:new)", "echoed")):
        out.append(f"  {label:30}" + "".join(f"{phases[p][key]:>20}" for p in (*PHASES, "total")))
    out.append(f"  {'lost':30}" + "".join(f"{phases[p]['lost']:>20}" for p in (*PHASES, "total")))
    for label, key in (("ack ms p50/p95/max", "ack"), ("echo ms p50/p95/max", "echo")):
        cells = []
        for p in (*PHASES, "total"):
            s = phases[p][key]
            cells.append(f"{fmt(s['p50_ms'])}/{fmt(s['p95_ms'])}/{fmt(s['max_ms'])}")
        out.append(f"  {label:30}" + "".join(f"{c:>20}" for c in cells))
    stored = good["stored"]
    out.append(
        f"  stored exactly once (REST)    {stored['exactly_once']}/{phases['total']['acked']} "
        f"acked (missing {stored['missing']}, duplicated {stored['duplicated']}, "
        f"unverified {stored['unverified']}, stored without ack {stored['stored_without_ack']})"
    )
    if phases["total"]["lost_why"]:
        out.append(f"  lost, why: {phases['total']['lost_why']}")
    if good["error_events"]:
        out.append(f"  error events received: {good['error_events']}")
    lat = report["latency_ratio_hostile_over_quiet"]
    out.append(
        f"  latency hostile/quiet: ack p50 x{fmt(lat['ack_p50'])}, p95 x{fmt(lat['ack_p95'])}; "
        f"echo p50 x{fmt(lat['echo_p50'])}, p95 x{fmt(lat['echo_p95'])}"
    )
    out.append("")
    rss = report["rss"]
    out.append(
        f"server RSS: quiet {mib(rss['quiet_kib'])}, peak during hostile "
        f"{mib(rss['peak_hostile_kib'])} (x{fmt(rss['peak_over_quiet'])}), after "
        f"{mib(rss['after_kib'])} (x{fmt(rss['after_over_quiet'])}, limit x{RSS_LIMIT:.2f}; "
        f"polled {fmt(rss['settle_seconds'])} s)"
    )
    for phase, values in report["server_metrics"].items():
        live = values.get("live_connections", {})
        limited = values.get("rate_limited", {})
        out.append(
            f"  /metrics at the end of {phase:<8} live connections {live or 0}, open fds "
            f"{fmt(values.get('open_fds'))}, rate_limited_total {limited or 0}"
        )
    out.append("")
    out.append(
        f"  {'hostile kind':20}{'rounds':>8}{'conns':>8}{'srv-closed':>12}{'http 429':>10}"
        f"{'RATE_LIM':>10}{'disconn':>9}"
    )
    for kind, row in report["hostile"]["kinds"].items():
        out.append(
            f"  {kind:20}{row['rounds']:>8}{row['connections']:>8}{row['closed_by_server']:>12}"
            f"{row['http_429']:>10}{row['rate_limited']:>10}{row['disconnects']:>9}"
        )
    out.append("  what each kind saw (top outcomes):")
    skip = {"rounds", "connections"}
    for kind, row in report["hostile"]["kinds"].items():
        top = [(k, n) for k, n in row["outcomes"].items() if k not in skip][:9]
        out.append(f"    {kind}: " + "; ".join(f"{k} {n}" for k, n in top))
    limits = report["hostile"]["limits"]
    process = report["hostile"]["process"]
    out.append(
        f"  hostile process: CPU {fmt(process['cpu_percent'])} %, worst event-loop lag "
        f"{fmt(process['loop_lag_max_ms'])} ms"
        + (f"; FAILED: {process['error']}" if process["error"] else "")
    )
    out.append(
        "  rate limits seen: "
        f"message:send RATE_LIMITED acks {limits['message_rate_limited_acks']}, "
        f"typing RATE_LIMITED errors {limits['typing_rate_limited_errors']}, "
        f"flood sockets disconnected {limits['flood_connections_disconnected']}/"
        f"{limits['flood_connections']}, CONNECT RATE_LIMITED {limits['connect_rate_limited']}, "
        f"TOO_MANY_CONNECTIONS {limits['too_many_connections']}, HTTP 429 {limits['http_429']}"
    )
    enforced = (
        limits["message_rate_limited_acks"]
        + limits["typing_rate_limited_errors"]
        + limits["connect_rate_limited"]
        + limits["http_429"]
    )
    if not enforced:
        out.append("  (no rate limit was observed: not implemented in this server yet?)")
    if limits["server_sent_invalid_data"] or limits["unexpected_exceptions"]:
        out.append(
            f"  server sent invalid data {limits['server_sent_invalid_data']} times; "
            f"unexpected exceptions {limits['unexpected_exceptions']}"
        )
    if scan["warnings_top"]:
        out.append("")
        out.append("server warnings (top):")
        for message, count in scan["warnings_top"].items():
            out.append(f"  {count:6d}  {message}")
    if scan["examples"]:
        out.append("")
        out.append("server error lines (first):")
        for line in scan["examples"]:
            out.append(f"  {line}")
    out.append("")
    for item in report["checks"]:
        out.append(f"  [{'ok' if item['ok'] else 'FAIL':>4}] {item['check']}: {item['detail']}")
    out.append(report["result"])
    return "\n".join(out)


async def drill_main(options: Options) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="abuse-drill-"))
    drill = Drill(options=options, workdir=workdir, rng=random.Random(options.seed))
    keep = options.keep_log
    try:
        try:
            result = await drill.run()
        except StartFailed as exc:
            log(f"FAIL: the server could not be started:\n{exc}")
            return 1
        log_scan = scan_log(drill.log_path)
        report = build_report(drill, result, log_scan)
        print(format_report(report), flush=True)
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(report, indent=2) + "\n")
        log(f"JSON: {options.json_path}")
        keep = keep or report["result"] != "PASS"
        return 0 if report["result"] == "PASS" else 1
    finally:
        await drill.stop_server()
        if keep and drill.log_path.is_file():
            KEPT_LOG.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(drill.log_path, KEPT_LOG)
            log(f"server log: {KEPT_LOG}")
        shutil.rmtree(workdir, ignore_errors=True)


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="scripts/abuse-drill",
        description="Hostile input against a real server while well-behaved clients chat: "
        "no crash, no lost message, memory back to normal after.",
    )
    parser.add_argument("--quiet-seconds", type=float, default=30.0, help="(30)")
    parser.add_argument("--hostile-seconds", type=float, default=60.0, help="(60)")
    parser.add_argument("--after-seconds", type=float, default=20.0, help="(20)")
    parser.add_argument("--good-clients", type=int, default=50, help="(50)")
    parser.add_argument("--hostile-clients", type=int, default=100, help="(100)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where the report goes ({DEFAULT_JSON})"
    )
    parser.add_argument("--port", type=int, help="the server's port (a free one)")
    parser.add_argument(
        "--keep-log",
        action="store_true",
        help=f"copy the server's log to {KEPT_LOG} (always done on FAIL)",
    )
    parser.add_argument("--seed", type=int, help="seed of the mutations (random)")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="comma-separated hostile kinds to run (all): " + ",".join(KINDS),
    )
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds: a subset of {','.join(KINDS)}")
    if args.good_clients < 1 or args.hostile_clients < 0:
        parser.error("--good-clients must be at least 1, --hostile-clients not negative")
    if min(args.quiet_seconds, args.hostile_seconds, args.after_seconds) < 0:
        parser.error("the phases cannot be negative")
    return Options(
        quiet_seconds=args.quiet_seconds,
        hostile_seconds=args.hostile_seconds,
        after_seconds=args.after_seconds,
        good_clients=args.good_clients,
        hostile_clients=args.hostile_clients,
        json_path=args.json.resolve(),
        port=args.port,
        keep_log=args.keep_log,
        seed=args.seed if args.seed is not None else random.randrange(1_000_000),
        kinds=kinds,
    )


async def hostile_main(config: Json) -> Json:
    """The hostile process: run the attackers for the phase; what they saw."""
    hostile = Hostile(config["port"], config["app"], config["seed"], config["kinds"])
    started = (trio.current_time(), time.process_time())
    until = started[0] + float(config["seconds"])
    async with trio.open_nursery() as watchers:
        watchers.start_soon(hostile.watch_loop_lag)
        with trio.move_on_at(until + 15):
            async with trio.open_nursery() as attackers:
                for index in range(int(config["clients"])):
                    attackers.start_soon(hostile.worker, index, until)
                    await trio.sleep(0.01)
        watchers.cancel_scope.cancel()
    elapsed = max(trio.current_time() - started[0], 1e-3)
    return {
        "obs": {kind: dict(notes) for kind, notes in hostile.obs.items()},
        "cpu_percent": round(100 * (time.process_time() - started[1]) / elapsed, 1),
        "loop_lag_max_ms": round(hostile.loop_lag * 1000, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--hostile-worker"]:
        config: Json = json.loads(Path(args[1]).read_text())
        result = trio.run(hostile_main, config)
        Path(config["out"]).write_text(json.dumps(result))
        return 0
    options = parse_options(args)
    return trio.run(drill_main, options)


if __name__ == "__main__":
    sys.exit(main())
