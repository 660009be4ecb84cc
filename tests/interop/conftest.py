from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .._serving import serving
from ._app import build_app


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    """The interop application on a free port; its origin URL."""
    async with serving(build_app()) as port:
        yield f"http://127.0.0.1:{port}"
