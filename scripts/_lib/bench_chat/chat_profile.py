"""What a py-spy profile of the chat server says: time by thread, by kind of work, by function.

Reads py-spy's ``raw`` output recorded with ``--threads`` (one line per distinct stack:
``thread (TID): NAME;frame;frame;... COUNT``, a frame being ``func (file:line)``). py-spy
leaves out samples of a thread it sees idle (waiting in epoll, on a lock), so
``samples / (seconds * rate)`` is the share of the wall-clock time a thread was seen
working; a thread blocked in a disk write (SQLite's fsync at COMMIT) counts as working, so
this is not CPU time (``/proc`` gives that). A call into C (sqlite3, orjson, jsonschema-rs,
a socket call) is charged to the Python line making it.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["format_profile", "summarize_profile"]

Json = dict[str, Any]

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\w+)\)(?::\s*(?P<name>.*))?$")

#: The kind of work a leaf frame does, by the file it is in; first match wins. py-spy names
#: files relative to their sys.path entry ("trio/_core/_run.py").
BUCKETS = (
    ("replyhq_trio/backends/sqlite.py", "SQLite store (statements, COMMIT + fsync)"),
    ("replyhq_trio/backends/postgres.py", "PostgreSQL store (asyncpg calls)"),
    ("replyhq_trio/backends/_bridge.py", "asyncio bridge (trio-asyncio)"),
    ("replyhq_trio/backends", "store, other"),
    ("asyncpg/", "PostgreSQL store (asyncpg calls)"),
    ("trio_asyncio/", "asyncio bridge (trio-asyncio)"),
    ("asyncio/", "asyncio bridge (trio-asyncio)"),
    ("replyhq_trio/chat/_contract.py", "schema validation (jsonschema-rs)"),
    ("jsonschema_rs", "schema validation (jsonschema-rs)"),
    ("replyhq_trio/chat", "chat handlers (payloads, timestamps)"),
    ("replyhq_trio/transport/_outlet.py", "socket writes (Outlet.write: send/writev)"),
    ("replyhq_trio/transport", "transport, other"),
    ("replyhq_trio/sansio/websocket", "WebSocket frames (decode/encode)"),
    ("replyhq_trio/sansio/_json.py", "JSON (orjson)"),
    ("replyhq_trio/sansio", "protocol core (Engine.IO/Socket.IO)"),
    ("replyhq_trio/session", "session (receive, send_prepared)"),
    ("replyhq_trio/hub", "hub (dispatch, rooms, broadcast loop)"),
    ("replyhq_trio/", "replyhq_trio, other"),
    ("trio/_threads.py", "thread hand-off (trio.to_thread)"),
    ("trio/_core/_thread_cache.py", "thread hand-off (trio.to_thread)"),
    ("trio/_socket.py", "socket reads (trio socket recv)"),
    ("trio/_core/_io_epoll.py", "epoll / I/O manager"),
    ("trio/", "trio scheduler, tasks, cancel scopes"),
    ("outcome/", "trio scheduler, tasks, cancel scopes"),
    ("threading.py", "thread hand-off (trio.to_thread)"),
    ("queue.py", "thread hand-off (trio.to_thread)"),
    ("datetime", "chat handlers (payloads, timestamps)"),
)


def short_path(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            return path.split("/", 1)[1] if marker == "lib/python3" and "/" in path else path
    return path


#: Inclusive time is listed for the application's own functions and the store's libraries,
#: not for the frames every sample passes through (runpy, the CLI, trio.run, threads).
_INCLUSIVE = ("replyhq_trio/", "asyncpg/", "trio_asyncio/")
_NOT_INCLUSIVE = ("replyhq_trio/__main__.py", "replyhq_trio/cli.py")


def bucket_of(path: str) -> str:
    where = short_path(path)
    for prefix, bucket in BUCKETS:
        if where.startswith(prefix):
            return bucket
    return "stdlib / other"


def summarize_profile(raw: Path, *, seconds: float, rate: int, main_tid: int) -> Json:
    """Working share by thread, self time by kind of work and function, inclusive time."""
    if not raw.exists():
        return {"error": f"no profile written ({raw})"}
    threads: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    main_buckets: Counter[str] = Counter()
    self_funcs: Counter[str] = Counter()
    self_lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        is_main = False
        head = _THREAD.match(parts[0])
        if head is not None:
            is_main = head["tid"].isdigit() and int(head["tid"]) == main_tid
            parts = parts[1:]
        frames = [m for m in map(_FRAME.match, parts) if m is not None]
        if not frames:
            continue
        total += count
        threads["main thread (Trio)" if is_main else "worker threads"] += count
        leaf = frames[-1]
        where = short_path(leaf["file"])
        bucket = bucket_of(leaf["file"])
        buckets[bucket] += count
        if is_main:
            main_buckets[bucket] += count
        self_funcs[f"{leaf['func']} ({where})"] += count
        self_lines[f"{leaf['func']} ({where}:{leaf['line']})"] += count
        seen: set[str] = set()
        for frame in frames:
            where = short_path(frame["file"])
            if not where.startswith(_INCLUSIVE) or where.startswith(_NOT_INCLUSIVE):
                continue
            name = f"{frame['func']} ({where})"
            if name not in seen:
                seen.add(name)
                inclusive[name] += count
    possible = seconds * rate

    def top(counter: Counter[str], n: int) -> list[list[Any]]:
        return [
            [name, count, round(100 * count / total, 1), round(count / possible, 3)]
            for name, count in counter.most_common(n)
        ]

    return {
        "samples": total,
        "seconds": seconds,
        "rate_hz": rate,
        "busy_wall": round(total / possible, 3),
        "threads": top(threads, 5),
        "buckets": top(buckets, 20),
        "buckets_main_thread": top(main_buckets, 12),
        "self_functions": top(self_funcs, 15),
        "self_lines": top(self_lines, 12),
        "inclusive": top(inclusive, 30),
    }


def format_profile(title: str, summary: Json) -> str:
    if "error" in summary:
        return f"profile {title}: {summary['error']}\n"
    lines = [
        f"py-spy profile of the server, {title}: {summary['samples']} samples at "
        f"{summary['rate_hz']} Hz over {summary['seconds']:g} s: threads seen working "
        f"{summary['busy_wall']:.2f} of the wall-clock time (idle samples are left out; a "
        "thread in fsync counts as working). % = share of the samples; 'wall' = samples / "
        "(seconds x rate)",
    ]
    if "py_spy_errors" in summary:
        lines.append(
            f"(py-spy: {summary['py_spy_samples']} samples, {summary['py_spy_errors']} errors)"
        )
    lines += ["", "by thread:"]
    row = "  {2:5.1f} %  {3:4.2f} wall  {0}"
    lines += [row.format(*item) for item in summary["threads"]]
    lines += ["", "self time by kind of work (leaf frame), all threads:"]
    lines += [row.format(*item) for item in summary["buckets"]]
    lines += ["", "self time by kind of work, main (Trio) thread only:"]
    lines += [row.format(*item) for item in summary["buckets_main_thread"]]
    lines += ["", "top functions (self time):"]
    lines += [row.format(*item) for item in summary["self_functions"]]
    lines += ["", "top lines (self time):"]
    lines += [row.format(*item) for item in summary["self_lines"]]
    lines += ["", "top functions of replyhq_trio and the store's libraries (inclusive):"]
    lines += [row.format(*item) for item in summary["inclusive"]]
    return "\n".join(lines) + "\n"
