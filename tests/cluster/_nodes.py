"""Nodes of one deployment for a test: ``replyhq-trio serve`` processes on ports of their
own, sharing one store and one Redis under a key prefix of the test's own (deleted
after). Each is ready once ``/readyz`` answers 200 (its store and Redis, the backplane's
subscription included)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import trio

from .. import _redis
from .._raw import http
from .._waiting import wait_for
from ..server.test_signals import _free_port

CLI = [sys.executable, "-m", "replyhq_trio"]
PATH = "/v1/socket.io"


async def stop_process(process: trio.Process, sig: int = signal.SIGTERM) -> int:
    """Stop a process the test started: ``sig``, then SIGKILL after 20 s; its exit code."""
    if process.returncode is None:
        process.send_signal(sig)
    with trio.move_on_after(20):
        return await process.wait()
    process.kill()
    return await process.wait()


@attrs.define(eq=False)
class Node:
    port: int
    process: trio.Process
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self) -> bool:
        try:
            response = await http(self.port, "GET", "/readyz")
        except OSError:
            return False
        return response.status == 200

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        return await stop_process(self.process, sig)


@attrs.define(eq=False)
class Cluster:
    db_url: str
    redis_url: str
    prefix: str
    app: dict[str, str]
    directory: Path
    stack: AsyncExitStack
    nodes: list[Node] = attrs.Factory(list)

    def auth(self, device_id: str) -> dict[str, str]:
        return {
            "app_id": self.app["app_id"],
            "device_id": device_id,
            "api_key": self.app["api_key"],
        }

    def admin_auth(self) -> dict[str, str]:
        return {"app_id": self.app["app_id"], "admin_token": self.app["admin_token"]}

    async def new_conversation(self, node: Node, device_id: str) -> str:
        """A new conversation of the device (REST on ``node``); its id."""
        response = await http(
            node.port,
            "POST",
            "/v1/conversations",
            b"{}",
            [
                ("x-app-id", self.app["app_id"]),
                ("x-device-id", device_id),
                ("x-api-key", self.app["api_key"]),
                ("content-type", "application/json"),
            ],
        )
        assert response.status == 201, response.body
        conversation_id: str = json.loads(response.body)["id"]
        return conversation_id

    async def start(self, *extra: str, port: int | None = None) -> Node:
        """A new node of the deployment, serving once ready."""
        port = port or _free_port()
        log = self.directory / f"node-{len(self.nodes)}-{port}.log"
        with log.open("ab") as out:
            process = await trio.lowlevel.open_process(
                [*CLI, "serve", "--port", str(port), "--database-url", self.db_url,
                 "--redis-url", self.redis_url, "--redis-key-prefix", self.prefix,
                 "--limit-ip-connects", "0", "--grace-period", "2", *extra],
                cwd=self.directory,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )  # fmt: skip
        node = Node(port, process, log)
        self.nodes.append(node)
        self.stack.push_async_callback(node.stop)
        try:
            await wait_for(node.ready, timeout=30)
        except trio.TooSlowError:
            raise AssertionError(f"node on {port} not ready:\n{log.read_text()}") from None
        return node


@asynccontextmanager
async def open_cluster(db_url: str, redis_url: str, directory: Path) -> AsyncIterator[Cluster]:
    """A deployment with an app (no node yet: :meth:`Cluster.start` adds them)."""
    created = await trio.run_process(
        [*CLI, "apps", "create", "--name", "Cluster", "--json", "--database-url", db_url],
        capture_stdout=True,
        cwd=directory,
    )
    app = json.loads(created.stdout)
    prefix = _redis.new_prefix()
    try:
        async with AsyncExitStack() as stack:
            yield Cluster(db_url, redis_url, prefix, app, directory, stack)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await _redis.delete_prefix(redis_url, prefix)
