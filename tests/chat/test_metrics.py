"""``GET /metrics`` scraped over real HTTP after real clients chatted (the official JS
client and python-socketio's): its values are what the test did (CONTRACT.md
"GET /metrics", issue 6 "Metrics")."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from replyhq_trio.sansio import DisconnectReason

from .._raw import http
from .._waiting import wait_until
from ..interop._peers import PEER_KINDS, open_peer
from ._site import Site, connect_device, open_site

pytestmark = pytest.mark.parametrize("kind", PEER_KINDS)

#: Messages the test sends.
N = 5
#: Every label a metric may carry: none names a device, a conversation or a connection.
BOUNDED_LABELS = {
    "namespace",
    "transport",
    "reason",
    "event",
    "sender",
    "dependency",
    "limit",
    "le",
}
INFO_LABELS = {"node_id", "version"}


@pytest.fixture
async def site(db_url: str) -> Any:
    async with open_site(db_url) as opened:
        yield opened


async def _scrape(site: Site) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    response = await http(site.port, "GET", "/metrics")
    assert response.status == 200, response.body
    text = response.body.decode()
    samples: list[Sample] = [
        sample for family in text_string_to_metric_families(text) for sample in family.samples
    ]
    values = {(s.name, frozenset(s.labels.items())): s.value for s in samples}
    assert len(values) == len(samples), "a sample appears twice"
    content_type = response.headers["content-type"]
    return content_type, values


def _value(
    values: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return values[(name, frozenset(labels.items()))]


def _family(
    values: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str
) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample, labels), value in values.items() if sample == name}


async def test_metrics_match_what_the_clients_did(kind: str, site: Site) -> None:
    with trio.fail_after(60):
        async with open_peer(kind) as peer:  # type: ignore[arg-type]
            phone = (await site.new_conversation("phone"))["id"]
            tablet = (await site.new_conversation("tablet"))["id"]
            await connect_device(peer, "a", site, "phone", ("websocket",))
            await peer.next_event("a", "conversation:joined")
            await connect_device(peer, "b", site, "tablet", ("polling",))
            await peer.next_event("b", "conversation:joined")

            for i in range(N):
                send = {"conversation_id": phone, "body": f"hello {i}", "local_id": f"l-{i}"}
                (ack,) = await peer.emit_with_ack("a", "message:send", send)
                assert ack["success"] is True
                assert (await peer.next_event("a", "message:new")).args == [ack["message"]]

            await peer.disconnect("b")
            stats = site.server.hub.stats
            await wait_until(lambda: sum(stats.disconnected.values()) == 1)

            content_type, values = await _scrape(site)

    assert content_type.startswith("text/plain; version=0.0.4")

    assert _family(values, "replyhq_connections_total") == {
        frozenset({("namespace", "/client")}): 2,
        frozenset({("namespace", "/admin")}): 0,
    }
    live = _family(values, "replyhq_live_connections")
    assert {labels: v for labels, v in live.items() if v} == {
        frozenset({("namespace", "/client"), ("transport", "websocket")}): 1
    }
    assert len(live) == 4  # both namespaces, both transports
    disconnections = _family(values, "replyhq_disconnections_total")
    assert {labels: v for labels, v in disconnections.items() if v} == {
        frozenset({("namespace", "/client"), ("reason", "client_disconnect")}): 1
    }
    assert len(disconnections) == 2 * len(DisconnectReason)

    received = _family(values, "replyhq_events_received_total")
    assert {labels: v for labels, v in received.items() if v} == {
        frozenset({("event", "message:send")}): N
    }
    assert frozenset({("event", "other")}) in received
    sent = _family(values, "replyhq_events_sent_total")
    assert {labels: v for labels, v in sent.items() if v} == {
        frozenset({("event", "connected")}): 2,
        frozenset({("event", "conversation:joined")}): 2,
        frozenset({("event", "message:new")}): N,
    }

    assert _family(values, "replyhq_messages_stored_total") == {
        frozenset({("sender", "user")}): N,
        frozenset({("sender", "agent")}): 0,
        frozenset({("sender", "system")}): 0,
    }
    assert _value(values, "replyhq_delivery_latency_seconds_count") == N
    assert _value(values, "replyhq_delivery_latency_seconds_bucket", le="+Inf") == N
    assert 0 < _value(values, "replyhq_delivery_latency_seconds_sum") < N * 5.0
    assert _family(values, "replyhq_rate_limited_total") == {
        frozenset({("limit", limit)}): 0
        for limit in ("message", "typing", "connect", "connections")
    }
    assert _value(values, "replyhq_acks_timed_out_total") == 0
    assert _value(values, "replyhq_slow_consumer_disconnects_total") == 0

    assert _family(values, "replyhq_dependency_up") == {frozenset({("dependency", "store")}): 1}
    (info,) = _family(values, "replyhq_node_info")
    assert dict(info)["node_id"] == site.server.hub.node_id
    assert _value(values, "replyhq_process_start_time_seconds") > 0

    # Bounded cardinality: no device, conversation or connection in any label.
    for (name, labels), _ in values.items():
        allowed = INFO_LABELS if name == "replyhq_node_info" else BOUNDED_LABELS
        assert {key for key, _ in labels} <= allowed, name
        for _, label_value in labels:
            assert label_value not in {"phone", "tablet", phone, tablet}, name
            assert site.app_id not in label_value, name


async def test_two_servers_count_apart(kind: str, site: Site, db_url: str) -> None:
    # A second server in the same process: its registry and counters are its own.
    with trio.fail_after(30):
        async with (
            open_site(db_url.replace("replyhq.db", "other.db")) as other,
            open_peer(kind) as peer,  # type: ignore[arg-type]
        ):
            await connect_device(peer, "a", site, "phone", ("websocket",))
            _, ours = await _scrape(site)
            _, theirs = await _scrape(other)
    assert _value(ours, "replyhq_connections_total", namespace="/client") == 1
    assert _value(theirs, "replyhq_connections_total", namespace="/client") == 0
