"""The Engine.IO endpoint: handshakes, long-polling requests, WebSockets and upgrades.

Engine.IO v4 over HTTP (https://github.com/socketio/engine.io-protocol). Nothing is
allocated for a connection (no session, task or buffer) before its handshake request
is valid and under the connection cap. Error answers carry the reference server's
JSON body (``{"code": 1, "message": "Session ID unknown"}``), which its clients log.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import logging
import math
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping

import attrs
import orjson
import trio

from ..config import ServerConfig
from ..sansio import (
    DisconnectReason,
    LocalProtocolError,
    RemoteProtocolError,
    Transport,
    WebSocketCloseCode,
    decode_payload,
    encode_payload,
    limit_exceeded,
)
from ..sansio.websocket import (
    CloseReceived,
    FrameDecoder,
    PingReceived,
    Role,
    accept_key,
    encode_close,
    encode_pong,
    encode_text,
)
from ..session import EngineSession, HandshakeInfo
from ..transport import (
    CorsPolicy,
    HttpConnection,
    Request,
    RequestTooLarge,
    Response,
    json_response,
)

__all__ = [
    "Admission",
    "EngineIOEndpoint",
    "SessionFactory",
    "SessionTable",
    "Takeover",
    "new_sid",
]

log = logging.getLogger("replyhq_trio.engineio")

#: Makes the session for a valid handshake: (sid, transport, handshake) -> session.
SessionFactory = Callable[[str, Transport, HandshakeInfo], EngineSession]
#: What a connection becomes after a WebSocket handshake: awaited by its task.
Takeover = Callable[[], Awaitable[None]]
#: Told a new polling session's peer (``host:port``) and request headers: seconds it must
#: wait (0: admitted).
Admission = Callable[[str, Mapping[str, str]], Awaitable[float]]


def new_sid() -> str:
    """An unguessable session id (120 random bits, URL-safe, like the reference server's)."""
    return secrets.token_urlsafe(15)


def _error(status: int, code: int, message: str) -> Response:
    return json_response(status, orjson.dumps({"code": code, "message": message}))


_TRANSPORT_UNKNOWN = (0, "Transport unknown")
_SESSION_UNKNOWN = (1, "Session ID unknown")
_BAD_METHOD = (2, "Bad handshake method")
_BAD_REQUEST = (3, "Bad request")
_FORBIDDEN = (4, "Forbidden")
_BAD_VERSION = (5, "Unsupported protocol version")


_UPGRADE_SETTLE = 0.1


class SessionTable:
    """The live sessions of one endpoint, by sid, with a cap on their number."""

    def __init__(self, max_sessions: int) -> None:
        self._sessions: dict[str, EngineSession] = {}
        self._max = max_sessions
        self._emptied = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[EngineSession]:
        return iter(list(self._sessions.values()))

    @property
    def full(self) -> bool:
        return len(self._sessions) >= self._max

    def get(self, sid: str) -> EngineSession | None:
        return self._sessions.get(sid)

    def add(self, session: EngineSession) -> None:
        self._sessions[session.sid] = session

    def remove(self, session: EngineSession) -> None:
        if self._sessions.get(session.sid) is session:
            del self._sessions[session.sid]
            if not self._sessions:
                self._emptied.unpark_all()

    async def wait_empty(self) -> None:
        """Wait until no session is left."""
        while self._sessions:
            await self._emptied.park()


class EngineIOEndpoint:
    """Serves one Engine.IO path.

    Args:
        config: Server settings.
        table: Where live sessions are found by sid (and counted against the cap).
        factory: Makes the session of a valid handshake.
        sessions_nursery: Where long-polling sessions run (they outlive the request
            that opened them).
        cors: The origin policy.
        draining: Whether the server is shutting down (new sessions get 503).
        admission: Told a polling handshake's peer (``host:port``) and headers, answers
            the seconds it must wait (0 admits it; else 429 with ``Retry-After``).
    """

    def __init__(
        self,
        *,
        config: ServerConfig,
        table: SessionTable,
        factory: SessionFactory,
        sessions_nursery: trio.Nursery,
        cors: CorsPolicy,
        draining: Callable[[], bool],
        admission: Admission | None = None,
    ) -> None:
        self._config = config
        self._admission = admission
        self._table = table
        self._factory = factory
        self._nursery = sessions_nursery
        self._cors = cors
        self._draining = draining

    async def handle(self, request: Request, http: HttpConnection) -> Takeover | None:
        """Answer one request.

        Returns what the connection becomes when the request opened a WebSocket: the
        caller drops the HTTP connection (its parser, the request) and awaits it, so a
        long-lived WebSocket holds none of them. ``None`` for a plain HTTP answer.
        """
        if not self._cors.allows(request):
            await http.send(_error(403, *_FORBIDDEN), close=True)
            return None
        cors = self._cors.headers(request)
        if request.method == "OPTIONS":
            await http.send(Response(204, headers=tuple(self._cors.preflight_headers(request))))
            return None
        query = request.query
        if query.get("EIO") != "4":
            await http.send(_error(400, *_BAD_VERSION), close=request.wants_upgrade)
            return None
        transport = query.get("transport")
        if transport not in ("polling", "websocket"):
            await http.send(_error(400, *_TRANSPORT_UNKNOWN), close=request.wants_upgrade)
            return None
        sid = query.get("sid")
        if sid is None:
            if transport == "polling":
                await self._polling_handshake(request, http, cors)
                return None
            return await self._websocket_handshake(request, http)
        session = self._table.get(sid)
        if session is not None:
            # A deadline that passed before this request arrived counts first (a
            # pong that is late is late, however the timer task was scheduled).
            session.catch_up(trio.current_time())
        if session is None or (session.closed and not _goodbye_pending(session, request)):
            await http.send(_error(400, *_SESSION_UNKNOWN), close=request.wants_upgrade)
            return None
        if transport == "websocket":
            return await self._upgrade(session, request, http)
        if request.method == "GET":
            await self._poll(session, http, cors)
        elif request.method == "POST":
            await self._post(session, request, http, cors)
        else:
            await http.send(_error(400, *_BAD_METHOD))
        return None

    # --- handshakes ---------------------------------------------------------------

    def _refuse_new(self) -> Response | None:
        if self._draining():
            return _error(503, 3, "Server shutting down")
        if self._table.full:
            return _error(503, 3, "Too many connections")
        return None

    def _info(self, request: Request, transport: Transport) -> HandshakeInfo:
        return HandshakeInfo(
            remote_address=request.remote,
            query=request.query,
            headers=request.headers,
            transport=transport,
        )

    async def _polling_handshake(
        self, request: Request, http: HttpConnection, cors: list[tuple[str, str]]
    ) -> None:
        if request.method != "GET":
            await http.send(_error(400, *_BAD_METHOD))
            return
        refusal = self._refuse_new()
        if refusal is not None:
            await http.send(refusal)
            return
        if self._admission is not None:
            wait = await self._admission(request.remote, request.headers)
            if wait > 0:
                retry_after = str(math.ceil(wait))
                await http.send(
                    attrs.evolve(
                        _error(429, 3, "Too many connection attempts"),
                        headers=(("Retry-After", retry_after), *cors),
                    )
                )
                return
            refusal = self._refuse_new()  # it may have filled up while this waited
            if refusal is not None:
                await http.send(refusal)
                return
        session = self._factory(
            new_sid(), Transport.POLLING, self._info(request, Transport.POLLING)
        )
        # Counted at once, before anything yields: handshakes arriving together must
        # not all pass the cap.
        self._table.add(session)
        handshake = session.core.frames_to_send()
        try:
            await self._nursery.start(self._serve_polling, session)
        except BaseException:
            self._table.remove(session)
            raise
        await http.send(Response(200, encode_payload(handshake).encode(), tuple(cors)))

    async def _serve_polling(
        self, session: EngineSession, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            await session.run(task_status=task_status)
        finally:
            self._table.remove(session)

    async def _websocket_handshake(self, request: Request, http: HttpConnection) -> Takeover | None:
        headers = _accept_websocket(request)
        if headers is None:
            await http.send(_error(400, *_BAD_REQUEST), close=True)
            return None
        refusal = self._refuse_new()
        if refusal is not None:
            await http.send(refusal, close=True)
            return None
        session = self._factory(
            new_sid(), Transport.WEBSOCKET, self._info(request, Transport.WEBSOCKET)
        )
        self._table.add(session)  # counted before anything yields (see above)
        try:
            pending = await http.switch_protocols(headers)
        except BaseException:
            self._table.remove(session)
            raise
        return functools.partial(self._serve_websocket, session, http.stream, pending)

    async def _serve_websocket(
        self, session: EngineSession, stream: trio.SocketStream, pending: bytes
    ) -> None:
        try:
            await session.run(websocket=stream, pending=pending)
        finally:
            self._table.remove(session)

    # --- long-polling ------------------------------------------------------------

    async def _poll(
        self, session: EngineSession, http: HttpConnection, cors: list[tuple[str, str]]
    ) -> None:
        if session.upgrading:
            # Like the reference server, which sends probe noops every 100 ms: a poll
            # arriving mid-upgrade waits that long for the upgrade to settle, and is
            # refused if the session moved to the WebSocket meanwhile.
            with trio.move_on_after(_UPGRADE_SETTLE):
                await session.wait_upgrade_settled()
        queue = session.polling
        if queue is None or session.core.transport is Transport.WEBSOCKET:
            # Upgraded: the sid is no longer valid for polling.
            await http.send(_error(400, *_BAD_REQUEST))
            return
        if queue.poll_pending:
            # Engine.IO v4: a second concurrent GET ends the session; the first one
            # receives the close packet.
            session.close(DisconnectReason.PROTOCOL_ERROR)
            await http.send(_error(400, *_BAD_REQUEST))
            return
        queue.poll_pending = True
        try:
            with trio.move_on_after(self._config.poll_timeout):
                await queue.wait()
            frames = queue.take()
        finally:
            queue.poll_pending = False
        body = encode_payload(frames or ["6"])
        if not await http.send(Response(200, body.encode(), tuple(cors))) and frames:
            # The poll's connection died with packets in it: they are lost, so the
            # session ends (as the reference server does) and the client reconnects and
            # catches up, instead of living on with a gap.
            session.abort(DisconnectReason.TRANSPORT_ERROR)

    async def _post(
        self,
        session: EngineSession,
        request: Request,
        http: HttpConnection,
        cors: list[tuple[str, str]],
    ) -> None:
        queue = session.polling
        if queue is None:
            await http.send(_error(400, *_BAD_REQUEST))
            return
        if queue.post_pending:
            session.close(DisconnectReason.PROTOCOL_ERROR)
            await http.send(_error(400, *_BAD_REQUEST))
            return
        # The whole POST counts as pending, its frames' handling included: a second
        # one must not interleave its events with this one's (Engine.IO v4).
        queue.post_pending = True
        try:
            await self._handle_post(session, request, http, cors)
        finally:
            queue.post_pending = False

    async def _handle_post(
        self,
        session: EngineSession,
        request: Request,
        http: HttpConnection,
        cors: list[tuple[str, str]],
    ) -> None:
        limit = self._config.protocol.max_payload
        length = http.content_length(request)
        try:
            if length is not None and length > limit:
                raise RequestTooLarge
            body = await http.read_body(limit)
        except RequestTooLarge:
            session.refuse(limit_exceeded(f"payload exceeds {limit} bytes", http_status=413))
            await http.send(_error(413, *_BAD_REQUEST), close=True)
            return
        try:
            frames = decode_payload(
                body.decode("utf-8"),
                max_packets=self._config.protocol.max_payload_packets,
                max_payload=limit,
            )
        except UnicodeDecodeError:
            error = RemoteProtocolError("payload is not UTF-8")
            session.refuse(error)
            await http.send(_error(error.reply.http_status, *_BAD_REQUEST))
            return
        except RemoteProtocolError as exc:
            session.refuse(exc)
            await http.send(_error(exc.reply.http_status, *_BAD_REQUEST))
            return
        for frame in frames:
            # Backpressure holds the answer, and with it the client's next POST: while
            # its events wait for their handlers, and while what it was sent waits for
            # a poll.
            await session.wait_ready()
            await session.wait_for_room()
            refused = session.receive(frame, trio.current_time())
            if refused is not None and refused.reply.close is not None:
                await http.send(_error(refused.reply.http_status, *_BAD_REQUEST))
                return
            if session.closed:
                break
        await http.send(Response(200, b"ok", tuple(cors)))

    # --- the upgrade -------------------------------------------------------------

    async def _upgrade(
        self, session: EngineSession, request: Request, http: HttpConnection
    ) -> Takeover | None:
        headers = _accept_websocket(request)
        if headers is None:
            await http.send(_error(400, *_BAD_REQUEST), close=True)
            return None
        pending = await http.switch_protocols(headers)
        return functools.partial(self._probe_then_serve, session, http.stream, pending)

    async def _probe_then_serve(
        self, session: EngineSession, stream: trio.SocketStream, pending: bytes
    ) -> None:
        decoder = FrameDecoder(role=Role.SERVER, max_message_size=self._config.protocol.max_payload)
        decoder.receive_data(pending)
        code = WebSocketCloseCode.NORMAL
        try:
            # Engine.IO v4: a second WebSocket for a session (already upgraded, or
            # another probe under way) is accepted, then closed at once.
            session.begin_upgrade()
        except LocalProtocolError:
            await self._close_websocket(stream, WebSocketCloseCode.POLICY_VIOLATION)
            return
        try:
            with trio.fail_after(self._config.upgrade_timeout):
                while not await self._probe(session, stream, decoder):
                    data = await stream.receive_some(65536)
                    if not data:
                        raise trio.ClosedResourceError
                    decoder.receive_data(data)
            await session.serve_upgraded(stream, decoder)
            return
        except trio.TooSlowError:
            log.info("session %s: upgrade probe timed out", session.sid)
        except RemoteProtocolError as exc:
            code = WebSocketCloseCode(exc.reply.websocket_close_code)
        except LocalProtocolError:
            pass  # the session ended while probing
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        session.abort_upgrade()
        await self._close_websocket(stream, code)

    async def _close_websocket(self, stream: trio.SocketStream, code: int) -> None:
        with (
            trio.move_on_after(self._config.close_timeout),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(encode_close(code))
        await stream.aclose()

    async def _probe(
        self, session: EngineSession, stream: trio.SocketStream, decoder: FrameDecoder
    ) -> bool:
        """Handle the buffered probe frames; True once ``5`` completed the upgrade.

        Replies are written before the next frame is handled and without yielding to
        other tasks: a poll waiting for the upgrade to settle must not be answered
        before the client has its ``3probe``.
        """
        for message in decoder.events():
            if isinstance(message, str | bytes):
                replies = session.receive_probe(message, trio.current_time())
                await _write_first(
                    stream, b"".join(encode_text(r) for r in replies if isinstance(r, str))
                )
                if session.core.transport is Transport.WEBSOCKET:
                    return True
            elif isinstance(message, PingReceived):
                await _write_first(stream, encode_pong(message.payload))
            elif isinstance(message, CloseReceived):
                raise trio.ClosedResourceError
        return False


async def _write_first(stream: trio.SocketStream, data: bytes) -> None:
    """Write ``data`` now if the kernel takes it (no yield), else wait to write the rest."""
    if not data:
        return
    try:
        sent = os.write(stream.socket.fileno(), data)
    except BlockingIOError:
        sent = 0
    except OSError:
        raise trio.BrokenResourceError from None
    if sent < len(data):
        await stream.send_all(data[sent:])


def _goodbye_pending(session: EngineSession, request: Request) -> bool:
    """Whether a session the client just closed holds a noop for this (concurrent) GET.

    The client's close packet and its pending poll often arrive together; whichever
    is handled first, the poll gets the noop that ends it cleanly. Sessions the
    server closed are gone at once, as in the reference server.
    """
    queue = session.polling
    return (
        request.method == "GET"
        and session.close_reason is DisconnectReason.CLIENT_CLOSE
        and queue is not None
        and queue.pending
    )


def _accept_websocket(request: Request) -> list[tuple[str, str]] | None:
    """The 101 response headers for a valid RFC 6455 opening handshake, else None."""
    if request.method != "GET" or not request.wants_upgrade:
        return None
    if request.headers.get("sec-websocket-version") != "13":
        return None
    key = request.headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-accept", accept_key(key)),
    ]
