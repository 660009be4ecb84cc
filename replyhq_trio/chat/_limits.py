"""Rate limits (CONTRACT.md "Limits"): messages and typing per device, live connections
per device, ``/client`` CONNECT attempts per IP address; and what repeat offenders get."""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
from collections.abc import Iterable, Mapping

import attrs
import trio

from ..hub import Socket
from ..ports import Limit, Presence, RateLimiter
from ._errors import ChatError, Code
from ._stats import ChatStats

__all__ = ["ClientAddress", "Limits", "RateLimits", "address_of"]

log = logging.getLogger("replyhq_trio.limits")

MINUTE = 60.0


def _count(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name.replace('_', '-')}: {value} is negative")


@attrs.frozen(kw_only=True)
class RateLimits:
    """The limits; 0 switches one off.

    Attributes:
        messages: ``message:send`` (and REST posts) per device per minute.
        typing: ``typing:start`` per device per minute.
        connections: Live ``/client`` connections per device, on every node.
        connects: ``/client`` CONNECT attempts (accepted or not) per IP address per
            minute; polling handshakes from an address over it are refused (429).
        strikes: Refusals within a minute after which a socket is disconnected.
    """

    messages: int = attrs.field(default=60, validator=_count)
    typing: int = attrs.field(default=10, validator=_count)
    connections: int = attrs.field(default=5, validator=_count)
    connects: int = attrs.field(default=10, validator=_count)
    strikes: int = attrs.field(default=3, validator=_count)


def address_of(remote: str) -> str:
    """The IP address of a ``host:port`` peer (IPv6 in brackets or not)."""
    host, sep, _port = remote.rpartition(":")
    if not sep:
        return remote
    return host.strip("[]")


class ClientAddress:
    """A client's IP address: the peer's, or, when the peer is a trusted proxy, the last
    address in ``X-Forwarded-For`` that is not one of the trusted proxies.

    Args:
        trusted: IP addresses or networks (``10.0.0.0/8``) of the proxies in front of the
            server. Without any, ``X-Forwarded-For`` is never believed (anyone can send it).
    """

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self._networks = [ipaddress.ip_network(item.strip(), strict=False) for item in trusted]

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def __call__(self, remote: str, headers: Mapping[str, str]) -> str:
        address = address_of(remote)
        if not self._networks or not self._trusted(address):
            return address
        hops = [hop.strip() for hop in headers.get("x-forwarded-for", "").split(",")]
        for hop in reversed([hop for hop in hops if hop]):
            if not self._trusted(hop):
                return hop[:64]
        return address


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class Limits:
    """Checks events against :class:`RateLimits` in a :class:`~replyhq_trio.ports.RateLimiter`
    (this node's or shared), counts refusals in ``stats``, and tracks strikes per socket."""

    def __init__(
        self, limiter: RateLimiter, presence: Presence, settings: RateLimits, stats: ChatStats
    ) -> None:
        self.settings = settings
        self._limiter = limiter
        self._presence = presence
        self._stats = stats
        self._messages = Limit("message", settings.messages, MINUTE)
        self._typing = Limit("typing", settings.typing, MINUTE)
        self._connects = Limit("connect", settings.connects, MINUTE)

    async def message(self, app_id: str, device_id: str) -> None:
        """Count a device's message; raises RATE_LIMITED over the limit."""
        await self._hit(self._messages, f"{app_id}:{device_id}", app_id, device_id)

    async def typing(self, app_id: str, device_id: str) -> None:
        """Count a device's ``typing:start``; raises RATE_LIMITED over the limit."""
        await self._hit(self._typing, f"{app_id}:{device_id}", app_id, device_id)

    async def connect(self, address: str) -> None:
        """Count a CONNECT attempt from ``address``; raises RATE_LIMITED over the limit."""
        await self._hit(self._connects, address, None, None)

    async def handshake_wait(self, address: str) -> float:
        """Seconds until ``address`` may connect again (0.0 now), counting nothing: new
        Engine.IO sessions from an address over its CONNECT limit are refused early."""
        if not self._connects.count:
            await trio.lowlevel.checkpoint()
            return 0.0
        return await self._limiter.wait_time(self._connects, address)

    async def connections(self, app_id: str, device_id: str) -> None:
        """Raise TOO_MANY_CONNECTIONS when the device already has its maximum of live
        connections (on every node)."""
        maximum = self.settings.connections
        if not maximum:
            return
        live = await self._presence.active_connections(app_id, device_id)
        if live >= maximum:
            self._stats.rate_limited("connections")
            log.info(
                "refused a connection: the device has %d live",
                live,
                extra={"app_id": app_id, "device_id": device_id, "limit": "connections"},
            )
            raise ChatError(
                Code.TOO_MANY_CONNECTIONS, f"the device already has {live} live connections"
            )

    async def _hit(self, limit: Limit, key: str, app_id: str | None, device_id: str | None) -> None:
        if not limit.count:
            return
        wait = await self._limiter.hit(limit, key)
        if not wait:
            return
        self._stats.rate_limited(limit.name)
        retry_after_ms = _ms(wait)
        context: dict[str, object] = {"limit": limit.name, "retry_after_ms": retry_after_ms}
        if app_id is None:
            context["address"] = key
        else:
            context.update(app_id=app_id, device_id=device_id)
        log.info("rate limited: %s", limit.name, extra=context)
        raise ChatError(
            Code.RATE_LIMITED,
            f"over {limit.count} {limit.name} events a minute; retry in {retry_after_ms} ms",
            retry_after_ms=retry_after_ms,
        )

    def strike(self, socket: Socket) -> bool:
        """Record a refusal of ``socket``'s; whether it is its last (disconnect it)."""
        maximum = self.settings.strikes
        if not maximum:
            return False
        now = trio.current_time()
        strikes: collections.deque[float] = socket.data.setdefault("strikes", collections.deque())
        strikes.append(now)
        while strikes[0] <= now - MINUTE:
            strikes.popleft()
        if len(strikes) < maximum:
            return False
        log.info(
            "disconnecting a socket over its rate limits %d times in a minute",
            len(strikes),
            extra={
                "connection_id": socket.connection_id,
                "namespace": socket.namespace,
                "app_id": socket.data.get("app_id"),
                "device_id": socket.data.get("device_id"),
                "reason": "limit_exceeded",
            },
        )
        return True
