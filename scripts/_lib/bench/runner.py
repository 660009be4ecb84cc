"""replyhq_trio beside python-socketio on this machine: one run, one table of ratios.

Three scenarios, each against both servers, alternating which goes first, every
measurement on a fresh server process (pinned to core 0; the Node load generator on
core 1):

* ack: 100 connections in a closed ``echo``-with-ack loop; acks/s and server CPU/ack.
* fanout: 1,000 connections in 10 rooms of 100, ``say`` at a ladder of rates; the
  highest step with p95 < 100 ms, >= 99.9 % delivered, >= 97 % of the offered rate sent
  and no disconnects; deliveries/s there and server CPU/delivery.
* memory: server RSS per idle Socket.IO connection at 5,000.

Everything it needs lives under ``.bench/`` (git-ignored): ``venv`` (python-socketio,
uvicorn, uvloop, httptools, websockets, wsproto, py-spy; latest releases), ``node``
(``npm ci`` of ``package.json`` + ``package-lock.json`` beside this file: ``ws``), and
``runs/<timestamp>/`` (the servers' and generator's logs, profiles).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

LIB = Path(__file__).resolve().parent
ROOT = LIB.parents[2]
BENCH = ROOT / ".bench"
BASELINE_VENV = BENCH / "venv"
NODE_DIR = BENCH / "node"
LOADGEN = LIB / "loadgen.mjs"

#: Installed (latest releases) into .bench/venv; py-spy profiles our server.
BASELINE_PACKAGES = (
    "python-socketio",
    "uvicorn",
    "uvloop",
    "httptools",
    "websockets",
    "wsproto",
    "py-spy",
)
#: Reinstall (upgrade to the latest releases) when the install is older than this.
BASELINE_MAX_AGE_S = 7 * 24 * 3600

SERVER_CORE = "0"
GENERATOR_CORE = "1"

OURS = "ours"
BASELINE = "python-socketio"
SERVERS = (OURS, BASELINE)
LABELS = {OURS: "replyhq_trio", BASELINE: "python-socketio"}

FULL_RATES = "40,80,120,160,240,320,400,480,560,640,800,960,1120,1280,1440,1600,1800,2000,2400"
QUICK_RATES = "80,160,320,640,960,1280,1600,2000"

TARGETS = {
    "fanout": 5.0,  # ours / python-socketio, deliveries/s at the highest passing step
    "ack": 2.5,  # ours / python-socketio, acks/s
    "memory_kib": 20.0,  # ours, KiB per idle connection
}

Json = dict[str, Any]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- settings ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    reps: int
    scenarios: tuple[str, ...]
    ack_conns: int = 100
    ack_warmup: float = 2.0
    ack_duration: float = 10.0
    fan_conns: int = 1000
    fan_rooms: int = 10
    fan_rates: str = FULL_RATES
    fan_warmup: float = 1.0
    fan_duration: float = 5.0
    fan_drain: float = 5.0
    mem_conns: int = 5000
    mem_warm: int = 20
    mem_hold: float = 15.0
    baseline_ws: str = "websockets-sansio"
    baseline_http: str = "httptools"
    profile: bool = False
    profile_rate: int | None = None
    profile_seconds: int = 15


def parse_settings(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="replyhq_trio beside python-socketio: ack round trips, room fan-out and "
        "memory per idle connection, on this machine, in one run.",
    )
    parser.add_argument("--reps", type=int, help="repetitions per scenario and server (3)")
    parser.add_argument(
        "--quick", action="store_true", help="1 rep, shorter steps: a smoke run (< 3 min)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw results here")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile ours with py-spy (a fan-out rate and the ack loop); "
        "written under .bench/runs/<timestamp>/profiles/",
    )
    parser.add_argument(
        "--profile-rate",
        type=int,
        metavar="SAY_PER_S",
        help="the fan-out rate to profile at (default: 960, or ours' best if lower)",
    )
    parser.add_argument(
        "--scenarios",
        default="ack,fanout,memory",
        help="a comma-separated subset of ack,fanout,memory",
    )
    parser.add_argument("--rates", help="the fan-out ladder, say/s, comma-separated")
    parser.add_argument(
        "--baseline-ws",
        default="websockets-sansio",
        choices=["websockets-sansio", "websockets", "wsproto"],
        help="uvicorn's WebSocket implementation for the baseline (default: websockets-sansio, "
        "the fastest measured here: acks 16.2K/s against 12.9K (websockets, deprecated in "
        "uvicorn 0.54) and 13.0K (wsproto); fan-out 240 say/s like wsproto, websockets 160)",
    )
    parser.add_argument(
        "--refresh", action="store_true", help="upgrade .bench/venv to the latest releases first"
    )
    args = parser.parse_args(argv)
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    unknown = set(scenarios) - {"ack", "fanout", "memory"}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    common: Json = {"scenarios": scenarios, "baseline_ws": args.baseline_ws}
    if args.quick:
        settings = Settings(
            reps=args.reps or 1,
            ack_warmup=1.0,
            ack_duration=4.0,
            fan_rates=args.rates or QUICK_RATES,
            fan_warmup=0.5,
            fan_duration=2.0,
            fan_drain=3.0,
            mem_hold=5.0,
            profile_seconds=8,
            **common,
        )
    else:
        settings = Settings(reps=args.reps or 3, fan_rates=args.rates or FULL_RATES, **common)
    settings = dataclasses.replace(settings, profile=args.profile, profile_rate=args.profile_rate)
    return settings, args


# --- what the run needs, under .bench/ ---------------------------------------------------------


def check_tools() -> None:
    missing = [tool for tool in ("taskset", "node", "npm") if shutil.which(tool) is None]
    if missing:
        hint = " (taskset is in util-linux)" if "taskset" in missing else ""
        raise SystemExit(f"scripts/bench: missing {', '.join(missing)}{hint}")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("scripts/bench: needs 2 cores (server on core 0, generator on core 1)")


def _run_quiet(cmd: Sequence[str | Path], *, cwd: Path | None = None) -> None:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"scripts/bench: {' '.join(map(str, cmd[:3]))} ... failed")


def ensure_baseline_venv(*, refresh: bool) -> None:
    """Create .bench/venv with the baseline's packages; upgrade them when asked or stale."""
    python = BASELINE_VENV / "bin" / "python"
    if not python.exists():
        log(f"== creating {BASELINE_VENV.relative_to(ROOT)}")
        # The project venv's interpreter: `venv` bases the new one on the same Python.
        _run_quiet([sys.executable, "-m", "venv", BASELINE_VENV])
    stamp = BASELINE_VENV / ".bench-installed"
    wanted = " ".join(BASELINE_PACKAGES)
    stale = not stamp.exists() or time.time() - stamp.stat().st_mtime > BASELINE_MAX_AGE_S
    if refresh or stale or stamp.read_text() != wanted:
        log(f"== installing the latest {', '.join(BASELINE_PACKAGES)} into .bench/venv")
        _run_quiet(
            [
                str(python),
                *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                *("--upgrade", "pip", *BASELINE_PACKAGES),
            ]
        )
        stamp.write_text(wanted)


def ensure_node_modules() -> None:
    """`npm ci` the generator's lockfile into .bench/node when it changed."""
    package = (LIB / "package.json").read_bytes()
    lock = (LIB / "package-lock.json").read_bytes()
    digest = hashlib.sha256(package + b"\0" + lock).hexdigest()
    stamp = NODE_DIR / ".bench-installed"
    installed = (NODE_DIR / "node_modules" / "ws").is_dir() and stamp.exists()
    if installed and stamp.read_text() == digest:
        return
    log("== npm ci (the load generator's ws) into .bench/node")
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    (NODE_DIR / "package.json").write_bytes(package)
    (NODE_DIR / "package-lock.json").write_bytes(lock)
    _run_quiet(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR)
    stamp.write_text(digest)


def raise_nofile_limit() -> None:
    # Inherited by the servers and the generator: 5,000 sockets on each side.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_command(server: str, port: int, settings: Settings) -> list[str]:
    if server == OURS:
        return [sys.executable, str(LIB / "app_replyhq.py"), "--port", str(port)]
    return [
        str(BASELINE_VENV / "bin" / "python"),
        "-m",
        "uvicorn",
        "app_python_socketio:app",
        "--app-dir",
        str(LIB),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        settings.baseline_http,
        "--ws",
        settings.baseline_ws,
        "--ws-per-message-deflate",
        "false",
        "--log-level",
        "warning",
        "--no-access-log",
    ]


@dataclasses.dataclass
class ServerProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_seconds: float | None = None
    exit_code: int | None = None
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL after 20 s."""
        if self.process.poll() is not None:
            self.exit_code = self.process.returncode
            return
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.process.kill()
            self.process.wait()
        self.stop_seconds = round(time.monotonic() - started, 2)
        self.exit_code = self.process.returncode


@contextlib.contextmanager
def running_server(server: str, settings: Settings, log_path: Path) -> Iterator[ServerProcess]:
    """A fresh server on a free port, pinned to core 0; stopped by PID on the way out."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *server_command(server, port, settings)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
    handle = ServerProcess(server, port, process, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{server} exited at start: see {log_path}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not listen within 30 s: see {log_path}")
            time.sleep(0.05)
        time.sleep(0.3)  # let the readiness probe's connection go away
        yield handle
    finally:
        handle.stop()


def run_loadgen(
    scenario: str,
    server: ServerProcess,
    options: Sequence[str],
    log_path: Path,
    *,
    timeout: float,
    on_window: Callable[[str], None] | None = None,
) -> Json:
    """Run the generator (pinned to core 1) and return its JSON result."""
    cmd = [
        "taskset",
        "-c",
        GENERATOR_CORE,
        "node",
        str(LOADGEN),
        scenario,
        "--url",
        f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
        "--pid",
        str(server.pid),
        "--hz",
        str(os.sysconf("SC_CLK_TCK")),
        "--node-dir",
        str(NODE_DIR),
        *options,
    ]
    process = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = process.stderr

    def pump() -> None:
        with log_path.open("w") as gen_log:
            for line in stderr:
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
        reader.join(5)
    if process.returncode != 0:
        tail = log_path.read_text()[-800:] if log_path.exists() else ""
        raise RuntimeError(f"load generator exited with {process.returncode}: {tail.strip()}")
    result: Json = json.loads(out.strip().splitlines()[-1])
    return result


def loadgen_options(scenario: str, settings: Settings) -> tuple[list[str], float]:
    """The generator's options for a scenario, and a generous timeout in seconds."""
    if scenario == "ack":
        options: dict[str, object] = {
            "conns": settings.ack_conns,
            "warmup": settings.ack_warmup,
            "duration": settings.ack_duration,
        }
        timeout = 60 + settings.ack_warmup + settings.ack_duration
    elif scenario == "fanout":
        options = {
            "conns": settings.fan_conns,
            "rooms": settings.fan_rooms,
            "rates": settings.fan_rates,
            "warmup": settings.fan_warmup,
            "duration": settings.fan_duration,
            "drain": settings.fan_drain,
        }
        steps = 2 * len(settings.fan_rates.split(","))
        timeout = 120 + steps * (settings.fan_warmup + settings.fan_duration + 20)
    else:
        options = {
            "conns": settings.mem_conns,
            "warm": settings.mem_warm,
            "hold": settings.mem_hold,
        }
        timeout = 240 + settings.mem_hold
    return [item for key, value in options.items() for item in (f"--{key}", str(value))], timeout


# --- the server's log --------------------------------------------------------------------------

#: A Python warning's two lines ("file:line: Category: message" and the source line):
#: uvicorn's DeprecationWarning of its legacy `websockets` implementation, for one.
_WARNING = re.compile(r"^\S+:\d+: \w*(Deprecation|Pending)\w*Warning: ")


def server_log_issues(path: Path) -> list[str]:
    """Lines of a server's log worth reporting (it logs at WARNING: every line counts)."""
    if not path.exists():
        return []
    lines: list[str] = []
    skip_source = False
    for line in path.read_text(errors="replace").splitlines():
        if skip_source and line.startswith(" "):
            skip_source = False
            continue
        skip_source = bool(_WARNING.match(line))
        if not skip_source and line.strip():
            lines.append(line)
    return lines


# --- one measurement ---------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    scenario: str
    server: str
    rep: int
    position: int  # 0 if this server went first in its pair
    result: Json | None = None
    error: str | None = None
    log_issues: list[str] = dataclasses.field(default_factory=list)
    stop_seconds: float | None = None
    exit_code: int | None = None
    killed: bool = False

    def to_json(self) -> Json:
        return dataclasses.asdict(self)


def measure(
    scenario: str, server: str, rep: int, *, position: int, settings: Settings, out: Path
) -> Run:
    run = Run(scenario, server, rep, position)
    stem = f"{scenario}-{server}-r{rep}"
    options, timeout = loadgen_options(scenario, settings)
    log(f"-- {scenario} | {LABELS[server]} | rep {rep}")
    try:
        with running_server(server, settings, out / f"{stem}.server.log") as handle:
            try:
                run.result = run_loadgen(
                    scenario, handle, options, out / f"{stem}.gen.log", timeout=timeout
                )
            finally:
                handle.stop()
                run.stop_seconds = handle.stop_seconds
                run.exit_code = handle.exit_code
                run.killed = handle.killed
    except (RuntimeError, OSError, ValueError) as exc:
        run.error = str(exc)
        log(f"   error: {exc}")
    run.log_issues = server_log_issues(out / f"{stem}.server.log")
    if run.result is not None:
        log("   " + one_line(run))
    if run.log_issues:
        log(f"   server log: {len(run.log_issues)} lines, first: {run.log_issues[0][:160]}")
    return run


def one_line(run: Run) -> str:
    r = run.result
    assert r is not None
    if run.scenario == "ack":
        return (
            f"{r['acks_per_s']:,.0f} acks/s, {r['us_per_ack']} µs CPU/ack, "
            f"server {r['server_cpu']:.0%}, gen {r['gen_cpu']:.0%}, p50 {r['latency']['p50_ms']} ms"
        )
    if run.scenario == "fanout":
        best = r["best"]
        if best is None:
            return f"no passing step (limit: {r['limit']})"
        return (
            f"best {best['rate']} say/s = {best['deliveries_per_s']:,.0f} deliveries/s, "
            f"p95 {best['p95_ms']} ms, {best['us_per_delivery']} µs/delivery, "
            f"server {best['server_cpu']:.0%}, gen {best['gen_cpu']:.0%}; limit: {r['limit']}"
        )
    return (
        f"{r['per_conn_kib']} KiB/conn (RSS {r['rss_base_kib']} -> {r['rss_loaded_kib']} KiB, "
        f"{r['rss_after_close_kib']} after close), {r['alive_after_hold']} alive, "
        f"{r['echoed_after_hold']} echoed, {r['connects_per_s']:,.0f} connects/s"
    )


# --- profiling ---------------------------------------------------------------------------------


def profile_ours(kind: str, settings: Settings, out: Path, rate: int) -> Json:
    """py-spy on our server at one fan-out rate or in the ack loop; returns the summary."""
    profiles = out / "profiles"
    profiles.mkdir(exist_ok=True)
    stem = f"{kind}-{rate}" if kind == "fanout" else kind
    raw = profiles / f"{stem}.raw.txt"
    seconds = settings.profile_seconds
    if kind == "fanout":
        options = ["--conns", str(settings.fan_conns), "--rooms", str(settings.fan_rooms)]
        options += ["--rates", str(rate), "--warmup", "1", "--duration", str(seconds + 3)]
        options += ["--drain", "5", "--retries", "0", "--no-stop"]
    else:
        options = ["--conns", str(settings.ack_conns), "--warmup", "1"]
        options += ["--duration", str(seconds + 3)]
    spies: list[subprocess.Popen[bytes]] = []
    log(f"-- profile | {LABELS[OURS]} | {kind}{f' at {rate} say/s' if kind == 'fanout' else ''}")
    with running_server(OURS, settings, profiles / f"{stem}.server.log") as handle:

        def attach(_line: str) -> None:
            # On the generator's core: the profiler must not take the server's.
            spies.append(
                subprocess.Popen(
                    [
                        *("taskset", "-c", GENERATOR_CORE, str(BASELINE_VENV / "bin" / "py-spy")),
                        *("record", "--nonblocking", "-r", "250", "-d", str(seconds)),
                        *("-f", "raw", "-o", str(raw), "--pid", str(handle.pid)),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=(profiles / f"{stem}.py-spy.log").open("wb"),
                )
            )

        result = run_loadgen(
            kind,
            handle,
            options,
            profiles / f"{stem}.gen.log",
            timeout=120 + seconds,
            on_window=attach,
        )
        for spy in spies:
            spy.wait(timeout=60)
    summary = summarize_profile(raw, seconds=seconds, rate=250)
    summary["load"] = result
    text = format_profile(f"{kind}{f' at {rate} say/s' if kind == 'fanout' else ''}", summary)
    (profiles / f"{stem}.summary.txt").write_text(text)
    summary["summary_path"] = str((profiles / f"{stem}.summary.txt").relative_to(ROOT))
    summary["raw_path"] = str(raw.relative_to(ROOT))
    return summary


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

#: Buckets of leaf frames (self time), first match wins: path prefix -> bucket (py-spy
#: names files relative to their sys.path entry: "trio/_core/_run.py").
_BUCKETS = (
    ("replyhq_trio/transport/_outlet.py", "socket writes (Outlet.write: os.write/writev)"),
    ("replyhq_trio/sansio/websocket", "WebSocket frames (decode/encode)"),
    ("replyhq_trio/sansio/_json.py", "JSON (orjson)"),
    ("replyhq_trio/sansio", "protocol core (Engine.IO/Socket.IO)"),
    ("replyhq_trio/session", "session (receive, timers, send_prepared)"),
    ("replyhq_trio/hub", "hub (broadcast loop, rooms, event dispatch)"),
    ("replyhq_trio/", "replyhq_trio other"),
    ("app_replyhq.py", "bench app handlers"),
    ("trio/_socket.py", "socket reads (trio socket recv)"),
    ("trio/_highlevel_socket.py", "socket reads (trio socket recv)"),
    ("trio/_core/_io_epoll.py", "epoll / I/O manager"),
    ("trio/_core/", "trio scheduler, tasks, cancel scopes"),
    ("trio/", "trio other"),
    ("outcome/", "trio scheduler, tasks, cancel scopes"),
)


def _bucket(path: str) -> str:
    for prefix, bucket in _BUCKETS:
        if _short(path).startswith(prefix):
            return bucket
    return "stdlib / other"


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarize_profile(raw: Path, *, seconds: float, rate: int) -> Json:
    """Self time by leaf frame and bucket, and inclusive time by function, from py-spy raw."""
    if not raw.exists():
        return {"error": f"no profile written ({raw.name})"}
    leaf_lines: Counter[str] = Counter()
    leaf_funcs: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if _FRAME.match(f)]
        if not frames:
            continue
        total += count
        leaf = _FRAME.match(frames[-1])
        assert leaf is not None
        where = _short(leaf["file"])
        leaf_lines[f"{leaf['func']} ({where}:{leaf['line']})"] += count
        leaf_funcs[f"{leaf['func']} ({where})"] += count
        buckets[_bucket(leaf["file"])] += count
        seen: set[str] = set()
        for frame in frames:
            match = _FRAME.match(frame)
            assert match is not None
            name = f"{match['func']} ({_short(match['file'])})"
            if name not in seen:
                seen.add(name)
                inclusive[name] += count

    def top(counter: Counter[str], n: int = 15) -> list[list[Any]]:
        return [
            [name, count, round(100 * count / total, 1)] for name, count in counter.most_common(n)
        ]

    return {
        "samples": total,
        "busy": round(total / (seconds * rate), 3),  # py-spy drops idle samples
        "self_lines": top(leaf_lines),
        "self_functions": top(leaf_funcs),
        "inclusive": top(inclusive, 25),
        "buckets": top(buckets, 20) if total else [],
    }


def format_profile(title: str, summary: Json) -> str:
    if "error" in summary:
        return f"profile {title}: {summary['error']}\n"
    lines = [
        f"py-spy profile of replyhq_trio, {title}: {summary['samples']} samples at 250 Hz, "
        f"{summary['busy']:.0%} of the possible (py-spy leaves out samples it takes for idle)",
        "",
        "self time by bucket (leaf frame; a C call is charged to the Python line making it):",
    ]
    lines += [f"  {pct:5.1f} %  {name}" for name, _count, pct in summary["buckets"]]
    lines += ["", "top 15 leaf frames (self time):"]
    lines += [f"  {pct:5.1f} %  {name}" for name, _count, pct in summary["self_lines"]]
    lines += ["", "top 15 functions (self time):"]
    lines += [f"  {pct:5.1f} %  {name}" for name, _count, pct in summary["self_functions"]]
    lines += ["", "top 25 functions (inclusive):"]
    lines += [f"  {pct:5.1f} %  {name}" for name, _count, pct in summary["inclusive"]]
    return "\n".join(lines) + "\n"


# --- the summary -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stat:
    median: float | None
    low: float | None
    high: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat:
        present = [v for v in values if v is not None]
        if not present:
            return cls(None, None, None, 0)
        return cls(statistics.median(present), min(present), max(present), len(present))


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def fmt_stat(stat: Stat, digits: int = 0, unit: str = "") -> str:
    if stat.median is None:
        return "-"
    text = f"{_fmt(stat.median, digits)}{unit}"
    if stat.n > 1:
        text += f" ({_fmt(stat.low, digits)}-{_fmt(stat.high, digits)})"
    return text


def ratio(ours: Stat, baseline: Stat) -> float | None:
    if ours.median is None or baseline.median is None or baseline.median == 0:
        return None
    return ours.median / baseline.median


def _results(runs: Sequence[Run], scenario: str, server: str) -> list[Json]:
    return [
        r.result
        for r in runs
        if r.scenario == scenario and r.server == server and r.result is not None
    ]


def _best(result: Json, key: str) -> float | None:
    best = result.get("best")
    return None if best is None else best.get(key)


def _step_at(result: Json, rate: float) -> Json | None:
    passing = [s for s in result["steps"] if s["rate"] == rate and s["pass"]]
    return passing[-1] if passing else None


def summarize(runs: Sequence[Run]) -> Json:
    """Medians (min-max) per metric and server, ratios, and the targets."""
    rows: list[Json] = []

    def row(
        name: str,
        key: str,
        values: dict[str, list[float | None]],
        *,
        digits: int = 0,
        better: str = "higher",
        note: str = "",
    ) -> None:
        stats = {server: Stat.of(values[server]) for server in SERVERS}
        rows.append(
            {
                "metric": name,
                "key": key,
                "ours": dataclasses.asdict(stats[OURS]),
                "baseline": dataclasses.asdict(stats[BASELINE]),
                "ratio": ratio(stats[OURS], stats[BASELINE]),
                "digits": digits,
                "better": better,
                "note": note,
            }
        )

    acks = {s: _results(runs, "ack", s) for s in SERVERS}
    if any(acks.values()):
        row(
            "ack round trips/s (100 conns)",
            "acks_per_s",
            {s: [r["acks_per_s"] for r in acks[s]] for s in SERVERS},
        )
        row(
            "  server CPU µs per ack",
            "us_per_ack",
            {s: [r["us_per_ack"] for r in acks[s]] for s in SERVERS},
            digits=1,
            better="lower",
        )
        row(
            "  ack latency p50, ms",
            "ack_p50",
            {s: [r["latency"]["p50_ms"] for r in acks[s]] for s in SERVERS},
            digits=2,
            better="lower",
        )
    fans = {s: _results(runs, "fanout", s) for s in SERVERS}
    common_rate: float | None = None
    if any(fans.values()):
        row(
            "fan-out: highest passing say/s",
            "fan_rate",
            {s: [_best(r, "rate") for r in fans[s]] for s in SERVERS},
        )
        row(
            "fan-out: deliveries/s there",
            "fan_deliveries",
            {s: [_best(r, "deliveries_per_s") for r in fans[s]] for s in SERVERS},
        )
        row(
            "  p95 latency there, ms",
            "fan_p95",
            {s: [_best(r, "p95_ms") for r in fans[s]] for s in SERVERS},
            digits=1,
            better="lower",
        )
        row(
            "  p99 latency there, ms",
            "fan_p99",
            {s: [_best(r, "p99_ms") for r in fans[s]] for s in SERVERS},
            digits=1,
            better="lower",
        )
        row(
            "  server CPU µs/delivery there",
            "fan_us",
            {s: [_best(r, "us_per_delivery") for r in fans[s]] for s in SERVERS},
            digits=2,
            better="lower",
        )
        row(
            "  server CPU there, % of core 0",
            "fan_cpu",
            {s: [_pct(_best(r, "server_cpu")) for r in fans[s]] for s in SERVERS},
            better="lower",
        )
        row(
            "  generator CPU there, % of core 1",
            "fan_gen_cpu",
            {s: [_pct(_best(r, "gen_cpu")) for r in fans[s]] for s in SERVERS},
            better="lower",
        )
        bests = [_best(r, "rate") for s in SERVERS for r in fans[s]]
        if bests and all(b is not None for b in bests):
            common_rate = min(b for b in bests if b is not None)
            at_common = {
                s: [(_step_at(r, common_rate) or {}).get("us_per_delivery") for r in fans[s]]
                for s in SERVERS
            }
            row(
                f"  server CPU µs/delivery at {common_rate:g} say/s (both pass)",
                "fan_us_common",
                at_common,
                digits=2,
                better="lower",
            )
    mems = {s: _results(runs, "memory", s) for s in SERVERS}
    if any(mems.values()):
        conns = max((r["conns"] for s in SERVERS for r in mems[s]), default=0)
        row(
            f"memory: KiB per idle connection at {conns:,}",
            "mem_kib",
            {s: [r["per_conn_kib"] for r in mems[s]] for s in SERVERS},
            digits=1,
            better="lower",
        )
        row(
            "  RSS not returned 3 s after closing all, KiB",
            "mem_kept",
            {s: [r["rss_after_close_kib"] - r["rss_base_kib"] for r in mems[s]] for s in SERVERS},
            better="lower",
        )
        row(
            "  connects/s (Socket.IO connected)",
            "mem_connects",
            {s: [r["connects_per_s"] for r in mems[s]] for s in SERVERS},
        )

    limits = (
        {s: Counter(r["limit"] for r in fans[s]) for s in SERVERS} if any(fans.values()) else {}
    )
    by_key = {r["key"]: r for r in rows}
    targets: list[Json] = []
    if "fan_deliveries" in by_key:
        value = by_key["fan_deliveries"]["ratio"]
        generator_bound = limits.get(OURS, Counter()).get("generator", 0) > 0
        targets.append(
            {
                "target": f"fan-out deliveries/s ≥ {TARGETS['fanout']:g}x python-socketio",
                "value": value,
                "pass": value is not None and value >= TARGETS["fanout"],
                "note": "ours is generator-bound: the ratio is a lower bound"
                if generator_bound
                else "",
            }
        )
    if "acks_per_s" in by_key:
        value = by_key["acks_per_s"]["ratio"]
        targets.append(
            {
                "target": f"ack round trips/s ≥ {TARGETS['ack']:g}x python-socketio",
                "value": value,
                "pass": value is not None and value >= TARGETS["ack"],
                "note": "",
            }
        )
    if "mem_kib" in by_key:
        value = by_key["mem_kib"]["ours"]["median"]
        targets.append(
            {
                "target": f"≤ {TARGETS['memory_kib']:g} KiB per idle connection (ours)",
                "value": value,
                "pass": value is not None and value <= TARGETS["memory_kib"],
                "note": "",
            }
        )
    return {
        "rows": rows,
        "targets": targets,
        "fanout_limits": {s: dict(c) for s, c in limits.items()},
        "common_rate": common_rate,
    }


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def format_table(summary: Json) -> str:
    header = ["scenario", LABELS[OURS], LABELS[BASELINE], "ratio (ours / p-sio)"]
    body: list[list[str]] = []
    for r in summary["rows"]:
        ours = Stat(**r["ours"])
        base = Stat(**r["baseline"])
        value = r["ratio"]
        text = "-" if value is None else f"{value:.2f}x"
        if value is not None and r["better"] == "lower":
            text += " (lower is better)"
        body.append([r["metric"], fmt_stat(ours, r["digits"]), fmt_stat(base, r["digits"]), text])
    limits = summary.get("fanout_limits") or {}
    if limits:
        body.append(
            ["fan-out: what stopped the ladder"]
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
    lines += ["", "targets:"]
    for t in summary["targets"]:
        value = t["value"]
        shown = (
            "-"
            if value is None
            else (f"{value:.2f}x" if "x" in t["target"] else f"{value:.1f} KiB")
        )
        verdict = "PASS" if t["pass"] else "FAIL"
        note = f"  ({t['note']})" if t["note"] else ""
        lines.append(f"  {verdict}  {t['target']}: {shown}{note}")
    return "\n".join(lines)


# --- the host ----------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def host_facts(settings: Settings) -> Json:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    baseline_versions: Json = {}
    with contextlib.suppress(OSError, subprocess.CalledProcessError, json.JSONDecodeError):
        code = (
            "import importlib.metadata as m, json, sys\n"
            f"names = {list(BASELINE_PACKAGES)!r} + ['python-engineio', 'simple-websocket']\n"
            "print(json.dumps({'python': sys.version.split()[0], "
            "**{n: m.version(n) for n in names}}))"
        )
        baseline_versions = json.loads(
            subprocess.run(
                [str(BASELINE_VENV / "bin" / "python"), "-c", code],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    ws_version = "?"
    with contextlib.suppress(OSError, json.JSONDecodeError):
        ws_version = json.loads((NODE_DIR / "node_modules/ws/package.json").read_text())["version"]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "replyhq_trio"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "node": node.stdout.strip(),
        "ws": ws_version,
        "replyhq_trio": {
            "commit": git.stdout.strip(),
            "uncommitted_changes": bool(dirty.stdout.strip()),
            "trio": _version("trio"),
            "orjson": _version("orjson"),
            "wsproto": _version("wsproto"),
            "h11": _version("h11"),
        },
        "baseline": baseline_versions,
        "baseline_server": f"uvicorn --loop uvloop --http {settings.baseline_http} "
        f"--ws {settings.baseline_ws}",
    }


def format_host(host: Json) -> str:
    ours = host["replyhq_trio"]
    base = host["baseline"]
    dirty = ", with uncommitted changes in replyhq_trio/" if ours["uncommitted_changes"] else ""
    return "\n".join(
        [
            f"host: {host['cpu']}, {host['cores']} cores, Linux {host['kernel']}, "
            f"load at start {host['loadavg_at_start'][0]:.2f}; server on core {SERVER_CORE}, "
            f"generator on core {GENERATOR_CORE}",
            f"ours: replyhq_trio {ours['commit']}{dirty}; Python {host['python']}, "
            f"trio {ours['trio']}, orjson {ours['orjson']}, wsproto {ours['wsproto']}, "
            f"h11 {ours['h11']}",
            f"baseline: python-socketio {base.get('python-socketio', '?')}, python-engineio "
            f"{base.get('python-engineio', '?')}, uvicorn {base.get('uvicorn', '?')}, uvloop "
            f"{base.get('uvloop', '?')}, httptools {base.get('httptools', '?')}, websockets "
            f"{base.get('websockets', '?')}, wsproto {base.get('wsproto', '?')} "
            f"(Python {base.get('python', '?')}; {host['baseline_server']})",
            f"generator: Node {host['node']}, ws {host['ws']}; py-spy {base.get('py-spy', '?')}",
        ]
    )


# --- main --------------------------------------------------------------------------------------


def schedule(settings: Settings) -> list[tuple[str, int, tuple[str, str]]]:
    """(scenario, rep, servers in order): the first server alternates from pair to pair."""
    plan = []
    for s_index, scenario in enumerate(settings.scenarios):
        for rep in range(1, settings.reps + 1):
            first_ours = (s_index + rep) % 2 == 1
            plan.append((scenario, rep, (OURS, BASELINE) if first_ours else (BASELINE, OURS)))
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse_settings(argv)
    check_tools()
    # Keep this process off the server's core; the children set their own affinity.
    os.sched_setaffinity(0, {int(GENERATOR_CORE)})
    raise_nofile_limit()
    BENCH.mkdir(exist_ok=True)
    ensure_baseline_venv(refresh=args.refresh)
    ensure_node_modules()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = BENCH / "runs" / stamp
    out.mkdir(parents=True)
    host = host_facts(settings)
    log(format_host(host))
    log(f"logs: {out.relative_to(ROOT)}")
    started = time.monotonic()
    runs: list[Run] = []
    for scenario, rep, order in schedule(settings):
        for position, server in enumerate(order):
            runs.append(
                measure(scenario, server, rep, position=position, settings=settings, out=out)
            )
    summary = summarize(runs)
    profiles: Json = {}
    if settings.profile:
        rate = settings.profile_rate or _default_profile_rate(runs)
        profiles["fanout"] = profile_ours("fanout", settings, out, rate)
        profiles["ack"] = profile_ours("ack", settings, out, rate)
    elapsed = time.monotonic() - started
    table = format_table(summary)
    issues = [
        f"{r.scenario} {LABELS[r.server]} rep {r.rep}: "
        + "; ".join(
            part
            for part in (
                f"error: {r.error}" if r.error else "",
                f"{len(r.log_issues)} server log lines, e.g. {r.log_issues[0][:200]!r}"
                if r.log_issues
                else "",
                "SIGKILLed at stop" if r.killed else "",
                _disconnects(r),
                _foreign(r),
            )
            if part
        )
        for r in runs
        if r.error or r.log_issues or r.killed or _disconnects(r) or _foreign(r)
    ]
    report = [
        "",
        f"== scripts/bench: {settings.reps} rep(s), medians (min-max); {elapsed / 60:.1f} min",
        format_host(host),
        "",
        table,
    ]
    if issues:
        report += ["", "misbehaviour and noise seen:", *[f"  {line}" for line in issues]]
    for kind, profile in profiles.items():
        report += ["", format_profile(kind, profile).rstrip()]
        if "summary_path" in profile:
            report.append(f"  (full summary: {profile['summary_path']})")
    print("\n".join(report))
    document = {
        "when": stamp,
        "elapsed_s": round(elapsed, 1),
        "settings": dataclasses.asdict(settings),
        "host": host,
        "summary": summary,
        "runs": [r.to_json() for r in runs],
        "profiles": profiles,
        "logs": str(out.relative_to(ROOT)),
    }
    (out / "results.json").write_text(json.dumps(document, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=1))
    return 0


def _windows(run: Run) -> list[Json]:
    """The measured windows of a run (one for ack, one per ladder step)."""
    r = run.result
    if r is None:
        return []
    if run.scenario == "fanout":
        return list(r["steps"])
    return [r] if "cores" in r else []


def _foreign(run: Run) -> str:
    """Process time on our two cores that was neither the server's nor the generator's."""
    worst = {"0": 0.0, "1": 0.0}
    for window in _windows(run):
        for core, value in list(worst.items()):
            other = window.get("cores", {}).get(f"core{core}", {}).get("other")
            if other is not None:
                worst[core] = max(value, other)
    noisy = [f"{value:.0%} on core {core}" for core, value in worst.items() if value >= 0.05]
    if not noisy:
        return ""
    return "another workload took up to " + " and ".join(noisy) + " of a window"


def _disconnects(run: Run) -> str:
    r = run.result
    if r is None:
        return ""
    if run.scenario == "fanout":
        count = sum(step["disconnects"] for step in r["steps"])
    else:
        count = r.get("disconnects", 0)
    return f"{count} client disconnects" if count else ""


def _default_profile_rate(runs: Sequence[Run]) -> int:
    bests = [
        r.result["best"]["rate"]
        for r in runs
        if r.scenario == "fanout" and r.server == OURS and r.result and r.result["best"]
    ]
    return int(min(960, statistics.median(bests))) if bests else 960


if __name__ == "__main__":
    sys.exit(main())
