"""Every state machine of a connection, as literal tables.

Rule (after h11's ``_state.py``): everything that decides a state transition lives
in this file. The connection classes look transitions up here and raise when a
lookup fails; ``scripts/state-diagrams`` draws these tables.

A connection runs four small machines side by side:

* the Engine.IO session (open until one of the ways it can end);
* the heartbeat (the server pings, the client must pong in time);
* the transport upgrade (long-polling, probe over a WebSocket, upgraded);
* one machine per Socket.IO namespace (connecting, connected), plus the binary
  attachment collector, which spans namespaces because attachments follow their
  packet directly on the wire.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, TypeVar

__all__ = [
    "ATTACHMENT_TRANSITIONS",
    "ENGINE_TRANSITIONS",
    "HEARTBEAT_TRANSITIONS",
    "NAMESPACE_TRANSITIONS",
    "UPGRADE_TRANSITIONS",
    "AttachmentInput",
    "AttachmentState",
    "EngineInput",
    "EngineState",
    "HeartbeatInput",
    "HeartbeatState",
    "NamespaceInput",
    "NamespaceState",
    "Transport",
    "UpgradeInput",
    "UpgradeState",
    "next_state",
]


class _State(enum.Enum):
    # Enum hashes by name in Python; the tables are looked up on every packet, and
    # identity hashing (consistent with Enum's identity equality) is several times
    # cheaper.
    __hash__ = object.__hash__


class Transport(enum.Enum):
    """The transport currently carrying a session."""

    POLLING = "polling"
    WEBSOCKET = "websocket"


# --- the Engine.IO session ----------------------------------------------------------


class EngineState(_State):
    #: The handshake was sent; packets flow.
    OPEN = "open"
    #: The session ended; every later call fails fast.
    CLOSED = "closed"


class EngineInput(_State):
    CLIENT_CLOSE = "client close packet"
    SERVER_CLOSE = "server closes"
    PING_TIMEOUT = "pong not received in time"
    CONNECT_TIMEOUT = "no namespace in time"
    TRANSPORT_CLOSED = "transport closed"
    SEND_FAILED = "send failed"
    PROTOCOL_ERROR = "protocol error"


ENGINE_TRANSITIONS: Final[Mapping[tuple[EngineState, EngineInput], EngineState]] = {
    (EngineState.OPEN, EngineInput.CLIENT_CLOSE): EngineState.CLOSED,
    (EngineState.OPEN, EngineInput.SERVER_CLOSE): EngineState.CLOSED,
    (EngineState.OPEN, EngineInput.PING_TIMEOUT): EngineState.CLOSED,
    (EngineState.OPEN, EngineInput.CONNECT_TIMEOUT): EngineState.CLOSED,
    (EngineState.OPEN, EngineInput.TRANSPORT_CLOSED): EngineState.CLOSED,
    (EngineState.OPEN, EngineInput.SEND_FAILED): EngineState.CLOSED,
    (EngineState.OPEN, EngineInput.PROTOCOL_ERROR): EngineState.CLOSED,
}


# --- the heartbeat (Engine.IO v4: the server pings) ---------------------------------


class HeartbeatState(_State):
    #: Waiting ``ping_interval`` before the next ping.
    IDLE = "idle"
    #: A ping is out; the pong must arrive within ``ping_timeout``.
    AWAITING_PONG = "awaiting pong"


class HeartbeatInput(_State):
    PING_DUE = "ping interval elapsed"
    PONG = "pong received"


HEARTBEAT_TRANSITIONS: Final[Mapping[tuple[HeartbeatState, HeartbeatInput], HeartbeatState]] = {
    (HeartbeatState.IDLE, HeartbeatInput.PING_DUE): HeartbeatState.AWAITING_PONG,
    (HeartbeatState.AWAITING_PONG, HeartbeatInput.PONG): HeartbeatState.IDLE,
    # An unsolicited pong is harmless; the reference server ignores it too.
    (HeartbeatState.IDLE, HeartbeatInput.PONG): HeartbeatState.IDLE,
}


# --- the transport upgrade (Engine.IO v4 "Upgrade") ---------------------------------


class UpgradeState(_State):
    #: No upgrade under way (on long-polling one may start; on a WebSocket none can).
    NONE = "none"
    #: A WebSocket with this sid was accepted; waiting for its ``2probe``.
    PROBING = "probing"
    #: ``3probe`` was sent and a noop queued for the pending poll; waiting for ``5``.
    PROBED = "probed"
    #: The WebSocket is the transport; the long-polling sid is refused from now on.
    UPGRADED = "upgraded"


class UpgradeInput(_State):
    BEGIN = "websocket with this sid"
    PROBE = "2probe received"
    UPGRADE = "5 received"
    ABORT = "probe transport lost"


UPGRADE_TRANSITIONS: Final[Mapping[tuple[UpgradeState, UpgradeInput], UpgradeState]] = {
    (UpgradeState.NONE, UpgradeInput.BEGIN): UpgradeState.PROBING,
    (UpgradeState.PROBING, UpgradeInput.PROBE): UpgradeState.PROBED,
    (UpgradeState.PROBED, UpgradeInput.UPGRADE): UpgradeState.UPGRADED,
    (UpgradeState.PROBING, UpgradeInput.ABORT): UpgradeState.NONE,
    (UpgradeState.PROBED, UpgradeInput.ABORT): UpgradeState.NONE,
}


# --- one Socket.IO namespace ---------------------------------------------------------


class NamespaceState(_State):
    #: Not joined (also what an unknown namespace is).
    IDLE = "idle"
    #: The client's CONNECT arrived; the application has not answered yet.
    CONNECTING = "connecting"
    #: The server accepted; events and acks flow both ways.
    CONNECTED = "connected"


class NamespaceInput(_State):
    CONNECT_RECEIVED = "CONNECT received"
    ACCEPT_SENT = "CONNECT sent"
    REJECT_SENT = "CONNECT_ERROR sent"
    EVENT_RECEIVED = "EVENT received"
    EVENT_SENT = "EVENT sent"
    ACK_RECEIVED = "ACK received"
    ACK_SENT = "ACK sent"
    DISCONNECT_RECEIVED = "DISCONNECT received"
    DISCONNECT_SENT = "DISCONNECT sent"


_NS = NamespaceState
_NI = NamespaceInput

NAMESPACE_TRANSITIONS: Final[Mapping[tuple[NamespaceState, NamespaceInput], NamespaceState]] = {
    (_NS.IDLE, _NI.CONNECT_RECEIVED): _NS.CONNECTING,
    (_NS.CONNECTING, _NI.ACCEPT_SENT): _NS.CONNECTED,
    (_NS.CONNECTING, _NI.REJECT_SENT): _NS.IDLE,
    (_NS.CONNECTED, _NI.EVENT_RECEIVED): _NS.CONNECTED,
    (_NS.CONNECTED, _NI.EVENT_SENT): _NS.CONNECTED,
    (_NS.CONNECTED, _NI.ACK_RECEIVED): _NS.CONNECTED,
    (_NS.CONNECTED, _NI.ACK_SENT): _NS.CONNECTED,
    (_NS.CONNECTED, _NI.DISCONNECT_RECEIVED): _NS.IDLE,
    (_NS.CONNECTED, _NI.DISCONNECT_SENT): _NS.IDLE,
}


# --- binary attachments ------------------------------------------------------------


class AttachmentState(_State):
    #: Text packets are expected; a binary frame here is a protocol error.
    IDLE = "idle"
    #: A binary packet's header arrived; only its attachments may follow.
    COLLECTING = "collecting"


class AttachmentInput(_State):
    BINARY_HEADER = "binary packet header"
    ATTACHMENT = "attachment, more to come"
    LAST_ATTACHMENT = "last attachment"


ATTACHMENT_TRANSITIONS: Final[Mapping[tuple[AttachmentState, AttachmentInput], AttachmentState]] = {
    (AttachmentState.IDLE, AttachmentInput.BINARY_HEADER): AttachmentState.COLLECTING,
    (AttachmentState.COLLECTING, AttachmentInput.ATTACHMENT): AttachmentState.COLLECTING,
    (AttachmentState.COLLECTING, AttachmentInput.LAST_ATTACHMENT): AttachmentState.IDLE,
}


_S = TypeVar("_S", bound=enum.Enum)
_I = TypeVar("_I", bound=enum.Enum)


def next_state(table: Mapping[tuple[_S, _I], _S], state: _S, event: _I) -> _S | None:
    """The state after ``event`` in ``state``, or ``None`` if the table forbids it."""
    return table.get((state, event))
