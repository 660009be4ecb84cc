"""The bench application on python-socketio: the baseline, under uvicorn.

The same contract as ``app_replyhq.py`` (``join``, ``echo``, ``say`` on ``/``). It runs
in ``.bench/venv`` (python-socketio, uvicorn, uvloop, httptools, websockets, wsproto),
started by ``scripts/bench`` as::

    python -m uvicorn app_python_socketio:app --app-dir scripts/_lib/bench \\
        --loop uvloop --http httptools --ws websockets --log-level warning ...

so this module needs nothing but ``socketio``.
"""

from __future__ import annotations

from typing import Any

import socketio

sio = socketio.AsyncServer(
    async_mode="asgi",
    ping_interval=25,
    ping_timeout=60,
    max_http_buffer_size=1_000_000,
    logger=False,
    engineio_logger=False,
)


async def join(sid: str, data: dict[str, Any]) -> bool:
    await sio.enter_room(sid, str(data["room"]))
    return True


async def echo(sid: str, *args: Any) -> tuple[Any, ...]:
    # A tuple is sent as the ack's arguments, one by one.
    return args


async def say(sid: str, data: dict[str, Any]) -> None:
    await sio.emit("msg", data, to=str(data["room"]), skip_sid=sid)


# Registered by call rather than as decorators: socketio has no type hints.
sio.on("join", join)
sio.on("echo", echo)
sio.on("say", say)

app = socketio.ASGIApp(sio)
