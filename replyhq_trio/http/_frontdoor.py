"""One task per TCP connection: read HTTP requests, route them, keep the connection alive.

This task is also the exception boundary of everything served on its connection
(including a WebSocket session, which runs in it): an exception is logged with the
peer's address and closes this connection only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import trio

from ..config import ServerConfig
from ..transport import (
    BadRequest,
    HttpConnection,
    Request,
    Response,
    error_response,
    text_response,
)
from ._engineio import EngineIOEndpoint, Takeover
from ._router import Router

__all__ = ["FrontDoor"]

log = logging.getLogger("replyhq_trio.http")


def _peer(stream: trio.SocketStream) -> str:
    try:
        name = stream.socket.getpeername()
    except OSError:
        return "unknown"
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name) or "local"  # a Unix socket: no address


class FrontDoor:
    """Serves HTTP on accepted TCP connections.

    Args:
        config: Server settings.
        endpoints: Engine.IO endpoints by path (``/v1/socket.io/``).
        router: Application routes.
        draining: Whether the server is shutting down: requests that would start
            something new get 503, while the sessions already open keep working.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        endpoints: Mapping[str, EngineIOEndpoint],
        router: Router,
        draining: Callable[[], bool],
    ) -> None:
        self._config = config
        self._endpoints = dict(endpoints)
        self._router = router
        self._draining = draining

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one TCP connection until it closes (the listener's handler)."""
        remote = _peer(stream)
        takeover = None
        try:
            takeover = await self._serve(stream, remote)
            if takeover is not None:
                # The HTTP side is gone from this frame (its parser, the request): the
                # WebSocket lives here for hours and should hold only what it needs.
                await takeover()
        except Exception:
            log.exception("connection from %s failed", remote)
        finally:
            if takeover is None:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await stream.aclose()

    async def _serve(self, stream: trio.SocketStream, remote: str) -> Takeover | None:
        http = HttpConnection(stream, self._config, remote)
        try:
            return await self._requests(http)
        except BadRequest as exc:
            log.info("%s: %s", remote, exc)
            await http.send(text_response(exc.status, str(exc)), close=True)
            return None

    async def _requests(self, http: HttpConnection) -> Takeover | None:
        while True:
            request = await http.next_request()
            if request is None:
                return None
            endpoint = self._endpoints.get(request.path)
            if endpoint is not None:
                if self._draining() and "sid" not in request.query:
                    await http.send(_SHUTTING_DOWN, close=True)
                    return None
                takeover = await endpoint.handle(request, http)
                if takeover is not None:
                    return takeover
                continue
            found = self._router.find(request.method, request.path)
            if self._draining() and (found is None or not found[1]):
                await http.send(_SHUTTING_DOWN, close=True)
                return None
            if found is None:
                await http.send(self._not_routed(request))
            else:
                await http.send(await found[0](request, http))

    def _not_routed(self, request: Request) -> Response:
        if self._router.knows_path(request.path):
            return error_response(405, "METHOD_NOT_ALLOWED", "this path takes another method")
        return error_response(404, "NOT_FOUND", "no such resource")


#: Requests that would start something new while the server drains.
_SHUTTING_DOWN = error_response(
    503,
    "SHUTTING_DOWN",
    "this server is shutting down: retry shortly (another node will answer)",
    [("retry-after", "1")],
)
