"""Fuzz the sans-IO core with random and mutated frames.

Every frame goes through the layer that would meet it on the wire: WebSocket bytes
through the frame decoder, long-polling bodies through the payload splitter, and
every resulting frame through a ServerConnection in some state (fresh, joined to
namespaces, half-way through a binary packet, upgrading). Timers fire and the
application sends events in between. The only acceptable exception is a
ProtocolError, and after a fatal one the connection must refuse everything.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from replyhq_trio.sansio import (
    Ack,
    CloseConnection,
    Connect,
    ConnectAccepted,
    ConnectRejected,
    Disconnect,
    Emit,
    Event,
    Frame,
    LocalProtocolError,
    ProtocolConfig,
    ProtocolError,
    ServerConnection,
    Transport,
    decode_payload,
    prepare_emit,
)
from replyhq_trio.sansio.websocket import FrameDecoder, Opcode, Role, encode_frame

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"
CONFIG = ProtocolConfig(max_payload=64 * 1024, max_namespaces=4, max_attachments=4)
INTERESTING = [*'0123456789[]{}",:-/\\\x1ebtrue', "\u00e9", "\U0001f600", "\x00", "\ud7ff"]


def _seed_frames() -> list[Frame]:
    """Every client-side frame the vectors know, as Engine.IO frames."""
    frames: list[Frame] = []
    for vector in json.loads((VECTORS / "socketio-packets.json").read_text())["vectors"]:
        frames.append("4" + vector["text"])
        frames.extend(base64.b64decode(a) for a in vector.get("attachments", []))
    for vector in json.loads((VECTORS / "engineio-packets.json").read_text())["vectors"]:
        if "frame" in vector:
            frames.append(vector["frame"])
    for vector in json.loads((VECTORS / "invalid.json").read_text())["vectors"]:
        if vector["layer"] in ("engineio-packet", "socketio-packet") and isinstance(
            vector["input"], str
        ):
            text = vector["input"]
            frames.append(text if vector["layer"] == "engineio-packet" else "4" + text)
    for path in sorted((VECTORS / "sessions").glob("*.json")):
        for step in json.loads(path.read_text())["steps"]:
            value = step.get("client") or step.get("probe")
            if isinstance(value, str):
                frames.append(value)
            elif isinstance(value, dict):
                frames.append(base64.b64decode(value["base64"]))
    return frames


class Fuzzer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seeds = _seed_frames()
        self.now = 0.0
        self.frames = 0
        self.protocol_errors = 0
        self.events: Counter[str] = Counter()
        self.bugs: list[str] = []
        self.connections = 0
        self.conn = self._new_connection()

    # --- inputs --------------------------------------------------------------------

    def mutate_text(self, text: str) -> str:
        rng = self.rng
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(7)
            pos = rng.randint(0, len(text))
            char = rng.choice(INTERESTING) if rng.random() < 0.7 else chr(rng.randint(1, 0x2FF))
            if op == 0:
                text = text[:pos] + char + text[pos:]
            elif op == 1:
                text = text[:pos] + text[pos + 1 :]
            elif op == 2:
                text = text[:pos] + char + text[pos + 1 :]
            elif op == 3:
                text = text[:pos]
            elif op == 4:
                other = rng.choice(self.seeds)
                if isinstance(other, str):
                    text = text[:pos] + other[rng.randint(0, len(other)) :]
            elif op == 5:
                start = rng.randint(0, len(text))
                text = text[:pos] + text[start : start + rng.randint(1, 8)] + text[pos:]
            else:
                depth = rng.randint(1, 60)
                text = text[:pos] + "[" * depth + "]" * depth + text[pos:]
        return text

    def mutate_bytes(self, data: bytes) -> bytes:
        rng = self.rng
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randint(0, len(buf))
            op = rng.randrange(4)
            if op == 0:
                buf[pos:pos] = bytes([rng.randrange(256)])
            elif op == 1:
                del buf[pos : pos + 1]
            elif op == 2 and buf:
                buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
            else:
                del buf[pos:]
        return bytes(buf)

    def frame(self) -> Frame:
        rng = self.rng
        roll = rng.random()
        seed = rng.choice(self.seeds)
        if roll < 0.35:
            return seed
        if roll < 0.85:
            return self.mutate_text(seed) if isinstance(seed, str) else self.mutate_bytes(seed)
        if roll < 0.93:
            return "".join(chr(rng.randint(1, 0x7F)) for _ in range(rng.randint(0, 24)))
        return rng.randbytes(rng.randint(0, 24))

    # --- the connection under test ---------------------------------------------------

    def _new_connection(self) -> ServerConnection:
        self.connections += 1
        transport = self.rng.choice([Transport.WEBSOCKET, Transport.POLLING])
        conn = ServerConnection(
            sid=f"f{self.connections}", transport=transport, config=CONFIG, now=self.now
        )
        conn.frames_to_send()
        # Most connections start joined, so deeper states get exercised.
        if self.rng.random() < 0.8:
            for namespace in self.rng.sample(["/", "/client", "/admin"], self.rng.randint(1, 3)):
                head = "40" if namespace == "/" else f"40{namespace},"
                conn.receive_frame(head, self.now)
                conn.send(ConnectAccepted(namespace=namespace, sid="x"))
        return conn

    def check(self, action: Callable[[], Any], described: str, *, transport: bool = False) -> Any:
        """Run one call into the core, classifying what it raises.

        ``transport`` marks the decoders that sit before the connection (WebSocket
        frames, polling bodies): their fatal errors end the transport, which the I/O
        layer reports to the connection, as done here.
        """
        conn = self.conn
        was_closed = conn.closed
        try:
            result = action()
        except ProtocolError as exc:
            self.protocol_errors += 1
            remote = not isinstance(exc, LocalProtocolError)
            if transport:
                if exc.reply.close is not None:
                    conn.transport_closed(exc.reply.close)
                return None
            if was_closed and remote:
                self._bug(described, "a closed connection raised a RemoteProtocolError", exc)
            if exc.fatal and remote and not conn.closed:
                self._bug(described, "a fatal error left the connection open", exc)
            return None
        except Exception as exc:  # the point of the fuzzer: anything else is a bug
            self._bug(described, "non-ProtocolError exception", exc)
            return None
        if was_closed and described.startswith("receive"):
            self._bug(described, "a closed connection accepted input", None)
        return result

    def _bug(self, described: str, what: str, exc: BaseException | None) -> None:
        detail = "" if exc is None else "".join(traceback.format_exception_only(exc)).strip()
        self.bugs.append(f"{what}: {described}\n    {detail}")

    def feed(self, frame: Frame) -> None:
        self.frames += 1
        conn = self.conn
        event = self.check(lambda: conn.receive_frame(frame, self.now), f"receive {frame!r:.200}")
        if isinstance(event, Event):
            self.events[type(event).__name__] += 1
            self.answer(event)
        conn.frames_to_send()
        if conn.closed:
            self.conn = self._new_connection()

    def answer(self, event: Event) -> None:
        """Act as the application would, sometimes wrongly."""
        conn = self.conn
        rng = self.rng
        reply: Event | None = None
        if isinstance(event, Connect):
            if rng.random() < 0.7:
                reply = ConnectAccepted(namespace=event.namespace, sid="y")
            else:
                reply = ConnectRejected(namespace=event.namespace, message="no")
        elif isinstance(event, Emit) and event.ack_id is not None:
            reply = Ack(namespace=event.namespace, ack_id=event.ack_id, args=event.args[:1])
        elif rng.random() < 0.05:
            reply = rng.choice(
                [
                    Emit(namespace=rng.choice(["/", "/client", "/x"]), name="e", args=(b"\x01",)),
                    Disconnect(namespace=rng.choice(["/", "/client"])),
                    CloseConnection(),
                ]
            )
        if reply is not None:
            self.check(lambda: conn.send(reply), f"send {reply!r:.200}")

    def step(self) -> None:
        rng = self.rng
        self.now += rng.random() * 2
        roll = rng.random()
        conn = self.conn
        if roll < 0.80:
            self.feed(self.frame())
        elif roll < 0.88:
            # A long-polling body of several frames, some binary as base64.
            frames = [self.frame() for _ in range(rng.randint(1, 6))]
            body = "\x1e".join(
                f if isinstance(f, str) else "b" + base64.b64encode(f).decode() for f in frames
            )
            if rng.random() < 0.3:
                body = self.mutate_text(body)
            split = self.check(
                lambda: decode_payload(
                    body, max_packets=CONFIG.max_payload_packets, max_payload=CONFIG.max_payload
                ),
                f"payload {body!r:.200}",
                transport=True,
            )
            for frame in split or []:
                if self.conn is not conn:
                    break
                self.feed(frame)
        elif roll < 0.94:
            self.websocket_bytes()
        elif roll < 0.97:
            self.check(lambda: conn.handle_timer(self.now), "timer")
            conn.frames_to_send()
        elif roll < 0.985:
            self.check(conn.begin_upgrade, "begin_upgrade")
            probe = rng.choice(["2probe", "5", "2probe", self.mutate_text("2probe")])
            self.check(lambda: conn.receive_probe_frame(probe, self.now), f"probe {probe!r}")
        else:
            prepared = prepare_emit(rng.choice(["/", "/client"]), "b", ("x",))
            self.check(lambda: conn.send_prepared(prepared), "send_prepared")
        if self.conn.closed:
            self.conn = self._new_connection()

    def websocket_bytes(self) -> None:
        """Mutated WebSocket frames through the frame decoder, then the connection."""
        rng = self.rng
        wire = b""
        for _ in range(rng.randint(1, 4)):
            frame = self.frame()
            opcode = Opcode.TEXT if isinstance(frame, str) else Opcode.BINARY
            payload = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
            wire += encode_frame(opcode, payload, mask=rng.randbytes(4), fin=rng.random() < 0.9)
        if rng.random() < 0.5:
            wire = self.mutate_bytes(wire)
        decoder = FrameDecoder(role=Role.SERVER, max_message_size=CONFIG.max_payload)
        decoder.receive_data(wire)
        messages = self.check(
            lambda: list(decoder.events()), f"websocket {wire!r:.200}", transport=True
        )
        for message in messages or []:
            if isinstance(message, str | bytes):
                self.feed(message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1_000_000, help="frames to feed (default 1M)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    fuzzer = Fuzzer(random.Random(seed))
    started = time.perf_counter()
    while fuzzer.frames < args.count:
        fuzzer.step()
        if len(fuzzer.bugs) > 20:
            break
    elapsed = time.perf_counter() - started
    bugs = len(fuzzer.bugs)
    print(f"seed: {seed}")
    print(f"frames fed: {fuzzer.frames:,} in {elapsed:.1f} s ({fuzzer.frames / elapsed:,.0f}/s)")
    print(f"connections: {fuzzer.connections:,}")
    print(f"protocol errors (expected): {fuzzer.protocol_errors:,}")
    print(f"events: {dict(fuzzer.events.most_common())}")
    print(f"non-ProtocolError exceptions and broken invariants: {bugs}")
    for bug in fuzzer.bugs[:20]:
        print(f"  - {bug}")
    return 1 if bugs else 0


if __name__ == "__main__":
    sys.exit(main())
