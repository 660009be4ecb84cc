"""The sans-IO core imports no I/O, no clock and nothing else of the package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import replyhq_trio.sansio

SANSIO = Path(replyhq_trio.sansio.__file__).parent

# Everything the core may import besides itself: pure standard-library modules and
# two pure third-party libraries (value classes and a JSON codec).
ALLOWED = {
    "__future__",
    "attrs",
    "base64",
    "binascii",
    "collections",
    "collections.abc",
    "enum",
    "functools",
    "hashlib",
    "itertools",
    "orjson",
    "re",
    "struct",
    "typing",
}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import in a file; level > 0 for relative imports."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_every_module_imports_only_allowed_things() -> None:
    offenders = []
    for path in SANSIO.rglob("*.py"):
        depth_inside = len(path.relative_to(SANSIO).parts) - 1  # 0 for sansio/x.py
        for module, level in _imports(path):
            if level == 0:
                if module not in ALLOWED:
                    offenders.append(f"{path.name}: import {module}")
            elif level - 1 > depth_inside:
                offenders.append(
                    f"{path.name}: relative import leaves sansio ({'.' * level}{module})"
                )
    assert offenders == []


def test_importing_the_core_loads_no_io_module() -> None:
    probe = (
        "import sys, replyhq_trio.sansio, replyhq_trio.sansio.websocket;"
        "banned = {'trio', 'asyncio', 'socket', 'selectors', 'ssl',"
        " 'redis', 'asyncpg', 'trio_asyncio', 'trio_websocket', 'h11', 'wsproto', 'sqlite3'};"
        "print(sorted(banned & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
