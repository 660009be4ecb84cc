"""What both namespaces and the REST API share: the store, the contract, the rooms,
posting messages, receipts, typing, and the wire form of stored values."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import attrs
import trio

from ..hub import ConnectRefused, EventRefused, Hub, Namespace, Socket, SocketGone
from ..ports import (
    Conversation,
    Message,
    MessageStatus,
    Sender,
    Store,
    StoreError,
    StoreUnavailable,
)
from ..sansio import DisconnectReason
from ._contract import Contract, Violation
from ._errors import ChatError, Code
from ._limits import ClientAddress, Limits, RateLimits
from ._ordering import BroadcastOrder
from ._stats import ChatStats
from ._typing import TypingTracker

__all__ = [
    "ChatService",
    "ChatSettings",
    "app_room",
    "conversation_payload",
    "conversation_room",
    "message_payload",
    "socket_context",
    "store_call",
    "timestamp",
]

log = logging.getLogger("replyhq_trio.chat")

T = TypeVar("T")
#: How many broadcast message ids a node remembers to tell replays from lost broadcasts.
_ANNOUNCED_MAX = 10_000
PayloadHandler = Callable[[Socket, Any], Awaitable[Any]]


def _text(value: Any) -> str | None:
    # What a client claimed, for a log line: only a short string is worth showing.
    return value[:128] if isinstance(value, str) else None


def socket_context(socket: Socket, **more: object) -> dict[str, object]:
    """What a log line about ``socket`` carries (never its credentials)."""
    data = socket.data
    return {
        "namespace": socket.namespace,
        "connection_id": socket.connection_id,
        "app_id": data.get("app_id"),
        "device_id": data.get("device_id"),
        "conversation_id": data.get("conversation_id"),
        "transport": socket.handshake.transport.value,
        **more,
    }


def conversation_room(conversation_id: str) -> str:
    return f"conversation:{conversation_id}"


def app_room(app_id: str) -> str:
    return f"app:{app_id}"


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, as the contract's timestamps."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_payload(message: Message) -> dict[str, Any]:
    """A message as ``message:new`` and REST carry it."""
    return {
        "id": message.id,
        "local_id": message.local_id,
        "conversation_id": message.conversation_id,
        "body": message.body,
        "sender": message.sender.value,
        "created_at": timestamp(message.created_at),
        "status": message.status.value,
    }


def conversation_payload(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "app_id": conversation.app_id,
        "device_id": conversation.device_id,
        "created_at": timestamp(conversation.created_at),
        "updated_at": timestamp(conversation.updated_at),
        "last_message_id": conversation.last_message_id,
    }


async def store_call(call: Awaitable[T]) -> T:
    """Await a store call; an unreachable store becomes STORE_UNAVAILABLE for the client,
    and text the store refuses (the schemas keep it out) INVALID_PAYLOAD."""
    try:
        return await call
    except StoreUnavailable as exc:
        log.warning("store unavailable: %s", exc)
        raise ChatError(Code.STORE_UNAVAILABLE) from None
    except StoreError as exc:
        if type(exc) is not StoreError:
            raise  # UnknownMessage and the like: the caller decides what they mean
        raise ChatError(Code.INVALID_PAYLOAD, str(exc)) from None


@attrs.frozen(kw_only=True)
class ChatSettings:
    """The chat layer's own settings.

    Attributes:
        typing_timeout: Seconds after the last ``typing:start`` at which typing stops.
        shutdown_window: The range of ``reconnect_delay_ms`` handed out at a shutdown,
            in seconds, so that clients do not all come back at once.
        send_timeout: The longest a message may take to be stored and broadcast, even
            when its sender left meanwhile (above the store's own timeout).
        token_recheck_interval: Seconds between checks that the admin tokens of live
            ``/admin`` sockets are still valid: a revoked token's sockets are told
            ``AUTH_EXPIRED`` and disconnected within about this.
        limits: The rate limits of devices.
        trusted_proxies: Addresses or networks of the proxies in front of the server,
            whose ``X-Forwarded-For`` tells the client's address (limits, logs).
    """

    typing_timeout: float = 5.0
    shutdown_window: tuple[float, float] = (5.0, 15.0)
    send_timeout: float = 15.0
    token_recheck_interval: float = 10.0
    limits: RateLimits = attrs.field(factory=RateLimits)
    trusted_proxies: tuple[str, ...] = ()


@attrs.frozen
class _Typist:
    namespace: str
    sid: str
    conversation_id: str
    device_id: str


class ChatService:
    """The chat logic both namespaces and REST are written against.

    Args:
        hub: Where broadcasts go.
        store: Apps, conversations, messages.
        contract: The payload schemas.
        limits: The rate limits (sharing ``stats``).
        stats: Where messages stored, delivery latencies and refusals over a limit are
            counted (metrics).
    """

    def __init__(
        self,
        *,
        hub: Hub,
        store: Store,
        contract: Contract,
        settings: ChatSettings,
        limits: Limits,
        stats: ChatStats,
    ) -> None:
        self.hub = hub
        self.stats = stats
        self.limits = limits
        self.client_address = ClientAddress(settings.trusted_proxies)
        self.store = store
        self.contract = contract
        self.settings = settings
        self.typing = TypingTracker(timeout=settings.typing_timeout, stopped=self._typing_expired)
        self._order = BroadcastOrder()
        self._announced: dict[str, None] = {}

    # --- payloads ------------------------------------------------------------------

    def contract_handshake(self, namespace: str) -> str:
        schema: str = self.contract.index[namespace.strip("/")]["handshake"]["auth"]
        return schema

    async def authenticate(
        self,
        socket: Socket,
        auth: Any,
        verify: Callable[[dict[str, Any]], Awaitable[bool]],
    ) -> dict[str, Any]:
        """A socket's handshake ``auth``, checked against its namespace's schema (else
        ``MISSING_PARAMS``) and by ``verify`` (else ``INVALID_CREDENTIALS``, or
        ``STORE_UNAVAILABLE``); raises ConnectRefused with the code (and logs it, never
        the credentials)."""
        try:
            self.contract.check(self.contract_handshake(socket.namespace), auth)
        except Violation:
            self._refused(socket, auth, Code.MISSING_PARAMS)
        try:
            valid = await store_call(verify(auth))
        except ChatError as error:
            self._refused(socket, auth, error.code)
        if not valid:
            self._refused(socket, auth, Code.INVALID_CREDENTIALS)
        checked: dict[str, Any] = auth
        return checked

    def _refused(self, socket: Socket, auth: Any, code: Code) -> NoReturn:
        known = auth if isinstance(auth, dict) else {}
        log.info(
            "refused a connection: %s",
            code.value,
            extra={
                "namespace": socket.namespace,
                "connection_id": socket.connection_id,
                "app_id": _text(known.get("app_id")),
                "device_id": _text(known.get("device_id")),
                "address": self.client_address(
                    socket.handshake.remote_address, socket.handshake.headers
                ),
                "code": code.value,
            },
        )
        raise ConnectRefused(code.value)

    def check(self, namespace: str, event: str, args: tuple[Any, ...]) -> Any:
        """The event's payload, checked against its schema (raises INVALID_PAYLOAD)."""
        schema = self.contract.incoming(namespace, event)
        payload = args[0] if args else None
        if schema is None:
            return payload
        try:
            self.contract.check(schema, payload)
        except Violation as violation:
            raise ChatError(
                Code.INVALID_PAYLOAD, violation.message, field=violation.field
            ) from None
        return payload

    def handler(
        self, namespace: str, event: str, handle: PayloadHandler
    ) -> Callable[[Socket, tuple[Any, ...]], Awaitable[Any]]:
        """An event handler that checks the payload and turns ChatError into the ack or an
        ``error`` event (whichever the client can receive)."""

        limits = self.limits

        async def run(socket: Socket, args: tuple[Any, ...]) -> Any:
            try:
                return await handle(socket, self.check(namespace, event, args))
            except ChatError as error:
                # A repeat offender is told, then disconnected.
                last = error.code is Code.RATE_LIMITED and limits.strike(socket)
                raise EventRefused(
                    error.ack(),
                    "error",
                    error.event(),
                    then_disconnect=DisconnectReason.LIMIT_EXCEEDED if last else None,
                ) from None

        return run

    def route(self, namespace: Namespace, handlers: dict[str, PayloadHandler]) -> None:
        """Register ``handlers`` (event -> payload handler, see :meth:`handler`) on
        ``namespace``; every other event gets ``UNKNOWN_EVENT``."""
        for event, handle in handlers.items():
            namespace.on(event)(self.handler(namespace.name, event, handle))
        namespace.on_any(self.unknown_event)

    async def unknown_event(self, socket: Socket, name: str, args: tuple[Any, ...]) -> None:
        error = ChatError(Code.UNKNOWN_EVENT, f"unknown event {name!r}")
        raise EventRefused(error.ack(), "error", error.event())

    # --- messages --------------------------------------------------------------------

    async def post_message(
        self, app_id: str, conversation_id: str, *, local_id: str, body: str, sender: Sender
    ) -> tuple[dict[str, Any], bool]:
        """Store a message, then broadcast ``message:new``; returns its payload and
        whether it is new.

        The broadcast happens only once the message is durable, in id order within the
        conversation. It happens even if the sender goes away meanwhile (the store call
        and the broadcast are shielded, within ``settings.send_timeout``). A replay of
        the same ``local_id`` returns the stored message; it is broadcast again only if
        this node never broadcast it (a send whose outcome was unknown, a store that
        committed after its answer was lost): delivery is at least once, and clients
        deduplicate by ``local_id``.
        """
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.settings.send_timeout) as deadline:
                return await self._store_and_broadcast(
                    app_id, conversation_id, local_id=local_id, body=body, sender=sender
                )
            if deadline.cancelled_caught:
                log.warning(
                    "a message for %s took over %s s", conversation_id, self.settings.send_timeout
                )
        raise ChatError(Code.STORE_UNAVAILABLE)

    async def _store_and_broadcast(
        self, app_id: str, conversation_id: str, *, local_id: str, body: str, sender: Sender
    ) -> tuple[dict[str, Any], bool]:
        ticket = self._order.take_ticket(conversation_id)
        try:
            message, created = await store_call(
                self.store.add_message(conversation_id, local_id=local_id, body=body, sender=sender)
            )
        except BaseException:
            self._order.drop_ticket(conversation_id, ticket)
            raise
        stored_at = time.perf_counter()
        stats = self.stats
        if created:
            stats.message_stored(sender)
            log.debug(
                "message stored",
                extra={"app_id": app_id, "conversation_id": conversation_id, "code": sender.value},
            )
        payload = message_payload(message)
        if message.id in self._announced:
            self._order.drop_ticket(conversation_id, ticket)
            return payload, created
        self._announce(message.id)

        async def send() -> None:
            await self._to_conversation("message:new", payload, app_id, conversation_id)
            # Written to every local recipient's socket (or its backlog) and handed to
            # the backplane; the wait for earlier messages of the conversation counts.
            stats.delivered(time.perf_counter() - stored_at)

        try:
            await self._order.broadcast(conversation_id, ticket, message.id, send)
        except BaseException:
            self._announced.pop(message.id, None)  # not sent: a replay may send it
            raise
        return payload, created

    def _announce(self, message_id: str) -> None:
        # Remember what this node broadcast, so that replays do not repeat it; bounded,
        # oldest forgotten first (a replay comes seconds after the send, not hours).
        announced = self._announced
        announced[message_id] = None
        if len(announced) > _ANNOUNCED_MAX:
            del announced[next(iter(announced))]

    async def set_status(
        self,
        app_id: str,
        conversation_id: str,
        message_id: str,
        status: MessageStatus,
        *,
        by: Sender,
    ) -> None:
        """A receipt ``by`` one side: move the message's status forward and tell the
        room if it moved (a receipt for one's own message moves nothing)."""
        message, changed = await store_call(
            self.store.set_status(conversation_id, message_id, status, by=by)
        )
        if changed:
            payload = {
                "conversation_id": conversation_id,
                "message_id": message.id,
                "status": message.status.value,
                "updated_at": timestamp(datetime.now(message.created_at.tzinfo)),
            }
            await self._to_conversation("message:status", payload, app_id, conversation_id)

    async def _to_conversation(
        self, event: str, payload: dict[str, Any], app_id: str, conversation_id: str
    ) -> None:
        # Devices in the conversation (the sender too: its other connections need it),
        # and admins watching the app or this conversation, each socket once.
        room = conversation_room(conversation_id)
        await self.hub.emit("/client", event, payload, to=room)
        await self.hub.emit("/admin", event, payload, to=(app_room(app_id), room))

    # --- typing --------------------------------------------------------------------------

    async def start_typing(self, namespace: str, socket: Socket, conversation_id: str) -> None:
        key = _Typist(namespace, socket.sid, conversation_id, socket.data.get("device_id", ""))
        if self.typing.start(key):
            await self._typing_event(key, is_typing=True)

    async def stop_typing(self, namespace: str, socket: Socket, conversation_id: str) -> None:
        key = _Typist(namespace, socket.sid, conversation_id, socket.data.get("device_id", ""))
        if self.typing.stop(key):
            await self._typing_event(key, is_typing=False)

    async def stop_typing_of(self, namespace: str, socket: Socket) -> None:
        """A socket left: whatever it was typing stops."""
        for key in self.typing.typists():
            if (
                isinstance(key, _Typist)
                and key.namespace == namespace
                and key.sid == socket.sid
                and self.typing.stop(key)
            ):
                await self._typing_event(key, is_typing=False)

    async def _typing_expired(self, key: object) -> None:
        assert isinstance(key, _Typist)
        await self._typing_event(key, is_typing=False)

    async def _typing_event(self, key: _Typist, *, is_typing: bool) -> None:
        room = conversation_room(key.conversation_id)
        if key.namespace == "/client":
            payload = {
                "conversation_id": key.conversation_id,
                "device_id": key.device_id,
                "is_typing": is_typing,
            }
            # The other devices in the room (never the typist) and the watching admins.
            await self.hub.emit("/client", "user:typing", payload, to=room, skip=[key.sid])
            await self.hub.emit("/admin", "user:typing", payload, to=room)
        else:
            payload = {"conversation_id": key.conversation_id, "is_typing": is_typing}
            await self.hub.emit("/client", "agent:typing", payload, to=room)

    # --- shutdown --------------------------------------------------------------------------

    async def announce_shutdown(self) -> None:
        """Tell every socket of both namespaces to reconnect later, each after its own
        delay in the window: stratified, so reconnects spread evenly."""
        sockets = [*self.hub.sockets("/client"), *self.hub.sockets("/admin")]
        low, high = self.settings.shutdown_window
        random.shuffle(sockets)
        for index, socket in enumerate(sockets):
            slot = (index + random.random()) / max(1, len(sockets))
            delay_ms = int((low + (high - low) * slot) * 1000)
            notice = {"message": "Server is shutting down", "reconnect_delay_ms": delay_ms}
            # Never waits: one client that stopped reading must not hold up the notice
            # of everyone after it.
            with contextlib.suppress(SocketGone):  # it left meanwhile: nothing to tell
                socket.emit_nowait("server:shutdown", notice)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The chat layer's background work (typing deadlines) until cancelled."""
        await self.typing.run(task_status=task_status)
