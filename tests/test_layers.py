"""The folders are layers (DESIGN.md): each may import only the layers beneath it.

sansio (pure) < transport (sockets, HTTP) < session (one connection) < http (the front
door) and hub (Socket.IO for the process) < chat (the ReplyHQ namespaces, against the
ports) < http_api (REST) and metrics (/metrics) < app and cli (composition). The
backends implement the ports and are the only code that may touch asyncio and its
libraries.
"""

from __future__ import annotations

import ast
from pathlib import Path

import replyhq_trio

PACKAGE = Path(replyhq_trio.__file__).parent

# layer -> the package's layers it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "sansio": set(),
    "transport": {"sansio", "config"},
    "session": {"sansio", "config", "transport"},
    "http": {"sansio", "config", "transport", "session"},
    "hub": {"sansio", "config", "session", "ports"},
    "client": {"sansio"},
    "config": {"sansio"},
    "ports": set(),
    "logs": set(),
    "backends": {"ports", "config"},
    "chat": {"sansio", "config", "hub", "ports"},
    "http_api": {"sansio", "config", "transport", "chat", "ports"},
    "settings": {"sansio", "config", "chat"},
    # reads the hub's and the chat's counters; below app, beside http_api
    "metrics": {"sansio", "config", "transport", "hub", "chat", "ports"},
}
ASYNCIO_WORLD = {"asyncio", "trio_asyncio", "redis", "asyncpg", "uvloop"}


def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    package_parts = ["replyhq_trio", *path.relative_to(PACKAGE).parent.parts]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append(module)
    return found


def test_each_layer_imports_only_what_is_beneath_it() -> None:
    offenders: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = _layer(path)
        allowed = ALLOWED.get(layer)
        if allowed is None:
            continue  # the composition root and the top layers may import anything
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] != "replyhq_trio" or len(parts) < 2:
                continue
            target = parts[1]
            if target not in allowed and target != layer:
                offenders.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_only_the_backends_touch_asyncio() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if _layer(path) != "backends"
        for module in _imports(path)
        if module.split(".")[0] in ASYNCIO_WORLD
    ]
    assert not offenders, "\n".join(offenders)


def test_the_layer_map_knows_every_folder() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")}
    # testing: helpers for test suites; dashboard: the page's static files (no Python)
    known = set(ALLOWED) | {"testing", "dashboard"}
    assert folders <= known, folders - known
