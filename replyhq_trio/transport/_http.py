"""The HTTP/1.1 front door: one h11 connection per TCP connection, keep-alive.

A request is routed by path to the Engine.IO endpoint (long-polling, WebSocket
handshakes and upgrades) or to an application route (REST, health, metrics, static
pages). A WebSocket handshake hands the TCP stream over for good; everything else
answers and waits for the next request on the same connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit

import attrs
import h11
import orjson
import trio

from ..config import ServerConfig

__all__ = [
    "BadRequest",
    "HttpConnection",
    "Request",
    "RequestTooLarge",
    "Response",
    "RouteHandler",
    "error_response",
    "json_response",
    "text_response",
]

log = logging.getLogger("replyhq_trio.http")

_READ_SIZE = 65536

_REASONS = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    415: b"Unsupported Media Type",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


@attrs.frozen(kw_only=True)
class Request:
    """An HTTP request head (the body is read separately, on demand).

    Attributes:
        method: Upper case (``GET``).
        path: The decoded path without the query.
        query: Query parameters (the last value wins for a repeated name).
        headers: Lower-case names; repeated headers joined with ``", "``.
        remote: The client's address as ``host:port``.
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    remote: str

    @property
    def wants_upgrade(self) -> bool:
        """Whether this is a WebSocket opening handshake."""
        return (
            self.headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in self.headers.get("connection", "").lower()
        )


@attrs.frozen
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "text/plain; charset=UTF-8"


def text_response(status: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, text.encode(), tuple(headers))


def json_response(status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, body, tuple(headers), "application/json")


def error_response(
    status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """The JSON error body of every route: ``{"error": {"code", "message"}}``."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return json_response(status, body, headers)


RouteHandler = Callable[[Request, "HttpConnection"], Awaitable[Response]]


class RequestTooLarge(Exception):
    """The request body is larger than allowed; the answer is 413 and the connection closes."""


class BadRequest(Exception):
    """The request could not be read (malformed, or too slow); the connection closes.

    Attributes:
        status: 400, or 408 for a body that did not arrive in time.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpConnection:
    """The server side of one HTTP/1.1 connection.

    Args:
        stream: The accepted TCP stream (owned by the caller).
        config: Limits and timeouts.
        remote: The peer's address, for logs and requests.
    """

    def __init__(self, stream: trio.SocketStream, config: ServerConfig, remote: str) -> None:
        self.stream = stream
        self.remote = remote
        self._config = config
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_bytes)
        self._first = True

    # --- reading ------------------------------------------------------------------

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(_READ_SIZE)
                self._h11.receive_data(data)
                continue
            return event  # type: ignore[return-value]

    async def next_request(self) -> Request | None:
        """Wait for the next request head; ``None`` when the connection should end.

        The first request must arrive within the handshake timeout (a slow client
        holds nothing but this task); later ones within the keep-alive timeout.
        """
        if not self._first:
            if not await self._finish_request():
                return None
            if self._h11.our_state is h11.MUST_CLOSE or self._h11.their_state is h11.MUST_CLOSE:
                return None
            try:
                self._h11.start_next_cycle()
            except h11.LocalProtocolError:
                return None
        timeout = self._config.handshake_timeout if self._first else self._config.keep_alive_timeout
        self._first = False
        with trio.move_on_after(timeout):
            try:
                event = await self._next_event()
            except h11.RemoteProtocolError as exc:
                await self._send_error(exc.error_status_hint)
                return None
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if isinstance(event, h11.Request):
                return _to_request(event, self.remote)
            return None
        return None

    async def _finish_request(self) -> bool:
        """Read what is left of the previous request (a body nobody read, its end).

        Returns False when the connection cannot carry another request.
        """
        discarded = 0
        try:
            with trio.move_on_after(self._config.handshake_timeout) as scope:
                while self._h11.their_state is h11.SEND_BODY:
                    event = await self._next_event()
                    if isinstance(event, h11.Data):
                        discarded += len(event.data)
                        if discarded > self._config.max_request_body:
                            return False
            return not scope.cancelled_caught
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False

    async def read_body(self, limit: int) -> bytes:
        """The request body, up to ``limit`` bytes.

        Raises:
            RequestTooLarge: the body (announced or received) exceeds ``limit``.
            BadRequest: the body is malformed, cut short, or too slow.
        """
        chunks: list[bytes] = []
        size = 0
        try:
            with trio.fail_after(self._config.handshake_timeout):
                while True:
                    event = await self._next_event()
                    if isinstance(event, h11.Data):
                        size += len(event.data)
                        if size > limit:
                            raise RequestTooLarge
                        chunks.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        return b"".join(chunks)
                    else:
                        raise BadRequest(400, "the request body ended early")
        except trio.TooSlowError:
            raise BadRequest(408, "the request body did not arrive in time") from None
        except h11.RemoteProtocolError as exc:
            raise BadRequest(400, f"malformed request body: {exc}") from None

    def content_length(self, request: Request) -> int | None:
        value = request.headers.get("content-length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    # --- writing ------------------------------------------------------------------

    async def send(self, response: Response, *, close: bool = False) -> bool:
        """Send a complete response; ``close`` ends the connection after it.

        Returns whether it was written (False when the client is gone).
        """
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            *response.headers,
        ]
        if close:
            headers.append(("connection", "close"))
        reason = _REASONS.get(response.status, b"")
        try:
            data = self._h11.send(
                h11.Response(status_code=response.status, headers=headers, reason=reason)
            )
            assert data is not None
            if response.body:
                more = self._h11.send(h11.Data(data=response.body))
                assert more is not None
                data += more
            end = self._h11.send(h11.EndOfMessage())
            assert end is not None
            await self.stream.send_all(data + end)
        except h11.LocalProtocolError:
            log.debug(
                "%s: response not sent, the connection is in state %s",
                self.remote,
                self._h11.our_state,
            )
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def switch_protocols(self, headers: list[tuple[str, str]]) -> bytes:
        """Answer ``101 Switching Protocols``; returns bytes the client sent after its request."""
        data = self._h11.send(h11.InformationalResponse(status_code=101, headers=headers))
        assert data is not None
        await self.stream.send_all(data)
        trailing, _closed = self._h11.trailing_data
        return bytes(trailing)

    async def _send_error(self, status: int) -> None:
        await self.send(text_response(status, _REASONS.get(status, b"error").decode()), close=True)

    @property
    def must_close(self) -> bool:
        return self._h11.our_state is h11.MUST_CLOSE

    def body_pending(self) -> bool:
        """Whether the current request still has body bytes to read."""
        return self._h11.their_state is h11.SEND_BODY


def _to_request(event: h11.Request, remote: str) -> Request:
    target = event.target.decode("latin-1")
    split = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(
        method=event.method.decode("ascii"),
        path=split.path,
        query=dict(parse_qsl(split.query, keep_blank_values=True)),
        headers=headers,
        remote=remote,
    )
