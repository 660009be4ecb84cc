"""Which browser origins may reach the server (CORS and the Origin of WebSocket upgrades).

Off by default: only the server's own origin. An allowlist opens named origins, and
``*`` opens every origin only when configured explicitly. Clients that are not
browsers send no Origin header and are not affected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ._http import Request

__all__ = ["CorsPolicy"]


class CorsPolicy:
    """Decides from a request's Origin header whether to serve it, and with which headers.

    Args:
        allowed: Origins such as ``https://dash.example.com``; ``"*"`` allows all.
    """

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self._any = "*" in allowed
        self._allowed = frozenset(origin.rstrip("/").lower() for origin in allowed if origin != "*")

    def allows(self, request: Request) -> bool:
        """Whether the request may proceed (no Origin, same origin, or an allowed one)."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        if self._any:
            return True
        normalised = origin.rstrip("/").lower()
        if normalised in self._allowed:
            return True
        return _same_origin(normalised, request.headers.get("host", ""))

    def headers(self, request: Request) -> list[tuple[str, str]]:
        """Response headers for an allowed cross-origin request (none for same origin)."""
        origin = request.headers.get("origin")
        if origin is None or _same_origin(origin.lower(), request.headers.get("host", "")):
            return []
        return [
            ("access-control-allow-origin", origin),
            ("access-control-allow-credentials", "true"),
            ("vary", "Origin"),
        ]

    def preflight_headers(self, request: Request) -> list[tuple[str, str]]:
        """Headers answering an OPTIONS preflight of an allowed origin."""
        return [
            *self.headers(request),
            ("access-control-allow-methods", "GET, POST, OPTIONS"),
            (
                "access-control-allow-headers",
                request.headers.get("access-control-request-headers", "content-type"),
            ),
            ("access-control-max-age", "600"),
        ]


def _same_origin(origin: str, host: str) -> bool:
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(host) and netloc == host.lower()
