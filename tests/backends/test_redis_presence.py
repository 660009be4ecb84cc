"""Presence and sessions: the behaviour every implementation shares (memory and Redis,
seed 001's multi-connection scenarios), then what only Redis has: nodes racing on a
device, dead nodes reaped, Redis lost and back, the keys and round trips.

The Redis tests run against the server at 127.0.0.1:6379 (each under a key prefix of
its own, deleted afterwards); the outage tests start a ``redis-server`` of their own on
a free port and stop it by its PID.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import attrs
import pytest
import trio

from replyhq_trio.backends import AsyncioBridge, RedisPresence, open_presence
from replyhq_trio.backends import _redis_scripts as lua
from replyhq_trio.backends.memory import MemoryPresence
from replyhq_trio.ports import PresenceChange, PresenceUnavailable, Session, SessionEnded

from .. import _redis
from .._waiting import wait_until
from ._presence import FAST, Cluster, new_session, offline, online, open_cluster

# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def presence_url(request: pytest.FixtureRequest) -> str | None:
    """None (memory) or the test Redis (skips, or fails under CI=true, without one)."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return None


@pytest.fixture
async def cluster(presence_url: str | None, bridge: AsyncioBridge) -> AsyncIterator[Cluster]:
    async with open_cluster(presence_url) as opened:
        yield opened


@pytest.fixture
async def redis_cluster(redis_url: str, bridge: AsyncioBridge) -> AsyncIterator[Cluster]:
    async with open_cluster(redis_url) as opened:
        yield opened


async def assert_nothing_left(cluster: Cluster) -> None:
    """No session or presence key left: only the live nodes' own bookkeeping."""
    if cluster.url is None:
        return
    bookkeeping = {"nodes", "presence:epoch"} | {
        f"node:{node.presence.node_id}" for node in cluster.nodes
    }
    assert await cluster.keys() <= bookkeeping


# --- what every implementation does (seed 001's multi-connection scenarios) --------------------


async def test_a_device_is_online_until_its_last_connection_closes(cluster: Cluster) -> None:
    with trio.fail_after(10):
        node = await cluster.add()
        presence = node.presence
        first, second, third = (new_session(node, "phone") for _ in range(3))
        assert await presence.connect(first) == online("phone")
        assert await presence.connect(second) is None
        assert await presence.connect(third) is None
        assert await presence.active_connections("app_t", "phone") == 3

        assert await presence.disconnect(second) is None  # one of three: still online
        assert await presence.active_connections("app_t", "phone") == 2
        assert await presence.disconnect(first) is None
        assert await presence.active_connections("app_t", "phone") == 1
        assert await presence.disconnect(third) == offline("phone")  # the last: offline, once
        assert await presence.active_connections("app_t", "phone") == 0
        assert await presence.sessions("app_t") == []
        assert node.events == []
        await assert_nothing_left(cluster)


async def test_devices_are_independent(cluster: Cluster) -> None:
    with trio.fail_after(10):
        node = await cluster.add()
        presence = node.presence
        a1, a2, b1 = new_session(node, "a"), new_session(node, "a"), new_session(node, "b")
        assert await presence.connect(a1) == online("a")
        assert await presence.connect(b1) == online("b")
        assert await presence.connect(a2) is None
        assert await presence.disconnect(b1) == offline("b")  # B goes, A stays
        assert await presence.active_connections("app_t", "a") == 2
        assert await presence.active_connections("app_t", "b") == 0
        assert await presence.disconnect(a1) is None
        assert await presence.disconnect(a2) == offline("a")
        await assert_nothing_left(cluster)


async def test_the_same_device_id_in_two_apps_is_two_devices(cluster: Cluster) -> None:
    with trio.fail_after(10):
        node = await cluster.add()
        one = new_session(node, "phone", app_id="app_1")
        two = new_session(node, "phone", app_id="app_2")
        assert await node.presence.connect(one) == online("phone", app_id="app_1")
        assert await node.presence.connect(two) == online("phone", app_id="app_2")
        assert await node.presence.sessions("app_1") == [one]
        assert await node.presence.disconnect(one) == offline("phone", app_id="app_1")
        assert await node.presence.sessions("app_2") == [two]
        assert await node.presence.disconnect(two) == offline("phone", app_id="app_2")


async def test_repeated_and_unknown_calls_change_nothing(cluster: Cluster) -> None:
    with trio.fail_after(10):
        node = await cluster.add()
        session = new_session(node, "phone")
        assert await node.presence.disconnect(session) is None  # never connected
        assert await node.presence.connect(session) == online("phone")
        assert await node.presence.connect(session) is None  # again: no second crossing
        assert await node.presence.active_connections("app_t", "phone") == 1
        assert await node.presence.disconnect(session) == offline("phone")
        assert await node.presence.disconnect(session) is None  # already removed
        await assert_nothing_left(cluster)


async def test_rapid_reconnect_cycles_leave_no_ghost(cluster: Cluster) -> None:
    """Seed 001's "rapid reconnects": a client whose new connection opens before the old
    one closes never goes offline; one that closes first goes offline and online each
    time; at the end nothing is left, in the record or in Redis."""
    with trio.fail_after(10):
        node = await cluster.add()
        presence = node.presence
        seen: list[PresenceChange | None] = []
        previous = None
        for _ in range(100):  # overlapping: the new connection first
            session = new_session(node, "phone")
            seen.append(await presence.connect(session))
            if previous is not None:
                seen.append(await presence.disconnect(previous))
            previous = session
        assert previous is not None
        seen.append(await presence.disconnect(previous))
        for _ in range(100):  # close, then reconnect
            session = new_session(node, "phone")
            seen.append(await presence.connect(session))
            seen.append(await presence.disconnect(session))
        crossings = [change for change in seen if change is not None]
        assert crossings == [online("phone"), offline("phone")] * 101
        assert await presence.sessions("app_t") == []
        assert await presence.active_connections("app_t", "phone") == 0
        await assert_nothing_left(cluster)


async def test_concurrent_reconnect_storms_on_many_devices(cluster: Cluster) -> None:
    """Many devices reconnecting at once, each with overlapping connections: every
    device alternates online/offline and ends offline with nothing left."""
    with trio.fail_after(10):
        node = await cluster.add()
        rng = random.Random(7)
        per_device: dict[str, list[PresenceChange]] = {}

        async def storm(device: str) -> None:
            held: list[Session] = []
            for _ in range(40):
                if held and (len(held) >= 3 or rng.random() < 0.5):
                    change = await node.presence.disconnect(held.pop(rng.randrange(len(held))))
                else:
                    held.append(new_session(node, device))
                    change = await node.presence.connect(held[-1])
                if change is not None:
                    per_device.setdefault(device, []).append(change)
            for session in held:
                change = await node.presence.disconnect(session)
                if change is not None:
                    per_device.setdefault(device, []).append(change)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(storm, f"d{i}")
        for device, changes in per_device.items():
            assert [c.is_online for c in changes] == [True, False] * (len(changes) // 2), device
            assert len(changes) % 2 == 0
        assert len(per_device) == 20
        assert await node.presence.sessions("app_t") == []
        await assert_nothing_left(cluster)


async def test_sessions_are_listed_oldest_first(cluster: Cluster) -> None:
    with trio.fail_after(10):
        node = await cluster.add()
        sessions = [new_session(node, f"d{i % 3}") for i in range(6)]
        for session in sessions:
            await node.presence.connect(session)
        await node.presence.connect(new_session(node, "x", app_id="other_app"))
        await node.presence.disconnect(sessions[2])
        assert await node.presence.sessions("app_t") == sessions[:2] + sessions[3:]
        assert await node.presence.sessions("no_such_app") == []


async def test_open_presence_without_a_url_is_memory() -> None:
    async with open_presence(None, node_id="solo") as presence:
        assert isinstance(presence, MemoryPresence)
        assert presence.node_id == "solo"


# --- Redis: nodes racing, keys, round trips --------------------------------------------------


async def test_two_nodes_racing_on_one_device_make_one_event_per_crossing(
    redis_cluster: Cluster, redis_url: str
) -> None:
    """1,000 connect/disconnect cycles of one device, spread over two nodes and 16
    concurrent tasks, connections overlapping at random. MONITOR gives the order in
    which Redis ran the scripts: replaying it, each call must have returned exactly the
    crossing it made, and the crossings alternate online/offline and end offline."""
    with trio.fail_after(9):
        a, b = await redis_cluster.add(), await redis_cluster.add()
        results: dict[tuple[str, str], PresenceChange | None] = {}
        rng = random.Random(2024)
        cycles = iter(range(1000))

        async def worker() -> None:
            for _ in cycles:  # shared: the 1,000 cycles are spread over the workers
                node = rng.choice((a, b))
                session = new_session(node, "phone")
                results["connect", session.connection_id] = await node.presence.connect(session)
                if rng.random() < 0.7:
                    await trio.sleep(rng.random() * 0.002)  # jitter: overlap at random
                results["disconnect", session.connection_id] = await node.presence.disconnect(
                    session
                )

        async with _redis.monitoring(redis_url) as monitor:
            async with trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(worker)
            await monitor.flush(redis_url)

        scripts = {lua.CONNECT.sha: "connect", lua.DISCONNECT.sha: "disconnect"}
        executed = [
            (scripts[cmd.args[1]], cmd.args[3 + int(cmd.args[2])])
            for cmd in monitor.commands(containing='"EVALSHA"')
            if not cmd.from_script
            and len(cmd.args) > 3
            and cmd.args[0].lower() == "evalsha"
            and cmd.args[1] in scripts
            and cmd.args[3].startswith(redis_cluster.prefix)
        ]
        assert len(executed) == 2000
        assert set(executed) == set(results)
        size = 0
        crossings: list[bool] = []
        for op, connection_id in executed:
            size += 1 if op == "connect" else -1
            made = size == 1 if op == "connect" else size == 0
            got = results[op, connection_id]
            assert (got is not None) == made, (op, connection_id, size, got)
            if got is not None:
                assert got.is_online == (op == "connect")
                crossings.append(got.is_online)
        assert crossings == [True, False] * (len(crossings) // 2)
        assert len(crossings) >= 2
        online_count = sum(1 for r in results.values() if r is not None and r.is_online)
        offline_count = sum(1 for r in results.values() if r is not None and not r.is_online)
        assert online_count == offline_count == len(crossings) // 2
        assert await a.presence.active_connections("app_t", "phone") == 0
        assert await b.presence.sessions("app_t") == []
        assert a.events == b.events == []  # nobody died, nothing to reconcile
        await assert_nothing_left(redis_cluster)


async def test_sessions_of_every_node_are_listed_oldest_first(redis_cluster: Cluster) -> None:
    with trio.fail_after(10):
        a, b = await redis_cluster.add(), await redis_cluster.add()
        sessions = [new_session(a if i % 2 else b, f"d{i % 3}") for i in range(8)]
        for session in reversed(sessions):  # registered newest first
            await (a if session.node_id == a.presence.node_id else b).presence.connect(session)
        assert await a.presence.sessions("app_t") == sessions
        assert await b.presence.sessions("app_t") == sessions
        assert {s.node_id for s in sessions} == {a.presence.node_id, b.presence.node_id}


async def test_keys_follow_the_contract(redis_url: str, bridge: AsyncioBridge) -> None:
    """With the default timings: the keys CONTRACT.md names, their TTLs, the session
    hash's fields; the node's liveness and its connections."""
    prefix = _redis.new_prefix()
    try:
        with trio.fail_after(10):
            async with open_presence(redis_url, key_prefix=prefix, node_id="n-keys") as presence:
                session = new_session(presence, "phone")
                cid = session.connection_id
                assert await presence.connect(session) == online("phone")
                async with _redis.RespClient.connect(redis_url) as r:
                    assert await r.call("GET", f"{prefix}presence:conn:{cid}") == "n-keys"
                    assert 59_000 < await r.call("PTTL", f"{prefix}presence:conn:{cid}") <= 60_000
                    assert await r.call("SMEMBERS", f"{prefix}presence:device:app_t:phone") == [cid]
                    assert await r.call("PTTL", f"{prefix}presence:device:app_t:phone") == -1
                    fields = await r.call("HGETALL", f"{prefix}session:{cid}")
                    assert dict(zip(fields[::2], fields[1::2], strict=True)) == {
                        "connection_id": cid,
                        "app_id": "app_t",
                        "device_id": "phone",
                        "connected_at": session.connected_at.isoformat(),
                        "node_id": "n-keys",
                    }
                    assert 119_000 < await r.call("PTTL", f"{prefix}session:{cid}") <= 120_000
                    assert await r.call("SMEMBERS", f"{prefix}sessions:app:app_t") == [cid]
                    assert await r.call("SMEMBERS", f"{prefix}nodes") == ["n-keys"]
                    assert 29_000 < await r.call("PTTL", f"{prefix}node:n-keys") <= 30_000
                    assert await r.call("HKEYS", f"{prefix}node:n-keys:conns") == [cid]
                assert await presence.disconnect(session) == offline("phone")
            # left: its liveness is gone at once, and the node set with it
            assert await _redis.keys(redis_url, prefix) == {f"{prefix}presence:epoch"}
    finally:
        with trio.CancelScope(shield=True):
            await _redis.delete_prefix(redis_url, prefix)


@pytest.mark.usefixtures("redis_server_binary")
async def test_one_round_trip_per_connect_and_per_disconnect(bridge: AsyncioBridge) -> None:
    """Every command Redis receives while 50 sessions connect, then disconnect (a server
    of the test's own: nobody else talks to it)."""
    async with _redis.private_redis() as server:
        with trio.fail_after(10):
            async with open_presence(server.url, config=FAST) as presence:
                sessions = [new_session(presence, f"d{i % 7}") for i in range(50)]
                # scripts loaded, a connection pooled (a new one adds its handshake)
                warm_up = new_session(presence, "warm-up")
                await presence.connect(warm_up)
                await presence.disconnect(warm_up)
                async with _redis.monitoring(server.url) as monitor:
                    for session in sessions:
                        await presence.connect(session)
                    await monitor.flush(server.url)
                    connects = [c for c in monitor.commands() if not c.from_script]
                    monitor.clear()
                    for session in sessions:
                        await presence.disconnect(session)
                    await monitor.flush(server.url)
                    disconnects = [c for c in monitor.commands() if not c.from_script]
                assert [c.args[:2] for c in connects] == [("EVALSHA", lua.CONNECT.sha)] * 50
                assert [c.args[:2] for c in disconnects] == [("EVALSHA", lua.DISCONNECT.sha)] * 50


async def test_a_refresh_is_one_round_trip_for_every_connection(
    redis_cluster: Cluster, redis_url: str
) -> None:
    """2,100 connections, refreshed by one pipelined call (three scripts of at most
    1,000 ids): their TTLs go back up."""
    with trio.fail_after(10):
        # its own refresher out of the way: the one under test is the explicit call
        quiet = attrs.evolve(FAST, connection_ttl=60.0, session_ttl=120.0, refresh_interval=30.0)
        node = await redis_cluster.add(config=quiet)
        presence = node.redis
        sessions = [new_session(node, f"d{i}") for i in range(2100)]
        pending = iter(sessions)

        async def connect_some() -> None:
            for session in pending:
                await presence.connect(session)

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(connect_some)
        async with _redis.RespClient.connect(redis_url) as r:
            conn_key = f"{redis_cluster.prefix}presence:conn:{sessions[0].connection_id}"
            await r.call("PEXPIRE", conn_key, 1000)  # as if time had passed
            async with _redis.monitoring(redis_url) as monitor:
                assert await presence.refresh() == 0
                await monitor.flush(redis_url)
            # (this prefix's only: other clients may share the server)
            sent = [
                c
                for c in monitor.commands(containing=lua.REFRESH.sha)
                if not c.from_script and c.args[3].startswith(redis_cluster.prefix)
            ]
            assert len(sent) == 3
            assert sum(len(c.args) - 8 for c in sent) == 2100  # EVALSHA sha 1 epoch 4 args
            assert await r.call("PTTL", conn_key) > 59_000


async def test_a_connection_gone_from_redis_is_registered_again(
    redis_cluster: Cluster, redis_url: str
) -> None:
    """If Redis loses a live connection (its keys expired, or a reaper took it), the
    next refresh finds it missing and registers it again, reporting the crossing."""
    with trio.fail_after(10):
        node = await redis_cluster.add()
        session = new_session(node, "phone")
        assert await node.presence.connect(session) == online("phone")
        p, cid = redis_cluster.prefix, session.connection_id
        async with _redis.RespClient.connect(redis_url) as r:
            await r.call("DEL", f"{p}presence:conn:{cid}", f"{p}session:{cid}")
            await r.call("SREM", f"{p}presence:device:app_t:phone", cid)
        assert await node.presence.active_connections("app_t", "phone") == 0
        assert await node.redis.refresh() == 1
        await wait_until(lambda: node.changes() == [online("phone")], timeout=5)
        assert await node.presence.sessions("app_t") == [session]
        assert await node.presence.disconnect(session) == offline("phone")


# --- Redis: dead nodes ---------------------------------------------------------------------


REAPING = attrs.evolve(FAST, node_ttl=0.6, heartbeat_interval=0.1, reap_interval=0.1)


async def test_a_node_that_hangs_is_reaped_after_its_liveness_expires(
    redis_cluster: Cluster,
) -> None:
    with trio.fail_after(10):
        a = await redis_cluster.add(config=REAPING)
        b = await redis_cluster.add(config=REAPING)
        on_a_x, on_a_y, on_b_y = new_session(a, "x"), new_session(a, "y"), new_session(b, "y")
        await a.presence.connect(on_a_x)
        await a.presence.connect(on_a_y)
        await b.presence.connect(on_b_y)
        await redis_cluster.kill(a)  # no more heartbeats; its connection to Redis stays
        start = trio.current_time()
        await wait_until(lambda: len(b.ended()) == 2, timeout=5)
        took = trio.current_time() - start
        assert took <= REAPING.node_ttl + REAPING.reap_interval + 1.0
        ended = {e.session.connection_id: e for e in b.ended()}
        assert ended[on_a_x.connection_id] == SessionEnded(
            session=on_a_x, reason="node_lost", change=offline("x")
        )
        # y still has a connection on b: no crossing
        assert ended[on_a_y.connection_id] == SessionEnded(
            session=on_a_y, reason="node_lost", change=None
        )
        assert await b.presence.sessions("app_t") == [on_b_y]
        assert await b.presence.active_connections("app_t", "x") == 0
        assert await b.presence.active_connections("app_t", "y") == 1
        assert b.changes() == []


async def test_a_node_that_exits_without_disconnecting_is_reaped_at_once(
    redis_cluster: Cluster,
) -> None:
    """Its liveness goes when it exits, so the others need not wait for the TTL."""
    slow_ttl = attrs.evolve(FAST, node_ttl=5.0)
    with trio.fail_after(10):
        a = await redis_cluster.add(config=slow_ttl)
        b = await redis_cluster.add(config=slow_ttl)
        sessions = [new_session(a, "x"), new_session(a, "x"), new_session(a, "z")]
        for session in sessions:
            await a.presence.connect(session)
        await redis_cluster.close(a)
        start = trio.current_time()
        await wait_until(lambda: len(b.ended()) == 3, timeout=5)
        assert trio.current_time() - start < 2.0 < slow_ttl.node_ttl
        assert {e.session for e in b.ended()} == set(sessions)
        changes = [e.change for e in b.ended() if e.change is not None]
        assert sorted(c.device_id for c in changes) == ["x", "z"]
        assert all(c == offline(c.device_id) for c in changes)
        assert await b.presence.sessions("app_t") == []
        await assert_nothing_left(redis_cluster)


async def test_two_reapers_never_report_the_same_session(redis_cluster: Cluster) -> None:
    config = attrs.evolve(REAPING, batch=20)
    with trio.fail_after(10):
        dead = await redis_cluster.add(config=config)
        reapers = [await redis_cluster.add(config=config) for _ in range(3)]
        sessions = [new_session(dead, f"d{i % 30}") for i in range(300)]
        async with trio.open_nursery() as nursery:
            for session in sessions:
                nursery.start_soon(dead.presence.connect, session)
        await redis_cluster.kill(dead)

        def reported() -> list[SessionEnded]:
            return [e for node in reapers for e in node.ended()]

        # Each entry is reported by the script call that removed it: a duplicate would
        # show as fewer than 300 distinct sessions among the first 300 reports.
        await wait_until(lambda: len(reported()) >= 300, timeout=5)
        ended = reported()
        assert len(ended) == 300
        assert {e.session.connection_id for e in ended} == {s.connection_id for s in sessions}
        changes = [e.change for e in ended if e.change is not None]
        assert sorted(c.device_id for c in changes) == sorted(f"d{i}" for i in range(30))
        await redis_cluster.close(dead)
        await assert_nothing_left(redis_cluster)


async def test_an_earlier_run_of_the_same_node_id_is_cleaned_up(redis_cluster: Cluster) -> None:
    """A node restarted with the same id before anyone reaped it: it reports what its
    previous run left as ended, and starts clean."""
    with trio.fail_after(10):
        first = await redis_cluster.add(node_id="fixed-node", config=FAST)
        left = [new_session(first, "x"), new_session(first, "y")]
        for session in left:
            await first.presence.connect(session)
        await redis_cluster.close(first)
        second = await redis_cluster.add(node_id="fixed-node", config=FAST)
        await wait_until(lambda: len(second.ended()) == 2, timeout=5)
        assert {e.session for e in second.ended()} == set(left)
        assert all(e.reason == "node_lost" for e in second.ended())
        assert {e.change for e in second.ended()} == {offline("x"), offline("y")}
        assert await second.presence.sessions("app_t") == []


# --- Redis: unreachable, lost and back -------------------------------------------------------

OUTAGE = attrs.evolve(FAST, call_timeout=0.3, node_ttl=5.0, connection_ttl=10.0, session_ttl=20.0)


async def test_an_unreachable_redis_is_one_clear_line_at_start(bridge: AsyncioBridge) -> None:
    port = _redis.free_port()
    start = trio.current_time()
    with trio.fail_after(5), pytest.raises(PresenceUnavailable) as caught:
        async with open_presence(f"redis://:s3cret@127.0.0.1:{port}/0", config=OUTAGE):
            pytest.fail("opened on a closed port")
    assert trio.current_time() - start < 1.0  # refused: no need to wait for the timeout
    message = str(caught.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in message


async def test_a_redis_that_never_answers_is_unavailable_within_the_timeout(
    bridge: AsyncioBridge,
) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    held: list[trio.SocketStream] = []

    async def accept_and_stay_silent() -> None:
        while True:
            held.append(await listeners[0].accept())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_and_stay_silent)
        start = trio.current_time()
        with trio.fail_after(5), pytest.raises(PresenceUnavailable, match=r"0\.3 s"):
            async with open_presence(f"redis://127.0.0.1:{port}/0", config=OUTAGE):
                pytest.fail("opened on a silent server")
        assert 0.25 <= trio.current_time() - start < 1.5
        nursery.cancel_scope.cancel()
    for stream in held:
        await stream.aclose()
    await listeners[0].aclose()


@pytest.mark.usefixtures("redis_server_binary")
async def test_an_optional_redis_that_is_not_there_yet_is_joined_later(
    bridge: AsyncioBridge,
) -> None:
    server = _redis.PrivateRedis(_redis.free_port())
    try:
        with trio.fail_after(10):
            async with open_cluster(server.url) as cluster:
                node = await cluster.add(config=OUTAGE, required=False)
                assert not node.redis.connected
                session = new_session(node, "phone")
                assert await node.presence.connect(session) is None  # alone: no crossing yet
                assert await node.presence.sessions("app_t") == [session]
                await server.start()
                await wait_until(lambda: node.redis.connected, timeout=5)
                await wait_until(lambda: node.changes() == [online("phone")], timeout=5)
                assert await node.presence.sessions("app_t") == [session]
                assert await node.presence.disconnect(session) == offline("phone")
    finally:
        with trio.CancelScope(shield=True):
            await server.stop()


@pytest.mark.usefixtures("redis_server_binary")
async def test_redis_restarted_empty_gets_this_nodes_connections_back(
    bridge: AsyncioBridge,
) -> None:
    """Redis stops; calls go on (no exception, no crossing returned: the node's own
    record); Redis comes back empty; the live connections are registered again and the
    crossings reported, including the device that went offline meanwhile."""
    async with _redis.private_redis() as server, open_cluster(server.url) as cluster:
        with trio.fail_after(10):
            node = await cluster.add(config=OUTAGE)
            presence = node.presence
            x, y1, y2 = new_session(node, "x"), new_session(node, "y"), new_session(node, "y")
            assert await presence.connect(x) == online("x")
            assert await presence.connect(y1) == online("y")
            assert await presence.connect(y2) is None

            await server.stop()
            assert await presence.disconnect(x) is None  # refused: at once
            assert not node.redis.connected
            z = new_session(node, "z")
            assert await presence.connect(z) is None
            assert await presence.disconnect(y1) is None
            assert await presence.sessions("app_t") == [y2, z]  # the node's own record
            assert await presence.active_connections("app_t", "y") == 1
            assert node.events == []

            await server.start()  # empty
            await wait_until(lambda: node.redis.connected, timeout=5)
            assert sorted(node.changes(), key=repr) == sorted(
                [online("y"), online("z"), offline("x")], key=repr
            )
            assert node.events[-1] == offline("x")  # after the registrations
            assert await presence.sessions("app_t") == [y2, z]  # from Redis again
            assert await presence.active_connections("app_t", "x") == 0
            assert await presence.active_connections("app_t", "y") == 1
            keys = await cluster.keys()
            assert f"session:{y2.connection_id}" in keys
            assert f"session:{x.connection_id}" not in keys
            assert f"session:{y1.connection_id}" not in keys
            assert await presence.disconnect(y2) == offline("y")
            assert await presence.disconnect(z) == offline("z")


@pytest.mark.usefixtures("redis_server_binary")
async def test_a_frozen_redis_never_hangs_a_call_and_is_reconciled(
    bridge: AsyncioBridge,
) -> None:
    """SIGSTOP: the server keeps its connections and answers nothing. The first call
    gives up after call_timeout, the next ones do not wait; after SIGCONT the node
    removes what ended, registers what started, and reports each crossing once (the
    timed-out disconnect may have run in Redis when it woke: its offline is not lost)."""
    async with _redis.private_redis() as server, open_cluster(server.url) as cluster:
        with trio.fail_after(10):
            node = await cluster.add(config=OUTAGE)
            presence = node.presence
            x, y1, y2 = new_session(node, "x"), new_session(node, "y"), new_session(node, "y")
            await presence.connect(x)
            await presence.connect(y1)
            await presence.connect(y2)

            server.freeze()
            try:
                start = trio.current_time()
                assert await presence.disconnect(x) is None
                assert trio.current_time() - start < OUTAGE.call_timeout + 0.5
                z = new_session(node, "z")
                start = trio.current_time()
                assert await presence.connect(z) is None
                assert await presence.disconnect(y1) is None
                assert await presence.sessions("app_t") == [y2, z]
                assert trio.current_time() - start < 0.1  # away: no waiting
            finally:
                server.thaw()

            # connected again once the sync is over, its reports made
            await wait_until(lambda: node.redis.connected, timeout=5)
            assert sorted(node.changes(), key=repr) == sorted([online("z"), offline("x")], key=repr)
            assert await presence.sessions("app_t") == [y2, z]
            assert await presence.active_connections("app_t", "x") == 0
            assert await presence.active_connections("app_t", "y") == 1
            assert await presence.disconnect(y2) == offline("y")
            assert await presence.disconnect(z) == offline("z")
            assert await presence.sessions("app_t") == []


@pytest.mark.usefixtures("redis_server_binary")
async def test_a_connect_whose_answer_was_lost_reports_its_crossing_once(
    bridge: AsyncioBridge,
) -> None:
    """The connect script reaches a frozen Redis and the call times out; when Redis wakes
    it runs that late copy (the 0 -> 1 crossing is made there, its answer lost). The
    node registers the connection again and reports the crossing, once."""
    async with _redis.private_redis() as server, open_cluster(server.url) as cluster:
        with trio.fail_after(10):
            node = await cluster.add(config=OUTAGE)
            # the scripts loaded, a connection pooled: the call below is sent at once
            # (a late NOSCRIPT would change nothing; a new connection would not get
            # past its handshake)
            warm_up = new_session(node, "warm-up")
            await node.presence.connect(warm_up)
            await node.presence.disconnect(warm_up)
            node.events.clear()
            async with _redis.monitoring(server.url) as monitor:
                w = new_session(node, "w")
                server.freeze()
                try:
                    assert await node.presence.connect(w) is None
                finally:
                    server.thaw()
                await wait_until(lambda: node.redis.connected, timeout=5)
                await monitor.flush(server.url)
            ran = [
                c
                for c in monitor.commands(containing=lua.CONNECT.sha)
                if not c.from_script and w.connection_id in c.args
            ]
            assert len(ran) == 2  # the late copy, then the node's own retry
            assert node.changes() == [online("w")]
            assert await node.presence.disconnect(w) == offline("w")


@pytest.mark.usefixtures("redis_server_binary")
async def test_two_nodes_after_redis_restarted_empty_report_each_offline_once(
    bridge: AsyncioBridge,
) -> None:
    """Both nodes had connections of device x, all of which ended while Redis was
    away; after it comes back empty, exactly one of them reports x offline."""
    async with _redis.private_redis() as server, open_cluster(server.url) as cluster:
        with trio.fail_after(10):
            a = await cluster.add(config=OUTAGE)
            b = await cluster.add(config=OUTAGE)
            on_a, on_b = new_session(a, "x"), new_session(b, "x")
            assert await a.presence.connect(on_a) == online("x")
            assert await b.presence.connect(on_b) is None
            await server.stop()
            assert await a.presence.disconnect(on_a) is None
            assert await b.presence.disconnect(on_b) is None
            await server.start()
            # connected again once the sync is over, its reports made
            await wait_until(lambda: a.redis.connected and b.redis.connected, timeout=5)
            assert a.events + b.events == [offline("x")]


@pytest.mark.usefixtures("redis_server_binary")
async def test_calls_never_raise_while_redis_is_away(bridge: AsyncioBridge) -> None:
    async with _redis.private_redis() as server, open_cluster(server.url) as cluster:
        with trio.fail_after(10):
            node = await cluster.add(config=OUTAGE)
            await server.stop()
            sessions = [new_session(node, f"d{i % 4}") for i in range(40)]
            for session in sessions:
                assert await node.presence.connect(session) is None
            assert await node.presence.active_connections("app_t", "d1") == 10
            assert len(await node.presence.sessions("app_t")) == 40
            for session in sessions[:20]:
                assert await node.presence.disconnect(session) is None
            await server.start()
            await wait_until(lambda: node.redis.connected, timeout=5)
            # the 20 still live registered; their 4 devices were never online in Redis
            assert sorted(node.changes(), key=repr) == [online(f"d{i}") for i in range(4)]
            assert len(await node.presence.sessions("app_t")) == 20
            assert await node.presence.active_connections("app_t", "d1") == 5


async def test_open_presence_requires_a_valid_url(bridge: AsyncioBridge) -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        async with open_presence("http://127.0.0.1:1/", config=OUTAGE):
            pytest.fail("opened a presence on an http URL")


def test_node_ids_cannot_break_key_names() -> None:
    with pytest.raises(ValueError, match="node id"):
        RedisPresence("redis://127.0.0.1:6379/0", node_id="a:b")


async def test_a_malformed_redis_url_never_shows_its_password() -> None:
    from replyhq_trio.backends import open_presence

    with pytest.raises(ValueError, match="invalid Redis URL") as caught:
        async with open_presence("redis://user:pa/ss3cret@127.0.0.1:6379/0"):
            pytest.fail("opened")
    assert "ss3cret" not in str(caught.value)
    assert "pa" not in str(caught.value).split("expected")[0]
