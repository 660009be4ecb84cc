"""Loading the language-neutral vectors of ``protocol/vectors/`` into Python values."""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

from replyhq_trio.sansio import (
    Ack,
    CloseConnection,
    Connect,
    ConnectAccepted,
    ConnectionClosed,
    ConnectRejected,
    Disconnect,
    DisconnectReason,
    Emit,
    Event,
    Frame,
    ProtocolConfig,
)

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors"


@cache
def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def session_files() -> list[Path]:
    return sorted((VECTORS / "sessions").glob("*.json"))


def parts_to_bytes(parts: list[dict[str, Any]]) -> bytes:
    """``[{"hex": ...}, {"repeat_hex": ..., "count": n}]`` -> the bytes."""
    chunks = []
    for part in parts:
        if "hex" in part:
            chunks.append(bytes.fromhex(part["hex"]))
        else:
            chunks.append(bytes.fromhex(part["repeat_hex"]) * part["count"])
    return b"".join(chunks)


def text_input(value: Any) -> str:
    """A string, or ``{"concat": [str | {"repeat", "count"}]}`` for long generated ones."""
    if isinstance(value, str):
        return value
    return "".join(
        item if isinstance(item, str) else item["repeat"] * item["count"]
        for item in value["concat"]
    )


def frame(value: str | dict[str, str]) -> Frame:
    """A frame: a string is text, ``{"base64": ...}`` binary."""
    if isinstance(value, str):
        return value
    return base64.b64decode(value["base64"])


def data_from_json(value: Any) -> Any:
    """Vector data -> Python data: ``{"$base64": ...}`` becomes bytes."""
    if isinstance(value, list):
        return [data_from_json(item) for item in value]
    if isinstance(value, dict):
        if set(value) == {"$base64"}:
            return base64.b64decode(value["$base64"])
        return {key: data_from_json(item) for key, item in value.items()}
    return value


def config(overrides: dict[str, Any] | None) -> ProtocolConfig:
    return ProtocolConfig(**(overrides or {}))


def event_from_json(value: dict[str, Any]) -> Event:
    kind = value["type"]
    if kind == "connect":
        return Connect(namespace=value["namespace"], auth=value["auth"])
    if kind == "connect_accepted":
        return ConnectAccepted(namespace=value["namespace"], sid=value["sid"])
    if kind == "connect_rejected":
        return ConnectRejected(
            namespace=value["namespace"], message=value["message"], data=value.get("data")
        )
    if kind == "emit":
        return Emit(
            namespace=value["namespace"],
            name=value["name"],
            args=tuple(data_from_json(value["args"])),
            ack_id=value["ack_id"],
        )
    if kind == "ack":
        return Ack(
            namespace=value["namespace"],
            ack_id=value["ack_id"],
            args=tuple(data_from_json(value["args"])),
        )
    if kind == "disconnect":
        return Disconnect(namespace=value["namespace"], reason=DisconnectReason(value["reason"]))
    if kind == "connection_closed":
        return ConnectionClosed(reason=DisconnectReason(value["reason"]))
    if kind == "close_connection":
        return CloseConnection(reason=DisconnectReason(value["reason"]))
    raise AssertionError(f"unknown event type in a vector: {kind}")
