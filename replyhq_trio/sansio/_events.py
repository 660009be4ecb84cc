"""The events a connection produces and accepts.

Frozen, slotted, keyword-only values, checked on construction so that an invalid
event cannot exist (h11's rule). Don't subclass them. Which direction each one
travels:

============================  ===============  ===============
event                          received          sent
============================  ===============  ===============
:class:`Connect`               yes
:class:`ConnectAccepted`                         yes
:class:`ConnectRejected`                         yes
:class:`Emit`                  yes               yes
:class:`Ack`                   yes               yes
:class:`Disconnect`            yes               yes
:class:`Message`               yes (Engine.IO)   yes (Engine.IO)
:class:`ConnectionClosed`      yes
:class:`CloseConnection`                         yes
============================  ===============  ===============
"""

from __future__ import annotations

from typing import Any

import attrs

from ._errors import DisconnectReason
from ._types import JSONValue

__all__ = [
    "Ack",
    "CloseConnection",
    "Connect",
    "ConnectAccepted",
    "ConnectRejected",
    "ConnectionClosed",
    "Disconnect",
    "Emit",
    "Event",
    "Message",
    "ack_for",
]


def _check_namespace(namespace: str) -> None:
    if type(namespace) is not str or not namespace.startswith("/"):
        raise TypeError(f"a namespace is a str starting with '/', got {namespace!r}")


def _check_ack_id(ack_id: int | None) -> None:
    if ack_id is not None and (type(ack_id) is not int or ack_id < 0):
        raise TypeError(f"an ack id is a non-negative int, got {ack_id!r}")


@attrs.frozen(kw_only=True)
class Event:
    """Base of every event."""


@attrs.frozen(kw_only=True)
class Connect(Event):
    """The client asks to join ``namespace``; answer with ConnectAccepted or ConnectRejected.

    Attributes:
        auth: The handshake payload (``auth`` option of the JS client), ``None`` if absent.
    """

    namespace: str
    auth: dict[str, Any] | None = None

    def __attrs_post_init__(self) -> None:
        _check_namespace(self.namespace)


@attrs.frozen(kw_only=True)
class ConnectAccepted(Event):
    """The server admits the client to ``namespace`` as socket ``sid``."""

    namespace: str
    sid: str

    def __attrs_post_init__(self) -> None:
        _check_namespace(self.namespace)
        if type(self.sid) is not str or not self.sid:
            raise TypeError("a socket id is a non-empty str")


@attrs.frozen(kw_only=True)
class ConnectRejected(Event):
    """The server refuses ``namespace``: a CONNECT_ERROR ``{"message", "data"?}``."""

    namespace: str
    message: str
    data: JSONValue = None

    def __attrs_post_init__(self) -> None:
        _check_namespace(self.namespace)
        if type(self.message) is not str:
            raise TypeError("a CONNECT_ERROR message is a str")


@attrs.frozen(kw_only=True)
class Emit(Event):
    """A Socket.IO event: ``name`` with ``args``.

    Attributes:
        ack_id: Received: the id to answer with an :class:`Ack`, or ``None`` if the
            client wants no answer. Sent: an id from
            :meth:`ServerConnection.allocate_ack_id`, or ``None``.
    """

    namespace: str
    name: str
    args: tuple[Any, ...] = ()
    ack_id: int | None = None

    def __attrs_post_init__(self) -> None:
        _check_namespace(self.namespace)
        if type(self.name) is not str:
            raise TypeError(f"an event name is a str, got {self.name!r}")
        if type(self.args) is not tuple:
            raise TypeError("event args are a tuple")
        _check_ack_id(self.ack_id)


@attrs.frozen(kw_only=True)
class Ack(Event):
    """The answer to the Emit with the same ``ack_id``, carrying ``args``."""

    namespace: str
    ack_id: int
    args: tuple[Any, ...] = ()

    def __attrs_post_init__(self) -> None:
        _check_namespace(self.namespace)
        if self.ack_id is None:
            raise TypeError("an Ack needs an ack id")
        _check_ack_id(self.ack_id)
        if type(self.args) is not tuple:
            raise TypeError("ack args are a tuple")


@attrs.frozen(kw_only=True)
class Disconnect(Event):
    """One namespace ends; the connection and its other namespaces stay."""

    namespace: str
    reason: DisconnectReason = DisconnectReason.SERVER_DISCONNECT

    def __attrs_post_init__(self) -> None:
        _check_namespace(self.namespace)


@attrs.frozen(kw_only=True)
class Message(Event):
    """A bare Engine.IO message (only on connections without the Socket.IO layer)."""

    data: str | bytes

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.data, str | bytes):
            raise TypeError("an Engine.IO message is str or bytes")


@attrs.frozen(kw_only=True)
class ConnectionClosed(Event):
    """The whole connection ended, every namespace with it."""

    reason: DisconnectReason


@attrs.frozen(kw_only=True)
class CloseConnection(Event):
    """The server ends the whole connection (sends DISCONNECT for each namespace first)."""

    reason: DisconnectReason = DisconnectReason.SERVER_DISCONNECT


_set = object.__setattr__


def decoded_emit(namespace: str, name: str, args: tuple[Any, ...], ack_id: int | None) -> Emit:
    """An :class:`Emit` from a packet the decoder already validated.

    Skips the constructor's checks, which would repeat the decoder's: this is the
    receive path of every event (measured ~0.3 µs saved per event).
    """
    event: Emit = object.__new__(Emit)
    _set(event, "namespace", namespace)
    _set(event, "name", name)
    _set(event, "args", args)
    _set(event, "ack_id", ack_id)
    return event


def decoded_ack(namespace: str, ack_id: int, args: tuple[Any, ...]) -> Ack:
    """An :class:`Ack` from a validated packet; see :func:`decoded_emit`."""
    event: Ack = object.__new__(Ack)
    _set(event, "namespace", namespace)
    _set(event, "ack_id", ack_id)
    _set(event, "args", args)
    return event


def ack_for(emit: Emit, args: tuple[Any, ...]) -> Ack:
    """The :class:`Ack` answering ``emit`` (which must carry an ack id) with ``args``.

    Its namespace and id come from an event that was already checked, so they are not
    checked again: this is on the path of every acknowledged event.
    """
    assert emit.ack_id is not None
    return decoded_ack(emit.namespace, emit.ack_id, args)
