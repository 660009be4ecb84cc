"""Application routes on the server's port: exact paths, or prefixes for path parameters."""

from __future__ import annotations

import attrs

from ..transport import RouteHandler

__all__ = ["Router"]


@attrs.frozen
class _Prefix:
    prefix: str
    method: str
    handler: RouteHandler
    while_draining: bool


class Router:
    """Finds the handler of a request by method and path.

    Exact paths win over prefixes; among prefixes the longest wins. A handler
    registered on a prefix reads the rest of the path itself.
    """

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], tuple[RouteHandler, bool]] = {}
        self._prefixes: list[_Prefix] = []

    def add(
        self,
        method: str,
        path: str,
        handler: RouteHandler,
        *,
        prefix: bool = False,
        while_draining: bool = False,
    ) -> None:
        if prefix:
            self._prefixes.append(_Prefix(path, method.upper(), handler, while_draining))
            self._prefixes.sort(key=lambda p: len(p.prefix), reverse=True)
        else:
            self._exact[(method.upper(), path)] = (handler, while_draining)

    def find(self, method: str, path: str) -> tuple[RouteHandler, bool] | None:
        """The handler, and whether it serves while the server drains."""
        found = self._exact.get((method, path))
        if found is not None:
            return found
        for entry in self._prefixes:
            if entry.method == method and path.startswith(entry.prefix):
                return entry.handler, entry.while_draining
        return None

    def knows_path(self, path: str) -> bool:
        """Whether some method is routed at ``path`` (for 405 rather than 404)."""
        return any(known == path for (_method, known) in self._exact) or any(
            path.startswith(entry.prefix) for entry in self._prefixes
        )
