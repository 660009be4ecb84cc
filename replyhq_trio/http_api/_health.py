"""``/healthz`` (the process answers) and ``/readyz`` (its dependencies answer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
import trio

from ..transport import HttpConnection, Request, Response, json_response

__all__ = ["Health"]

#: A named dependency check: raises (or times out) when the dependency is down.
Check = Callable[[], Awaitable[None]]


class Health:
    """The health routes.

    Args:
        checks: Name -> check, run at each ``/readyz`` (``store``, ``redis``); a name
            mapped to None is reported ``disabled``.
        draining: Whether the server is shutting down: then it is not ready, so that
            load balancers stop sending it clients.
        timeout: Seconds each check may take before it counts as down.
    """

    def __init__(
        self,
        checks: dict[str, Check | None],
        *,
        draining: Callable[[], bool],
        timeout: float = 2.0,
    ) -> None:
        self._checks = checks
        self._draining = draining
        self._timeout = timeout

    async def healthz(self, request: Request, http: HttpConnection) -> Response:
        return json_response(200, b'{"status":"ok"}')

    async def check_dependencies(self) -> dict[str, str]:
        """Run every check once: name -> ``ok``, ``unavailable`` or ``disabled``."""
        results: dict[str, str] = {}
        for name, check in self._checks.items():
            if check is None:
                results[name] = "disabled"
                continue
            results[name] = "unavailable"
            with trio.move_on_after(self._timeout):
                try:
                    await check()
                except Exception:  # any failure of a dependency means "not ready"
                    continue
                results[name] = "ok"
        return results

    async def readyz(self, request: Request, http: HttpConnection) -> Response:
        draining = self._draining()
        results: dict[str, str] = {"server": "draining" if draining else "ok"}
        results.update(await self.check_dependencies())
        ready = not draining and all(state != "unavailable" for state in results.values())
        body = {"status": "ok" if ready else "unavailable", "checks": results}
        return json_response(200 if ready else 503, orjson.dumps(body))
