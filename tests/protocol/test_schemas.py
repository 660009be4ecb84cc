"""The JSON Schemas of `protocol/schemas/`: well formed, complete against CONTRACT.md, exact.

Every `*.schema.json` must be a valid draft 2020-12 schema with the folder's metadata
(`$schema`, an `$id` matching its path, title, description, examples), and every example must
validate. `index.json` must name every event and REST call of CONTRACT.md, reference only files
that exist, and leave no schema unreferenced. A table of invalid instances proves the schemas
are strict where they must be (server-to-client shapes, ack unions, bounds), and a table of
valid edge cases proves they are not stricter than the contract.

References between schemas resolve through a local registry; nothing is fetched over the
network (the retriever refuses every URI).
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest

from ._schemas import (
    BASE_URI,
    COMMON,
    COMMON_DEFS,
    DOCS,
    DRAFT_2020_12,
    INDEX,
    SCHEMA_FILES,
    SCHEMAS_DIR,
    def_validator,
    validator,
)

# ---------------------------------------------------------------------------------------------
# What CONTRACT.md names, copied from it by hand so that the index cannot silently lose an
# event. message:delivered / message:read / message:status are the delivery and read receipts
# of CONTRACT.md's "Also wanted" section, made part of the contract by protocol/.

CONTRACT_EVENTS: dict[str, dict[str, set[str]]] = {
    "client": {
        "client_to_server": {
            "conversation:join",
            "conversation:leave",
            "typing:start",
            "typing:stop",
            "message:send",
            "ping",
            "message:delivered",
            "message:read",
        },
        "server_to_client": {
            "connected",
            "conversation:joined",
            "message:new",
            "agent:typing",
            "user:typing",
            "server:shutdown",
            "error",
            "message:status",
        },
    },
    "admin": {
        "client_to_server": {
            "app:subscribe",
            "conversation:join",
            "conversation:leave",
            "message:send",
            "typing:start",
            "typing:stop",
            "sessions:list",
            # Not in CONTRACT.md's /admin table: the dashboard's liveness check, as /client's.
            "ping",
        },
        "server_to_client": {
            # "everything a client gets for conversations it joined" ...
            "message:new",
            "user:typing",
            "conversation:joined",
            "server:shutdown",
            "error",
            "message:status",
            # ... plus the admin's own events
            "connected",
            "session:connect",
            "session:disconnect",
            "presence:change",
        },
    },
}

# client -> server events that take no ack ("none" in CONTRACT.md's ack column).
NO_ACK = {("client", "typing:start"), ("client", "typing:stop")} | {
    ("admin", "typing:start"),
    ("admin", "typing:stop"),
}
# client -> server events that carry no argument.
NO_PAYLOAD = {("client", "ping"), ("admin", "ping")}

CONTRACT_REST = {
    "POST /v1/conversations",
    "GET /v1/conversations",
    "POST /v1/conversations/{id}/messages",
    "GET /v1/conversations/{id}/messages",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
}

CONTRACT_ERROR_CODES = {
    "MISSING_PARAMS",
    "INVALID_CREDENTIALS",
    "TOO_MANY_CONNECTIONS",
    "RATE_LIMITED",
    "INVALID_PAYLOAD",
    "UNKNOWN_EVENT",
    "CONVERSATION_NOT_FOUND",
    "FORBIDDEN",
    "STORE_UNAVAILABLE",
    "AUTH_EXPIRED",
}


def _index_entries() -> list[tuple[str, str | None]]:
    """(where in index.json, referenced file or None) for every reference in the index."""
    found: list[tuple[str, str | None]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        else:
            assert node is None or isinstance(node, str), f"{where}: {node!r}"
            found.append((where, node))

    walk(INDEX, "")
    return found


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


# ---------------------------------------------------------------------------------------------
# Every schema: well formed, documented, examples valid


def test_schema_files_exist() -> None:
    assert COMMON in SCHEMA_FILES
    assert len(SCHEMA_FILES) > 40


@pytest.mark.parametrize("rel", SCHEMA_FILES)
def test_schema_is_valid_draft_2020_12(rel: str) -> None:
    doc = DOCS[rel]
    jsonschema_rs.meta.validate(doc)
    assert jsonschema_rs.meta.is_valid(doc)
    assert doc["$schema"] == DRAFT_2020_12
    assert doc["$id"] == BASE_URI + rel
    assert isinstance(doc["title"], str)
    assert doc["title"].strip()
    assert isinstance(doc["description"], str)
    assert len(doc["description"]) >= 40, "say who sends it, when, and what it means"
    assert isinstance(doc["examples"], list)
    assert doc["examples"]


@pytest.mark.parametrize("rel", SCHEMA_FILES)
def test_examples_validate(rel: str) -> None:
    for example in DOCS[rel]["examples"]:
        validator(rel).validate(example)


@pytest.mark.parametrize("rel", SCHEMA_FILES)
def test_refs_stay_local(rel: str) -> None:
    """Refs point into this file or to a $def of common.schema.json that exists."""
    prefix = COMMON if rel == COMMON else ("../" if "/" in rel else "") + COMMON
    for ref in _refs(DOCS[rel]):
        if ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            assert name in DOCS[rel].get("$defs", {}), f"{rel}: dangling {ref}"
        else:
            assert ref.startswith(prefix + "#/$defs/"), f"{rel}: {ref} is not a common $def"
            assert ref.removeprefix(prefix + "#/$defs/") in COMMON_DEFS, f"{rel}: dangling {ref}"


@pytest.mark.parametrize("name", sorted(COMMON_DEFS))
def test_common_def_documented_and_examples_validate(name: str) -> None:
    definition = COMMON_DEFS[name]
    assert isinstance(definition.get("description"), str)
    assert definition["description"].strip()
    assert definition.get("examples"), f"$defs/{name} needs examples"
    for example in definition["examples"]:
        def_validator(name).validate(example)


def test_every_common_def_is_used() -> None:
    used = {ref.rsplit("/", 1)[-1] for doc in DOCS.values() for ref in _refs(doc)}
    assert set(COMMON_DEFS) - used == set()


def test_error_code_enums_match_contract() -> None:
    assert set(COMMON_DEFS["error_code"]["enum"]) == CONTRACT_ERROR_CODES
    # REST adds the codes of plain HTTP failures the socket never sees.
    rest_only = {"INVALID_CURSOR", "NOT_FOUND", "METHOD_NOT_ALLOWED", "SHUTTING_DOWN"}
    assert set(COMMON_DEFS["rest_error_code"]["enum"]) == CONTRACT_ERROR_CODES | rest_only
    assert COMMON_DEFS["sender"]["enum"] == ["user", "agent", "system"]
    assert COMMON_DEFS["message_status"]["enum"] == ["sent", "delivered", "read"]


def test_server_to_client_objects_are_closed() -> None:
    """Every object a server sends lists its properties and forbids others."""

    def check(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, where
                assert set(node.get("required", [])) <= set(node["properties"]), where
            for key, value in node.items():
                if key not in {"examples", "if", "then", "else", "not"}:
                    check(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                check(value, f"{where}/{i}")

    outgoing_defs = {
        "message",
        "conversation",
        "session_info",
        "ack_success",
        "ack_failure",
        "ack_simple",
        "join_ack",
        "send_ack",
        "connected_event",
        "conversation_joined_event",
        "user_typing_event",
        "server_shutdown_event",
        "error_event",
        "message_status_event",
    }
    for name in outgoing_defs:
        check(COMMON_DEFS[name], f"common#/$defs/{name}")
    for rel in _outgoing_files():
        check(DOCS[rel], rel)


def _outgoing_files() -> set[str]:
    files: set[str] = set()
    for ns in ("client", "admin"):
        files.add(INDEX[ns]["handshake"]["connect_error"])
        files.update(e["ack"] for e in INDEX[ns]["client_to_server"].values() if e["ack"])
        files.update(e["payload"] for e in INDEX[ns]["server_to_client"].values())
    for call in INDEX["rest"].values():
        files.update(f for f in call["responses"].values() if f)
    return files


def test_client_to_server_payloads_allow_unknown_properties() -> None:
    incoming = {INDEX[ns]["handshake"]["auth"] for ns in ("client", "admin")}
    for ns in ("client", "admin"):
        incoming.update(
            e["payload"] for e in INDEX[ns]["client_to_server"].values() if e["payload"]
        )
    incoming.update(c["request"] for c in INDEX["rest"].values() if c["request"])
    for rel in incoming:
        for example in DOCS[rel]["examples"]:
            if isinstance(example, dict):
                assert validator(rel).is_valid({**example, "x_future_field": [1, {"a": None}]})
        assert DOCS[rel].get("additionalProperties", True) is not False, rel


# ---------------------------------------------------------------------------------------------
# index.json


def test_index_references_only_existing_schema_files() -> None:
    for where, rel in _index_entries():
        if rel is None:
            continue
        assert rel.endswith(".schema.json"), where
        assert rel != COMMON, where
        assert (SCHEMAS_DIR / rel).is_file(), f"{where}: {rel} does not exist"


def test_no_orphan_schema_files() -> None:
    referenced = {rel for _, rel in _index_entries() if rel is not None}
    assert set(SCHEMA_FILES) - referenced == {COMMON}


def test_index_top_level_shape() -> None:
    assert set(INDEX) == {"client", "admin", "rest"}
    for ns in ("client", "admin"):
        assert set(INDEX[ns]) == {"handshake", "client_to_server", "server_to_client"}
        assert INDEX[ns]["handshake"] == {
            "auth": f"{ns}/handshake.auth.schema.json",
            "connect_error": f"{ns}/handshake.connect_error.schema.json",
        }


@pytest.mark.parametrize(
    ("ns", "direction"),
    [(ns, d) for ns in ("client", "admin") for d in ("client_to_server", "server_to_client")],
)
def test_index_names_every_contract_event(ns: str, direction: str) -> None:
    assert set(INDEX[ns][direction]) == CONTRACT_EVENTS[ns][direction]


@pytest.mark.parametrize("ns", ["client", "admin"])
def test_index_event_entries(ns: str) -> None:
    for event, entry in INDEX[ns]["client_to_server"].items():
        stem = f"{ns}/{event.replace(':', '.')}"
        assert set(entry) == {"payload", "ack"}, event
        if (ns, event) in NO_PAYLOAD:
            assert entry["payload"] is None, event
        else:
            assert entry["payload"] == f"{stem}.payload.schema.json", event
        if (ns, event) in NO_ACK:
            assert entry["ack"] is None, event
        else:
            assert entry["ack"] == f"{stem}.ack.schema.json", event
    for event, entry in INDEX[ns]["server_to_client"].items():
        assert entry == {"payload": f"{ns}/{event.replace(':', '.')}.payload.schema.json"}


def test_events_in_both_namespaces_share_one_shape() -> None:
    """An event both namespaces receive (or send) is the same $def in both."""
    for direction in ("client_to_server", "server_to_client"):
        for event in set(INDEX["client"][direction]) & set(INDEX["admin"][direction]):
            for part in ("payload", "ack"):
                client_rel = INDEX["client"][direction][event].get(part)
                admin_rel = INDEX["admin"][direction][event].get(part)
                if client_rel is None or admin_rel is None:
                    assert client_rel == admin_rel, (event, part)
                    continue
                client_doc, admin_doc = DOCS[client_rel], DOCS[admin_rel]
                assert client_doc.get("$ref") == admin_doc.get("$ref"), (event, part)
                assert "$ref" in client_doc, (event, part)


def test_ping_ack_is_pong() -> None:
    assert INDEX["client"]["client_to_server"]["ping"] == {
        "payload": None,
        "ack": "client/ping.ack.schema.json",
    }
    assert DOCS["client/ping.ack.schema.json"]["$ref"].endswith("#/$defs/pong")
    assert COMMON_DEFS["pong"]["const"] == "pong"


def test_index_names_every_contract_rest_call() -> None:
    assert set(INDEX["rest"]) == CONTRACT_REST
    error_rel = "rest/error.response.schema.json"
    for call, entry in INDEX["rest"].items():
        assert set(entry) == {"request", "query", "responses"}, call
        if call.startswith("GET "):
            assert entry["request"] is None, call
        for status, rel in entry["responses"].items():
            assert re.fullmatch(r"[1-5][0-9][0-9]", status), (call, status)
            if status.startswith(("4", "5")) and call != "GET /readyz":
                assert rel == error_rel, (call, status)
        assert any(status.startswith("2") for status in entry["responses"]), call
    assert INDEX["rest"]["GET /metrics"]["responses"] == {"200": None}
    assert INDEX["rest"]["GET /v1/conversations/{id}/messages"]["responses"]["400"] == error_rel


# ---------------------------------------------------------------------------------------------
# Strictness: instances that must fail

T = "2026-01-24T10:15:30.123Z"
MESSAGE: dict[str, Any] = {
    "id": "msg_01J9Z8Q4XK3V7N2M5P6R8T0W1Y",
    "local_id": "c1f0a7e2-8d4b-4e59-9a51-0f3b6e2d7c41",
    "conversation_id": "conv_8f3a2b1c9d",
    "body": "Hello",
    "sender": "user",
    "created_at": T,
    "status": "sent",
}
SEND: dict[str, Any] = {"conversation_id": "conv_1", "body": "Hello", "local_id": "l-1"}
CONVERSATION: dict[str, Any] = {
    "id": "conv_1",
    "app_id": "app_1",
    "device_id": "dev_1",
    "created_at": T,
    "updated_at": T,
    "last_message_id": None,
}


def _without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != key}


INVALID: list[tuple[str, Any, str]] = [
    # client -> server payloads
    ("client/message.send.payload.schema.json", _without(SEND, "body"), "send-missing-body"),
    ("client/message.send.payload.schema.json", _without(SEND, "local_id"), "send-no-local-id"),
    ("client/message.send.payload.schema.json", {**SEND, "body": ""}, "send-empty-body"),
    ("client/message.send.payload.schema.json", {**SEND, "body": " \n\t "}, "send-blank-body"),
    ("client/message.send.payload.schema.json", {**SEND, "body": "x" * 10_001}, "send-body-long"),
    ("client/message.send.payload.schema.json", {**SEND, "body": 42}, "send-body-number"),
    ("client/message.send.payload.schema.json", {**SEND, "local_id": ""}, "send-empty-local-id"),
    ("client/message.send.payload.schema.json", {**SEND, "local_id": "a\nb"}, "send-local-id-ctl"),
    ("client/message.send.payload.schema.json", {**SEND, "local_id": "l" * 129}, "local-id-long"),
    ("client/message.send.payload.schema.json", ["conv_1", "Hello", "l-1"], "send-array"),
    ("admin/message.send.payload.schema.json", {**SEND, "body": None}, "admin-send-null-body"),
    ("client/conversation.join.payload.schema.json", {}, "join-missing-id"),
    ("client/conversation.join.payload.schema.json", {"conversation_id": 7}, "join-id-int"),
    ("client/conversation.join.payload.schema.json", {"conversation_id": ""}, "join-id-empty"),
    ("client/conversation.join.payload.schema.json", {"conversation_id": "c" * 129}, "join-long"),
    ("client/conversation.join.payload.schema.json", {"conversation_id": "a b"}, "join-id-space"),
    ("client/conversation.join.payload.schema.json", "conv_1", "join-bare-string"),
    ("client/typing.start.payload.schema.json", None, "typing-null"),
    ("client/message.read.payload.schema.json", {"conversation_id": "c1"}, "read-no-message-id"),
    ("admin/sessions.list.payload.schema.json", {"app_id": ""}, "sessions-list-empty-app"),
    ("admin/app.subscribe.payload.schema.json", {}, "subscribe-missing-app"),
    # handshakes
    ("client/handshake.auth.schema.json", {"app_id": "a", "device_id": "d"}, "auth-no-key"),
    ("client/handshake.auth.schema.json", {"app_id": "a", "device_id": "", "api_key": "k"}, "dev"),
    (
        "admin/handshake.auth.schema.json",
        {"app_id": "a", "api_key": "k"},
        "admin-auth-api-key-not-admin-token",
    ),
    ("client/handshake.connect_error.schema.json", {"message": "Not authorized"}, "connerr-text"),
    ("admin/handshake.connect_error.schema.json", {"message": "TOO_MANY_CONNECTIONS"}, "admin-tmc"),
    # server -> client payloads
    ("client/message.new.payload.schema.json", {**MESSAGE, "sender": "bot"}, "unknown-sender"),
    ("client/message.new.payload.schema.json", {**MESSAGE, "status": "pending"}, "unknown-status"),
    ("client/message.new.payload.schema.json", _without(MESSAGE, "local_id"), "msg-no-local-id"),
    ("client/message.new.payload.schema.json", {**MESSAGE, "extra": 1}, "msg-extra-field"),
    ("admin/message.new.payload.schema.json", {**MESSAGE, "created_at": 1706091330}, "msg-epoch"),
    ("client/message.new.payload.schema.json", {**MESSAGE, "created_at": "yesterday"}, "msg-ts"),
    (
        "client/message.new.payload.schema.json",
        {**MESSAGE, "created_at": "2026-01-24T10:15:30+02:00"},
        "msg-ts-not-utc",
    ),
    (
        "client/message.new.payload.schema.json",
        {**MESSAGE, "created_at": "2026-13-40T10:15:30Z"},
        "msg-ts-impossible-date",
    ),
    ("client/connected.payload.schema.json", {"connection_id": "c1"}, "connected-no-time"),
    (
        "client/conversation.joined.payload.schema.json",
        {"conversation_id": "c1"},
        "joined-without-last-message-id",
    ),
    (
        "client/agent.typing.payload.schema.json",
        {"conversation_id": "c1", "is_typing": "yes"},
        "typing-bool-as-string",
    ),
    (
        "client/user.typing.payload.schema.json",
        {"conversation_id": "c1", "device_id": "d1", "is_typing": True, "extra": 0},
        "user-typing-extra",
    ),
    (
        "client/server.shutdown.payload.schema.json",
        {"message": "bye", "reconnect_delay_ms": -1},
        "shutdown-negative-delay",
    ),
    (
        "client/server.shutdown.payload.schema.json",
        {"message": "bye", "reconnect_delay_ms": 1.5},
        "shutdown-fractional-delay",
    ),
    ("client/error.payload.schema.json", {"code": "NOPE", "message": "x"}, "unknown-error-code"),
    ("client/error.payload.schema.json", {"code": "FORBIDDEN"}, "error-no-message"),
    (
        "client/error.payload.schema.json",
        {"code": "RATE_LIMITED", "message": "slow down"},
        "rate-limited-without-retry-after",
    ),
    (
        "client/error.payload.schema.json",
        {"code": "FORBIDDEN", "message": "x", "field": "app_id"},
        "field-with-other-code",
    ),
    (
        "admin/error.payload.schema.json",
        {"code": "INVALID_CURSOR", "message": "x"},
        "rest-only-code-in-socket-error",
    ),
    (
        "client/message.status.payload.schema.json",
        {"conversation_id": "c1", "message_id": "m1", "status": "sent", "updated_at": T},
        "status-back-to-sent",
    ),
    (
        "admin/presence.change.payload.schema.json",
        {"app_id": "a", "device_id": "d", "is_online": True, "active_connections": 0},
        "online-with-no-connection",
    ),
    (
        "admin/presence.change.payload.schema.json",
        {"app_id": "a", "device_id": "d", "is_online": False, "active_connections": 2},
        "offline-with-connections",
    ),
    (
        "admin/session.connect.payload.schema.json",
        {"app_id": "a", "device_id": "d", "connection_id": "c"},
        "session-connect-no-time",
    ),
    (
        "admin/session.disconnect.payload.schema.json",
        {"app_id": "a", "device_id": "d", "connection_id": "c", "reason": ""},
        "session-disconnect-empty-reason",
    ),
    # acks
    (
        "client/conversation.join.ack.schema.json",
        {"success": True, "last_message_id": None, "error": "FORBIDDEN"},
        "success-ack-with-error",
    ),
    ("client/conversation.join.ack.schema.json", {"success": False}, "failure-ack-without-error"),
    ("client/conversation.join.ack.schema.json", {"success": True}, "join-ack-no-cursor"),
    (
        "client/conversation.join.ack.schema.json",
        {"success": False, "error": "NO_SUCH_THING"},
        "ack-unknown-error-code",
    ),
    ("client/conversation.leave.ack.schema.json", {"success": "true"}, "ack-success-string"),
    ("client/conversation.leave.ack.schema.json", {"error": "FORBIDDEN"}, "ack-without-success"),
    ("client/message.send.ack.schema.json", {"success": True}, "send-ack-without-message"),
    (
        "client/message.send.ack.schema.json",
        {"success": False, "error": "STORE_UNAVAILABLE", "message": MESSAGE},
        "failed-send-ack-with-message",
    ),
    (
        "admin/message.send.ack.schema.json",
        {"success": True, "message": {**MESSAGE, "sender": "admin"}},
        "send-ack-bad-sender",
    ),
    (
        "client/message.delivered.ack.schema.json",
        {"success": False, "error": "RATE_LIMITED", "field": "message_id"},
        "ack-field-with-rate-limited",
    ),
    (
        "client/message.read.ack.schema.json",
        {"success": False, "error": "FORBIDDEN", "retry_after_ms": 10},
        "ack-retry-after-with-other-code",
    ),
    ("client/ping.ack.schema.json", "ping", "ping-ack-not-pong"),
    ("client/ping.ack.schema.json", {"success": True}, "ping-ack-object"),
    ("admin/sessions.list.ack.schema.json", {"sessions": []}, "sessions-ack-without-success"),
    (
        "admin/sessions.list.ack.schema.json",
        {
            "success": True,
            "sessions": [{"connection_id": "c", "device_id": "d", "connected_at": T}],
        },
        "session-without-node-id",
    ),
    # REST
    ("rest/message.create.request.schema.json", {"body": "hi"}, "rest-create-no-local-id"),
    ("rest/message.create.request.schema.json", {"body": "", "local_id": "l"}, "rest-empty-body"),
    ("rest/conversation.create.request.schema.json", [], "rest-create-conv-array"),
    ("rest/messages.list.query.schema.json", {"limit": "0"}, "limit-zero"),
    ("rest/messages.list.query.schema.json", {"limit": "201"}, "limit-over-max"),
    ("rest/messages.list.query.schema.json", {"limit": "050"}, "limit-leading-zero"),
    ("rest/messages.list.query.schema.json", {"limit": 50}, "limit-not-a-query-string"),
    ("rest/messages.list.query.schema.json", {"after": ""}, "after-empty"),
    ("rest/messages.list.response.schema.json", {"messages": []}, "list-without-has-more"),
    (
        "rest/messages.list.response.schema.json",
        {"messages": [MESSAGE] * 201, "has_more": True},
        "list-over-200",
    ),
    ("rest/conversations.list.response.schema.json", [CONVERSATION], "conversations-bare-list"),
    (
        "rest/conversation.create.response.schema.json",
        _without(CONVERSATION, "last_message_id"),
        "conversation-without-last-message-id",
    ),
    (
        "rest/error.response.schema.json",
        {"code": "INVALID_CURSOR", "message": "x"},
        "rest-error-not-wrapped",
    ),
    (
        "rest/error.response.schema.json",
        {"error": {"code": "NOT_A_CODE", "message": "x"}},
        "rest-error-unknown-code",
    ),
    (
        "rest/error.response.schema.json",
        {"error": {"code": "INVALID_CURSOR", "message": "x", "field": "after"}},
        "rest-error-field-with-cursor-code",
    ),
    ("rest/healthz.response.schema.json", {"status": "fine"}, "healthz-status"),
    (
        "rest/readyz.response.schema.json",
        {"status": "ok", "checks": {"store": "unavailable", "redis": "ok"}},
        "readyz-ok-with-store-down",
    ),
    (
        "rest/readyz.response.schema.json",
        {"status": "unavailable", "checks": {"store": "ok", "redis": "disabled"}},
        "readyz-unavailable-with-all-ok",
    ),
]


@pytest.mark.parametrize(
    ("rel", "instance"), [(rel, inst) for rel, inst, _ in INVALID], ids=[i for *_, i in INVALID]
)
def test_invalid_instance_fails(rel: str, instance: Any) -> None:
    assert not validator(rel).is_valid(instance)


def test_invalid_table_is_large_and_ids_unique() -> None:
    ids = [case_id for *_, case_id in INVALID]
    assert len(ids) >= 25
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------------------------------------
# ...and edge cases that must pass (the schemas are not stricter than the contract)

VALID: list[tuple[str, Any, str]] = [
    ("client/message.send.payload.schema.json", {**SEND, "body": "x" * 10_000}, "body-at-max"),
    ("client/message.send.payload.schema.json", {**SEND, "body": "é" * 10_000}, "body-max-cps"),
    ("client/message.send.payload.schema.json", {**SEND, "body": "line 1\nline 2"}, "newlines"),
    ("client/message.send.payload.schema.json", {**SEND, "local_id": "l" * 128}, "local-id-max"),
    ("client/message.send.payload.schema.json", {**SEND, "attachments": []}, "unknown-field"),
    ("client/conversation.join.payload.schema.json", {"conversation_id": "c" * 128}, "id-max"),
    (
        "client/handshake.auth.schema.json",
        {
            "app_id": "app_1",
            "device_id": "Ana\u2019s iPhone \U0001f4f1",
            "api_key": "k",
            "sdk": "kmp/1.0",
        },
        "unicode-device-id-and-extra",
    ),
    (
        "client/message.new.payload.schema.json",
        {**MESSAGE, "created_at": "2026-01-24T10:15:30Z"},
        "ts-no-fraction",
    ),
    (
        "client/message.new.payload.schema.json",
        {**MESSAGE, "created_at": "2026-01-24T10:15:30.123456Z"},
        "ts-microseconds",
    ),
    (
        "client/error.payload.schema.json",
        {"code": "INVALID_PAYLOAD", "message": "payload must be an object"},
        "invalid-payload-without-field",
    ),
    (
        "client/conversation.leave.ack.schema.json",
        {"success": False, "error": "INVALID_PAYLOAD", "message": "x", "field": "conversation_id"},
        "failed-ack-with-field",
    ),
    (
        "rest/error.response.schema.json",
        {"error": {"code": "RATE_LIMITED", "message": "x", "retry_after_ms": 0}},
        "rest-rate-limited",
    ),
    ("rest/messages.list.query.schema.json", {"after": "msg_1", "limit": "1"}, "limit-min"),
    ("rest/messages.list.query.schema.json", {"limit": "99"}, "limit-two-digits"),
    (
        "rest/messages.list.response.schema.json",
        {"messages": [MESSAGE] * 200, "has_more": True},
        "list-at-200",
    ),
    (
        "admin/presence.change.payload.schema.json",
        {"app_id": "a", "device_id": "d", "is_online": True, "active_connections": 2},
        "online-with-two-connections-after-a-race",
    ),
]


@pytest.mark.parametrize(
    ("rel", "instance"), [(rel, inst) for rel, inst, _ in VALID], ids=[i for *_, i in VALID]
)
def test_valid_edge_case_passes(rel: str, instance: Any) -> None:
    validator(rel).validate(instance)
