"""``GET /metrics``: the hub's and the chat's counters in the Prometheus text format.

The layers below count in plain integers (:class:`~replyhq_trio.hub.HubStats`,
:class:`~replyhq_trio.chat.ChatStats`); this collector reads them at scrape time, so
the paths that run per event never touch prometheus-client (whose children take a
lock per increment). Each server has its own registry: two servers in one process
(as the tests run them) never share a counter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import __version__
from .chat import DELIVERY_BUCKETS, ChatStats
from .hub import Hub
from .ports import BackplaneStats
from .sansio import DisconnectReason, Transport
from .transport import HttpConnection, Request, Response

__all__ = ["CONTENT_TYPE", "Metrics"]

#: The classic text format every Prometheus version scrapes.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Runs the dependency checks once: name -> "ok", "unavailable" or "disabled".
DependencyChecks = Callable[[], Awaitable[dict[str, str]]]


class _Collector(Collector):
    def __init__(self, hub: Hub, chat: ChatStats, backplane: BackplaneStats | None) -> None:
        self._backplane = backplane
        self._hub = hub
        self._chat = chat
        #: The checks' answers of the scrape under way (set before collecting).
        self.dependencies: dict[str, str] = {}

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        stats = hub.stats
        namespaces = hub.namespaces

        live = GaugeMetricFamily(
            "replyhq_live_connections",
            "Sockets connected now, by namespace and transport.",
            labels=["namespace", "transport"],
        )
        for namespace in namespaces:
            by_transport = dict.fromkeys((t.value for t in Transport), 0)
            for socket in hub.sockets(namespace):
                by_transport[socket.transport] = by_transport.get(socket.transport, 0) + 1
            for transport, count in by_transport.items():
                live.add_metric([namespace, transport], count)
        yield live

        connected = CounterMetricFamily(
            "replyhq_connections",
            "Sockets admitted to a namespace since start.",
            labels=["namespace"],
        )
        for namespace in namespaces:
            connected.add_metric([namespace], stats.connected.get(namespace, 0))
        yield connected

        disconnected = CounterMetricFamily(
            "replyhq_disconnections",
            "Sockets that left a namespace since start, by reason.",
            labels=["namespace", "reason"],
        )
        for namespace in namespaces:
            for reason in DisconnectReason:
                count = stats.disconnected.get((namespace, reason), 0)
                disconnected.add_metric([namespace, reason.value], count)
        yield disconnected

        received = CounterMetricFamily(
            "replyhq_events_received",
            "Events received from clients, by name (names outside the contract: other).",
            labels=["event"],
        )
        for name, count in sorted(stats.received.items()):
            received.add_metric([name], count)
        yield received

        sent = CounterMetricFamily(
            "replyhq_events_sent",
            "Events written to clients, by name; a broadcast counts once per recipient.",
            labels=["event"],
        )
        for name, count in sorted(stats.sent.items()):
            sent.add_metric([name], count)
        yield sent

        yield CounterMetricFamily(
            "replyhq_acks_timed_out",
            "Server-to-client emits whose ack did not come within its timeout.",
            value=stats.acks_timed_out,
        )
        yield CounterMetricFamily(
            "replyhq_slow_consumer_disconnects",
            "Connections closed because their backlog went over its bound.",
            value=stats.slow_consumers,
        )

        chat = self._chat
        stored = CounterMetricFamily(
            "replyhq_messages_stored",
            "Messages newly stored (replays of a local_id are not), by sender.",
            labels=["sender"],
        )
        for sender, count in chat.stored.items():
            stored.add_metric([sender.value], count)
        yield stored

        limited = CounterMetricFamily(
            "replyhq_rate_limited",
            "Events refused over a rate limit (message, typing, connect per IP address) "
            "and connections refused over the per-device maximum (connections).",
            labels=["limit"],
        )
        for limit, count in chat.limited.items():
            limited.add_metric([limit], count)
        yield limited

        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(
            (*(repr(b) for b in DELIVERY_BUCKETS), "+Inf"), chat.delivery_buckets, strict=True
        ):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "replyhq_delivery_latency_seconds",
            "From a message's store answer to its message:new broadcast written to every "
            "local recipient socket (and handed to the backplane).",
            buckets=buckets,
            sum_value=chat.delivery_sum,
        )

        up = GaugeMetricFamily(
            "replyhq_dependency_up",
            "1 when the dependency answered its health check during this scrape, else 0.",
            labels=["dependency"],
        )
        for name, state in self.dependencies.items():
            if state != "disabled":
                up.add_metric([name], 1 if state == "ok" else 0)
        yield up

        backplane = self._backplane
        if backplane is not None:
            for name, text in (
                ("published", "Messages published to Redis for the other nodes."),
                ("received", "Other nodes' broadcasts delivered to this node's sockets."),
                ("dropped", "Messages for other nodes dropped while Redis was slow or away."),
                ("malformed", "Messages from Redis not understood (ignored)."),
                ("resubscribed", "Times this node stopped hearing itself and subscribed again."),
                ("reconnects", "Times the subscription to Redis was set up again after a failure."),
                ("subscriptions", "Times the subscription to Redis was set up."),
            ):
                yield CounterMetricFamily(
                    f"replyhq_backplane_{name}", text, value=getattr(backplane, name)
                )

        info = InfoMetricFamily("replyhq_node", "This node.")
        info.add_metric([], {"node_id": hub.node_id, "version": __version__})
        yield info


class Metrics:
    """The ``/metrics`` route of one server.

    Args:
        hub: Its sockets and counters.
        chat: The chat service's counters.
        dependencies: The health checks ``/readyz`` runs; each scrape runs them once.
        backplane: The Redis backplane's counters (None: a single node).
    """

    def __init__(
        self,
        hub: Hub,
        chat: ChatStats,
        *,
        dependencies: DependencyChecks,
        backplane: BackplaneStats | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _Collector(hub, chat, backplane)
        self._dependencies = dependencies
        self.registry.register(self._collector)
        # CPU, memory and the start time (replyhq_process_start_time_seconds), from
        # /proc: on a system without it, these are absent and the rest stays.
        ProcessCollector(namespace="replyhq", registry=self.registry)

    async def render(self) -> bytes:
        self._collector.dependencies = await self._dependencies()
        return generate_latest(self.registry)

    async def handle(self, request: Request, http: HttpConnection) -> Response:
        return Response(200, await self.render(), content_type=CONTENT_TYPE)
