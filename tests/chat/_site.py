"""A ReplyHQ server on a real store for one test, and the calls a device makes to it.

``open_site(db_url)`` migrates the store, creates an app, serves the chat application on a
free port and yields a :class:`Site`: its URL, the app's credentials, and REST calls made
over real HTTP. Every payload the tests receive can be checked against the contract with
:func:`conforms` (the same ``protocol/schemas`` SDK authors read).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import trio

from replyhq_trio.app import build_server
from replyhq_trio.backends import open_presence, open_store
from replyhq_trio.backends.redis_backplane import RedisBackplane, RedisBackplaneConfig
from replyhq_trio.chat import ChatSettings, Contract, RateLimits
from replyhq_trio.ports import NewApp, Presence, Store
from replyhq_trio.server import Server
from replyhq_trio.settings import Settings

from .. import _redis
from .._raw import HttpResponse, http
from ..interop._peers import Notice, Peer

PATH = "/v1/socket.io"
#: Short enough for a test to wait for typing to stop by itself.
TYPING_TIMEOUT = 0.5
#: The tests of other features connect and send far more than a device would.
UNLIMITED = RateLimits(messages=0, typing=0, connections=0, connects=0)


def chat_settings(**settings: Any) -> ChatSettings:
    """The chat settings of a test site: short typing timeout, no rate limits, unless
    given."""
    settings.setdefault("typing_timeout", TYPING_TIMEOUT)
    settings.setdefault("limits", UNLIMITED)
    return ChatSettings(**settings)


@functools.cache
def contract() -> Contract:
    return Contract()


def conforms(
    namespace: str, direction: str, event: str, payload: Any, part: str = "payload"
) -> Any:
    """Assert ``payload`` matches the contract's schema for the event; returns it."""
    c = contract()
    schema = c.index[namespace.strip("/")][direction][event][part]
    c.check(schema, payload)
    return payload


@attrs.frozen(kw_only=True)
class Site:
    url: str
    port: int
    app: NewApp
    store: Store
    server: Server

    @property
    def app_id(self) -> str:
        return self.app.app.id

    def auth(self, device_id: str) -> dict[str, str]:
        return {"app_id": self.app_id, "device_id": device_id, "api_key": self.app.api_key}

    def device_headers(self, device_id: str) -> list[tuple[str, str]]:
        return [
            ("x-app-id", self.app_id),
            ("x-device-id", device_id),
            ("x-api-key", self.app.api_key),
        ]

    def agent_headers(self) -> list[tuple[str, str]]:
        return [("x-app-id", self.app_id), ("authorization", f"Bearer {self.app.admin_token}")]

    async def rest(
        self,
        method: str,
        target: str,
        body: Any = None,
        *,
        headers: Sequence[tuple[str, str | bytes]],
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """One REST call; the status and the decoded JSON body."""
        raw = b"" if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
        extra = [("content-type", content_type)] if raw else []
        response: HttpResponse = await http(self.port, method, target, raw, [*headers, *extra])
        return response.status, orjson.loads(response.body) if response.body else None

    async def new_conversation(self, device_id: str) -> dict[str, Any]:
        status, conversation = await self.rest(
            "POST", "/v1/conversations", {}, headers=self.device_headers(device_id)
        )
        assert status == 201, conversation
        return dict(conversation)

    async def history(
        self, conversation_id: str, device_id: str, after: str | None = None
    ) -> list[Any]:
        """Every message after ``after``, paging through the REST API."""
        messages: list[Any] = []
        while True:
            query = f"?limit=200&after={after}" if after else "?limit=200"
            status, page = await self.rest(
                "GET",
                f"/v1/conversations/{conversation_id}/messages{query}",
                headers=self.device_headers(device_id),
            )
            assert status == 200, page
            messages.extend(page["messages"])
            if not page["has_more"]:
                return messages
            after = page["messages"][-1]["id"]


@asynccontextmanager
async def _presence(redis_url: str | None, prefix: str) -> AsyncIterator[Presence]:
    """In memory, or in Redis under ``prefix`` (deleted after)."""
    if redis_url is None:
        async with open_presence(None) as memory:
            yield memory
        return
    try:
        async with open_presence(redis_url, key_prefix=prefix) as shared:
            yield shared
    finally:
        await _redis.delete_prefix(redis_url, prefix)


@asynccontextmanager
async def open_site(
    db_url: str,
    *,
    chat: ChatSettings | None = None,
    store_timeout: float = 5.0,
    redis_url: str | None = None,
    key_prefix: str | None = None,
    **settings: Any,
) -> AsyncIterator[Site]:
    """Serve the chat application on a fresh, migrated store at ``db_url``, with presence
    in memory or, given ``redis_url``, in Redis (under ``key_prefix``: another node of the
    same deployment; by default one of its own)."""
    settings.setdefault("grace_period", 0.5)
    prefix = key_prefix or _redis.new_prefix()
    async with (
        open_store(db_url, migrate=True, timeout=store_timeout) as store,
        _presence(redis_url, prefix) as presence,
    ):
        app = await store.create_app("Test app")
        backplane = None
        if redis_url is not None:
            backplane = RedisBackplane(
                redis_url, config=RedisBackplaneConfig(key=f"{prefix}socket.io")
            )
        server = build_server(
            Settings(port=0, **settings),
            store,
            presence=presence,
            backplane=backplane,
            chat_settings=chat or chat_settings(),
        )
        async with trio.open_nursery() as nursery:
            port: int = await nursery.start(server.serve)
            try:
                yield Site(
                    url=f"http://127.0.0.1:{port}", port=port, app=app, store=store, server=server
                )
            finally:
                server.shutdown()


async def connect_device(
    peer: Peer, socket: str, site: Site, device_id: str, transports: tuple[str, ...], **options: Any
) -> Notice:
    """Connect a device to ``/client``; returns its ``connected`` event (checked)."""
    result = await peer.connect(
        socket, site.url, "/client", site.auth(device_id), transports, path=PATH, **options
    )
    assert result.connected, result
    connected = await peer.next_event(socket, "connected")
    (payload,) = connected.args
    conforms("/client", "server_to_client", "connected", payload)
    assert payload["connection_id"] == result.sid
    return connected


async def connect_admin(
    peer: Peer, socket: str, site: Site, transports: tuple[str, ...], **options: Any
) -> Notice:
    """Connect the app's admin to ``/admin``; returns its ``connected`` event (checked)."""
    auth = {"app_id": site.app_id, "admin_token": site.app.admin_token}
    result = await peer.connect(socket, site.url, "/admin", auth, transports, path=PATH, **options)
    assert result.connected, result
    connected = await peer.next_event(socket, "connected")
    (payload,) = connected.args
    conforms("/admin", "server_to_client", "connected", payload)
    assert payload["connection_id"] == result.sid
    return connected
