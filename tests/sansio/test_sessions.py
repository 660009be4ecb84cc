"""Replays the scripted exchanges of protocol/vectors/sessions/ against ServerConnection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from replyhq_trio.sansio import (
    LocalProtocolError,
    NamespaceState,
    ProtocolError,
    RemoteProtocolError,
    ServerConnection,
    Transport,
)

from ._vectors import config, data_from_json, event_from_json, frame, session_files

SESSIONS = session_files()


def _frames(values: list[Any]) -> list[str | bytes]:
    return [frame(v) for v in values]


class _Replay:
    def __init__(self, script: dict[str, Any]) -> None:
        self.config = config(script.get("config"))
        self.conn: ServerConnection | None = None

    @property
    def connection(self) -> ServerConnection:
        assert self.conn is not None, "the script must open a session first"
        return self.conn

    def step(self, step: dict[str, Any]) -> None:
        at = float(step.get("at", 0))
        expected_error = step.get("error")
        try:
            written, probe_written, event = self._act(step, at)
        except ProtocolError as exc:
            if expected_error is None:
                raise AssertionError(f"unexpected {exc!r}") from exc
            self._check_error(exc, expected_error)
        else:
            assert expected_error is None, "the step should have failed"
            assert written == _frames(step.get("server", []))
            if "probe" in step:
                assert probe_written == _frames(step.get("probe_replies", []))
            if "event" in step:
                want = None if step["event"] is None else event_from_json(step["event"])
                assert event == want
        if "expect" in step:
            self._check_state(step["expect"])

    def _act(self, step: dict[str, Any], at: float) -> tuple[list[Any], list[Any], Any]:
        event: Any = None
        probe: list[Any] = []
        if "open" in step:
            self.conn = ServerConnection(
                sid=step["open"]["sid"],
                transport=Transport(step["open"]["transport"]),
                config=self.config,
                now=at,
            )
            return self.connection.frames_to_send(), probe, event
        conn = self.connection
        if "client" in step:
            event = conn.receive_frame(frame(step["client"]), at)
        elif "send" in step:
            return conn.send(event_from_json(step["send"])), probe, event
        elif "timer" in step:
            event = conn.handle_timer(at)
        elif "begin_upgrade" in step:
            conn.begin_upgrade()
        elif "probe" in step:
            probe = conn.receive_probe_frame(frame(step["probe"]), at)
        elif "allocate_ack" in step:
            wanted = step["allocate_ack"]
            assert conn.allocate_ack_id(wanted["namespace"]) == wanted["ack_id"]
        elif "transport_closed" in step:
            event = conn.transport_closed()
        else:
            raise AssertionError(f"unknown step {step}")
        return conn.frames_to_send(), probe, event

    def _check_error(self, exc: ProtocolError, expected: dict[str, Any]) -> None:
        kind = LocalProtocolError if expected["kind"] == "local" else RemoteProtocolError
        assert isinstance(exc, kind), f"expected a {kind.__name__}, got {exc!r}"
        reply = exc.reply
        close = expected.get("close")
        assert (reply.close.value if reply.close else None) == close
        if "frames" in expected:
            assert list(reply.frames) == _frames(expected["frames"])
        if "http_status" in expected:
            assert reply.http_status == expected["http_status"]
        if "websocket_close_code" in expected:
            assert reply.websocket_close_code == expected["websocket_close_code"]
        if close is not None:
            assert self.connection.closed

    def _check_state(self, expected: dict[str, Any]) -> None:
        conn = self.connection
        if "timer" in expected:
            assert conn.get_timer() == expected["timer"]
        if "transport" in expected:
            assert conn.transport is Transport(expected["transport"])
        if "closed" in expected:
            assert conn.closed is expected["closed"]
        if "close_reason" in expected:
            assert conn.close_reason is not None
            assert conn.close_reason.value == expected["close_reason"]
        if "namespaces" in expected:
            for namespace, state in expected["namespaces"].items():
                assert conn.namespace_state(namespace) is NamespaceState(state)
            joined = set(conn.connected_namespaces)
            connected = {ns for ns, s in expected["namespaces"].items() if s == "connected"}
            assert joined == connected


@pytest.mark.parametrize("path", SESSIONS, ids=[p.stem for p in SESSIONS])
def test_session(path: Path) -> None:
    script = json.loads(path.read_text(encoding="utf-8"))
    replay = _Replay(script)
    for index, step in enumerate(script["steps"]):
        try:
            replay.step(step)
        except AssertionError as exc:
            raise AssertionError(f"{path.name} step {index}: {step}\n{exc}") from exc


def test_the_scripted_exchanges_the_contract_promises_exist() -> None:
    names = {p.stem for p in SESSIONS}
    for required in (
        "websocket-connect-emit-ack",
        "polling-connect-emit",
        "rejected-namespace",
        "binary-event",
        "upgrade",
        "ping-timeout",
    ):
        assert required in names


def test_binary_args_in_vectors_are_bytes() -> None:
    assert data_from_json([{"$base64": "AQI="}, {"k": {"$base64": ""}}]) == [
        b"\x01\x02",
        {"k": b""},
    ]
