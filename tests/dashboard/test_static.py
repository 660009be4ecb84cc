"""The dashboard's files over real HTTP: what is served, with which headers."""

from __future__ import annotations

from pathlib import Path

import orjson

from .._raw import http
from ..chat._site import open_site


async def test_the_page_is_served_with_a_strict_policy(tmp_path: Path) -> None:
    async with open_site(f"sqlite:///{tmp_path / 'replyhq.db'}") as site:
        moved = await http(site.port, "GET", "/dashboard")
        assert (moved.status, moved.headers["location"]) == (308, "/dashboard/")
        page = await http(site.port, "GET", "/dashboard/")
        assert page.status == 200
        assert page.headers["content-type"] == "text/html; charset=UTF-8"
        policy = dict(
            part.strip().split(" ", 1)
            for part in page.headers["content-security-policy"].split(";")
        )
        # The page may talk to its own origin only (REST and the /admin WebSocket).
        assert policy["connect-src"] == "'self'"
        assert policy["default-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        script = await http(site.port, "GET", "/dashboard/sio.js")
        assert script.headers["content-type"] == "text/javascript; charset=UTF-8"
        missing = await http(site.port, "GET", "/dashboard/../replyhq.db")
        assert missing.status == 404
        assert orjson.loads(missing.body)["error"]["code"] == "NOT_FOUND"
