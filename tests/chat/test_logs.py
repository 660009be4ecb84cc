"""The server's logs over a full run of ``replyhq-trio serve`` (issue 6 "Logs"): one JSON
object per line, with the connection, app, device, conversation, namespace and reason
wherever they apply; and no credential the run used anywhere in them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import trio

from .._raw import http
from .._waiting import wait_until
from ..interop._peers import open_peer
from ..server.test_signals import _free_port
from ._site import PATH

CLI = [sys.executable, "-m", "replyhq_trio"]


def _create_app(database_url: str, cwd: Path) -> dict[str, str]:
    created = subprocess.run(
        [*CLI, "apps", "create", "--name", "Logs", "--json", "--database-url", database_url],
        check=True,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )
    app: dict[str, str] = json.loads(created.stdout)
    return app


async def _run_everything(port: int, app: dict[str, str]) -> dict[str, str]:
    """Connect, chat, get refused and limited, the way a real fleet does; returns the
    extra secrets used (a wrong key, a revoked token)."""
    url = f"http://127.0.0.1:{port}"
    device = {"app_id": app["app_id"], "device_id": "phone", "api_key": app["api_key"]}
    admin = {"app_id": app["app_id"], "admin_token": app["admin_token"]}
    wrong_key = "wrong-key-0123456789abcdef"
    async with open_peer("js") as peer:
        assert (await peer.connect("a", url, "/client", device, path=PATH)).connected
        assert (await peer.connect("admin", url, "/admin", admin, path=PATH)).connected
        status = await http(
            port,
            "POST",
            "/v1/conversations",
            b"{}",
            [
                ("x-app-id", app["app_id"]),
                ("x-device-id", "phone"),
                ("x-api-key", app["api_key"]),
                ("content-type", "application/json"),
            ],
        )
        assert status.status == 201
        conversation = orjson.loads(status.body)["id"]
        (joined,) = await peer.emit_with_ack(
            "a", "conversation:join", {"conversation_id": conversation}
        )
        assert joined["success"]
        for index in range(3):  # the third is over the limit of 2
            await peer.emit_with_ack(
                "a",
                "message:send",
                {"conversation_id": conversation, "body": "hi", "local_id": f"l{index}"},
            )
        agent = await http(
            port,
            "GET",
            f"/v1/conversations/{conversation}/messages",
            headers=[
                ("x-app-id", app["app_id"]),
                ("authorization", f"Bearer {app['admin_token']}"),
            ],
        )
        assert agent.status == 200
        forged = await http(
            port,
            "GET",
            "/v1/conversations",
            headers=[
                ("x-app-id", app["app_id"]),
                ("x-device-id", "phone"),
                ("x-api-key", wrong_key),
            ],
        )
        assert forged.status == 401
        refused = await peer.connect(
            "b", url, "/client", {**device, "api_key": wrong_key}, ("websocket",), path=PATH
        )
        assert refused.message == "INVALID_CREDENTIALS"
        malformed = await peer.connect(
            "c", url, "/client", {"api_key": app["api_key"]}, ("websocket",), path=PATH
        )
        assert malformed.message == "MISSING_PARAMS"
        await peer.disconnect("a")
        await peer.next_event("admin", "presence:change")
    return {"wrong key": wrong_key}


async def test_a_full_run_logs_json_with_context_and_no_credential(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'logs.db'}"
    app = _create_app(database_url, tmp_path)
    port = _free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            [*CLI, "serve", "--port", str(port), "--database-url", database_url,
             "--log-format", "json", "--log-level", "debug", "--limit-messages", "2",
             "--grace-period", "1"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )  # fmt: skip
    try:
        with trio.fail_after(60):
            await wait_until(lambda: b"listening on" in log_path.read_bytes(), timeout=30)
            secrets = await _run_everything(port, app)
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()

    text = log_path.read_text()
    secrets |= {"api key": app["api_key"], "admin token": app["admin_token"]}
    for what, secret in secrets.items():
        assert secret not in text, f"the {what} appears in the logs"

    entries: list[dict[str, Any]] = [json.loads(line) for line in text.splitlines()]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys()

    def one(message: str, **context: Any) -> dict[str, Any]:
        found = [
            e
            for e in entries
            if e["message"] == message and all(e.get(k) == v for k, v in context.items())
        ]
        assert found, f"no {message!r} with {context} in:\n{text}"
        return found[0]

    connected = one("device connected", namespace="/client", device_id="phone")
    assert connected["app_id"] == app["app_id"]
    assert connected["connection_id"]
    gone = one("device disconnected", connection_id=connected["connection_id"])
    assert gone["reason"] == "client_disconnect"
    assert gone["conversation_id"]
    one("admin connected", namespace="/admin", app_id=app["app_id"])
    one("refused a connection: INVALID_CREDENTIALS", code="INVALID_CREDENTIALS", device_id="phone")
    one("refused a connection: MISSING_PARAMS", code="MISSING_PARAMS", namespace="/client")
    limited = one("rate limited: message", limit="message", device_id="phone")
    assert limited["retry_after_ms"] > 0
    one("refused a request: INVALID_CREDENTIALS", code="INVALID_CREDENTIALS", device_id="phone")
    one("device online", device_id="phone", is_online=True)
    one("device offline", device_id="phone", is_online=False)
    stored = one("message stored", conversation_id=gone["conversation_id"])
    assert stored["level"] == "debug"
    assert any(e["message"].startswith("signal SIGTERM") for e in entries)
    assert not [e for e in entries if e["level"] in ("error", "critical")]
