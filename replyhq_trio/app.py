"""The ReplyHQ server: the chat application wired onto the Socket.IO server.

::

    open_asyncio_bridge()          the one asyncio loop (PostgreSQL, Redis only), closed last
    └── open_store(url)            SQLite or PostgreSQL, migrated at start, closed after
        └── open_presence(redis)   sessions and presence: in memory, or shared in Redis
            └── serve_until_signalled  the server: /client, /admin, REST, health,
                                       the dashboard; SIGTERM drains
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import trio

from .backends import open_presence, open_store, rate_limiter_for
from .backends.memory import MemoryPresence
from .backends.redis_backplane import RedisBackplane, RedisBackplaneConfig
from .chat import (
    AdminNamespace,
    ChatService,
    ChatSettings,
    ChatStats,
    ClientNamespace,
    Contract,
    Limits,
    Sessions,
)
from .http_api import Dashboard, Health, RestApi
from .hub import Hub
from .metrics import Metrics
from .ports import NewApp, Presence, Store
from .server import Server, serve_until_signalled
from .settings import Settings

__all__ = ["build_server", "serve"]

log = logging.getLogger("replyhq_trio")


def build_server(
    settings: Settings,
    store: Store,
    *,
    presence: Presence | None = None,
    backplane: RedisBackplane | None = None,
    chat_settings: ChatSettings | None = None,
) -> Server:
    """The server with the chat application on it (not yet serving). Without
    ``presence`` and ``backplane``, sessions, presence, rate limits and broadcasts live in
    this process (a single node); with Redis ones, nodes share them (rate limits go
    with presence), and ``/readyz`` checks Redis."""
    presence = presence or MemoryPresence()
    redis_check: Callable[[], Awaitable[None]] | None = None
    if backplane is not None:
        shared_presence, shared_backplane = presence, backplane

        async def redis_check() -> None:
            await shared_presence.check()
            await shared_backplane.check()

    server = Server(
        settings.server_config(), hub=Hub(node_id=presence.node_id, backplane=backplane)
    )
    chat_settings = chat_settings or settings.chat_settings()
    contract = Contract()
    # Counted by name: the contract's events; anything else a client sends is "other".
    server.hub.stats.count_events(
        received=contract.event_names("client_to_server"),
        sent=contract.event_names("server_to_client"),
    )
    stats = ChatStats()
    limits = Limits(rate_limiter_for(presence), presence, chat_settings.limits, stats)
    chat = ChatService(
        hub=server.hub,
        store=store,
        contract=contract,
        settings=chat_settings,
        limits=limits,
        stats=stats,
    )
    sessions = Sessions(hub=server.hub, presence=presence)
    server.admit_with(
        lambda remote, headers: limits.handshake_wait(chat.client_address(remote, headers))
    )
    ClientNamespace(chat, sessions).register(server.namespace("/client"))
    admin = AdminNamespace(chat, sessions, recheck_interval=chat_settings.token_recheck_interval)
    admin.register(server.namespace("/admin"))
    server.add_service(chat.run)
    server.add_service(sessions.run)
    server.add_service(admin.run)
    server.on_drain(chat.announce_shutdown)

    rest = RestApi(chat, max_body=server.config.max_request_body)
    for method in ("GET", "POST"):
        server.route(method, "/v1/conversations")(rest.conversations)
        server.route(method, "/v1/conversations/", prefix=True)(rest.messages)
    health = Health({"store": store.check, "redis": redis_check}, draining=lambda: server.draining)
    server.route("GET", "/healthz", while_draining=True)(health.healthz)
    server.route("GET", "/readyz", while_draining=True)(health.readyz)
    metrics = Metrics(
        server.hub,
        chat.stats,
        dependencies=health.check_dependencies,
        backplane=backplane.stats if backplane is not None else None,
    )
    server.route("GET", "/metrics", while_draining=True)(metrics.handle)
    dashboard = Dashboard()
    server.route("GET", "/dashboard")(dashboard.redirect)
    server.route("GET", "/dashboard/", prefix=True)(dashboard.serve)
    return server


def _print(line: str) -> None:
    print(line, flush=True)  # shown once: it must not sit in a buffer


def print_new_app(app: NewApp, *, title: str, out: Callable[[str], None] = _print) -> None:
    out(title)
    out(f"  app_id:      {app.app.id}")
    out(f"  api_key:     {app.api_key}")
    out(f"  admin_token: {app.admin_token}")
    out("  (the key and the token are shown once: they are stored hashed)")


def _asyncio_if_needed(settings: Settings) -> AbstractAsyncContextManager[object]:
    """The asyncio loop, for PostgreSQL and Redis only: an embedded (SQLite) server never
    loads trio-asyncio."""
    if settings.database_url.partition(":")[0].lower() == "sqlite" and not settings.redis_url:
        return contextlib.nullcontext()
    from .backends import open_asyncio_bridge  # imports trio-asyncio, which patches asyncio

    return open_asyncio_bridge()


async def serve(
    settings: Settings, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Open the store, make a demo app on an empty one, and serve until a signal."""
    async with (
        _asyncio_if_needed(settings),
        open_store(settings.database_url, migrate=True) as store,
        open_presence(
            settings.redis_url,
            node_id=settings.node_id,
            required=settings.redis_required,
            key_prefix=settings.redis_key_prefix,
        ) as presence,
    ):
        if await store.count_apps() == 0:
            demo = await store.create_app("Demo")
            print_new_app(demo, title="An empty store: created a demo app. Its credentials:")
        backplane = None
        if settings.redis_url:
            backplane = RedisBackplane(
                settings.redis_url, config=RedisBackplaneConfig(key=settings.channel_key)
            )
        server = build_server(settings, store, presence=presence, backplane=backplane)
        await serve_until_signalled(server, task_status=task_status)
