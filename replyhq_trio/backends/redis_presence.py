"""Presence and sessions shared by every node, in Redis (redis-py on the asyncio bridge).

:class:`RedisPresence` implements :class:`~replyhq_trio.ports.Presence` across nodes.
The keys and the Lua scripts are described in :mod:`._redis_scripts`; in short, each
connection has a TTL key and a session hash, each device a set of connection ids, each
app a set of sessions, and each node a liveness key and a hash of the connections it
registered.

Crossings. ``connect`` and ``disconnect`` are one Lua script each, so one EVALSHA, one
round trip: the script changes the device's set and returns its new size, and the call
that took it from 0 to 1 (or 1 to 0) is the only one that sees it, however many nodes
race on that device. On this node, the calls of one device are serialised (a lock per
device), so that their answers come back in the order Redis ran them.

Background work (:meth:`RedisPresence.run`): a heartbeat keeps this node's liveness key;
every ``refresh_interval`` one pipelined call extends the TTLs of all of this node's
connections; every ``reap_interval`` the node looks for nodes whose liveness key has
expired and removes their connections, one atomic script per batch (two reapers never
report the same session), reporting ``SessionEnded(reason="node_lost")`` with the
offline crossing when there is one.

Calls queue for one of ``max_connections`` slots (so that a burst is not taken for an
outage: the timeout starts once a call has its slot), then get ``call_timeout``.

Outages. A call that fails or does not answer within ``call_timeout`` puts the node in
the "away" state (logged once): from then on, and until it is back, ``connect`` and
``disconnect`` only update this node's own record and return None (the caller still
tells this node's admins of the session itself; the crossing, if any, is reported later
through ``run``), and ``sessions`` and ``active_connections`` answer from that record.
``run`` tries again with exponential backoff; when Redis answers, it re-registers every
live connection of this node (the connect script again, which is idempotent) and removes
those that ended meanwhile (the disconnect script), reporting the crossings this causes,
then returns to normal. Calls whose answer was lost (a timeout after Redis ran them) are
settled the same way: the connect script remembers whether it made the crossing, and an
offline crossing that Redis no longer knows of (the connection already gone) is reported
once, by a claim. A Redis that comes back empty (restarted without persistence) is
noticed by its epoch key: the node registers everything again and reports the devices
that went offline meanwhile.

A node whose liveness key lapsed (it stalled, or lost Redis for longer than
``node_ttl``) may have been reaped by the others (they reported its sessions ended): it
registers its live connections again when it notices, reporting them online. The TTL
refresh finds any live connection Redis no longer holds and does the same.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import attrs
import trio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..ports import PresenceChange, PresenceUnavailable, Report, Session, SessionEnded
from . import _redis_scripts as lua
from . import _redis_units as units
from ._bridge import AsyncioBridge, current_bridge
from ._common import one_line
from ._presence_records import (
    DeviceLocks,
    Keys,
    ms,
    offline,
    oldest_first,
    online,
    quads,
    unpacked,
)
from .memory import new_node_id

__all__ = ["RedisPresence", "RedisPresenceConfig"]

log = logging.getLogger("replyhq_trio.presence")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@attrs.frozen(kw_only=True)
class RedisPresenceConfig:
    """Timings (seconds) and sizes of :class:`RedisPresence`. The TTLs follow CONTRACT.md;
    tests shrink everything.

    A dead node's sessions are removed at most ``node_ttl + reap_interval`` (plus a call)
    after its last heartbeat: 40 s by default.
    """

    connection_ttl: float = 60.0
    session_ttl: float = 120.0
    #: How often the TTLs of all of this node's connections are extended (one call).
    refresh_interval: float = 20.0
    node_ttl: float = 30.0
    heartbeat_interval: float = 10.0
    #: How often this node looks for dead nodes.
    reap_interval: float = 10.0
    #: The longest any call waits for Redis before the node counts it as away.
    call_timeout: float = 2.0
    #: The longest a call waits for one of the ``max_connections`` slots (a burst of
    #: calls queues; a queue that does not move counts as Redis being away too).
    queue_timeout: float = 4.0
    #: Backoff between attempts to reach Redis again (doubling from min to max).
    reconnect_min: float = 0.5
    reconnect_max: float = 10.0
    close_timeout: float = 2.0
    #: How long the claim on an offline crossing that Redis no longer knows of lasts.
    claim_ttl: float = 60.0
    max_connections: int = 32
    #: Script calls per pipeline when re-registering, connections per reap call.
    batch: int = 500
    #: Connection ids per refresh script (a refresh pipelines as many as it needs).
    refresh_chunk: int = 1000

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if value <= 0:
                raise ValueError(f"{field.name} must be positive, got {value!r}")
        if self.refresh_interval >= self.connection_ttl:
            raise ValueError("refresh_interval must be shorter than connection_ttl")
        if self.session_ttl < self.connection_ttl:
            raise ValueError("session_ttl must not be shorter than connection_ttl")
        if self.heartbeat_interval >= self.node_ttl:
            raise ValueError("heartbeat_interval must be shorter than node_ttl")
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not exceed reconnect_max")


class _Away(PresenceUnavailable):
    """Redis did not answer (or answered with an error): the node goes on alone."""


#: What ``run`` reports.
_Reported = SessionEnded | PresenceChange


class RedisPresence:
    """:class:`~replyhq_trio.ports.Presence` shared by every node through Redis.

    Args:
        redis_url: ``redis://[user:password@]host[:port][/db]`` (``rediss://``,
            ``unix://`` too).
        node_id: this node's id (letters, digits, ``_.-``); a fresh one by default.
        key_prefix: put before every key (e.g. ``"replyhq:"``), to share a database.
        config: timings and sizes.
        required: at :meth:`open`, raise PresenceUnavailable when Redis cannot be
            reached; otherwise log a warning and start "away" (the node works alone
            and joins Redis from ``run`` once it answers).
        bridge: the asyncio bridge to run on; by default the one open where
            :meth:`open` is called.

    Use it as ``async with RedisPresence(url) as presence:`` (or through
    :func:`~replyhq_trio.backends.open_presence`) and start :meth:`run` in a nursery
    inside that block.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        node_id: str | None = None,
        key_prefix: str = "",
        config: RedisPresenceConfig | None = None,
        required: bool = True,
        bridge: AsyncioBridge | None = None,
    ) -> None:
        node_id = node_id or new_node_id()
        if not _NODE_ID.fullmatch(node_id):
            # it is part of key names: a ':' could make two nodes' keys collide
            raise ValueError(f"a node id is 1-64 letters, digits, '_', '.' or '-': {node_id!r}")
        self._url = redis_url
        self._where = units.describe(redis_url)
        self._node_id = node_id
        self._keys = Keys(key_prefix)
        self._config = config or RedisPresenceConfig()
        self._required = required
        self._bridge = bridge
        self._client: Redis | None = None
        # As many calls at once as the pool has connections: the call timeout starts
        # once a call has one, so that a burst queueing here is not taken for an outage.
        self._slots = trio.Semaphore(self._config.max_connections)
        self._locks = DeviceLocks()

        # This node's own record, which holds whether Redis answers or not.
        self._live: dict[str, Session] = {}  # connected, not yet disconnected
        # Possibly in Redis: a connect script was sent, no disconnect confirmed since.
        self._registered: set[str] = set()
        # Ended, possibly still in Redis: the disconnect script's answer never came.
        self._unconfirmed: dict[str, Session] = {}
        # Connects whose answer never came: Redis may have made (and kept) the crossing.
        self._uncertain: set[str] = set()
        # Whose state in Redis must be brought to the record (by the keeper task).
        self._dirty: set[str] = set()
        self._in_flight: set[str] = set()  # with a connect or disconnect call under way
        self._calls = 0  # calls started so far (to tell a quiet moment)

        # The link to Redis.
        self._up = False  # calls go to Redis (else: the record only)
        self._reconciling = False
        self._resync = False  # everything must be synced again (keeper)
        self._away_since: float | None = None
        self._epoch: str | None = None
        self._lost_epoch: str | None = None  # Redis lost the data of this epoch
        self._beaten = False
        self._maybe_reaped = False  # our liveness key lapsed: others may have reaped us
        # Connections Redis holds for this node id before its first sync are an earlier
        # run's (reported as ended); later, only a late copy of our own call.
        self._leftovers = True
        self._mismatches = 0
        self._wake = trio.Event()

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def where(self) -> str:
        """``host:port/db`` of the Redis server (no credentials), for messages."""
        return self._where

    @property
    def connected(self) -> bool:
        """Whether calls currently go to Redis (False while it is away)."""
        return self._up

    @property
    def key_prefix(self) -> str:
        """What every key of this node's starts with."""
        return self._keys.prefix

    async def run_script(self, script: lua.Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script on this presence's connections, for another backend that shares
        them (the rate limiter), within the call timeout.

        Raises:
            PresenceUnavailable: Redis is away, or did not answer in time.
        """
        if self._away:
            await trio.lowlevel.checkpoint()
            raise _Away(f"Redis at {self._where} is unreachable")
        return await self._eval(script, keys, args)

    @property
    def _away(self) -> bool:
        # Re-registering after Redis restarted empty is not being away: Redis answers.
        return not self._up and not self._reconciling

    async def check(self) -> None:
        """Raise PresenceUnavailable while Redis is away (for ``/readyz``)."""
        await trio.lowlevel.checkpoint()
        if self._away:
            raise PresenceUnavailable(f"Redis at {self._where} is unreachable")

    # --- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """Create the connection pool and register this node.

        Raises:
            PresenceUnavailable: Redis cannot be reached (only when ``required``; one
                line naming the server).
            ValueError: the URL is malformed.
            RuntimeError: no asyncio bridge is open.
        """
        if self._client is not None:
            return
        if self._bridge is None:
            self._bridge = current_bridge()
        config = self._config
        try:
            self._client = await self._bridge.run(
                # + 1: aclose's last call takes no slot
                units.unit_open,
                self._url,
                config.max_connections + 1,
                config.call_timeout,
            )
        except ValueError:
            # redis-py's own text may quote part of the URL, password included.
            raise ValueError(
                f"invalid Redis URL ({self._where}): expected "
                "redis://[user:password@]host[:port][/db], with / @ : in the password "
                "percent-encoded"
            ) from None
        try:
            registered = await self._heartbeat()
        except _Away as exc:
            if self._required:
                await self.aclose()
                raise PresenceUnavailable(f"cannot reach Redis at {self._where}: {exc}") from None
            self._away_since = trio.current_time()
            log.warning(
                "Redis at %s is unreachable (%s): presence is this node's own until it answers",
                self._where,
                exc,
            )
            return
        self._leftovers = registered > 0
        if registered:  # an earlier run of this node id left connections
            self._resync = True
        self._up = True

    async def aclose(self) -> None:
        """Say this node is leaving (its liveness key goes, so that others reap at once
        whatever it still had registered) and close the pool; shielded, bounded."""
        client, bridge = self._client, self._bridge
        if client is None or bridge is None:
            return
        # Only a node Redis can hear says goodbye: one that never reached it (or lost it)
        # has nothing to say that would arrive; its liveness key lapses by itself.
        was_up, self._up = self._up, False
        timeout = self._config.close_timeout
        with trio.CancelScope(shield=True):
            with trio.move_on_after(min(timeout, self._config.call_timeout) if was_up else 0):
                try:
                    await bridge.run(
                        units.unit_eval,
                        client,
                        lua.LEAVE,
                        [
                            self._keys.node(self._node_id),
                            self._keys.node_conns(self._node_id),
                            self._keys.nodes,
                        ],
                        [self._node_id],
                    )
                except (RedisError, OSError, asyncio.CancelledError) as exc:
                    log.info(
                        "could not tell Redis at %s that node %s leaves: %s",
                        self._where,
                        self._node_id,
                        one_line(exc),
                    )
            self._client = None
            await bridge.run_cleanup(timeout, units.unit_close, client)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- the Presence calls -------------------------------------------------------------

    async def connect(self, session: Session) -> PresenceChange | None:
        """Register a live connection; the 0 -> 1 crossing of its device, if this call
        made it. One round trip.

        While Redis is away this returns None at once (and None after ``call_timeout``
        when Redis stops answering during the call): the session is in this node's
        record, registered when Redis is back, and the crossing that causes, if any, is
        told through ``run``'s report.

        Raises:
            ValueError: the session belongs to another node.
        """
        self._check(session)
        connection_id = session.connection_id
        async with self._locks.hold(session.app_id, session.device_id):
            if connection_id in self._live:
                return None
            self._live[connection_id] = session
            self._unconfirmed.pop(connection_id, None)  # the same id again: superseded
            if not self._up:
                self._dirty.add(connection_id)
                return None
            self._registered.add(connection_id)
            reply = await self._call_for(session, self._connect_call(session))
            if reply is None:
                return None
            return self._settle_connect(session, reply)

    async def disconnect(self, session: Session) -> PresenceChange | None:
        """Unregister a connection; the 1 -> 0 crossing of its device, if this call made
        it (None for a session not registered, or already removed). One round trip.

        While Redis is away this returns None: the session leaves this node's record
        at once and Redis when it is back (the crossing then told through ``run``).
        """
        connection_id = session.connection_id
        async with self._locks.hold(session.app_id, session.device_id):
            known = self._live.pop(connection_id, None)
            if known is None:
                return None
            self._uncertain.discard(connection_id)  # its crossing is owed no more
            if connection_id not in self._registered:  # never reached Redis
                self._dirty.discard(connection_id)
                return None
            if not self._up:
                self._unconfirmed[connection_id] = known
                self._dirty.add(connection_id)
                return None
            reply = await self._call_for(known, self._disconnect_call(known))
            if reply is None:
                return None
            change, gone = self._settle_disconnect(known, reply)
            if gone and self._lost_epoch is not None:
                # Redis lost it with its data: whether the device is now offline is for
                # the keeper's claim (another node may hold the same device).
                self._registered.add(connection_id)
                self._unconfirmed[connection_id] = known
                self._dirty.add(connection_id)
                self._nudge()
            return change

    async def sessions(self, app_id: str) -> list[Session]:
        """Every live session of the app on every node, oldest first; while Redis is
        away, this node's own."""
        if self._up:
            try:
                reply = await self._eval(
                    lua.SESSIONS, [self._keys.app(app_id)], [self._keys.prefix]
                )
            except _Away as exc:
                self._went_away(exc)
            else:
                return oldest_first(
                    [
                        Session(
                            connection_id=str(reply[i]),
                            app_id=app_id,
                            device_id=str(reply[i + 1]),
                            connected_at=datetime.fromisoformat(str(reply[i + 2])),
                            node_id=str(reply[i + 3]),
                        )
                        for i in range(0, len(reply) - 3, 4)
                    ]
                )
        return oldest_first([s for s in self._live.values() if s.app_id == app_id])

    async def active_connections(self, app_id: str, device_id: str) -> int:
        """The device's live connections on every node; while Redis is away, on this one."""
        if self._up:
            try:
                return await self._call(units.unit_scard, self._keys.device(app_id, device_id))
            except _Away as exc:
                self._went_away(exc)
        return sum(
            1 for s in self._live.values() if s.app_id == app_id and s.device_id == device_id
        )

    async def refresh(self) -> int:
        """Extend the TTLs of all of this node's connections now, in one round trip
        (what ``run`` does every ``refresh_interval``); returns how many were gone from
        Redis (``run`` registers them again and reports what that changes).

        Raises:
            PresenceUnavailable: Redis did not answer.
        """
        # Not those whose connect is under way or pending: they may not be in Redis yet.
        ids = [c for c in self._live if c not in self._in_flight and c not in self._dirty]
        if not ids:
            return 0
        config, keys = self._config, self._keys
        head: list[str | int] = [keys.prefix, ms(config.connection_ttl), ms(config.session_ttl)]
        calls: list[units.Call] = [
            (
                lua.REFRESH,
                [keys.epoch],
                [*head, secrets.token_hex(8), *ids[i : i + config.refresh_chunk]],
            )
            for i in range(0, len(ids), config.refresh_chunk)
        ]
        missing: list[str] = []
        for epoch, gone in await self._call(units.unit_eval_many, calls):
            self._saw_epoch(str(epoch))
            missing.extend(str(connection_id) for connection_id in gone)
        # A connect under way may not have reached Redis yet: not missing.
        lost = [c for c in missing if c in self._live and c not in self._in_flight]
        if lost:
            log.warning(
                "%d connections of node %s were gone from Redis: registering them again",
                len(lost),
                self._node_id,
            )
            self._dirty.update(lost)
            self._nudge()
        return len(lost)

    async def run(
        self, report: Report, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The heartbeat, the TTL refresh, the reaper of dead nodes and the keeper
        (reconnects after an outage and syncs this node's record into Redis), until
        cancelled; what they find is told to ``report``. Ready at once."""
        if self._bridge is None:
            raise RuntimeError("open the RedisPresence (async with) before running it")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keeper, report)
            nursery.start_soon(self._beat)
            nursery.start_soon(self._refresher)
            nursery.start_soon(self._reaper, report)
            task_status.started()

    # --- calls to Redis -------------------------------------------------------------------

    async def _call(
        self,
        unit: Callable[Concatenate[Redis, _P], Coroutine[Any, Any, _T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """One unit of work within ``call_timeout``; any failure is :class:`_Away`."""
        client, bridge = self._client, self._bridge
        if client is None or bridge is None:
            raise _Away("the presence is closed")
        config = self._config
        acquired = False
        with trio.move_on_after(config.queue_timeout):
            await self._slots.acquire()
            acquired = True
        if not acquired:
            raise _Away(
                f"calls queued for more than {config.queue_timeout:g} s: "
                "Redis, or this node, does not keep up"
            )
        try:
            with trio.fail_after(config.call_timeout):
                return await bridge.run(unit, client, *args, **kwargs)
        except trio.TooSlowError:
            raise _Away(f"no answer within {config.call_timeout:g} s") from None
        except (RedisError, OSError) as exc:
            raise _Away(one_line(exc)) from exc
        except asyncio.CancelledError as exc:
            # not our cancellation (that is trio.Cancelled): the loop is stopping
            raise _Away(f"the asyncio loop stopped during a call: {exc!r}") from exc
        finally:
            self._slots.release()

    async def _eval(self, script: lua.Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._call(units.unit_eval, script, keys, args)

    async def _call_for(self, session: Session, call: units.Call) -> Any | None:
        """A connect or disconnect call; None when its answer did not come (then the
        connection is left for the keeper to settle, and the node is away unless it was
        a cancellation)."""
        connection_id = session.connection_id
        self._in_flight.add(connection_id)
        self._calls += 1
        answered = False
        try:
            reply = await self._eval(*call)
            answered = True
        except _Away as exc:
            self._went_away(exc)
        finally:
            self._in_flight.discard(connection_id)
            if not answered:  # Redis may have run it: settle it later, from the record
                if connection_id in self._live:
                    self._uncertain.add(connection_id)
                else:
                    self._unconfirmed[connection_id] = session
                self._dirty.add(connection_id)
                self._nudge()
        return reply if answered else None

    def _connect_call(self, session: Session) -> units.Call:
        keys, config = self._keys, self._config
        return (
            lua.CONNECT,
            [
                keys.device(session.app_id, session.device_id),
                keys.session(session.connection_id),
                keys.conn(session.connection_id),
                keys.app(session.app_id),
                keys.node_conns(self._node_id),
                keys.nodes,
                keys.epoch,
                keys.node(self._node_id),
            ],
            [
                session.connection_id,
                session.app_id,
                session.device_id,
                session.connected_at.isoformat(),
                self._node_id,
                ms(config.connection_ttl),
                ms(config.session_ttl),
                secrets.token_hex(8),
                ms(config.node_ttl),
            ],
        )

    def _disconnect_call(self, session: Session) -> units.Call:
        keys = self._keys
        return (
            lua.DISCONNECT,
            [
                keys.device(session.app_id, session.device_id),
                keys.session(session.connection_id),
                keys.conn(session.connection_id),
                keys.app(session.app_id),
                keys.node_conns(self._node_id),
                keys.epoch,
            ],
            [session.connection_id, secrets.token_hex(8)],
        )

    def _settle_connect(self, session: Session, reply: Sequence[Any]) -> PresenceChange | None:
        added, size, owed = int(reply[0]), int(reply[1]), int(reply[2])
        self._saw_epoch(str(reply[3]))
        connection_id = session.connection_id
        uncertain = connection_id in self._uncertain
        self._uncertain.discard(connection_id)
        if added and size == 1:
            return online(session, size)
        if not added and owed and uncertain:
            # An earlier call of ours made the crossing but its answer was lost.
            return online(session, size)
        return None

    def _settle_disconnect(
        self, session: Session, reply: Sequence[Any]
    ) -> tuple[PresenceChange | None, bool]:
        """The crossing, and whether the connection was already gone from Redis."""
        removed, size = int(reply[0]), int(reply[1])
        self._saw_epoch(str(reply[2]))
        self._registered.discard(session.connection_id)
        self._unconfirmed.pop(session.connection_id, None)
        self._uncertain.discard(session.connection_id)
        if not removed:
            return None, True
        if size == 0:
            return offline(session.app_id, session.device_id), False
        return None, False

    def _saw_epoch(self, epoch: str) -> None:
        if self._epoch is None:
            self._epoch = epoch
        elif epoch != self._epoch:
            log.warning(
                "Redis at %s lost the presence data (restarted empty?): re-registering "
                "node %s's connections",
                self._where,
                self._node_id,
            )
            if self._lost_epoch is None:
                self._lost_epoch = self._epoch
            self._epoch = epoch
            self._resync = True
            self._nudge()

    def _went_away(self, exc: _Away) -> None:
        self._up = False
        if self._away_since is None:
            self._away_since = trio.current_time()
            log.warning(
                "Redis at %s is unavailable (%s): presence is node %s's own until it is back",
                self._where,
                exc,
                self._node_id,
            )
        self._nudge()

    def _nudge(self) -> None:
        self._wake.set()

    def _check(self, session: Session) -> None:
        if session.node_id != self._node_id:
            raise ValueError(
                f"session {session.connection_id!r} is node {session.node_id!r}'s, "
                f"this is node {self._node_id!r}"
            )

    # --- background work ----------------------------------------------------------------

    async def _heartbeat(self) -> int:
        """Renew this node's liveness; how many connections Redis holds for it."""
        keys = self._keys
        reply = await self._eval(
            lua.HEARTBEAT,
            [keys.node(self._node_id), keys.nodes, keys.node_conns(self._node_id), keys.epoch],
            [self._node_id, ms(self._config.node_ttl), secrets.token_hex(8)],
        )
        existed, registered = int(reply[0]), int(reply[1])
        if not existed and self._beaten:
            # The key lapsed (Redis was away longer than node_ttl, or this node stalled):
            # other nodes may have reaped our connections.
            self._maybe_reaped = True
            self._resync = True
            self._nudge()
        self._beaten = True
        self._saw_epoch(str(reply[2]))
        return registered

    async def _beat(self) -> None:
        while True:
            await trio.sleep(self._config.heartbeat_interval)
            if not (self._up or self._reconciling):
                continue
            calls, quiet = self._calls, self._quiet()
            try:
                registered = await self._heartbeat()
            except _Away as exc:
                self._went_away(exc)
                continue
            if quiet and self._quiet() and calls == self._calls:
                # Redis should hold exactly our live connections. A difference that
                # lasts (a call's late copy ran after its successor) is repaired by a
                # full sync; one beat of difference may be a call that was just sent.
                self._mismatches = self._mismatches + 1 if registered != len(self._live) else 0
                if self._mismatches >= 2:
                    self._mismatches = 0
                    self._resync = True
                    self._nudge()

    def _quiet(self) -> bool:
        return self._up and not self._in_flight and not self._dirty and not self._unconfirmed

    async def _refresher(self) -> None:
        while True:
            await trio.sleep(self._config.refresh_interval)
            if self._up:
                try:
                    await self.refresh()
                except _Away as exc:
                    self._went_away(exc)

    async def _keeper(self, report: Report) -> None:
        """Reconnects after an outage and brings Redis to this node's record."""
        config = self._config
        delay = config.reconnect_min
        while True:
            if not self._up or self._resync:
                try:
                    await self._reconcile(report)
                except _Away as exc:
                    self._went_away(exc)
                    await trio.sleep(delay)
                    delay = min(delay * 2, config.reconnect_max)
                else:
                    delay = config.reconnect_min
                continue
            if self._dirty:
                try:
                    await self._sync_locked(report)
                except _Away as exc:
                    self._went_away(exc)
                continue
            self._wake = trio.Event()
            await self._wake.wait()

    async def _reconcile(self, report: Report) -> None:
        """Register every live connection again, remove those that ended, report the
        crossings; then calls go to Redis again. Calls made meanwhile stay local (and
        are synced too), so that nothing this does races with them."""
        self._up = False
        try:
            # Idle pooled connections may be to a Redis that restarted (an outage this
            # node noticed, or one it learnt of from the epoch afterwards).
            await self._call(units.unit_drop_idle_connections)
            await self._heartbeat()  # the probe, and the epoch
            self._reconciling = True  # Redis answers: re-registering is not being away
            self._resync = False
            self._dirty.update(self._live)
            self._dirty.update(self._unconfirmed)
            count = len(self._dirty)
            await self._sync_all(report)
            for event in await self._drop_extras():
                await self._tell(report, event)
            while self._dirty:  # what calls changed meanwhile
                await self._sync_all(report)
            if self._resync:
                return  # the epoch moved again: once more
            self._lost_epoch = None
            self._maybe_reaped = False
            self._leftovers = False
            self._up = True
        finally:
            self._reconciling = False
        if self._away_since is not None:
            log.warning(
                "Redis at %s is back after %.1f s: node %s's %d connections synced",
                self._where,
                trio.current_time() - self._away_since,
                self._node_id,
                count,
            )
            self._away_since = None

    async def _sync_all(self, report: Report) -> None:
        """Sync the dirty connections, pipelined (only while calls stay local)."""
        while self._dirty:
            batch = [self._dirty.pop() for _ in range(min(len(self._dirty), self._config.batch))]
            await self._sync(batch, report)

    async def _sync_locked(self, report: Report) -> None:
        """Sync the dirty connections one at a time, each under its device's lock (calls
        go to Redis meanwhile)."""
        for connection_id in list(self._dirty):
            session = self._live.get(connection_id) or self._unconfirmed.get(connection_id)
            if session is None:
                self._dirty.discard(connection_id)
                continue
            async with self._locks.hold(session.app_id, session.device_id):
                if connection_id not in self._dirty or not self._up:
                    continue
                self._dirty.discard(connection_id)
                # reported under the lock: before any later call of the device returns
                await self._sync([connection_id], report)

    async def _sync(self, ids: list[str], report: Report) -> None:
        """Bring these connections' state in Redis to the record (registered while
        live, removed once ended) in one round trip; report the crossings this made."""
        calls: list[units.Call] = []
        targets: list[tuple[Session, bool]] = []
        for connection_id in ids:
            live = self._live.get(connection_id)
            if live is not None:
                self._registered.add(connection_id)
                calls.append(self._connect_call(live))
                targets.append((live, True))
            elif (ended := self._unconfirmed.get(connection_id)) is not None:
                calls.append(self._disconnect_call(ended))
                targets.append((ended, False))
        if not calls:
            return
        try:
            replies = await self._call(units.unit_eval_many, calls)
        except _Away:
            for session, live_ in targets:  # Redis may have run them
                if live_:
                    self._uncertain.add(session.connection_id)
                self._dirty.add(session.connection_id)
            raise
        events: list[_Reported] = []
        gone: list[Session] = []
        for (session, live_), reply in zip(targets, replies, strict=True):
            if live_:
                change = self._settle_connect(session, reply)
            else:
                change, was_gone = self._settle_disconnect(session, reply)
                if was_gone:
                    gone.append(session)
            if change is not None:
                events.append(change)
        for event in events:
            await self._tell(report, event)
        # Redis no longer knows these ended connections: it lost its data, or a late
        # copy of their disconnect ran (its answer lost). Their device's offline
        # crossing is then claimed, unless a reaper may have reported it (our liveness
        # lapsed, and Redis did not lose everything). Decided after the replies: they
        # are what tells of a lost epoch.
        if not gone or (self._lost_epoch is None and self._maybe_reaped):
            return
        try:
            claimed = await self._claim_offline(list({(s.app_id, s.device_id): None for s in gone}))
        except _Away:
            for session in gone:  # to be settled again, claim included
                self._registered.add(session.connection_id)
                self._unconfirmed[session.connection_id] = session
                self._dirty.add(session.connection_id)
            raise
        for event in claimed:
            await self._tell(report, event)

    async def _claim_offline(self, devices: list[tuple[str, str]]) -> list[_Reported]:
        scope = self._lost_epoch or self._epoch or "-"
        claim_ms = ms(self._config.claim_ttl)
        calls: list[units.Call] = [
            (
                lua.OFFLINE_CLAIM,
                [
                    self._keys.device(app_id, device_id),
                    self._keys.offline_claim(scope, app_id, device_id),
                ],
                [claim_ms],
            )
            for app_id, device_id in devices
        ]
        replies = await self._call(units.unit_eval_many, calls)
        return [
            offline(app_id, device_id)
            for (app_id, device_id), claimed in zip(devices, replies, strict=True)
            if int(claimed)
        ]

    async def _drop_extras(self) -> list[_Reported]:
        """Remove what Redis holds for this node but the record does not: an earlier
        run's connections (reported as sessions ended), or one registered again by a
        late copy of a call after its session ended (only its crossing is reported)."""
        conns = self._keys.node_conns(self._node_id)
        held = await self._call(units.unit_hkeys, conns)
        extras = [
            c
            for c in held
            if c not in self._live and c not in self._unconfirmed and c not in self._in_flight
        ]
        events: list[_Reported] = []
        for i in range(0, len(extras), self._config.batch):
            reply = await self._eval(
                lua.DROP_OWN, [conns], [self._keys.prefix, *extras[i : i + self._config.batch]]
            )
            for connection_id, packed, removed, size in quads(reply):
                self._registered.discard(connection_id)
                session = unpacked(connection_id, packed, self._node_id)
                change = (
                    offline(session.app_id, session.device_id) if removed and not size else None
                )
                if self._leftovers:
                    events.append(SessionEnded(session=session, reason="node_lost", change=change))
                elif change is not None:
                    events.append(change)
        return events

    async def _reaper(self, report: Report) -> None:
        while True:
            if self._up:
                try:
                    await self._reap(report)
                except _Away as exc:
                    self._went_away(exc)
            await trio.sleep(self._config.reap_interval)

    async def _reap(self, report: Report) -> None:
        """Remove the connections of every node whose liveness key has expired."""
        keys = self._keys
        dead = await self._eval(lua.DEAD_NODES, [keys.nodes], [keys.prefix, self._node_id])
        for node in map(str, dead):
            removed = 0
            while True:
                reply = await self._eval(
                    lua.REAP,
                    [keys.node(node), keys.node_conns(node), keys.nodes],
                    [keys.prefix, node, self._config.batch],
                )
                for connection_id, packed, was_there, size in quads(reply[1:]):
                    session = unpacked(connection_id, packed, node)
                    change = (
                        offline(session.app_id, session.device_id)
                        if was_there and not size
                        else None
                    )
                    removed += 1
                    await self._tell(
                        report, SessionEnded(session=session, reason="node_lost", change=change)
                    )
                if int(reply[0]) <= 0:  # done, or the node is alive again
                    break
            if removed:
                log.warning("node %s stopped answering: removed its %d sessions", node, removed)

    async def _tell(self, report: Report, event: _Reported) -> None:
        try:
            await report(event)
        except Exception:
            # the caller's bug: the presence goes on (its own state is already right)
            log.exception("the presence report failed on %r", event)
