"""docs/state-machines.md is what scripts/state-diagrams draws from the tables today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_diagrams_match_the_tables() -> None:
    drawn = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "_lib" / "state_diagrams.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (ROOT / "docs" / "state-machines.md").read_text(encoding="utf-8")
    assert drawn == committed, "run scripts/state-diagrams > docs/state-machines.md"
    assert "CONNECTING --> CONNECTED: CONNECT sent" in drawn
