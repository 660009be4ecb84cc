"""What the hub counts for metrics: plain integers, read by a collector at scrape time.

The hub knows nothing of Prometheus (a layer above turns these into metrics). Counting
is an integer increment in a dict on the paths that run per event: a Prometheus child's
``inc()`` takes a lock, and these paths run once per event on one thread.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..sansio import DisconnectReason

__all__ = ["OTHER_EVENT", "HubStats"]

#: The label of every event name that is not among the names counted by name.
OTHER_EVENT = "other"


class HubStats:
    """Counters of one hub (so two servers in one process count apart).

    Until :meth:`count_events` names events, every event counts as
    :data:`OTHER_EVENT`: a client inventing names cannot grow the counters.

    Attributes:
        connected: Namespace -> sockets admitted to it since start.
        disconnected: (namespace, reason) -> sockets that left it.
        received: Event name -> events received from clients.
        sent: Event name -> events written to clients (a broadcast counts once per
            recipient socket).
        acks_timed_out: Server-to-client emits whose ack did not come in time.
        slow_consumers: Connections closed because they could not keep up.
    """

    __slots__ = (
        "acks_timed_out",
        "connected",
        "disconnected",
        "received",
        "sent",
        "slow_consumers",
    )

    def __init__(self) -> None:
        self.connected: dict[str, int] = {}
        self.disconnected: dict[tuple[str, DisconnectReason], int] = {}
        self.received: dict[str, int] = {}
        self.sent: dict[str, int] = {}
        self.acks_timed_out = 0
        self.slow_consumers = 0
        self.count_events((), ())

    def count_events(self, received: Iterable[str], sent: Iterable[str]) -> None:
        """Count these event names by name from now on (besides those already counted)."""
        for counts, names in ((self.received, received), (self.sent, sent)):
            for name in (*names, OTHER_EVENT):
                counts.setdefault(name, 0)

    def event_received(self, name: str) -> None:
        received = self.received
        # The known names are keys already: one lookup on the path of every event.
        if name in received:
            received[name] += 1
        else:
            received[OTHER_EVENT] += 1

    def events_sent(self, name: str, count: int = 1) -> None:
        sent = self.sent
        if name in sent:
            sent[name] += count
        else:
            sent[OTHER_EVENT] += count

    def socket_connected(self, namespace: str) -> None:
        self.connected[namespace] = self.connected.get(namespace, 0) + 1

    def socket_disconnected(self, namespace: str, reason: DisconnectReason) -> None:
        key = (namespace, reason)
        self.disconnected[key] = self.disconnected.get(key, 0) + 1
