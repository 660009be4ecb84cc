"""Settings of the server: every limit and timeout in one frozen value."""

from __future__ import annotations

from typing import Any

import attrs

from .sansio import ProtocolConfig

__all__ = ["ServerConfig"]


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


def _normalise_path(path: str) -> str:
    # "/v1/socket.io" and "/v1/socket.io/" mean the same endpoint; requests carry the slash.
    return "/" + path.strip("/") + "/"


@attrs.frozen(kw_only=True)
class ServerConfig:
    """How the server listens and what it allows.

    Attributes:
        host: The address to listen on.
        port: The TCP port; 0 picks a free one (tests, benchmarks).
        path: The Engine.IO endpoint (``/v1/socket.io/``).
        protocol: The limits and timers of each connection (ping interval and timeout,
            max payload, attachments, ...).
        cors_origins: Origins allowed to reach the Engine.IO endpoint from a browser:
            empty means same origin only; ``("*",)`` allows any origin, and only when
            set explicitly.
        max_connections: Live Engine.IO sessions at most; more get HTTP 503.
        max_backlog_bytes: Bytes that may wait for a slow client. An emit to one client
            waits for room; a broadcast that would exceed it disconnects the client
            with reason ``slow_consumer``.
        handshake_timeout: Seconds for a new TCP connection to deliver a complete HTTP
            request head (and for a WebSocket upgrade to finish).
        keep_alive_timeout: Seconds an idle keep-alive HTTP connection is kept open.
        upgrade_timeout: Seconds for a WebSocket probe to complete an upgrade.
        poll_timeout: Seconds a long-poll GET is held open with nothing to send; the
            heartbeat normally answers it first.
        grace_period: Seconds connections get to leave after a shutdown begins.
        close_timeout: Seconds given to a WebSocket close handshake.
        max_header_bytes: The largest HTTP request head.
        max_request_body: The largest HTTP body of a non-Engine.IO request.
        trim_interval: Seconds between handing memory freed meanwhile back to the
            system (glibc's ``malloc_trim``); 0 never does.
    """

    host: str = "127.0.0.1"
    port: int = 3000
    path: str = attrs.field(default="/v1/socket.io/", converter=_normalise_path)
    protocol: ProtocolConfig = attrs.field(factory=ProtocolConfig)
    cors_origins: tuple[str, ...] = ()
    max_connections: int = 100_000
    max_backlog_bytes: int = attrs.field(default=4 * 1024 * 1024, validator=_non_negative)
    handshake_timeout: float = attrs.field(default=10.0, validator=_non_negative)
    keep_alive_timeout: float = attrs.field(default=60.0, validator=_non_negative)
    upgrade_timeout: float = attrs.field(default=10.0, validator=_non_negative)
    poll_timeout: float = attrs.field(default=60.0, validator=_non_negative)
    grace_period: float = attrs.field(default=10.0, validator=_non_negative)
    close_timeout: float = attrs.field(default=2.0, validator=_non_negative)
    max_header_bytes: int = 16 * 1024
    max_request_body: int = 1_000_000
    trim_interval: float = attrs.field(default=10.0, validator=_non_negative)
