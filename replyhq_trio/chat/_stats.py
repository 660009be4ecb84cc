"""What the chat counts for metrics: plain numbers, read by a collector at scrape time."""

from __future__ import annotations

import bisect

from ..ports import Sender

__all__ = ["DELIVERY_BUCKETS", "LIMIT_NAMES", "ChatStats"]

#: The rate limits, as the metrics label them (each listed from the start, at 0).
LIMIT_NAMES = ("message", "typing", "connect", "connections")

#: Upper bounds (seconds) of the delivery latency histogram: a local broadcast takes
#: tens of microseconds, one through a backplane milliseconds.
DELIVERY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ChatStats:
    """Counters of one chat service.

    Attributes:
        stored: Sender -> messages newly stored (a replay of a ``local_id`` is not).
        delivery_buckets: Observations per bucket of :data:`DELIVERY_BUCKETS` (not
            cumulative), plus one past the last bound.
        delivery_sum: Seconds, over every observation.
        delivery_count: Observations.
        limited: Limit name -> events (or connections) refused over it.
    """

    __slots__ = ("delivery_buckets", "delivery_count", "delivery_sum", "limited", "stored")

    def __init__(self) -> None:
        self.stored: dict[Sender, int] = dict.fromkeys(Sender, 0)
        self.delivery_buckets = [0] * (len(DELIVERY_BUCKETS) + 1)
        self.delivery_sum = 0.0
        self.delivery_count = 0
        self.limited: dict[str, int] = dict.fromkeys(LIMIT_NAMES, 0)

    def message_stored(self, sender: Sender) -> None:
        self.stored[sender] += 1

    def rate_limited(self, limit: str) -> None:
        self.limited[limit] = self.limited.get(limit, 0) + 1

    def delivered(self, seconds: float) -> None:
        """One ``message:new`` broadcast written, ``seconds`` after the store answered."""
        self.delivery_buckets[bisect.bisect_left(DELIVERY_BUCKETS, seconds)] += 1
        self.delivery_sum += seconds
        self.delivery_count += 1
