from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import pytest

from replyhq_trio.testing.conformance import build_conformance_server, conformance_config

from .._serving import serving


@pytest.fixture
async def conformance_port() -> AsyncIterator[int]:
    """The application of the official protocol suites, on a free port."""
    config = attrs.evolve(conformance_config(port=0), grace_period=0.05, close_timeout=0.2)
    async with serving(build_conformance_server(config)) as port:
        yield port
