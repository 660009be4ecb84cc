"""The chat end to end: ``message:send`` on ``/client``, acked and fanned out to a room.

For each store (SQLite in a temporary file; PostgreSQL in a fresh database, dropped
after), this starts the real server as its own process (``python -m replyhq_trio serve``),
creates an app with ``python -m replyhq_trio apps create``, and runs the Node load
generator beside this file (``loadgen.mjs``) against it over loopback: ROOMS
conversations of ROOM_SIZE sockets each (connections of one device, so the server puts
them in the conversation's room), SENDERS sockets per room sending ``message:send`` with
at most WINDOW messages each in flight. A message is done when its ack
(``{success: true, message}``) and its ``message:new`` on every socket of the room have
arrived. Reported: messages/s, latency from the emit to the last ``message:new``
(p50/p95/p99) and to the ack (p50/p95), CPU of the server (by thread), of the generator
and of the rest of the machine from ``/proc``, the server's RSS, and what limits the
figure. ``--profile`` adds a py-spy run per store.

Every process it starts is stopped by its PID (SIGTERM, then SIGKILL) when the run ends,
fails or is interrupted; each also gets SIGTERM from the kernel if this process dies.
Logs and profiles go to ``.bench/chat/<timestamp>/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from chat_profile import format_profile, summarize_profile

LIB = Path(__file__).resolve().parent
ROOT = LIB.parents[2]
RUNS = ROOT / ".bench" / "chat"
LOADGEN = LIB / "loadgen.mjs"
#: socket.io-client (and the ws it depends on), installed by scripts/bench-chat like
#: scripts/test does.
NODE_DIR = ROOT / "tests" / "interop" / "js"

STORES = ("sqlite", "postgres")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"

#: The seed's targets.
TARGET_MSGS_PER_S = 5000.0
TARGET_P95_MS = 100.0

#: The machine counts as idle below this share of its CPUs busy (--wait-idle).
IDLE_BUSY = 0.15

SERVER_CORE = "0"
GENERATOR_CORE = "1"
PROFILE_RATE_HZ = 200

Json = dict[str, Any]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A run could not be made (a process failed, a database is unreachable)."""


# --- options ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    stores: tuple[str, ...]
    duration: float
    warmup: float
    drain: float
    rooms: int
    room_size: int
    senders: int
    window: int
    client: str
    body: str
    pin: bool
    profile: bool
    postgres_url: str
    sqlite_dir: Path | None
    wait_idle: float
    json_to: str | None


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="scripts/bench-chat",
        description="message:send on /client end to end through the real server, acked and "
        "delivered as message:new to every socket of the room: msgs/s, latency, CPU, RSS, "
        "for SQLite and PostgreSQL.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load first (2)")
    parser.add_argument(
        "--drain", type=float, default=5.0, help="seconds to wait for the last messages (5)"
    )
    parser.add_argument("--rooms", type=int, default=20, help="conversations (20)")
    parser.add_argument("--room-size", type=int, default=10, help="sockets per room (10)")
    parser.add_argument(
        "--senders", type=int, default=5, help="sockets per room that send (5, at most room-size)"
    )
    parser.add_argument("--window", type=int, default=2, help="messages in flight per sender (2)")
    parser.add_argument(
        "--stores", default="sqlite,postgres", help="comma-separated: sqlite,postgres (both)"
    )
    parser.add_argument(
        "--client",
        choices=["raw", "official"],
        default="raw",
        help="the generator's client: raw Socket.IO frames over ws (default, the cheaper) "
        "or socket.io-client",
    )
    parser.add_argument(
        "--body", default="Hello! Is my order on its way?", help="the text of every message"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"pin the server to core {SERVER_CORE} and the generator to core "
        f"{GENERATOR_CORE} (taskset); the default leaves placement to the kernel, so the "
        "server's SQLite thread and PostgreSQL can use the other core",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after each measured run, a second run with py-spy attached to the server for "
        "the measured window: hot spots by thread, kind of work and function",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES,
        help=f"a database to connect to for CREATE/DROP DATABASE ({DEFAULT_POSTGRES}); the "
        "bench runs in a fresh database replyhq_bench_<random> on that server",
    )
    parser.add_argument(
        "--sqlite-dir", type=Path, help="where the temporary SQLite file goes (the temp dir)"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each run, wait up to S seconds for the machine to be idle (other "
        f"processes below {IDLE_BUSY * 100:.0f}%% of the CPUs over a second); 0: do not wait",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="write the results as JSON to PATH, or to stdout without PATH (the report then "
        "goes to stderr)",
    )
    args = parser.parse_args(argv)
    stores = tuple(s.strip() for s in args.stores.split(",") if s.strip())
    unknown = set(stores) - set(STORES)
    if unknown or not stores:
        parser.error(f"--stores: expected a subset of {','.join(STORES)}")
    for name in ("rooms", "room_size", "senders", "window"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.senders > args.room_size:
        parser.error("--senders cannot exceed --room-size")
    if args.duration <= 0 or args.warmup < 0 or args.drain <= 0:
        parser.error("--duration and --drain must be positive, --warmup not negative")
    if args.pin and (os.cpu_count() or 1) < 2:
        parser.error("--pin needs 2 cores")
    return Options(
        stores=stores,
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        rooms=args.rooms,
        room_size=args.room_size,
        senders=args.senders,
        window=args.window,
        client=args.client,
        body=args.body,
        pin=args.pin,
        profile=args.profile,
        postgres_url=args.postgres_url,
        sqlite_dir=args.sqlite_dir,
        wait_idle=args.wait_idle,
        json_to=args.json,
    )


# --- processes ---------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when this process ends, however it ends."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    cmd: Sequence[str], *, stdout: Any, stderr: Any, die_with_parent: bool = True
) -> subprocess.Popen[Any]:
    """A child in its own process group (a Ctrl-C reaches this process only, which then
    stops the child by its PID) that the kernel stops if this process dies.

    ``die_with_parent`` asks for SIGTERM when the spawning *thread* ends: only for children
    spawned by the main thread (py-spy, started from a reader thread, stops by itself).
    """
    return subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        process_group=0,
        # only the main thread spawns with it, while no other thread of ours runs
        preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509
    )


def stop(process: subprocess.Popen[Any], *, grace: float = 15.0) -> int | None:
    """SIGTERM the process by its PID, SIGKILL after ``grace`` seconds; its exit status."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)
    return process.returncode


def pinned(core: str, cmd: list[str], options: Options) -> list[str]:
    return ["taskset", "-c", core, *cmd] if options.pin else cmd


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def machine_busy(seconds: float = 1.0) -> float:
    """The share of all CPUs busy over ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return sum(fields) - fields[3] - fields[4], sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_until_idle(options: Options) -> float:
    """Wait (at most --wait-idle seconds) for the machine to be idle; its busy share."""
    deadline = time.monotonic() + options.wait_idle
    busy = machine_busy()
    while busy >= IDLE_BUSY and time.monotonic() < deadline:
        log(f"   the machine is {busy:.0%} busy: waiting for it to be idle")
        time.sleep(2)
        busy = machine_busy()
    return busy


# --- stores ----------------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_database(options: Options) -> Iterator[str]:
    """A fresh SQLite file in a temporary directory, removed after."""
    with tempfile.TemporaryDirectory(prefix="replyhq-bench-", dir=options.sqlite_dir) as tmp:
        path = Path(tmp).resolve() / "bench.db"
        yield f"sqlite:///{path}"  # an absolute path: sqlite:////tmp/...


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(statement, timeout=60)
    finally:
        await connection.close(timeout=10)


@contextlib.contextmanager
def postgres_database(options: Options) -> Iterator[str]:
    """A fresh database ``replyhq_bench_<random>``, dropped after (WITH (FORCE))."""
    name = f"replyhq_bench_{secrets.token_hex(4)}"
    try:
        asyncio.run(_admin(options.postgres_url, f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"PostgreSQL at {options.postgres_url}: {exc}") from None
    log(f"   created database {name}")
    try:
        yield _with_database(options.postgres_url, name)
    finally:
        try:
            asyncio.run(
                _admin(options.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            )
            log(f"   dropped database {name}")
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            log(f"   could not drop database {name}: {exc}")


def database(store: str, options: Options) -> contextlib.AbstractContextManager[str]:
    return sqlite_database(options) if store == "sqlite" else postgres_database(options)


def database_name(url: str) -> str | None:
    return urlsplit(url).path.lstrip("/") if url.startswith("postgres") else None


def create_app(url: str) -> Json:
    """``replyhq-trio apps create --json``: the app's id, API key and admin token."""
    cmd = [sys.executable, "-m", "replyhq_trio", "apps", "create", "--name", "bench", "--json"]
    try:
        done = subprocess.run(
            [*cmd, "--database-url", url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError("apps create took more than 60 s") from None
    if done.returncode != 0:
        raise BenchError(f"apps create failed: {done.stderr.strip() or done.stdout.strip()}")
    app: Json = json.loads(done.stdout.strip().splitlines()[-1])
    return app


# --- the server ------------------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    process: subprocess.Popen[Any]
    port: int
    log_path: Path
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_server(url: str, options: Options, log_path: Path) -> Iterator[Server]:
    """``replyhq-trio serve`` on a free port until it answers /healthz; stopped after."""
    port = free_port()
    cmd = [sys.executable, "-m", "replyhq_trio", "serve", "--port", str(port)]
    cmd += ["--database-url", url, "--log-level", "warning", "--grace-period", "1"]
    # Every client comes from one address and sends far faster than a person: the bench
    # measures the chat path, not the limiter.
    cmd += ["--limit-ip-connects", "0", "--limit-messages", "0", "--limit-typing", "0"]
    with log_path.open("wb") as log_file:
        process = spawn(pinned(SERVER_CORE, cmd, options), stdout=log_file, stderr=log_file)
    server = Server(process, port, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise BenchError(f"the server exited at start:\n{tail(log_path)}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{server.url}/healthz", timeout=1) as answer,
            ):
                if answer.status == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"the server did not answer /healthz within 30 s: {log_path}")
            time.sleep(0.05)
        yield server
    finally:
        server.exit_code = stop(process)


# --- the load generator ------------------------------------------------------------------------


def loadgen_deadline(options: Options) -> float:
    return 30 + options.drain * 2 + options.warmup + options.duration + 30


def run_loadgen(
    server: Server,
    app: Json,
    options: Options,
    log_path: Path,
    *,
    db_name: str | None,
    tag: str,
    on_window: Callable[[], None] | None = None,
) -> Json:
    """Run loadgen.mjs to the end and return its JSON result."""
    deadline = loadgen_deadline(options)
    cmd = ["node", str(LOADGEN), "--url", server.url, "--pid", str(server.pid)]
    cmd += ["--app-id", app["app_id"], "--api-key", app["api_key"]]
    cmd += ["--hz", str(os.sysconf("SC_CLK_TCK")), "--node-dir", str(NODE_DIR)]
    cmd += ["--client", options.client, "--rooms", str(options.rooms)]
    cmd += ["--room-size", str(options.room_size), "--senders", str(options.senders)]
    cmd += ["--window", str(options.window), "--warmup", str(options.warmup)]
    cmd += ["--duration", str(options.duration), "--drain", str(options.drain)]
    cmd += ["--deadline", str(deadline), "--body", options.body, "--tag", tag]
    if db_name:
        cmd += ["--db-name", db_name]
    process = spawn(
        pinned(GENERATOR_CORE, cmd, options), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = process.stderr

    def pump() -> None:
        with log_path.open("w") as gen_log:
            for raw in stderr:
                line = raw.decode(errors="replace")
                gen_log.write(line)
                gen_log.flush()
                if line.startswith("#window start") and on_window is not None:
                    on_window()
                elif line.startswith(("  ", "loadgen:")):
                    log("   " + line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timer = threading.Timer(deadline + 10, process.kill)
    timer.start()
    try:
        out = process.stdout.read()
        process.wait()
    finally:
        timer.cancel()
        stop(process, grace=2)
        reader.join(5)
    if process.returncode != 0:
        raise BenchError(f"the load generator exited {process.returncode}:\n{tail(log_path)}")
    result: Json = json.loads(out.decode().strip().splitlines()[-1])
    return result


# --- py-spy --------------------------------------------------------------------------------------


def find_py_spy() -> Path:
    """py-spy from PATH, this venv or scripts/bench's .bench/venv; else pip-installed here."""
    candidates = [
        shutil.which("py-spy"),
        str(Path(sys.executable).parent / "py-spy"),
        str(ROOT / ".bench" / "venv" / "bin" / "py-spy"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    log("   installing py-spy into this venv (pip)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "py-spy",
        ],
        check=True,
        timeout=300,
    )
    return Path(sys.executable).parent / "py-spy"


# --- one store -----------------------------------------------------------------------------------


def measure_store(store: str, options: Options, out: Path) -> Json:
    """Measure one store (and profile it when asked); the results as JSON."""
    log(f"== {store}")
    result: Json = {"store": store}
    with database(store, options) as url:
        result["database_url"] = url
        app = create_app(url)
        db_name = database_name(url)
        result["machine_busy_before"] = round(wait_until_idle(options), 3)
        with running_server(url, options, out / f"{store}.server.log") as server:
            log(
                f"   server pid {server.pid} on port {server.port}; load for "
                f"{options.warmup:g} + {options.duration:g} s"
            )
            result["run"] = run_loadgen(
                server, app, options, out / f"{store}.loadgen.log", db_name=db_name, tag="m"
            )
        result["server_exit"] = server.exit_code
        result["server_log_tail"] = tail(server.log_path, 5)
        log("   " + one_line(result["run"]))
        if options.profile:
            result["profile"] = profile_store(store, url, app, options, out, db_name=db_name)
    return result


def profile_store(
    store: str, url: str, app: Json, options: Options, out: Path, *, db_name: str | None
) -> Json:
    """The same load on a fresh server process, py-spy attached for the measured window."""
    py_spy = find_py_spy()
    raw = out / f"{store}.profile.raw.txt"
    seconds = max(1, int(options.duration))
    spies: list[subprocess.Popen[Any]] = []
    log(f"   profiling: the same load again, py-spy record for {seconds} s at {PROFILE_RATE_HZ} Hz")
    wait_until_idle(options)
    with running_server(url, options, out / f"{store}.profile.server.log") as server:

        def attach() -> None:
            # --nonblocking: py-spy reads the stacks without stopping the server. Some reads
            # fail (counted as errors), but its split between Python code and system calls
            # matched `perf` here, whereas the blocking mode put 2-3x too much time on the
            # lines making system calls (epoll_wait, send).
            cmd = [str(py_spy), "record", "--nonblocking", "--threads"]
            cmd += ["-r", str(PROFILE_RATE_HZ), "-d", str(seconds), "-f", "raw"]
            cmd += ["-o", str(raw), "--pid", str(server.pid)]
            with (out / f"{store}.py-spy.log").open("wb") as spy_log:
                spies.append(
                    spawn(
                        pinned(GENERATOR_CORE, cmd, options),
                        stdout=spy_log,
                        stderr=spy_log,
                        die_with_parent=False,  # -d: it stops by itself
                    )
                )

        try:
            load = run_loadgen(
                server,
                app,
                options,
                out / f"{store}.profile.loadgen.log",
                db_name=db_name,
                tag="p",
                on_window=attach,
            )
            for spy in spies:
                spy.wait(timeout=seconds + 30)
        finally:
            for spy in spies:
                stop(spy, grace=5)
        summary = summarize_profile(raw, seconds=seconds, rate=PROFILE_RATE_HZ, main_tid=server.pid)
    spy_log = tail(out / f"{store}.py-spy.log", 5)
    found = re.search(r"Samples: (\d+) Errors: (\d+)", spy_log)
    if found:
        summary["py_spy_samples"], summary["py_spy_errors"] = map(int, found.groups())
    summary["load_under_profiler"] = load
    summary["raw_path"] = str(raw)
    text = format_profile(f"{store}, {one_line(load)}", summary)
    (out / f"{store}.profile.txt").write_text(text)
    summary["text_path"] = str(out / f"{store}.profile.txt")
    return summary


# --- the report ----------------------------------------------------------------------------------


def one_line(run: Json) -> str:
    lat = run["latency"]
    cpu = run["cpu"]
    return (
        f"{run['msgs_per_s']:,.0f} msgs/s | p50 {lat['p50_ms']} p95 {lat['p95_ms']} "
        f"p99 {lat['p99_ms']} ms | server {cpu['server_cpu']:.0%} gen {cpu['gen_cpu']:.0%} "
        f"other {cpu['other_cpu']:.0%}"
    )


def verdict(run: Json) -> Json:
    """PASS/FAIL against the targets, and what limits the figure."""
    cpu = run["cpu"]
    lat = run["latency"]
    clean = not (
        run["lost"]
        or run["disconnects"]
        or run["ack_errors"]
        or run["mismatches"]
        or run["unknown_deliveries"]
    )
    throughput_ok = run["msgs_per_s"] >= TARGET_MSGS_PER_S
    latency_ok = lat["p95_ms"] is not None and lat["p95_ms"] < TARGET_P95_MS
    cores = cpu["machine_cores"]
    states = run.get("thread_states") or {}
    main = states.get("main", {})
    workers = states.get("workers", {})
    job = sum(share for kind, share in workers.items() if kind.startswith("job:"))
    limits: list[str] = []
    if cpu["server_main_thread_cpu"] >= 0.9 or main.get("running", 0) >= 0.95:
        limits.append(
            f"the server's Trio thread is saturated ({cpu['server_main_thread_cpu']:.0%} of a "
            f"core, running {main.get('running', 0):.0%} of the samples): the server's CPU "
            "limits"
        )
    elif states.get("worker_threads_avg", 0) > 0:
        limits.append(
            f"neither the Trio thread (running {main.get('running', 0):.0%}, waiting in "
            f"epoll_wait {main.get('epoll_wait', 0):.0%}) nor the store's worker thread "
            f"(in a job {job:.0%}: running {workers.get('job: running', 0):.0%}, waiting "
            f"for the GIL {workers.get('job: futex (GIL)', 0):.0%}, on the disk "
            f"{workers.get('job: disk', 0):.0%}; idle {1 - job:.0%}) is saturated, together "
            f"{cpu['server_cpu']:.0%} of a core: they take turns more than they overlap"
        )
    if cpu["gen_cpu"] >= 0.9:
        limits.append(f"the load generator is saturated ({cpu['gen_cpu']:.0%} of a core)")
    if cpu["machine_busy"] >= 0.9 * cores:
        shares = {
            "server": cpu["server_cpu"],
            "generator": cpu["gen_cpu"],
            "PostgreSQL backends": cpu.get("db_cpu") or 0.0,
            "other processes and the kernel": max(
                0.0, cpu["other_cpu"] - (cpu.get("db_cpu") or 0.0)
            ),
        }
        parts = ", ".join(f"{k} {v:.0%}" for k, v in shares.items() if v >= 0.05)
        limits.append(f"the machine: {cpu['machine_busy']:.2f} of {cores:.0f} cores busy ({parts})")
    if not limits:
        limits.append(
            "no CPU saturates: the closed loop is bound by latency (messages in flight / "
            "time per message: the store's commit, the per-socket event order); more "
            "--senders or --window raise the rate until a CPU saturates"
        )
    if cpu["gen_cpu"] < 0.6:
        limits.append(
            f"the generator is not the bottleneck ({cpu['gen_cpu']:.0%} of a core for "
            f"{run['deliveries_per_s']:,.0f} message:new/s)"
        )
    return {
        "throughput": "PASS" if throughput_ok else "FAIL",
        "p95": "PASS" if latency_ok else "FAIL",
        "clean": clean,
        "limits": limits,
    }


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_states(states: Json | None) -> str:
    """The server's thread states, as sampled from /proc/PID/task/TID/wchan."""
    if not states:
        return "-"

    def shares(counts: Json) -> str:
        return ", ".join(f"{kind} {share:.0%}" for kind, share in counts.items() if share >= 0.01)

    text = f"Trio thread: {shares(states['main'])}"
    if states["workers"]:
        text += (
            f" | worker threads (on average {states['worker_threads_avg']:g}): "
            f"{shares(states['workers'])}"
        )
    return text + " (samples every 10 ms of /proc/PID/task/*/wchan)"


def format_store(result: Json) -> str:
    if "error" in result:
        return f"{result['store']}: not measured: {result['error']}"
    run = result["run"]
    cpu = run["cpu"]
    lat = run["latency"]
    ack = run["ack_latency"]
    judged = result["verdict"]
    mib = 1024
    db_cpu = cpu.get("db_cpu")
    other = f", other processes {cpu['other_cpu']:.0%}"
    if db_cpu is not None:
        other = (
            f", PostgreSQL backends {db_cpu:.0%}, other processes "
            f"{max(0.0, cpu['other_cpu'] - db_cpu):.0%}"
        )
    lines = [
        f"{result['store']}  ({result['database_url']}; the machine was "
        f"{result['machine_busy_before']:.0%} busy just before)",
        f"  load        {run['rooms']} rooms x {run['room_size']} sockets, {run['senders']} "
        f"senders x window {run['window']} (<= {run['in_flight_max']} in flight), "
        f"{run['client']} client ({run['client_version']}), {run['duration_s']:g} s after "
        f"{run['warmup_s']:g} s warm-up",
        f"  throughput  {run['msgs_per_s']:>9,.0f} msgs/s  ({run['deliveries_per_s']:,.0f} "
        f"message:new/s)      target >= {TARGET_MSGS_PER_S:,.0f}: {judged['throughput']}",
        f"  latency     p50 {fmt_ms(lat['p50_ms'])}  p95 {fmt_ms(lat['p95_ms'])}  "
        f"p99 {fmt_ms(lat['p99_ms'])}  max {fmt_ms(lat['max_ms'])} ms (emit -> last "
        f"message:new)   target p95 < {TARGET_P95_MS:g} ms: {judged['p95']}",
        f"  ack         p50 {fmt_ms(ack['p50_ms'])}  p95 {fmt_ms(ack['p95_ms'])} ms",
        f"  per second  {', '.join(f'{n:,}' for n in run['per_second'])}",
        f"  CPU         server {cpu['server_cpu']:.0%} of a core (Trio thread "
        f"{cpu['server_main_thread_cpu']:.0%} (kernel {cpu['server_main_thread_system_cpu']:.0%}), "
        f"other threads {cpu['server_other_threads_cpu']:.0%}; waiting for a CPU: Trio "
        f"thread {cpu['server_main_thread_runqueue_wait']:.0%}, others "
        f"{cpu['server_other_threads_runqueue_wait']:.0%}), generator {cpu['gen_cpu']:.0%}{other}; "
        f"machine {cpu['machine_busy']:.2f} of {cpu['machine_cores']:.0f} cores busy, "
        f"iowait {cpu['machine_iowait']:.0%}",
        f"  threads     {format_states(run.get('thread_states'))}",
        f"  memory      server RSS {run['server_rss_kib'] / mib:.1f} MiB at the end of the "
        f"window (peak {run['server_rss_peak_kib'] / mib:.1f} MiB)",
        f"  checks      {run['lost']} lost, {run['ack_errors']} failed acks, "
        f"{run['mismatches']} mismatches, {run['unknown_deliveries']} stray deliveries, "
        f"{run['disconnects']} disconnects, {run['connect_errors']} connect errors"
        + ("" if judged["clean"] else "   <- NOT CLEAN"),
    ]
    lines += [f"  limit       {text}" for text in judged["limits"]]
    if run["problems"]:
        lines += [f"  problem     {text}" for text in run["problems"]]
    profile = result.get("profile")
    if profile and "error" not in profile:
        lines.append(
            f"  profile     {profile['text_path']} (under py-spy: "
            f"{one_line(profile['load_under_profiler'])})"
        )
        for name, _count, pct, core in profile["buckets"][:8]:
            lines.append(f"              {pct:5.1f} %  {core:4.2f} wall  {name}")
    elif profile:
        lines.append(f"  profile     {profile['error']}")
    return "\n".join(lines)


def host_facts(options: Options) -> Json:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "node": node.stdout.strip(),
        "kernel": platform.release(),
        "pinned": options.pin,
        "loadavg_before": os.getloadavg(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def format_report(report: Json) -> str:
    host = report["host"]
    lines = [
        "",
        f"scripts/bench-chat: {host['cpus']} cores ({host['cpu_model']}), Python "
        f"{host['python']}, Node {host['node']}; load average before "
        f"{', '.join(f'{x:.2f}' for x in host['loadavg_before'])}; "
        + ("server on core 0, generator on core 1" if host["pinned"] else "not pinned"),
    ]
    if (host["cpus"] or 1) <= 2:
        lines.append(
            "  On this 2-core machine the server, the generator (and PostgreSQL) share two "
            "cores: see 'CPU' and 'limit' for who uses them."
        )
    for result in report["results"]:
        lines += ["", format_store(result)]
    lines += ["", f"logs and profiles: {report['out']}"]
    return "\n".join(lines) + "\n"


# --- main ---------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def check_tools(options: Options) -> None:
    missing = [tool for tool in ("node",) if shutil.which(tool) is None]
    if options.pin and shutil.which("taskset") is None:
        missing.append("taskset")
    if missing:
        raise SystemExit(f"scripts/bench-chat: missing {', '.join(missing)}")
    module = "socket.io-client" if options.client == "official" else "ws"
    if not (NODE_DIR / "node_modules" / module).is_dir():
        raise SystemExit(
            f"scripts/bench-chat: {module} is not installed: npm ci --prefix tests/interop/js"
        )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    check_tools(options)
    # Ctrl-C and SIGTERM unwind the run (even when started with SIGINT ignored, as a
    # background job is): every process it started is stopped, the database dropped.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RUNS / stamp
    out.mkdir(parents=True, exist_ok=True)
    report: Json = {
        "options": {
            k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(options).items()
        },
        "targets": {"msgs_per_s": TARGET_MSGS_PER_S, "p95_ms": TARGET_P95_MS},
        "host": host_facts(options),
        "out": str(out),
        "results": [],
    }
    failed = False
    try:
        for store in options.stores:
            try:
                result = measure_store(store, options, out)
                result["verdict"] = verdict(result["run"])
            except BenchError as exc:
                log(f"   {store}: {exc}")
                result = {"store": store, "error": str(exc)}
                failed = True
            report["results"].append(result)
    except KeyboardInterrupt:
        log("scripts/bench-chat: interrupted; every process it started is stopped")
        return 130
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    text = format_report(report)
    if options.json_to == "-":
        sys.stderr.write(text)
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(text)
        if options.json_to:
            Path(options.json_to).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
