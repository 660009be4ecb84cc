"""The Redis presence against a real Redis: what a connect and a disconnect cost, how
many go through per second, and what one TTL refresh of many local connections costs.

Measured in one process (Trio, redis-py on the asyncio bridge, like the server), with a
:class:`~replyhq_trio.backends.redis_presence.RedisPresence` whose background work is not
started (nothing else talks to Redis meanwhile), under a key prefix of its own that is
deleted at the end:

- round trips per connect and per disconnect: the commands Redis received from clients
  (MONITOR, script-internal commands left out), and what the scripts run inside Redis
  (INFO commandstats deltas);
- connects + disconnects per second, from one task and from ``--concurrency`` tasks,
  with this process's CPU and Redis's CPU (INFO cpu deltas) per call;
- one TTL refresh of ``--connections`` local connections (the call ``run`` makes every
  ``refresh_interval``): wall time, this process's CPU, Redis's CPU, commands run;
- for scale: re-registering all of them after an outage (the keeper's pipelined sync),
  and a reaper removing them all when their node is dead.

Not a test: it prints figures (``--json`` for machine-readable ones). Admin commands
(INFO, MONITOR, clean-up) go through redis-py's synchronous client in a worker thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis
import trio

from replyhq_trio.backends import _redis_scripts as lua
from replyhq_trio.backends import open_asyncio_bridge
from replyhq_trio.backends.redis_presence import RedisPresence, RedisPresenceConfig
from replyhq_trio.ports import PresenceChange, Session, SessionEnded


def _admin(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=30)


async def _info(url: str, section: str) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        with _admin(url) as client:
            found: dict[str, Any] = client.info(section)
            return found

    return await trio.to_thread.run_sync(read)


async def _redis_cpu(url: str) -> float:
    info = await _info(url, "cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _commandstats(url: str) -> dict[str, tuple[int, int]]:
    """command -> (calls, microseconds)."""
    info = await _info(url, "commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(stats["calls"]), int(stats["usec"]))
        for name, stats in info.items()
    }


#: What this script's own admin connections send (left out of the figures).
_ADMIN = {"info", "echo", "hello", "client", "client|setinfo", "monitor", "ping", "scan", "unlink"}


def _delta(
    after: dict[str, tuple[int, int]], before: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    found = {}
    for name, (calls, usec) in after.items():
        was_calls, was_usec = before.get(name, (0, 0))
        if calls > was_calls and name not in _ADMIN:
            found[name] = (calls - was_calls, usec - was_usec)
    return found


class _Monitor:
    """MONITOR in a thread, until a marker comes through: the commands clients sent
    (script-internal ones, and those of the connection that sends the marker, left out)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.marker = f"bench-marker-{uuid.uuid4().hex}"
        self.started = threading.Event()
        self.client_commands: list[str] = []

    def collect(self) -> None:
        seen: list[tuple[str, str]] = []
        with _admin(self.url) as client, client.monitor() as monitor:
            self.started.set()
            while True:
                command = monitor.next_command()
                line = str(command["command"])
                sender = f"{command.get('client_address')}:{command.get('client_port')}"
                if self.marker in line:
                    break
                if command.get("client_type") != "lua":
                    seen.append((sender, line.split(" ", 1)[0].upper()))
        self.client_commands = [name for who, name in seen if who != sender]

    def stop(self) -> None:
        with _admin(self.url) as client:
            client.echo(self.marker)


async def _monitored(url: str, work: Callable[[], Awaitable[object]]) -> list[str]:
    monitor = _Monitor(url)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, monitor.collect)
        await trio.to_thread.run_sync(monitor.started.wait)
        await work()
        await trio.to_thread.run_sync(monitor.stop)
    return monitor.client_commands


def _sessions(node: str, count: int, devices: int) -> list[Session]:
    now = datetime.now(UTC)
    return [
        Session(
            connection_id=f"c_{uuid.uuid4().hex[:16]}",
            app_id="app_bench",
            device_id=f"d{i % devices}",
            connected_at=now,
            node_id=node,
        )
        for i in range(count)
    ]


async def _spread(
    call: Callable[[Session], Awaitable[object]], sessions: Sequence[Session], concurrency: int
) -> None:
    """``call`` on every session, from ``concurrency`` tasks."""
    pending = iter(sessions)

    async def worker() -> None:
        for session in pending:
            await call(session)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)


async def _timed(url: str, work: Callable[[], Awaitable[object]]) -> tuple[float, float, float]:
    """Wall seconds, this process's CPU seconds, Redis's CPU seconds."""
    redis_before = await _redis_cpu(url)
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    await work()
    wall, cpu = time.perf_counter() - wall_before, time.process_time() - cpu_before
    return wall, cpu, await _redis_cpu(url) - redis_before


async def _ignore(event: SessionEnded | PresenceChange) -> None:
    pass


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    url: str = args.redis_url
    prefix = f"bench_presence_{uuid.uuid4().hex[:8]}:"
    config = RedisPresenceConfig(max_connections=args.concurrency)
    results: dict[str, Any] = {"redis_url": url, "key_prefix": prefix}
    with _admin(url) as client:
        results["redis_version"] = client.info("server")["redis_version"]
    try:
        async with (
            open_asyncio_bridge() as bridge,
            RedisPresence(url, key_prefix=prefix, config=config, bridge=bridge) as presence,
        ):
            node = presence.node_id

            # --- round trips ------------------------------------------------------------
            sample = _sessions(node, args.sample, args.sample // 2)
            await presence.connect(_sessions(node, 1, 1)[0])  # a pooled connection first

            async def connect_sample() -> None:
                for session in sample:
                    await presence.connect(session)

            async def disconnect_sample() -> None:
                for session in sample:
                    await presence.disconnect(session)

            for name, work in (("connect", connect_sample), ("disconnect", disconnect_sample)):
                stats_before = await _commandstats(url)
                sent = await _monitored(url, work)
                inside = _delta(await _commandstats(url), stats_before)
                inside.pop("evalsha", None)
                results[f"{name}_round_trips"] = len(sent) / len(sample)
                results[f"{name}_client_commands"] = sorted(set(sent))
                results[f"{name}_commands_in_script"] = {
                    command: calls / len(sample) for command, (calls, _) in sorted(inside.items())
                }

            # --- throughput (no MONITOR here: it slows Redis down) -----------------------
            for label, concurrency, count in (
                ("sequential", 1, args.sequential),
                (f"{args.concurrency}_tasks", args.concurrency, args.concurrent),
            ):
                sessions = _sessions(node, count, max(count // 2, 1))
                figures: dict[str, Any] = {}
                for name in ("connect", "disconnect"):
                    call = presence.connect if name == "connect" else presence.disconnect

                    async def run_all(
                        call: Callable[[Session], Awaitable[object]] = call,
                        sessions: list[Session] = sessions,
                        concurrency: int = concurrency,
                    ) -> None:
                        await _spread(call, sessions, concurrency)

                    stats_before = await _commandstats(url)
                    wall, cpu, redis_cpu = await _timed(url, run_all)
                    evalsha = _delta(await _commandstats(url), stats_before).get("evalsha", (0, 0))
                    figures[name] = {
                        "calls": count,
                        "calls_per_s": count / wall,
                        "process_cpu_us_per_call": cpu / count * 1e6,
                        "redis_cpu_us_per_call": redis_cpu / count * 1e6,
                        "script_us_in_redis": evalsha[1] / max(evalsha[0], 1),
                    }
                seconds = sum(count / figures[n]["calls_per_s"] for n in ("connect", "disconnect"))
                figures["calls_per_s"] = 2 * count / seconds
                results[f"throughput_{label}"] = figures

            # --- one TTL refresh of many local connections ------------------------------
            many = _sessions(node, args.connections, args.connections)
            await _spread(presence.connect, many, args.concurrency)
            walls, cpus, redis_cpus = [], [], []
            stats_before = await _commandstats(url)
            for _ in range(args.repeat):
                wall, cpu, redis_cpu = await _timed(url, presence.refresh)
                walls.append(wall)
                cpus.append(cpu)
                redis_cpus.append(redis_cpu)
            inside = _delta(await _commandstats(url), stats_before)
            evalsha_calls, evalsha_usec = inside.pop("evalsha", (0, 0))
            sent = await _monitored(url, presence.refresh)
            results["refresh"] = {
                "connections": args.connections,
                "repeat": args.repeat,
                "wall_ms_median": statistics.median(walls) * 1e3,
                "wall_ms_max": max(walls) * 1e3,
                "process_cpu_ms_median": statistics.median(cpus) * 1e3,
                "redis_cpu_ms_median": statistics.median(redis_cpus) * 1e3,
                "scripts_per_refresh": evalsha_calls / args.repeat,
                "redis_ms_per_script": evalsha_usec / max(evalsha_calls, 1) / 1e3,
                "client_commands_per_refresh": len(sent),
                "commands_in_scripts_per_refresh": {
                    command: calls / args.repeat for command, (calls, _) in sorted(inside.items())
                },
            }

            # --- re-registering all of them (the sync after an outage) -------------------
            async def resync() -> None:
                presence._dirty.update(presence._live)  # what _reconcile does
                await presence._sync_all(_ignore)

            wall, cpu, redis_cpu = await _timed(url, resync)
            results["resync"] = {
                "connections": args.connections,
                "wall_ms": wall * 1e3,
                "process_cpu_ms": cpu * 1e3,
                "redis_cpu_ms": redis_cpu * 1e3,
            }

        # --- a reaper removing them all (their node left without disconnecting) ---------
        reaped: list[SessionEnded | PresenceChange] = []

        async def collect(event: SessionEnded | PresenceChange) -> None:
            reaped.append(event)

        async with (
            open_asyncio_bridge() as bridge,
            RedisPresence(url, key_prefix=prefix, config=config, bridge=bridge) as reaper,
        ):
            wall, cpu, redis_cpu = await _timed(url, lambda: reaper._reap(collect))
            results["reap"] = {
                "sessions": len(reaped),
                "wall_ms": wall * 1e3,
                "process_cpu_ms": cpu * 1e3,
                "redis_cpu_ms": redis_cpu * 1e3,
                "batch": config.batch,
            }
    finally:

        def clean() -> None:
            with _admin(url) as client:
                found = list(client.scan_iter(match=f"{prefix}*", count=1000))
                for i in range(0, len(found), 1000):
                    client.unlink(*found[i : i + 1000])

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(clean)
    results["scripts"] = {s.name: s.sha for s in (lua.CONNECT, lua.DISCONNECT, lua.REFRESH)}
    return results


def report(results: dict[str, Any]) -> str:
    lines = [f"Redis {results['redis_version']} at {results['redis_url']}", ""]
    sequential = results["throughput_sequential"]
    for name in ("connect", "disconnect"):
        inside = ", ".join(
            f"{command} {calls:g}"
            for command, calls in results[f"{name}_commands_in_script"].items()
        )
        lines.append(
            f"{name:>10}: {results[f'{name}_round_trips']:.3f} round trips "
            f"({'/'.join(results[f'{name}_client_commands'])}), script "
            f"{sequential[name]['script_us_in_redis']:.1f} µs in Redis; inside it: {inside}"
        )
    lines.append("")
    for label, figures in results.items():
        if label.startswith("throughput_"):
            lines.append(
                f"{label.removeprefix('throughput_')}: {figures['calls_per_s']:,.0f} "
                "connects+disconnects/s"
            )
            for name in ("connect", "disconnect"):
                f = figures[name]
                lines.append(
                    f"  {name:>10}: {f['calls_per_s']:,.0f}/s ({f['calls']} calls); CPU per "
                    f"call: this process {f['process_cpu_us_per_call']:.0f} µs, Redis "
                    f"{f['redis_cpu_us_per_call']:.1f} µs (script {f['script_us_in_redis']:.1f} µs)"
                )
    refresh = results["refresh"]
    lines += [
        "",
        f"TTL refresh of {refresh['connections']:,} local connections (median of "
        f"{refresh['repeat']}): {refresh['wall_ms_median']:.1f} ms wall (max "
        f"{refresh['wall_ms_max']:.1f}), this process {refresh['process_cpu_ms_median']:.1f} ms "
        f"CPU, Redis {refresh['redis_cpu_ms_median']:.1f} ms CPU; "
        f"{refresh['client_commands_per_refresh']} client commands in one pipeline "
        f"({refresh['scripts_per_refresh']:g} scripts, {refresh['redis_ms_per_script']:.2f} ms "
        f"each in Redis), inside: "
        + ", ".join(f"{c} {n:g}" for c, n in refresh["commands_in_scripts_per_refresh"].items()),
    ]
    resync, reap = results["resync"], results["reap"]
    lines += [
        f"re-registering {resync['connections']:,} after an outage (pipelined): "
        f"{resync['wall_ms']:.0f} ms wall, this process {resync['process_cpu_ms']:.0f} ms CPU, "
        f"Redis {resync['redis_cpu_ms']:.0f} ms CPU",
        f"reaping {reap['sessions']:,} sessions of a dead node (batches of {reap['batch']}): "
        f"{reap['wall_ms']:.0f} ms wall, this process {reap['process_cpu_ms']:.0f} ms CPU, "
        f"Redis {reap['redis_cpu_ms']:.0f} ms CPU",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sample", type=int, default=1000, help="calls counted by MONITOR")
    parser.add_argument("--sequential", type=int, default=2000, help="sessions, one task")
    parser.add_argument("--concurrent", type=int, default=10000, help="sessions, many tasks")
    parser.add_argument("--concurrency", type=int, default=32, help="tasks (and pool size)")
    parser.add_argument("--connections", type=int, default=10000, help="local, refreshed")
    parser.add_argument("--repeat", type=int, default=10, help="refreshes measured")
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    args = parser.parse_args(argv)
    try:
        with _admin(args.redis_url) as client:
            client.ping()
    except redis.RedisError as exc:
        print(f"bench-presence: Redis at {args.redis_url} is not reachable: {exc}", file=sys.stderr)
        return 2
    results = trio.run(measure, args)
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
