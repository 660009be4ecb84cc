"""The seams between the application and its backends.

The chat layer depends on these protocols only; ``replyhq_trio/backends`` implements
them: the :class:`Store` (SQLite embedded, PostgreSQL through asyncpg) and
:class:`Presence` (in memory on one node, Redis across nodes). Values crossing the
seam are frozen attrs classes, never rows or dicts.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

import attrs
import trio

__all__ = [
    "ENVELOPE_VERSION",
    "App",
    "Backplane",
    "BackplaneStats",
    "BackplaneUnavailable",
    "Broadcast",
    "Conversation",
    "InvalidCursor",
    "Limit",
    "Message",
    "MessageStatus",
    "NewApp",
    "Presence",
    "PresenceChange",
    "PresenceUnavailable",
    "RateLimiter",
    "Receiver",
    "RoomChange",
    "Sender",
    "Session",
    "SessionEnded",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UnknownApp",
    "UnknownConversation",
    "UnknownMessage",
]


class Sender(enum.Enum):
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"


class MessageStatus(enum.Enum):
    """Where a message is; it only moves forward (sent -> delivered -> read)."""

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"


@attrs.frozen(kw_only=True)
class App:
    id: str
    name: str
    created_at: datetime


@attrs.frozen(kw_only=True)
class NewApp:
    """An app just created, with its secrets in the clear: shown once, stored hashed."""

    app: App
    api_key: str
    admin_token: str


@attrs.frozen(kw_only=True)
class Conversation:
    id: str
    app_id: str
    device_id: str
    created_at: datetime
    updated_at: datetime
    last_message_id: str | None


@attrs.frozen(kw_only=True)
class Message:
    """A stored message. Ids sort in creation order as plain strings, store-wide."""

    id: str
    local_id: str
    conversation_id: str
    body: str
    sender: Sender
    status: MessageStatus
    created_at: datetime


class StoreError(Exception):
    """Base of what a store raises."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or did not answer in time; nothing was changed
    (or a retry with the same ``local_id`` finds what was)."""


class InvalidCursor(StoreError):
    """An ``after`` cursor that is not a message of the conversation."""


class UnknownApp(StoreError):
    """No app with that id."""


class UnknownConversation(StoreError):
    """No conversation with that id (``add_message`` into a conversation that does not
    exist)."""


class UnknownMessage(StoreError):
    """No message with that id in that conversation."""


class Store(Protocol):
    """Apps, credentials, conversations and messages.

    Every call either completes or raises :class:`StoreError`; none waits longer than
    the store's own timeout (then :class:`StoreUnavailable`).
    """

    async def migrate(self) -> None:
        """Bring the schema to the current version (idempotent)."""

    async def aclose(self) -> None:
        """Release connections and threads."""

    async def check(self) -> None:
        """Raise StoreUnavailable unless the store answers a trivial query now."""

    # --- apps and credentials ---------------------------------------------------

    async def create_app(self, name: str) -> NewApp: ...

    async def count_apps(self) -> int: ...

    async def verify_api_key(self, app_id: str, api_key: str) -> bool:
        """Whether ``api_key`` is the app's client key (compared in constant time)."""

    async def create_admin_token(self, app_id: str) -> str:
        """A new admin token for the app, returned in the clear once.

        Raises:
            UnknownApp: no such app.
        """

    async def revoke_admin_token(self, token: str) -> bool:
        """Revoke an admin token; False if it was unknown or already revoked."""

    async def verify_admin_token(self, app_id: str, token: str) -> bool:
        """Whether ``token`` is a live (unrevoked) admin token of the app."""

    # --- conversations ------------------------------------------------------------

    async def create_conversation(self, app_id: str, device_id: str) -> Conversation: ...

    async def get_conversation(self, app_id: str, conversation_id: str) -> Conversation | None:
        """The conversation if it belongs to ``app_id``, else None."""

    async def list_conversations(
        self, app_id: str, device_id: str | None = None, *, limit: int = 200
    ) -> list[Conversation]:
        """The app's (or the device's) conversations, most recently updated first."""

    async def latest_conversation(self, app_id: str, device_id: str) -> Conversation | None:
        """The device's most recently updated conversation."""

    # --- messages -------------------------------------------------------------------

    async def add_message(
        self, conversation_id: str, *, local_id: str, body: str, sender: Sender
    ) -> tuple[Message, bool]:
        """Store a message; returns it and whether it is new.

        Idempotent on ``(conversation_id, local_id)``: a repeat returns the message
        stored first and ``False``, however many times and from however many
        connections at once. The conversation's ``updated_at`` and
        ``last_message_id`` follow. Durable when this returns.

        Concurrent calls may be committed together (group commit); each still gets
        its own outcome, and one call's error (UnknownConversation, a refused text)
        is its own. A call that is cancelled, or raises StoreUnavailable, after its
        write was handed to the database may still have stored the message: a retry
        with the same ``local_id`` returns it (``False``).

        Raises:
            UnknownConversation: no such conversation.
        """

    async def list_messages(
        self, conversation_id: str, *, after: str | None, limit: int
    ) -> tuple[list[Message], bool]:
        """Messages strictly after the cursor (all from the start when None), oldest
        first, at most ``limit``; and whether more follow.

        Raises:
            InvalidCursor: ``after`` is not a message of this conversation.
        """

    async def set_status(
        self,
        conversation_id: str,
        message_id: str,
        status: MessageStatus,
        *,
        by: Sender | None = None,
    ) -> tuple[Message, bool]:
        """Move a message's status forward (never back); returns the message and
        whether its status changed. A receipt ``by`` the message's own sender (a device
        reading what it wrote) leaves it as it is: receipts are the other side's.

        Raises:
            UnknownMessage: not a message of this conversation.
        """


# --- presence and sessions -------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Session:
    """One live ``/client`` connection (CONTRACT.md "Presence and sessions")."""

    connection_id: str
    app_id: str
    device_id: str
    connected_at: datetime
    node_id: str


@attrs.frozen(kw_only=True)
class PresenceChange:
    """A device crossed between 0 and 1 live connections (``presence:change``)."""

    app_id: str
    device_id: str
    is_online: bool
    active_connections: int


@attrs.frozen(kw_only=True)
class SessionEnded:
    """A session that ended without its node saying so (the node died), found and
    removed by another node, and the crossing its removal caused, if any."""

    session: Session
    reason: str
    change: PresenceChange | None


#: Told (in the presence's own task) of what no call returned: sessions that a dead
#: node left behind and were removed, and crossings found when reconciling after the
#: shared backend was away.
Report = Callable[[SessionEnded | PresenceChange], Awaitable[None]]


class Presence(Protocol):
    """Live connections (sessions), aggregated per device (``app_id``, ``device_id``):
    a device is online while it has at least one.

    A crossing (0 -> 1, 1 -> 0) is reported by exactly one call, even when several
    nodes race on the same device. Calls never fail because a shared backend is
    away: the node keeps its own record, goes on serving, and reconciles when the
    backend is back (crossings found then are reported through :meth:`run`).
    """

    @property
    def node_id(self) -> str:
        """This node's id (in sessions and liveness)."""

    async def connect(self, session: Session) -> PresenceChange | None:
        """Register a live connection; its device's 0 -> 1 crossing, if it caused it."""

    async def disconnect(self, session: Session) -> PresenceChange | None:
        """Unregister a connection; its device's 1 -> 0 crossing, if it caused it
        (None for a session not registered, or already removed)."""

    async def sessions(self, app_id: str) -> list[Session]:
        """Every live session of the app, on every node, oldest first."""

    async def active_connections(self, app_id: str, device_id: str) -> int:
        """How many live connections the device has now (on every node)."""

    async def check(self) -> None:
        """Raise :class:`PresenceUnavailable` while the shared backend is away (this
        node then serves its own clients alone); for ``/readyz``."""

    async def run(
        self, report: Report, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The background work until cancelled: refreshing what expires, this node's
        liveness, removing the sessions of dead nodes, reconciling after an outage,
        and telling ``report`` what that changed. Ready once it has started."""


class PresenceUnavailable(Exception):
    """The shared presence backend (Redis) cannot be reached at start-up; one line that
    says where and why. Raised only when it is required: once running, presence calls
    never raise for an outage (see :class:`Presence`)."""


# --- rate limits ----------------------------------------------------------------------------


@attrs.frozen
class Limit:
    """At most ``count`` events per ``window`` seconds (a sliding window), per key.

    Attributes:
        name: What is limited (``message``, ``typing``, ``connect``): part of the keys
            and of the metrics' labels.
        count: Events admitted in any window.
        window: Seconds.
    """

    name: str
    count: int
    window: float


class RateLimiter(Protocol):
    """Sliding-window counters: this node's own in memory, or shared by every node in
    Redis (chosen with presence). An outage of a shared backend admits everything (a
    limit is protection, never the reason a healthy client is refused) and is logged."""

    async def hit(self, limit: Limit, key: str) -> float:
        """Count one event of ``key`` under ``limit``: 0.0 when admitted; else nothing
        is counted and the result is the seconds until an event would be admitted."""

    async def wait_time(self, limit: Limit, key: str) -> float:
        """What :meth:`hit` would answer now, counting nothing."""


# --- the backplane: what crosses between nodes ---------------------------------------------

ENVELOPE_VERSION = 1


def _check_version(_instance: object, _attribute: attrs.Attribute[Any], value: int) -> None:
    if value != ENVELOPE_VERSION:
        raise ValueError(f"unsupported broadcast envelope version {value}")


@attrs.frozen(kw_only=True)
class Broadcast:
    """One event for the sockets of other nodes: a versioned, typed envelope.

    Attributes:
        origin: The node that published it (which does not deliver it twice).
        rooms: The rooms it goes to; empty means every socket of the namespace.
        exclude: Rooms whose sockets must not get it (a socket is in the room named
            by its id, so this also excludes single sockets).
    """

    version: int = attrs.field(default=ENVELOPE_VERSION, validator=_check_version)
    origin: str
    namespace: str
    event: str
    args: tuple[Any, ...] = ()
    rooms: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class RoomChange:
    """What another node (or an emitter) asks of the sockets in some rooms: join rooms,
    leave rooms, or be disconnected.

    Attributes:
        rooms: Whose sockets: the members of these rooms (every socket when empty).
        exclude: Except the members of these.
        join: Rooms the selected sockets join.
        leave: Rooms they leave.
        disconnect: Disconnect them from the namespace (``close``: the whole connection).
    """

    namespace: str
    rooms: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    join: tuple[str, ...] = ()
    leave: tuple[str, ...] = ()
    disconnect: bool = False
    close: bool = False


class Receiver(Protocol):
    """The hub as a backplane sees it: where other nodes' broadcasts and requests land."""

    @property
    def node_id(self) -> str: ...

    @property
    def namespaces(self) -> list[str]: ...

    def receive(self, broadcast: Broadcast) -> None:
        """Write another node's broadcast to this node's sockets; never waits."""

    def room_names(self, namespace: str) -> list[str]:
        """Every room with a socket of this node in it (socket ids included)."""

    def has_room(self, namespace: str, room: str) -> bool:
        """Whether a socket of this node is in ``room``."""

    def socket_summaries(
        self, namespace: str, rooms: tuple[str, ...], exclude: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        """The selected sockets of this node: ``{id, handshake, rooms}`` each, JSON-ready."""

    def change_rooms(self, change: RoomChange) -> None:
        """Apply another node's :class:`RoomChange` to this node's sockets."""

    async def ask(
        self,
        broadcast: Broadcast,
        *,
        timeout: float,
        counted: Callable[[int], None],
        answered: Callable[[Any], None],
    ) -> None:
        """Send another node's broadcast to this node's selected sockets asking each for
        an ack: ``counted`` is told how many first (0 too), then ``answered`` each ack's
        first argument; returns when all answered or ``timeout`` passed."""


class Backplane(Protocol):
    """How broadcasts reach the other nodes: nowhere (one node), or through Redis."""

    async def run(self, receiver: Receiver, *, task_status: trio.TaskStatus[None]) -> None:
        """Receive other nodes' broadcasts and requests until cancelled; ready once
        subscribed (or, when the broker is away, once it is being retried)."""

    async def publish(self, broadcast: Broadcast) -> None:
        """Send a broadcast to the other nodes; never waits for them, nor for long."""

    async def ask(
        self, broadcast: Broadcast, *, timeout: float, answered: Callable[[Any], None]
    ) -> bool:
        """Send a broadcast asking every recipient socket on the other nodes for an ack;
        ``answered`` is told each ack's first argument. Whether every other node
        answered for all its sockets within ``timeout`` (False: some did not)."""

    async def check(self) -> None:
        """Raise :class:`BackplaneUnavailable` while other nodes cannot be reached."""


class BackplaneUnavailable(Exception):
    """The backplane's broker cannot be reached, or this node stopped hearing itself
    through it: broadcasts reach this node's sockets only."""


@attrs.define
class BackplaneStats:
    """What a backplane counts, for metrics.

    Attributes:
        published: Broadcasts (and requests, answers, probes) handed to the broker.
        received: Other nodes' broadcasts delivered here.
        dropped: Messages for other nodes dropped while the broker was slow or away.
        malformed: Messages from the broker that were not understood (and ignored).
        resubscribed: Times this node found itself deaf and subscribed again.
        reconnects: Times the subscription had to be set up again after a failure.
        subscriptions: Times the subscription was set up (the first time included).
    """

    subscriptions: int = 0
    published: int = 0
    received: int = 0
    dropped: int = 0
    malformed: int = 0
    resubscribed: int = 0
    reconnects: int = 0
