"""The REST API over real HTTP, on SQLite and on PostgreSQL (CONTRACT.md "REST"): every
response checked against ``protocol/schemas/rest``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio

from .._raw import http, http_on, open_websocket
from .._waiting import wait_until
from ._site import Site, contract, open_site

CONVERSATIONS = "/v1/conversations"


@pytest.fixture
async def site(db_url: str) -> AsyncIterator[Site]:
    async with open_site(db_url, max_payload=100_000) as opened:
        yield opened


def conforms(route: str, status: int, body: Any) -> Any:
    """Assert ``body`` is what the contract says ``route`` answers with ``status``."""
    c = contract()
    schema = c.index["rest"][route]["responses"][str(status)]
    c.check(schema, body)
    return body


def error_of(body: Any) -> tuple[str, str | None]:
    """The error's code and field (None when absent)."""
    return body["error"]["code"], body["error"].get("field")


async def test_conversations_are_the_devices_own_most_recent_first(site: Site) -> None:
    with trio.fail_after(30):
        first = await site.new_conversation("phone")
        second = await site.new_conversation("phone")
        await site.new_conversation("tablet")
        conforms("POST /v1/conversations", 201, first)
        assert (first["app_id"], first["device_id"], first["last_message_id"]) == (
            site.app_id,
            "phone",
            None,
        )
        status, listed = await site.rest("GET", CONVERSATIONS, headers=site.device_headers("phone"))
        assert status == 200
        conforms("GET /v1/conversations", 200, listed)
        assert [c["id"] for c in listed["conversations"]] == [second["id"], first["id"]]
        assert listed["has_more"] is False

        # A message moves its conversation to the front.
        await site.rest(
            "POST",
            f"{CONVERSATIONS}/{first['id']}/messages",
            {"body": "hi", "local_id": "1"},
            headers=site.device_headers("phone"),
        )
        _, listed = await site.rest("GET", CONVERSATIONS, headers=site.device_headers("phone"))
        assert [c["id"] for c in listed["conversations"]] == [first["id"], second["id"]]
        assert listed["conversations"][0]["last_message_id"] is not None


async def test_posting_is_idempotent_on_local_id(site: Site) -> None:
    with trio.fail_after(30):
        cid = (await site.new_conversation("phone"))["id"]
        route = f"{CONVERSATIONS}/{cid}/messages"
        message = {"body": "héllo 👋", "local_id": "abc"}
        status, created = await site.rest(
            "POST", route, message, headers=site.device_headers("phone")
        )
        assert status == 201
        conforms("POST /v1/conversations/{id}/messages", 201, created)
        assert (created["body"], created["sender"], created["status"]) == (
            "héllo 👋",
            "user",
            "sent",
        )
        status, again = await site.rest(
            "POST", route, {**message, "body": "changed"}, headers=site.device_headers("phone")
        )
        assert (status, again) == (200, created)

        # An agent posts into any conversation of its app, as the agent.
        status, reply = await site.rest(
            "POST",
            route,
            {"body": "how can I help?", "local_id": "abc"},
            headers=site.agent_headers(),
        )
        assert status == 200  # the same local_id in the same conversation: the same message
        assert reply == created
        status, reply = await site.rest(
            "POST",
            route,
            {"body": "how can I help?", "local_id": "agent-1"},
            headers=site.agent_headers(),
        )
        assert (status, reply["sender"]) == (201, "agent")
        assert await site.history(cid, "phone") == [created, reply]


async def test_paging_strictly_after_a_cursor(site: Site) -> None:
    with trio.fail_after(60):
        cid = (await site.new_conversation("phone"))["id"]
        route = f"{CONVERSATIONS}/{cid}/messages"
        headers = site.device_headers("phone")
        ids = []
        for n in range(60):
            status, message = await site.rest(
                "POST", route, {"body": f"m{n}", "local_id": f"l{n}"}, headers=headers
            )
            assert status == 201
            ids.append(message["id"])
        assert ids == sorted(ids)  # ids sort in creation order as plain strings

        status, page = await site.rest("GET", route, headers=headers)
        conforms("GET /v1/conversations/{id}/messages", 200, page)
        assert ([m["id"] for m in page["messages"]], page["has_more"]) == (ids[:50], True)
        _, page = await site.rest("GET", f"{route}?after={ids[49]}", headers=headers)
        assert ([m["id"] for m in page["messages"]], page["has_more"]) == (ids[50:], False)
        _, page = await site.rest("GET", f"{route}?after={ids[9]}&limit=5", headers=headers)
        assert ([m["id"] for m in page["messages"]], page["has_more"]) == (ids[10:15], True)
        _, page = await site.rest("GET", f"{route}?after={ids[-1]}", headers=headers)
        assert page == {"messages": [], "has_more": False}
        _, page = await site.rest("GET", f"{route}?limit=200", headers=headers)
        assert len(page["messages"]) == 60

        for bad in ("0", "201", "-1", "abc", "07"):
            status, body = await site.rest("GET", f"{route}?limit={bad}", headers=headers)
            assert (status, error_of(body)) == (400, ("INVALID_PAYLOAD", "limit")), bad
            conforms("GET /v1/conversations/{id}/messages", 400, body)

        # A cursor that is not a message of this conversation.
        other = (await site.new_conversation("phone"))["id"]
        _, foreign = await site.rest(
            "POST",
            f"{CONVERSATIONS}/{other}/messages",
            {"body": "elsewhere", "local_id": "x"},
            headers=headers,
        )
        for cursor in (foreign["id"], "msg_99999999999999999999", "not-a-message", "%20"):
            status, body = await site.rest("GET", f"{route}?after={cursor}", headers=headers)
            assert (status, error_of(body)[0]) == (400, "INVALID_CURSOR"), cursor


async def test_credentials_and_ownership(site: Site) -> None:
    with trio.fail_after(30):
        cid = (await site.new_conversation("phone"))["id"]
        route = f"{CONVERSATIONS}/{cid}/messages"
        message = {"body": "x", "local_id": "y"}
        wrong_key = [("x-app-id", site.app_id), ("x-device-id", "phone"), ("x-api-key", "nope")]
        client_key_as_bearer = [
            ("x-app-id", site.app_id),
            ("authorization", f"Bearer {site.app.api_key}"),
        ]
        for headers in (wrong_key, client_key_as_bearer, [("x-app-id", site.app_id)], []):
            for method, target, body in (
                ("GET", CONVERSATIONS, None),
                ("POST", CONVERSATIONS, {}),
                ("GET", route, None),
                ("POST", route, message),
            ):
                status, answer = await site.rest(method, target, body, headers=headers)
                assert status == 401, (method, target, headers)
                assert error_of(answer)[0] in ("INVALID_CREDENTIALS", "MISSING_PARAMS")
                conforms("GET /v1/conversations", 401, answer)

        # Another device of the app, and an unknown id, see no such conversation.
        for device, target in (("tablet", route), ("phone", f"{CONVERSATIONS}/conv_nope/messages")):
            for method, body in (("GET", None), ("POST", message)):
                status, answer = await site.rest(
                    method, target, body, headers=site.device_headers(device)
                )
                assert (status, error_of(answer)[0]) == (404, "CONVERSATION_NOT_FOUND")
        _, listed = await site.rest("GET", CONVERSATIONS, headers=site.device_headers("tablet"))
        assert listed == {"conversations": [], "has_more": False}


async def test_bad_bodies(site: Site) -> None:
    with trio.fail_after(30):
        cid = (await site.new_conversation("phone"))["id"]
        route = f"{CONVERSATIONS}/{cid}/messages"
        headers = site.device_headers("phone")
        for body, field in (
            ({"local_id": "a"}, "body"),
            ({"body": "   ", "local_id": "a"}, "body"),
            ({"body": "a\u0000b", "local_id": "a"}, "body"),
            ({"body": "x" * 10_001, "local_id": "a"}, "body"),
            ({"body": "ok"}, "local_id"),
            ({"body": "ok", "local_id": 5}, "local_id"),
            ([1, 2], None),
        ):
            status, answer = await site.rest("POST", route, body, headers=headers)
            assert (status, error_of(answer)) == (400, ("INVALID_PAYLOAD", field)), body
            conforms("POST /v1/conversations/{id}/messages", 400, answer)
        status, answer = await site.rest("POST", route, b"{not json", headers=headers)
        assert (status, error_of(answer)) == (400, ("INVALID_PAYLOAD", None))
        status, answer = await site.rest(
            "POST", route, b"body=x", headers=headers, content_type="text/plain"
        )
        assert (status, error_of(answer)[0]) == (415, "INVALID_PAYLOAD")
        conforms("POST /v1/conversations/{id}/messages", 415, answer)
        huge = {"body": "x", "local_id": "y", "padding": "p" * 200_000}
        status, answer = await site.rest("POST", route, huge, headers=headers)
        assert status == 413
        conforms("POST /v1/conversations/{id}/messages", 413, answer)
        assert await site.history(cid, "phone") == []  # nothing was stored


async def test_health(site: Site) -> None:
    with trio.fail_after(30):
        alive = await http(site.port, "GET", "/healthz")
        assert alive.status == 200
        conforms("GET /healthz", 200, orjson.loads(alive.body))
        ready = await http(site.port, "GET", "/readyz")
        assert ready.status == 200
        body = conforms("GET /readyz", 200, orjson.loads(ready.body))
        assert body["checks"] == {"server": "ok", "store": "ok", "redis": "disabled"}


async def test_device_ids_are_utf8_headers_and_the_same_device_as_over_socket_io(
    site: Site,
) -> None:
    device = "iPhone 15 \u2013 Ana"
    with trio.fail_after(30):
        utf8: list[tuple[str, str | bytes]] = [
            ("x-app-id", site.app_id),
            ("x-device-id", device.encode()),  # its UTF-8 bytes on the wire
            ("x-api-key", site.app.api_key),
        ]
        status, created = await site.rest("POST", CONVERSATIONS, {}, headers=utf8)
        assert (status, created["device_id"]) == (201, device)
        _, listed = await site.rest("GET", CONVERSATIONS, headers=utf8)
        assert [c["id"] for c in listed["conversations"]] == [created["id"]]
        assert await site.store.latest_conversation(site.app_id, device) is not None

        # too long, a control character, not UTF-8
        for bad in (b"d" * 129, b"nul\x7fhere", b"\xff\xfe"):
            headers: list[tuple[str, str | bytes]] = [
                ("x-app-id", site.app_id),
                ("x-device-id", bad),
                ("x-api-key", "k"),
            ]
            status, answer = await site.rest("GET", CONVERSATIONS, headers=headers)
            assert (status, error_of(answer)) == (400, ("INVALID_PAYLOAD", "X-Device-Id")), bad
            conforms("GET /v1/conversations", 401, answer)  # the error body, whatever status


async def test_routes_that_do_not_exist(site: Site) -> None:
    with trio.fail_after(30):
        cid = (await site.new_conversation("phone"))["id"]
        headers = site.device_headers("phone")
        for target in (f"{CONVERSATIONS}/{cid}/nope", f"{CONVERSATIONS}/{cid}/messages/x"):
            status, answer = await site.rest("GET", target, headers=headers)
            assert (status, error_of(answer)) == (404, ("NOT_FOUND", None))
            conforms("GET /v1/conversations", 401, answer)
        status, answer = await site.rest("DELETE", CONVERSATIONS, headers=headers)
        assert (status, error_of(answer)) == (405, ("METHOD_NOT_ALLOWED", None))
        status, answer = await site.rest("GET", "/v2/anything", headers=headers)
        assert (status, error_of(answer)) == (404, ("NOT_FOUND", None))


async def test_a_draining_node_says_so(db_url: str) -> None:
    with trio.fail_after(30):
        async with open_site(db_url, grace_period=5) as site:
            # A live session keeps the node draining (rather than gone) for its grace period.
            target = "/v1/socket.io/?EIO=4&transport=websocket"
            async with (
                open_websocket(site.port, target),
                await trio.open_tcp_stream("127.0.0.1", site.port) as stream,
            ):
                first = await http_on(stream, "GET", CONVERSATIONS, b"", site.device_headers("d"))
                assert first.status == 200
                site.server.shutdown()
                await wait_until(lambda: site.server.draining)
                # New connections are refused now; open ones may still ask.
                ready = await http_on(stream, "GET", "/readyz")
                alive = await http_on(stream, "GET", "/healthz")
                again = await http_on(stream, "GET", CONVERSATIONS, b"", site.device_headers("d"))
            assert (again.status, again.headers.get("retry-after")) == (503, "1")
            body = conforms("GET /v1/conversations", 503, orjson.loads(again.body))
            assert error_of(body) == ("SHUTTING_DOWN", None)
            assert ready.status == 503
            readiness = conforms("GET /readyz", 503, orjson.loads(ready.body))
            assert readiness["checks"] == {"server": "draining", "store": "ok", "redis": "disabled"}
            assert alive.status == 200
