"""Cross-node room fan-out: two replyhq_trio nodes on our Redis backplane beside two
Node.js socket.io 4.8 nodes on the official ``@socket.io/redis-adapter`` 8.3, in one run.

The scenario is scripts/bench's fan-out (``scripts/_lib/bench/runner.py``), across two
nodes sharing a private Redis: CLIENTS connections spread evenly over the two nodes, ROOMS
rooms with members on both, ``say`` ``{room, text, t}`` from senders on both nodes at a
ladder of total rates, and each node broadcasting ``msg`` to the room except the sender
(``hub.emit(..., to=room, skip=[socket])`` on ours, ``socket.to(room).emit`` on Node), so
every ``say`` reaches the sender's node's members directly and the other node's through
Redis. For each cluster: the highest step with p95 < 100 ms, >= 99.9 % delivered, >= 97 %
of the offered rate sent and no disconnects; deliveries/s there; p50/p95/p99 (and p95 of
local and of cross-node deliveries); CPU per delivery of both nodes summed, of Redis
(``/proc``); Redis commands and bytes per ``say`` (``INFO commandstats`` / ``INFO stats``
deltas over each step); ratios ours / Node.

Placement on a 2-core machine: both nodes on core 0; the generator, Redis, the
cross-node check and this process on core 1. Every measurement starts fresh nodes (the
first cluster alternates from rep to rep) on one private ``redis-server`` (a free port,
no persistence) for the whole run; before each, the official socket.io-client checks that
a ``say`` on each node reaches the other.

The load generator is scripts/bench's (``scripts/_lib/bench/loadgen.mjs``, its ``fanout``
scenario with ``--urls``).

Everything it installs and writes is git-ignored: ``.bench/node`` (scripts/bench's ``ws``,
for the generator), ``.bench/cluster-node`` (``npm ci`` of ``package.json`` +
``package-lock.json`` beside this file: socket.io, @socket.io/redis-adapter, redis,
socket.io-client), ``.bench/cluster/<timestamp>/`` (logs of the nodes, Redis and the
generator; profiles) and the JSON results (``--json``). Every process it starts is stopped
by its PID (SIGTERM, then SIGKILL) when the run ends, fails or is interrupted; each also
gets SIGTERM from the kernel if this process dies.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

Json = dict[str, Any]

LIB = Path(__file__).resolve().parent
ROOT = LIB.parents[2]
BENCH = ROOT / ".bench"
RUNS = BENCH / "cluster"
CLUSTER_NODE_DIR = BENCH / "cluster-node"
CROSSCHECK = LIB / "crosscheck.mjs"
NODE_SERVER = LIB / "server_socketio.mjs"
OUR_APP = LIB / "app_replyhq_cluster.py"
DEFAULT_JSON = ROOT / ".artifacts" / "bench-cluster.json"

# scripts/bench's runner, for what this shares with it: the load generator and its `ws`
# (.bench/node), the ladders, server logs, medians and ratios, py-spy summaries; and
# scripts/bench-chat's way of starting children. Loaded by path (they are scripts, not
# packages); what is used is bound below with its type.
sys.path.insert(0, str(LIB.parent / "bench"))
sys.path.insert(0, str(LIB.parent / "bench_chat"))
single: ModuleType = importlib.import_module("runner")
chat: ModuleType = importlib.import_module("chat_bench")

LOADGEN: Path = single.LOADGEN
FULL_RATES: str = single.FULL_RATES
QUICK_RATES: str = single.QUICK_RATES
SINGLE_NODE_DIR: Path = single.NODE_DIR
ensure_single_node_modules: Callable[[], None] = single.ensure_node_modules
raise_nofile_limit: Callable[[], None] = single.raise_nofile_limit
free_port: Callable[[], int] = single.free_port
server_log_issues: Callable[[Path], list[str]] = single.server_log_issues
fmt_stat: Callable[..., str] = single.fmt_stat
summarize_profile: Callable[..., dict[str, Any]] = single.summarize_profile
format_profile: Callable[[str, dict[str, Any]], str] = single.format_profile
log: Callable[[str], None] = single.log
_version: Callable[[str], str] = single._version
_step_at: Callable[[Json, float], Json | None] = single._step_at
_pct: Callable[[float | None], float | None] = single._pct
#: Medians (min-max): ``Stat.of(values)``, ``Stat(median, low, high, n)``.
Stat: Any = single.Stat
#: A child in its own process group that the kernel stops (SIGTERM) if this process dies
#: (``die_with_parent=False`` for children of a reader thread): scripts/bench-chat's.
spawn: Callable[..., subprocess.Popen[Any]] = chat.spawn

SERVER_CORE = "0"
GENERATOR_CORE = "1"

OURS = "ours"
NODE = "node"
SERVERS = (OURS, NODE)
LABELS = {
    OURS: "replyhq_trio + RedisBackplane",
    NODE: "socket.io 4.8 + redis-adapter 8.3",
}
NODES = 2
P95_TARGET_MS = 100.0
#: --wait-load: how long to wait at most for the load average to drop.
WAIT_LOAD_MAX_S = 25 * 60
#: py-spy samples per second (--profile).
PROFILE_HZ = 250


class BenchError(Exception):
    pass


# --- settings ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    reps: int
    clients: int
    rooms: int
    rates: str
    warmup: float
    duration: float
    drain: float
    profile: bool
    profile_rate: int | None
    profile_seconds: int
    wait_load: float | None
    json_path: Path


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="scripts/bench-cluster",
        description="Cross-node room fan-out: two replyhq_trio nodes on the Redis backplane "
        "beside two Node.js socket.io nodes on @socket.io/redis-adapter, on this machine, "
        "in one run.",
    )
    parser.add_argument("--reps", type=int, help="repetitions per cluster (3; 1 with --quick)")
    parser.add_argument("--clients", type=int, default=1000, help="connections (1000)")
    parser.add_argument("--rooms", type=int, default=10, help="rooms (10)")
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="write the raw results here (.artifacts/bench-cluster.json)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 rep, shorter steps: a smoke run (~2 min)"
    )
    parser.add_argument("--rates", help="the ladder, total say/s, comma-separated")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then profile our two nodes with py-spy at one rate (see --profile-rate)",
    )
    parser.add_argument(
        "--profile-rate",
        type=int,
        metavar="SAY_PER_S",
        help="the rate to profile at (default: the highest rate every run passed)",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        metavar="LOAD",
        help="first wait (at most 25 min) until the 1-minute load average is below LOAD",
    )
    args = parser.parse_args(argv)
    if args.clients < 2 * args.rooms or args.rooms < 1:
        parser.error("need at least one room and 2 clients per room")
    if args.clients % (args.rooms * NODES):
        log(
            f"note: {args.clients} clients do not split evenly over {args.rooms} rooms on "
            f"{NODES} nodes"
        )
    quick = bool(args.quick)
    return Settings(
        reps=args.reps or (1 if quick else 3),
        clients=args.clients,
        rooms=args.rooms,
        rates=args.rates or (QUICK_RATES if quick else FULL_RATES),
        warmup=0.5 if quick else 1.0,
        duration=2.0 if quick else 5.0,
        drain=3.0 if quick else 5.0,
        profile=bool(args.profile),
        profile_rate=args.profile_rate,
        profile_seconds=8 if quick else 15,
        wait_load=args.wait_load,
        json_path=args.json,
    )


# --- what the run needs --------------------------------------------------------------------


def check_tools() -> None:
    tools = ("taskset", "node", "npm", "redis-server")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"scripts/bench-cluster: missing {', '.join(missing)}")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("scripts/bench-cluster: needs 2 cores (nodes on 0, the rest on 1)")


def ensure_cluster_node_modules() -> None:
    """`npm ci` of this directory's lockfile into .bench/cluster-node when it changed."""
    package = (LIB / "package.json").read_bytes()
    lock = (LIB / "package-lock.json").read_bytes()
    digest = hashlib.sha256(package + b"\0" + lock).hexdigest()
    stamp = CLUSTER_NODE_DIR / ".bench-installed"
    wanted = ("socket.io", "@socket.io/redis-adapter", "redis", "socket.io-client")
    installed = stamp.exists() and all(
        (CLUSTER_NODE_DIR / "node_modules" / name).is_dir() for name in wanted
    )
    if installed and stamp.read_text() == digest:
        return
    log(
        "== npm ci (socket.io, @socket.io/redis-adapter, redis, socket.io-client) into "
        f"{CLUSTER_NODE_DIR.relative_to(ROOT)}"
    )
    CLUSTER_NODE_DIR.mkdir(parents=True, exist_ok=True)
    (CLUSTER_NODE_DIR / "package.json").write_bytes(package)
    (CLUSTER_NODE_DIR / "package-lock.json").write_bytes(lock)
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=CLUSTER_NODE_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit("scripts/bench-cluster: npm ci failed")
    stamp.write_text(digest)


def wait_for_load(limit: float) -> Json:
    """Poll the 1-minute load average every 30 s (at most 25 min) until it is below
    ``limit``; what was seen."""
    started = time.monotonic()
    load = os.getloadavg()[0]
    while load >= limit and time.monotonic() - started < WAIT_LOAD_MAX_S:
        log(f"   load average {load:.2f} >= {limit:g}: waiting (polled every 30 s, 25 min at most)")
        time.sleep(30)
        load = os.getloadavg()[0]
    waited = round(time.monotonic() - started)
    quiet = load < limit
    log(f"   load average {load:.2f} after {waited} s: " + ("quiet" if quiet else "still busy"))
    return {"limit": limit, "waited_s": waited, "load": load, "quiet": quiet}


# --- processes -------------------------------------------------------------------------------


def stop(process: subprocess.Popen[Any], *, grace: float = 20.0) -> tuple[int | None, bool]:
    """SIGTERM the process by its PID, SIGKILL after ``grace`` s; (exit status, killed)."""
    killed = False
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            killed = True
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)
    return process.returncode, killed


def wait_listening(port: int, process: subprocess.Popen[Any], what: str, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise BenchError(f"{what} exited at start ({process.returncode}): see {log_path}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not listen within 30 s: see {log_path}")
        time.sleep(0.05)


@dataclasses.dataclass
class Redis:
    port: int
    process: subprocess.Popen[Any]
    version: str

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self, *args: str) -> bytes:
        """One command on a short connection; the raw reply (enough for PING and INFO)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), 2) as conn:
            conn.sendall(b"".join(parts))
            reply = b""
            while True:
                chunk = conn.recv(65536)
                reply += chunk
                if not chunk or self._complete(reply):
                    return reply

    @staticmethod
    def _complete(reply: bytes) -> bool:
        if not reply.endswith(b"\r\n"):
            return False
        if reply[:1] != b"$":
            return True
        header, _, rest = reply.partition(b"\r\n")
        return len(rest) >= int(header[1:]) + 2


@contextlib.contextmanager
def private_redis(out: Path) -> Iterator[Redis]:
    """A redis-server of our own on a free loopback port, without persistence, pinned to
    the generator's core; stopped by its PID on the way out."""
    port = free_port()
    version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    with (out / "redis.log").open("wb") as redis_log:
        process = spawn(
            [
                *("taskset", "-c", GENERATOR_CORE, "redis-server"),
                *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--dir", str(out), "--daemonize", "no"),
            ],
            stdout=redis_log,
            stderr=subprocess.STDOUT,
        )
    redis = Redis(port, process, version)
    try:
        wait_listening(port, process, "redis-server", out / "redis.log")
        deadline = time.monotonic() + 10
        while redis.command("PING") != b"+PONG\r\n":
            if time.monotonic() > deadline:
                raise BenchError("redis-server does not answer PING")
            time.sleep(0.1)
        yield redis
    finally:
        stop(process)


@dataclasses.dataclass
class NodeProcess:
    index: int
    port: int
    process: subprocess.Popen[Any]
    log_path: Path
    exit_code: int | None = None
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.exit_code is None and not self.killed:
            self.exit_code, self.killed = stop(self.process)


def node_command(server: str, port: int, redis: Redis, key: str) -> list[str]:
    common = ["--port", str(port), "--redis-url", redis.url, "--key", key]
    if server == OURS:
        return [sys.executable, str(OUR_APP), *common]
    return ["node", str(NODE_SERVER), *common, "--node-dir", str(CLUSTER_NODE_DIR)]


@contextlib.contextmanager
def running_cluster(
    server: str, redis: Redis, key: str, out: Path, stem: str
) -> Iterator[list[NodeProcess]]:
    """Two fresh nodes on free ports, both pinned to core 0, sharing ``redis`` under the
    channel key ``key``; stopped by PID on the way out."""
    nodes: list[NodeProcess] = []
    try:
        for index in range(NODES):
            port = free_port()
            log_path = out / f"{stem}.node{index}.log"
            with log_path.open("wb") as node_log:
                process = spawn(
                    ["taskset", "-c", SERVER_CORE, *node_command(server, port, redis, key)],
                    stdout=node_log,
                    stderr=subprocess.STDOUT,
                )
            nodes.append(NodeProcess(index, port, process, log_path))
        for node in nodes:
            wait_listening(node.port, node.process, f"{server} node {node.index}", node.log_path)
        time.sleep(0.3)  # let the readiness probes' connections go away
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def crosscheck(nodes: Sequence[NodeProcess]) -> Json:
    """The official client's check that a `say` on each node reaches the other."""
    urls = ",".join(f"http://127.0.0.1:{node.port}" for node in nodes)
    done = subprocess.run(
        [
            *("taskset", "-c", GENERATOR_CORE, "node", str(CROSSCHECK)),
            *("--urls", urls, "--node-dir", str(CLUSTER_NODE_DIR)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        raise BenchError(f"the cross-node check failed: {done.stderr.strip()[-500:]}")
    result: Json = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def loadgen_command(
    nodes: Sequence[NodeProcess], redis: Redis, settings: Settings, *, rates: str
) -> list[str]:
    urls = ",".join(
        f"ws://127.0.0.1:{node.port}/socket.io/?EIO=4&transport=websocket" for node in nodes
    )
    options: dict[str, object] = {
        "urls": urls,
        "pids": ",".join(str(node.pid) for node in nodes),
        "redis-pid": redis.pid,
        "redis-port": redis.port,
        "hz": os.sysconf("SC_CLK_TCK"),
        "node-dir": SINGLE_NODE_DIR,
        "conns": settings.clients,
        "rooms": settings.rooms,
        "rates": rates,
        "warmup": settings.warmup,
        "duration": settings.duration,
        "drain": settings.drain,
        # Other workloads share this machine: wait up to 30 s for quiet before each step,
        # and run a step that failed under them again (twice at most).
        "quiet-wait": 30,
        "noisy-retries": 2,
    }
    return [
        *("taskset", "-c", GENERATOR_CORE, "node", str(LOADGEN), "fanout"),
        *[item for key, value in options.items() for item in (f"--{key}", str(value))],
    ]


def run_loadgen(
    cmd: Sequence[str],
    log_path: Path,
    *,
    timeout: float,
    on_window: Callable[[str], None] | None = None,
) -> Json:
    """Run the generator and return its JSON result; its progress goes to the log and,
    indented, to stderr."""
    process = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = process.stderr

    def pump() -> None:
        with log_path.open("w") as gen_log:
            for raw in stderr:
                line = raw.decode(errors="replace")
                gen_log.write(line)
                gen_log.flush()
                if line.startswith("#window") and on_window is not None:
                    on_window(line)
                elif line.startswith("  "):
                    log("    " + line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        out = process.stdout.read()
        process.wait()
    finally:
        timer.cancel()
        stop(process, grace=5)
        reader.join(5)
    if process.returncode != 0:
        tail = log_path.read_text()[-800:] if log_path.exists() else ""
        raise BenchError(f"load generator exited with {process.returncode}: {tail.strip()}")
    result: Json = json.loads(out.decode().strip().splitlines()[-1])
    return result


# --- one measurement ---------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    server: str
    rep: int
    position: int  # 0 if this cluster went first in its rep
    result: Json | None = None
    crosscheck: Json | None = None
    error: str | None = None
    log_issues: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    exit_codes: list[int | None] = dataclasses.field(default_factory=list)
    killed: list[bool] = dataclasses.field(default_factory=list)
    loadavg_before: float = 0.0

    def to_json(self) -> Json:
        return dataclasses.asdict(self)


def measure(
    server: str, rep: int, *, position: int, settings: Settings, redis: Redis, out: Path
) -> Run:
    run = Run(server, rep, position, loadavg_before=os.getloadavg()[0])
    stem = f"{server}-r{rep}"
    # At most 1 + 1 retry + 2 noisy retries per rate, each after up to 30 s of waiting
    # for quiet (the ladder stops at the first rate that fails them all).
    steps = 4 * len(settings.rates.split(","))
    timeout = 180 + steps * (settings.warmup + settings.duration + 50)
    log(f"-- {LABELS[server]} | rep {rep} | load average {run.loadavg_before:.2f}")
    nodes: list[NodeProcess] = []
    try:
        with running_cluster(server, redis, f"bench-{server}-r{rep}", out, stem) as nodes:
            run.crosscheck = crosscheck(nodes)
            cmd = loadgen_command(nodes, redis, settings, rates=settings.rates)
            run.result = run_loadgen(cmd, out / f"{stem}.gen.log", timeout=timeout)
    except (BenchError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        run.error = str(exc)
        log(f"   error: {exc}")
    run.exit_codes = [node.exit_code for node in nodes]
    run.killed = [node.killed for node in nodes]
    for node in nodes:
        issues = server_log_issues(node.log_path)
        if issues:
            run.log_issues[f"node{node.index}"] = issues
            log(f"   node {node.index} log: {len(issues)} lines, first: {issues[0][:160]}")
    if run.result is not None:
        log("   " + one_line(run.result))
    return run


def one_line(result: Json) -> str:
    best = result["best"]
    if best is None:
        return f"no passing step (limit: {result['limit']})"
    redis = best.get("redis") or {}
    return (
        f"best {best['rate']} say/s = {best['deliveries_per_s']:,.0f} deliveries/s, "
        f"p95 {best['p95_ms']} ms (cross-node {best['remote']['p95_ms']}), "
        f"{best['us_per_delivery']} µs/delivery (nodes {best['server_cpu']:.0%} of a core), "
        f"Redis {best['redis_cpu']:.0%} {redis.get('commands_per_say')} cmd/say, "
        f"gen {best['gen_cpu']:.0%}; limit: {result['limit']}"
    )


# --- profiling ---------------------------------------------------------------------------------


def find_py_spy() -> Path | None:
    """py-spy from PATH, the project's venv or scripts/bench's .bench/venv."""
    candidates = [
        shutil.which("py-spy"),
        str(Path(sys.executable).parent / "py-spy"),
        str(BENCH / "venv" / "bin" / "py-spy"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


#: What a leaf frame of our node does (first match wins), before scripts/bench's buckets.
_CLUSTER_BUCKETS = (
    ("replyhq_trio/backends/redis_backplane.py", "backplane (publish, receive, decode)"),
    ("replyhq_trio/backends/_resp.py", "backplane RESP connection (read, parse, write)"),
    ("replyhq_trio/backends/", "backplane, other (wire format, publisher)"),
    ("msgpack/", "backplane msgpack"),
)


def profile_ours(settings: Settings, redis: Redis, out: Path, rate: int) -> Json:
    """py-spy on both of our nodes at one rate; a summary per node."""
    py_spy = find_py_spy()
    if py_spy is None:
        return {"error": "py-spy not found (PATH, .venv, .bench/venv): install it to profile"}
    profiles = out / "profiles"
    profiles.mkdir(exist_ok=True)
    seconds = settings.profile_seconds
    # Buckets for the backplane's own files, ahead of scripts/bench's.
    buckets = vars(single)
    if buckets["_BUCKETS"][: len(_CLUSTER_BUCKETS)] != _CLUSTER_BUCKETS:
        buckets["_BUCKETS"] = _CLUSTER_BUCKETS + tuple(buckets["_BUCKETS"])
    profiled = dataclasses.replace(settings, warmup=1.0, duration=seconds + 3.0, drain=5.0)
    spies: list[subprocess.Popen[Any]] = []
    raws = [profiles / f"ours-{rate}-node{i}.raw.txt" for i in range(NODES)]
    log(f"-- profile | {LABELS[OURS]} | {rate} say/s | py-spy {seconds} s at {PROFILE_HZ} Hz")
    with running_cluster(OURS, redis, "bench-profile", profiles, f"ours-{rate}") as nodes:
        crosscheck(nodes)

        def attach(_line: str) -> None:
            # On the generator's core: the profiler must not take the nodes'.
            for node, raw in zip(nodes, raws, strict=True):
                with (profiles / f"{raw.stem}.py-spy.log").open("wb") as spy_log:
                    spies.append(
                        spawn(
                            [
                                *("taskset", "-c", GENERATOR_CORE, str(py_spy), "record"),
                                *("--nonblocking", "-r", str(PROFILE_HZ), "-d", str(seconds)),
                                *("-f", "raw", "-o", str(raw), "--pid", str(node.pid)),
                            ],
                            stdout=spy_log,
                            stderr=spy_log,
                            die_with_parent=False,  # -d: it stops by itself
                        )
                    )

        cmd = loadgen_command(nodes, redis, profiled, rates=str(rate))
        cmd += ["--retries", "0", "--no-stop"]
        load = run_loadgen(
            cmd, profiles / f"ours-{rate}.gen.log", timeout=120 + seconds, on_window=attach
        )
        for spy in spies:
            try:
                spy.wait(timeout=seconds + 30)
            finally:
                stop(spy, grace=5)
    result: Json = {"rate": rate, "load": load, "nodes": []}
    for index, raw in enumerate(raws):
        summary = summarize_profile(raw, seconds=seconds, rate=PROFILE_HZ)
        title = f"node {index} at {rate} say/s"
        text = format_profile(title, summary)
        path = profiles / f"ours-{rate}-node{index}.summary.txt"
        path.write_text(text)
        summary["summary_path"] = str(path.relative_to(ROOT))
        summary["title"] = title
        result["nodes"].append(summary)
    return result


# --- the summary -------------------------------------------------------------------------------


def _dig(data: Json | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _results(runs: Sequence[Run], server: str) -> list[Json]:
    return [r.result for r in runs if r.server == server and r.result is not None]


def redis_per_say(result: Json, what: str) -> float | None:
    """Redis's count of ``what`` per ``say`` over every step of a run (passing or not):
    ``commands_total``, ``publish``, ``net_in_bytes`` or ``net_out_bytes``."""
    total = 0
    says = 0
    for step in result["steps"]:
        redis = step.get("redis")
        if not redis:
            continue
        value = redis["commands"].get("publish", 0) if what == "publish" else redis.get(what)
        if value is None:
            continue
        total += value
        says += redis["says"]
    return total / says if says else None


def summarize(runs: Sequence[Run]) -> Json:
    """Medians (min-max) per metric and cluster, and the ratios ours / Node."""
    rows: list[Json] = []
    results = {s: _results(runs, s) for s in SERVERS}

    def row(
        name: str, key: str, pick: Callable[[Json], Any], *, digits: int = 0, better: str = ""
    ) -> None:
        stats = {s: Stat.of([pick(r) for r in results[s]]) for s in SERVERS}
        ours, node = stats[OURS].median, stats[NODE].median
        rows.append(
            {
                "metric": name,
                "key": key,
                "ours": dataclasses.asdict(stats[OURS]),
                "node": dataclasses.asdict(stats[NODE]),
                "ratio": None if ours is None or not node else ours / node,
                "digits": digits,
                "better": better,
            }
        )

    def best(*path: str) -> Callable[[Json], Any]:
        return lambda result: _dig(result, "best", *path)

    row("highest passing rate, say/s (both nodes)", "rate", best("rate"), better="higher")
    row(
        "deliveries/s there (p95 < 100 ms)", "deliveries", best("deliveries_per_s"), better="higher"
    )
    row("  p50 latency there, ms", "p50", best("p50_ms"), digits=1, better="lower")
    row("  p95 latency there, ms", "p95", best("p95_ms"), digits=1, better="lower")
    row("  p99 latency there, ms", "p99", best("p99_ms"), digits=1, better="lower")
    row(
        "  p95 of local deliveries, ms",
        "p95_local",
        best("local", "p95_ms"),
        digits=1,
        better="lower",
    )
    row(
        "  p95 of cross-node deliveries, ms",
        "p95_remote",
        best("remote", "p95_ms"),
        digits=1,
        better="lower",
    )
    row("  CPU µs/delivery, both nodes", "us", best("us_per_delivery"), digits=2, better="lower")
    row(
        "  CPU of both nodes, % of a core",
        "cpu",
        lambda r: _pct(_dig(r, "best", "server_cpu")),
        better="",
    )
    row(
        "  Redis CPU, % of a core",
        "redis_cpu",
        lambda r: _pct(_dig(r, "best", "redis_cpu")),
    )
    row(
        "  Redis CPU µs/delivery",
        "redis_us",
        best("redis_us_per_delivery"),
        digits=3,
        better="lower",
    )
    row("  generator CPU, % of a core", "gen_cpu", lambda r: _pct(_dig(r, "best", "gen_cpu")))
    row(
        "  other workloads, % of a core",
        "other_cpu",
        lambda r: _pct(_dig(r, "best", "machine", "other_cores")),
    )
    row(
        "Redis commands per say (all steps)",
        "cmd_per_say",
        lambda r: redis_per_say(r, "commands_total"),
        digits=3,
        better="lower",
    )
    row(
        "  PUBLISH per say",
        "publish_per_say",
        lambda r: redis_per_say(r, "publish"),
        digits=3,
        better="lower",
    )
    row(
        "  Redis bytes in per say",
        "net_in",
        lambda r: redis_per_say(r, "net_in_bytes"),
        better="lower",
    )
    row(
        "  Redis bytes out per say",
        "net_out",
        lambda r: redis_per_say(r, "net_out_bytes"),
        better="lower",
    )

    bests = [_dig(r, "best", "rate") for s in SERVERS for r in results[s]]
    common_rate: float | None = None
    if bests and all(b is not None for b in bests):
        common_rate = min(b for b in bests if b is not None)
        rate = common_rate

        def at(*path: str) -> Callable[[Json], Any]:
            return lambda result: _dig(_step_at(result, rate), *path)

        row(
            f"at {rate:g} say/s (all pass): CPU µs/delivery",
            "us_common",
            at("us_per_delivery"),
            digits=2,
            better="lower",
        )
        row(
            f"at {rate:g} say/s: p95 latency, ms",
            "p95_common",
            at("p95_ms"),
            digits=1,
            better="lower",
        )
        row(
            f"at {rate:g} say/s: cross-node p95, ms",
            "p95_remote_common",
            at("remote", "p95_ms"),
            digits=1,
            better="lower",
        )
        row(
            f"at {rate:g} say/s: other workloads, % of a core",
            "other_common",
            lambda result: _pct(_dig(_step_at(result, rate), "machine", "other_cores")),
        )
    limits = {s: dict(Counter(r["limit"] for r in results[s])) for s in SERVERS}
    commands: dict[str, Counter[str]] = {s: Counter() for s in SERVERS}
    says = dict.fromkeys(SERVERS, 0)
    for s in SERVERS:
        for result in results[s]:
            for step in result["steps"]:
                if step.get("redis"):
                    commands[s].update(step["redis"]["commands"])
                    says[s] += step["redis"]["says"]
    return {
        "rows": rows,
        "limits": limits,
        "common_rate": common_rate,
        "redis_commands": {s: dict(commands[s]) for s in SERVERS},
        "redis_says": says,
    }


def format_table(summary: Json) -> str:
    header = ["metric", LABELS[OURS], LABELS[NODE], "ratio ours / Node"]
    body: list[list[str]] = []
    for r in summary["rows"]:
        ours = Stat(**r["ours"])
        node = Stat(**r["node"])
        value = r["ratio"]
        text = "-" if value is None else f"{value:.2f}x"
        if value is not None and r["better"]:
            text += f" ({r['better']} is better)"
        body.append([r["metric"], fmt_stat(ours, r["digits"]), fmt_stat(node, r["digits"]), text])
    limits = summary["limits"]
    body.append(
        ["what stopped the ladder"]
        + [", ".join(f"{k} {v}x" for k, v in limits.get(s, {}).items()) or "-" for s in SERVERS]
        + [""]
    )
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(4)]
    lines = [
        "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(row)) + " |" for row in body
    ]
    for server in SERVERS:
        counted = summary["redis_commands"].get(server) or {}
        if counted:
            shown = ", ".join(f"{name} {count:,}" for name, count in sorted(counted.items()))
            lines.append(
                f"Redis commands during the steps of {LABELS[server]}: {shown}, for "
                f"{summary['redis_says'][server]:,} says"
            )
    return "\n".join(lines)


def bound_notes(runs: Sequence[Run]) -> list[str]:
    """Which clusters the generator (with Redis, on core 1) stopped rather than their nodes."""
    notes = []
    for server in SERVERS:
        limits = [r["limit"] for r in _results(runs, server)]
        stopped = limits.count("generator")
        if stopped:
            notes.append(
                f"note: {LABELS[server]} was stopped by the generator and Redis (core 1) in "
                f"{stopped} of {len(limits)} runs, not by its nodes: its deliveries/s is a "
                "lower bound there; CPU µs/delivery is the figure that compares"
            )
    return notes


def issues_of(runs: Sequence[Run]) -> list[str]:
    """Misbehaviour seen: errors, server log lines, lost deliveries, disconnects, noise."""
    lines = []
    for run in runs:
        parts = []
        if run.error:
            parts.append(f"error: {run.error}")
        for node, issues in run.log_issues.items():
            parts.append(f"{node} log has {len(issues)} lines, e.g. {issues[0][:200]!r}")
        if any(run.killed):
            parts.append("a node was SIGKILLed at stop")
        codes = [c for c in run.exit_codes if c not in (0, None)]
        if codes:
            parts.append(f"node exit codes {run.exit_codes}")
        r = run.result or {}
        steps = r.get("steps", [])
        # `delivered` counts until the nodes have been quiet for 300 ms (up to drain + 15 s
        # after the last send): what is missing then was lost, not late.
        lost = [
            f"{s['rate']} say/s (attempt {s['attempt']}): "
            f"{s['expected'] - s['delivered']:,} of {s['expected']:,}"
            for s in steps
            if s["delivered"] < s["expected"]
        ]
        if lost:
            parts.append("deliveries missing: " + "; ".join(lost))
        disconnects = sum(s["disconnects"] for s in steps)
        if disconnects:
            parts.append(f"{disconnects} client disconnects")
        if r.get("unexpected_frames"):
            parts.append(
                f"{r['unexpected_frames']} unexpected frames, e.g. {r['unexpected_samples'][:1]}"
            )
        unknown = sum(s.get("unknown_origin", 0) for s in steps)
        if unknown:
            parts.append(f"{unknown} deliveries whose sender node was unreadable")
        other = max((_dig(s, "machine", "other_cores") or 0 for s in steps), default=0)
        if other >= 0.05:
            noisy = [s for s in steps if s.get("noisy")]
            parts.append(
                f"other workloads took up to {other:.0%} of a core in a step; "
                f"{len(noisy)} of {len(steps)} steps with >= 25 %"
                + (
                    f" (the best step too: {_dig(r, 'best', 'machine', 'other_cores'):.0%})"
                    if _dig(r, "best", "noisy")
                    else ""
                )
            )
        waited = [_dig(s, "quiet_before", "waited_s") or 0 for s in steps]
        if sum(waited) > 5:
            parts.append(f"waited {sum(waited):.0f} s in all for quiet before steps")
        if parts:
            lines.append(f"{LABELS[run.server]} rep {run.rep}: " + "; ".join(parts))
    return lines


# --- the host ----------------------------------------------------------------------------------


def _node_version(package: str, base: Path) -> str:
    with contextlib.suppress(OSError, json.JSONDecodeError, KeyError):
        data = json.loads((base / "node_modules" / package / "package.json").read_text())
        return str(data["version"])
    return "?"


def _commit() -> str:
    """The checked-out commit, read from .git (no git command)."""
    git = ROOT / ".git"
    with contextlib.suppress(OSError):
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        loose = git / ref
        if loose.exists():
            return loose.read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    return "?"


def host_facts(redis_version: str) -> Json:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"v=(\S+)", redis_version)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node.stdout.strip(),
        "redis": match.group(1) if match else redis_version,
        "replyhq_trio": {
            "commit": _commit(),
            "trio": _version("trio"),
            "orjson": _version("orjson"),
            "msgpack": _version("msgpack"),
            "wsproto": _version("wsproto"),
        },
        "node_cluster": {
            name: _node_version(name, CLUSTER_NODE_DIR)
            for name in (
                "socket.io",
                "engine.io",
                "ws",
                "socket.io-adapter",
                "@socket.io/redis-adapter",
                "redis",
                "@redis/client",
                "notepack.io",
                "socket.io-client",
            )
        },
        "generator_ws": _node_version("ws", SINGLE_NODE_DIR),
    }


def format_host(host: Json) -> str:
    ours = host["replyhq_trio"]
    nodes = host["node_cluster"]
    return "\n".join(
        [
            f"host: {host['cpu']}, {host['cores']} cores, Linux {host['kernel']}",
            f"placement: both nodes on core {SERVER_CORE}; generator, Redis, the cross-node "
            f"check and the runner on core {GENERATOR_CORE} (node 1 + node 2 + Redis + "
            "generator share 2 cores)",
            f"ours: replyhq_trio {ours['commit']}, Python {host['python']}, trio {ours['trio']}, "
            f"orjson {ours['orjson']}, msgpack {ours['msgpack']}, wsproto {ours['wsproto']}",
            f"Node: {host['node']}, socket.io {nodes['socket.io']} (engine.io "
            f"{nodes['engine.io']}, ws {nodes['ws']}), @socket.io/redis-adapter "
            f"{nodes['@socket.io/redis-adapter']} (classic createAdapter(pub, sub), notepack.io "
            f"{nodes['notepack.io']}), redis {nodes['redis']} (@redis/client "
            f"{nodes['@redis/client']})",
            f"Redis {host['redis']} (private, no persistence); generator: Node "
            f"{host['node']}, ws {host['generator_ws']}; check: socket.io-client "
            f"{nodes['socket.io-client']}",
        ]
    )


# --- main --------------------------------------------------------------------------------------


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally`s that stop the children


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    check_tools()
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Keep this process off the nodes' core; the children set their own affinity.
    os.sched_setaffinity(0, {int(GENERATOR_CORE)})
    raise_nofile_limit()
    BENCH.mkdir(exist_ok=True)
    ensure_single_node_modules()
    ensure_cluster_node_modules()
    waited: Json | None = None
    if settings.wait_load is not None:
        waited = wait_for_load(settings.wait_load)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RUNS / stamp
    out.mkdir(parents=True)
    load_start = os.getloadavg()
    started = time.monotonic()
    runs: list[Run] = []
    profile: Json | None = None
    with private_redis(out) as redis:
        host = host_facts(redis.version)
        log(format_host(host))
        log(f"logs: {out.relative_to(ROOT)}; Redis on port {redis.port} (pid {redis.pid})")
        log(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}")
        try:
            for rep in range(1, settings.reps + 1):
                order = (OURS, NODE) if rep % 2 == 1 else (NODE, OURS)
                for position, server in enumerate(order):
                    runs.append(
                        measure(
                            server, rep, position=position, settings=settings, redis=redis, out=out
                        )
                    )
        except (KeyboardInterrupt, SystemExit):
            log("interrupted: stopping the processes it started (by PID)")
            raise
        load_end = os.getloadavg()
        if settings.profile:
            # Where every run passed: at ours' best, the two py-spy processes on core 1 would
            # push the generator over its core.
            common = summarize(runs)["common_rate"]
            rate = settings.profile_rate or (int(common) if common else 160)
            try:
                profile = profile_ours(settings, redis, out, rate)
            except (BenchError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
                profile = {"error": str(exc)}
    elapsed = time.monotonic() - started
    summary = summarize(runs)
    issues = issues_of(runs)
    report = [
        "",
        f"== scripts/bench-cluster: {settings.reps} rep(s) per cluster, medians (min-max); "
        f"{settings.clients:,} clients in {settings.rooms} rooms on {NODES} nodes; "
        f"{elapsed / 60:.1f} min",
        format_host(host),
        f"load average (1, 5, 15 min): at start {' '.join(f'{x:.2f}' for x in load_start)}, "
        f"at end {' '.join(f'{x:.2f}' for x in load_end)}"
        + (
            ""
            if waited is None
            else f" (waited {waited['waited_s']} s for < {waited['limit']:g}: "
            + ("quiet" if waited["quiet"] else "never got quiet: figures from a busy machine")
            + ")"
        ),
        "",
        format_table(summary),
    ]
    notes = bound_notes(runs)
    if notes:
        report += ["", *notes]
    if issues:
        report += ["", "misbehaviour and noise seen:", *[f"  {line}" for line in issues]]
    if profile is not None:
        if "error" in profile:
            report += ["", f"profile: {profile['error']}"]
        else:
            for node_summary in profile["nodes"]:
                report += ["", format_profile(node_summary["title"], node_summary).rstrip()]
                report.append(f"  (full summary: {node_summary['summary_path']})")
    print("\n".join(report), flush=True)
    document = {
        "when": stamp,
        "elapsed_s": round(elapsed, 1),
        "settings": {k: str(v) for k, v in dataclasses.asdict(settings).items()},
        "placement": {"nodes": SERVER_CORE, "generator_redis_runner": GENERATOR_CORE},
        "host": host,
        "loadavg": {"start": load_start, "end": load_end, "waited": waited},
        "summary": summary,
        "issues": issues,
        "runs": [r.to_json() for r in runs],
        "profile": profile,
        "logs": str(out.relative_to(ROOT)),
    }
    (out / "results.json").write_text(json.dumps(document, indent=1))
    settings.json_path.parent.mkdir(parents=True, exist_ok=True)
    settings.json_path.write_text(json.dumps(document, indent=1))
    log(f"results: {settings.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
