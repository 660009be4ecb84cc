"""Typing indicators that stop by themselves.

``typing:start`` sets a deadline; ``typing:stop``, a disconnect or the deadline (5 s
after the last start, CONTRACT.md "Rooms") ends it, and only then is ``is_typing:
false`` sent. One task keeps every deadline of the process in a heap; nothing runs per
typist.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import NoReturn

import trio

__all__ = ["TypingTracker"]

#: Sends the "stopped typing" event for a key.
Stopped = Callable[[Hashable], Awaitable[None]]


class TypingTracker:
    """Who is typing, until when.

    Args:
        timeout: Seconds after the last start at which typing stops by itself.
        stopped: Called (in the tracker's task) when a key's typing expires.
    """

    def __init__(self, *, timeout: float, stopped: Stopped) -> None:
        self._timeout = timeout
        self._stopped = stopped
        self._deadlines: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._counter = 0
        self._sleep: trio.CancelScope | None = None

    def start(self, key: Hashable) -> bool:
        """Typing started or continues; returns True if it was not typing before."""
        deadline = trio.current_time() + self._timeout
        new = key not in self._deadlines
        self._deadlines[key] = deadline
        self._counter += 1
        heapq.heappush(self._heap, (deadline, self._counter, key))
        if self._sleep is not None and deadline < self._sleep.deadline:
            self._sleep.deadline = deadline
        return new

    def stop(self, key: Hashable) -> bool:
        """Typing stopped; returns True if it was typing (the stop event is the caller's)."""
        return self._deadlines.pop(key, None) is not None

    def typing(self, key: Hashable) -> bool:
        return key in self._deadlines

    def typists(self) -> list[Hashable]:
        """Every key typing now."""
        return list(self._deadlines)

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Expire deadlines until cancelled."""
        task_status.started()
        while True:
            next_deadline = self._heap[0][0] if self._heap else math.inf
            with trio.CancelScope(deadline=next_deadline) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None
            now = trio.current_time()
            while self._heap and self._heap[0][0] <= now:
                deadline, _, key = heapq.heappop(self._heap)
                # Stale heap entries (restarted or stopped since) are skipped.
                if self._deadlines.get(key) == deadline:
                    del self._deadlines[key]
                    await self._stopped(key)
