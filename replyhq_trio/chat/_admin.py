"""The ``/admin`` namespace: the dashboard (CONTRACT.md "Namespace /admin").

An agent authenticates with ``{app_id, admin_token}`` (never the client API key,
which ships inside every app binary), joins ``app:{app_id}`` and is told
``connected``; it then watches any conversation of its app, sends as ``agent``, types
(``agent:typing`` to the devices), and lists the app's sessions across nodes.

A revoked token does not wait for its sockets to reconnect: they are re-checked
every ``recheck_interval`` seconds, told ``error`` ``AUTH_EXPIRED`` and disconnected.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio

from ..hub import Namespace, Socket, SocketGone
from ..ports import Conversation, Sender, StoreError
from ..sansio import DisconnectReason
from ._client import iso_now
from ._errors import ChatError, Code
from ._service import ChatService, app_room, conversation_room, socket_context, store_call
from ._sessions import Sessions

__all__ = ["AdminNamespace"]

log = logging.getLogger("replyhq_trio.chat")

NAMESPACE = "/admin"


class AdminNamespace:
    """The handlers of ``/admin``, bound to one chat service.

    Args:
        recheck_interval: Seconds between checks that the admin tokens of live sockets
            are still valid (a revoked token's sockets are gone within about this).
    """

    def __init__(
        self, chat: ChatService, sessions: Sessions, *, recheck_interval: float = 10.0
    ) -> None:
        self._chat = chat
        self._sessions = sessions
        self._recheck_interval = recheck_interval

    def register(self, namespace: Namespace) -> None:
        chat = self._chat
        namespace.on_connect(self._authenticate)
        namespace.on_connected(self._connected)
        namespace.on_disconnect(self._disconnected)
        chat.route(
            namespace,
            {
                "app:subscribe": self._subscribe,
                "conversation:join": self._join,
                "conversation:leave": self._leave,
                "message:send": self._send,
                "typing:start": self._typing_start,
                "typing:stop": self._typing_stop,
                "sessions:list": self._sessions_list,
                "ping": self._ping,
            },
        )

    # --- connecting -------------------------------------------------------------------

    async def _authenticate(self, socket: Socket, auth: dict[str, Any] | None) -> None:
        store = self._chat.store
        auth = await self._chat.authenticate(
            socket, auth, lambda a: store.verify_admin_token(a["app_id"], a["admin_token"])
        )
        socket.data["app_id"] = auth["app_id"]
        socket.data["admin_token"] = auth["admin_token"]
        socket.data["conversations"] = set()

    async def _connected(self, socket: Socket) -> None:
        log.info("admin connected", extra=socket_context(socket))
        socket.join(app_room(socket.data["app_id"]))
        await socket.emit("connected", {"connection_id": socket.sid, "server_time": iso_now()})

    async def _disconnected(self, socket: Socket, reason: DisconnectReason) -> None:
        log.info("admin disconnected", extra=socket_context(socket, reason=reason.value))
        await self._chat.stop_typing_of(NAMESPACE, socket)

    # --- the app and its conversations -----------------------------------------------

    def _own_app(self, socket: Socket, app_id: str) -> None:
        if app_id != socket.data["app_id"]:
            raise ChatError(Code.FORBIDDEN)

    async def _conversation(self, socket: Socket, conversation_id: str) -> Conversation:
        """Any conversation of the admin's app, else CONVERSATION_NOT_FOUND."""
        conversation = await store_call(
            self._chat.store.get_conversation(socket.data["app_id"], conversation_id)
        )
        if conversation is None:
            raise ChatError(Code.CONVERSATION_NOT_FOUND)
        return conversation

    async def _subscribe(self, socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        self._own_app(socket, payload["app_id"])
        socket.join(app_room(payload["app_id"]))
        return {"success": True}

    async def _join(self, socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        # An admin may watch many conversations at once (a device, one).
        conversation = await self._conversation(socket, payload["conversation_id"])
        socket.join(conversation_room(conversation.id))
        socket.data["conversations"].add(conversation.id)
        await socket.emit(
            "conversation:joined",
            {"conversation_id": conversation.id, "last_message_id": conversation.last_message_id},
        )
        return {"success": True, "last_message_id": conversation.last_message_id}

    async def _leave(self, socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        conversation_id = payload["conversation_id"]
        if conversation_id in socket.data["conversations"]:
            socket.data["conversations"].discard(conversation_id)
            socket.leave(conversation_room(conversation_id))
            await self._chat.stop_typing(NAMESPACE, socket, conversation_id)
        return {"success": True}

    # --- messages and typing ------------------------------------------------------------

    async def _send(self, socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        conversation = await self._conversation(socket, payload["conversation_id"])
        message, _created = await self._chat.post_message(
            socket.data["app_id"],
            conversation.id,
            local_id=payload["local_id"],
            body=payload["body"],
            sender=Sender.AGENT,
        )
        return {"success": True, "message": message}

    async def _typing_start(self, socket: Socket, payload: dict[str, Any]) -> None:
        conversation = await self._conversation(socket, payload["conversation_id"])
        await self._chat.start_typing(NAMESPACE, socket, conversation.id)

    async def _typing_stop(self, socket: Socket, payload: dict[str, Any]) -> None:
        conversation = await self._conversation(socket, payload["conversation_id"])
        await self._chat.stop_typing(NAMESPACE, socket, conversation.id)

    # --- sessions -------------------------------------------------------------------------

    async def _sessions_list(self, socket: Socket, payload: dict[str, Any]) -> dict[str, Any]:
        self._own_app(socket, payload["app_id"])
        return {"success": True, "sessions": await self._sessions.list(payload["app_id"])}

    async def _ping(self, socket: Socket, payload: Any) -> str:
        return "pong"

    # --- revoked tokens -----------------------------------------------------------------

    async def expire_revoked(self) -> int:
        """Tell the sockets whose token is no longer valid and disconnect them; returns
        how many. One store call per distinct token; a store that does not answer
        expires no one (it is tried again at the next round)."""
        by_token: dict[tuple[str, str], list[Socket]] = {}
        for socket in self._chat.hub.sockets(NAMESPACE):
            token = socket.data.get("admin_token")
            if token is not None:
                by_token.setdefault((socket.data["app_id"], token), []).append(socket)
        expired = 0
        for (app_id, token), sockets in by_token.items():
            try:
                valid = await self._chat.store.verify_admin_token(app_id, token)
            except StoreError as exc:
                log.warning("cannot re-check admin tokens: %s", exc)
                return expired
            if valid:
                continue
            error = ChatError(Code.AUTH_EXPIRED, "the admin token was revoked")
            for socket in sockets:
                with contextlib.suppress(SocketGone):
                    socket.emit_nowait("error", error.event())
                socket.disconnect()
                expired += 1
            log.info(
                "disconnected %d /admin socket(s) of app %s: token revoked", len(sockets), app_id
            )
        return expired

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Re-check the admin tokens of live sockets until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(self._recheck_interval)
            await self.expire_revoked()
