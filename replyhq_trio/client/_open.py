"""Opening a client: over a WebSocket URL, or over any open message transport."""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial

import trio
import trio_websocket

from ..sansio import RemoteProtocolError
from ._connection import Client
from ._engineio import DEFAULT_PATH, MessageTransport, engineio_url, parse_open_packet
from ._errors import ConnectFailed, ConnectionClosed, DisconnectReason
from ._nursery import open_unwrapping_nursery

__all__ = ["open_client", "open_client_on"]


@asynccontextmanager
async def open_client_on(
    transport: MessageTransport, *, connect_timeout: float = 10.0, queue_size: int = 256
) -> AsyncIterator[Client]:
    """Speak Engine.IO and Socket.IO over an open message transport.

    :func:`open_client` is this over a trio-websocket connection; tests can pass an
    in-memory fake. Waits for the open packet, runs the reader in a nursery of this
    context, and on leaving stops it and fails everything pending with
    :class:`ConnectionClosed` (``client_close``). The transport is not closed here.

    An exception from the body comes out as itself, not in an ``ExceptionGroup``: the
    reader never raises for wire reasons, so a lone error is the body's.

    Raises:
        ConnectFailed: no valid open packet within ``connect_timeout`` seconds.
    """
    try:
        with trio.fail_after(connect_timeout):
            open_packet = parse_open_packet(await transport.get_message())
    except (trio.TooSlowError, trio_websocket.ConnectionClosed, RemoteProtocolError) as exc:
        raise ConnectFailed(f"no Engine.IO handshake: {exc!r}") from exc
    client = Client(transport, open_packet, queue_size=queue_size)
    async with open_unwrapping_nursery() as nursery:
        nursery.start_soon(client._run_reader)
        try:
            yield client
        finally:
            client._end(ConnectionClosed(DisconnectReason.CLIENT_CLOSE))


@asynccontextmanager
async def open_client(
    url: str,
    *,
    path: str = DEFAULT_PATH,
    headers: Mapping[str, str] | None = None,
    connect_timeout: float = 10.0,
    close_timeout: float = 2.0,
    queue_size: int = 256,
) -> AsyncIterator[Client]:
    """Open one Engine.IO connection (WebSocket only) to the server at ``url``.

    Then join namespaces with :meth:`Client.connect`. Leaving the context stops the
    reader, fails whatever is pending with :class:`ConnectionClosed` (``client_close``)
    and closes the WebSocket with 1000 (after a protocol error of the server, 1002,
    or 1008 for a limit),
    waiting up to ``close_timeout`` seconds for the server's close frame, also when
    the context is left because of a cancellation. An exception from the body comes
    out as itself, not in an ``ExceptionGroup``.

    Args:
        url: The server's origin, e.g. ``"http://127.0.0.1:8080"`` (``ws``/``wss``
            work too); no path, the namespace goes to :meth:`Client.connect`.
        path: The Engine.IO endpoint (python-socketio's default is ``"/socket.io"``).
        headers: Extra HTTP headers for the WebSocket handshake.
        connect_timeout: Seconds for the WebSocket handshake plus the open packet.
        close_timeout: Seconds to wait for the close handshake on leaving.
        queue_size: Inbound events each socket buffers before the reader waits
            (see :class:`Socket`).

    Raises:
        ConnectFailed: the WebSocket could not be opened (network error, HTTP
            refusal, timeout) or no valid open packet came; ``__cause__`` says why.
        ValueError: ``url`` is not a usable origin.
    """
    ws_url = engineio_url(url, path)
    deadline = trio.current_time() + connect_timeout
    async with open_unwrapping_nursery() as nursery:
        ws, owner = await nursery.start(
            partial(_own_websocket, ws_url, headers or {}, connect_timeout, close_timeout)
        )
        client: Client | None = None
        try:
            remaining = max(0.0, deadline - trio.current_time())
            async with open_client_on(
                ws, connect_timeout=remaining, queue_size=queue_size
            ) as client:
                yield client
        finally:
            closed = client.closed if client is not None else None
            if closed is not None and closed.reason is DisconnectReason.PROTOCOL_ERROR:
                owner.close(closed.code or 1002)
            else:
                owner.close(1000)


class _Owner:
    """Tells the task that owns the WebSocket to close it."""

    def __init__(self) -> None:
        self.code = 1000
        self.requested = trio.Event()

    def close(self, code: int) -> None:
        self.code = code
        self.requested.set()


async def _own_websocket(
    ws_url: str,
    headers: Mapping[str, str],
    connect_timeout: float,
    close_timeout: float,
    *,
    task_status: trio.TaskStatus[tuple[trio_websocket.WebSocketConnection, _Owner]],
) -> None:
    # Opens the WebSocket, then holds it until told to close. Once open, this task is
    # shielded from outside cancellation: trio-websocket's reader task runs in the
    # nursery in here, and a close handshake needs it to read the server's reply. So a
    # client left by a cancellation still says goodbye, within close_timeout; the
    # client's context always calls _Owner.close on its way out.
    #
    # The TCP stream is opened and closed here rather than by open_websocket_url:
    # trio-websocket 0.12.2 never closes the client's stream when the server closes
    # first (aclose returns early once a close reason is set) or refuses the upgrade.
    parts = urllib.parse.urlsplit(ws_url)
    tls = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    owner = _Owner()
    deadline = trio.current_time() + connect_timeout
    with trio.CancelScope() as scope:
        try:
            with trio.fail_at(deadline):
                stream = await _open_stream(host, port, tls=tls)
        except (OSError, trio.TooSlowError) as exc:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc!r}") from exc
        try:
            async with open_unwrapping_nursery() as nursery:
                with trio.fail_at(deadline):
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        # The Host header: netloc keeps an IPv6 literal's brackets.
                        parts.netloc.rpartition("@")[2],
                        f"{parts.path}?{parts.query}",
                        extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
                        # Our reader drains this queue at once; a little slack lets
                        # the socket be read while it dispatches.
                        message_queue_size=16,
                        # Let Trio pick the read size (64 KiB), not 4 KiB a call.
                        receive_buffer_size=None,
                    )
                scope.shield = True
                task_status.started((ws, owner))
                await owner.requested.wait()
                with trio.move_on_after(close_timeout):
                    await ws.aclose(owner.code)
                # The reader would wait for the server to end TCP; nothing is left to read.
                nursery.cancel_scope.cancel()
        except (trio_websocket.HandshakeError, trio.TooSlowError) as exc:
            # HandshakeError: the server refused the upgrade (ConnectionRejected).
            raise ConnectFailed(f"WebSocket handshake with {ws_url} failed: {exc!r}") from exc
        finally:
            # aclose closes the socket even when cancelled; the deadline only bounds
            # a TLS close_notify.
            with trio.move_on_after(close_timeout):
                await stream.aclose()


async def _open_stream(
    host: str, port: int, *, tls: bool
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    if tls:
        context = ssl.create_default_context()
        return await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=context, https_compatible=True
        )
    return await trio.open_tcp_stream(host, port)
