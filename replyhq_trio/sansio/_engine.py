"""The server side of one Engine.IO v4 session, without any I/O.

Frames and the current time go in; events and frames come out. The caller owns
the transports: it writes what :meth:`EngineConnection.send` returns, drains
:meth:`EngineConnection.frames_to_send` after every other call (pings, probe
noops and close replies are produced there), and sleeps until
:meth:`EngineConnection.get_timer`.
"""

from __future__ import annotations

from . import _json
from ._config import ProtocolConfig
from ._errors import (
    DisconnectReason,
    ErrorReply,
    LocalProtocolError,
    RemoteProtocolError,
    WebSocketCloseCode,
)
from ._events import CloseConnection, ConnectionClosed, Message
from ._state import (
    ENGINE_TRANSITIONS,
    HEARTBEAT_TRANSITIONS,
    UPGRADE_TRANSITIONS,
    EngineInput,
    EngineState,
    HeartbeatInput,
    HeartbeatState,
    Transport,
    UpgradeInput,
    UpgradeState,
    next_state,
)
from ._types import Frame

__all__ = ["EngineConnection"]

_PING = "2"
_PONG_PROBE = "3probe"
_NOOP = "6"
_CLOSE = "1"


class EngineConnection:
    """One Engine.IO session on the server.

    Created once the handshake request is valid; the first frame in
    :meth:`frames_to_send` is the open packet.

    Args:
        sid: The session id (unguessable; the caller generates it).
        transport: The transport of the handshake request.
        config: Limits and timers.
        now: The current time in seconds on the caller's clock.
    """

    __slots__ = (
        "_close_reason",
        "_deadline",
        "_heartbeat",
        "_outbox",
        "_state",
        "_transport",
        "_upgrade",
        "closed",
        "config",
        "sid",
    )

    def __init__(
        self, *, sid: str, transport: Transport, config: ProtocolConfig, now: float
    ) -> None:
        self.sid = sid
        self.config = config
        self._transport = transport
        self._state = EngineState.OPEN
        self._upgrade = UpgradeState.NONE
        self._heartbeat = HeartbeatState.IDLE
        # The heartbeat's one deadline: the next ping while IDLE, the pong's
        # deadline while AWAITING_PONG.
        self._deadline = now + config.ping_interval
        self._close_reason: DisconnectReason | None = None
        #: True once the session ended; read on every hot-path call, so a plain attribute.
        self.closed = False
        handshake = {
            "sid": sid,
            "upgrades": ["websocket"] if transport is Transport.POLLING else [],
            "pingInterval": config.ping_interval_ms,
            "pingTimeout": config.ping_timeout_ms,
            "maxPayload": config.max_payload,
        }
        self._outbox: list[Frame] = ["0" + _json.dumps(handshake)]

    # --- state ------------------------------------------------------------------

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def transport(self) -> Transport:
        """The transport carrying the session; becomes WEBSOCKET when an upgrade completes."""
        return self._transport

    @property
    def upgrade_state(self) -> UpgradeState:
        return self._upgrade

    @property
    def heartbeat_state(self) -> HeartbeatState:
        return self._heartbeat

    @property
    def close_reason(self) -> DisconnectReason | None:
        """Why the session ended, or ``None`` while it is open."""
        return self._close_reason

    # --- output -----------------------------------------------------------------

    def frames_to_send(self) -> list[Frame]:
        """Take the frames the session produced by itself (open packet, pings, noops)."""
        frames = self._outbox
        if frames:
            self._outbox = []
        return frames

    def with_outbox(self, frames: list[Frame]) -> list[Frame]:
        """``frames`` preceded by whatever is still in the outbox, so order holds."""
        if self._outbox:
            frames = self._outbox + frames
            self._outbox = []
        return frames

    # --- input ------------------------------------------------------------------

    def receive_frame(self, frame: Frame, now: float) -> Message | ConnectionClosed | None:
        """Handle one frame from the session's transport.

        Returns:
            A :class:`Message`, a :class:`ConnectionClosed` if the client closed the
            session, or ``None`` for packets the session consumes itself.

        Raises:
            RemoteProtocolError: an invalid packet; the session is then closed.
            LocalProtocolError: the session is already closed.
        """
        self.check_open()
        if isinstance(frame, bytes):
            return Message(data=frame)
        if frame[:1] == "4":
            return Message(data=frame[1:])
        return self.receive_control_frame(frame, now)

    def receive_control_frame(self, frame: str, now: float) -> ConnectionClosed | None:
        """Handle a text frame that is not a message (pong, close, noop).

        For the Socket.IO façade, which decodes message frames itself. The session
        must be open.
        """
        kind = frame[:1]
        if kind == "3":
            self._heartbeat_input(HeartbeatInput.PONG)
            self._deadline = now + self.config.ping_interval
            return None
        if kind == "1":
            if self._transport is Transport.POLLING:
                # The reference server ends the pending poll with a noop, not a close
                # packet: the client asked to close, so nothing more is coming.
                self._outbox.append(_NOOP)
            return self._close(EngineInput.CLIENT_CLOSE, DisconnectReason.CLIENT_CLOSE)
        if kind == "6":
            return None
        if kind == "2":
            raise self.fail(RemoteProtocolError("ping from the client: v4 servers send pings"))
        raise self.fail(RemoteProtocolError(f"unexpected Engine.IO packet {frame[:16]!r}"))

    def check_open(self) -> None:
        """Raise :class:`LocalProtocolError` if the session has ended."""
        if self.closed:
            raise LocalProtocolError(f"the session is closed ({self._close_reason})")

    def fail(self, error: RemoteProtocolError) -> RemoteProtocolError:
        """Close the session because of ``error``; return the error to raise.

        The returned error's reply gains what this transport needs: on long-polling
        the close packet for the pending poll. Non-fatal errors pass through.
        """
        reply = error.reply
        if reply.close is None:
            return error
        if not self.closed:
            self._close(EngineInput.PROTOCOL_ERROR, reply.close)
        frames = reply.frames
        if self._transport is Transport.POLLING:
            frames = (*frames, _CLOSE)
        return RemoteProtocolError(
            str(error),
            ErrorReply(
                frames=frames,
                close=reply.close,
                http_status=reply.http_status,
                websocket_close_code=reply.websocket_close_code,
            ),
        )

    # --- timers -----------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or ``None`` once closed."""
        return None if self.closed else self._deadline

    def handle_timer(self, now: float) -> ConnectionClosed | None:
        """Send the ping that is due, or close the session if a pong is late."""
        if self.closed or now < self._deadline:
            return None
        if self._heartbeat is HeartbeatState.AWAITING_PONG:
            return self.close_for(EngineInput.PING_TIMEOUT, DisconnectReason.PING_TIMEOUT)
        self._heartbeat_input(HeartbeatInput.PING_DUE)
        self._outbox.append(_PING)
        self._deadline = now + self.config.ping_timeout
        return None

    def _heartbeat_input(self, event: HeartbeatInput) -> None:
        new = next_state(HEARTBEAT_TRANSITIONS, self._heartbeat, event)
        assert new is not None, "every heartbeat input is legal in every state"
        self._heartbeat = new

    # --- sending ----------------------------------------------------------------

    def send(self, event: Message | CloseConnection) -> list[Frame]:
        """Encode ``event``; returns the frames to write, preceded by any queued ones.

        Closing twice is allowed and sends nothing the second time.

        Raises:
            LocalProtocolError: sending a message on a closed session.
        """
        if type(event) is CloseConnection:
            if self.closed:
                return []
            self._close(EngineInput.SERVER_CLOSE, event.reason)
            # On a WebSocket the close frame ends the session; a poll needs the packet.
            closing: list[Frame] = [_CLOSE] if self._transport is Transport.POLLING else []
            return self.with_outbox(closing)
        if type(event) is Message:
            self.check_open()
            data = event.data
            return self.with_outbox([data if isinstance(data, bytes) else "4" + data])
        raise LocalProtocolError(f"an Engine.IO session cannot send {type(event).__name__}")

    # --- the end ----------------------------------------------------------------

    def transport_closed(
        self, reason: DisconnectReason = DisconnectReason.TRANSPORT_CLOSE
    ) -> ConnectionClosed | None:
        """The transport ended (EOF, reset, WebSocket closed); ``None`` if already closed."""
        if self.closed:
            return None
        return self._close(EngineInput.TRANSPORT_CLOSED, reason)

    def send_failed(self) -> ConnectionClosed | None:
        """Writing failed: the session is over (h11's ``send_failed``)."""
        if self.closed:
            return None
        return self._close(EngineInput.SEND_FAILED, DisconnectReason.TRANSPORT_ERROR)

    def close_for(self, event: EngineInput, reason: DisconnectReason) -> ConnectionClosed:
        """Close the session from the server's side because of a timer.

        On long-polling the close packet is queued for the pending poll, as the
        reference server does; on a WebSocket the caller sends the close frame.
        """
        closed = self._close(event, reason)
        if self._transport is Transport.POLLING:
            self._outbox.append(_CLOSE)
        return closed

    def _close(self, event: EngineInput, reason: DisconnectReason) -> ConnectionClosed:
        new = next_state(ENGINE_TRANSITIONS, self._state, event)
        if new is None:
            raise LocalProtocolError(f"cannot handle {event.value!r} in state {self._state.value}")
        self._state = new
        self.closed = True
        self._close_reason = reason
        if self._upgrade is not UpgradeState.UPGRADED:
            self._upgrade = UpgradeState.NONE
        return ConnectionClosed(reason=reason)

    # --- the upgrade ------------------------------------------------------------

    def begin_upgrade(self) -> None:
        """A WebSocket arrived with this session's sid: start probing it.

        Raises:
            LocalProtocolError: the session is closed, already on a WebSocket, or
                already probing one (the caller refuses that WebSocket).
        """
        self.check_open()
        if self._transport is not Transport.POLLING:
            raise LocalProtocolError("the session already uses a WebSocket")
        self._upgrade_input(UpgradeInput.BEGIN)

    def receive_probe_frame(self, frame: Frame, now: float) -> list[Frame]:
        """Handle a frame from the probing WebSocket; returns the frames to write on it.

        ``2probe`` is answered with ``3probe`` and a noop is queued for the pending
        poll; ``5`` completes the upgrade (:attr:`transport` becomes WEBSOCKET).

        Raises:
            RemoteProtocolError: anything else. The session survives on long-polling
                (the reply is not fatal); the caller closes the probing WebSocket.
            LocalProtocolError: the session is closed or not probing.
        """
        self.check_open()
        if self._upgrade not in (UpgradeState.PROBING, UpgradeState.PROBED):
            raise LocalProtocolError("no upgrade is under way")
        if frame == "2probe" and self._upgrade is UpgradeState.PROBING:
            self._upgrade_input(UpgradeInput.PROBE)
            self._outbox.append(_NOOP)
            return [_PONG_PROBE]
        if frame == "5" and self._upgrade is UpgradeState.PROBED:
            self._upgrade_input(UpgradeInput.UPGRADE)
            self._transport = Transport.WEBSOCKET
            return []
        self._upgrade_input(UpgradeInput.ABORT)
        raise RemoteProtocolError(
            f"unexpected frame during the upgrade probe: {frame[:16]!r}",
            ErrorReply(close=None, websocket_close_code=WebSocketCloseCode.PROTOCOL_ERROR),
        )

    def abort_upgrade(self) -> None:
        """The probing WebSocket is gone; stay on long-polling. Idempotent."""
        if self._upgrade in (UpgradeState.PROBING, UpgradeState.PROBED):
            self._upgrade_input(UpgradeInput.ABORT)

    def _upgrade_input(self, event: UpgradeInput) -> None:
        new = next_state(UPGRADE_TRANSITIONS, self._upgrade, event)
        if new is None:
            raise LocalProtocolError(
                f"upgrade: cannot handle {event.value!r} in state {self._upgrade.value}"
            )
        self._upgrade = new
