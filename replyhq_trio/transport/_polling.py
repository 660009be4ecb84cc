"""The long-polling side of a session: frames wait here for the next GET.

Engine.IO v4 long-polling (``../shared/conformance/README.md`` lists what the
official suite checks): one GET may be pending at a time and receives every queued
packet at once; a second concurrent GET is refused and ends the session; the same
for POST.
"""

from __future__ import annotations

import trio

from ..sansio import Frame

__all__ = ["PollingQueue"]


def _size(frame: Frame) -> int:
    """Bytes on the wire: text as UTF-8; binary as ``b`` and base64 (four characters for
    every three bytes)."""
    if isinstance(frame, str):
        return len(frame) if frame.isascii() else len(frame.encode("utf-8"))
    return (len(frame) + 2) // 3 * 4 + 1


class PollingQueue:
    """Frames for a long-polling client, and the rule of one pending GET.

    Args:
        max_bytes: Bytes that may wait for the client; above that :attr:`over_limit`.
    """

    __slots__ = (
        "_bytes",
        "_closed",
        "_frames",
        "_max_bytes",
        "_room",
        "_taken",
        "_wakeup",
        "poll_pending",
        "post_pending",
    )

    def __init__(self, *, max_bytes: int) -> None:
        self._frames: list[Frame] = []
        self._bytes = 0
        self._max_bytes = max_bytes
        self._wakeup = trio.Event()
        self._closed = False
        #: A GET is waiting for frames.
        self.poll_pending = False
        #: A POST body is being processed.
        self.post_pending = False
        self._room = trio.lowlevel.ParkingLot()
        self._taken = trio.lowlevel.ParkingLot()

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def over_limit(self) -> bool:
        return self._bytes > self._max_bytes

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, frames: list[Frame]) -> None:
        """Queue frames for the next (or the pending) GET."""
        if self._closed or not frames:
            return
        self._frames.extend(frames)
        self._bytes += sum(_size(frame) for frame in frames)
        self._wakeup.set()

    def take(self) -> list[Frame]:
        """Everything queued, in order; the queue is then empty."""
        frames = self._frames
        self._frames = []
        self._bytes = 0
        self._wakeup = trio.Event()
        self._room.unpark_all()
        self._taken.unpark_all()
        return frames

    async def wait(self) -> None:
        """Wait until frames are queued or the queue is closed."""
        if not self._frames and not self._closed:
            await self._wakeup.wait()

    async def wait_for_room(self) -> None:
        while self._bytes > self._max_bytes and not self._closed:
            await self._room.park()

    @property
    def pending(self) -> bool:
        """Whether frames are waiting for a GET."""
        return bool(self._frames)

    async def wait_taken(self) -> None:
        """Wait until a GET took what is queued (the goodbye of a closing session)."""
        while self._frames:
            await self._taken.park()

    def close(self) -> None:
        """No more frames will come: a pending GET takes what is left and returns."""
        self._closed = True
        self._wakeup.set()
        self._room.unpark_all()
