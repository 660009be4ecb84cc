"""Fixtures of the stores: the same tests run against SQLite (a file under ``tmp_path``) and
PostgreSQL (a database of its own per test, on the server at 127.0.0.1:5432); and of
Redis (127.0.0.1:6379, each test under a key prefix of its own, deleted afterwards, and
``redis-server`` for the tests that run one of their own).

Without a reachable PostgreSQL (or Redis) the tests that need it are skipped with a loud
reason, except under ``CI=true``, where that is a failure. The trio-asyncio loop comes from an
async fixture (pytest-trio rejects ``trio_run = trio_asyncio``, DEPS-FINDINGS.md
section 4). The tests of stores, presence and peers wait on real sockets and threads; the
autojump clock (pytest-trio's ``autojump_clock``) drives the timer-only ones.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

from replyhq_trio.backends import AsyncioBridge, open_asyncio_bridge, open_store
from replyhq_trio.ports import Store

from . import _pg, _redis


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """An administration URL of the test server, or skip (fail under CI=true)."""
    url, errors = trio.run(_pg.probe)
    if url is not None:
        return url
    reason = (
        "POSTGRESQL IS NOT REACHABLE: the PostgreSQL half of tests/backends DID NOT RUN. "
        f"Tried: {'; '.join(errors)}. Start a server on 127.0.0.1:5432 (trust auth, user "
        "postgres or root) or set REPLYHQ_TEST_PG_ADMIN_URL; under CI=true this fails."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the test Redis, or skip (fail under CI=true)."""
    url = _redis.url_candidate()
    error = trio.run(_redis.probe, url)
    if error is None:
        return url
    reason = (
        f"REDIS IS NOT REACHABLE: the Redis tests DID NOT RUN. Tried: {error}. Start a "
        "server on 127.0.0.1:6379 or set REPLYHQ_TEST_REDIS_URL; under CI=true this fails."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(params=["memory", "redis"])
def presence_url(request: pytest.FixtureRequest) -> str | None:
    """Presence in memory (one node, None), or in the real Redis (its URL)."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture(scope="session")
def redis_server_binary() -> str:
    """The ``redis-server`` that outage tests start on a port of their own, or skip
    (fail under CI=true)."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    reason = (
        "REDIS-SERVER IS NOT INSTALLED: the Redis outage tests DID NOT RUN (they start and "
        "stop a server of their own). Install it (Debian: redis-server); under CI=true "
        "this fails."
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture
async def bridge() -> AsyncIterator[AsyncioBridge]:
    async with open_asyncio_bridge() as opened:
        yield opened


@attrs.frozen
class Backend:
    name: str
    admin_url: str | None = None  # PostgreSQL only


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "postgres":
        # skips (or fails, under CI=true) without a server
        return Backend("postgres", request.getfixturevalue("pg_admin_url"))
    return Backend("sqlite")


@pytest.fixture
async def pg_url(pg_admin_url: str, bridge: AsyncioBridge) -> AsyncIterator[str]:
    """The URL of a fresh PostgreSQL database, dropped after the test."""
    async with _pg.fresh_database(bridge, pg_admin_url) as url:
        yield url


@pytest.fixture
async def db_url(backend: Backend, bridge: AsyncioBridge, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh, empty database of the backend under test."""
    if backend.admin_url is None:
        yield f"sqlite:///{tmp_path / 'replyhq.db'}"  # tmp_path is absolute: sqlite:////...
        return
    async with _pg.fresh_database(bridge, backend.admin_url) as url:
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A migrated store on a fresh database."""
    async with open_store(db_url, migrate=True) as opened:
        yield opened
