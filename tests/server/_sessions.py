"""Servers on socket pairs, and sessions opened on them by hand."""

from __future__ import annotations

import socket
from typing import Any

import trio

from replyhq_trio.config import ServerConfig
from replyhq_trio.server import Server

from .._raw import RawWebSocket, http_on, websocket_handshake
from .._socketpairs import SocketPairListener

POLLING = "/v1/socket.io/?EIO=4&transport=polling"
WEBSOCKET = "/v1/socket.io/?EIO=4&transport=websocket"


def server(**settings: Any) -> Server:
    settings.setdefault("grace_period", 0.05)
    settings.setdefault("close_timeout", 0.2)
    return Server(ServerConfig(port=0, **settings))


def shrink(stream: trio.SocketStream) -> None:
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def connect_namespace(ws: RawWebSocket, namespace: str) -> None:
    assert isinstance(await ws.receive(), str)  # the open packet
    await ws.send_text(f"40{namespace},")
    accepted = await ws.receive_skipping_pings()
    assert isinstance(accepted, str)
    assert accepted.startswith(f"40{namespace},")


async def join_websocket(
    listener: SocketPairListener, namespace: str, *, small: bool = False
) -> RawWebSocket:
    stream = await listener.connect()
    if small:
        shrink(stream)
    ws = await websocket_handshake(stream, WEBSOCKET)
    await connect_namespace(ws, namespace)
    return ws


async def join_polling(stream: trio.SocketStream, namespace: str) -> str:
    """Open a long-polling session on ``stream`` and connect ``namespace``; returns the sid."""
    import orjson

    opened = await http_on(stream, "GET", POLLING)
    assert opened.status == 200, opened
    sid = orjson.loads(opened.text[1:])["sid"]
    posted = await http_on(stream, "POST", f"{POLLING}&sid={sid}", f"40{namespace},".encode())
    assert posted.status == 200, posted
    reply = await http_on(stream, "GET", f"{POLLING}&sid={sid}")
    assert reply.text.startswith(f"40{namespace},"), reply
    return str(sid)
