"""The cluster drill: two nodes on a private Redis, real clients chatting, three failures.

Setup: a private ``redis-server`` on a free port, a SQLite store in a temporary directory
(or ``--database-url``), an app, two ``replyhq_trio serve`` nodes sharing both, an admin on
each node's ``/admin`` recording every event, and CLIENTS devices on ``/client`` (half on
each node), each with its own conversation, sending ``message:send`` every INTERVAL s. A
client told ``server:shutdown`` leaves, waits ``reconnect_delay_ms`` and connects to the
other node; one that loses its node does the same after a short jittered backoff; after any
reconnect it re-joins its conversation and catches up (``GET .../messages?after=``).

(a) SIGTERM node 1: exit 0 within grace + 2 s; every node-1 client notified and back on
    node 2 within the window; nothing acked lost or stored twice, every client has every
    message of its conversation (an agent answers some while their devices are away).
(b) SIGKILL node 2: node 1's admin hears ``session:disconnect`` ``node_lost`` for each of
    node 2's sessions within 2 minutes, ``presence:change`` offline for the devices left
    with no connection (a few are held back), and the devices that reconnected end online.
(c) Redis restart (it comes back empty): the first cross-node broadcast within 5 s of
    Redis answering, then both ways; ``/readyz`` 200; no node found itself deaf
    (``replyhq_backplane_resubscribed_total``); every connection registered again.

After each part the stopped node restarts (same port) and its clients move back. Figures
and PASS/FAIL per part are printed and written as JSON (``--json``); exit 0 only if all
pass. Node logs are kept in ``.artifacts/cluster-drill-logs/``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import h11
import orjson
import trio

from replyhq_trio.client import AckTimeout, Backoff, ClientError, Disconnected, Socket, open_client

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_JSON = ROOT / ".artifacts" / "cluster-drill.json"
LOG_DIR = ROOT / ".artifacts" / "cluster-drill-logs"
CLI = [sys.executable, "-m", "replyhq_trio"]
NODE_LOST_LIMIT = 120.0  # PROTOCOL.md section 10: "within about two minutes"
CROSS_LIMIT = 5.0  # the first cross-node broadcast after Redis is back
Json = dict[str, Any]


class DrillError(Exception):
    """The drill cannot go on (a process did not start, clients could not connect)."""


def now() -> float:
    return trio.current_time()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float, interval: float = 0.05
) -> bool:
    """Poll ``condition`` (maybe async) until it holds (True) or ``timeout`` s pass (False)."""

    async def holds() -> bool:
        answer = condition()
        return await answer if inspect.isawaitable(answer) else answer

    with trio.move_on_after(max(0.0, timeout)):
        while not await holds():  # noqa: ASYNC110 - nothing to wait on but the condition
            await trio.sleep(interval)
        return True
    return False


@dataclass
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def http(
    port: int,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
) -> Response | None:
    """One HTTP/1.1 request on a new connection, 10 s at most; None if nothing answered."""
    conn = h11.Connection(h11.CLIENT)
    head = [("Host", f"127.0.0.1:{port}"), ("Connection", "close"), *headers]
    if body is not None:
        head.append(("Content-Length", str(len(body))))
    events: list[h11.Event] = [h11.Request(method=method, target=target, headers=head)]
    if body:
        events.append(h11.Data(data=body))
    wire = b"".join(conn.send(event) or b"" for event in [*events, h11.EndOfMessage()])
    status, chunks = 0, []
    try:
        with trio.fail_after(10):
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(wire)
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                    elif isinstance(event, h11.Data):
                        chunks.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
    except (OSError, trio.TooSlowError, h11.ProtocolError):
        return None
    return Response(status, b"".join(chunks))


# --- processes -------------------------------------------------------------------------------


class Redis:
    """A private ``redis-server`` without persistence: a restart comes back empty."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: trio.Process | None = None

    async def answers(self) -> bool:
        try:
            with trio.fail_after(1):
                async with await trio.open_tcp_stream("127.0.0.1", self.port) as stream:
                    await stream.send_all(b"*1\r\n$4\r\nPING\r\n")
                    return (await stream.receive_some(64)).startswith(b"+PONG")
        except (OSError, trio.TooSlowError):
            return False

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DrillError("redis-server is not installed")
        with (self.directory / "redis.log").open("ab") as out:
            self.process = await trio.lowlevel.open_process(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory)],
                stdout=out, stderr=out,
            )  # fmt: skip
        if not await until(self.answers, 10, 0.02):
            raise DrillError(f"redis-server on port {self.port} does not answer PING")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()
            with trio.move_on_after(5):
                await process.wait()
                return
            process.kill()
            await process.wait()


class Node:
    """One ``serve`` process; a restart keeps the port and takes a new node id."""

    def __init__(self, drill: Drill, index: int) -> None:
        self.drill, self.index = drill, index  # index 0 is "node 1"
        self.name = f"node {index + 1}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: trio.Process | None = None
        self.node_id = ""
        self.logs: list[Path] = []

    async def start(self) -> float:
        """Start, and wait until ``/readyz`` answers 200: how long that took."""
        self.node_id = f"drill-node{self.index + 1}-{len(self.logs) + 1}"
        log = self.drill.directory / f"node{self.index + 1}-start{len(self.logs) + 1}.log"
        self.logs.append(log)
        began = now()
        with log.open("ab") as out:
            self.process = process = await trio.lowlevel.open_process(
                [*CLI, "serve", "--port", str(self.port), "--database-url", self.drill.db_url,
                 "--redis-url", self.drill.redis.url, "--redis-key-prefix", "cdrill:",
                 "--node-id", self.node_id, "--limit-ip-connects", "0",
                 "--grace-period", f"{self.drill.opts.grace:g}", "--log-format", "json"],
                cwd=self.drill.directory, stdout=subprocess.DEVNULL, stderr=out,
            )  # fmt: skip
        ready = await until(lambda: process.returncode is not None or self.ready(), 30, 0.1)
        if not ready or process.returncode is not None:
            raise DrillError(f"{self.name} did not become ready (see {log.name})")
        return now() - began

    async def ready(self) -> bool:
        response = await http(self.port, "GET", "/readyz")
        return response is not None and response.status == 200

    async def wait_exit(self, timeout: float) -> tuple[int | None, float]:
        """(exit code, or None if it had to be killed; seconds waited)."""
        assert self.process is not None
        began = now()
        with trio.move_on_after(timeout):
            return await self.process.wait(), now() - began
        self.process.kill()
        await self.process.wait()
        return None, now() - began

    async def backplane_metrics(self) -> dict[str, float]:
        response = await http(self.port, "GET", "/metrics")
        lines = response.body.decode().splitlines() if response and response.status == 200 else []
        prefix = "replyhq_backplane_"
        return {
            name.removeprefix(prefix): float(value)
            for name, _, value in (line.rpartition(" ") for line in lines)
            if name.startswith(prefix)
        }


# --- clients ---------------------------------------------------------------------------------


class Client:
    """A device: its conversation, a failover loop over both nodes, what it sent and saw."""

    def __init__(self, drill: Drill, device_id: str, home: int, interval: float | None) -> None:
        self.drill, self.device_id, self.interval = drill, device_id, interval
        self.home = self.prefer = home
        self.pinned = interval is None  # the probes of (c) stay on their node
        self.conversation_id = ""
        self.node: int | None = None  # the node it is connected to now
        self.connection_id = ""
        self.scope: trio.CancelScope | None = None
        self.end = ""  # why the session ends: shutdown, lost, moved
        self.synced = False  # joined and caught up since the last connect
        self.seen: dict[str, str] = {}  # message id: "live" or "catch-up"
        self.last_seen = ""
        self.acked: dict[str, str] = {}  # local_id: message id (an agent's answers too)
        self.outbox: list[str] = []
        self.sent = 0
        self.wake = trio.Event()
        self.hold: trio.Event | None = None  # (b): wait for it before reconnecting
        self.notices: list[tuple[float, int]] = []  # (when, reconnect_delay_ms)
        self.connects: list[tuple[float, int]] = []  # (when, node)
        self.ids: list[str] = []  # every connection_id it had
        self.errors: Counter[str] = Counter()

    @property
    def headers(self) -> list[tuple[str, str]]:
        app = self.drill.app
        return [("X-App-Id", app["app_id"]), ("X-Device-Id", self.device_id),
                ("X-Api-Key", app["api_key"]), ("Content-Type", "application/json")]  # fmt: skip

    def move(self, target: int) -> None:
        """Go to ``target`` (the drill rebalancing after a restart)."""
        self.prefer = target
        if self.scope is not None and self.node != target:
            self.end = "moved"
            self.scope.cancel()

    def queue(self) -> str:
        self.sent += 1
        self.outbox.append(f"{self.device_id}:{self.sent}")
        self.wake.set()
        return self.outbox[-1]

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.interval:
                nursery.start_soon(self.ticker, self.interval)
            await self.connection_loop()

    async def ticker(self, interval: float) -> None:
        await trio.sleep(self.drill.rng.uniform(0, interval))
        while True:
            if self.drill.sending:
                self.queue()
            await trio.sleep(interval)

    async def connection_loop(self) -> None:
        backoff = Backoff(initial_delay=0.5, max_delay=5.0, rng=self.drill.rng)
        auth = {"app_id": self.drill.app["app_id"], "device_id": self.device_id,
                "api_key": self.drill.app["api_key"]}  # fmt: skip
        while True:
            target, outcome = self.prefer, "failed"
            held = True  # the gate bounds the handshakes in flight
            await self.drill.gate.acquire()
            try:
                async with open_client(self.drill.nodes[target].url) as client:
                    sock = await client.connect("/client", auth, timeout=10)
                    connected = await sock.wait_for("connected", timeout=10)
                    self.drill.gate.release()
                    held = False
                    backoff.reset()
                    self.connection_id = connected.args[0]["connection_id"]
                    self.ids.append(self.connection_id)
                    outcome = await self.session(sock, target)
            except (ClientError, trio.TooSlowError, OSError) as exc:
                self.errors[f"connect: {type(exc).__name__}: {exc}"[:80]] += 1
            finally:
                if held:
                    self.drill.gate.release()
            if outcome == "moved":
                continue
            self.prefer = target if self.pinned else 1 - target
            if outcome == "shutdown":
                await trio.sleep(self.notices[-1][1] / 1000)
                continue
            if outcome == "lost" and self.hold is not None:
                with trio.move_on_after(NODE_LOST_LIMIT + 30):
                    await self.hold.wait()
            await trio.sleep(backoff.next_delay())

    async def session(self, sock: Socket, target: int) -> str:
        self.node, self.end = target, ""
        self.connects.append((now(), target))
        try:
            async with trio.open_nursery() as nursery:
                self.scope = nursery.cancel_scope
                nursery.start_soon(self.receive, sock, nursery.cancel_scope)
                await self.rejoin(sock, self.drill.nodes[target].port)
                self.synced = True
                nursery.start_soon(self.send, sock)
        finally:
            self.node = self.scope = None
            self.synced = False
        return self.end or "lost"

    async def receive(self, sock: Socket, scope: trio.CancelScope) -> None:
        try:
            while True:
                event = await sock.receive()
                payload = event.args[0] if event.args else {}
                if event.name == "message:new":
                    self.note(payload, "live")
                elif event.name == "server:shutdown":
                    self.notices.append((now(), int(payload["reconnect_delay_ms"])))
                    self.end = "shutdown"  # leave at once, as an SDK does
                    break
                elif event.name == "error":
                    self.errors[f"error event: {payload.get('code')}"] += 1
        except Disconnected:
            self.end = self.end or "lost"
        scope.cancel()

    def note(self, message: Json, via: str) -> None:
        if message.get("conversation_id") != self.conversation_id:
            self.errors["message of another conversation"] += 1
            return
        self.seen.setdefault(message["id"], via)
        self.last_seen = max(self.last_seen, message["id"])  # ids sort in creation order

    async def rejoin(self, sock: Socket, port: int) -> None:
        try:
            (ack,) = await sock.emit_with_ack(
                "conversation:join", {"conversation_id": self.conversation_id}, timeout=10
            )
            if not ack.get("success"):
                self.errors[f"join: {ack.get('error')}"] += 1
        except (AckTimeout, Disconnected):
            self.errors["join: no ack"] += 1
        for _ in range(3):
            if await self.catch_up(port):
                return
            await trio.sleep(1)
        self.errors["catch-up failed"] += 1

    async def catch_up(self, port: int) -> bool:
        messages = await self.fetch([port], self.last_seen)
        for message in messages or []:
            self.note(message, "catch-up")
        return messages is not None

    async def fetch(self, ports: Sequence[int], after: str = "") -> list[Json] | None:
        """The conversation's messages after ``after`` through REST, every page, from the
        first of ``ports`` that answers 200; None if none does."""
        messages: list[Json] = []
        while True:
            target = f"/v1/conversations/{self.conversation_id}/messages?limit=200"
            target += f"&after={after}" if after else ""
            for port in ports:
                response = await http(port, "GET", target, self.headers)
                if response is not None and response.status == 200:
                    break
            else:
                self.errors[f"REST read: {response.status if response else 'no answer'}"] += 1
                return None
            page = response.json()
            messages += page["messages"]
            if not page["has_more"] or not page["messages"]:
                return messages
            after = messages[-1]["id"]

    async def send(self, sock: Socket) -> None:
        while True:
            while self.outbox and sock.connected:
                local_id = self.outbox[0]
                payload = {"conversation_id": self.conversation_id, "local_id": local_id,
                           "body": f"drill message {local_id}"}  # fmt: skip
                try:
                    (ack,) = await sock.emit_with_ack("message:send", payload, timeout=10)
                except AckTimeout:
                    self.errors["message:send: no ack in 10 s"] += 1
                    continue  # resent with the same local_id
                except Disconnected:
                    break
                if ack.get("success"):
                    self.acked[local_id] = ack["message"]["id"]
                    self.outbox.remove(local_id)
                else:
                    self.errors[f"message:send: {ack.get('error')}"] += 1
                    await trio.sleep(ack.get("retry_after_ms", 1000) / 1000)
            self.wake = trio.Event()
            await self.wake.wait()


class Admin:
    """``/admin`` on one node (followed through its restarts), every event kept."""

    def __init__(self, drill: Drill, index: int) -> None:
        self.drill, self.index = drill, index
        self.sock: Socket | None = None
        self.events: list[tuple[float, str, Any]] = []  # (when, name, payload)
        self.watch: set[str] = set()  # conversations joined on every connect

    async def run(self) -> None:
        auth = {"app_id": self.drill.app["app_id"], "admin_token": self.drill.app["admin_token"]}
        while True:
            with contextlib.suppress(ClientError, trio.TooSlowError, OSError):
                async with open_client(self.drill.nodes[self.index].url) as client:
                    sock = await client.connect("/admin", auth, timeout=10)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self.receive, sock, nursery.cancel_scope)
                        for conversation_id in list(self.watch):
                            with contextlib.suppress(AckTimeout, Disconnected):
                                await sock.emit_with_ack(
                                    "conversation:join", {"conversation_id": conversation_id}
                                )
                        self.sock = sock
            self.sock = None
            await trio.sleep(0.5)

    async def receive(self, sock: Socket, scope: trio.CancelScope) -> None:
        with contextlib.suppress(Disconnected):
            while True:
                event = await sock.receive()
                self.events.append((now(), event.name, event.args[0] if event.args else None))
                if event.name == "server:shutdown":
                    break  # leave; come back when the node does
        scope.cancel()

    async def call(self, event: str, payload: Json) -> Any:
        if self.sock is None:
            return None
        try:
            (ack,) = await self.sock.emit_with_ack(event, payload, timeout=15)
        except (AckTimeout, Disconnected):
            return None
        return ack

    async def sessions(self) -> list[Json]:
        ack = await self.call("sessions:list", {"app_id": self.drill.app["app_id"]})
        return ack["sessions"] if isinstance(ack, dict) and ack.get("success") else []

    def heard(self, name: str, since: int) -> list[tuple[float, Json]]:
        return [(t, p) for t, n, p in self.events[since:] if n == name]


# --- the drill -------------------------------------------------------------------------------


@dataclass
class Part:
    name: str
    figures: Json = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    cpu: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    peak: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)


class Drill:
    def __init__(self, opts: argparse.Namespace, directory: Path) -> None:
        self.opts, self.directory = opts, directory
        self.db_url: str = opts.database_url or f"sqlite:///{directory / 'drill.db'}"
        self.t0 = 0.0
        self.rng = random.Random(opts.seed)
        self.redis = Redis(directory)
        self.nodes = [Node(self, 0), Node(self, 1)]
        self.admins = [Admin(self, 0), Admin(self, 1)]
        self.app: Json = {}
        self.clients: list[Client] = []
        self.probes: list[Client] = []
        self.sending = True
        self.gate = trio.Semaphore(100)
        self.parts: list[Part] = []
        self.part = Part("")

    def say(self, text: str) -> None:
        print(f"[{now() - self.t0:7.2f}] {text}", flush=True)

    def fig(self, text: str, **figures: Any) -> None:
        self.part.figures.update(figures)
        self.say(f"  {text}")

    def check(self, what: str, ok: bool) -> None:
        self.part.checks.append((what, ok))
        self.say(f"  {'PASS' if ok else 'FAIL'}  {what}")

    def begin(self, name: str) -> None:
        if self.parts:
            self.end_part()
        self.part = Part(name)
        self.parts.append(self.part)
        self.say(f"== {name}")

    def end_part(self) -> None:
        cpu = ", ".join(f"{k} {v:.1f} ({self.part.peak[k]:.0f}%)" for k, v in self.part.cpu.items())
        self.say(f"  CPU seconds (busiest second, % of a core): {cpu}")

    async def sample_cpu(self) -> None:
        """Every second, the CPU used by the drill, each node and Redis, into the part."""
        last: dict[int, float] = {}
        then = now()
        while True:
            await trio.sleep(1)
            elapsed, then = now() - then, now()
            named = [("drill", os.getpid())] + [
                (name, p.pid)
                for name, p in [(n.name, n.process) for n in self.nodes]
                + [("redis", self.redis.process)]
                if p is not None and p.returncode is None
            ]
            for name, pid in named:
                used = cpu_seconds(pid)
                delta, last[pid] = max(0.0, used - last.get(pid, used)), used
                self.part.cpu[name] += delta
                self.part.peak[name] = max(self.part.peak[name], round(delta * 100 / elapsed))

    def everyone(self) -> list[Client]:
        return self.clients + self.probes

    async def new_client(self, device_id: str, home: int, interval: float | None) -> Client:
        client = Client(self, device_id, home, interval)
        for _ in range(3):
            response = await http(
                self.nodes[home].port, "POST", "/v1/conversations", client.headers, b"{}"
            )
            if response is not None and response.status == 201:
                client.conversation_id = response.json()["id"]
                return client
            await trio.sleep(0.5)
        raise DrillError(f"no conversation for {device_id}: {response}")

    async def synced(self, clients: Sequence[Client], timeout: float) -> bool:
        return await until(lambda: all(c.synced for c in clients), timeout, 0.1)

    async def agent_replies(self, admin: Admin, clients: Sequence[Client]) -> None:
        """An agent answers in every 4th conversation of ``clients`` (whose devices are away
        just now: only a catch-up can bring those to them)."""
        limit, chosen = trio.Semaphore(16), clients[::4]
        acked = 0

        async def reply(client: Client) -> None:
            nonlocal acked
            local_id = f"agent:{client.device_id}:{len(client.acked)}"
            payload = {"conversation_id": client.conversation_id, "local_id": local_id,
                       "body": "an agent's answer while the device is away"}  # fmt: skip
            async with limit:
                ack = await admin.call("message:send", payload)
            if isinstance(ack, dict) and ack.get("success"):
                client.acked[local_id] = ack["message"]["id"]
                acked += 1

        async with trio.open_nursery() as nursery:
            for client in chosen:
                nursery.start_soon(reply, client)
        self.say(f"  an agent on {self.nodes[admin.index].name} answered {acked}/{len(chosen)}")

    async def rebalance(self, target: int) -> None:
        movers = [c for c in self.clients if c.home == target and c.node != target]
        began = now()
        for number, client in enumerate(movers):
            client.move(target)
            if number % 50 == 49:
                await trio.sleep(0.2)
        if not await until(lambda: all(c.node == target and c.synced for c in movers), 90, 0.1):
            raise DrillError(f"clients did not move back to {self.nodes[target].name} in 90 s")
        self.say(f"  {len(movers)} clients moved back to {self.nodes[target].name} in "
                 f"{now() - began:.1f} s")  # fmt: skip

    async def check_messages(self, label: str) -> None:
        """Stop sending and let outboxes drain; then through REST: every acked message
        stored exactly once, and every client has every message of its conversation."""
        self.sending = False
        drained = await until(lambda: all(c.synced and not c.outbox for c in self.everyone()), 60)
        await trio.sleep(2)  # the last deliveries
        found: Counter[str] = Counter()
        examples: list[str] = []
        limit = trio.Semaphore(32)

        async def one(client: Client) -> None:
            async with limit:
                stored = await client.fetch([node.port for node in self.nodes])
            if stored is None:
                found["unreadable"] += 1
                return
            by_local = {m["local_id"]: m["id"] for m in stored}
            duplicates = 2 * len(stored) - len({m["id"] for m in stored}) - len(by_local)
            lost = [lid for lid, mid in client.acked.items() if by_local.get(lid) != mid]
            lacks = [m["id"] for m in stored if m["id"] not in client.seen]
            found.update(
                stored=len(stored), acked=len(client.acked), duplicates=duplicates,
                lost=len(lost), lacks=len(lacks),
                unacked=sum(1 for lid in by_local if lid not in client.acked),
                caught_up=sum(1 for v in client.seen.values() if v == "catch-up"),
            )  # fmt: skip
            if (lost or lacks or duplicates) and len(examples) < 5:
                examples.append(f"{client.device_id}: lost {lost[:3]}, lacks {lacks[:3]}")

        async with trio.open_nursery() as nursery:
            for client in self.everyone():
                nursery.start_soon(one, client)
        self.sending = True
        self.fig(
            f"messages ({label}): {found['acked']} acked, {found['stored']} stored; acked but "
            f"not stored {found['lost']}, stored twice {found['duplicates']}, missing at their "
            f"client {found['lacks']} ({found['caught_up']} had by catch-up); stored, never "
            f"acked {found['unacked']}",
            **{f"messages {label}": dict(found, examples=examples)},
        )
        for example in examples:
            self.say(f"    e.g. {example}")
        self.check(f"outboxes drained ({label})", drained)
        self.check(
            f"nothing acked lost or stored twice, no client misses a message ({label})",
            found["unreadable"] == found["lost"] == found["duplicates"] == found["lacks"] == 0,
        )

    # --- the parts --------------------------------------------------------------------------

    async def setup(self, nursery: trio.Nursery, clients: trio.Nursery) -> None:
        self.begin("setup")
        await self.redis.start()
        created = await trio.run_process(
            [*CLI, "apps", "create", "--name", "Cluster drill", "--json", "--database-url",
             self.db_url],
            capture_stdout=True, capture_stderr=True, cwd=self.directory, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise DrillError(f"apps create failed: {created.stderr.decode()[-500:]}")
        self.app = json.loads(created.stdout)
        for node in self.nodes:
            took = await node.start()
            self.say(f"  {node.name} ready on port {node.port} in {took:.1f} s")
        self.say(f"  private Redis on port {self.redis.port}; store {self.db_url}")
        for admin in self.admins:
            nursery.start_soon(admin.run)
        if not await until(lambda: all(a.sock is not None for a in self.admins), 15):
            raise DrillError("the admins could not connect")
        made: dict[int, Client] = {}
        limit = trio.Semaphore(50)

        async def make(index: int) -> None:
            async with limit:
                made[index] = await self.new_client(
                    f"drill-{index:05d}", index % 2, self.opts.interval
                )

        async with trio.open_nursery() as making:
            for index in range(self.opts.clients):
                making.start_soon(make, index)
        self.clients = [made[index] for index in range(self.opts.clients)]
        began = now()
        for client in self.clients:
            clients.start_soon(client.run)
        ok = await self.synced(self.clients, 120)
        self.fig(f"{len(self.clients)} clients connected and joined in {now() - began:.1f} s",
                 connect_s=round(now() - began, 2))  # fmt: skip
        self.check("every client connected", ok)
        if not ok:
            raise DrillError("clients did not connect")
        rate = self.opts.clients / self.opts.interval
        self.say(f"  chatting for {self.opts.warmup:g} s at about {rate:.0f} messages/s")
        await trio.sleep(self.opts.warmup)

    async def part_a(self) -> None:
        self.begin("a: SIGTERM node 1")
        node, grace = self.nodes[0], self.opts.grace
        await self.synced(self.clients, 30)
        on_1 = [c for c in self.clients if c.node == 0]
        assert node.process is not None
        started = now()
        node.process.send_signal(signal.SIGTERM)
        code, took = await node.wait_exit(grace + 15)
        self.fig(f"node 1 exit code {code} after {took:.2f} s", exit_code=code, exit_s=took)
        self.check(f"node 1 exits 0 within grace + 2 s ({grace + 2:g} s)",
                   code == 0 and took <= grace + 2)  # fmt: skip
        notices = {c: n for c in on_1 for n in c.notices if n[0] >= started}
        delays = sorted(n[1] for n in notices.values())
        self.fig(
            f"server:shutdown received by {len(notices)}/{len(on_1)} node-1 clients; "
            f"reconnect_delay_ms {delays[0] if delays else '-'}..{delays[-1] if delays else '-'}",
            notified=len(notices), clients=len(on_1), delays_ms=delays[:1] + delays[-1:],
        )  # fmt: skip
        self.check("every node-1 client got server:shutdown", len(notices) == len(on_1))
        await self.agent_replies(self.admins[1], on_1)
        window = (delays[-1] if delays else 15000) / 1000 + 5

        def back(c: Client) -> float | None:
            return next((t for t, n in c.connects if t >= started and n == 1), None)

        await until(lambda: all(back(c) is not None for c in on_1), started + window - now())
        times = {c: t for c in on_1 if (t := back(c)) is not None}
        last = max(times.values(), default=started) - started
        lags = sorted(
            t - notices[c][0] - notices[c][1] / 1000 for c, t in times.items() if c in notices
        )
        lag_p50, lag_max = (lags[len(lags) // 2], lags[-1]) if lags else (0.0, 0.0)
        self.fig(
            f"{len(times)}/{len(on_1)} back on node 2, the last {last:.2f} s after SIGTERM "
            f"(window {window:.1f} s); from the end of its delay to connected: p50 "
            f"{lag_p50:.2f} s, max {lag_max:.2f} s; early: {sum(1 for g in lags if g < 0)}",
            reconnected=len(times), last_reconnect_s=last, lag_p50_s=lag_p50, lag_max_s=lag_max,
        )  # fmt: skip
        self.check("every node-1 client reconnected to node 2 within the window",
                   len(times) == len(on_1) and last <= window)  # fmt: skip
        await self.check_messages("after SIGTERM")
        self.say(f"  node 1 restarted (same port), ready in {await node.start():.1f} s")
        await until(lambda: self.admins[0].sock is not None, 15)
        await self.rebalance(0)

    async def part_b(self) -> None:
        self.begin("b: SIGKILL node 2")
        node, admin = self.nodes[1], self.admins[0]
        await self.synced(self.clients, 30)
        on_2 = [c for c in self.clients if c.node == 1]
        expected = {c.connection_id for c in on_2}
        listed = {
            s["connection_id"] for s in await admin.sessions() if s["node_id"] == node.node_id
        }
        self.check("sessions:list agrees with the clients on node 2", listed == expected)
        held = on_2[: max(1, len(on_2) // 100)]
        for client in held:
            client.hold = trio.Event()
        mark, dead_id = len(admin.events), node.node_id
        assert node.process is not None
        killed = now()
        node.process.send_signal(signal.SIGKILL)
        await node.wait_exit(5)
        self.say(f"  SIGKILL to node 2 ({len(on_2)} clients, {len(held)} held offline)")
        await self.agent_replies(admin, on_2)

        def lost() -> dict[str, float]:
            heard = admin.heard("session:disconnect", mark)
            return {p["connection_id"]: t for t, p in heard if p["reason"] == "node_lost"}

        await until(lambda: expected <= lost().keys(), killed + NODE_LOST_LIMIT - now(), 0.2)
        found = lost()
        times = sorted(found[c] - killed for c in expected if c in found) or [float("nan")]
        self.fig(
            f"node_lost session:disconnect on node 1's admin: {len(found)}/{len(expected)}, "
            f"first {times[0]:.1f} s, last {times[-1]:.1f} s after SIGKILL",
            node_lost=len(found), expected=len(expected), first_s=times[0], last_s=times[-1],
        )  # fmt: skip
        self.check(f"every node-2 session reported node_lost within {NODE_LOST_LIMIT:g} s",
                   expected <= found.keys() and times[-1] <= NODE_LOST_LIMIT)  # fmt: skip
        self.check("no other session reported node_lost", found.keys() <= expected)
        moved = [c for c in on_2 if c not in held]
        back = [t for c in moved for t, n in c.connects[-1:] if t >= killed and n == 0]
        self.fig(f"{len(back)}/{len(moved)} clients back on node 1, the last "
                 f"{max(back, default=killed) - killed:.2f} s after SIGKILL",
                 moved_back=len(back), last_back_s=max(back, default=killed) - killed)  # fmt: skip

        def presence(c: Client) -> list[bool]:
            changes = admin.heard("presence:change", mark)
            return [p["is_online"] for _, p in changes if p["device_id"] == c.device_id]

        await until(lambda: all(presence(c)[-1:] == [False] for c in held), 10)
        offline = sum(1 for c in held if presence(c)[-1:] == [False])
        self.fig(f"presence:change offline for {offline}/{len(held)} devices left with none",
                 held_offline=offline)  # fmt: skip
        self.check("devices left with no connection went offline", offline == len(held))
        sessions = await admin.sessions()
        on_1 = {s["device_id"] for s in sessions if s["node_id"] == self.nodes[0].node_id}
        stale = sum(1 for s in sessions if s["node_id"] == dead_id)
        online = sum(1 for c in moved if c.device_id in on_1 and False not in presence(c)[-1:])
        self.fig(f"{online}/{len(moved)} reconnected devices end online on node 1 (sessions:"
                 f"list, last presence); sessions of node 2 left: {stale}",
                 moved_online=online, stale_sessions=stale)  # fmt: skip
        self.check("reconnected devices end online, nothing of node 2 left",
                   len(moved) == len(back) == online and stale == 0)  # fmt: skip
        for client in held:
            assert client.hold is not None
            client.hold.set()
            client.hold = None
        await self.synced(held, 30)
        self.say(f"  node 2 restarted (same port), ready in {await node.start():.1f} s")
        await until(lambda: self.admins[1].sock is not None, 15)
        await self.rebalance(1)
        await self.check_messages("after SIGKILL")

    async def cross(self, frm: int, since: float, timeout: float) -> float:
        """Probe messages from node ``frm`` until the other node's admin hears one: seconds
        from ``since`` to then (inf if it never does)."""
        probe, admin = self.probes[frm], self.admins[1 - frm]
        mark, sent = len(admin.events), set[str]()

        def heard() -> list[float]:
            return [t for t, p in admin.heard("message:new", mark) if p["local_id"] in sent]

        async def sender() -> None:
            began = now()
            while True:
                sent.add(probe.queue())  # its session sends it, or resends after a reconnect
                await trio.sleep(0.25 if now() - began < 5 else 1.0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await until(lambda: bool(heard()), timeout, 0.01)
            nursery.cancel_scope.cancel()
        return min(heard(), default=float("inf")) - since

    async def part_c(self, clients: trio.Nursery) -> None:
        self.begin("c: Redis restart")
        for index in (0, 1):
            self.probes.append(await self.new_client(f"probe-node{index + 1}", index, None))
            self.admins[1 - index].watch.add(self.probes[-1].conversation_id)
            clients.start_soon(self.probes[-1].run)
        await self.synced(self.probes, 20)
        for probe, admin in zip(self.probes, reversed(self.admins), strict=True):
            await admin.call("conversation:join", {"conversation_id": probe.conversation_id})
        down = now()
        await self.redis.stop()
        noticed = await until(lambda: _none_ready(self.nodes), 10, 0.2)
        self.say(f"  Redis stopped; both /readyz 503: {noticed} ({now() - down:.1f} s)")
        await trio.sleep(max(0.0, down + self.opts.redis_down - now()))
        await self.redis.start()
        back = now()
        back_wall = time.time()
        self.say(f"  Redis answers again (empty) after {back - down:.1f} s down")
        unready: list[str] = []
        clients.start_soon(self.watch_ready, back + 2, unready)
        first = await self.cross(0, back, 30)
        self.fig(f"first broadcast node 1 -> node 2 after Redis is back: {first:.3f} s",
                 first_cross_s=first)  # fmt: skip
        self.check(f"first cross-node broadcast within {CROSS_LIMIT:g} s", first < CROSS_LIMIT)
        ready = await until(lambda: _all_ready(self.nodes), 30, 0.2)
        self.fig(f"both /readyz 200 {now() - back:.1f} s after Redis is back: {ready}",
                 ready_s=now() - back)  # fmt: skip
        self.check("both nodes ready again", ready)
        await trio.sleep(max(0.0, back + 10 - now()))  # past the 6 s a deaf node needs
        ways = [await self.cross(0, now(), CROSS_LIMIT), await self.cross(1, now(), CROSS_LIMIT)]
        self.fig(f"10 s later: node 1 -> node 2 in {ways[0]:.3f} s, node 2 -> node 1 in "
                 f"{ways[1]:.3f} s", later_s=ways)  # fmt: skip
        self.check("a broadcast from each node reaches the other", max(ways) < CROSS_LIMIT)
        metrics = [await node.backplane_metrics() for node in self.nodes]
        for node, values in zip(self.nodes, metrics, strict=True):
            self.fig(f"{node.name} backplane: {values}", **{f"backplane {node.name}": values})
        deaf = [m.get("resubscribed_total") for m in metrics]
        self.check(f"no deaf node (resubscribed_total {deaf})", deaf == [0.0, 0.0])
        live = {c.connection_id for c in self.everyone() if c.node is not None}
        listed: set[str] = set()

        async def registered() -> bool:
            listed.clear()
            listed.update(s["connection_id"] for s in await self.admins[0].sessions())
            return listed == live

        ok = await until(registered, 30, 1.0)
        self.fig(f"sessions:list after the restart: {len(listed)} (live: {len(live)})",
                 sessions_listed=len(listed), live=len(live))  # fmt: skip
        self.check("every live connection registered again in Redis", ok)
        await self.churn()
        await self.check_messages("after the Redis restart")
        late = [line for n in self.nodes for line in redis_away_lines(n.logs[-1], back_wall)]
        self.fig(f"/readyz answers other than 200 from 2 s after Redis was back: {len(unready)}"
                 + "".join(f"\n      {u}" for u in unready[:6]), unready=unready[:20])  # fmt: skip
        stale = [line for line in late if "closed" in line or "reset" in line]
        self.fig(f"'Redis away' logged more than 1 s after Redis was back: {len(late)}, of "
                 f"which a call failed on a connection the old server closed: {len(stale)}",
                 late_redis_away=late[:10], stale_connection_failures=len(stale))  # fmt: skip
        for line in late[:6]:
            self.say(f"    {line[:200]}")
        self.check("no call fails on a connection from before the restart", not stale)

    async def watch_ready(self, since: float, unready: list[str]) -> None:
        """From ``since``, both nodes' /readyz every 0.25 s: what did not answer 200."""
        await trio.sleep(max(0.0, since - now()))
        while True:
            for node in self.nodes:
                response = await http(node.port, "GET", "/readyz")
                if response is None or response.status != 200:
                    what = f"{response.status} {response.body[:90]!r}" if response else "none"
                    unready.append(f"+{now() - since + 2:.2f} s {node.name}: {what}")
            await trio.sleep(0.25)

    async def churn(self) -> None:
        """A burst after the restart: every node-2 client moves to node 1 at once, then back.
        Both admins must hear each session:connect and :disconnect; sessions:list = live."""
        movers = [c for c in self.clients if c.node == 1]
        marks, before = [len(a.events) for a in self.admins], {c: len(c.ids) for c in movers}
        for client in movers:
            client.move(0)
        await until(lambda: all(c.node == 0 and c.synced for c in movers), 60, 0.1)
        await self.rebalance(1)
        await trio.sleep(2)
        ended = {i for c in movers for i in c.ids[before[c] - 1 : -1]}
        began = {i for c in movers for i in c.ids[before[c] :]}
        missed = [
            len(ended - {p["connection_id"] for _, p in a.heard("session:disconnect", m)})
            + len(began - {p["connection_id"] for _, p in a.heard("session:connect", m)})
            for a, m in zip(self.admins, marks, strict=True)
        ]
        live = {c.connection_id for c in self.everyone() if c.node is not None}
        listed = {s["connection_id"] for s in await self.admins[0].sessions()}
        differ = len(listed ^ live)
        self.fig(f"churn: {len(movers)} clients to node 1 and back ({len(ended)} sessions "
                 f"ended, {len(began)} began); session events missed by the admins of node 1, "
                 f"node 2: {missed}; sessions:list {len(listed)}, live {len(live)}, differing "
                 f"{differ}", churn_missed=missed, churn_differ=differ)  # fmt: skip
        self.check("after a burst, every session event heard and sessions:list right",
                   missed == [0, 0] and listed == live)  # fmt: skip

    async def finish(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.returncode is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            code, took = await node.wait_exit(self.opts.grace + 10)
            self.fig(f"{node.name} exit code {code} after {took:.1f} s",
                     **{f"exit {node.name}": code})  # fmt: skip
            self.check(f"{node.name} exits 0", code == 0)
        await self.redis.stop()
        problems = [line for node in self.nodes for log in node.logs for line in scan_log(log)]
        self.fig(f"error/critical/Traceback lines in the node logs: {len(problems)}",
                 log_problems=problems[:20])  # fmt: skip
        for line in problems[:5]:
            self.say(f"    {line[:300]}")


async def _none_ready(nodes: Sequence[Node]) -> bool:
    return not any([await node.ready() for node in nodes])


async def _all_ready(nodes: Sequence[Node]) -> bool:
    return all([await node.ready() for node in nodes])


def scan_log(path: Path) -> list[str]:
    """The log's error and critical lines, and any with a traceback."""
    return [
        f"{path.name}: {line}"
        for line in path.read_text(errors="replace").splitlines()
        if '"level":"error"' in line or '"level":"critical"' in line or "Traceback" in line
    ]


def redis_away_lines(path: Path, after: float) -> list[str]:
    """What said Redis was away (presence, backplane, limits) more than 1 s after ``after``
    (the wall-clock time it answered again)."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if "is unavailable" in line or "while Redis is away" in line or "is unreachable" in line:
            entry = json.loads(line)
            late = datetime.fromisoformat(entry["time"]).timestamp() - after
            if late > 1:
                found.append(f"{path.name} +{late:.1f} s {entry['logger']}: {entry['message']}")
    return found


async def run(drill: Drill) -> str | None:
    """The drill; why it stopped early, or None."""
    drill.t0 = now()
    try:
        with trio.fail_after(drill.opts.timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drill.sample_cpu)
                async with trio.open_nursery() as clients:
                    await drill.setup(nursery, clients)
                    await drill.part_a()
                    await drill.part_b()
                    await drill.part_c(clients)
                    drill.begin("shutdown")
                    clients.cancel_scope.cancel()  # every client closes its connection
                await drill.finish()
                drill.end_part()
                nursery.cancel_scope.cancel()
    except (DrillError, trio.TooSlowError) as exc:
        drill.say(f"drill stopped: {type(exc).__name__}: {exc}")
        return f"{type(exc).__name__}: {exc}"
    finally:
        with trio.CancelScope(shield=True):
            for node in drill.nodes:
                if node.process is not None and node.process.returncode is None:
                    node.process.kill()
                    await node.process.wait()
            await drill.redis.stop()
    return None


def report(drill: Drill, error: str | None) -> bool:
    """Print the summary, write the JSON, keep the logs; whether everything passed."""
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    LOG_DIR.mkdir(parents=True)
    for log in drill.directory.glob("*.log"):
        shutil.copy(log, LOG_DIR / log.name)
    shutil.rmtree(drill.directory, ignore_errors=True)
    passed = error is None and all(p.passed for p in drill.parts)
    errors: Counter[str] = Counter()
    for client in drill.everyone():
        errors.update(client.errors)
    print("\nsummary")
    for part in drill.parts:
        failed = [what for what, ok in part.checks if not ok]
        print(f"  {'PASS' if part.passed else 'FAIL'}  {part.name:20s} "
              f"{len(part.checks) - len(failed)}/{len(part.checks)} checks"
              + "".join(f"\n        failed: {what}" for what in failed))  # fmt: skip
    if errors:
        print("  client-side errors: " + ", ".join(f"{k} x{v}" for k, v in errors.most_common(8)))
    print(f"{'PASS' if passed else 'FAIL'}  (report {drill.opts.json}, node logs {LOG_DIR})")
    parts = [{"name": p.name, "passed": p.passed, "figures": p.figures,
              "checks": [{"check": what, "ok": ok} for what, ok in p.checks],
              "cpu_s": {k: round(v, 2) for k, v in p.cpu.items()}, "cpu_peak_pct": p.peak}
             for p in drill.parts]  # fmt: skip
    result = {"passed": passed, "error": error, "options": vars(drill.opts),
              "client_errors": dict(errors), "parts": parts}  # fmt: skip
    path = Path(drill.opts.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster-drill", description=(__doc__ or "").split("\n\n")[0]
    )
    add = parser.add_argument
    add("--clients", type=int, default=1000, help="devices (1000)")
    add("--interval", type=float, default=10.0, help="seconds between a device's messages (10)")
    add("--grace", type=float, default=10.0, help="the nodes' --grace-period (10)")
    add("--warmup", type=float, default=10.0, help="seconds of chat before (a) (10)")
    add("--redis-down", type=float, default=3.0, help="seconds Redis stays down in (c) (3)")
    add("--database-url", help="a PostgreSQL URL (default: SQLite in a temporary directory)")
    add("--json", default=str(DEFAULT_JSON), help=f"where the report goes ({DEFAULT_JSON})")
    add("--seed", type=int, help="the seed of the clients' jitter")
    add("--timeout", type=float, default=900.0, help="the whole drill's bound, s (900)")
    opts = parser.parse_args()
    if opts.clients < 2 or opts.interval <= 0:
        parser.error("--clients must be at least 2 and --interval positive")
    drill = Drill(opts, Path(tempfile.mkdtemp(prefix="cluster-drill-")))
    return 0 if report(drill, trio.run(run, drill)) else 1


if __name__ == "__main__":
    sys.exit(main())
