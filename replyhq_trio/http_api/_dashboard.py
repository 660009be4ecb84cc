"""``/dashboard/``: the admin dashboard's static files (HTML, CSS, JavaScript).

The files are package data under ``replyhq_trio/dashboard/`` and are read once, at
start: a request never touches the disk, and a path outside that folder cannot be
asked for (only the names found there are served).
"""

from __future__ import annotations

from importlib import resources

from ..transport import HttpConnection, Request, Response, error_response

__all__ = ["Dashboard"]

PREFIX = "/dashboard/"

_TYPES = {
    ".html": "text/html; charset=UTF-8",
    ".css": "text/css; charset=UTF-8",
    ".js": "text/javascript; charset=UTF-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# The page talks only to its own origin; nothing may frame it.
_HEADERS = (
    ("cache-control", "no-cache"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        # 'self' covers the same host's ws: and wss: (CSP 3); nothing else is reachable.
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
)


def _load() -> dict[str, Response]:
    files: dict[str, Response] = {}
    root = resources.files("replyhq_trio") / "dashboard"
    if not root.is_dir():  # an install without the page: every path is 404
        return files
    for entry in root.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = Response(200, entry.read_bytes(), _HEADERS, _TYPES[suffix])
    return files


class Dashboard:
    """The dashboard's files, served from memory."""

    def __init__(self) -> None:
        self._files = _load()

    async def redirect(self, request: Request, http: HttpConnection) -> Response:
        return Response(308, b"", (("location", PREFIX),))

    async def serve(self, request: Request, http: HttpConnection) -> Response:
        name = request.path.removeprefix(PREFIX) or "index.html"
        found = self._files.get(name)
        if found is None:
            return error_response(404, "NOT_FOUND", f"no dashboard file {name!r}")
        return found
