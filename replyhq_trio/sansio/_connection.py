"""The façade: one Engine.IO session carrying Socket.IO namespaces, without any I/O.

:class:`ServerConnection` composes an :class:`EngineConnection` with the Socket.IO
layer the way wsproto's ``WSConnection`` wraps h11: callers see one object. Its
contract with the I/O layer:

* feed every frame of the session's transport to :meth:`~ServerConnection.receive_frame`
  (a long-polling body first goes through :func:`decode_payload`); each frame yields
  at most one event;
* write what :meth:`~ServerConnection.send` returns, in order, and after every other
  call write what :meth:`~ServerConnection.frames_to_send` returns;
* sleep until :meth:`~ServerConnection.get_timer`, then call
  :meth:`~ServerConnection.handle_timer` with the current time;
* on a :class:`ProtocolError`, do what its ``reply`` says.
"""

from __future__ import annotations

from typing import Any

import attrs

from . import _json
from ._config import ProtocolConfig
from ._engine import EngineConnection
from ._errors import (
    DisconnectReason,
    ErrorReply,
    LocalProtocolError,
    RemoteProtocolError,
)
from ._events import (
    Ack,
    CloseConnection,
    Connect,
    ConnectAccepted,
    ConnectionClosed,
    ConnectRejected,
    Disconnect,
    Emit,
    Event,
    decoded_ack,
    decoded_emit,
)
from ._state import (
    ATTACHMENT_TRANSITIONS,
    NAMESPACE_TRANSITIONS,
    AttachmentInput,
    AttachmentState,
    EngineInput,
    HeartbeatState,
    NamespaceInput,
    NamespaceState,
    Transport,
    UpgradeState,
    next_state,
)
from ._types import Frame
from .socketio._packets import (
    SocketPacket,
    SocketPacketType,
    decode_fields,
    encode_message,
    reconstruct_binary,
)
from .websocket._frames import encode_binary, encode_text, encode_text_utf8

__all__ = ["PreparedEmit", "ServerConnection", "encode_ack_websocket", "prepare_emit"]

_IDLE = NamespaceState.IDLE
_CONNECTING = NamespaceState.CONNECTING
_CONNECTED = NamespaceState.CONNECTED
_T = SocketPacketType


@attrs.frozen(kw_only=True)
class PreparedEmit:
    """An event encoded once for many recipients (a broadcast).

    Attributes:
        namespace: Where it goes; each recipient still checks it joined it.
        frames: The Engine.IO frames (for long-polling and for inspection).
        websocket_bytes: The same frames as unmasked WebSocket frames, concatenated:
            identical for every recipient, so written as is.
    """

    namespace: str
    frames: tuple[Frame, ...]
    websocket_bytes: bytes


def prepare_emit(namespace: str, name: str, args: tuple[Any, ...] = ()) -> PreparedEmit:
    """Encode the event ``name(*args)`` once, for :meth:`ServerConnection.send_prepared`."""
    frames = encode_message(_T.EVENT, namespace, [name, *args])
    return PreparedEmit(
        namespace=namespace,
        frames=tuple(frames),
        websocket_bytes=b"".join(
            encode_text(frame) if isinstance(frame, str) else encode_binary(frame)
            for frame in frames
        ),
    )


def encode_ack_websocket(namespace: str, ack_id: int, args: tuple[Any, ...]) -> bytes | None:
    """The WebSocket frame of an ack whose packet is one text message, built as bytes.

    Byte for byte what :func:`encode_text` makes of the text frame of
    ``encode_message(ACK, namespace, args, ack_id)``, without the round trip through
    ``str`` (orjson writes bytes; the general path decodes them and the framing encodes
    them again) nor the list of frames. ``None`` when ``args`` are not plain JSON
    (binary attachments, or a value JSON cannot carry): the general path then encodes
    or raises as it always does.
    """
    payload = _json.dumps_utf8(args)
    if payload is None:
        return None
    if namespace == "/":
        return encode_text_utf8(b"43%d%b" % (ack_id, payload))
    return encode_text_utf8(b"43%b,%d%b" % (namespace.encode(), ack_id, payload))


def _nsp(namespace: str) -> str:
    return "" if namespace == "/" else namespace + ","


class ServerConnection:
    """One client connection: an Engine.IO session and its Socket.IO namespaces.

    Args:
        sid: The Engine.IO session id.
        transport: The transport of the handshake request.
        config: Limits and timers.
        now: The current time in seconds on the caller's clock.
    """

    __slots__ = (
        "_attachment_state",
        "_attachments",
        "_config",
        "_connect_deadline",
        "_engine",
        "_namespaces",
        "_next_ack_id",
        "_partial",
        "_pending_acks",
    )

    def __init__(
        self, *, sid: str, transport: Transport, config: ProtocolConfig, now: float
    ) -> None:
        self._engine = EngineConnection(sid=sid, transport=transport, config=config, now=now)
        self._config = config
        self._namespaces: dict[str, NamespaceState] = {}
        self._connect_deadline: float | None = now + config.connect_timeout
        # The binary packet whose attachments are arriving, and those received so far.
        self._attachment_state = AttachmentState.IDLE
        self._partial: SocketPacket | None = None
        self._attachments: list[bytes] = []
        # Server-to-client acks: ids handed out and not yet answered or forgotten.
        self._next_ack_id = 0
        self._pending_acks: set[tuple[str, int]] = set()

    # --- state ------------------------------------------------------------------

    @property
    def sid(self) -> str:
        return self._engine.sid

    @property
    def engine(self) -> EngineConnection:
        """The Engine.IO layer, for its state (transport, upgrade, heartbeat)."""
        return self._engine

    @property
    def closed(self) -> bool:
        return self._engine.closed

    @property
    def transport(self) -> Transport:
        return self._engine.transport

    @property
    def upgrade_state(self) -> UpgradeState:
        return self._engine.upgrade_state

    @property
    def heartbeat_state(self) -> HeartbeatState:
        return self._engine.heartbeat_state

    @property
    def close_reason(self) -> DisconnectReason | None:
        return self._engine.close_reason

    @property
    def attachment_state(self) -> AttachmentState:
        return self._attachment_state

    def namespace_state(self, namespace: str) -> NamespaceState:
        return self._namespaces.get(namespace, _IDLE)

    def is_connected(self, namespace: str) -> bool:
        """Whether ``namespace`` is joined and the session open: events may be sent."""
        return not self._engine.closed and self._namespaces.get(namespace) is _CONNECTED

    @property
    def connected_namespaces(self) -> list[str]:
        """The joined namespaces; after a close, those joined when it happened."""
        return [ns for ns, state in self._namespaces.items() if state is _CONNECTED]

    # --- input ------------------------------------------------------------------

    def receive_frame(self, frame: Frame, now: float) -> Event | None:
        """Handle one frame of the session's transport.

        Returns:
            The event the frame completes (:class:`Connect`, :class:`Emit`,
            :class:`Ack`, :class:`Disconnect`, :class:`ConnectionClosed`), or ``None``.

        Raises:
            RemoteProtocolError: the client broke a rule or a limit; see its reply.
            LocalProtocolError: the connection is already closed.
        """
        engine = self._engine
        engine.check_open()
        if isinstance(frame, str):
            if frame[:1] == "4":
                if self._partial is not None:
                    raise engine.fail(
                        RemoteProtocolError("text packet while binary attachments were expected")
                    )
                try:
                    fields = decode_fields(frame, self._config, 1)
                except RemoteProtocolError as exc:
                    raise engine.fail(exc) from None
                return self._receive_packet(*fields)
            return engine.receive_control_frame(frame, now)
        if self._partial is None:
            raise engine.fail(RemoteProtocolError("binary frame without a binary packet"))
        return self._receive_attachment(frame)

    def _receive_packet(
        self,
        kind: SocketPacketType,
        namespace: str,
        data: Any,
        ack_id: int | None,
        attachments: int,
    ) -> Event | None:
        if kind is _T.EVENT:
            if self._namespaces.get(namespace) is not _CONNECTED:  # else nothing changes
                self._namespace_input(namespace, NamespaceInput.EVENT_RECEIVED)
            return decoded_emit(namespace, data[0], tuple(data[1:]), ack_id)
        if kind is _T.ACK:
            assert ack_id is not None  # the decoder refuses an ACK without one
            return self._receive_ack(namespace, ack_id, data)
        if kind is _T.CONNECT:
            return self._receive_connect(namespace, data)
        if kind is _T.DISCONNECT:
            self._namespace_input(namespace, NamespaceInput.DISCONNECT_RECEIVED)
            self._forget_namespace(namespace)
            return Disconnect(namespace=namespace, reason=DisconnectReason.CLIENT_DISCONNECT)
        if kind is _T.BINARY_EVENT or kind is _T.BINARY_ACK:
            # Checked before collecting, so a client cannot make us buffer
            # attachments for a namespace it never joined.
            if self._namespaces.get(namespace) is not _CONNECTED:
                raise self._engine.fail(
                    RemoteProtocolError(f"{kind.name} for namespace {namespace!r}, not connected")
                )
            self._attachment_input(AttachmentInput.BINARY_HEADER)
            self._partial = SocketPacket(
                type=kind, namespace=namespace, data=data, id=ack_id, attachments=attachments
            )
            self._attachments = []
            if attachments == 0:
                return self._complete_binary()
            return None
        raise self._engine.fail(RemoteProtocolError(f"a client cannot send {kind.name}"))

    def _receive_connect(self, namespace: str, auth: Any) -> Connect:
        if self._namespaces.get(namespace, _IDLE) is _IDLE:
            joined = sum(1 for state in self._namespaces.values() if state is not _IDLE)
            if joined >= self._config.max_namespaces:
                # Not fatal: this namespace is refused, the others carry on.
                refusal = encode_message(
                    _T.CONNECT_ERROR, namespace, {"message": "Too many namespaces"}
                )
                raise RemoteProtocolError(
                    f"more than {self._config.max_namespaces} namespaces",
                    ErrorReply(frames=tuple(refusal), close=None),
                )
        self._namespace_input(namespace, NamespaceInput.CONNECT_RECEIVED)
        return Connect(namespace=namespace, auth=auth)

    def _receive_ack(self, namespace: str, ack_id: int, args: list[Any]) -> Ack | None:
        self._namespace_input(namespace, NamespaceInput.ACK_RECEIVED)
        key = (namespace, ack_id)
        if key not in self._pending_acks:
            # Late (its waiter timed out) or never asked for: the reference server
            # ignores such acks too.
            return None
        self._pending_acks.discard(key)
        return decoded_ack(namespace, ack_id, tuple(args))

    def _receive_attachment(self, data: bytes) -> Event | None:
        partial = self._partial
        assert partial is not None
        self._attachments.append(data)
        if len(self._attachments) < partial.attachments:
            self._attachment_input(AttachmentInput.ATTACHMENT)
            return None
        return self._complete_binary()

    def _complete_binary(self) -> Event | None:
        partial = self._partial
        assert partial is not None
        self._attachment_input(AttachmentInput.LAST_ATTACHMENT)
        attachments = self._attachments
        self._partial = None
        self._attachments = []
        try:
            data = reconstruct_binary(partial.data, attachments)
        except RemoteProtocolError as exc:
            raise self._engine.fail(exc) from None
        namespace = partial.namespace
        if partial.type is _T.BINARY_EVENT:
            self._namespace_input(namespace, NamespaceInput.EVENT_RECEIVED)
            return decoded_emit(namespace, data[0], tuple(data[1:]), partial.id)
        assert partial.id is not None
        return self._receive_ack(namespace, partial.id, data)

    def _namespace_input(self, namespace: str, event: NamespaceInput) -> None:
        # Input from the client: an illegal transition is the client's fault and fatal.
        state = self._namespaces.get(namespace, _IDLE)
        new = next_state(NAMESPACE_TRANSITIONS, state, event)
        if new is None:
            raise self._engine.fail(
                RemoteProtocolError(
                    f"{event.value} for namespace {namespace!r} in state {state.value}"
                )
            )
        if new is not state:
            self._set_namespace(namespace, new)

    def _attachment_input(self, event: AttachmentInput) -> None:
        new = next_state(ATTACHMENT_TRANSITIONS, self._attachment_state, event)
        assert new is not None, f"{event} in {self._attachment_state}"
        self._attachment_state = new

    def _set_namespace(self, namespace: str, state: NamespaceState) -> None:
        if state is _IDLE:
            self._namespaces.pop(namespace, None)
        else:
            self._namespaces[namespace] = state

    def _forget_namespace(self, namespace: str) -> None:
        self._pending_acks = {key for key in self._pending_acks if key[0] != namespace}

    def frames_to_send(self) -> list[Frame]:
        """Take the frames the connection produced by itself (handshake, pings, noops)."""
        return self._engine.frames_to_send()

    # --- timers -----------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or ``None`` once closed."""
        timer = self._engine.get_timer()
        deadline = self._connect_deadline
        if timer is None or deadline is None:
            return timer
        return min(timer, deadline)

    def handle_timer(self, now: float) -> ConnectionClosed | None:
        """Run the timers due at ``now``: pings, the pong timeout, the connect timeout."""
        if self._engine.closed:
            return None
        deadline = self._connect_deadline
        if deadline is not None and now >= deadline:
            self._connect_deadline = None
            if not self._namespaces:
                return self._engine.close_for(
                    EngineInput.CONNECT_TIMEOUT, DisconnectReason.CONNECT_TIMEOUT
                )
        return self._engine.handle_timer(now)

    # --- output -----------------------------------------------------------------

    def allocate_ack_id(self, namespace: str) -> int:
        """Reserve an id for a server-to-client emit that wants an :class:`Ack`.

        The :class:`Ack` carrying it comes out of :meth:`receive_frame` once; call
        :meth:`forget_ack` when giving up on it so a late answer is ignored.

        Raises:
            LocalProtocolError: ``namespace`` is not connected.
        """
        if not self.is_connected(namespace):
            raise LocalProtocolError(f"namespace {namespace!r} is not connected")
        ack_id = self._next_ack_id
        self._next_ack_id = ack_id + 1
        self._pending_acks.add((namespace, ack_id))
        return ack_id

    def forget_ack(self, namespace: str, ack_id: int) -> None:
        """Stop waiting for an ack (timed out); a late answer is then ignored."""
        self._pending_acks.discard((namespace, ack_id))

    def send(self, event: Event) -> list[Frame]:
        """Encode ``event`` and return the frames to write, in order.

        Raises:
            LocalProtocolError: the event is illegal now (namespace not connected or
                not connecting, unknown ack id, closed connection, data that JSON
                cannot carry). Nothing is sent and the connection is unaffected.
        """
        engine = self._engine
        if isinstance(event, Emit):
            namespace = event.namespace
            engine.check_open()
            self._local_input(namespace, NamespaceInput.EVENT_SENT)
            if event.ack_id is not None and (namespace, event.ack_id) not in self._pending_acks:
                raise LocalProtocolError(f"ack id {event.ack_id} was not allocated")
            return engine.with_outbox(
                encode_message(_T.EVENT, namespace, [event.name, *event.args], event.ack_id)
            )
        if isinstance(event, Ack):
            engine.check_open()
            self._local_input(event.namespace, NamespaceInput.ACK_SENT)
            return engine.with_outbox(
                encode_message(_T.ACK, event.namespace, list(event.args), event.ack_id)
            )
        if isinstance(event, ConnectAccepted):
            engine.check_open()
            self._local_input(event.namespace, NamespaceInput.ACCEPT_SENT)
            self._connect_deadline = None
            frame = "40" + _nsp(event.namespace) + _json.dumps({"sid": event.sid})
            return engine.with_outbox([frame])
        if isinstance(event, ConnectRejected):
            engine.check_open()
            body: dict[str, Any] = {"message": event.message}
            if event.data is not None:
                body["data"] = event.data
            frame = "44" + _nsp(event.namespace) + _json.dumps(body)
            self._local_input(event.namespace, NamespaceInput.REJECT_SENT)
            return engine.with_outbox([frame])
        if isinstance(event, Disconnect):
            engine.check_open()
            self._local_input(event.namespace, NamespaceInput.DISCONNECT_SENT)
            self._forget_namespace(event.namespace)
            return engine.with_outbox(["41" + _nsp(event.namespace)])
        if isinstance(event, CloseConnection):
            if engine.closed:
                return []
            frames: list[Frame] = [
                "41" + _nsp(ns) for ns, state in self._namespaces.items() if state is _CONNECTED
            ]
            return frames + engine.send(event)
        raise LocalProtocolError(f"a Socket.IO connection cannot send {type(event).__name__}")

    def send_ack(self, namespace: str, ack_id: int, args: tuple[Any, ...]) -> list[Frame]:
        """:meth:`send` of ``Ack(namespace=namespace, ack_id=ack_id, args=args)``,
        without building the event: the answer to nearly every event a client sends.

        Raises:
            LocalProtocolError: as :meth:`send`.
        """
        engine = self._engine
        engine.check_open()
        if self._namespaces.get(namespace) is not _CONNECTED:
            self._local_input(namespace, NamespaceInput.ACK_SENT)  # raises, as send() would
        return engine.with_outbox(encode_message(_T.ACK, namespace, args, ack_id))

    def send_ack_websocket(
        self, namespace: str, ack_id: int, args: tuple[Any, ...]
    ) -> bytes | None:
        """:meth:`send_ack` for a session on a WebSocket: the ack as the bytes of its one
        WebSocket frame (see :func:`encode_ack_websocket`), or ``None`` when the ack
        needs :meth:`send_ack` (which checks, raises and keeps order as it must): the
        connection is closed, the namespace is not joined, frames of the core's own
        wait in its outbox, or the ack carries binary data.
        """
        engine = self._engine
        # The outbox read directly: sansio's own engine, and this runs once per ack.
        if engine.closed or engine._outbox or self._namespaces.get(namespace) is not _CONNECTED:
            return None
        return encode_ack_websocket(namespace, ack_id, args)

    def _local_input(self, namespace: str, event: NamespaceInput) -> None:
        # Input from our side: an illegal transition is the caller's mistake; it
        # changes nothing.
        state = self._namespaces.get(namespace, _IDLE)
        new = next_state(NAMESPACE_TRANSITIONS, state, event)
        if new is None:
            raise LocalProtocolError(
                f"cannot do {event.value!r} on namespace {namespace!r} in state {state.value}"
            )
        if new is not state:
            self._set_namespace(namespace, new)

    def send_prepared(self, prepared: PreparedEmit) -> list[Frame]:
        """The frames of a broadcast for this connection, encoded once for all.

        Returns an empty list when the connection is closed or not in the
        namespace: a broadcast racing a disconnect is normal, not an error.
        """
        if self._engine.closed or self._namespaces.get(prepared.namespace) is not _CONNECTED:
            return []
        return self._engine.with_outbox(list(prepared.frames))

    # --- the end, and the upgrade -------------------------------------------------

    def transport_closed(
        self, reason: DisconnectReason = DisconnectReason.TRANSPORT_CLOSE
    ) -> ConnectionClosed | None:
        """The transport ended; ``None`` if the connection was already closed."""
        return self._engine.transport_closed(reason)

    def send_failed(self) -> ConnectionClosed | None:
        """Writing failed: the connection is over."""
        return self._engine.send_failed()

    def begin_upgrade(self) -> None:
        """See :meth:`EngineConnection.begin_upgrade`."""
        self._engine.begin_upgrade()

    def receive_probe_frame(self, frame: Frame, now: float) -> list[Frame]:
        """See :meth:`EngineConnection.receive_probe_frame`."""
        return self._engine.receive_probe_frame(frame, now)

    def abort_upgrade(self) -> None:
        """See :meth:`EngineConnection.abort_upgrade`."""
        self._engine.abort_upgrade()
