"""Render the transition tables of the protocol core as Mermaid state diagrams.

The tables in ``replyhq_trio/sansio/_state.py`` are the single source of every state
transition (h11's rule), so the diagrams are drawn from them and cannot drift.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Mapping
from typing import Any

from replyhq_trio.sansio import _state

# Mapping is invariant in its key type, so each table is seen through Any here.
Table = Mapping[Any, Any]

MACHINES: list[tuple[str, Table, str]] = [
    ("Engine.IO session", _state.ENGINE_TRANSITIONS, "open"),
    ("Heartbeat (the server pings)", _state.HEARTBEAT_TRANSITIONS, "idle"),
    ("Transport upgrade", _state.UPGRADE_TRANSITIONS, "none"),
    ("One Socket.IO namespace", _state.NAMESPACE_TRANSITIONS, "idle"),
    ("Binary attachments", _state.ATTACHMENT_TRANSITIONS, "idle"),
]


def _node(state: enum.Enum) -> str:
    return state.name


def mermaid(title: str, table: Table, start: str) -> str:
    lines = [f"### {title}", "", "```mermaid", "stateDiagram-v2"]
    states: set[enum.Enum] = {state for (state, _) in table} | set(table.values())
    initial = next(state for state in states if state.value == start)
    lines.append(f"    [*] --> {_node(initial)}")
    for (state, event), new in table.items():
        lines.append(f"    {_node(state)} --> {_node(new)}: {event.value}")
    lines.extend(["```", ""])
    return "\n".join(lines)


def main() -> int:
    print("# State machines of the protocol core\n")
    print("Drawn by `scripts/state-diagrams` from `replyhq_trio/sansio/_state.py`.\n")
    for title, table, start in MACHINES:
        print(mermaid(title, table, start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
