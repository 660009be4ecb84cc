"""Presence under connections that come and go faster than they register: no ghost
sessions, no device left online, crossings reported in pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from .._raw import open_websocket
from .._waiting import wait_for, wait_until
from ..interop._peers import Peer, open_peer
from ._site import Site, chat_settings, connect_admin, open_site


@pytest.fixture
async def site(tmp_path: Path, presence_url: str | None) -> Any:
    chat = chat_settings()
    async with open_site(
        f"sqlite:///{tmp_path / 'replyhq.db'}", chat=chat, redis_url=presence_url
    ) as opened:
        yield opened


@pytest.mark.parametrize("kind", ["python", "js"])
async def test_connections_dropped_while_registering_leave_no_ghost(kind: str, site: Site) -> None:
    """Devices that send CONNECT and vanish at once (TCP closed before any answer)
    leave no session and no device online; the admin hears every crossing both ways."""
    connect = "40/client," + orjson.dumps(site.auth("flaky")).decode()

    async def vanish(after_accept: bool) -> None:
        async with open_websocket(site.port, "/v1/socket.io/?EIO=4&transport=websocket") as ws:
            await ws.receive()  # the Engine.IO open
            await ws.send_text(connect)
            if after_accept:  # gone while the server registers the session
                assert str(await ws.receive()).startswith("40/client,")
        # leaving the block closes the TCP stream without a goodbye

    with trio.fail_after(60):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            await connect_admin(peer, "admin", site, ("websocket",))
            for _round in range(5):
                async with trio.open_nursery() as nursery:
                    for index in range(10):
                        nursery.start_soon(vanish, index % 2 == 0)
            await wait_until(lambda: not site.server.hub.sockets("/client"))

            # The hub forgets a socket before its disconnect handler has ended the
            # session: poll until the registry is empty (a ghost never leaves).
            async def no_sessions() -> bool:
                (listed,) = await peer.emit_with_ack(
                    "admin", "sessions:list", {"app_id": site.app_id}
                )
                return bool(listed["sessions"] == [])

            await wait_for(no_sessions)
            # Online and offline alternate, ending offline.
            await wait_until(lambda: _crossings(peer)[-1:] == [False])
            crossings = _crossings(peer)
            assert crossings == [True, False] * (len(crossings) // 2)


def _crossings(peer: Peer) -> list[bool]:
    return [
        n.args[0]["is_online"]
        for n in peer.buffered("admin")
        if n.kind == "event" and n.name == "presence:change"
    ]
