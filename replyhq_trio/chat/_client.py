"""The ``/client`` namespace: devices (CONTRACT.md "Namespace /client").

A device authenticates with ``{app_id, device_id, api_key}``, is told ``connected``,
is put in its most recently updated conversation, and then joins conversations,
types, and sends messages. Every payload is checked against ``protocol/schemas``;
errors go in the ack when one was asked for, else in an ``error`` event, and the
socket stays usable.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from ..hub import ConnectRefused, Namespace, Socket
from ..ports import Conversation, MessageStatus, Sender, UnknownMessage
from ..sansio import DisconnectReason
from ._errors import ChatError, Code
from ._service import ChatService, conversation_room, socket_context, store_call
from ._sessions import Sessions

__all__ = ["ClientNamespace", "iso_now"]

log = logging.getLogger("replyhq_trio.chat")

NAMESPACE = "/client"


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ClientNamespace:
    """The handlers of ``/client``, bound to one chat service."""

    def __init__(self, chat: ChatService, sessions: Sessions) -> None:
        self._chat = chat
        self._sessions = sessions

    def register(self, namespace: Namespace) -> None:
        chat = self._chat
        namespace.on_connect(self._authenticate)
        namespace.on_connected(self._connected)
        namespace.on_disconnect(self._disconnected)
        chat.route(
            namespace,
            {
                "conversation:join": self._join,
                "conversation:leave": self._leave,
                "typing:start": self._typing_start,
                "typing:stop": self._typing_stop,
                "message:send": self._send,
                "message:delivered": self._delivered,
                "message:read": self._read,
                "ping": self._ping,
            },
        )

    # --- connecting -------------------------------------------------------------------

    async def _authenticate(self, socket: Socket, auth: dict[str, Any] | None) -> None:
        chat = self._chat
        store = chat.store
        try:
            # Every attempt counts, accepted or not: what guesses keys is refused too.
            info = socket.handshake
            await chat.limits.connect(chat.client_address(info.remote_address, info.headers))
        except ChatError as error:
            raise ConnectRefused(error.code.value, error.details(), close=True) from None
        auth = await chat.authenticate(
            socket, auth, lambda a: store.verify_api_key(a["app_id"], a["api_key"])
        )
        try:
            await chat.limits.connections(auth["app_id"], auth["device_id"])
        except ChatError as error:
            raise ConnectRefused(error.code.value, close=True) from None
        socket.data["app_id"] = auth["app_id"]
        socket.data["device_id"] = auth["device_id"]
        socket.data["conversation_id"] = None

    async def _connected(self, socket: Socket) -> None:
        # Registered before anything else is said, so that a disconnect handler, which
        # may run as soon as this awaits, always finds the session to remove.
        await self._sessions.started(socket)
        log.info("device connected", extra=socket_context(socket))
        await socket.emit("connected", {"connection_id": socket.sid, "server_time": iso_now()})
        try:
            latest = await store_call(
                self._chat.store.latest_conversation(
                    socket.data["app_id"], socket.data["device_id"]
                )
            )
        except ChatError as error:
            await socket.emit("error", error.event())
            return
        if latest is not None:
            await self._enter(socket, latest)

    async def _disconnected(self, socket: Socket, reason: DisconnectReason) -> None:
        log.info("device disconnected", extra=socket_context(socket, reason=reason.value))
        await self._sessions.ended(socket, reason.value)
        await self._chat.stop_typing_of(NAMESPACE, socket)

    # --- conversations ------------------------------------------------------------------

    async def _own_conversation(self, socket: Socket, conversation_id: str) -> Conversation:
        """The conversation if it belongs to this app and device, else CONVERSATION_NOT_FOUND."""
        conversation = await store_call(
            self._chat.store.get_conversation(socket.data["app_id"], conversation_id)
        )
        if conversation is None or conversation.device_id != socket.data["device_id"]:
            raise ChatError(Code.CONVERSATION_NOT_FOUND)
        return conversation

    async def _enter(self, socket: Socket, conversation: Conversation) -> None:
        # A device is in one conversation at a time: joining leaves the previous one.
        previous = socket.data.get("conversation_id")
        if previous is not None and previous != conversation.id:
            socket.leave(conversation_room(previous))
            await self._chat.stop_typing(NAMESPACE, socket, previous)
        socket.join(conversation_room(conversation.id))
        socket.data["conversation_id"] = conversation.id
        await socket.emit(
            "conversation:joined",
            {"conversation_id": conversation.id, "last_message_id": conversation.last_message_id},
        )

    async def _join(self, socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        conversation = await self._own_conversation(socket, payload["conversation_id"])
        await self._enter(socket, conversation)
        return {"success": True, "last_message_id": conversation.last_message_id}

    async def _leave(self, socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        conversation_id = payload["conversation_id"]
        if socket.data.get("conversation_id") == conversation_id:
            socket.leave(conversation_room(conversation_id))
            socket.data["conversation_id"] = None
            await self._chat.stop_typing(NAMESPACE, socket, conversation_id)
        return {"success": True}

    # --- typing --------------------------------------------------------------------------

    async def _typing_conversation(self, socket: Socket, conversation_id: str) -> str:
        if socket.data.get("conversation_id") != conversation_id:
            await self._own_conversation(socket, conversation_id)  # raises if not its own
        return conversation_id

    async def _typing_start(self, socket: Socket, payload: dict[str, Any]) -> None:
        # Counted first: a flood must not cost a store lookup per event. typing:stop is
        # never limited: refusing it would only leave an indicator on.
        await self._chat.limits.typing(socket.data["app_id"], socket.data["device_id"])
        conversation_id = await self._typing_conversation(socket, payload["conversation_id"])
        await self._chat.start_typing(NAMESPACE, socket, conversation_id)

    async def _typing_stop(self, socket: Socket, payload: dict[str, Any]) -> None:
        conversation_id = await self._typing_conversation(socket, payload["conversation_id"])
        await self._chat.stop_typing(NAMESPACE, socket, conversation_id)

    # --- messages ------------------------------------------------------------------------

    async def _send(self, socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        await self._chat.limits.message(socket.data["app_id"], socket.data["device_id"])
        conversation_id = payload["conversation_id"]
        if socket.data.get("conversation_id") != conversation_id:
            await self._own_conversation(socket, conversation_id)
        message, _created = await self._chat.post_message(
            socket.data["app_id"],
            conversation_id,
            local_id=payload["local_id"],
            body=payload["body"],
            sender=Sender.USER,
        )
        return {"success": True, "message": message}

    async def _receipt(
        self, socket: Socket, payload: dict[str, Any], status: MessageStatus
    ) -> dict[str, Any]:
        conversation_id = payload["conversation_id"]
        if socket.data.get("conversation_id") != conversation_id:
            await self._own_conversation(socket, conversation_id)
        try:
            await self._chat.set_status(
                socket.data["app_id"],
                conversation_id,
                payload["message_id"],
                status,
                by=Sender.USER,
            )
        except UnknownMessage:
            raise ChatError(
                Code.INVALID_PAYLOAD, "no such message here", field="message_id"
            ) from None
        return {"success": True}

    async def _delivered(self, socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._receipt(socket, payload, MessageStatus.DELIVERED)

    async def _read(self, socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._receipt(socket, payload, MessageStatus.READ)

    async def _ping(self, socket: Socket, payload: Any) -> str:
        return "pong"
