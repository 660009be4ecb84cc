"""The dashboard's own Socket.IO client (``sio.js``), unit-tested under node.

``sio.test.mjs`` checks its codec against ``protocol/vectors`` and its connection logic
(handshake, heartbeat, acks and their timeouts, backoff, ``server:shutdown``'s delay,
refusals) against a scripted server on a fake clock: the cases a real server cannot be
made to produce on demand. Without node the test skips, except under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_the_socketio_client_of_the_page() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not installed, and CI=true requires it", pytrace=False)
        pytest.skip("node is not installed: the dashboard's sio.js tests DID NOT RUN")
    done = subprocess.run(
        [node, "--test", str(HERE / "sio.test.mjs")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
