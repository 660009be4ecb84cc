"""Nodes for the presence tests: presences opened in one process (one per "node", all on
the test's asyncio loop), each with its ``run`` started and its reports collected, that
a test can kill (its background work stops, its Redis connection stays: a hung node) or
close (it exits without disconnecting anything)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

import attrs
import trio

from replyhq_trio.backends import RedisPresence, RedisPresenceConfig, open_presence
from replyhq_trio.ports import Presence, PresenceChange, Session, SessionEnded

from .. import _redis

Event = SessionEnded | PresenceChange

#: Short timings for tests; liveness long enough that a busy test process is not
#: mistaken for a dead node (the reaping tests shorten it).
FAST = RedisPresenceConfig(
    connection_ttl=5.0,
    session_ttl=10.0,
    refresh_interval=1.0,
    node_ttl=3.0,
    heartbeat_interval=0.2,
    reap_interval=0.2,
    call_timeout=1.0,
    reconnect_min=0.05,
    reconnect_max=0.2,
    close_timeout=1.0,
)


@attrs.define(eq=False)
class Node:
    presence: Presence
    stack: AsyncExitStack
    events: list[Event] = attrs.Factory(list)
    run_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    finished: trio.Event = attrs.Factory(trio.Event)

    @property
    def redis(self) -> RedisPresence:
        assert isinstance(self.presence, RedisPresence)
        return self.presence

    def ended(self) -> list[SessionEnded]:
        return [e for e in self.events if isinstance(e, SessionEnded)]

    def changes(self) -> list[PresenceChange]:
        return [e for e in self.events if isinstance(e, PresenceChange)]

    async def report(self, event: Event) -> None:
        self.events.append(event)


class Cluster:
    def __init__(self, url: str | None, prefix: str, nursery: trio.Nursery) -> None:
        self.url = url
        self.prefix = prefix
        self.nodes: list[Node] = []
        self._nursery = nursery

    async def add(
        self,
        *,
        config: RedisPresenceConfig = FAST,
        node_id: str | None = None,
        url: str | None = None,
        required: bool = True,
    ) -> Node:
        stack = AsyncExitStack()
        presence = await stack.enter_async_context(
            open_presence(
                url or self.url,
                node_id=node_id,
                key_prefix=self.prefix,
                config=config,
                required=required,
            )
        )
        node = Node(presence, stack)
        self.nodes.append(node)
        await self._nursery.start(self._run, node)
        return node

    async def _run(self, node: Node, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with node.run_scope:
                await node.presence.run(node.report, task_status=task_status)
        finally:
            node.finished.set()

    async def kill(self, node: Node) -> None:
        """Stop the node's background work (no more heartbeats): a node that hangs."""
        node.run_scope.cancel()
        await node.finished.wait()

    async def close(self, node: Node) -> None:
        """The node's presence exits, disconnecting nothing."""
        await self.kill(node)
        await node.stack.aclose()

    async def keys(self) -> set[str]:
        assert self.url is not None
        return {k.removeprefix(self.prefix) for k in await _redis.keys(self.url, self.prefix)}


@asynccontextmanager
async def open_cluster(url: str | None) -> AsyncIterator[Cluster]:
    """Nodes on ``url`` (memory when None), under a key prefix of their own that is
    deleted afterwards."""
    prefix = _redis.new_prefix()
    try:
        async with trio.open_nursery() as nursery:
            cluster = Cluster(url, prefix, nursery)
            try:
                yield cluster
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(10):
                    for node in cluster.nodes:
                        await cluster.close(node)
    finally:
        if url is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await _redis.delete_prefix(url, prefix)


def new_session(owner: Node | Presence, device_id: str, *, app_id: str = "app_t") -> Session:
    """A new connection of the device on ``owner`` (a node, or a presence)."""
    presence = owner.presence if isinstance(owner, Node) else owner
    return Session(
        connection_id=f"c_{uuid.uuid4().hex[:16]}",
        app_id=app_id,
        device_id=device_id,
        connected_at=datetime.now(UTC),
        node_id=presence.node_id,
    )


def online(device_id: str, active: int = 1, *, app_id: str = "app_t") -> PresenceChange:
    return PresenceChange(
        app_id=app_id, device_id=device_id, is_online=True, active_connections=active
    )


def offline(device_id: str, *, app_id: str = "app_t") -> PresenceChange:
    return PresenceChange(app_id=app_id, device_id=device_id, is_online=False, active_connections=0)
