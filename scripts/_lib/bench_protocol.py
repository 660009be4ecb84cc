"""Protocol codec throughput: our sans-IO core next to python-socketio / python-engineio.

Run through ``scripts/bench-protocol``. One process, one run: every case is first
checked for equal results on both sides (so a broken path is never timed), then
each side is calibrated so that one measurement takes ``--target`` seconds, and
measured ``--rounds`` times, alternating which side goes first. The table shows
the median of the rounds; ratio = ours ops/s / theirs ops/s (>1: we are faster).

The garbage collector stays enabled, as in the server (it is collected once
before each measurement so that every measurement starts from the same state).
"""

from __future__ import annotations

import argparse
import base64
import gc
import importlib.metadata
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import engineio.packet
import engineio.payload
import socketio.packet
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from replyhq_trio.sansio import (
    ConnectAccepted,
    Emit,
    ProtocolConfig,
    ServerConnection,
    Transport,
    decode_payload,
    encode_payload,
    prepare_emit,
)
from replyhq_trio.sansio import engineio as our_eio
from replyhq_trio.sansio import socketio as our_sio
from replyhq_trio.sansio.websocket import FrameDecoder, Role

Op = Callable[[], object]

# --- the inputs ---------------------------------------------------------------------

NAMESPACE = "/client"
EVENT_NAME = "message:new"
MESSAGE_PAYLOAD: dict[str, Any] = {
    "id": "01JDB2M7Q8R9S0T1V2W3X4Y5Z6",
    "local_id": "l-1",
    "conversation_id": "c-1",
    "body": "Hello, how can I help you today?",
    "sender": "agent",
    "created_at": "2026-11-22T00:00:00.000Z",
    "status": "sent",
}
#: Case 1: the Socket.IO text of an event, without the Engine.IO "4".
EVENT_TEXT = (
    '2/client,["message:new",{"id":"01JDB2M7Q8R9S0T1V2W3X4Y5Z6","local_id":"l-1",'
    '"conversation_id":"c-1","body":"Hello, how can I help you today?","sender":"agent",'
    '"created_at":"2026-11-22T00:00:00.000Z","status":"sent"}]'
)
#: The same event as an Engine.IO message frame.
EVENT_FRAME = "4" + EVENT_TEXT

BLOB_4K = bytes(range(256)) * 16
BLOB_64 = bytes(range(64, 128))
#: Case 2: an event with two attachments.
BINARY_DATA: list[Any] = ["upload", {"name": "a.png", "data": BLOB_4K}, BLOB_64]
BINARY_TEXT = (
    '52-/client,["upload",{"name":"a.png","data":{"_placeholder":true,"num":0}},'
    '{"_placeholder":true,"num":1}]'
)

#: Case 3: a long-polling body of 10 packets (8 events, a pong, a base64 binary message).
PAYLOAD_FRAMES: list[str | bytes] = [EVENT_FRAME] * 4 + ["3"] + [EVENT_FRAME] * 4 + [BLOB_4K]
#: The same with the 64-byte blob: less base64 work, common to both sides.
PAYLOAD_FRAMES_SMALL: list[str | bytes] = [*PAYLOAD_FRAMES[:-1], BLOB_64]


def _body(frames: Sequence[str | bytes]) -> str:
    return "\x1e".join(
        f if isinstance(f, str) else "b" + base64.b64encode(f).decode() for f in frames
    )


PAYLOAD_BODY = _body(PAYLOAD_FRAMES)
PAYLOAD_BODY_SMALL = _body(PAYLOAD_FRAMES_SMALL)

WS_FRAMES = 100  # case 4: client text frames (masked) in one read


# --- cases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    ours: Op
    theirs: Op | None
    note: str = ""


def _check(condition: bool, what: str) -> None:
    # Not `assert`: the checks must also run under `python -O`.
    if not condition:
        raise SystemExit(f"correctness check failed: {what}")


def case_text_event(config: ProtocolConfig) -> list[Case]:
    sio_packet = socketio.packet

    def ours_decode() -> our_sio.SocketPacket:
        return our_sio.decode_packet(EVENT_TEXT, config, 0)

    def theirs_decode() -> Any:
        return sio_packet.Packet(encoded_packet=EVENT_TEXT)

    data = [EVENT_NAME, MESSAGE_PAYLOAD]

    def ours_encode() -> list[str | bytes]:
        return our_sio.encode_packet(
            our_sio.SocketPacket(
                type=our_sio.SocketPacketType.EVENT, namespace=NAMESPACE, data=data
            )
        )

    def theirs_encode() -> Any:
        return sio_packet.Packet(sio_packet.EVENT, data=data, namespace=NAMESPACE).encode()

    def ours_round_trip() -> list[str | bytes]:
        return our_sio.encode_packet(our_sio.decode_packet(EVENT_TEXT, config, 0))

    def theirs_round_trip() -> Any:
        return sio_packet.Packet(encoded_packet=EVENT_TEXT).encode()

    mine, theirs = ours_decode(), theirs_decode()
    _check(mine.type == theirs.packet_type == sio_packet.EVENT, "text event: type")
    _check(mine.namespace == theirs.namespace == NAMESPACE, "text event: namespace")
    _check(mine.id is None and theirs.id is None, "text event: id")
    _check(mine.data == theirs.data == data, "text event: data")
    _check(ours_encode() == [EVENT_TEXT] and theirs_encode() == EVENT_TEXT, "text event: encode")
    _check(
        ours_round_trip() == [EVENT_TEXT] and theirs_round_trip() == EVENT_TEXT,
        "text event: round trip",
    )
    group = "1. text event (Socket.IO)"
    return [
        Case(group, "decode", ours_decode, theirs_decode),
        Case(group, "encode", ours_encode, theirs_encode),
        Case(group, "round trip (decode+encode)", ours_round_trip, theirs_round_trip),
    ]


def case_binary_event(config: ProtocolConfig) -> list[Case]:
    sio_packet = socketio.packet
    attachments = [BLOB_4K, BLOB_64]

    def ours_encode() -> list[str | bytes]:
        return our_sio.encode_packet(
            our_sio.SocketPacket(
                type=our_sio.SocketPacketType.EVENT, namespace=NAMESPACE, data=BINARY_DATA
            )
        )

    def theirs_encode() -> Any:
        return sio_packet.Packet(sio_packet.EVENT, data=BINARY_DATA, namespace=NAMESPACE).encode()

    def ours_decode() -> Any:
        packet = our_sio.decode_packet(BINARY_TEXT, config, 0)
        return our_sio.reconstruct_binary(packet.data, attachments)

    def theirs_decode() -> Any:
        packet = sio_packet.Packet(encoded_packet=BINARY_TEXT)
        for attachment in attachments:
            packet.add_attachment(attachment)
        return packet.data

    expected = [BINARY_TEXT, BLOB_4K, BLOB_64]
    _check(ours_encode() == expected, "binary event: our encoding")
    _check(theirs_encode() == expected, "binary event: their encoding")
    _check(ours_decode() == theirs_decode() == BINARY_DATA, "binary event: decoded data")
    packet = our_sio.decode_packet(BINARY_TEXT, config, 0)
    _check(
        packet.type is our_sio.SocketPacketType.BINARY_EVENT and packet.attachments == 2,
        "binary event: our header",
    )
    group = "2. binary event, 4 KiB + 64 B attachments"
    return [
        Case(group, "encode (placeholders + attachments)", ours_encode, theirs_encode),
        Case(group, "decode (text + 2 attachments)", ours_decode, theirs_decode),
    ]


def case_payload(config: ProtocolConfig) -> list[Case]:
    eio_packet = engineio.packet
    eio_payload = engineio.payload
    max_packets = config.max_payload_packets
    max_payload = config.max_payload

    def decoders(body: str) -> tuple[Callable[[], list[our_eio.EnginePacket]], Callable[[], Any]]:
        def ours() -> list[our_eio.EnginePacket]:
            frames = decode_payload(body, max_packets=max_packets, max_payload=max_payload)
            return [our_eio.decode_packet(frame) for frame in frames]

        def theirs() -> Any:
            return eio_payload.Payload(encoded_payload=body)

        return ours, theirs

    ours_decode, theirs_decode = decoders(PAYLOAD_BODY)
    ours_decode_small, theirs_decode_small = decoders(PAYLOAD_BODY_SMALL)

    frames = list(PAYLOAD_FRAMES)

    def ours_encode_frames() -> str:
        return encode_payload(frames)

    # python-engineio's server queues Packet objects and encodes them when a poll
    # arrives. Packet.encode() caches its result, so the cache is cleared to time
    # the encoding rather than a cache hit.
    specs: list[tuple[int, str | bytes | None]] = [
        (eio_packet.PONG, None)
        if frame == "3"
        else (eio_packet.MESSAGE, frame[1:] if isinstance(frame, str) else frame)
        for frame in PAYLOAD_FRAMES
    ]
    queued = [eio_packet.Packet(kind, data=data) for kind, data in specs]

    def theirs_encode_queued() -> Any:
        for pkt in queued:
            pkt.encode_cache = None
        return eio_payload.Payload(packets=queued).encode()

    our_specs = [
        (our_eio.EnginePacketType(kind), "" if data is None else data) for kind, data in specs
    ]

    def ours_encode_built() -> str:
        return encode_payload(
            [
                our_eio.encode_packet(our_eio.EnginePacket(type=kind, data=data))
                for kind, data in our_specs
            ]
        )

    def theirs_encode_built() -> Any:
        return eio_payload.Payload(
            packets=[eio_packet.Packet(kind, data=data) for kind, data in specs]
        ).encode()

    for ours_fn, theirs_fn, blob in (
        (ours_decode, theirs_decode, BLOB_4K),
        (ours_decode_small, theirs_decode_small, BLOB_64),
    ):
        mine = [(int(p.type), p.data) for p in ours_fn()]
        theirs = [(p.packet_type, p.data) for p in theirs_fn().packets]
        _check(len(mine) == 10 and mine == theirs, "payload: decoded packets")
        _check(mine[0] == (4, EVENT_TEXT) and mine[-1] == (4, blob), "payload: contents")
    for name, fn in (
        ("ours, queued", ours_encode_frames),
        ("theirs, queued", theirs_encode_queued),
        ("ours, built", ours_encode_built),
        ("theirs, built", theirs_encode_built),
    ):
        _check(fn() == PAYLOAD_BODY, f"payload: encoding ({name})")
    group = "3. long-polling payload, 10 packets"
    return [
        Case(
            group,
            f"decode, 4 KiB binary ({len(PAYLOAD_BODY)} chars)",
            ours_decode,
            theirs_decode,
            "decode = split the body + decode 10 Engine.IO packets",
        ),
        Case(
            group,
            f"decode, 64 B binary ({len(PAYLOAD_BODY_SMALL)} chars)",
            ours_decode_small,
            theirs_decode_small,
        ),
        Case(
            group,
            "encode (queued frames/Packets -> body)",
            ours_encode_frames,
            theirs_encode_queued,
            "theirs: Packet.encode cache cleared each op",
        ),
        Case(
            group,
            "encode (build packets -> body)",
            ours_encode_built,
            theirs_encode_built,
            "both construct the 10 packet objects per op",
        ),
    ]


def case_extras(config: ProtocolConfig) -> list[Case]:
    eio_packet = engineio.packet
    sio_packet = socketio.packet

    conn = ServerConnection(sid="bench", transport=Transport.WEBSOCKET, config=config, now=0.0)
    conn.frames_to_send()  # the open packet
    conn.receive_frame("40/client,{}", 0.0)
    conn.send(ConnectAccepted(namespace=NAMESPACE, sid="socket-1"))
    _check(conn.is_connected(NAMESPACE), "connection: /client connected")
    receive = conn.receive_frame

    def ours_receive() -> object:
        return receive(EVENT_FRAME, 1.0)

    def theirs_receive() -> Any:
        # What python-engineio + python-socketio decode for one WebSocket message:
        # the Engine.IO packet, then the Socket.IO packet in its data. No session or
        # namespace state (theirs keeps that in the server object).
        return sio_packet.Packet(encoded_packet=eio_packet.Packet(encoded_packet=EVENT_FRAME).data)

    event = ours_receive()
    _check(
        event == Emit(namespace=NAMESPACE, name=EVENT_NAME, args=(MESSAGE_PAYLOAD,)),
        "connection: Emit",
    )
    their_packet = theirs_receive()
    _check(
        their_packet.namespace == NAMESPACE and their_packet.data == [EVENT_NAME, MESSAGE_PAYLOAD],
        "connection: their decode",
    )

    args = (MESSAGE_PAYLOAD,)

    def ours_prepare() -> object:
        return prepare_emit(NAMESPACE, EVENT_NAME, args)

    prepared = prepare_emit(NAMESPACE, EVENT_NAME, args)
    _check(prepared.frames == (EVENT_FRAME,), "prepare_emit: frames")
    encoded = EVENT_FRAME.encode()
    _check(
        prepared.websocket_bytes
        == bytes((0x81, 126, len(encoded) >> 8, len(encoded) & 0xFF)) + encoded,
        "prepare_emit: websocket bytes",
    )

    # The masked bytes come from wsproto's client side, so neither decoder reads
    # bytes produced by its own encoder.
    client = Connection(ConnectionType.CLIENT)
    ws_bytes = b"".join(client.send(TextMessage(data=EVENT_FRAME)) for _ in range(WS_FRAMES))
    decoder = FrameDecoder(role=Role.SERVER, max_message_size=config.max_payload)
    server = Connection(ConnectionType.SERVER)

    def ours_ws() -> int:
        decoder.receive_data(ws_bytes)
        count = 0
        for item in decoder.events():
            if isinstance(item, str):
                count += 1
        return count

    def theirs_ws() -> int:
        server.receive_data(ws_bytes)
        count = 0
        for item in server.events():
            if isinstance(item, TextMessage):
                count += 1
        return count

    check_decoder = FrameDecoder(role=Role.SERVER)
    check_decoder.receive_data(ws_bytes)
    ours_messages = list(check_decoder.events())
    check_server = Connection(ConnectionType.SERVER)
    check_server.receive_data(ws_bytes)
    theirs_messages = [
        e.data for e in check_server.events() if isinstance(e, TextMessage) and e.message_finished
    ]
    _check(ours_messages == theirs_messages == [EVENT_FRAME] * WS_FRAMES, "websocket: messages")
    _check(ours_ws() == theirs_ws() == WS_FRAMES, "websocket: counts")

    group = "4. extra"
    return [
        Case(
            group,
            "ServerConnection.receive_frame -> Emit",
            ours_receive,
            theirs_receive,
            "theirs: eio Packet + sio Packet decode only, no session/namespace state",
        ),
        Case(
            group,
            "prepare_emit (broadcast incl. WS frame)",
            ours_prepare,
            None,
            "no equivalent in theirs (no server-side framing of its own)",
        ),
        Case(
            group,
            f"WebSocket decode, {WS_FRAMES} masked frames",
            ours_ws,
            theirs_ws,
            "ours: FrameDecoder; theirs: wsproto Connection(SERVER); one op = one buffer",
        ),
    ]


# --- measuring ----------------------------------------------------------------------


@dataclass
class Side:
    reps: int = 0
    runs_ns: list[int] = field(default_factory=list)  # total time of each measurement

    @property
    def median_ns_per_op(self) -> float:
        return statistics.median(self.runs_ns) / self.reps

    @property
    def spread(self) -> float:
        # (slowest - fastest) / median, over the rounds
        return (max(self.runs_ns) - min(self.runs_ns)) / statistics.median(self.runs_ns)

    def as_dict(self) -> dict[str, Any]:
        ns = self.median_ns_per_op
        return {
            "reps": self.reps,
            "runs_ns": self.runs_ns,
            "median_ns_per_op": ns,
            "ops_per_s": 1e9 / ns,
            "us_per_op": ns / 1000,
            "spread": self.spread,
        }


@dataclass
class Result:
    case: Case
    ours: Side
    theirs: Side | None

    @property
    def ratio(self) -> float | None:
        if self.theirs is None:
            return None
        return self.theirs.median_ns_per_op / self.ours.median_ns_per_op


def _run(fn: Op, reps: int) -> int:
    gc.collect()
    loop = itertools.repeat(None, reps)
    start = time.perf_counter_ns()
    for _ in loop:
        fn()
    return time.perf_counter_ns() - start


def _calibrate(fn: Op, target_ns: int) -> int:
    """Warm up, then the repetitions that make one measurement last ``target_ns``."""
    reps = 1
    while True:
        elapsed = _run(fn, reps)
        if elapsed >= target_ns // 8:
            break
        reps *= 2
    return max(1, round(reps * target_ns / elapsed))


def measure(case: Case, *, target_ns: int, rounds: int) -> Result:
    ours = Side(reps=_calibrate(case.ours, target_ns))
    theirs = None if case.theirs is None else Side(reps=_calibrate(case.theirs, target_ns))
    for round_index in range(rounds):
        order: list[tuple[Op, Side]] = [(case.ours, ours)]
        if case.theirs is not None and theirs is not None:
            pair = (case.theirs, theirs)
            if round_index % 2:
                order.insert(0, pair)
            else:
                order.append(pair)
        for fn, side in order:
            side.runs_ns.append(_run(fn, side.reps))
    return Result(case, ours, theirs)


# --- reporting ----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(pinned: int | None, args: argparse.Namespace) -> dict[str, Any]:
    affinity: list[int] | None = None
    if hasattr(os, "sched_getaffinity"):
        affinity = sorted(os.sched_getaffinity(0))
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus_allowed": affinity,
        "pinned_cpu": pinned,
        "gc": "enabled (gc.collect() before each measurement)",
        "packages": {
            name: _version(name)
            for name in ("replyhq-trio", "python-socketio", "python-engineio", "orjson", "wsproto")
        },
        "target_s": args.target,
        "rounds": args.rounds,
    }


def _fmt_ops(ops: float) -> str:
    if ops >= 1e6:
        return f"{ops / 1e6:.2f}M"
    if ops >= 1e3:
        return f"{ops / 1e3:.1f}k"
    return f"{ops:.0f}"


def _fmt_side(side: Side | None) -> tuple[str, str, str]:
    if side is None:
        return "-", "-", ""
    ns = side.median_ns_per_op
    return _fmt_ops(1e9 / ns), f"{ns / 1000:.2f}", f"±{side.spread * 50:.0f}%"


def print_table(results: Sequence[Result]) -> None:
    header = (
        f"{'case':<44} {'ours op/s':>10} {'µs/op':>8} {'':>4}  "
        f"{'theirs op/s':>11} {'µs/op':>8} {'':>4}  {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    group = ""
    for result in results:
        if result.case.group != group:
            group = result.case.group
            print(group)
        o_ops, o_us, o_sp = _fmt_side(result.ours)
        t_ops, t_us, t_sp = _fmt_side(result.theirs)
        ratio = result.ratio
        ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
        flag = " <" if ratio is not None and ratio < 1.0 else ""
        print(
            f"  {result.case.name:<42} {o_ops:>10} {o_us:>8} {o_sp:>4}  "
            f"{t_ops:>11} {t_us:>8} {t_sp:>4}  {ratio_text:>6}{flag}"
        )
    notes = [(f"{r.case.group[:2]} {r.case.name}", r.case.note) for r in results if r.case.note]
    if notes:
        print()
        for name, note in notes:
            print(f"  note [{name}]: {note}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench-protocol",
        description="Decode/encode throughput of our protocol core vs python-socketio/engineio.",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (less precise)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--cpu", type=int, metavar="N", help="pin the process to CPU N")
    parser.add_argument(
        "--target", type=float, help="seconds per measurement (default 0.4, --quick 0.05)"
    )
    parser.add_argument("--rounds", type=int, help="measurements per side (default 5, --quick 3)")
    parser.add_argument("-k", dest="only", metavar="TEXT", help="only cases whose name has TEXT")
    args = parser.parse_args(argv)
    if args.target is None:
        args.target = 0.05 if args.quick else 0.4
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5

    pinned: int | None = None
    if args.cpu is not None:
        if not hasattr(os, "sched_setaffinity"):
            parser.error("--cpu: os.sched_setaffinity is not available on this platform")
        os.sched_setaffinity(0, {args.cpu})
        pinned = args.cpu

    env = environment(pinned, args)
    print(f"Python {env['python']} ({env['implementation']}) on {env['platform']}")
    print(f"CPU: {env['cpu']}; allowed CPUs {env['cpus_allowed']}; pinned: {pinned}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()))
    print(
        f"gc: {env['gc']}; {args.rounds} rounds x ~{args.target}s per side, "
        "alternating order; median shown, ± = half the (max-min)/median spread"
    )
    print("ratio = ours ops/s / theirs ops/s (>1: ours is faster)")
    print()

    config = ProtocolConfig()
    cases = [
        *case_text_event(config),
        *case_binary_event(config),
        *case_payload(config),
        *case_extras(config),
    ]
    if args.only:
        cases = [c for c in cases if args.only.lower() in f"{c.group} {c.name}".lower()]
    print(f"correctness checks passed for {len(cases)} cases; measuring...", flush=True)
    started = time.perf_counter()
    target_ns = int(args.target * 1e9)
    results = [measure(case, target_ns=target_ns, rounds=args.rounds) for case in cases]
    print(f"done in {time.perf_counter() - started:.1f}s")
    print()
    print_table(results)

    if args.json is not None:
        document = {
            "environment": env,
            "results": [
                {
                    "group": r.case.group,
                    "case": r.case.name,
                    "note": r.case.note,
                    "ours": r.ours.as_dict(),
                    "theirs": None if r.theirs is None else r.theirs.as_dict(),
                    "ratio": r.ratio,
                }
                for r in results
            ],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
