"""The replyhq-trio command, end to end: create an app, serve, connect with its credentials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from .. import _redis
from .._raw import http
from ..interop._peers import WEBSOCKET, open_peer
from ..server.test_signals import _free_port
from ._site import PATH

CLI = [sys.executable, "-m", "replyhq_trio"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], check=False, capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_bad_flags_and_an_unreachable_database_are_one_line_errors(tmp_path: Path) -> None:
    bad = _cli("serve", "--port", "not-a-port", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert "port" in bad.stderr
    unknown = _cli("serve", "--no-such-flag", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().count("\n") == 0
    down = _cli("migrate", "--database-url", "postgresql://nobody@127.0.0.1:9/none", cwd=tmp_path)
    assert down.returncode == 1
    assert down.stderr.strip().count("\n") == 0
    assert "Traceback" not in down.stderr
    bogus = _cli("migrate", "--database-url", "mysql://x", cwd=tmp_path)
    assert bogus.returncode != 0
    assert "Traceback" not in bogus.stderr


def test_apps_and_tokens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    created = _cli(
        "apps", "create", "--name", "Acme", "--json", "--database-url", url, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    app = json.loads(created.stdout)
    assert set(app) == {"app_id", "api_key", "admin_token"}
    token = _cli(
        "tokens", "create", "--app-id", app["app_id"], "--json", "--database-url", url, cwd=tmp_path
    )
    assert token.returncode == 0, token.stderr
    new_token = json.loads(token.stdout)["admin_token"]
    assert new_token != app["admin_token"]
    assert _cli("tokens", "revoke", new_token, "--database-url", url, cwd=tmp_path).returncode == 0
    again = _cli("tokens", "revoke", new_token, "--database-url", url, cwd=tmp_path)
    assert again.returncode == 1
    missing = _cli("tokens", "create", "--app-id", "app_nope", "--database-url", url, cwd=tmp_path)
    assert missing.returncode == 1
    assert "app_nope" in missing.stderr
    assert _cli("migrate", "--database-url", url, cwd=tmp_path).returncode == 0


async def _read_until(stream: trio.abc.ReceiveStream, marker: bytes, what: str) -> bytes:
    out = b""
    while marker not in out:
        chunk = await stream.receive_some(4096)
        assert chunk, f"serve {what}"
        out += chunk
    return out


async def _chat(port: int, app_id: str, api_key: str) -> None:
    """A device connects with the official JS client and sends a message."""
    auth = {"app_id": app_id, "device_id": "dev-1", "api_key": api_key}
    headers = [("x-app-id", app_id), ("x-device-id", "dev-1"), ("x-api-key", api_key)]
    created = await http(
        port, "POST", "/v1/conversations", b"{}", [*headers, ("content-type", "application/json")]
    )
    assert created.status == 201, created
    cid = json.loads(created.body)["id"]
    async with open_peer("js") as peer:
        url = f"http://127.0.0.1:{port}"
        result = await peer.connect("a", url, "/client", auth, WEBSOCKET, path=PATH)
        assert result.connected, result
        connected = await peer.next_event("a", "connected")
        assert connected.args[0]["connection_id"] == result.sid
        joined = await peer.next_event("a", "conversation:joined")
        assert joined.args[0]["conversation_id"] == cid
        send = {"conversation_id": cid, "body": "hello", "local_id": "1"}
        (ack,) = await peer.emit_with_ack("a", "message:send", send)
        assert ack["success"] is True
        assert (await peer.next_event("a", "message:new")).args == [ack["message"]]


async def test_serve_prints_a_demo_app_that_a_client_can_use(tmp_path: Path) -> None:
    port = _free_port()
    process = await trio.lowlevel.open_process(
        [*CLI, "serve", "--port", str(port)],
        cwd=tmp_path,  # the default store ./replyhq.db lands here
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    with trio.fail_after(60):
        out = await _read_until(process.stdout, b"admin_token:", "printed no demo app")
        await _read_until(process.stderr, b"listening on", "did not start")
        lines = dict(
            line.strip().split(":", 1) for line in out.decode().splitlines() if ":" in line
        )
        await _chat(port, lines["app_id"].strip(), lines["api_key"].strip())
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0
    assert (tmp_path / "replyhq.db").exists()


async def test_an_app_created_on_postgresql_chats(tmp_path: Path, pg_url: str) -> None:
    created = _cli(
        "apps", "create", "--name", "Acme", "--json", "--database-url", pg_url, cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    app = json.loads(created.stdout)
    port = _free_port()
    env = {**os.environ, "REPLYHQ_DATABASE_URL": pg_url, "REPLYHQ_PORT": str(port)}
    process = await trio.lowlevel.open_process(
        [*CLI, "serve"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert process.stderr is not None
    assert process.stdout is not None
    with trio.fail_after(60):
        await _read_until(process.stderr, b"listening on", "did not start")
        await _chat(port, app["app_id"], app["api_key"])
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0
        assert await process.stdout.receive_some(4096) == b""  # no demo app: not empty
    assert not (tmp_path / "replyhq.db").exists()


def test_an_unreachable_redis_is_fatal_unless_optional(tmp_path: Path) -> None:
    nowhere = "redis://127.0.0.1:9/0"
    down = _cli("serve", "--port", "0", "--redis-url", nowhere, cwd=tmp_path)
    assert down.returncode == 1
    assert down.stderr.strip().count("\n") == 0, down.stderr
    assert "127.0.0.1:9" in down.stderr
    assert "Traceback" not in down.stderr


async def test_serve_with_redis_reports_it_ready_and_chats(tmp_path: Path, redis_url: str) -> None:
    """A node on Redis: /readyz checks it, a device chats; with --redis-optional and no
    Redis the node starts alone and says Redis is unavailable."""
    port = _free_port()
    prefix = _redis.new_prefix()
    env = {
        **os.environ,
        "REPLYHQ_REDIS_URL": redis_url,
        "REPLYHQ_REDIS_KEY_PREFIX": prefix,
        "REPLYHQ_NODE_ID": "node-cli-1",
    }
    process = await trio.lowlevel.open_process(
        [*CLI, "serve", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        with trio.fail_after(60):
            out = await _read_until(process.stdout, b"admin_token:", "printed no demo app")
            await _read_until(process.stderr, b"listening on", "did not start")
            ready = await http(port, "GET", "/readyz")
            assert ready.status == 200, ready
            assert json.loads(ready.body)["checks"]["redis"] == "ok"
            assert any("node-cli-1" in key for key in await _redis.keys(redis_url, prefix))
            lines = dict(
                line.strip().split(":", 1) for line in out.decode().splitlines() if ":" in line
            )
            await _chat(port, lines["app_id"].strip(), lines["api_key"].strip())
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
        await _redis.delete_prefix(redis_url, prefix)

    optional_port = _free_port()
    alone = await trio.lowlevel.open_process(
        [*CLI, "serve", "--port", str(optional_port), "--redis-optional"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "REPLYHQ_REDIS_URL": "redis://127.0.0.1:9/0"},
    )
    assert alone.stderr is not None
    try:
        with trio.fail_after(60):
            await _read_until(alone.stderr, b"listening on", "did not start without Redis")
            ready = await http(optional_port, "GET", "/readyz")
            assert ready.status == 503
            assert json.loads(ready.body)["checks"]["redis"] == "unavailable"
            alone.send_signal(signal.SIGTERM)
            assert await alone.wait() == 0
    finally:
        if alone.returncode is None:
            alone.kill()
